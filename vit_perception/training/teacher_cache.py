"""The teacher's detections computed once per training frame (``distill.teacher_cache``).

Running the teacher on every batch makes a distillation step on a CPU 2-3x as long as a plain
one. With the cache the teacher sees each frame once, un-augmented, before training; its
confident predictions become extra boxes of the frame that the augmentation moves, flips and
crops with the ground truth, and their class logits ride along unchanged. A step then costs what
a plain step costs. What it gives up: the teacher's targets no longer see the colour jitter.
The teacher's feature map of the frame is kept too (``features=True``, in float16); the
augmentation's ``source_map`` says where each of its cells went (``translator.input_map``).

``predict_frames(teacher, samples, threshold)`` -> one ``(boxes [m, 4] xyxy frame pixels,
logits [m, K+1], features [C, h, w] float16 or None)`` per sample (boxes and logits float32
arrays; samples listed twice are run once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)


def predict_frames(teacher, samples: Sequence, threshold: float, batch_size: int = 16,
                   features: bool = False, nms_iou: float | None = None) -> list[tuple]:
    """The teacher's predictions whose best class probability is ``>= threshold`` on each
    sample's frame (``dataset.Sample``; selected by ``distill_losses.teacher_targets``, as on the
    live path), as frame-pixel xyxy boxes (clipped to the frame; boxes under a pixel wide or high
    left out) and the raw logits of the same queries; with ``features``, also the teacher's
    feature map of the letterboxed frame (float16). ``nms_iou`` changes only the log: how
    many predictions a frame are left once class-wise NMS drops the duplicates (the training
    step drops them from each augmented frame, ``distill.cached_targets``)."""
    from vit_perception.models.box_ops import box_cxcywh_to_xyxy
    from vit_perception.models.preprocess import preprocess
    from vit_perception.training.distill_losses import duplicates, teacher_targets

    unique: dict[int, int] = {}  # id(sample) -> its row in order
    order: list = []
    for s in samples:
        if id(s) not in unique:
            unique[id(s)] = len(order)
            order.append(s)
    results: list[tuple] = []
    t0, w, h = time.perf_counter(), *teacher.size
    repeats = 0
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        x, boxes = preprocess([np.asarray(s.image) for s in chunk], teacher.size, teacher.mean,
                              teacher.std, "cpu")
        out = teacher(x)
        maps = out["features"].half() if features else [None] * len(chunk)
        for lb, t, fmap in zip(boxes, teacher_targets(out["pred_logits"], out["pred_boxes"],
                                                      threshold), maps):
            xyxy = box_cxcywh_to_xyxy(t["boxes"].cpu()) * torch.tensor([w, h, w, h])
            frame_boxes = lb.to_source(xyxy.double()).float()
            sized = ((frame_boxes[:, 2] - frame_boxes[:, 0]) >= 1) & \
                ((frame_boxes[:, 3] - frame_boxes[:, 1]) >= 1)
            if nms_iou is not None:
                repeats += int(duplicates(t["boxes"][sized], t["scores"][sized],
                                          t["labels"][sized], threshold, nms_iou).sum())
            results.append((frame_boxes[sized].numpy(), t["logits"].cpu()[sized].numpy(),
                            None if fmap is None else fmap.cpu().clone()))
        done = start + len(chunk)
        if done == len(order) or (start // batch_size) % 20 == 19:
            log.info("teacher cache: %d / %d frames (%.0f s)", done, len(order),
                     time.perf_counter() - t0)
    n = sum(len(r[0]) for r in results)
    mb = sum(r[2].numel() * 2 for r in results if r[2] is not None) / 2**20
    log.info("teacher cache: %d frames, %.1f predictions a frame scoring >= %.2f%s%s, %.1f s",
             len(order), n / max(1, len(order)), threshold,
             "" if nms_iou is None else
             f" ({(n - repeats) / max(1, len(order)):.1f} once NMS at IoU {nms_iou:g} drops "
             "the duplicates)",
             f", feature maps {mb:.0f} MB" if features else "", time.perf_counter() - t0)
    return [results[unique[id(s)]] for s in samples]

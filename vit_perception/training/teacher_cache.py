"""The teacher's detections computed once per training frame (``distill.teacher_cache``).

Running the teacher on every batch makes a distillation step on a CPU 2-3x as long as a plain
one. With the cache the teacher sees each frame once, un-augmented, before training; its
confident predictions become extra boxes of the frame that the augmentation moves, flips and
crops with the ground truth, and their class logits ride along unchanged. A step then costs what
a plain step costs. What it gives up: the teacher's targets no longer see the colour jitter, and
there is no teacher feature map of the augmented frame (feature distillation is off).

``predict_frames(teacher, samples, threshold)`` -> one ``(boxes [m, 4] xyxy frame pixels,
logits [m, K+1])`` pair of float32 arrays per sample (samples listed twice are run once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)


def predict_frames(teacher, samples: Sequence, threshold: float, batch_size: int = 16
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The teacher's predictions whose best class probability is ``>= threshold`` on each
    sample's frame (``dataset.Sample``; selected by ``distill_losses.teacher_targets``, as on the
    live path), as frame-pixel xyxy boxes (clipped to the frame; boxes under a pixel wide or high
    left out) and the raw logits of the same queries."""
    from vit_perception.models.box_ops import box_cxcywh_to_xyxy
    from vit_perception.models.preprocess import preprocess
    from vit_perception.training.distill_losses import teacher_targets

    unique: dict[int, int] = {}  # id(sample) -> its row in order
    order: list = []
    for s in samples:
        if id(s) not in unique:
            unique[id(s)] = len(order)
            order.append(s)
    results: list[tuple[np.ndarray, np.ndarray]] = []
    t0, w, h = time.perf_counter(), *teacher.size
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        x, boxes = preprocess([np.asarray(s.image) for s in chunk], teacher.size, teacher.mean,
                              teacher.std, "cpu")
        out = teacher(x)
        for lb, t in zip(boxes, teacher_targets(out["pred_logits"], out["pred_boxes"],
                                                threshold)):
            xyxy = box_cxcywh_to_xyxy(t["boxes"].cpu()) * torch.tensor([w, h, w, h])
            frame_boxes = lb.to_source(xyxy.double()).float()
            sized = ((frame_boxes[:, 2] - frame_boxes[:, 0]) >= 1) & \
                ((frame_boxes[:, 3] - frame_boxes[:, 1]) >= 1)
            results.append((frame_boxes[sized].numpy(), t["logits"].cpu()[sized].numpy()))
        done = start + len(chunk)
        if done == len(order) or (start // batch_size) % 20 == 19:
            log.info("teacher cache: %d / %d frames (%.0f s)", done, len(order),
                     time.perf_counter() - t0)
    n = sum(len(b) for b, _ in results)
    log.info("teacher cache: %d frames, %.1f confident predictions a frame, %.1f s", len(order),
             n / max(1, len(order)), time.perf_counter() - t0)
    return [results[unique[id(s)]] for s in samples]

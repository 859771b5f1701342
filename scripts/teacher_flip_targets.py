#!/usr/bin/env python3
"""Would a mirrored second look make the teacher's targets cleaner? (issue 13, eleventh measurement)

Runs the teacher over a labelled bag's frames as ``distill.teacher_cache`` does
(``teacher_cache.predict_frames``), once plainly and once with test-time flip fusion: the teacher
also sees each frame mirrored; each query of the plain pass is paired with the mirrored pass's
query of the same best class that overlaps it most (IoU >= 0.5, boxes mirrored back); a pair's
class distribution is the mean of the two and its box the score-weighted mean; a query the
mirror does not confirm keeps its box and has its distribution averaged with a certain "no
object" (half its score). Prints, for each score threshold, the targets' precision, recall and
false positives by kind after class-wise NMS (``scripts/target_quality.py``'s ``tally``), for
both.

    python scripts/teacher_flip_targets.py runs/d2/teacherA/best.pt runs/d2/bags/unlabelled \
        --threshold 0.6 0.7 0.8 0.9 --nms 0.4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from target_quality import tally  # noqa: E402

from vit_perception.data.bags import Detections, read_frames  # noqa: E402
from vit_perception.models.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh  # noqa: E402
from vit_perception.training.dataset import Sample  # noqa: E402
from vit_perception.training.teacher import Teacher  # noqa: E402
from vit_perception.training.teacher_cache import predict_frames  # noqa: E402


def fuse_flipped(logits: Tensor, boxes: Tensor, logits_m: Tensor, boxes_m: Tensor,
                 match_iou: float = 0.5) -> tuple[Tensor, Tensor]:
    """Plain and mirrored ``pred_logits [B, N, K+1]`` / ``pred_boxes [B, N, 4]`` (normalised
    cxcywh; the mirrored pass's as it came) -> fused log-probabilities and boxes."""
    from torchvision.ops import box_iou

    prob, prob_m = logits.softmax(-1), logits_m.softmax(-1)
    xyxy = box_cxcywh_to_xyxy(boxes)
    xyxy_m = box_cxcywh_to_xyxy(torch.cat([1.0 - boxes_m[..., :1], boxes_m[..., 1:]], -1))
    score, label = prob[..., :-1].max(-1)
    score_m, label_m = prob_m[..., :-1].max(-1)
    nothing = torch.zeros_like(prob[0])
    nothing[:, -1] = 1.0
    probs, out_boxes = [], []
    for i in range(len(logits)):
        iou = box_iou(xyxy[i], xyxy_m[i]).masked_fill(label[i][:, None] != label_m[i][None], -1)
        best, j = iou.max(1)
        hit = (best >= match_iou)[:, None]
        probs.append(0.5 * (prob[i] + torch.where(hit, prob_m[i][j], nothing)))
        w, w_m = score[i][:, None], score_m[i][j][:, None]
        mean = (w * xyxy[i] + w_m * xyxy_m[i][j]) / (w + w_m).clamp_min(1e-12)
        out_boxes.append(box_xyxy_to_cxcywh(torch.where(hit, mean, xyxy[i])))
    return torch.stack(probs).clamp_min(1e-12).log(), torch.stack(out_boxes)


class FlipTeacher(Teacher):
    """The distillation teacher with its detections fused with those of the mirrored images."""

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        out = super().__call__(images)
        mirrored = super().__call__(images.flip(-1))
        out["pred_logits"], out["pred_boxes"] = fuse_flipped(
            out["pred_logits"], out["pred_boxes"], mirrored["pred_logits"],
            mirrored["pred_boxes"])
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("teacher", type=Path, help="detector checkpoint")
    ap.add_argument("bag", type=Path, help="labelled bag (its labels judge the targets)")
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.6, 0.7, 0.8, 0.9])
    ap.add_argument("--nms", type=float, default=0.4, help="class-wise NMS IoU (as distill's "
                    "teacher_nms_iou)")
    args = ap.parse_args()
    frames = list(read_frames(args.bag, labelled_only=True))
    samples = [Sample(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), f.image.shape[1],
                      f.image.shape[0], str(f.index), _image=f.image) for f in frames]
    truth = [Detections(f.boxes, list(f.class_names or []), np.ones(len(f.boxes)))
             for f in frames]
    for kind in (Teacher, FlipTeacher):
        teacher = kind(args.teacher, torch.device("cpu"))
        preds = predict_frames(teacher, samples, min(args.threshold))
        dets = []
        for boxes, logits, _ in preds:
            score, label = torch.as_tensor(logits).softmax(-1)[:, :-1].max(-1)
            dets.append(Detections(boxes.astype(np.float64),
                                   [teacher.classes[i] for i in label.tolist()], score.numpy()))
        for threshold in args.threshold:
            print(f"{'flip-fused' if kind is FlipTeacher else 'plain':10s} "
                  + tally(list(zip(truth, dets)), threshold, args.nms), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

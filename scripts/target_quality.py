"""How good a predictions bag is as training targets, against a labelled bag of the same frames.

Prints, per score threshold and NMS setting, the precision and recall of the predictions at
IoU 0.5 (same class, greedy by score, as `eval`'s worst-frame matching) and what the false
positives are: duplicates (a second box on an object already found), wrong class, loose boxes
(IoU 0.1-0.5 with an object) and background. Then COCO AP50 / AP of all the predictions
without and with class-wise NMS (`eval` scores them without). Used for issue 13's eighth
measurement (docs/RESULTS.md): the teacher's detections on the unlabelled bag, and the
students' on the held-out bag.

    python scripts/target_quality.py runs/d2/bags/unlabelled \
        runs/d2/eval/teacher_unl_predictions --threshold 0.5 --nms 0.4 0.5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import batched_nms

from vit_perception.data.bags import Detections, read_detections
from vit_perception.evaluation.coco_metrics import coco_metrics
from vit_perception.evaluation.plots import box_iou, match_errors


def nms(det: Detections, iou: float | None) -> Detections:
    """``det`` less the boxes class-wise NMS at ``iou`` removes (None: all of them)."""
    if iou is None or len(det.scores) < 2:
        return det
    ids = {n: i for i, n in enumerate(sorted(set(det.class_names)))}
    keep = batched_nms(torch.as_tensor(det.boxes, dtype=torch.float32),
                       torch.as_tensor(det.scores, dtype=torch.float32),
                       torch.tensor([ids[n] for n in det.class_names]), iou).numpy()
    return Detections(det.boxes[keep], [det.class_names[i] for i in keep], det.scores[keep])


def kinds(gt: Detections, det: Detections, threshold: float) -> dict[str, int]:
    """True positives, misses and the false positives by kind, of one frame."""
    tp, fp, fn = match_errors(gt.boxes, np.array(gt.class_names), det.boxes,
                              np.array(det.class_names), det.scores, 0.5, threshold)
    out = {"tp": int(tp.sum()), "fn": int(fn.sum()), "duplicate": 0, "wrong class": 0,
           "loose": 0, "background": 0}
    iou = box_iou(det.boxes, gt.boxes)
    for i in np.where(fp)[0]:
        same = np.array([n == det.class_names[i] for n in gt.class_names], bool)
        if (iou[i] >= 0.5)[same].any():
            out["duplicate"] += 1
        elif (iou[i] >= 0.5).any():
            out["wrong class"] += 1
        elif (iou[i] >= 0.1).any():
            out["loose"] += 1
        else:
            out["background"] += 1
    return out


FALSE_POSITIVES = ("duplicate", "wrong class", "loose", "background")


def tally(frames, threshold: float, iou: float | None) -> str:
    """One line: precision, recall and false positives by kind over ``frames``, pairs of
    (truth, predictions) ``Detections``, at score ``>= threshold`` after class-wise NMS at
    ``iou`` (None: off)."""
    total: dict[str, int] = {}
    for gt, det in frames:
        for k, v in kinds(gt, nms(det, iou), threshold).items():
            total[k] = total.get(k, 0) + v
    fp = sum(total[k] for k in FALSE_POSITIVES)
    return (f"score >= {threshold:.2f}, NMS {'off' if iou is None else iou}: precision "
            f"{total['tp'] / max(1, total['tp'] + fp):.3f} recall "
            f"{total['tp'] / max(1, total['tp'] + total['fn']):.3f}; false positives "
            + ", ".join(f"{k} {total[k]}" for k in FALSE_POSITIVES))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labelled", type=Path, help="bag with the true labels")
    ap.add_argument("predictions", type=Path, help="bag with the predictions (same stamps)")
    ap.add_argument("--labels-topic", default="/labels")
    ap.add_argument("--predictions-topic", default="/detections")
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.5])
    ap.add_argument("--nms", type=float, nargs="+", default=[0.5], help="IoUs to try")
    args = ap.parse_args()
    gt = read_detections(args.labelled, args.labels_topic)
    pred = read_detections(args.predictions, args.predictions_topic)
    empty = Detections(np.zeros((0, 4)), [], np.zeros(0))
    stamps = sorted(gt)
    print(f"{len(stamps)} labelled frames, {sum(len(g.scores) for g in gt.values())} objects, "
          f"{sum(s in pred for s in stamps)} with predictions")
    settings: list[float | None] = [None, *args.nms]
    for threshold in args.threshold:
        for iou in settings:
            print(tally([(gt[s], pred.get(s, empty)) for s in stamps], threshold, iou))
    classes = sorted({n for g in gt.values() for n in g.class_names})
    index = {n: i for i, n in enumerate(classes)}

    def rows(dets):
        return [{"boxes": d.boxes, "scores": d.scores,
                 "labels": [index.get(n, -1) for n in d.class_names]} for d in dets]

    for iou in settings:
        m = coco_metrics(rows(gt[s] for s in stamps),
                         rows(nms(pred.get(s, empty), iou) for s in stamps), classes)
        print(f"COCO, NMS {'off' if iou is None else iou}: AP50 {m['AP50']:.3f} AP {m['AP']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

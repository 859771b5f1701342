"""Evaluation figures: the precision-recall curve (matplotlib, Agg) and annotated error frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix `[len(a), len(b)]` of xyxy boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_errors(gt_boxes, gt_labels, pred_boxes, pred_labels, pred_scores,
                 iou_threshold: float = 0.5, score_threshold: float = 0.3):
    """Greedy same-class matching of confident predictions to ground truth.

    Returns `(tp_pred, fp_pred, fn_gt)` boolean masks (over predictions above the score
    threshold for the first two, over ground truth for the third).
    """
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels).reshape(-1)
    keep = np.asarray(pred_scores).reshape(-1) >= score_threshold
    order = np.argsort(-np.asarray(pred_scores).reshape(-1), kind="stable")
    iou = box_iou(pred_boxes, gt_boxes)
    used = np.zeros(len(gt_boxes), bool)
    tp = np.zeros(len(keep), bool)
    for i in order:
        if not keep[i]:
            continue
        cand = np.where((~used) & (gt_labels == np.asarray(pred_labels).reshape(-1)[i]))[0]
        if cand.size:
            j = cand[np.argmax(iou[i, cand])]
            if iou[i, j] >= iou_threshold:
                used[j] = True
                tp[i] = True
    fp = keep & ~tp
    return tp, fp, ~used


def draw_errors(image: np.ndarray, gt_boxes, gt_labels, pred_boxes, pred_labels, pred_scores,
                class_names: Sequence[str], iou_threshold: float = 0.5,
                score_threshold: float = 0.3) -> np.ndarray:
    """RGB frame annotated: matched predictions green, false positives red, missed ground
    truth yellow (dashed look: thin), with class names and scores."""
    import cv2

    out = np.ascontiguousarray(image).copy()
    tp, fp, fn = match_errors(gt_boxes, gt_labels, pred_boxes, pred_labels, pred_scores,
                              iou_threshold, score_threshold)
    pred_boxes = np.asarray(pred_boxes).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)

    def name(k):
        k = int(k)
        return class_names[k] if 0 <= k < len(class_names) else str(k)

    def box(b, color, text, thick):
        x1, y1, x2, y2 = (int(round(v)) for v in b)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        cv2.putText(out, text, (x1 + 2, max(10, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color,
                    1, cv2.LINE_AA)

    for j in np.where(fn)[0]:
        box(gt_boxes[j], (255, 220, 0), f"missed {name(np.asarray(gt_labels)[j])}", 1)
    for i in range(len(pred_boxes)):
        if tp[i] or fp[i]:
            color = (0, 220, 0) if tp[i] else (255, 40, 40)
            box(pred_boxes[i], color,
                f"{name(np.asarray(pred_labels)[i])} {float(np.asarray(pred_scores)[i]):.2f}", 2)
    legend = f"FP {int(fp.sum())}  FN {int(fn.sum())}  TP {int(tp.sum())}"
    cv2.putText(out, legend, (6, out.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (255, 255, 255), 1, cv2.LINE_AA)
    return out


def save_pr_curve(coco_eval, class_names: Sequence[str], path: str | Path,
                  title: str = "precision-recall") -> Path:
    """PR curves from a COCOeval (after accumulate): mean over classes at IoU .50 and .75,
    and each class at IoU .50 (area all, 100 detections)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precision = np.asarray(coco_eval.eval["precision"])  # [T, R, K, A, M]
    recall = np.asarray(coco_eval.params.recThrs)
    iou_thrs = np.asarray(coco_eval.params.iouThrs)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    for thr, style in ((0.5, "-"), (0.75, "--")):
        t = int(np.argmin(np.abs(iou_thrs - thr)))
        p = precision[t, :, :, 0, -1]
        valid = (p > -1).all(axis=0)
        if valid.any():
            ax.plot(recall, p[:, valid].mean(axis=1), style, color="black", lw=2,
                    label=f"all classes, IoU {thr:.2f}")
    t = int(np.argmin(np.abs(iou_thrs - 0.5)))
    for k, name in enumerate(class_names):
        p = precision[t, :, k, 0, -1]
        if (p > -1).all():
            ax.plot(recall, p, lw=1, alpha=0.8, label=f"{name} (IoU .50)")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

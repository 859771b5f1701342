"""What a static int8 model costs: fp32 and int8 replayed over held-out frames, AP of each.

``export --int8-calibrate`` calls ``calibrate_and_check``: calibrate (``runtime.calibration``),
then run the same frames through the fp32 export and the int8 copy in ONNX Runtime and print
AP50/AP of both (when the frames carry labels) and how far the int8 features are from fp32.
Held-out frames are ``--val`` bags, or else the last quarter of each calibration bag, which
calibration never sees.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

HOLDOUT = 0.25  # fraction of each calibration bag kept for checking when no --val is given
AGREEMENT_TOP = 10  # fp32 detections per frame whose int8 counterpart is looked for


def heldout_frames(calib: Any, val_bags: Sequence[str | Path], labels_topic: str,
                   classes: Sequence[str]) -> Iterator[Any]:
    """Frames (``data.bags.Frame``) not used for calibration, with labels where the bags have
    them in ``classes``; unlabelled when the bag's classes are not the model's."""
    from vit_perception.data.bags import read_frames

    sources = ([(Path(b), 0) for b in val_bags] if val_bags else
               [(Path(b), start) for b, start in zip(calib.bags, calib.holdout_from)])
    for bag, start in sources:
        try:
            stream: Iterator[Any] = read_frames(bag, calib.topic, labels_topic,
                                                classes=list(classes))
        except ValueError as exc:  # labels in other classes: compare outputs only
            log.warning("%s: %s; comparing outputs without AP", bag, exc)
            stream = read_frames(bag, calib.topic, None)
        for frame in stream:
            if frame.index >= start:
                yield frame


def _rel(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return float("nan")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))


def agreement(a: Any, b: Any, top: int = AGREEMENT_TOP) -> list[tuple[float, float]]:
    """For each of ``a``'s ``top`` highest-scoring detections, the best IoU with a detection of
    the same class in ``b`` and the score difference to it: ``[(iou, |score a - score b|)]``
    (IoU 0 and the whole score when ``b`` has none of that class). A direct measure where AP
    says little (a weak model)."""
    from vit_perception.evaluation.plots import box_iou

    order = np.argsort(-np.asarray(a.scores))[:top]
    out = []
    for i in order.tolist():
        same = np.flatnonzero(np.asarray(b.labels) == a.labels[i])
        if same.size == 0:
            out.append((0.0, float(a.scores[i])))
            continue
        ious = box_iou(a.boxes[i : i + 1], b.boxes[same])[0]
        j = int(same[int(np.argmax(ious))])
        out.append((float(ious.max()), abs(float(a.scores[i]) - float(b.scores[j]))))
    return out


def compare(fp32: Any, int8: Any, frames: Iterable[Any]) -> dict[str, Any]:
    """Both predictors over ``frames``: COCO AP/AP50 of each on the labelled ones, the
    relative error of the int8 features (median, max) over all, and how the int8 detections
    agree with fp32's (``agreement``: mean IoU, share with IoU >= 0.5, mean score change)."""
    from vit_perception.evaluation.coco_metrics import coco_metrics

    gt: list[dict] = []
    preds: dict[str, list[dict]] = {"fp32": [], "int8": []}
    errors = []
    pairs: list[tuple[float, float]] = []
    n = 0
    for frame in frames:
        n += 1
        a, b = fp32.predict(frame.image), int8.predict(frame.image)
        errors.append(_rel(a.features, b.features))
        pairs += agreement(a, b)
        if frame.labelled:
            h, w = frame.image.shape[:2]
            gt.append({"boxes": frame.boxes, "labels": frame.labels, "width": w, "height": h})
            for name, p in (("fp32", a), ("int8", b)):
                preds[name].append({"boxes": p.boxes, "labels": p.labels, "scores": p.scores})
    out: dict[str, Any] = {"frames": n, "labelled": len(gt)}
    if errors:
        out["features_rel_error"] = {"median": float(np.nanmedian(errors)),
                                     "max": float(np.nanmax(errors))}
    if pairs:
        iou, dscore = np.asarray(pairs).T
        out["agreement"] = {"detections": len(pairs), "mean_iou": float(iou.mean()),
                            "iou50": float((iou >= 0.5).mean()),
                            "mean_score_change": float(dscore.mean())}
    if gt:
        for name in ("fp32", "int8"):
            m = coco_metrics(gt, preds[name], fp32.class_names)
            out[name] = {"AP50": m["AP50"], "AP": m["AP"]}
    return out


def format_report(check: dict[str, Any], where: str) -> list[str]:
    lines = [f"held-out: {check['frames']} frames of {where} ({check['labelled']} labelled)"]
    if "fp32" in check:
        a, b = check["fp32"], check["int8"]
        lines += [f"{'':8}{'AP50':>8}{'AP':>8}",
                  f"{'fp32':<8}{a['AP50']:>8.4f}{a['AP']:>8.4f}",
                  f"{'int8':<8}{b['AP50']:>8.4f}{b['AP']:>8.4f}",
                  f"{'change':<8}{b['AP50'] - a['AP50']:>+8.4f}{b['AP'] - a['AP']:>+8.4f}"
                  f"   ({100 * (b['AP'] - a['AP']):+.2f} AP points)"]
    else:
        lines.append("no labels in the model's classes: AP not computed")
    err = check.get("features_rel_error")
    if err:
        lines.append(f"features, relative error vs fp32: median {err['median']:.4f}, "
                     f"max {err['max']:.4f}")
    agree = check.get("agreement")
    if agree:
        lines.append(f"detections vs fp32 (top {AGREEMENT_TOP} a frame, {agree['detections']}): "
                     f"mean IoU {agree['mean_iou']:.3f}, IoU >= 0.5 {agree['iou50']:.1%}, "
                     f"mean |score change| {agree['mean_score_change']:.4f}")
    return lines


def calibrate_and_check(
    export: str | Path, bags: Sequence[str | Path], topic: str, frames: int, method: str,
    val_bags: Sequence[str | Path] = (), labels_topic: str = "/labels",
    echo: Callable[[str], Any] = print, attention: str = "scores",
) -> dict[str, Any]:
    """Write ``<export stem>.int8.onnx`` calibrated on ``bags`` (``attention``: which attention
    products are int8, ``runtime.int8_attention.MODES``) and compare it with fp32 on held-out
    frames; returns ``{"path", "calibration", "check"}``."""
    from vit_perception.runtime.calibration import (
        calibration_frames,
        int8_info,
        quantize_calibrated,
    )
    from vit_perception.runtime.predictor import Predictor

    for bag in val_bags:
        if not Path(bag).exists():
            from vit_perception.runtime.calibration import CalibrationError

            raise CalibrationError(f"held-out bag not found: {bag}")
    calib = calibration_frames(bags, topic, frames, holdout=0.0 if val_bags else HOLDOUT)
    path = quantize_calibrated(export, calib, method, attention=attention)
    info = int8_info(path) or {}
    echo(f"static int8: wrote {path} (calibrated with {method} on {len(calib.frames)} frames of "
         f"{', '.join(calib.bags)} on {topic}; {info.get('summary', '')})")
    fp32 = Predictor.load(export, backend="onnxruntime", precision="fp32", score_threshold=0.01)
    int8 = Predictor.load(path, backend="onnxruntime", precision="int8", score_threshold=0.01)
    try:
        for p in (fp32, int8):
            p.want_attention = False
        check = compare(fp32, int8, heldout_frames(calib, val_bags, labels_topic,
                                                   fp32.class_names))
        calib_check = compare(fp32, int8, (_Plain(f) for f in calib.frames[:16]))
    finally:
        fp32.close()
        int8.close()
    where = ", ".join(map(str, val_bags)) if val_bags else \
        f"the calibration bags (their last {HOLDOUT:.0%})"
    for line in format_report(check, where):
        echo(line)
    err = calib_check.get("features_rel_error")
    if err:
        echo(f"calibration frames, features relative error vs fp32: median {err['median']:.4f}")
    return {"path": str(path), "calibration": calib.describe(), "check": check,
            "calibration_check": calib_check}


class _Plain:
    """An unlabelled frame around an image."""

    labelled = False

    def __init__(self, image: np.ndarray) -> None:
        self.image = image

"""COCO box metrics (faster-coco-eval, or pycocotools where it is missing).

    metrics = coco_metrics(ground_truth, predictions, class_names)
    metrics["AP"], metrics["AP50"], ..., metrics["per_class"]["red_cube"]
    class_agnostic_metrics(ground_truth, predictions)  # {"AP": .., "AP50": ..}: found, any name

`ground_truth` and `predictions` are per-image lists (same length, same order). Each item is a
dict or an object with `boxes` (`[n, 4]` xyxy pixels) and `labels` (`[n]` class indices into
`class_names`); predictions also carry `scores`. A metric COCO leaves undefined (no ground-truth
box in that size range) is -1.0, as pycocotools reports it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


def _field(item, name: str, default=None):
    if isinstance(item, dict):
        return item.get(name, default)
    return getattr(item, name, default)


def _boxes(item) -> np.ndarray:
    return np.asarray(_field(item, "boxes"), np.float64).reshape(-1, 4)


def coco_dicts(ground_truth: Sequence, predictions: Sequence | None,
               class_names: Sequence[str]) -> tuple[dict, list[dict]]:
    """The COCO ground-truth dataset dict and the list of detection results (1-based ids)."""
    images, annotations, results = [], [], []
    categories = [{"id": i + 1, "name": str(n)} for i, n in enumerate(class_names)]
    for img_id, gt in enumerate(ground_truth, start=1):
        images.append({"id": img_id, "width": int(_field(gt, "width", 0) or 0),
                       "height": int(_field(gt, "height", 0) or 0)})
        boxes = _boxes(gt)
        labels = np.asarray(_field(gt, "labels"), np.int64).reshape(-1)
        for (x1, y1, x2, y2), lab in zip(boxes, labels):
            w, h = float(x2 - x1), float(y2 - y1)
            annotations.append({"id": len(annotations) + 1, "image_id": img_id,
                                "category_id": int(lab) + 1, "bbox": [float(x1), float(y1), w, h],
                                "area": w * h, "iscrowd": 0})
    for img_id, pred in enumerate(predictions or (), start=1):
        boxes = _boxes(pred)
        labels = np.asarray(_field(pred, "labels"), np.int64).reshape(-1)
        scores = np.asarray(_field(pred, "scores"), np.float64).reshape(-1)
        for (x1, y1, x2, y2), lab, score in zip(boxes, labels, scores):
            if not 0 <= lab < len(class_names):
                continue
            results.append({"image_id": img_id, "category_id": int(lab) + 1,
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                            "score": float(score)})
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _evaluate(dataset: dict, results: list[dict], backend: str):
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        gt = COCO(dataset)
        dt = gt.loadRes(results)
        ev = COCOeval_faster(gt, dt, "bbox", print_function=lambda *a, **k: None)
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = dataset
            gt.createIndex()
            dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def default_backend() -> str:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return "pycocotools"
    return "faster_coco_eval"


def coco_metrics(ground_truth: Sequence, predictions: Sequence, class_names: Sequence[str],
                 backend: str | None = None, return_eval: bool = False) -> dict:
    """COCO bbox metrics: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100 and `per_class`.

    `per_class` maps each class name to its AP (IoU .50:.95, all areas, 100 detections), -1.0
    for a class without ground truth. `backend`: "faster_coco_eval" (default when installed) or
    "pycocotools". With `return_eval`, the COCOeval object is under "_eval" (for PR curves).
    """
    if len(ground_truth) != len(predictions):
        raise ValueError(f"{len(ground_truth)} ground-truth images but "
                         f"{len(predictions)} prediction images")
    backend = backend or default_backend()
    dataset, results = coco_dicts(ground_truth, predictions, class_names)
    if not results or not dataset["annotations"]:
        # COCOeval cannot load an empty result list; with nothing predicted (or nothing to
        # find) every defined metric is 0.
        has_gt = bool(dataset["annotations"])
        value = 0.0 if has_gt else -1.0
        out = {k: value for k in METRIC_KEYS}
        present = {a["category_id"] for a in dataset["annotations"]}
        out["per_class"] = {str(n): (0.0 if i + 1 in present else -1.0)
                            for i, n in enumerate(class_names)}
        return out
    ev = _evaluate(dataset, results, backend)
    stats = np.asarray(ev.stats, np.float64)
    out: dict = {k: float(stats[i]) for i, k in enumerate(METRIC_KEYS)}
    precision = np.asarray(ev.eval["precision"])  # [T, R, K, A, M]
    per_class = {}
    for k, name in enumerate(class_names):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[str(name)] = float(p.mean()) if p.size else -1.0
    out["per_class"] = per_class
    if return_eval:
        out["_eval"] = ev
    return out


def class_agnostic_metrics(ground_truth: Sequence, predictions: Sequence,
                           backend: str | None = None) -> dict[str, float]:
    """AP and AP50 with every class merged into one: how well the objects are found, whatever
    class they are given. Far above the per-class figures, the detector localises but names
    the objects wrongly; about equal, naming is not what fails.
    """
    def merged(items: Sequence, scored: bool) -> list[dict]:
        out = []
        for item in items:
            boxes = _boxes(item)
            labels = np.asarray(_field(item, "labels"), np.int64).reshape(-1)
            keep = labels >= 0
            one = {"boxes": boxes[keep], "labels": np.zeros(int(keep.sum()), np.int64),
                   "width": _field(item, "width", 0), "height": _field(item, "height", 0)}
            if scored:
                one["scores"] = np.asarray(_field(item, "scores"), np.float64).reshape(-1)[keep]
            out.append(one)
        return out

    m = coco_metrics(merged(ground_truth, False), merged(predictions, True), ["object"],
                     backend=backend)
    return {"AP": m["AP"], "AP50": m["AP50"]}


def format_table(metrics: dict) -> str:
    """A plain-text table of the metrics (and per-class AP, latency when present)."""
    lines = ["metric      value"]
    for k in METRIC_KEYS:
        if k in metrics:
            lines.append(f"{k:<10} {metrics[k]:7.4f}")
    per_class = metrics.get("per_class") or {}
    if per_class:
        lines.append("class AP")
        width = max(len(n) for n in per_class)
        for name, ap in per_class.items():
            lines.append(f"  {name:<{width}} {ap:7.4f}")
    agnostic = metrics.get("class_agnostic")
    if agnostic:
        lines.append(f"any class   AP {agnostic['AP']:.4f}  AP50 {agnostic['AP50']:.4f}"
                     "  (every class merged: objects found, whatever their name)")
    lat = metrics.get("latency_ms")
    if lat:
        lines.append("latency ms  " + "  ".join(f"{k} {v:.2f}" for k, v in lat.items()))
    if "fps" in metrics:
        lines.append(f"fps        {metrics['fps']:.2f}")
    return "\n".join(lines)

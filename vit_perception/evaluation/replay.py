"""Evaluate a bag: replay its frames through a predictor, or score recorded predictions.

    result = replay_model(bag, predictor, out_bag="preds_bag")   # model mode
    result = score_recorded(bag, "/detections")                  # recorded mode
    result.metrics  # AP ... AR100, per_class (+ latency_ms, fps in model mode)
    result.save_figures(out_dir)

No ROS process: frames are read with rosbags, predictions written with rosbags, as fast as the
predictor runs.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vit_perception.evaluation.coco_metrics import class_agnostic_metrics, coco_metrics

log = logging.getLogger(__name__)


@dataclass
class _Worst:
    """A frame kept for the error figures (bounded heap of the worst ones)."""

    errors: int
    index: int
    image: np.ndarray = field(repr=False)
    gt: dict = field(repr=False)
    pred: dict = field(repr=False)

    def __lt__(self, other: _Worst) -> bool:
        return (self.errors, -self.index) < (other.errors, -other.index)


@dataclass
class EvalResult:
    metrics: dict
    class_names: list[str]
    ground_truth: list[dict]
    predictions: list[dict]
    frame_indices: list[int]
    worst: list[_Worst] = field(default_factory=list, repr=False)
    coco_eval: object = field(default=None, repr=False)
    keep_worst: int = 4

    def save_figures(self, out_dir: str | Path, prefix: str = "") -> list[Path]:
        """`pr_curve.png` and `worst_<k>_frame<index>.png` (most errors first) in `out_dir`."""
        import cv2

        from vit_perception.evaluation.plots import draw_errors, save_pr_curve

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        if self.coco_eval is not None:
            paths.append(save_pr_curve(self.coco_eval, self.class_names,
                                       out_dir / f"{prefix}pr_curve.png"))
        chosen: list[_Worst] = []  # most errors first, at least 15 frames apart when possible
        for w in sorted(self.worst, reverse=True):
            if len(chosen) < self.keep_worst and all(abs(w.index - c.index) >= 15
                                                      for c in chosen):
                chosen.append(w)
        for k, w in enumerate(chosen):
            img = draw_errors(w.image, w.gt["boxes"], w.gt["labels"], w.pred["boxes"],
                              w.pred["labels"], w.pred["scores"], self.class_names)
            path = out_dir / f"{prefix}worst_{k}_frame{w.index}.png"
            cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            paths.append(path)
        return paths


class _Collector:
    """Gathers per-frame ground truth and predictions, and keeps the worst frames."""

    def __init__(self, class_names: Sequence[str], keep_worst: int):
        self.class_names = list(class_names)
        self.index = {n: i for i, n in enumerate(self.class_names)}
        self.gt: list[dict] = []
        self.pred: list[dict] = []
        self.indices: list[int] = []
        self.keep_worst = keep_worst
        self.candidates = 8 * keep_worst  # more than shown, so shown frames can be apart
        self.worst: list[_Worst] = []
        self.dropped_names: dict[str, int] = {}

    def labels_of(self, names: Sequence[str]) -> np.ndarray:
        out = []
        for n in names:
            k = self.index.get(n, -1)
            if k < 0:
                self.dropped_names[n] = self.dropped_names.get(n, 0) + 1
            out.append(k)
        return np.asarray(out, np.int64)

    def add(self, frame, boxes, labels, scores) -> None:
        from vit_perception.evaluation.plots import match_errors

        keep = labels >= 0
        pred = {"boxes": np.asarray(boxes, np.float64).reshape(-1, 4)[keep],
                "labels": labels[keep], "scores": np.asarray(scores, np.float64)[keep]}
        gt = {"boxes": frame.boxes, "labels": frame.labels,
              "width": frame.image.shape[1], "height": frame.image.shape[0]}
        self.gt.append(gt)
        self.pred.append(pred)
        self.indices.append(frame.index)
        if self.keep_worst > 0:
            _, fp, fn = match_errors(gt["boxes"], gt["labels"], pred["boxes"], pred["labels"],
                                     pred["scores"])
            errors = int(fp.sum() + fn.sum())
            if errors:
                item = _Worst(errors, frame.index, frame.image, gt, pred)
                if len(self.worst) < self.candidates:
                    heapq.heappush(self.worst, item)
                elif self.worst[0] < item:
                    heapq.heapreplace(self.worst, item)

    def result(self, extra: dict | None = None) -> EvalResult:
        if self.dropped_names:
            log.warning("predicted classes not in the class list, ignored: %s",
                        self.dropped_names)
        if self.gt:
            metrics = coco_metrics(self.gt, self.pred, self.class_names, return_eval=True)
            if len(self.class_names) > 1:
                metrics["class_agnostic"] = class_agnostic_metrics(self.gt, self.pred)
        else:
            raise ValueError("no labelled frames to evaluate")
        coco_eval = metrics.pop("_eval", None)
        metrics.update(extra or {})
        return EvalResult(metrics, self.class_names, self.gt, self.pred, self.indices,
                          list(self.worst), coco_eval, self.keep_worst)


def latency_stats(totals_ms: Sequence[float]) -> dict:
    """{median, p90, p99, mean} of per-frame latencies in ms."""
    a = np.asarray(totals_ms, np.float64)
    if a.size == 0:
        return {"median": float("nan"), "p90": float("nan"), "p99": float("nan"),
                "mean": float("nan")}
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def replay_model(
    bag: str | Path,
    predictor,
    image_topic: str = "/camera/image_raw",
    labels_topic: str = "/labels",
    label_bags: Sequence[str | Path] = (),
    classes=None,
    out_bag: str | Path | None = None,
    predictions_topic: str = "/detections",
    storage: str = "mcap",
    max_frames: int | None = None,
    keep_worst: int = 4,
    copy_images: bool = False,
    progress=None,
) -> EvalResult:
    """Run `predictor.predict(rgb)` on every frame of `bag` and score the labelled ones.

    Predictions of every frame (labelled or not) go to `out_bag` as Detection2DArray on
    `predictions_topic` with the image's header (receive time = image stamp), so
    `ros2 bag play` replays them. Metrics gain `latency_ms` (preprocess + infer + postprocess
    per frame: median, p90, p99, mean), `fps` (frames per wall-clock second of the whole
    replay: read, decode, predict, write), `predict_fps`, `frames` and `labelled_frames`.
    """
    from vit_perception.data.bags import read_frames

    stream = read_frames(bag, image_topic, labels_topic, label_bags, classes,
                         max_frames=max_frames)
    class_names = stream.classes or list(getattr(predictor, "class_names", []))
    collector = _Collector(class_names, keep_worst)
    writer = None
    if out_bag is not None:
        from vit_perception.data.bag_writer import BagWriter

        writer = BagWriter(out_bag, storage)
        writer.open()
    totals, predict_s = [], 0.0
    frames = 0
    t0 = time.perf_counter()
    try:
        for frame in stream:
            t1 = time.perf_counter()
            pred = predictor.predict(frame.image)
            predict_s += time.perf_counter() - t1
            timings = getattr(pred, "timings", None) or {}
            totals.append(sum(float(timings.get(k, 0.0))
                              for k in ("preprocess", "infer", "postprocess")))
            frames += 1
            names = list(pred.class_names)
            pred_names = [names[int(k)] if 0 <= int(k) < len(names) else str(int(k))
                          for k in np.asarray(pred.labels).reshape(-1)]
            if writer is not None:
                if copy_images:
                    writer.write_image(image_topic, frame.stamp_ns, frame.frame_id, frame.image)
                writer.write_detections(predictions_topic, frame.stamp_ns, frame.frame_id,
                                        pred.boxes, pred_names, pred.scores)
            if frame.labelled:
                collector.add(frame, pred.boxes, collector.labels_of(pred_names), pred.scores)
            if progress is not None:
                progress(frames)
    finally:
        if writer is not None:
            writer.close()
    wall = time.perf_counter() - t0
    extra = {
        "latency_ms": latency_stats(totals),
        "fps": frames / wall if wall > 0 else float("nan"),
        "predict_fps": frames / predict_s if predict_s > 0 else float("nan"),
        "frames": frames,
        "labelled_frames": len(collector.gt),
    }
    return collector.result(extra)


def score_recorded(
    bag: str | Path,
    predictions_topic: str,
    image_topic: str = "/camera/image_raw",
    labels_topic: str = "/labels",
    label_bags: Sequence[str | Path] = (),
    prediction_bags: Sequence[str | Path] = (),
    classes=None,
    max_frames: int | None = None,
    keep_worst: int = 4,
) -> EvalResult:
    """Score Detection2DArray predictions already recorded on `predictions_topic` (in `bag` or
    `prediction_bags`), paired with images and labels by header stamp; class_id strings map to
    class indices by name. A labelled frame without a prediction message counts as predicting
    nothing."""
    from vit_perception.data.bags import bag_topics, read_detections, read_frames

    preds: dict = {}
    for src in [bag, *prediction_bags]:
        if predictions_topic in bag_topics(src):
            for stamp, det in read_detections(src, predictions_topic).items():
                preds.setdefault(stamp, det)
    if not preds:
        sources = [str(bag), *map(str, prediction_bags)]
        raise ValueError(f"no {predictions_topic} messages in {sources}")
    stream = read_frames(bag, image_topic, labels_topic, label_bags, classes,
                         labelled_only=True, max_frames=max_frames)
    collector = _Collector(stream.classes, keep_worst)
    missing = 0
    for frame in stream:
        det = preds.get(frame.stamp_ns)
        if det is None:
            missing += 1
            boxes, names, scores = np.zeros((0, 4)), [], np.zeros(0)
        else:
            boxes, names, scores = det.boxes, det.class_names, det.scores
        collector.add(frame, boxes, collector.labels_of(names), scores)
    if missing:
        log.warning("%d labelled frames have no %s message (scored as empty)", missing,
                    predictions_topic)
    return collector.result({"frames": len(collector.gt), "labelled_frames": len(collector.gt),
                             "frames_without_predictions": missing})

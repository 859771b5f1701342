"""Validation: the model over held-out frames, the runtime's post-processing, COCO metrics."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vit_perception.training.dataset import Sample


@torch.no_grad()
def evaluate(model: nn.Module, postprocessor, samples: list[Sample], class_names: list[str],
             size: tuple[int, int], mean, std, device: torch.device, batch_size: int = 8,
             score_threshold: float = 0.01, max_detections: int = 100,
             autocast_dtype: torch.dtype | None = None) -> dict:
    """``coco_metrics`` (AP, AP50, ...) of ``model`` on ``samples`` (frames as recorded).

    Frames go through ``models.preprocess.preprocess`` and the ``PostProcessor`` exactly as at
    run time, with a low score threshold so the precision-recall curve is complete.
    """
    from vit_perception.evaluation.coco_metrics import coco_metrics
    from vit_perception.models.preprocess import preprocess

    was_training = model.training
    model.eval()
    gts, preds = [], []
    try:
        for i in range(0, len(samples), batch_size):
            chunk = samples[i:i + batch_size]
            x, boxes = preprocess([np.asarray(s.image) for s in chunk], size, mean, std, device)
            with torch.autocast(device.type, dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                out = model(x)
            out = {k: out[k].float() for k in ("pred_logits", "pred_boxes")}
            for s, det in zip(chunk, postprocessor(out, boxes, score_threshold, max_detections)):
                gts.append({"boxes": s.boxes, "labels": s.labels, "width": s.width,
                            "height": s.height})
                preds.append({"boxes": det.boxes, "labels": det.labels, "scores": det.scores})
    finally:
        model.train(was_training)
    return coco_metrics(gts, preds, class_names)


def plain_metrics(metrics: dict | None) -> dict:
    """Metrics without non-plain values (e.g. the COCOeval object)."""
    if not metrics:
        return {}
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, dict, list))}

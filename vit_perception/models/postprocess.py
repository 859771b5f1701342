"""Model outputs -> detections in pixels of the original frames (no NMS: DETR sets are sparse)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vit_perception.models.preprocess import Letterbox


@dataclass
class Detections:
    """One frame's detections: ``boxes [n, 4]`` float32 xyxy frame pixels, ``scores [n]``
    float32, ``labels [n]`` int64, ``class_names`` (n names), highest score first."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str] = field(default_factory=list)


class PostProcessor:
    """``(outputs, letterboxes) -> list[Detections]``.

    A query's score is its highest softmax probability over the real classes (the no-object
    column is excluded); queries below ``score_threshold`` are dropped and at most
    ``max_detections`` kept. Boxes go from normalised cxcywh of the model input to xyxy frame
    pixels through each frame's ``Letterbox`` and are clipped to the frame.
    """

    def __init__(self, classes: Sequence[str], score_threshold: float = 0.5,
                 max_detections: int = 100):
        self.classes = list(classes)
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)

    @torch.no_grad()
    def __call__(self, outputs: dict, letterboxes: Sequence[Letterbox],
                 score_threshold: float | None = None,
                 max_detections: int | None = None) -> list[Detections]:
        """``outputs``: ``pred_logits [B, N, K+1]``, ``pred_boxes [B, N, 4]`` (tensor/array)."""
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        limit = self.max_detections if max_detections is None else int(max_detections)
        # A few hundred numbers per frame: numpy on the host beats a dozen tiny torch ops.
        logits = _host(outputs["pred_logits"]).astype(np.float32, copy=False)
        cxcywh = _host(outputs["pred_boxes"]).astype(np.float64)
        boxes = np.concatenate((cxcywh[..., :2] - 0.5 * cxcywh[..., 2:],
                                cxcywh[..., :2] + 0.5 * cxcywh[..., 2:]), axis=-1)
        prob = np.exp(logits - logits.max(-1, keepdims=True))
        prob = prob[..., :-1] / prob.sum(-1, keepdims=True)  # softmax; drop no-object
        labels, scores = prob.argmax(-1), prob.max(-1)  # [B, N]
        results = []
        for i, lb in enumerate(letterboxes):
            order = np.argsort(-scores[i], kind="stable")
            order = order[scores[i][order] >= threshold][:limit]
            size = np.array([lb.dst_w, lb.dst_h, lb.dst_w, lb.dst_h], np.float64)
            pixel = lb.to_source(boxes[i][order] * size)
            label = labels[i][order].astype(np.int64)
            results.append(Detections(
                boxes=pixel.astype(np.float32).reshape(-1, 4),
                scores=scores[i][order].astype(np.float32),
                labels=label,
                class_names=[self.classes[j] if j < len(self.classes) else str(j) for j in label],
            ))
        return results


def _host(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value)

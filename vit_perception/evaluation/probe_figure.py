"""The probe's PNG: one row per kept frame: the frame with its ground-truth boxes, the [CLS]
attention over it, and the PCA preview of its patch features (one PCA fitted over all rows, so
colours mean the same in every row)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vit_perception.evaluation.probe import ProbeSample


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def probe_figure(samples: Sequence[ProbeSample], path: str | Path, title: str = "") -> Path:
    """Write the grid of ``samples`` to ``path`` (PNG); returns the path."""
    from vit_perception.visualize import attention_map, pca_preview

    if not samples:
        raise ValueError("no frames to draw")
    basis = None
    c = samples[0].features.shape[0]
    stacked = np.concatenate([s.features.reshape(c, -1) for s in samples], axis=1)
    _, basis = pca_preview(stacked[:, None, :], 1, 1)  # one basis for every row
    rows = []
    for s in samples:
        h, w = s.image.shape[:2]
        boxed = s.image.copy()
        for (x1, y1, x2, y2), name in zip(s.boxes.astype(int), s.names):
            cv2.rectangle(boxed, (x1, y1), (x2 - 1, y2 - 1), (255, 255, 0), 1)
            cv2.putText(boxed, name, (x1, max(10, y1 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        (255, 255, 0), 1, cv2.LINE_AA)
        att = attention_map(s.attention, s.features.shape[2] * 16, s.features.shape[1] * 16)
        att = cv2.resize(att, (w, h), interpolation=cv2.INTER_LINEAR)
        heat = cv2.applyColorMap(att, cv2.COLORMAP_INFERNO)[..., ::-1]
        overlay = (0.45 * s.image + 0.55 * heat).astype(np.uint8)
        pca, _ = pca_preview(s.features, w, h, basis)
        rows.append(np.hstack([_label(boxed, f"frame {s.index}"),
                               _label(overlay, "[CLS] attention"),
                               _label(pca, "PCA of patch features")]))
    grid = np.vstack(rows)
    if title:
        bar = np.zeros((22, grid.shape[1], 3), np.uint8)
        grid = np.vstack([_label(bar, title), grid])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(grid[..., ::-1])):
        raise OSError(f"{path}: cannot write PNG")
    return path

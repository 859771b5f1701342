"""Pictures for the node's debug topics: drawn detections, PCA of patch features, attention.

numpy + OpenCV only; each call costs a few milliseconds at 640x480 on a small CPU.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=1024)
def class_color(label: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per class id (golden-ratio hue steps, bright and saturated)."""
    hue = (int(label) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(
    rgb: np.ndarray,
    boxes,
    labels,
    scores,
    class_names: Sequence[str] = (),
) -> np.ndarray:
    """A copy of `rgb` ([H, W, 3] uint8) with boxes and "name score" labels drawn.

    `boxes` [n, 4] xyxy pixels of this image, `labels` [n] class ids, `scores` [n].
    Class ids outside `class_names` are written as numbers.
    """
    out = np.array(rgb, dtype=np.uint8, copy=True, order="C")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(boxes) == len(labels) == len(scores):
        raise ValueError(f"{len(boxes)} boxes, {len(labels)} labels, {len(scores)} scores")
    height, width = out.shape[:2]
    thickness = max(1, round(min(height, width) / 320))
    font_scale = max(0.4, min(height, width) / 960)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for (x1, y1, x2, y2), label, score in zip(boxes, labels, scores):
        if not np.all(np.isfinite([x1, y1, x2, y2])):
            continue
        color = class_color(int(label))
        p1 = (int(round(x1)), int(round(y1)))
        p2 = (int(round(x2)), int(round(y2)))
        cv2.rectangle(out, p1, p2, color, thickness, cv2.LINE_8)
        name = class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label))
        text = f"{name} {score:.2f}"
        (tw, th), baseline = cv2.getTextSize(text, font, font_scale, 1)
        # Label above the box, or inside it when the box touches the top edge.
        ty = p1[1] - baseline - 2 if p1[1] - th - baseline - 2 >= 0 else p1[1] + th + 2
        tx = min(max(p1[0], 0), max(width - tw, 0))
        cv2.rectangle(out, (tx, ty - th - 2), (tx + tw, ty + baseline), color, cv2.FILLED)
        luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        ink = (0, 0, 0) if luma > 140 else (255, 255, 255)
        cv2.putText(out, text, (tx, ty), font, font_scale, ink, 1, cv2.LINE_AA)
    return out


@dataclass(frozen=True)
class PcaBasis:
    """A fitted 3-component PCA of patch features, reusable across frames.

    mean [C], components [3, C] (orthonormal rows, sign fixed), low/high [3]: the range of each
    component's projection on the frame it was fitted to, mapped to 0..255.
    """

    mean: np.ndarray
    components: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _matmul(a: np.ndarray, b: np.ndarray, transpose_a: bool = False) -> np.ndarray:
    """float32 `a @ b` (or `a.T @ b`) through OpenCV's GEMM.

    For these skinny products NumPy's multithreaded BLAS gains nothing and, when other
    processes hold the cores, its threads wait on each other for 10x the compute time.
    """
    flags = cv2.GEMM_1_T if transpose_a else 0
    return np.asarray(cv2.gemm(a, b, 1.0, _NO_MATRIX, 0.0, flags=flags))


_NO_MATRIX = np.empty((0, 0), np.float32)  # GEMM's unused third operand (beta = 0)


def _top_components(x: np.ndarray, k: int = 3, oversample: int = 5, iters: int = 3) -> np.ndarray:
    """First `k` principal directions [k, C] of centred rows `x` [n, C] (randomised SVD).

    A few power iterations on a (k + oversample)-dim subspace: far cheaper than a full SVD
    of [h*w, C], and accurate when the leading spectrum is well separated.
    """
    n, c = x.shape
    width = min(k + oversample, c, n)
    q = np.random.default_rng(0).standard_normal((c, width)).astype(x.dtype)
    for _ in range(iters):
        q, _ = np.linalg.qr(_matmul(x, _matmul(x, q), transpose_a=True))  # [C, width]
    sketch = _matmul(x, q)  # [n, width]
    _, vecs = np.linalg.eigh(sketch.T @ sketch)  # ascending eigenvalues
    comps = (q @ vecs[:, ::-1][:, :k]).T.astype(np.float32)  # [k, C]
    # Sign convention: the largest-magnitude loading is positive, so refits agree in sign.
    idx = np.argmax(np.abs(comps), axis=1)
    comps *= np.sign(comps[np.arange(len(comps)), idx])[:, None]
    return comps


def pca_preview(
    features,
    out_w: int,
    out_h: int,
    basis: PcaBasis | None = None,
    interpolation: int = cv2.INTER_NEAREST,
) -> tuple[np.ndarray, PcaBasis]:
    """The first three PCA components of patch features as an RGB image, as DINOv2 shows them.

    `features` [C, h, w] float. Without `basis` a PCA is fitted to this frame; pass the
    returned basis back on later frames to keep colours stable over time (projections are then
    normalised with the fitted range and clipped). Each component is min/max normalised to
    0..255 and the [h, w] grid is resized to `out_w` x `out_h` (nearest: one block per patch).
    A fit costs a few ms more than a projection; a node can refit now and then (say each
    second) and reuse the basis in between.
    Returns `(rgb [out_h, out_w, 3] uint8, basis)`.
    """
    feats = np.asarray(features, dtype=np.float32)
    if feats.ndim != 3:
        raise ValueError(f"expected features [C, h, w], got shape {feats.shape}")
    c, h, w = feats.shape
    # [h*w, C] row-major (GEMM wants contiguous input).
    x = feats.reshape(c, h * w).T.copy()  # never aliases the caller's array
    if basis is None:
        mean = x.mean(axis=0)
        x -= mean
        comps = _top_components(x, k=min(3, c, h * w))
        proj = _matmul(x, np.ascontiguousarray(comps.T))
        basis = PcaBasis(mean, comps, proj.min(axis=0), proj.max(axis=0))
    else:
        if basis.mean.shape != (c,):
            raise ValueError(f"basis has {basis.mean.shape[0]} channels, features have {c}")
        x -= basis.mean
        proj = _matmul(x, np.ascontiguousarray(basis.components.T))
    span = np.maximum(basis.high - basis.low, 1e-12)
    norm = np.clip((proj - basis.low) / span, 0.0, 1.0)
    if norm.shape[1] < 3:  # fewer than three channels: pad with zeros
        norm = np.pad(norm, ((0, 0), (0, 3 - norm.shape[1])))
    grid = (norm * 255.0 + 0.5).astype(np.uint8).reshape(h, w, 3)
    return cv2.resize(grid, (int(out_w), int(out_h)), interpolation=interpolation), basis


def attention_map(attention, out_w: int, out_h: int) -> np.ndarray:
    """The [CLS] attention map as mono8 [out_h, out_w]: mean over heads, min/max normalised.

    `attention` [heads, h, w] or [h, w] float; resized with bilinear interpolation.
    """
    att = np.asarray(attention, dtype=np.float32)
    if att.ndim == 3:
        att = att.mean(axis=0)
    if att.ndim != 2:
        raise ValueError(f"expected attention [heads, h, w] or [h, w], got {att.shape}")
    clean = np.nan_to_num(att, nan=0.0, posinf=0.0, neginf=0.0)
    big = cv2.resize(clean, (int(out_w), int(out_h)), interpolation=cv2.INTER_LINEAR)
    low, high = float(big.min()), float(big.max())
    if high <= low:
        return np.zeros((int(out_h), int(out_w)), np.uint8)
    return cv2.convertScaleAbs(big, alpha=255.0 / (high - low), beta=-low * 255.0 / (high - low))

"""How much of a reference backbone's features another backbone's features hold.

A distilled student publishes its own patch features; whether they are worth subscribing to in
place of the teacher's is a question about the two models' features on the same objects.
``probe --reference`` pools both models' patch features inside the same ground-truth boxes (each
model in its own input geometry, so no grid alignment is needed) and compares the two
``[objects, channels]`` matrices:

- ``linear_cka``: linear centred kernel alignment (Kornblith et al., 2019), 1 when one matrix is
  an orthogonal transform and scaling of the other, near 0 for unrelated features;
- ``heldout_r2``: the share of the reference's variance a ridge map from the features explains
  on held-out frames (fit on the train frames); 1 when they are a linear function of each
  other, 0 when the map predicts no better than the reference's mean, below 0 when worse.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vit_perception.evaluation.probe import split_by_frame


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of ``x [n, p]`` and ``y [n, q]`` (rows: the same objects)."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = (x.T @ y).pow(2).sum()
    norm = (x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()
    return float(cross / norm.clamp_min(1e-300))


def _ridge_r2(x: Tensor, y: Tensor, fit: Tensor, score: Tensor, ridge: float) -> float:
    mx, sx = x[fit].mean(0), x[fit].std(0).clamp_min(1e-6)
    my = y[fit].mean(0)
    xt = (x[fit] - mx) / sx
    gram = xt.T @ xt
    lam = ridge * float(gram.trace()) / gram.shape[0]
    w = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype),
                           xt.T @ (y[fit] - my))
    pred = ((x[score] - mx) / sx) @ w + my
    sse = (y[score] - pred).pow(2).sum()
    sst = (y[score] - y[score].mean(0)).pow(2).sum()
    return float(1.0 - sse / sst.clamp_min(1e-300))


RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def heldout_r2(x: Tensor, y: Tensor, train: np.ndarray, test: np.ndarray,
               frame_ids: np.ndarray | None = None) -> float:
    """R^2 on the ``test`` rows of a ridge map ``x -> y`` fitted on the ``train`` rows (``x``
    standardised with the train statistics). The ridge strength (relative to the mean
    eigenvalue, one of ``RIDGES``) is chosen on the last fifth of the train rows' frames
    (``frame_ids``; rows when None), then the map is refitted on all train rows."""
    x, y = x.double(), y.double()
    rows = np.flatnonzero(train)
    groups = frame_ids[rows] if frame_ids is not None else rows
    inner, held = split_by_frame(groups, 0.2)
    best = max(RIDGES, key=lambda r: _ridge_r2(x, y, torch.as_tensor(rows[inner]),
                                               torch.as_tensor(rows[held]), r))
    return _ridge_r2(x, y, torch.as_tensor(train), torch.as_tensor(test), best)


def fidelity(x: Tensor, y: Tensor, frame_ids: np.ndarray, test_fraction: float = 0.5
             ) -> dict[str, float]:
    """``{"reference_cka", "reference_r2"}`` of features ``x`` against reference ``y``, with
    the probe's train/test split by frame."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"the two backbones pooled {x.shape[0]} and {y.shape[0]} boxes: not the "
                         "same objects")
    train, test = split_by_frame(frame_ids, test_fraction)
    return {"reference_cka": linear_cka(x, y),
            "reference_r2": heldout_r2(x, y, train, test, frame_ids)}

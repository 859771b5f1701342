"""A region objective: the student's patch tokens of a global view, pooled over where a local
crop lies in it, predict the teacher's [CLS] output for that local crop
(``pretrain.region_weight``).

DINO's [CLS] learns what a crop shows; nothing asks the patch tokens under that crop, in a
larger view of the same frame, to hold it. The probe's box-pooled k-NN (``evaluation.probe``)
reads exactly that: patch tokens averaged over a region. Here every local crop's rectangle (kept
by ``MultiCrop`` with the global views': ``x, y, w, h`` in frame pixels and whether it was
flipped) is mapped into each global view; the student's tokens there are averaged, each weighted
by the share of its cell the rectangle covers (as the probe pools a box), passed through the
DINO head and trained with DINO's cross-entropy against the teacher's centred, sharpened [CLS]
output for the local crop (stop-gradient). Pairs where less than ``MIN_INSIDE`` of the crop lies
inside the global view are left out. Akin to the region-level losses of DetCon and of ODIN's
object crops, in DINO's form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vit_perception.dino.dense import frame_to_view

MIN_INSIDE = 0.5  # share of a local crop's area that must lie inside the global view


def _overlap_1d(lo: Tensor, hi: Tensor, cells: int, cell: float) -> Tensor:
    """``[B, cells]`` fraction of each 1-D cell that ``[lo, hi)`` (``[B]`` each) covers."""
    edges = torch.arange(cells + 1, dtype=lo.dtype, device=lo.device) * cell
    return (torch.minimum(hi[:, None], edges[None, 1:])
            - torch.maximum(lo[:, None], edges[None, :-1])).clamp_min(0) / cell


def region_weights(local: Tensor, glob: Tensor, grid: tuple[int, int], size: tuple[int, int]
                   ) -> tuple[Tensor, Tensor]:
    """Where each local crop ``local [B, 5]`` lies in the global view ``glob [B, 5]`` (both
    ``x, y, w, h, flipped`` in frame pixels; the global view is ``size`` (height, width) pixels
    with a ``grid`` (rows, cols) of patches): ``(weights [B, rows*cols]`` summing to 1 over the
    covered cells (row-major, like the ViT's tokens), ``valid [B]`` bool: at least
    ``MIN_INSIDE`` of the crop inside the view)."""
    x0, y0, w, h = (local[:, i] for i in range(4))
    corners = torch.stack((torch.stack((x0, y0), -1), torch.stack((x0 + w, y0 + h), -1)), 1)
    pts = frame_to_view(corners, glob, size)  # [B, 2, 2]; a flip swaps left and right
    lo_x, hi_x = pts[..., 0].min(1).values, pts[..., 0].max(1).values
    lo_y, hi_y = pts[..., 1].min(1).values, pts[..., 1].max(1).values
    area = (hi_x - lo_x) * (hi_y - lo_y)
    cx = (torch.minimum(hi_x, hi_x.new_tensor(float(size[1]))) - lo_x.clamp_min(0)).clamp_min(0)
    cy = (torch.minimum(hi_y, hi_y.new_tensor(float(size[0]))) - lo_y.clamp_min(0)).clamp_min(0)
    valid = cx * cy >= MIN_INSIDE * area.clamp_min(1e-9)
    rows = _overlap_1d(lo_y, hi_y, grid[0], size[0] / grid[0])
    cols = _overlap_1d(lo_x, hi_x, grid[1], size[1] / grid[1])
    weights = (rows[:, :, None] * cols[:, None, :]).flatten(1)
    return weights / weights.sum(1, keepdim=True).clamp_min(1e-9), valid


def pooled_regions(tokens: Tensor, geometry: Tensor, grid: tuple[int, int],
                   size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """The global views' patch ``tokens [2B, n, D]`` (view-major) pooled over every local
    crop of ``geometry [B, 2 + L, 5]``: ``(pooled [P, D], local index [P]`` into the local
    views' view-major rows (``l * B + b``), ``valid [P]``), P = 2 * L * B pairs."""
    b = geometry.shape[0]
    n_local = geometry.shape[1] - 2
    pooled, index, valid = [], [], []
    batch = torch.arange(b, device=tokens.device)
    for g, view_tokens in enumerate(tokens.chunk(2)):
        for j in range(n_local):
            wts, ok = region_weights(geometry[:, 2 + j], geometry[:, g], grid, size)
            pooled.append(torch.einsum("bn,bnd->bd", wts.to(view_tokens.dtype), view_tokens))
            index.append(j * b + batch)
            valid.append(ok)
    return torch.cat(pooled), torch.cat(index), torch.cat(valid)


def region_loss(student: Tensor, targets: Tensor, valid: Tensor, student_temp: float) -> Tensor:
    """DINO's cross-entropy from ``targets [P, K]`` (the teacher's distributions for each
    pair's local crop) to ``student [P, K]`` (head outputs of the pooled regions), averaged over
    the ``valid`` pairs (0 when there are none)."""
    ce = torch.sum(-targets * F.log_softmax(student.float() / student_temp, dim=-1), dim=-1)
    m = valid.float()
    return (ce * m).sum() / m.sum().clamp_min(1.0)

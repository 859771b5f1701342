"""2D sine/cosine positional encodings (DETR) for feature grids and for boxes (DAB-DETR)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _sine(coords: Tensor, num_feats: int, temperature: float) -> Tensor:
    """``[...]`` coordinates in [0, 2pi] -> ``[..., num_feats]`` interleaved sin/cos features."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos = coords[..., None] / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """DETR's sine embedding of an ``h x w`` grid: ``[1, 2 * num_pos_feats, h, w]``.

    Positions are normalised to the grid size (cell centres), so the same encoding serves any
    input resolution. No padding mask: the model sees fixed-size letterboxed inputs.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature

    def forward(self, h: int, w: int, device: torch.device | None = None) -> Tensor:
        scale = 2 * math.pi
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h * scale
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w * scale
        pos_y = _sine(ys, self.num_pos_feats, self.temperature)[:, None, :].expand(h, w, -1)
        pos_x = _sine(xs, self.num_pos_feats, self.temperature)[None, :, :].expand(h, w, -1)
        return torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1).unsqueeze(0)


def box_sine_embedding(boxes: Tensor, num_pos_feats: int = 128,
                       temperature: float = 10000.0) -> Tensor:
    """``[B, N, 4]`` normalised cxcywh -> ``[B, N, 4 * num_pos_feats]`` (x, y, w, h order)."""
    parts = [_sine(boxes[..., i] * 2 * math.pi, num_pos_feats, temperature) for i in range(4)]
    return torch.cat(parts, dim=-1)

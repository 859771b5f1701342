"""2D sine/cosine positional encodings (DETR) for feature grids and for boxes (DAB-DETR)."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch
from torch import Tensor, nn

_CACHE: OrderedDict[Hashable, Tensor] = OrderedDict()
_CACHE_SIZE = 32
_LOCK = threading.Lock()


def cached_constant(key: Hashable, make: Callable[[], Tensor]) -> Tensor:
    """``make()`` once per ``key`` (shape, device, ...): input-independent tables (sine grids,
    anchors) are then neither recomputed every forward nor traced as ops into ONNX (a cached
    tensor exports as a folded initializer). Bypassed under ``torch.compile``, which folds them.
    """
    if torch.compiler.is_compiling():
        return make()
    with _LOCK:
        value = _CACHE.get(key)
        if value is not None:
            _CACHE.move_to_end(key)
            return value
    # a normal tensor even when first asked under inference_mode: autograd may save it later
    with torch.inference_mode(False), torch.no_grad():
        value = make()
    with _LOCK:
        _CACHE[key] = value
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


def _dim_t(num_feats: int, temperature: float, device: torch.device) -> Tensor:
    def make() -> Tensor:
        dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
        return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    return cached_constant(("dim_t", num_feats, float(temperature), str(device)), make)


def _sine(coords: Tensor, num_feats: int, temperature: float) -> Tensor:
    """``[...]`` coordinates in [0, 2pi] -> ``[..., num_feats]`` interleaved sin/cos features.

    Computed in float32 (a half-precision angle up to 2pi loses the low frequencies) and
    returned in ``coords.dtype``, so a model cast to fp16/bf16 stays in that dtype."""
    pos = coords.float()[..., None] / _dim_t(num_feats, temperature, coords.device)
    out = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)
    return out.to(coords.dtype)


class PositionEmbeddingSine(nn.Module):
    """DETR's sine embedding of an ``h x w`` grid: ``[1, 2 * num_pos_feats, h, w]``.

    Positions are normalised to the grid size (cell centres), so the same encoding serves any
    input resolution. No padding mask: the model sees fixed-size letterboxed inputs.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature

    def forward(self, h: int, w: int, device: torch.device | None = None,
                dtype: torch.dtype = torch.float32) -> Tensor:
        """Cached per (h, w, device, dtype): the result is shared, do not modify it in place.
        ``dtype``: the features' dtype (computed in float32, then cast)."""
        key = ("grid", int(h), int(w), self.num_pos_feats, float(self.temperature),
               str(torch.device(device) if device is not None else torch.device("cpu")),
               str(dtype))
        return cached_constant(key, lambda: self._compute(int(h), int(w), device).to(dtype))

    def _compute(self, h: int, w: int, device: torch.device | None) -> Tensor:
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

"""Augmentation of a whole batch on its device: one affine warp, photometric jitter, normalising.

``batch_augment(images, params, mean, std)`` takes the loader's uint8 frames, each already
letterboxed into the model input (``[B, 3, H, W]``, one fixed shape, pinned for the upload),
and one ``PARAMS`` row per sample (``augment_draw.FrameAugment.params``, drawn on the CPU):

1. the per-sample affine map (flip, zoom-out, the crop that keeps the boxes whole, and the
   letterbox of the augmented frame) as one ``affine_grid`` + bilinear ``grid_sample`` of the
   batch; what falls outside the frame is the mean colour, as on the CPU path's canvas;
2. brightness, contrast (against the mean grey of the augmented frame) and saturation, each
   sample with its own factors, applied in that order (torchvision's ColorJitter shuffles the
   order per call; the factors' ranges are the same);
3. normalisation with ``mean``/``std``, and zero (the mean) outside the augmented frame's extent
   in the input, the runtime's letterbox padding.

Plain tensor operations on ``images.device``: the same code runs on a CPU (the tests) and on
CUDA, without host synchronisation. With identity rows it reproduces ``models.preprocess``.
The boxes are moved on the CPU by ``FrameAugment.boxes`` (the same map, a few numbers).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# columns of a parameter row: q = m * u + c per axis (source -> output input pixels), the
# augmented frame's extent in the output (xyxy pixels), the photometric factors
PARAMS = ("m_x", "c_x", "m_y", "c_y", "x0", "y0", "x1", "y1", "brightness", "contrast",
          "saturation")
IDENTITY_MAP = (1.0, 0.0, 1.0, 0.0)
GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def needs_warp(params: Tensor) -> bool:
    """Whether any row of ``params`` (a CPU tensor: no device sync) moves pixels."""
    return bool((params[:, :4] != params.new_tensor(IDENTITY_MAP)).any())


def needs_jitter(params: Tensor) -> bool:
    """Whether any row of ``params`` (a CPU tensor) changes colours."""
    return bool((params[:, 8:11] != 1).any())


def batch_augment(images: Tensor, params: Tensor, mean: Sequence[float], std: Sequence[float],
                  *, warp: bool = True, jitter: bool = True) -> Tensor:
    """``images [B, 3, H, W]`` uint8 + ``params [B, len(PARAMS)]`` -> normalised float32
    ``[B, 3, H, W]`` on ``images.device``. ``warp``/``jitter`` False skip those steps (the
    caller knows from the CPU rows, ``needs_warp``/``needs_jitter``)."""
    b, _, h, w = images.shape
    p = params.to(images.device, torch.float32, non_blocking=True)
    mean255, inv_std = _normalisers(tuple(mean), tuple(std), images.device)
    x = images.float()
    if warp:
        x = F.grid_sample(x - mean255, _grid(p, h, w), mode="bilinear", padding_mode="zeros",
                          align_corners=False) + mean255
    inside = _extent_mask(p[:, 4:8], h, w)  # [B, 1, H, W]
    if jitter:
        x = _jitter(x, p[:, 8:11], inside)
    return (x - mean255) * inv_std * inside


def _grid(p: Tensor, h: int, w: int) -> Tensor:
    """``affine_grid`` of the inverse maps: output pixel ``q`` samples source ``(q - c) / m``
    (in [-1, 1] units, pixel centres at ``(2i + 1) / n - 1``)."""
    theta = p.new_zeros(len(p), 2, 3)
    for row, (m, c, n) in enumerate(((p[:, 0], p[:, 1], w), (p[:, 2], p[:, 3], h))):
        theta[:, row, row] = 1 / m
        theta[:, row, 2] = 1 / m - 2 * c / (m * n) - 1
    return F.affine_grid(theta, [len(p), 3, h, w], align_corners=False)


def _extent_mask(extent: Tensor, h: int, w: int) -> Tensor:
    """``[B, 1, H, W]`` float: 1 where the pixel centre lies inside each row's xyxy extent."""
    xs = torch.arange(w, device=extent.device, dtype=torch.float32) + 0.5
    ys = torch.arange(h, device=extent.device, dtype=torch.float32) + 0.5
    in_x = (xs >= extent[:, 0:1]) & (xs <= extent[:, 2:3])  # [B, W]
    in_y = (ys >= extent[:, 1:2]) & (ys <= extent[:, 3:4])  # [B, H]
    return (in_y[:, None, :, None] & in_x[:, None, None, :]).float()


def _jitter(x: Tensor, factors: Tensor, inside: Tensor) -> Tensor:
    """Brightness, contrast, saturation of 0-255 ``x`` with per-sample ``factors [B, 3]``."""
    grey_w = x.new_tensor(GREY).view(1, 3, 1, 1)
    f = factors[:, :, None, None, None]  # [B, 3, 1, 1, 1]
    x = (x * f[:, 0]).clamp(0, 255)
    grey = (x * grey_w).sum(1, keepdim=True)
    mean = (grey * inside).sum((2, 3), keepdim=True) / inside.sum((2, 3), keepdim=True).clamp(1)
    x = ((x - mean) * f[:, 1] + mean).clamp(0, 255)
    grey = (x * grey_w).sum(1, keepdim=True)
    return ((x - grey) * f[:, 2] + grey).clamp(0, 255)


@functools.lru_cache(maxsize=8)
def _normalisers(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
                 ) -> tuple[Tensor, Tensor]:
    """``[1, 3, 1, 1]`` mean and 1/std in 0-255 units on ``device``, made once (the same float32
    arithmetic as ``models.preprocess``)."""
    with torch.inference_mode(False):
        mean255 = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        inv_std = 1.0 / (torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0)
    return mean255, inv_std

"""Augmentation of a whole batch on its device: one affine warp, photometric jitter, normalising.

``batch_augment(images, params, mean, std)`` takes the loader's uint8 frames, each already
letterboxed into the model input (``[B, 3, H, W]``, one fixed shape, pinned for the upload),
and one ``PARAMS`` row per sample (``augment_draw.FrameAugment.params``, drawn on the CPU):

1. the per-sample affine map (flip, zoom-out, the crop that keeps the boxes whole, and the
   letterbox of the augmented frame) as one bilinear ``grid_sample`` of the batch (the grid is
   ``affine_grid``'s for a diagonal map, built from two vectors); what falls outside the frame
   is the mean colour, as on the CPU path's canvas;
2. brightness, contrast (against the mean grey of the augmented frame) and saturation, each
   sample with its own factors, applied in that order as one 3x3 colour matrix (torchvision's
   ColorJitter shuffles the order per call and clips after each step; the ranges are the same);
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
    h, w = images.shape[-2:]
    p = params.to(images.device, torch.float32, non_blocking=True)
    mean255, inv_std = _normalisers(tuple(mean), tuple(std), images.device)
    x = images.float().sub_(mean255)  # centred on the mean colour: grid_sample's zero fill
    if warp:
        x = F.grid_sample(x, _grid(p, h, w), mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    inside = _extent_mask(p[:, 4:8], h, w)  # [B, 1, H, W]
    if jitter:
        x = _jitter(x, p[:, 8:11], inside, mean255)
    return x.mul_(inv_std).mul_(inside)


def _grid(p: Tensor, h: int, w: int) -> Tensor:
    """The sampling grid of the inverse maps: output pixel ``q`` samples source ``(q - c) / m``
    in ``grid_sample``'s [-1, 1] units (pixel centres at ``(2i + 1) / n - 1``). The maps are
    separable (scale and shift per axis), so the grid is two broadcast vectors (what
    ``affine_grid`` would compute with a diagonal ``theta``)."""
    axes = []
    for m, c, n in ((p[:, 0:1], p[:, 1:2], w), (p[:, 2:3], p[:, 3:4], h)):
        q = torch.arange(n, device=p.device, dtype=torch.float32) + 0.5  # pixel centres
        axes.append(((q - c) / m) * (2.0 / n) - 1.0)  # [B, n]
    gx, gy = axes
    return torch.stack((gx[:, None, :].expand(-1, h, -1), gy[:, :, None].expand(-1, -1, w)),
                       dim=-1)


def _extent_mask(extent: Tensor, h: int, w: int) -> Tensor:
    """``[B, 1, H, W]`` float: 1 where the pixel centre lies inside each row's xyxy extent."""
    xs = torch.arange(w, device=extent.device, dtype=torch.float32) + 0.5
    ys = torch.arange(h, device=extent.device, dtype=torch.float32) + 0.5
    in_x = (xs >= extent[:, 0:1]) & (xs <= extent[:, 2:3])  # [B, W]
    in_y = (ys >= extent[:, 1:2]) & (ys <= extent[:, 3:4])  # [B, H]
    return (in_y[:, None, :, None] & in_x[:, None, None, :]).float()


def _jitter(x: Tensor, factors: Tensor, inside: Tensor, mean255: Tensor) -> Tensor:
    """Brightness ``b``, contrast ``c``, saturation ``s`` (``factors [B, 3]``) of the mean-centred
    0-255 batch ``x``, composed into one 3x3 colour matrix and offset per sample:

        brightness  x1 = b x
        contrast    x2 = c x1 + (1 - c) g       (g: mean grey of x1 over the frame's extent)
        saturation  x3 = S x2,  S = s I + (1 - s) 1 w^T   (w: the grey weights)

    so ``x3 = (c b S) x + (1 - c) g S 1``, one pass over the pixels, clipped to 0..255 once
    (torchvision clips after each operation too; that differs only where a step overshoots).
    Returns the result centred on the mean colour again."""
    bsz = len(x)
    grey_w = _grey_weights(x.device)
    m = mean255.view(1, 3)
    bright, contrast, sat = factors[:, 0], factors[:, 1], factors[:, 2]
    grey = F.conv2d(x, grey_w.view(1, 3, 1, 1))  # [B, 1, H, W] grey of the centred pixels
    area = inside.sum((1, 2, 3)).clamp(min=1)
    g = bright * ((grey * inside).sum((1, 2, 3)) / area + (grey_w * m).sum())  # [B]
    eye = torch.eye(3, device=x.device).expand(bsz, 3, 3)
    sat_m = sat[:, None, None] * eye + (1 - sat)[:, None, None] * grey_w.expand(bsz, 1, 3)
    a = (contrast * bright)[:, None, None] * sat_m  # [B, 3, 3]
    t = ((1 - contrast) * g)[:, None] * sat_m.sum(2)  # [B, 3]
    bias = (a @ m[0]) + t - m  # raw = a (x + m) + t; returned centred: raw - m
    out = torch.baddbmm(bias[:, :, None], a, x.reshape(bsz, 3, -1)).view_as(x)
    return out.clamp_(-mean255, 255 - mean255)


@functools.lru_cache(maxsize=8)
def _grey_weights(device: torch.device) -> Tensor:
    """``GREY`` on ``device``, made once (no host-to-device copy per batch)."""
    with torch.inference_mode(False):
        return torch.tensor(GREY, device=device)


@functools.lru_cache(maxsize=8)
def _normalisers(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
                 ) -> tuple[Tensor, Tensor]:
    """``[1, 3, 1, 1]`` mean and 1/std in 0-255 units on ``device``, made once (the same float32
    arithmetic as ``models.preprocess``)."""
    with torch.inference_mode(False):
        mean255 = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        inv_std = 1.0 / (torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0)
    return mean255, inv_std

"""SimMIM/MAE-style masked-pixel target: the student's masked patch tokens predict the pixels
of those patches in the view it saw before masking.

``patchify`` cuts ``[B, 3, H, W]`` into the ViT's patch grid (padded on the bottom/right as
``VisionTransformer.embed`` pads), one row per patch in the tokens' order, each patch flattened
channel-last (``p * p * 3``: row, column, channel). ``pixel_targets`` normalises every patch
by its own mean and standard deviation (MAE's ``norm_pix_loss``), so the target is the patch's
shape and texture, not its brightness. ``PixelLoss`` is L1 (SimMIM) or MSE (MAE) averaged over
the masked patches of the batch.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

PIXEL_LOSSES = ("l1", "mse")


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, h*w, p*p*C]`` (patches row-major, pixels ``(row, col, C)``)."""
    b, c, height, width = x.shape
    p = int(patch_size)
    pad_h, pad_w = (-height) % p, (-width) % p
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    h, w = x.shape[-2] // p, x.shape[-1] // p
    x = x.reshape(b, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1)  # B, h, w, py, px, C
    return x.reshape(b, h * w, p * p * c)


def pixel_targets(x: Tensor, patch_size: int, eps: float = 1e-6) -> Tensor:
    """``patchify`` with each patch normalised: ``(t - mean) / sqrt(var + eps)`` (population
    variance over the patch's ``p*p*C`` values)."""
    t = patchify(x.float(), patch_size)
    mean = t.mean(dim=-1, keepdim=True)
    var = t.var(dim=-1, unbiased=False, keepdim=True)
    return (t - mean) / (var + eps).sqrt()


class PixelLoss(nn.Module):
    """``forward(pred [B, N, p*p*3], views [B, 3, H, W], masks [B, N] bool, patch_size)`` ->
    scalar.

    The per-patch error (mean over the patch's values, L1 or squared) is averaged over every
    masked patch in the batch; 0 (with a gradient path) when nothing is masked.
    """

    def __init__(self, kind: str = "l1"):
        super().__init__()
        if kind not in PIXEL_LOSSES:
            raise ValueError(f"pretrain.pixel_loss: {kind!r} is not one of "
                             f"{', '.join(PIXEL_LOSSES)}")
        self.kind = kind

    def forward(self, pred: Tensor, views: Tensor, masks: Tensor, patch_size: int) -> Tensor:
        target = pixel_targets(views, patch_size)
        diff = pred.float() - target
        err = diff.abs() if self.kind == "l1" else diff.square()
        m = masks.float()
        return (err.mean(-1) * m).sum() / m.sum().clamp_min(1.0)

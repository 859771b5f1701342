"""Swin-T/S/B backbone (torchvision), any input size, features from the last stage.

Parameter names are torchvision's (``features.*``, ``norm.*``) so its state-dict files load
directly; the classification ``head`` is dropped.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

# variant -> (embed_dim, depths, num_heads, default stochastic depth), as torchvision's builders
SWIN_VARIANTS = {
    "t": (96, [2, 2, 6, 2], [3, 6, 12, 24], 0.2),
    "s": (96, [2, 2, 18, 2], [3, 6, 12, 24], 0.3),
    "b": (128, [2, 2, 18, 2], [4, 8, 16, 32], 0.5),
}


class SwinBackbone(nn.Module):
    """``[B, 3, H, W]`` -> stride-32 features ``[B, C, H'/32, W'/32]`` (inputs padded to x32).

    ``attention`` is a stand-in with the ViT output's shape: one "head" holding the feature norm
    per cell divided by its sum over the map (so it reads like an attention distribution).
    """

    def __init__(self, *, variant: str = "t", drop_path: float | None = None):
        super().__init__()
        from torchvision.models.swin_transformer import SwinTransformer

        if variant not in SWIN_VARIANTS:
            raise ValueError(f"swin variant {variant!r} not in {sorted(SWIN_VARIANTS)}")
        embed_dim, depths, heads, default_drop = SWIN_VARIANTS[variant]
        drop = default_drop if drop_path is None else drop_path
        net = SwinTransformer(patch_size=[4, 4], embed_dim=embed_dim, depths=depths,
                              num_heads=heads, window_size=[7, 7], stochastic_depth_prob=drop)
        self.features = net.features
        self.norm = net.norm
        self.out_channels = net.head.in_features
        self.stride = 32

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Returns ``features [B, C, h, w]``, ``embedding [B, C]``, ``attention [B, 1, h, w]``
        and ``padded_size`` (H', W') as python ints."""
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        y = self.norm(self.features(x))  # [B, h, w, C] channels-last
        features = y.permute(0, 3, 1, 2).contiguous()
        norm = features.norm(dim=1, keepdim=True)  # [B, 1, h, w]
        attention = norm / norm.sum(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        return {"features": features, "embedding": features.mean(dim=(2, 3)),
                "attention": attention, "padded_size": (height + pad_h, width + pad_w)}

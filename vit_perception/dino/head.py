"""The DINO projection head: MLP -> bottleneck -> L2 norm -> weight-normalised prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PrototypeLayer(nn.Module):
    """Weight-normalised linear layer without bias: ``x @ (g * v / ||v||)^T``.

    ``weight_v [K, d]`` are the prototypes; ``weight_g [K, 1]`` their gains, fixed at 1 when
    ``norm_last_layer`` (the logits are then cosine similarities, DINO's stable ViT setting).
    """

    def __init__(self, in_dim: int, out_dim: int, norm_last_layer: bool = True):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight_v, std=0.02)
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not norm_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_g * F.normalize(self.weight_v, dim=1))


class DINOHead(nn.Module):
    """``[N, in_dim]`` -> ``[N, out_dim]`` logits over K prototypes.

    ``layers`` linear layers (GELU between) end in ``bottleneck_dim``; the bottleneck vector is
    L2-normalised before the prototype layer.
    """

    def __init__(self, in_dim: int, out_dim: int, *, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, layers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        layers = max(int(layers), 1)
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < layers - 1:
                mods.append(nn.GELU())
        self.mlp = nn.Sequential(*mods)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = PrototypeLayer(bottleneck_dim, out_dim, norm_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, eps=1e-6))

    def cancel_last_layer_gradients(self) -> None:
        """Drop the prototype layer's gradients (DINO freezes it early in training)."""
        for p in self.last_layer.parameters():
            p.grad = None

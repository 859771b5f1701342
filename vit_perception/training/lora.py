"""LoRA (Hu et al., 2021) on the ViT attention ``qkv`` and ``proj`` linear layers.

``LoRALinear`` keeps the wrapped layer's ``weight``/``bias`` names and adds ``lora_A [r, in]``
and ``lora_B [out, r]`` (B starts at zero, so training starts from the pretrained function):
``y = x W^T + b + (alpha / r) * x A^T B^T``. ``merge_lora`` folds the update back into plain
``nn.Linear`` layers, so checkpoints have the ordinary model layout and load without LoRA.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` with a trainable low-rank update; the base weight is frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None,
                         device=base.weight.device, dtype=base.weight.dtype)
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank = int(rank)
        self.scale = float(alpha if alpha is not None else rank) / self.rank
        self.lora_A = nn.Parameter(torch.empty(self.rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, self.rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(
            F.linear(x, self.lora_A), self.lora_B)

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.weight + self.scale * self.lora_B @ self.lora_A)
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out.to(self.weight.device)


def apply_lora(backbone: nn.Module, rank: int, alpha: float | None = None) -> int:
    """Freeze ``backbone`` and wrap every ``attn.qkv`` / ``attn.proj`` linear in LoRA.

    Returns the number of wrapped layers (0 for a backbone without such layers: Swin's
    torchvision blocks also name them ``attn.qkv`` / ``attn.proj``, so both kinds work).
    """
    backbone.requires_grad_(False)
    count = 0
    for name, module in list(backbone.named_modules()):
        if not name.endswith("attn"):
            continue
        for child in ("qkv", "proj"):
            layer = getattr(module, child, None)
            if isinstance(layer, nn.Linear) and not isinstance(layer, LoRALinear):
                setattr(module, child, LoRALinear(layer, rank, alpha))
                count += 1
    return count


def merge_lora(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``LoRALinear`` folded into a plain ``nn.Linear``
    (``model`` itself when it has none)."""
    if not any(isinstance(m, LoRALinear) for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
    return model

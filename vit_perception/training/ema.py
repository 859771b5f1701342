"""Exponential moving average of a model's weights (the DINO teacher update, for evaluation)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA(nn.Module):
    """``ema = momentum * ema + (1 - momentum) * model`` over parameters and float buffers.

    ``update(model)`` uses ``min(decay, (1 + n) / (warmup + n))`` after ``n`` updates, so the
    average follows the fast-moving early weights; ``update(model, momentum)`` forces a value.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: float = 10.0):
        super().__init__()
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup = float(decay), float(warmup)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def momentum(self) -> float:
        n = float(self.updates)
        return min(self.decay, (1.0 + n) / (self.warmup + n))

    @torch.no_grad()
    def update(self, model: nn.Module, momentum: float | None = None) -> None:
        m = self.momentum() if momentum is None else float(momentum)
        model = getattr(model, "module", model)  # DDP wrapper
        own = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = own[name]
            if target.dtype.is_floating_point:
                target.lerp_(value.detach().to(target.dtype), 1.0 - m)
            else:
                target.copy_(value)
        self.updates += 1

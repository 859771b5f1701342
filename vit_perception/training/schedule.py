"""Linear warm-up, then cosine decay to ``min_ratio`` of each parameter group's base lr.

Stateless: the factor is a function of the step (and, under a time budget, of the elapsed
training time), so resuming restores the learning rate exactly from the saved step.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer


def lr_factor(progress: float, step: int, warmup_steps: int, min_ratio: float) -> float:
    """``progress`` in [0, 1] is how far through the run we are (steps or time)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(max(progress, 0.0), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def set_lr(optimizer: Optimizer, factor: float) -> float:
    """Set every group's lr to ``base_lr * factor``; returns the first group's lr."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return optimizer.param_groups[0]["lr"]

"""The DINO schedules as pure functions of the step or of the run's progress (0..1), so a
resumed run continues them exactly."""

from __future__ import annotations

import math


def cosine(start: float, end: float, progress: float) -> float:
    """``start`` at progress 0 to ``end`` at 1 along half a cosine."""
    p = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))


def warmup_cosine(base: float, final: float, warmup_steps: int, step: int,
                  progress: float) -> float:
    """Linear warm-up from 0 over ``warmup_steps`` steps, then cosine from ``base`` to
    ``final`` (the learning rate)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base * (step + 1) / warmup_steps
    return cosine(base, final, progress)


def teacher_temperature(start: float, end: float, warmup_steps: int, step: int) -> float:
    """Linear from ``start`` to ``end`` over ``warmup_steps`` steps, then ``end``."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps

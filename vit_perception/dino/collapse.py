"""Collapse detection from the teacher's entropy and the student-teacher KL.

DINO's two failure modes: one prototype wins every image (the batch-mean teacher distribution
has entropy near 0), or the teacher goes uniform (every row's entropy near log K). In both the
student copies the teacher exactly, so the KL between them is near 0. ``CollapseMonitor``
keeps the state of the last ``patience`` steps and reports once at least ``share`` of them are
collapsed the same way: a collapsed run's KL still spikes above the threshold now and then, and
a streak of consecutive steps can miss it (``share`` 1 asks for every step, as before).
"""

from __future__ import annotations

import math
from collections import deque


class CollapseError(RuntimeError):
    """Pretraining stopped because the outputs collapsed (the message says how and what to do)."""


class CollapseMonitor:
    def __init__(self, low: float = 0.05, high: float = 0.98, kl: float = 1e-3,
                 patience: int = 50, after_steps: int = 0, share: float = 0.9):
        self.low, self.high, self.kl = float(low), float(high), float(kl)
        self.patience, self.after_steps = int(patience), int(after_steps)
        self.needed = max(1, math.ceil(float(share) * self.patience - 1e-9))
        self.recent: deque[str] = deque(maxlen=max(1, self.patience))

    def state_dict(self) -> dict:
        return {"recent": list(self.recent)}

    def load_state_dict(self, state: dict) -> None:
        self.recent.clear()
        if "recent" in state:
            self.recent.extend(str(kind) for kind in state["recent"])
        else:  # checkpoints of before the window: a streak of ``count`` steps of ``kind``
            self.recent.extend([str(state["kind"])] * int(state["count"]))

    def update(self, step: int, stats: dict[str, float]) -> str | None:
        """Feed one step's ``teacher_entropy``, ``batch_entropy``, ``log_k`` and ``kl``;
        returns a message once the outputs have been collapsed for ``patience`` steps."""
        log_k = max(stats["log_k"], 1e-12)
        kind = ""
        if step >= self.after_steps and stats["kl"] < self.kl:
            if stats["batch_entropy"] / log_k < self.low:
                kind = "one prototype takes every image"
            elif stats["teacher_entropy"] / log_k > self.high:
                kind = "the teacher's distribution is uniform"
        self.recent.append(kind)
        count = sum(k == kind for k in self.recent) if kind else 0
        if self.patience > 0 and count >= self.needed:
            return (f"outputs collapsed at step {step}: {kind} in {count} of the last "
                    f"{len(self.recent)} steps "
                    f"(teacher entropy {stats['teacher_entropy']:.3f} / log K {log_k:.3f}, "
                    f"batch entropy {stats['batch_entropy']:.3f}, student-teacher KL "
                    f"{stats['kl']:.2e}). Check pretrain.teacher_temp (below student_temp), "
                    "center_momentum (< 1), lr and momentum_start")
        return None

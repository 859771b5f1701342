"""Collapse detection from the teacher's entropy and the student-teacher KL.

DINO's two failure modes: one prototype wins every image (the batch-mean teacher distribution
has entropy near 0), or the teacher goes uniform (every row's entropy near log K). In both the
student copies the teacher exactly, so the KL between them is near 0. ``CollapseMonitor``
counts consecutive steps in either state and reports once the count reaches ``patience``.
"""

from __future__ import annotations


class CollapseError(RuntimeError):
    """Pretraining stopped because the outputs collapsed (the message says how and what to do)."""


class CollapseMonitor:
    def __init__(self, low: float = 0.05, high: float = 0.98, kl: float = 1e-3,
                 patience: int = 50, after_steps: int = 0):
        self.low, self.high, self.kl = float(low), float(high), float(kl)
        self.patience, self.after_steps = int(patience), int(after_steps)
        self.count, self.kind = 0, ""

    def state_dict(self) -> dict:
        return {"count": self.count, "kind": self.kind}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.kind = int(state["count"]), str(state["kind"])

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
        self.count = self.count + 1 if kind else 0
        self.kind = kind
        if self.patience > 0 and self.count >= self.patience:
            return (f"outputs collapsed at step {step}: {kind} for {self.count} steps "
                    f"(teacher entropy {stats['teacher_entropy']:.3f} / log K {log_k:.3f}, "
                    f"batch entropy {stats['batch_entropy']:.3f}, student-teacher KL "
                    f"{stats['kl']:.2e}). Check pretrain.teacher_temp (below student_temp), "
                    "center_momentum (< 1), lr and momentum_start")
        return None

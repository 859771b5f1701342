"""When validation runs: every N epochs, every N steps or every N seconds, within a time share.

Lab bags are small, so epochs are short and an evaluation at every epoch end can cost more than
the epoch itself. ``EvalSchedule`` says after each step and at each epoch end whether an
evaluation is due; with ``max_fraction`` > 0 a due evaluation is put off while the time spent
validating so far, plus the last evaluation's duration, would exceed that share of the training
time (the first one always runs, so its cost is known). The run's final evaluation is not the
schedule's business: it always happens.

Options (the ``train:`` section): ``eval_every`` (epochs, 0 = not by epochs), ``eval_every_steps``
and ``eval_every_s`` (0 = off), ``eval_max_fraction`` (0 = no limit).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalSchedule:
    every_epochs: int = 1
    every_steps: int = 0
    every_s: float = 0.0
    max_fraction: float = 0.0
    last_step: int = 0
    last_train_s: float = 0.0
    last_eval_s: float = 0.0
    total_eval_s: float = 0.0
    evaluations: int = 0

    @classmethod
    def from_options(cls, opts: dict) -> EvalSchedule:
        return cls(every_epochs=int(opts.get("eval_every") or 0),
                   every_steps=int(opts.get("eval_every_steps") or 0),
                   every_s=float(opts.get("eval_every_s") or 0.0),
                   max_fraction=float(opts.get("eval_max_fraction") or 0.0))

    @property
    def by_steps_or_time(self) -> bool:
        return self.every_steps > 0 or self.every_s > 0

    def within_share(self, train_s: float) -> bool:
        """Whether one more evaluation keeps validation within ``max_fraction`` of training."""
        if self.max_fraction <= 0 or self.evaluations == 0:
            return True
        return self.total_eval_s + self.last_eval_s <= self.max_fraction * train_s

    def due_after_step(self, step: int, train_s: float) -> bool:
        """After optimiser step ``step``, with ``train_s`` seconds of training so far."""
        due = ((self.every_steps > 0 and step - self.last_step >= self.every_steps)
               or (self.every_s > 0 and train_s - self.last_train_s >= self.every_s))
        return self._gate(due, train_s)

    def due_at_epoch_end(self, epoch: int, train_s: float) -> bool:
        """At the end of epoch ``epoch`` (1-based count of finished epochs)."""
        due = self.every_epochs > 0 and epoch % self.every_epochs == 0
        return self._gate(due, train_s)

    def record(self, step: int, train_s: float, eval_s: float) -> None:
        """An evaluation ran after ``step`` and took ``eval_s`` seconds."""
        self.last_step, self.last_train_s = step, train_s
        self.last_eval_s = eval_s
        self.total_eval_s += eval_s
        self.evaluations += 1

    def _gate(self, due: bool, train_s: float) -> bool:
        return due and self.within_share(train_s)

"""``RunTrainer``: the run-directory machinery shared by ``train``, ``pretrain`` and ``distill``.

A run directory holds the resolved ``config.yaml``, ``last.pt`` (written atomically, with the
trainer state for an exact resume: weights, optimiser, sampler position, RNG states, elapsed
time), the logs (``steps.jsonl``, ``metrics.jsonl``/``.csv``, TensorBoard ``tb/``) and
``curves.png``. The base class owns that, the time budget, the progress bar, periodic
checkpoints, epoch boundaries and DDP; a subclass says what a step is:

- ``options(cfg) -> dict``: the hyper-parameter section (must hold ``BASE_KEYS``);
- ``build_model(init)``: sets ``self.model`` (and optimiser, EMA, ... of its own);
- ``build_data()``: sets ``self.loader``, ``self.sampler`` (``ResumableSampler``),
  ``self.steps_per_epoch``;
- ``train_step(batch) -> dict[str, float]``: one optimiser step, ``"loss"`` among the values;
- ``state_objects() -> dict``: what ``last.pt`` keeps for a resume (objects with
  ``state_dict``/``load_state_dict``; ``None`` values are skipped);
- ``deploy_model()``: the module saved as the checkpoint's weights;
- ``evaluate() -> dict`` and ``end_epoch(metrics) -> dict``: validation and the epoch's log row.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from vit_perception.training.eval_schedule import EvalSchedule

log = logging.getLogger(__name__)

# keys of the options section that the base class reads
BASE_KEYS = ("epochs", "batch_size", "seed", "threads", "eval_every", "log_every_steps",
             "checkpoint_every_steps", "checkpoint_every_s")


class StopTraining(Exception):
    """Raised by a ``step_callback`` to end the run at once (tests simulate a kill with it)."""


class RunTrainer:
    """One run: set-up, the epoch loop, checkpoints, logs and the summary."""

    def __init__(self, cfg: dict, out_dir: str | Path, dist: Any, device: torch.device, *,
                 resume: bool = False, init: str | Path | None = None,
                 time_budget: float | None = None, max_steps: int | None = None,
                 progress: bool = True,
                 step_callback: Callable[[int, dict], None] | None = None) -> None:
        from vit_perception.config import deep_merge

        self.dist, self.device, self.out = dist, device, Path(out_dir)
        self.progress, self.step_callback, self.max_steps = progress, step_callback, max_steps
        self.budget_s = None if not time_budget else float(time_budget) * 60.0
        self.resume_state: dict | None = None
        if resume:
            from vit_perception.training.state import load_resume

            self.resume_state = load_resume(self.out / "last.pt")
        self.cfg = self.prepare_config(deep_merge(cfg, {}))
        self.opts = self.options(self.cfg)
        self.seed(int(self.opts["seed"]) + dist.rank)
        if int(self.opts.get("threads") or 0) > 0:
            torch.set_num_threads(int(self.opts["threads"]))
        self.build_model(init)
        if dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg, sort_keys=False))
        self.build_data()
        self.total_steps = self.steps_per_epoch * int(self.opts["epochs"])

    # ------------------------------------------------------------------ hooks
    def prepare_config(self, cfg: dict) -> dict:
        """The resolved config (saved as ``config.yaml`` and in every checkpoint)."""
        return cfg

    def options(self, cfg: dict) -> dict:
        raise NotImplementedError

    def build_model(self, init: str | Path | None) -> None:
        raise NotImplementedError

    def build_data(self) -> None:
        raise NotImplementedError

    def train_step(self, batch: Any) -> dict[str, float]:
        raise NotImplementedError

    def batch_len(self, batch: Any) -> int:
        """Samples in ``batch`` (the sampler position advances by this much)."""
        return len(batch[0])

    def state_objects(self) -> dict[str, Any]:
        raise NotImplementedError

    def deploy_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def evaluate(self) -> dict:
        """Validation on the main rank at an epoch end; ``{}`` when there is none."""
        return {}

    def end_epoch(self, metrics: dict) -> dict:
        """Bookkeeping after ``evaluate`` (best checkpoint, ...); returns extra log-row values."""
        return {}

    def log_line(self, row: dict) -> str:
        return (f"epoch {row['epoch']:.2f} step {row['step']}  {row['minutes']:.1f} min  "
                f"loss {row['loss']:.4f}")

    def summary(self, stopped: str, metrics: dict | None) -> dict:
        from vit_perception.training.evaluate import plain_metrics

        return {"out_dir": str(self.out), "last": str(self.out / "last.pt"), "stopped": stopped,
                "epochs": self.epoch, "steps": self.step, "minutes": self.elapsed() / 60,
                "metrics": plain_metrics(metrics),
                "history": list(self.log.epochs) if self.log is not None else []}

    # ------------------------------------------------------------------ state
    @staticmethod
    def seed(seed: int) -> None:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def wrap_ddp(self, module: torch.nn.Module, find_unused: bool = False) -> torch.nn.Module:
        """``module`` in DistributedDataParallel under torchrun, else itself."""
        if not self.dist.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=find_unused)

    def trainer_state(self) -> dict:
        from vit_perception.training.state import rng_state

        state: dict[str, Any] = {}
        for name, obj in self.state_objects().items():
            if obj is None:
                state[name] = None
                continue
            sd = obj.state_dict()
            if isinstance(obj, torch.nn.Module):
                sd = {k: v.detach().cpu() for k, v in sd.items()}
            state[name] = sd
        state.update({
            "epoch": self.epoch, "step": self.step, "epoch_start": self.epoch_start,
            "elapsed_s": self.elapsed(), "best": self.best, "epoch_loss": self.epoch_loss,
            "sampler": self.sampler.state_dict(), "rng": rng_state(),
        })
        return state

    def restore(self) -> None:
        from vit_perception.training.state import set_rng_state

        assert self.resume_state is not None
        s = self.resume_state["extra"]["trainer"]
        for name, obj in self.state_objects().items():
            if obj is not None and s.get(name):
                obj.load_state_dict(s[name])
        self.epoch, self.step = int(s["epoch"]), int(s["step"])
        self.epoch_start = int(s["epoch_start"])  # samples of this epoch already used
        self.elapsed_before = float(s["elapsed_s"])
        self.best = s.get("best")
        self.epoch_loss = list(s.get("epoch_loss", [0.0, 0]))
        set_rng_state(s["rng"])
        log.info("resumed %s at epoch %d, step %d (%.1f min trained)", self.out / "last.pt",
                 self.epoch, self.step, self.elapsed_before / 60)

    def save_last(self, metrics: dict | None = None) -> None:
        from vit_perception.models.checkpoint import save_checkpoint
        from vit_perception.training.evaluate import plain_metrics

        if not self.dist.main:
            return
        save_checkpoint(self.out / "last.pt", self.deploy_model(), self.cfg,
                        {"trainer": self.trainer_state(), "metrics": plain_metrics(metrics)})
        self.last_save = time.perf_counter()

    # ------------------------------------------------------------------ loop
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    def progress_fraction(self) -> float:
        p = self.step / max(self.total_steps, 1)
        if self.budget_s:
            p = max(p, self.elapsed() / self.budget_s)
        return p

    def run(self) -> dict:
        from vit_perception.training.metrics_log import RunLog

        self.epoch, self.step, self.epoch_start, self.elapsed_before = 0, 0, 0, 0.0
        self.best: Any = None
        self.epoch_loss = [0.0, 0]
        self.lr = 0.0
        if self.resume_state is not None:
            self.restore()
            self.resume_state = None
        self.log = RunLog(self.out, self.step if self.step or self.epoch else None,
                          tensorboard=True) if self.dist.main else None
        self.t_start = self.last_save = time.perf_counter()
        self.eval_s = self.eval_total_s = 0.0
        self.schedule = EvalSchedule.from_options(self.opts)
        stopped, metrics = "epochs", None
        epochs = int(self.opts["epochs"])
        try:
            while self.epoch < epochs:
                reason = self.train_epoch()
                if reason is None:  # epoch complete
                    self.epoch, self.epoch_start = self.epoch + 1, 0
                    if self.epoch == epochs or self.eval_due(at_epoch_end=True):
                        metrics = self.finish_epoch()
                    continue
                stopped = reason
                metrics = self.finish_epoch()
                break
            else:
                if metrics is None:  # nothing left to train (e.g. resuming a finished run)
                    metrics = self.finish_epoch()
        finally:
            if self.log is not None:
                self.log.close()
        return self.summary(stopped, metrics)

    def should_stop(self) -> str | None:
        reason = None
        if self.max_steps is not None and self.step >= self.max_steps:
            reason = "max_steps"
        elif self.budget_s and self.elapsed() + self.eval_s >= self.budget_s:
            reason = "time_budget"
        flag = self.dist.broadcast_flag(reason is not None, self.device)
        return (reason or "time_budget") if flag else None

    def batches(self) -> Iterable[Any]:
        """The rest of the current epoch's batches (the sampler is positioned already)."""
        return self.loader

    def train_epoch(self) -> str | None:
        """Run the rest of the current epoch; returns a stop reason or None when it ends."""
        from tqdm import tqdm

        bs = int(self.opts["batch_size"])
        self.sampler.set_state(self.epoch, self.epoch_start)
        bar = tqdm(total=self.steps_per_epoch, initial=self.epoch_start // bs, leave=False,
                   dynamic_ncols=True, desc=f"epoch {self.epoch + 1}/{self.opts['epochs']}",
                   disable=not (self.progress and self.dist.main))
        t_seg, s_seg = time.perf_counter(), self.step
        try:
            for batch in self.batches():
                losses = self.train_step(batch)
                self.step += 1
                self.epoch_start += self.batch_len(batch)
                if math.isfinite(losses["loss"]):
                    self.epoch_loss = [self.epoch_loss[0] + losses["loss"],
                                       self.epoch_loss[1] + 1]
                rate = (time.perf_counter() - t_seg) / max(self.step - s_seg, 1)
                eta = (self.total_steps - self.step) * rate
                if self.budget_s:
                    eta = min(eta, max(0.0, self.budget_s - self.elapsed()))
                bar.set_postfix(loss=f"{losses['loss']:.3f}", eta=f"{eta / 60:.1f}m")
                bar.update(1)
                self.log_step(losses)
                if self.step_callback is not None:
                    self.step_callback(self.step, losses)
                reason = self.should_stop()
                if reason:
                    return reason
                self.maybe_checkpoint()
                if self.schedule.by_steps_or_time and \
                        self.epoch_start < self.sampler.per_rank() and self.eval_due():
                    self.finish_epoch()  # a mid-epoch row (fractional epoch) and last.pt
        finally:
            bar.close()
        return None

    def eval_due(self, at_epoch_end: bool = False) -> bool:
        """Whether the validation schedule (``training.eval_schedule``) wants an evaluation
        now; rank 0 decides for every rank."""
        train_s = self.elapsed() - self.eval_total_s
        due = (self.schedule.due_at_epoch_end(self.epoch, train_s) if at_epoch_end
               else self.schedule.due_after_step(self.step, train_s))
        return self.dist.broadcast_flag(due, self.device)

    def log_step(self, losses: dict) -> None:
        every = max(1, int(self.opts["log_every_steps"]))
        if self.step % every and self.step != 1:
            return
        value = self.dist.mean(losses["loss"], self.device)
        if self.log is not None:
            self.log.step(self.step, self.epoch, {**losses, "loss": value}, self.lr,
                          self.elapsed() / 60)

    def maybe_checkpoint(self) -> None:
        every_steps = int(self.opts["checkpoint_every_steps"])
        every_s = float(self.opts["checkpoint_every_s"])
        due = (every_steps > 0 and self.step % every_steps == 0) or \
              (every_s > 0 and time.perf_counter() - self.last_save >= every_s)
        if due and self.epoch_start < self.sampler.per_rank():
            self.save_last()

    def plot_curves(self) -> None:
        """Draw ``curves.png`` from the logs (loss and validation AP by default)."""
        from vit_perception.training.plots import plot_curves

        assert self.log is not None
        plot_curves(self.log.epochs, self.log.steps_path, self.out / "curves.png")

    def finish_epoch(self) -> dict:
        """Evaluate (main rank), log a row, plot the curves, write ``last.pt``."""
        metrics: dict = {}
        t0 = time.perf_counter()
        if self.dist.main:
            metrics = self.evaluate()
            self.eval_s = time.perf_counter() - t0
            extra = self.end_epoch(metrics)
            total, n = self.epoch_loss
            row = {"minutes": round(self.elapsed() / 60, 3),
                   "epoch": round(self.epoch + self.epoch_start / max(self.sampler.per_rank(), 1),
                                  3),
                   "step": self.step, "loss": round(total / max(n, 1), 5), "lr": self.lr,
                   **extra}
            assert self.log is not None
            self.log.epoch(row)
            log.info(self.log_line(row))
            self.plot_curves()
        self.epoch_loss = [0.0, 0]
        self.save_last(metrics)
        self.dist.barrier()
        # the schedule's share counts all of it: validation, best.pt, curves, last.pt
        spent = time.perf_counter() - t0
        self.eval_total_s += spent
        self.schedule.record(self.step, self.elapsed() - self.eval_total_s, spent)
        return metrics

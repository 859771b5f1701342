"""``train(cfg, train_bags, val_bags, out_dir)``: the fine-tuning loop.

One step is: warm-up/cosine lr -> forward under autocast -> set criterion -> backward -> clip ->
AdamW -> EMA update. After each epoch (and when a time budget or step limit stops the run) the
EMA weights are evaluated with COCO mAP on the validation frames; ``best.pt`` keeps the highest
val AP50 (ties broken by AP: AP50 is the metric the demo and issue report), ``last.pt`` the
latest state. ``last.pt`` is also written every ``checkpoint_every_steps`` steps or
``checkpoint_every_s`` seconds, so a killed run resumes mid-epoch on the same data order.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import yaml

from vit_perception.training.evaluate import plain_metrics
from vit_perception.training.options import train_options

log = logging.getLogger(__name__)


class StopTraining(Exception):
    """Raised by a ``step_callback`` to end the run at once (tests simulate a kill with it)."""


def train(cfg: dict, train_bags: Sequence[str | Path], val_bags: Sequence[str | Path],
          out_dir: str | Path, *, image_topic: str = "/camera/image_raw",
          labels_topic: str = "/labels", resume: bool = False, init: str | Path | None = None,
          time_budget: float | None = None, device: str | None = None,
          max_steps: int | None = None, progress: bool = True,
          step_callback: Callable[[int, dict], None] | None = None) -> dict:
    """Train the detector of ``cfg`` (see ``training.options`` for ``cfg["train"]``).

    ``time_budget`` is in minutes of wall-clock time (all segments of a resumed run); the run
    stops between steps so that the final evaluation still fits, then evaluates and saves.
    ``resume`` continues from ``out_dir/last.pt`` (``cfg`` should be its config). ``init`` is a
    previous run's checkpoint or a backbone weights file. ``max_steps`` ends the run after that
    many optimizer steps (like the budget). Returns a summary: best/last paths, final and best
    metrics, epochs, steps, minutes, the per-epoch history and why it stopped.
    """
    from vit_perception.training.distributed import cleanup, setup

    dist, dev = setup(device)
    try:
        return _Trainer(cfg, train_bags, val_bags, Path(out_dir), dist, dev, image_topic,
                        labels_topic, resume, init, time_budget, max_steps, progress,
                        step_callback).run()
    finally:
        cleanup(dist)


class _Trainer:
    def __init__(self, cfg, train_bags, val_bags, out_dir, dist, device, image_topic,
                 labels_topic, resume, init, time_budget, max_steps, progress, step_callback):
        from vit_perception.config import deep_merge
        from vit_perception.training.dataset import resolve_classes

        self.dist, self.device, self.out = dist, device, out_dir
        self.progress, self.step_callback, self.max_steps = progress, step_callback, max_steps
        self.budget_s = None if not time_budget else float(time_budget) * 60.0
        self.resume_state = None
        if resume:
            from vit_perception.training.state import load_resume

            self.resume_state = load_resume(out_dir / "last.pt")
        if not list(val_bags):
            raise ValueError("no validation bags given (--val)")
        cfg = deep_merge(cfg, {})
        cfg["classes"] = resolve_classes(cfg.get("classes"), [*train_bags, *val_bags], image_topic,
                                         labels_topic)
        self.opts = train_options(cfg)
        cfg["train"] = self.opts
        self.cfg = cfg
        self.size = (int(cfg["input"]["width"]), int(cfg["input"]["height"]))
        self.mean, self.std = cfg["input"]["mean"], cfg["input"]["std"]
        self._seed(int(self.opts["seed"]) + dist.rank)
        if int(self.opts.get("threads") or 0) > 0:
            torch.set_num_threads(int(self.opts["threads"]))
        self._build_model(init)
        if dist.main:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        self._build_data(train_bags, val_bags, image_topic, labels_topic)

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _seed(seed: int) -> None:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def _build_model(self, init) -> None:
        from vit_perception.models.builder import build
        from vit_perception.training.ema import ModelEMA
        from vit_perception.training.lora import apply_lora
        from vit_perception.training.optim import amp_dtype, build_optimizer
        from vit_perception.training.state import init_weights

        o = self.opts
        model, criterion, self.postprocessor = build(self.cfg,
                                                     load_pretrained=self.resume_state is None)
        if init and self.resume_state is None:
            log.info(init_weights(model, init, self.cfg["model"]["backbone"].get("type", "vit")))
        if int(o["lora_rank"]) > 0:
            n = apply_lora(model.backbone, int(o["lora_rank"]), o.get("lora_alpha"))
            log.info("LoRA rank %d on %d backbone attention layers", int(o["lora_rank"]), n)
        elif o["freeze_backbone"]:
            model.backbone.requires_grad_(False)
        self.model = model.to(self.device).train()
        self.criterion = criterion.to(self.device)
        self.ema = (ModelEMA(self.model, float(o["ema_decay"]), float(o["ema_warmup"]))
                    if float(o["ema_decay"]) > 0 else None)
        pretrained = bool(init or self.cfg["model"]["backbone"].get("pretrained")
                          or (self.resume_state is not None and self.cfg["train"].get(
                              "pretrained_backbone")))
        self.cfg["train"]["pretrained_backbone"] = pretrained
        self.optimizer = build_optimizer(self.model, o, pretrained)
        self.amp = amp_dtype(o["amp"], self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.net = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(o["ddp_find_unused"]))

    def _build_data(self, train_bags, val_bags, image_topic, labels_topic) -> None:
        from vit_perception.training.augment import Augment
        from vit_perception.training.dataset import DetectionDataset, collate, load_frames
        from vit_perception.training.sampler import ResumableSampler, repeat_factors

        o, classes = self.opts, self.cfg["classes"]
        cache = self.out / "cache" / f"rank{self.dist.rank}"
        t0 = time.perf_counter()
        self.train_samples = load_frames(train_bags, classes, image_topic, labels_topic,
                                         float(o["cache_max_mb"]), cache / "train")
        self.val_samples = load_frames(val_bags, classes, image_topic, labels_topic,
                                       float(o["cache_max_mb"]), cache / "val")
        log.info("%d training / %d validation frames decoded in %.1f s", len(self.train_samples),
                 len(self.val_samples), time.perf_counter() - t0)
        factors = repeat_factors([s.labels for s in self.train_samples], len(classes),
                                 float(o["repeat_threshold"]))
        self.sampler = ResumableSampler(
            len(self.train_samples), mode=str(o["sampler"]), factors=factors,
            samples_per_epoch=o.get("samples_per_epoch"), seed=int(o["seed"]),
            rank=self.dist.rank, world_size=self.dist.world_size)
        dataset = DetectionDataset(self.train_samples, self.size, self.mean, self.std,
                                   Augment.from_options(o["augment"], self.mean))
        workers = int(o["workers"])
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=int(o["batch_size"]), sampler=self.sampler, num_workers=workers,
            collate_fn=collate, pin_memory=self.device.type == "cuda",
            persistent_workers=False)
        self.steps_per_epoch = math.ceil(self.sampler.per_rank() / int(o["batch_size"]))
        self.total_steps = self.steps_per_epoch * int(o["epochs"])

    # ------------------------------------------------------------------ state
    def _restore(self) -> None:
        from vit_perception.training.state import set_rng_state

        s = self.resume_state["extra"]["trainer"]
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        if self.ema is not None and s.get("ema") is not None:
            self.ema.load_state_dict(s["ema"])
        if s.get("scaler"):
            self.scaler.load_state_dict(s["scaler"])
        self.epoch, self.step = int(s["epoch"]), int(s["step"])
        self.epoch_start = int(s["epoch_start"])  # samples of this epoch already used
        self.elapsed_before = float(s["elapsed_s"])
        self.best = s.get("best")
        self.epoch_loss = list(s.get("epoch_loss", [0.0, 0]))
        set_rng_state(s["rng"])
        log.info("resumed %s at epoch %d, step %d (%.1f min trained)", self.out / "last.pt",
                 self.epoch, self.step, self.elapsed_before / 60)

    def _trainer_state(self) -> dict:
        from vit_perception.training.state import rng_state

        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "epoch": self.epoch, "step": self.step, "epoch_start": self.epoch_start,
            "elapsed_s": self.elapsed(), "best": self.best, "epoch_loss": self.epoch_loss,
            "sampler": self.sampler.state_dict(), "rng": rng_state(),
        }

    def _deploy_model(self):
        from vit_perception.training.lora import merge_lora

        return merge_lora(self.ema.module if self.ema is not None else self.model)

    def save_last(self, metrics: dict | None = None) -> None:
        from vit_perception.models.checkpoint import save_checkpoint

        if not self.dist.main:
            return
        save_checkpoint(self.out / "last.pt", self._deploy_model(), self.cfg,
                        {"trainer": self._trainer_state(), "metrics": plain_metrics(metrics)})
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
        self.best, self.epoch_loss = None, [0.0, 0]
        if self.resume_state is not None:
            self._restore()
            self.resume_state = None
        self.log = RunLog(self.out, self.step if self.step or self.epoch else None,
                          tensorboard=True) if self.dist.main else None
        self.t_start = self.last_save = time.perf_counter()
        self.eval_s = 0.0
        stopped, metrics = "epochs", None
        try:
            while self.epoch < int(self.opts["epochs"]):
                reason = self._train_epoch()
                if reason is None:  # epoch complete
                    self.epoch, self.epoch_start = self.epoch + 1, 0
                    if self.epoch % int(self.opts["eval_every"]) == 0 or \
                            self.epoch == int(self.opts["epochs"]):
                        metrics = self._end_epoch()
                    continue
                stopped = reason
                metrics = self._end_epoch()
                break
            else:
                if metrics is None:  # nothing left to train (e.g. resuming a finished run)
                    metrics = self._end_epoch()
        finally:
            if self.log is not None:
                self.log.close()
        return self._summary(stopped, metrics)

    def _should_stop(self) -> str | None:
        reason = None
        if self.max_steps is not None and self.step >= self.max_steps:
            reason = "max_steps"
        elif self.budget_s and self.elapsed() + self.eval_s >= self.budget_s:
            reason = "time_budget"
        flag = self.dist.broadcast_flag(reason is not None, self.device)
        return (reason or "time_budget") if flag else None

    def _train_epoch(self) -> str | None:
        """Run the rest of the current epoch; returns a stop reason or None when it ends."""
        from tqdm import tqdm

        o = self.opts
        bs = int(o["batch_size"])
        self.sampler.set_state(self.epoch, self.epoch_start)
        first = self.epoch_start // bs
        bar = tqdm(total=self.steps_per_epoch, initial=first, leave=False, dynamic_ncols=True,
                   desc=f"epoch {self.epoch + 1}/{o['epochs']}",
                   disable=not (self.progress and self.dist.main))
        t_seg, s_seg = time.perf_counter(), self.step
        try:
            for images, targets in self.loader:
                losses = self._step(images, targets)
                self.epoch_start += len(images)
                if math.isfinite(losses["loss"]):
                    self.epoch_loss = [self.epoch_loss[0] + losses["loss"],
                                       self.epoch_loss[1] + 1]
                done = self.step - s_seg
                rate = (time.perf_counter() - t_seg) / max(done, 1)
                eta = (self.total_steps - self.step) * rate
                if self.budget_s:
                    eta = min(eta, max(0.0, self.budget_s - self.elapsed()))
                bar.set_postfix(loss=f"{losses['loss']:.3f}", eta=f"{eta / 60:.1f}m")
                bar.update(1)
                self._log_step(losses)
                if self.step_callback is not None:
                    self.step_callback(self.step, losses)
                reason = self._should_stop()
                if reason:
                    return reason
                self._maybe_checkpoint()
        finally:
            bar.close()
        return None

    def _step(self, images, targets) -> dict[str, float]:
        from vit_perception.training.schedule import lr_factor, set_lr

        o = self.opts
        self.lr = set_lr(self.optimizer, lr_factor(self.progress_fraction(), self.step,
                                                   int(o["warmup_steps"]),
                                                   float(o["min_lr_ratio"])))
        images = images.to(self.device, non_blocking=True)
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            outputs = self.net(images)
        loss_dict = self.criterion(outputs, targets)
        loss = loss_dict["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            log.warning("step %d: non-finite loss %s, step skipped", self.step, loss.item())
            self.step += 1
            return {"loss": float("nan")}
        self.scaler.scale(loss).backward()
        if float(o["clip_grad"]) > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(o["clip_grad"]))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        keys = ("loss", "loss_ce", "loss_bbox", "loss_giou")
        return {k: float(loss_dict[k].detach()) for k in keys if k in loss_dict}

    def _log_step(self, losses: dict) -> None:
        every = max(1, int(self.opts["log_every_steps"]))
        if self.step % every and self.step != 1:
            return
        value = self.dist.mean(losses["loss"], self.device)
        if self.log is not None:
            self.log.step(self.step, self.epoch, {**losses, "loss": value}, self.lr,
                          self.elapsed() / 60)

    def _maybe_checkpoint(self) -> None:
        o = self.opts
        every_steps, every_s = int(o["checkpoint_every_steps"]), float(o["checkpoint_every_s"])
        due = (every_steps > 0 and self.step % every_steps == 0) or \
              (every_s > 0 and time.perf_counter() - self.last_save >= every_s)
        if due and self.epoch_start < self.sampler.per_rank():
            self.save_last()

    def _end_epoch(self) -> dict:
        """Evaluate the EMA weights, log, plot, write best.pt / last.pt."""
        from vit_perception.models.checkpoint import save_checkpoint
        from vit_perception.training.evaluate import evaluate
        from vit_perception.training.plots import plot_curves

        metrics: dict = {}
        if self.dist.main:
            t0 = time.perf_counter()
            eval_model = self.ema.module if self.ema is not None else self.model
            metrics = evaluate(eval_model, self.postprocessor, self.val_samples,
                               self.cfg["classes"], self.size, self.mean, self.std, self.device,
                               int(self.opts["batch_size"]),
                               float(self.opts["eval_score_threshold"]),
                               int(self.opts["eval_max_detections"]), self.amp)
            self.eval_s = time.perf_counter() - t0
            key = (metrics["AP50"], metrics["AP"])
            improved = self.best is None or key > tuple(self.best)
            if improved:
                self.best = [metrics["AP50"], metrics["AP"]]
                save_checkpoint(self.out / "best.pt", self._deploy_model(), self.cfg,
                                {"metrics": plain_metrics(metrics), "epoch": self.epoch,
                                 "step": self.step})
            total, n = self.epoch_loss
            row = {"minutes": round(self.elapsed() / 60, 3),
                   "epoch": round(self.epoch + self.epoch_start / max(self.sampler.per_rank(), 1),
                                  3),
                   "step": self.step, "loss": round(total / max(n, 1), 5),
                   "lr": self.lr if hasattr(self, "lr") else 0.0, "AP": round(metrics["AP"], 5),
                   "AP50": round(metrics["AP50"], 5), "AP75": round(metrics["AP75"], 5),
                   "best": improved}
            self.log.epoch(row)
            log.info("epoch %.2f step %d  %.1f min  loss %.4f  val AP %.4f AP50 %.4f%s",
                     row["epoch"], self.step, row["minutes"], row["loss"], row["AP"],
                     row["AP50"], "  (best)" if improved else "")
            plot_curves(self.log.epochs, self.log.steps_path, self.out / "curves.png")
        self.epoch_loss = [0.0, 0]
        self.save_last(metrics)
        self.dist.barrier()
        return metrics

    def _summary(self, stopped: str, metrics: dict | None) -> dict:
        return {
            "out_dir": str(self.out), "best": str(self.out / "best.pt"),
            "last": str(self.out / "last.pt"), "stopped": stopped, "epochs": self.epoch,
            "steps": self.step, "minutes": self.elapsed() / 60,
            "metrics": plain_metrics(metrics),
            "best_AP50": None if self.best is None else self.best[0],
            "best_AP": None if self.best is None else self.best[1],
            "history": list(self.log.epochs) if self.log is not None else [],
            "classes": list(self.cfg["classes"]),
        }


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
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from vit_perception.training.evaluate import plain_metrics
from vit_perception.training.options import train_options
from vit_perception.training.run import RunTrainer, StopTraining

__all__ = ["DetectionTrainer", "StopTraining", "train"]

log = logging.getLogger(__name__)


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
        return DetectionTrainer(cfg, train_bags, val_bags, out_dir, dist, dev,
                                image_topic=image_topic, labels_topic=labels_topic,
                                resume=resume, init=init, time_budget=time_budget,
                                max_steps=max_steps, progress=progress,
                                step_callback=step_callback).run()
    finally:
        cleanup(dist)


class DetectionTrainer(RunTrainer):
    """The detector's set-loss training on labelled bag frames (``RunTrainer`` does the rest)."""

    def __init__(self, cfg: dict, train_bags: Sequence[str | Path],
                 val_bags: Sequence[str | Path], out_dir: str | Path, dist, device, *,
                 image_topic: str = "/camera/image_raw", labels_topic: str = "/labels",
                 **kwargs) -> None:
        if not list(val_bags):
            raise ValueError("no validation bags given (--val)")
        self.train_bags, self.val_bags = list(train_bags), list(val_bags)
        self.image_topic, self.labels_topic = image_topic, labels_topic
        super().__init__(cfg, out_dir, dist, device, **kwargs)

    # ------------------------------------------------------------------ set-up
    def class_bags(self) -> list[str | Path]:
        """Bags whose labels name the classes (when the config lists none)."""
        return [*self.train_bags, *self.val_bags]

    def prepare_config(self, cfg: dict) -> dict:
        from vit_perception.training.dataset import resolve_classes
        from vit_perception.training.options import augment_on_device

        cfg["classes"] = resolve_classes(cfg.get("classes"), self.class_bags(),
                                         self.image_topic, self.labels_topic)
        cfg["train"] = train_options(cfg)
        self.augment_on_device = augment_on_device(str(cfg["train"]["augment_device"]),
                                                   self.device)
        self.size = (int(cfg["input"]["width"]), int(cfg["input"]["height"]))
        self.mean, self.std = cfg["input"]["mean"], cfg["input"]["std"]
        return cfg

    def options(self, cfg: dict) -> dict:
        return cfg["train"]

    def build_model(self, init) -> None:
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
        self.net = self.wrap_ddp(self.model, bool(o["ddp_find_unused"]))

    def repeat_factors(self, threshold: float):
        """The repeat-factor sampler's factor of each training frame (``sampler.repeat_factors``
        over the frames' labels)."""
        from vit_perception.training.sampler import repeat_factors

        return repeat_factors([s.labels for s in self.train_samples], len(self.cfg["classes"]),
                              threshold)

    def build_data(self) -> None:
        from vit_perception.training.augment import Augment
        from vit_perception.training.dataset import collate
        from vit_perception.training.sampler import ResumableSampler

        o = self.opts
        cache = self.out / "cache" / f"rank{self.dist.rank}"
        t0 = time.perf_counter()
        self.train_samples = self.load_train_frames(cache / "train")
        self.val_samples = self.load_val_frames(cache / "val")
        log.info("%d training / %d validation frames decoded in %.1f s", len(self.train_samples),
                 len(self.val_samples), time.perf_counter() - t0)
        factors = self.repeat_factors(float(o["repeat_threshold"]))
        self.sampler = ResumableSampler(
            len(self.train_samples), mode=str(o["sampler"]), factors=factors,
            samples_per_epoch=o.get("samples_per_epoch"), seed=int(o["seed"]),
            rank=self.dist.rank, world_size=self.dist.world_size)
        if self.augment_on_device:  # uint8 letterboxed frames; batch_augment on the device
            from vit_perception.training.augment_draw import AugmentDraw
            from vit_perception.training.device_data import collate as collate_frames

            dataset = self.make_device_dataset(self.train_samples,
                                               AugmentDraw.from_options(o["augment"]))
            collate_fn = collate_frames
        else:
            dataset = self.make_dataset(self.train_samples,
                                        Augment.from_options(o["augment"], self.mean))
            collate_fn = collate
        log.info("augmentation %s", f"in batches on {self.device}" if self.augment_on_device
                 else "per sample in the data loader")
        workers = int(o["workers"])
        # workers live across epochs (the sampler runs in this process, so its per-epoch state
        # still reaches them): no start-up cost at each epoch boundary
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=int(o["batch_size"]), sampler=self.sampler, num_workers=workers,
            collate_fn=collate_fn, pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0 and bool(o.get("persistent_workers", True)),
            prefetch_factor=4 if workers > 0 else None)
        self.steps_per_epoch = math.ceil(self.sampler.per_rank() / int(o["batch_size"]))

    def load_train_frames(self, cache_dir: Path) -> list:
        """The training frames (``dataset.Sample``; distillation adds unlabelled ones)."""
        from vit_perception.training.dataset import load_frames

        return load_frames(self.train_bags, self.cfg["classes"], self.image_topic,
                           self.labels_topic, float(self.opts["cache_max_mb"]), cache_dir)

    def load_val_frames(self, cache_dir: Path) -> list:
        """The validation frames (``dataset.Sample``)."""
        from vit_perception.training.dataset import load_frames

        return load_frames(self.val_bags, self.cfg["classes"], self.image_topic,
                           self.labels_topic, float(self.opts["cache_max_mb"]), cache_dir)

    def make_dataset(self, samples: list, augment) -> torch.utils.data.Dataset:
        """``dataset[(index, seed)] -> (image, target)`` over ``samples``."""
        from vit_perception.training.dataset import DetectionDataset

        return DetectionDataset(samples, self.size, self.mean, self.std, augment)

    def make_device_dataset(self, samples: list, draw) -> torch.utils.data.Dataset:
        """``dataset[(index, seed)] -> (uint8 frame, target, params)`` over ``samples`` for
        augmentation on the device (``draw``: ``augment_draw.AugmentDraw``)."""
        from vit_perception.training.device_data import LetterboxedDataset

        return LetterboxedDataset(samples, self.size, self.mean, draw)

    # ------------------------------------------------------------------ state
    def state_objects(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer, "ema": self.ema,
                "scaler": self.scaler if self.scaler.is_enabled() else None}

    def deploy_model(self) -> torch.nn.Module:
        from vit_perception.training.lora import merge_lora

        return merge_lora(self.ema.module if self.ema is not None else self.model)

    # ------------------------------------------------------------------ step
    def set_lr(self) -> None:
        from vit_perception.training.schedule import lr_factor, set_lr

        o = self.opts
        self.lr = set_lr(self.optimizer, lr_factor(self.progress_fraction(), self.step,
                                                   int(o["warmup_steps"]),
                                                   float(o["min_lr_ratio"])))

    def compute_losses(self, images: torch.Tensor, targets: list[dict]) -> dict:
        """The loss dict of one batch (``"loss"``: the total to minimise)."""
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            outputs = self.net(images)
        return self.criterion(outputs, targets)

    def log_keys(self) -> tuple[str, ...]:
        return ("loss", "loss_ce", "loss_bbox", "loss_giou")

    def device_batch(self, batch) -> tuple[torch.Tensor, list[dict]]:
        """The loader's batch on the device: ``(images, targets)`` as they are, or ``(uint8
        frames, targets, params)`` augmented and normalised there (``batch_augment``)."""
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in batch[1]]
        if len(batch) == 2:
            return batch[0].to(self.device, non_blocking=True), targets
        return self.augment_batch(batch[0], batch[2], self.mean, self.std), targets

    def augment_batch(self, frames: torch.Tensor, params: torch.Tensor, mean, std
                      ) -> torch.Tensor:
        """uint8 ``frames`` and CPU ``params`` -> the augmented, normalised batch on the
        device (warp and jitter skipped when no row needs them: known from the CPU rows)."""
        from vit_perception.training.batch_augment import batch_augment, needs_jitter, needs_warp

        warp, jitter = needs_warp(params), needs_jitter(params)
        return batch_augment(frames.to(self.device, non_blocking=True), params, mean, std,
                             warp=warp, jitter=jitter)

    def train_step(self, batch) -> dict[str, float]:
        o = self.opts
        self.set_lr()
        images, targets = self.device_batch(batch)
        loss_dict = self.compute_losses(images, targets)
        loss = loss_dict["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            log.warning("step %d: non-finite loss %s, step skipped", self.step + 1, loss.item())
            return {"loss": float("nan")}
        self.scaler.scale(loss).backward()
        if float(o["clip_grad"]) > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(o["clip_grad"]))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        return {k: float(loss_dict[k].detach()) for k in self.log_keys() if k in loss_dict}

    # ------------------------------------------------------------------ epoch end
    def evaluate(self) -> dict:
        from vit_perception.training.evaluate import evaluate

        eval_model = self.ema.module if self.ema is not None else self.model
        return evaluate(eval_model, self.postprocessor, self.val_samples, self.cfg["classes"],
                        self.size, self.mean, self.std, self.device, int(self.opts["batch_size"]),
                        float(self.opts["eval_score_threshold"]),
                        int(self.opts["eval_max_detections"]), self.amp)

    def end_epoch(self, metrics: dict) -> dict:
        """best.pt keeps the highest val AP50 (ties broken by AP)."""
        from vit_perception.models.checkpoint import save_checkpoint

        key = (metrics["AP50"], metrics["AP"])
        improved = self.best is None or key > tuple(self.best)
        if improved:
            self.best = [metrics["AP50"], metrics["AP"]]
            save_checkpoint(self.out / "best.pt", self.deploy_model(), self.cfg,
                            {"metrics": plain_metrics(metrics), "epoch": self.epoch,
                             "step": self.step})
        return {"AP": round(metrics["AP"], 5), "AP50": round(metrics["AP50"], 5),
                "AP75": round(metrics["AP75"], 5), "best": improved}

    def log_line(self, row: dict) -> str:
        return (f"epoch {row['epoch']:.2f} step {row['step']}  {row['minutes']:.1f} min  "
                f"loss {row['loss']:.4f}  val AP {row['AP']:.4f} AP50 {row['AP50']:.4f}"
                f"{'  (best)' if row['best'] else ''}")

    def summary(self, stopped: str, metrics: dict | None) -> dict:
        return {**super().summary(stopped, metrics), "best": str(self.out / "best.pt"),
                "best_AP50": None if self.best is None else self.best[0],
                "best_AP": None if self.best is None else self.best[1],
                "classes": list(self.cfg["classes"])}

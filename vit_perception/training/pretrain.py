"""``pretrain(cfg, bags, out_dir)``: DINO self-distillation of the config's backbone on
unlabelled bag frames, as a ``RunTrainer`` (run directory, exact resume, budget, logs, DDP).

One step: schedules (lr, weight decay, teacher momentum, teacher temperature) -> teacher on the
two global views, student on all views -> DINO (+ iBOT, + masked-pixel) loss -> backward ->
clip -> prototype layer frozen early -> AdamW -> teacher EMA update -> collapse check. Every
step logs the loss, the teacher's entropy and the student-teacher KL; the run stops with
``stopped: "collapsed"`` when the outputs collapse. At each epoch end (and at the stop)
``RUN_DIR/backbone.pt`` is written: the teacher's backbone as a backbone-only checkpoint
(``models.backbone_model``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from vit_perception.training.pretrain_options import pretrain_options
from vit_perception.training.run import RunTrainer

log = logging.getLogger(__name__)

# beside the detector's (training/optim.py): iBOT's mask token, the weight-normalised gain
NO_DECAY_EXTRA = ("mask_token", "weight_g")
STAT_KEYS = ("dino_loss", "ibot_loss", "pixel_loss", "dense_loss", "dense_overlap",
             "koleo_loss", "region_loss", "region_valid", "teacher_entropy", "batch_entropy",
             "kl")


def pretrain(cfg: dict, bags: Sequence[str | Path], out_dir: str | Path, *,
             image_topic: str = "/camera/image_raw", resume: bool = False,
             init: str | Path | None = None, time_budget: float | None = None,
             device: str | None = None, max_steps: int | None = None, progress: bool = True,
             step_callback: Callable[[int, dict], None] | None = None) -> dict:
    """Pretrain the backbone of ``cfg`` (``cfg["pretrain"]``: ``training.pretrain_options``).

    ``time_budget`` in minutes; ``resume`` continues ``out_dir/last.pt``; ``init`` starts from a
    checkpoint or backbone weights file (as ``train --init``). Returns the run summary with
    ``backbone`` (the path of ``backbone.pt``) and ``collapse`` (the message, or None).
    """
    from vit_perception.training.distributed import cleanup, setup

    dist, dev = setup(device)
    try:
        return PretrainTrainer(cfg, bags, out_dir, dist, dev, image_topic=image_topic,
                               resume=resume, init=init, time_budget=time_budget,
                               max_steps=max_steps, progress=progress,
                               step_callback=step_callback).run()
    finally:
        cleanup(dist)


def backbone_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The transformer blocks in order (ViT ``blocks``; Swin's blocks across its stages)."""
    if hasattr(backbone, "blocks"):
        return list(backbone.blocks)
    return [m for m in backbone.modules() if type(m).__name__.startswith("SwinTransformerBlock")]


def make_trainable(backbone: nn.Module, lora_rank: int, lora_alpha, unfreeze: int) -> str:
    """ExPLoRA: LoRA on every block's attention and/or the last ``unfreeze`` blocks (and the
    final norm) trainable, the rest frozen. No-op with both 0. Returns a summary."""
    from vit_perception.training.lora import apply_lora

    if lora_rank <= 0 and unfreeze <= 0:
        return "whole backbone trained"
    backbone.requires_grad_(False)
    parts = []
    if lora_rank > 0:
        n = apply_lora(backbone, lora_rank, lora_alpha)
        parts.append(f"LoRA rank {lora_rank} on {n} attention layers")
    if unfreeze > 0:
        blocks = backbone_blocks(backbone)
        for blk in blocks[-unfreeze:]:
            blk.requires_grad_(True)
        norm = getattr(backbone, "norm", None)
        if isinstance(norm, nn.Module):
            norm.requires_grad_(True)
        parts.append(f"last {min(unfreeze, len(blocks))} of {len(blocks)} blocks unfrozen")
    return ", ".join(parts)


class PretrainTrainer(RunTrainer):
    """Self-distillation on unlabelled frames (``RunTrainer`` does the run directory)."""

    def __init__(self, cfg: dict, bags: Sequence[str | Path], out_dir: str | Path, dist, device,
                 *, image_topic: str = "/camera/image_raw", **kwargs) -> None:
        if not list(bags):
            raise ValueError("no bags given (--bags)")
        for bag in bags:  # before the model is built: a typo fails at once
            if not Path(bag).exists():
                raise ValueError(f"{bag}: bag not found")
        self.bags, self.image_topic = list(bags), image_topic
        self.collapse_message: str | None = None
        super().__init__(cfg, out_dir, dist, device, **kwargs)

    # ------------------------------------------------------------------ set-up
    def prepare_config(self, cfg: dict) -> dict:
        cfg["pretrain"] = pretrain_options(cfg)
        o = cfg["pretrain"]
        if float(o["teacher_temp"]) >= float(o["student_temp"]):
            log.warning("pretrain.teacher_temp %s is not below student_temp %s: without "
                        "sharpening the outputs tend to collapse", o["teacher_temp"],
                        o["student_temp"])
        cfg["model"]["backbone_only"] = True  # what backbone.pt and last.pt hold
        cfg["classes"] = []
        self.size = (int(cfg["input"]["width"]), int(cfg["input"]["height"]))
        self.mean, self.std = cfg["input"]["mean"], cfg["input"]["std"]
        return cfg

    def options(self, cfg: dict) -> dict:
        return cfg["pretrain"]

    def build_model(self, init) -> None:
        from vit_perception.dino.collapse import CollapseMonitor
        from vit_perception.dino.network import Teacher, build_network, is_vit
        from vit_perception.dino.objective import Objective
        from vit_perception.models.backbone_model import BackboneModel
        from vit_perception.models.builder import build_backbone
        from vit_perception.training.optim import amp_dtype
        from vit_perception.training.optim import no_decay as skips_decay
        from vit_perception.training.state import init_weights

        o = self.opts
        kind = self.cfg["model"]["backbone"].get("type", "vit")
        backbone = build_backbone(self.cfg["model"]["backbone"], self.size,
                                  load_pretrained=self.resume_state is None)
        if init and self.resume_state is None:
            log.info(init_weights(BackboneModel(backbone), init, kind))
        log.info(make_trainable(backbone, int(o["lora_rank"]), o.get("lora_alpha"),
                                int(o["unfreeze_blocks"])))
        if float(o["ibot_weight"]) > 0 and not is_vit(backbone):
            log.warning("pretrain.ibot_weight: the masked-patch loss needs a ViT; "
                        "%s backbone trains with the DINO loss only", kind)
        for key, loss_name in (("dense_weight", "cross-view dense"), ("region_weight", "region"),
                               ("pixel_weight", "masked-pixel")):
            if float(o[key]) > 0 and not is_vit(backbone):
                log.warning("pretrain.%s: the %s loss needs a ViT; %s backbone trains without it",
                            key, loss_name, kind)
        self.student = build_network(backbone, o).to(self.device).train()
        self.teacher = Teacher(self.student)
        self.objective = Objective(o, is_vit(backbone)).to(self.device)
        patience = int(o["collapse_patience"])
        if float(o["dino_weight"]) == 0 and patience > 0:
            log.info("pretrain.dino_weight 0: the DINO heads are not trained, collapse "
                     "detection is off")
            patience = 0
        self.monitor = CollapseMonitor(
            float(o["collapse_entropy_low"]), float(o["collapse_entropy_high"]),
            float(o["collapse_kl"]), patience, int(o["collapse_after_steps"]),
            float(o["collapse_share"]))
        decay, no_decay = [], []
        for name, p in self.student.named_parameters():
            if p.requires_grad:
                (no_decay if skips_decay(name, p, NO_DECAY_EXTRA) else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": float(o["weight_decay"])},
             {"params": no_decay, "weight_decay": 0.0}], lr=float(o["lr"]))
        self.amp = amp_dtype(o["amp"], self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.net = self.wrap_ddp(self.student)  # every parameter is used in every step
        self.epoch_stats: dict[str, list[float]] = {}

    def build_data(self) -> None:
        from vit_perception.dino.frames import FrameViews, load_unlabelled
        from vit_perception.dino.multicrop import MultiCrop, collate_views
        from vit_perception.training.sampler import ResumableSampler

        o = self.opts
        frames = load_unlabelled(self.bags, self.image_topic, self.size,
                                 float(o["cache_max_mb"]),
                                 self.out / "cache" / f"rank{self.dist.rank}")
        log.info("%d unlabelled frames from %d bag(s)", len(frames), len(self.bags))
        self.sampler = ResumableSampler(
            len(frames), mode="shuffle", samples_per_epoch=o.get("samples_per_epoch"),
            seed=int(o["seed"]), rank=self.dist.rank, world_size=self.dist.world_size)
        self.multicrop = MultiCrop(o, self.mean, self.std)
        self.frames = frames
        self.priors = None
        if float(o["attention_crops"]) > 0:
            from vit_perception.dino.attention_crops import AttentionPriors

            self.priors = AttentionPriors(float(o["attention_scale"]),
                                          float(o["attention_power"]))
        self.loader = torch.utils.data.DataLoader(
            FrameViews(frames, self.multicrop, self.priors), batch_size=int(o["batch_size"]),
            sampler=self.sampler, num_workers=int(o["workers"]), collate_fn=collate_views,
            pin_memory=self.device.type == "cuda")
        self.steps_per_epoch = math.ceil(self.sampler.per_rank() / int(o["batch_size"]))

    # ------------------------------------------------------------------ state
    def state_objects(self) -> dict:
        return {"model": self.student, "teacher": self.teacher, "objective": self.objective,
                "optimizer": self.optimizer, "collapse": self.monitor,
                "attention_priors": self.priors,
                "scaler": self.scaler if self.scaler.is_enabled() else None}

    def deploy_model(self) -> nn.Module:
        """The teacher's backbone (LoRA merged) as a ``BackboneModel``."""
        from vit_perception.models.backbone_model import BackboneModel
        from vit_perception.training.lora import merge_lora

        return BackboneModel(merge_lora(self.teacher.module.backbone))

    def batches(self):
        """The epoch's batches; with ``attention_crops`` the teacher's attention maps are
        refreshed first at epochs 1, 1 + attention_every, ... (kept in ``last.pt``)."""
        every = max(1, int(self.opts["attention_every"]))
        if (self.priors is not None and self.epoch >= 1 and (self.epoch - 1) % every == 0
                and self.priors.epoch != self.epoch):
            t0 = time.perf_counter()
            self.priors.refresh(self.teacher.module.backbone, self.frames, self.mean, self.std,
                                self.device, self.epoch)
            log.info("epoch %d: teacher attention maps of %d frames in %.1f s", self.epoch,
                     len(self.frames), time.perf_counter() - t0)
        return self.loader

    # ------------------------------------------------------------------ step
    def schedules(self) -> dict[str, float]:
        """lr, weight decay, teacher momentum and temperature at the current step/progress."""
        from vit_perception.dino.schedules import cosine, teacher_temperature, warmup_cosine

        o, p = self.opts, self.progress_fraction()
        return {
            "lr": warmup_cosine(float(o["lr"]), float(o["min_lr"]), int(o["warmup_steps"]),
                                self.step, p),
            "weight_decay": cosine(float(o["weight_decay"]), float(o["weight_decay_end"]), p),
            "momentum": cosine(float(o["momentum_start"]), float(o["momentum_end"]), p),
            "teacher_temp": teacher_temperature(
                float(o["teacher_temp_warmup_start"]), float(o["teacher_temp"]),
                int(o["teacher_temp_warmup_steps"]), self.step),
        }

    def train_step(self, batch) -> dict[str, float]:
        o = self.opts
        sched = self.schedules()
        self.lr = sched["lr"]
        for group in self.optimizer.param_groups:
            group["lr"] = sched["lr"]
        self.optimizer.param_groups[0]["weight_decay"] = sched["weight_decay"]
        views = [v.to(self.device, non_blocking=True) for v in batch]
        geometry = views.pop() if self.multicrop.geometry else None  # [B, 2 (+ L), 5]
        masks_rng = torch.Generator().manual_seed(
            (int(o["seed"]) * 1_000_003 + self.step) * 64 + self.dist.rank)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            loss, stats = self.objective(self.net, self.teacher, views, sched["teacher_temp"],
                                         masks_rng, geometry)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            log.warning("step %d: non-finite loss %s, step skipped", self.step + 1, loss.item())
            return {"loss": float("nan")}
        self.scaler.scale(loss).backward()
        if float(o["clip_grad"]) > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), float(o["clip_grad"]))
        if self.step < int(o["freeze_last_layer_steps"]):
            self.student.head.cancel_last_layer_gradients()
            if self.student.patch_head is not None:
                self.student.patch_head.cancel_last_layer_gradients()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.teacher.update(self.student, sched["momentum"])
        message = self.monitor.update(self.step + 1, stats)
        if message and self.collapse_message is None:
            self.collapse_message = message
            log.error("pretrain: %s", message)
        out = {"loss": float(loss.detach()), **{k: stats[k] for k in STAT_KEYS if k in stats},
               "teacher_temp": sched["teacher_temp"], "momentum": sched["momentum"]}
        for k in STAT_KEYS:
            if k in out:
                self.epoch_stats.setdefault(k, []).append(out[k])
        return out

    def should_stop(self) -> str | None:
        if self.dist.broadcast_flag(self.collapse_message is not None, self.device):
            return "collapsed"
        return super().should_stop()

    # ------------------------------------------------------------------ epoch end
    def end_epoch(self, metrics: dict) -> dict:
        """Write ``backbone.pt`` (unless the outputs collapsed); epoch means of the signals."""
        from vit_perception.models.checkpoint import save_checkpoint

        if self.collapse_message is None:
            save_checkpoint(self.out / "backbone.pt", self.deploy_model(), self.cfg,
                            {"epoch": self.epoch, "step": self.step, "pretrain": "dino"})
        row = {k: round(sum(v) / len(v), 5) for k, v in self.epoch_stats.items() if v}
        self.epoch_stats = {}
        return row

    def plot_curves(self) -> None:
        from vit_perception.dino.plots import plot_pretrain_curves

        assert self.log is not None
        plot_pretrain_curves(self.log.steps_path, self.out / "curves.png",
                             math.log(int(self.opts["out_dim"])))

    def log_line(self, row: dict) -> str:
        return (f"epoch {row['epoch']:.2f} step {row['step']}  {row['minutes']:.1f} min  "
                f"loss {row['loss']:.4f}  teacher entropy {row.get('teacher_entropy', 0):.3f}  "
                f"KL {row.get('kl', 0):.4f}")

    def summary(self, stopped: str, metrics: dict | None) -> dict:
        backbone = self.out / "backbone.pt"
        frames = self.step * int(self.opts["batch_size"]) * self.dist.world_size
        rate = frames / max(self.elapsed(), 1e-9)
        return {**super().summary(stopped, metrics),
                "backbone": str(backbone) if backbone.is_file() else None,
                "collapse": self.collapse_message,
                # training throughput over the whole run (data, steps, checkpoints)
                "images_per_s": round(rate, 2),
                "crops_per_s": round(rate * self.multicrop.n_views, 2)}

"""``distill(cfg, teacher, train_bags, val_bags, out_dir, unlabelled_bags=...)``: a student
detector trained against a frozen teacher checkpoint.

``DistillTrainer`` is the detector's trainer (``loop.DetectionTrainer``, itself on
``run.RunTrainer``: run directory, best/last, exact resume, logs, curves, DDP) with three hooks
changed: ``build_model`` also loads the teacher and the feature translator, ``load_train_frames``
adds the unlabelled frames and ``make_dataset`` letterboxes each augmented frame for both
models; ``compute_losses`` runs the teacher once per batch (inference mode), or with
``distill.teacher_cache`` reads its detections and feature maps computed once per frame before
training (``teacher_cache.py``; the augmentation moves them with the frame), and sums

    loss_gt * set loss (labelled frames only)
    + loss_kd_ce * KL + loss_kd_noobj * no-object CE + loss_kd_bbox * L1 + loss_kd_giou * GIoU
    + loss_feat_cos * cosine + loss_feat_l1 * smooth-L1           (weights: cfg["distill"])

The checkpoints are ordinary detector checkpoints of the student (EMA weights, no translator).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from vit_perception.training.distill_losses import FEATURE_TERMS, KD_TERMS
from vit_perception.training.loop import DetectionTrainer

log = logging.getLogger(__name__)


def distill(cfg: dict, teacher: str | Path | None, train_bags: Sequence[str | Path],
            val_bags: Sequence[str | Path], out_dir: str | Path, *,
            unlabelled_bags: Sequence[str | Path] = (), device: str | None = None,
            **kwargs) -> dict:
    """Distil ``teacher`` (a detector checkpoint; None: ``cfg["distill"]["teacher"]``) into the
    student ``cfg``. Keyword arguments as ``loop.train`` (image/labels topics, resume, init,
    time_budget, max_steps, progress, step_callback). Returns ``train``'s summary plus the
    teacher's path."""
    from vit_perception.training.distributed import cleanup, setup

    dist, dev = setup(device)
    try:
        return DistillTrainer(cfg, teacher, train_bags, val_bags, out_dir, dist, dev,
                              unlabelled_bags=unlabelled_bags, **kwargs).run()
    finally:
        cleanup(dist)


def select_batch(outputs: dict, index: Tensor) -> dict:
    """The model outputs of the images ``index`` (``aux_outputs`` / ``enc_outputs`` too)."""
    out: dict = {}
    for key, value in outputs.items():
        if key == "aux_outputs":
            out[key] = [select_batch(v, index) for v in value]
        elif isinstance(value, dict):
            out[key] = select_batch(value, index)
        elif isinstance(value, Tensor):
            out[key] = value[index]
    return out


def cached_targets(targets: list[dict], device: torch.device, threshold: float,
                   ignore_threshold: float | None = None,
                   nms_iou: float | None = None) -> list[dict]:
    """``teacher_targets``' per-image dicts from the batch's cached, augmented teacher
    detections (``teacher_logits``, ``teacher_boxes``: in the student's normalised cxcywh, all
    scoring at least the lower of the two thresholds)."""
    from vit_perception.training.distill_losses import teacher_targets

    return [teacher_targets(t["teacher_logits"].to(device)[None],
                            t["teacher_boxes"].to(device)[None], threshold,
                            ignore_threshold, nms_iou)[0] for t in targets]


def optional_number(opts: dict, key: str, what: str, valid: Callable[[float], bool]
                    ) -> float | None:
    """``distill.KEY`` as a float, or None when off (null, or false -- YAML's ``off``); a value
    that is no number or fails ``valid`` is a ``UsageError`` naming the key, the value and
    ``what`` it should be."""
    from vit_perception.errors import UsageError

    value = opts.get(key)
    if value is None or value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not valid(value):
        raise UsageError(f"distill.{key}: {value!r} is not {what} or null")
    return float(value)


def ignore_threshold(opts: dict) -> float | None:
    """``distill.teacher_ignore_threshold`` as a float, or None when off (null, false, or not
    below ``teacher_threshold``)."""
    value = optional_number(opts, "teacher_ignore_threshold", "a score in [0, 1)",
                            lambda v: 0 <= v < 1)
    return value if value is not None and value < float(opts["teacher_threshold"]) else None


def nms_iou(opts: dict) -> float | None:
    """``distill.teacher_nms_iou`` as a float in (0, 1], or None when off (null or false)."""
    return optional_number(opts, "teacher_nms_iou", "an IoU in (0, 1]", lambda v: 0 < v <= 1)


def _tensors(outputs: dict) -> list[Tensor]:
    """Every tensor of a model's output dict (``aux_outputs`` / ``enc_outputs`` included)."""
    found: list[Tensor] = []
    for value in outputs.values():
        if isinstance(value, Tensor):
            found.append(value)
        elif isinstance(value, dict):
            found += _tensors(value)
        elif isinstance(value, list):
            for item in value:
                found += _tensors(item)
    return found


class DistillTrainer(DetectionTrainer):
    """A student ``DetectionTrainer`` with a teacher; see the module docstring."""

    def __init__(self, cfg: dict, teacher: str | Path | None, train_bags: Sequence[str | Path],
                 val_bags: Sequence[str | Path], out_dir: str | Path, dist, device, *,
                 unlabelled_bags: Sequence[str | Path] = (),
                 step_callback: Callable[[int, dict], None] | None = None, **kwargs) -> None:
        self.teacher_path = teacher
        self.unlabelled_bags = list(unlabelled_bags)
        super().__init__(cfg, train_bags, val_bags, out_dir, dist, device,
                         step_callback=step_callback, **kwargs)

    # ------------------------------------------------------------------ set-up
    def prepare_config(self, cfg: dict) -> dict:
        from vit_perception.errors import UsageError
        from vit_perception.models.checkpoint import read_checkpoint
        from vit_perception.training.distill_options import distill_options

        opts = distill_options(cfg)
        path = self.teacher_path or opts.get("teacher")
        if not path:
            raise UsageError("no teacher checkpoint given (--teacher CKPT)")
        opts["teacher"] = str(path)
        classes = list(read_checkpoint(path)["classes"])
        cfg["classes"] = classes
        cfg = super().prepare_config(cfg)
        if list(cfg["classes"]) != classes:
            extra = sorted(set(cfg["classes"]) - set(classes))
            raise UsageError(f"the bags label classes the teacher {path} does not know: "
                             f"{', '.join(extra)} (teacher classes: {', '.join(classes)})")
        cfg["distill"] = opts
        self.dopts = opts
        self.teacher_cache = bool(opts["teacher_cache"])
        self.threshold = float(opts["teacher_threshold"])
        self.ignore_threshold = ignore_threshold(opts)
        self.nms_iou = nms_iou(opts)
        self.by_frames = bool(opts["weight_by_frames"])
        self.pseudo_labels = bool(opts["pseudo_labels"])
        self.feature_kd = float(opts["loss_feat_cos"]) > 0 or float(opts["loss_feat_l1"]) > 0
        if self.teacher_cache and self.augment_on_device:
            log.info("distill.teacher_cache: augmentation in the data loader (the cached boxes "
                     "move with each frame's augmentation there)")
            self.augment_on_device = False
        return cfg

    def build_model(self, init) -> None:
        from vit_perception.models.matcher import HungarianMatcher
        from vit_perception.training.distill_losses import DetectionDistillLoss
        from vit_perception.training.teacher import Teacher
        from vit_perception.training.translator import FeatureTranslator

        d = self.dopts
        self.teacher = Teacher(d["teacher"], self.device, str(d["teacher_amp"]))
        log.info("teacher %s: %s, input %dx%d", d["teacher"], self.teacher.cfg.get("name"),
                 *self.teacher.size)
        super().build_model(init)
        loss = self.cfg.get("loss", {})
        matcher = HungarianMatcher(float(loss.get("cost_class", 1.0)),
                                   float(loss.get("cost_bbox", 5.0)),
                                   float(loss.get("cost_giou", 2.0)))
        self.kd_loss = DetectionDistillLoss(matcher, float(d["temperature"]),
                                            float(d["kd_noobj_coef"]), bool(d["kd_aux"]),
                                            bool(d["kd_object_targets"]),
                                            bool(d["kd_hard_targets"]))
        self.translator = None
        self.translator_net = None
        if self.teacher_cache:
            log.info("distill.teacher_cache: the teacher's detections%s are computed once per "
                     "frame and moved with each augmentation",
                     " and feature maps" if self.feature_kd else "")
        if self.feature_kd:
            t = d["translator"]
            backbone = self.model.backbone
            self.student_stride = int(backbone.stride)  # type: ignore[arg-type]
            self.translator = FeatureTranslator(
                int(backbone.out_channels), self.teacher.channels,  # type: ignore[arg-type]
                int(t["hidden_dim"]), int(t["kernel_size"])).to(self.device).train()
            lr, wd = float(self.opts["lr"]), float(self.opts["weight_decay"])
            self.optimizer.add_param_group({"params": list(self.translator.parameters()),
                                            "lr": lr, "base_lr": lr, "weight_decay": wd,
                                            "name": "translator"})
            self.translator_net = self.wrap_ddp(self.translator)

    def load_train_frames(self, cache_dir: Path) -> list:
        from vit_perception.training.distill_data import load_unlabelled

        labelled = super().load_train_frames(cache_dir)
        self.has_labels = [True] * len(labelled)
        if not self.unlabelled_bags:
            return labelled
        unlabelled = load_unlabelled(self.unlabelled_bags, self.image_topic,
                                     float(self.opts["cache_max_mb"]), cache_dir / "unlabelled")
        repeat = max(1, int(self.dopts["unlabelled_repeat"]))
        log.info("%d labelled + %d unlabelled frames (x%d)", len(labelled), len(unlabelled),
                 repeat)
        self.has_labels += [False] * (len(unlabelled) * repeat)
        return labelled + unlabelled * repeat

    def repeat_factors(self, threshold: float):
        """Class frequencies from the labelled frames alone; unlabelled frames repeat once. (Their
        empty label lists would otherwise count as frames without any class, every class would
        look rare, and the labelled frames would be drawn ~2x as often as the unlabelled ones.)"""
        import numpy as np

        from vit_perception.training.sampler import repeat_factors

        factors = np.ones(len(self.train_samples))
        rows = [i for i, known in enumerate(self.has_labels) if known]
        if rows:
            factors[rows] = repeat_factors([self.train_samples[i].labels for i in rows],
                                           len(self.cfg["classes"]), threshold)
        return factors

    def make_dataset(self, samples: list, augment) -> torch.utils.data.Dataset:
        from vit_perception.training.distill_data import DistillDataset

        t = self.teacher
        preds = None
        if self.teacher_cache:
            from vit_perception.training.teacher_cache import predict_frames

            low = self.threshold if self.ignore_threshold is None else self.ignore_threshold
            preds = predict_frames(t, samples, low, int(self.opts["batch_size"]),
                                   features=self.feature_kd, nms_iou=self.nms_iou)
        return DistillDataset(samples, self.has_labels, (self.size, self.mean, self.std),
                              (t.size, t.mean, t.std), augment, preds)

    def make_device_dataset(self, samples: list, draw) -> torch.utils.data.Dataset:
        from vit_perception.training.distill_data import DistillLetterboxedDataset

        t = self.teacher
        return DistillLetterboxedDataset(samples, self.has_labels, (self.size, self.mean),
                                         (t.size, t.mean), draw)

    def device_batch(self, batch) -> tuple[Tensor, list[dict]]:
        """Also the teacher's frames augmented on the device (same draw, its input size)."""
        images, targets = super().device_batch(batch)
        if len(batch) == 3:
            params = torch.stack([t["teacher_params"] for t in batch[1]])
            frames = torch.stack([t["teacher_image"] for t in targets])
            teacher_images = self.augment_batch(frames, params, self.teacher.mean,
                                                self.teacher.std)
            for target, image in zip(targets, teacher_images):
                target["teacher_image"] = image
        return images, targets

    # ------------------------------------------------------------------ state
    def state_objects(self) -> dict:
        return {**super().state_objects(), "translator": self.translator}

    # ------------------------------------------------------------------ step
    def log_keys(self) -> tuple[str, ...]:
        return ("loss", "loss_gt", "loss_ce", "loss_bbox", "loss_giou", *KD_TERMS,
                *FEATURE_TERMS)

    def compute_losses(self, images: Tensor, targets: list[dict]) -> dict:
        from vit_perception.training.distill_losses import feature_losses, teacher_targets
        from vit_perception.training.translator import map_boxes, teacher_cells

        d = self.dopts
        maps = t_feat = None
        if self.feature_kd or not self.teacher_cache:
            maps = torch.stack([t["input_map"] for t in targets]).to(self.device)
        if self.teacher_cache:
            kd_targets = cached_targets(targets, self.device, self.threshold,
                                        self.ignore_threshold, self.nms_iou)
            if self.feature_kd:
                t_feat = torch.stack([t["teacher_features"] for t in targets]).to(
                    self.device).float()
        else:
            teacher = self.teacher(torch.stack([t["teacher_image"] for t in targets]))
            kd_targets = teacher_targets(teacher["pred_logits"],
                                         map_boxes(teacher["pred_boxes"], maps),
                                         self.threshold, self.ignore_threshold, self.nms_iou)
            t_feat = teacher["features"]
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            outputs = self.net(images)
        losses: dict[str, Tensor] = {}
        total = images.new_zeros(())
        known = [bool(t["has_labels"]) for t in targets]
        if self.pseudo_labels:  # unlabelled frames: the teacher's detections as ground truth
            targets = [t if k else {**t, "labels": p["labels"], "boxes": p["boxes"],
                                    "ignore_boxes": p["ignore_boxes"]}
                       for t, k, p in zip(targets, known, kd_targets)]
        labelled = torch.tensor([k or self.pseudo_labels for k in known]).nonzero()[:, 0]
        if len(labelled):
            gt = self.criterion(select_batch(outputs, labelled.to(images.device)),
                                [targets[int(i)] for i in labelled])
            share = len(labelled) / len(targets) if self.by_frames else 1.0
            losses.update({k: share * v for k, v in gt.items() if k in ("loss_ce", "loss_bbox",
                                                                         "loss_giou")})
            losses["loss_gt"] = share * gt["loss"]
        else:
            losses["loss_gt"] = images.new_zeros(())
        total = total + float(d["loss_gt"]) * losses["loss_gt"]
        for name, value in self.detection_kd(outputs, kd_targets, known).items():
            losses[name] = value
            total = total + float(d[name]) * value
        if self.translator_net is not None and t_feat is not None and maps is not None:
            s_feat = outputs["features"]
            s_stride = self.student_stride
            grid, mask = teacher_cells(  # grids cover the inputs padded to their strides
                maps, (t_feat.shape[-2], t_feat.shape[-1]),
                (t_feat.shape[-1] * self.teacher.stride / self.teacher.size[0],
                 t_feat.shape[-2] * self.teacher.stride / self.teacher.size[1]),
                (s_feat.shape[-1] * s_stride / self.size[0],
                 s_feat.shape[-2] * s_stride / self.size[1]))
            for name, value in feature_losses(self.translator_net(s_feat, grid), t_feat,
                                              mask).items():
                losses[name] = value
                total = total + float(d[name]) * value
        # every output in the graph (zero-weighted): a rank whose batch has no labelled frame
        # still produces gradients for the proposal heads only the set loss trains, as DDP needs
        losses["loss"] = total + 0.0 * sum(v.float().sum() for v in _tensors(outputs)
                                           if v.requires_grad)
        return losses

    def detection_kd(self, outputs: dict, kd_targets: list[dict], known: list[bool]
                     ) -> dict[str, Tensor]:
        """The detection-distillation terms over the batch (``known``: which frames have
        labels), less the labelled frames when ``distill.kd_labelled`` is false (they then learn
        from their ground truth alone) and the unlabelled ones under ``distill.pseudo_labels``
        (the set loss has them)."""
        labelled = bool(self.dopts["kd_labelled"])
        rows = [i for i, k in enumerate(known)
                if (k and labelled) or (not k and not self.pseudo_labels)]
        if len(rows) == len(known):
            return self.kd_loss(outputs, kd_targets)
        if not rows:
            zero = outputs["pred_logits"].new_zeros((), dtype=torch.float32)
            return {name: zero for name in KD_TERMS}
        index = torch.tensor(rows, device=outputs["pred_logits"].device)
        kd = self.kd_loss(select_batch(outputs, index), [kd_targets[i] for i in rows])
        share = len(rows) / len(known) if self.by_frames else 1.0
        return {name: share * value for name, value in kd.items()}

    def summary(self, stopped: str, metrics: dict | None) -> dict:
        return {**super().summary(stopped, metrics), "teacher": str(self.dopts["teacher"])}

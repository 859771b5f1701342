"""``train --profile``: images/s of the whole training step against a compute-only step.

The whole step is the real training loop (``DetectionTrainer.run`` in a temporary run
directory): data loading and augmentation, host-to-device copies, epoch boundaries and the
scheduled validations, timed between the optimiser steps after ``warmup`` steps (the final
evaluation is not counted). The compute-only step is the same trainer's ``train_step`` (same
model, criterion, optimiser, autocast, batch size) on one fixed batch of random images already
on the device with random targets. Their ratio says how much of the device the pipeline
keeps busy; it is a figure on the CPU as well as on a GPU. With ``train.augment_device`` on
the device the whole step includes ``batch_augment`` and the compute-only step does not (its
batch is ready): augmentation counts as pipeline, on either side.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def random_targets(batch: int, num_classes: int, boxes_per_image: int, device: torch.device,
                   generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """``batch`` targets of ``boxes_per_image`` random boxes (normalised cxcywh) and labels."""
    targets = []
    for _ in range(batch):
        centre = torch.rand(boxes_per_image, 2, generator=generator) * 0.6 + 0.2
        size = torch.rand(boxes_per_image, 2, generator=generator) * 0.3 + 0.05
        labels = torch.randint(0, num_classes, (boxes_per_image,), generator=generator)
        targets.append({"labels": labels.to(device), "boxes": torch.cat((centre, size), 1)
                        .to(device)})
    return targets


def synthetic_samples(count: int, size: tuple[int, int], num_classes: int, seed: int = 0
                      ) -> list:
    """``count`` frames of ``size`` (w, h) drawn in numpy (no OpenCV, no bag): a noisy gradient
    with 2-5 filled boxes each labelled by class, as ``dataset.Sample``s held in memory (what
    ``load_frames`` makes of a small bag)."""
    import numpy as np

    from vit_perception.training.dataset import Sample

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    samples = []
    for i in range(count):
        base = np.stack([60 + 120 * xx / w, 50 + 140 * yy / h,
                         np.full_like(xx, float(rng.integers(40, 200)))], axis=-1)
        img = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        boxes, labels = [], []
        for _ in range(int(rng.integers(2, 6))):
            bw, bh = int(rng.integers(w // 12, w // 3)), int(rng.integers(h // 12, h // 3))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            label = int(rng.integers(0, num_classes))
            img[y0:y0 + bh, x0:x0 + bw] = ((80 * label + 40) % 256, (255 - 60 * label) % 256,
                                           (30 + 97 * label) % 256)
            boxes.append([x0, y0, x0 + bw, y0 + bh])
            labels.append(label)
        samples.append(Sample(np.asarray(boxes, np.float32), np.asarray(labels, np.int64), w, h,
                              f"synthetic#{i}", _image=img))
    return samples


def profile_training(cfg: dict, train_bags: Sequence[str | Path] | None = None,
                     val_bags: Sequence[str | Path] | None = None, *,
                     device: str | None = None, steps: int = 30, warmup: int = 5,
                     image_topic: str = "/camera/image_raw", labels_topic: str = "/labels",
                     synthetic: tuple[int, int, tuple[int, int]] | None = None,
                     ) -> dict[str, Any]:
    """Run ``warmup + steps`` real training steps, then ``steps`` compute-only steps.

    The frames come from ``train_bags``/``val_bags``, or with ``synthetic=(train, val, (w, h))``
    from ``synthetic_samples`` in memory (for a machine without the bag and OpenCV
    dependencies). Returns ``whole_images_per_s``, ``compute_images_per_s``, ``ratio``,
    ``ratio_without_validation``, ``batch``, ``steps``, ``epochs``, ``evaluations`` and
    ``validation_s`` (during the timed part), ``device`` and ``augment`` (``"cpu"``: in the
    loader, ``"device"``: ``batch_augment`` on the training device; ``train.augment_device``).
    """
    from vit_perception.config import deep_merge
    from vit_perception.training.distributed import cleanup, setup

    if steps < 1 or warmup < 1:
        raise ValueError(f"--profile needs at least 1 step and 1 warm-up step, not {steps}/"
                         f"{warmup}")
    cfg = deep_merge(cfg, {"train": {"epochs": 1_000_000}})  # the step count ends the run
    dist, dev = setup(device)
    if dist.enabled:
        cleanup(dist)
        raise ValueError("train --profile runs in one process (not under torchrun)")
    stamps: list[float] = []
    evals: list[tuple[int, float]] = []  # (step, seconds) of each validation

    def on_step(step: int, losses: dict) -> None:
        stamps.append(time.perf_counter())

    kwargs = {"image_topic": image_topic, "labels_topic": labels_topic,
              "max_steps": warmup + steps, "progress": False, "step_callback": on_step}
    with tempfile.TemporaryDirectory(prefix="vit_perception_profile_") as tmp:
        trainer = _trainer(cfg, train_bags, val_bags, synthetic, tmp, dist, dev, kwargs)
        finish = trainer.finish_epoch

        def timed_finish() -> dict:
            t0 = time.perf_counter()
            metrics = finish()
            evals.append((trainer.step, time.perf_counter() - t0))
            return metrics

        trainer.finish_epoch = timed_finish
        trainer.run()
        batch = int(trainer.opts["batch_size"])
        whole_s = stamps[-1] - stamps[warmup - 1]
        inside = [s for step, s in evals if warmup <= step < warmup + steps]
        compute_s = _compute_only(trainer, batch, steps, warmup)
        epochs = trainer.epoch
        augment = "device" if trainer.augment_on_device else "cpu"
    whole, compute = steps * batch / whole_s, steps * batch / compute_s
    no_val = steps * batch / max(whole_s - sum(inside), 1e-9)
    return {"whole_images_per_s": whole, "compute_images_per_s": compute,
            "ratio": whole / compute, "ratio_without_validation": no_val / compute,
            "batch": batch, "steps": steps, "epochs": epochs, "evaluations": len(inside),
            "validation_s": sum(inside), "device": str(dev), "augment": augment}


def _trainer(cfg: dict, train_bags, val_bags, synthetic, out: str, dist, dev, kwargs) -> Any:
    from vit_perception.training.loop import DetectionTrainer

    if synthetic is None:
        if not train_bags or not val_bags:
            raise ValueError("profile_training needs training and validation bags or synthetic")
        return DetectionTrainer(cfg, train_bags, val_bags, out, dist, dev, **kwargs)
    n_train, n_val, size = synthetic
    classes = list(cfg.get("classes") or []) or ["a", "b"]
    cfg = {**cfg, "classes": classes}

    class InMemory(DetectionTrainer):
        def class_bags(self) -> list:
            return []

        def load_train_frames(self, cache_dir: Path) -> list:
            return synthetic_samples(n_train, size, len(classes), seed=1)

        def load_val_frames(self, cache_dir: Path) -> list:
            return synthetic_samples(n_val, size, len(classes), seed=2)

        def plot_curves(self) -> None:
            if importlib.util.find_spec("matplotlib") is not None:
                super().plot_curves()

    return InMemory(cfg, ["<synthetic>"], ["<synthetic>"], out, dist, dev, **kwargs)


def _compute_only(trainer: Any, batch: int, steps: int, warmup: int) -> float:
    """Seconds for ``steps`` ``train_step`` calls on one random device batch."""
    gen = torch.Generator().manual_seed(0)
    w, h = trainer.size
    images = torch.randn(batch, 3, h, w, generator=gen).to(trainer.device)
    targets = random_targets(batch, len(trainer.cfg["classes"]), 4, trainer.device, gen)
    trainer.model.train()
    for _ in range(warmup):
        trainer.train_step((images, targets))
    _sync(trainer.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step((images, targets))  # returns floats: each step synchronises
    _sync(trainer.device)
    return time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def format_profile(result: dict[str, Any]) -> str:
    return (f"training step, whole (data, copies, epoch boundaries, scheduled validation): "
            f"{result['whole_images_per_s']:.1f} images/s\n"
            f"training step, compute only (same model and batch {result['batch']}, random "
            f"targets on the device): {result['compute_images_per_s']:.1f} images/s\n"
            f"ratio whole / compute-only: {100 * result['ratio']:.0f}% "
            f"({result['steps']} timed steps on {result['device']}, augmentation on the "
            f"{'device' if result.get('augment') == 'device' else 'CPU (loader)'}, "
            f"{result['evaluations']} validations among them taking "
            f"{result['validation_s']:.1f} s; without them "
            f"{100 * result['ratio_without_validation']:.0f}%)")

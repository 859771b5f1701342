"""``train --profile``: images/s of the whole training step against a compute-only step.

The whole step is the real training loop (``DetectionTrainer.run`` in a temporary run
directory): data loading and augmentation, host-to-device copies, epoch boundaries and the
scheduled validations, timed between the optimiser steps after ``warmup`` steps (the final
evaluation is not counted). The compute-only step is the same trainer's ``train_step`` (same
model, criterion, optimiser, autocast, batch size) on one fixed batch of random images already
on the device with random targets. Their ratio says how much of the device the pipeline
keeps busy; it is a figure on the CPU as well as on a GPU.
"""

from __future__ import annotations

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


def profile_training(cfg: dict, train_bags: Sequence[str | Path], val_bags: Sequence[str | Path],
                     *, device: str | None = None, steps: int = 30, warmup: int = 5,
                     image_topic: str = "/camera/image_raw", labels_topic: str = "/labels",
                     ) -> dict[str, Any]:
    """Run ``warmup + steps`` real training steps, then ``steps`` compute-only steps.

    Returns ``whole_images_per_s``, ``compute_images_per_s``, ``ratio``, ``batch``, ``steps``,
    ``epochs`` (epoch boundaries crossed in the timed part counted in), ``evaluations`` (during
    the timed part) and ``device``.
    """
    from vit_perception.config import deep_merge
    from vit_perception.training.distributed import cleanup, setup
    from vit_perception.training.loop import DetectionTrainer

    if steps < 1 or warmup < 1:
        raise ValueError(f"--profile needs at least 1 step and 1 warm-up step, not {steps}/"
                         f"{warmup}")
    cfg = deep_merge(cfg, {"train": {"epochs": 1_000_000}})  # the step count ends the run
    dist, dev = setup(device)
    if dist.enabled:
        cleanup(dist)
        raise ValueError("train --profile runs in one process (not under torchrun)")
    stamps: list[float] = []
    evals_at: list[int] = []

    def on_step(step: int, losses: dict) -> None:
        stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory(prefix="vit_perception_profile_") as tmp:
        trainer = DetectionTrainer(cfg, train_bags, val_bags, tmp, dist, dev,
                                   image_topic=image_topic, labels_topic=labels_topic,
                                   max_steps=warmup + steps, progress=False,
                                   step_callback=on_step)
        record = trainer.finish_epoch

        def counted_finish() -> dict:
            evals_at.append(trainer.step)
            return record()

        trainer.finish_epoch = counted_finish  # type: ignore[method-assign]
        trainer.run()
        batch = int(trainer.opts["batch_size"])
        whole_s = stamps[-1] - stamps[warmup - 1]
        evaluations = sum(1 for s in evals_at if warmup <= s < warmup + steps)
        compute_s = _compute_only(trainer, batch, steps, warmup)
        epochs = trainer.epoch
    whole, compute = steps * batch / whole_s, steps * batch / compute_s
    return {"whole_images_per_s": whole, "compute_images_per_s": compute,
            "ratio": whole / compute, "batch": batch, "steps": steps, "epochs": epochs,
            "evaluations": evaluations, "device": str(dev)}


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
            f"({result['steps']} timed steps on {result['device']}, "
            f"{result['evaluations']} validations among them)")

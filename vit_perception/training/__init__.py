"""Offline training on recorded bags: ``train(cfg, train_bags, val_bags, out_dir, ...)``.

Small files, one idea each: ``options`` (the ``train:`` defaults), ``dataset`` (decoded-once
frames), ``augment`` (box-aware transforms.v2), ``sampler`` (resumable repeat-factor sampler),
``optim`` / ``schedule`` (AdamW groups, warm-up + cosine), ``ema``, ``lora``, ``state``
(checkpoint / resume / RNG), ``evaluate`` (COCO mAP), ``metrics_log`` / ``plots`` and ``loop``.
"""

from __future__ import annotations

__all__ = ["StopTraining", "TRAIN_DEFAULTS", "train"]


def __getattr__(name: str):  # keep `import vit_perception.training` light (no torch)
    if name in ("train", "StopTraining"):
        from vit_perception.training import loop

        return getattr(loop, name)
    if name == "TRAIN_DEFAULTS":
        from vit_perception.training.options import TRAIN_DEFAULTS

        return TRAIN_DEFAULTS
    raise AttributeError(name)

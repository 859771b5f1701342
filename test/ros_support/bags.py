"""Small real bags for training tests (synthetic lab frames, seeded)."""

from __future__ import annotations

from pathlib import Path


def train_val_bags(root: Path, train_frames: int, val_frames: int) -> tuple[str, str]:
    """A training bag (seed 1) and a validation bag (seed 2) of 160x120 frames, two classes."""
    from vit_perception.data.synth import write_synthetic_bag

    train = write_synthetic_bag(root / "train", frames=train_frames, seed=1, size=(160, 120),
                                num_classes=2)
    val = write_synthetic_bag(root / "val", frames=val_frames, seed=2, size=(160, 120),
                              num_classes=2)
    return str(train), str(val)

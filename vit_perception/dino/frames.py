"""Unlabelled frames from bags, decoded once and shrunk to the model's input scale.

Labels are ignored (a labels topic may be absent). Each frame is resized, keeping its aspect,
to fit ``max_size`` (the config's input size: no crop is ever needed at a finer scale than the
model sees), kept in memory as uint8, or in a disk cache of ``.npy`` files above
``cache_max_mb``. ``FrameViews`` is the dataset: ``(index, seed)`` -> the multi-crop views.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

log = logging.getLogger(__name__)


def fit_size(frame: np.ndarray, max_size: tuple[int, int]) -> np.ndarray:
    """``frame`` shrunk (never enlarged) to fit ``max_size`` (width, height)."""
    h, w = frame.shape[:2]
    s = min(max_size[0] / w, max_size[1] / h)
    if s >= 1.0:
        return frame
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def load_unlabelled(bags: Sequence[str | Path], image_topic: str, max_size: tuple[int, int],
                    cache_max_mb: float = 4096, cache_dir: str | Path | None = None,
                    max_frames: int | None = None) -> list[np.ndarray]:
    """Every frame on ``image_topic`` of ``bags`` (in order), as ``[H, W, 3]`` uint8 arrays
    (memory-mapped from ``cache_dir`` past ``cache_max_mb``). Raises ``ValueError`` naming the
    bag when it has no such topic, or when no frame is found at all."""
    from vit_perception.data.bags import read_frames

    frames: list[np.ndarray] = []
    total = 0.0
    for bag in bags:
        if not Path(bag).exists():
            raise ValueError(f"{bag}: bag not found")
        for frame in read_frames(bag, image_topic, labels_topic=None):
            if max_frames is not None and len(frames) >= max_frames:
                break
            img = np.ascontiguousarray(fit_size(frame.image, max_size))
            total += img.nbytes / 2**20
            if cache_dir is not None and total > cache_max_mb:
                path = Path(cache_dir) / f"{len(frames):07d}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, img)
                img = np.load(path, mmap_mode="r")
            frames.append(img)
    if not frames:
        raise ValueError(f"no frames on {image_topic} in {', '.join(map(str, bags))}")
    return frames


class FrameViews(torch.utils.data.Dataset):
    """``(index, seed)`` (from ``ResumableSampler``) -> the multi-crop views of that frame
    (with ``priors``, an ``AttentionPriors``, its map of the frame guides the local crops)."""

    def __init__(self, frames: Sequence[np.ndarray], multicrop, priors=None):
        self.frames = frames
        self.multicrop = multicrop
        self.priors = priors

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, item: tuple[int, int]) -> list[torch.Tensor]:
        index, seed = item
        prior = self.priors[index] if self.priors is not None else None
        return self.multicrop(np.asarray(self.frames[index]), seed, prior)

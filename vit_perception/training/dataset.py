"""Labelled frames from bags, decoded once: in memory (small bags) or in a disk cache.

``load_frames`` reads every labelled frame of the given bags through ``data.bags.read_frames``
and keeps its pixels as uint8; above ``cache_max_mb`` the pixels go to one ``.npy`` file per
frame under ``cache_dir`` and are memory-mapped on access, so bags larger than memory still train
with random access (which the resumable sampler needs). ``DetectionDataset`` turns a sample
``(index, seed)`` into ``(image [3, H, W] float, target)`` with the augmentation seeded by
``seed`` followed by exactly the runtime's ``models.preprocess.preprocess``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One labelled frame: ``boxes [n, 4]`` xyxy pixels, ``labels [n]`` class indices."""

    boxes: np.ndarray
    labels: np.ndarray
    width: int
    height: int
    source: str
    _image: np.ndarray | None = None
    _path: Path | None = None

    @property
    def image(self) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB (memory-mapped when disk-cached)."""
        if self._image is not None:
            return self._image
        return np.load(self._path, mmap_mode="r")


def bag_classes(bags: Sequence[str | Path], image_topic: str, labels_topic: str) -> list[str]:
    """Sorted union of the class names labelled in ``bags`` (and their ``classes.txt``)."""
    from vit_perception.data.bags import load_classes, read_frames

    names: set[str] = set()
    for bag in bags:
        names.update(read_frames(bag, image_topic, labels_topic).classes)
        listed = Path(bag) / "classes.txt"
        if listed.is_file():
            names.update(load_classes(listed))
    return sorted(names)


def resolve_classes(configured: Sequence[str] | None, bags: Sequence[str | Path],
                    image_topic: str, labels_topic: str) -> list[str]:
    """The configured classes when they cover every class in ``bags``, else the bags' classes
    (sorted; a placeholder such as the tiny config's ``[object]`` is replaced, with a warning)."""
    found = bag_classes(bags, image_topic, labels_topic)
    own = list(configured or [])
    if own and set(found) <= set(own):
        return own
    if own:
        log.warning("config classes %s do not cover the bags' classes; training on %s", own,
                    found)
    return found


def load_frames(bags: Sequence[str | Path], classes: Sequence[str], image_topic: str,
                labels_topic: str, cache_max_mb: float = 4096,
                cache_dir: str | Path | None = None) -> list[Sample]:
    """Every labelled frame of ``bags`` (in bag order) with labels indexed into ``classes``."""
    from vit_perception.data.bags import read_frames

    samples: list[Sample] = []
    total = 0
    on_disk = False
    for bag in bags:
        stream = read_frames(bag, image_topic, labels_topic, classes=list(classes),
                             labelled_only=True)
        for frame in stream:
            img = np.ascontiguousarray(frame.image, dtype=np.uint8)
            total += img.nbytes
            sample = Sample(np.asarray(frame.boxes, np.float32).reshape(-1, 4),
                            np.asarray(frame.labels, np.int64).reshape(-1), img.shape[1],
                            img.shape[0], f"{bag}#{frame.index}")
            if not on_disk and total > cache_max_mb * 2**20 and cache_dir is not None:
                on_disk = True
                log.info("decoded frames exceed %.0f MB: caching the rest in %s",
                         cache_max_mb, cache_dir)
            if on_disk:
                path = Path(cache_dir) / f"{len(samples):07d}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, img)
                sample._path = path
            else:
                sample._image = img
            samples.append(sample)
        if stream.stats.get("unlabelled"):
            log.info("%s: %d unlabelled frames skipped", bag, stream.stats["unlabelled"])
    if not samples:
        raise ValueError(f"no labelled frames in {', '.join(str(b) for b in bags)} "
                         f"(image topic {image_topic}, labels topic {labels_topic})")
    return samples


class DetectionDataset(torch.utils.data.Dataset):
    """``dataset[(index, seed)]`` -> (``[3, H, W]`` normalised model input, target dict).

    The target holds ``labels [n]`` and ``boxes [n, 4]`` normalised cxcywh of the model input
    (after the letterbox), as the criterion expects. ``augment`` is a callable
    ``(image uint8 [3, h, w], boxes xyxy [n, 4], labels [n]) -> same`` or None.
    """

    def __init__(self, samples: list[Sample], size: tuple[int, int], mean, std, augment=None):
        self.samples = samples
        self.size = size
        self.mean, self.std = list(mean), list(std)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item) -> tuple[Tensor, dict]:
        _, image, boxes, labels = augmented_sample(self.samples, self.augment, item)
        return to_model_input(image, boxes, labels, self.size, self.mean, self.std)


def augmented_sample(samples: list[Sample], augment, item,
                     extra: tuple[Tensor, Tensor] | None = None, source: bool = False
                     ) -> tuple:
    """``(index, image uint8 [3, h, w], boxes xyxy [n, 4], labels [n])`` of ``item`` (an index or
    the sampler's ``(index, seed)``), through ``augment`` seeded with ``seed`` when given.
    ``extra`` (xyxy boxes, labels) are appended to the frame's own before augmenting. With
    ``source``, a fifth value: ``augment.source_map``, where the frame's pixels went."""
    index, seed = item if isinstance(item, tuple) else (item, 0)
    s = samples[index]
    image = torch.from_numpy(np.array(s.image)).permute(2, 0, 1)  # [3, h, w] uint8
    boxes, labels = torch.from_numpy(s.boxes.copy()), torch.from_numpy(s.labels.copy())
    if extra is not None:
        boxes = torch.cat([boxes.float().reshape(-1, 4), extra[0].float()])
        labels = torch.cat([labels.long(), extra[1].long()])
    if augment is None:
        if source:
            from vit_perception.training.augment import identity_map

            return index, image, boxes, labels, identity_map(*image.shape[-2:])
        return index, image, boxes, labels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        out = augment(image, boxes, labels, source=True) if source else \
            augment(image, boxes, labels)
    return (index, *out)


def to_model_input(image: Tensor, boxes: Tensor, labels: Tensor, size: tuple[int, int], mean,
                   std) -> tuple[Tensor, dict]:
    """uint8 ``[3, h, w]`` + xyxy pixel boxes -> the runtime's letterboxed, normalised input and
    the target in normalised cxcywh of that input."""
    from vit_perception.models.box_ops import box_xyxy_to_cxcywh
    from vit_perception.models.preprocess import preprocess

    frame = image.permute(1, 2, 0)
    x, (lb,) = preprocess([frame], size, mean, std, "cpu")
    w, h = size
    b = box_xyxy_to_cxcywh(lb.to_input(boxes.float().reshape(-1, 4)))
    cxcywh = b / b.new_tensor([w, h, w, h])
    return x[0], {"labels": labels.long(), "boxes": cxcywh.clamp(0, 1).float()}


def collate(batch: list[tuple[Tensor, dict]]) -> tuple[Tensor, list[dict]]:
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)

"""Frames for distillation: labelled ``--train`` frames and ``--unlabelled`` frames, each
augmented once and letterboxed twice, into the student's and the teacher's input sizes.

``DistillDataset[(index, seed)]`` -> ``(student image [3, Hs, Ws], target)``; the target holds
the ground truth in the student's normalised cxcywh (``labels``, ``boxes``; empty for unlabelled
frames), ``has_labels`` (bool scalar: only these frames get the ground-truth set loss), the
teacher's input ``teacher_image [3, Ht, Wt]`` and ``input_map [8]`` (``translator.input_map``:
teacher -> student coordinates and the frame's extent in the teacher input).

With ``teacher_preds`` (``teacher_cache.predict_frames``: the teacher's detections computed once
per frame) the teacher's boxes go through the augmentation with the ground truth, and the target
holds ``teacher_boxes [m, 4]`` (student normalised cxcywh) and ``teacher_logits [m, K+1]``
instead of the teacher's image; where the cache holds the teacher's feature maps, also
``teacher_features [C, h, w]`` (float16, of the un-augmented frame) and the ``input_map`` from
its cells to the student's augmented input (``translator.input_map`` with the
augmentation's ``source_map``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vit_perception.training.dataset import Sample

log = logging.getLogger(__name__)


def load_unlabelled(bags: Sequence[str | Path], image_topic: str, cache_max_mb: float = 4096,
                    cache_dir: str | Path | None = None) -> list[Sample]:
    """Every frame of ``bags`` (labels, if any, are ignored) as samples without boxes."""
    from vit_perception.data.bags import read_frames

    samples: list[Sample] = []
    total, on_disk = 0, False
    for bag in bags:
        for frame in read_frames(bag, image_topic, None):
            img = np.ascontiguousarray(frame.image, dtype=np.uint8)
            total += img.nbytes
            sample = Sample(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), img.shape[1],
                            img.shape[0], f"{bag}#{frame.index}")
            if not on_disk and total > cache_max_mb * 2**20 and cache_dir is not None:
                on_disk = True
                log.info("decoded unlabelled frames exceed %.0f MB: caching the rest in %s",
                         cache_max_mb, cache_dir)
            if on_disk:
                path = Path(cache_dir) / f"{len(samples):07d}.npy"  # type: ignore[arg-type]
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, img)
                sample._path = path
            else:
                sample._image = img
            samples.append(sample)
    if not samples:
        raise ValueError(f"no frames in {', '.join(str(b) for b in bags)} "
                         f"(image topic {image_topic})")
    return samples


class DistillDataset(torch.utils.data.Dataset):
    """Samples with a ``has_labels`` flag each; see the module docstring for the items."""

    def __init__(self, samples: list[Sample], has_labels: Sequence[bool],
                 student: tuple[tuple[int, int], list, list],
                 teacher: tuple[tuple[int, int], list, list], augment=None,
                 teacher_preds: Sequence[tuple[np.ndarray, np.ndarray]] | None = None):
        if len(samples) != len(has_labels):
            raise ValueError("one has_labels flag per sample")
        if teacher_preds is not None and len(teacher_preds) != len(samples):
            raise ValueError("one teacher prediction set per sample")
        self.samples, self.has_labels = samples, [bool(h) for h in has_labels]
        self.student, self.teacher = student, teacher
        self.augment, self.teacher_preds = augment, teacher_preds

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item) -> tuple[Tensor, dict]:
        from vit_perception.models.preprocess import letterbox_params, preprocess
        from vit_perception.training.dataset import augmented_sample, to_model_input
        from vit_perception.training.translator import input_map

        if self.teacher_preds is not None:
            return self.cached_item(item)
        index, image, boxes, labels = augmented_sample(self.samples, self.augment, item)
        size, mean, std = self.student
        x, target = to_model_input(image, boxes, labels, size, mean, std)
        t_size, t_mean, t_std = self.teacher
        frame = image.permute(1, 2, 0)
        xt, (lb_t,) = preprocess([frame], t_size, t_mean, t_std, "cpu")
        lb_s = letterbox_params(frame.shape[1], frame.shape[0], int(size[0]), int(size[1]))
        target["teacher_image"] = xt[0]
        target["input_map"] = input_map(lb_t, lb_s)
        target["has_labels"] = torch.tensor(self.has_labels[index])
        return x, target

    def cached_item(self, item) -> tuple[Tensor, dict]:
        """The item with the teacher's cached detections moved by the same augmentation: they
        travel as extra boxes labelled ``-1 - row`` and are split off afterwards."""
        from vit_perception.models.preprocess import letterbox_params
        from vit_perception.training.dataset import augmented_sample, to_model_input
        from vit_perception.training.translator import input_map

        index = item[0] if isinstance(item, tuple) else item
        t_boxes, t_logits, t_features = self.teacher_preds[index]  # type: ignore[index]
        extra = (torch.from_numpy(t_boxes).reshape(-1, 4),
                 -1 - torch.arange(len(t_boxes), dtype=torch.int64))
        index, image, boxes, labels, *where = augmented_sample(
            self.samples, self.augment, item, extra, source=t_features is not None)
        size, mean, std = self.student
        x, target = to_model_input(image, boxes, labels, size, mean, std)
        if t_features is not None:
            s = self.samples[index]
            lb_t = letterbox_params(s.width, s.height, *self.teacher[0])
            lb_s = letterbox_params(image.shape[-1], image.shape[-2], *size)
            target["teacher_features"] = t_features
            target["input_map"] = input_map(lb_t, lb_s, where[0])
        ours = target["labels"] < 0
        rows = -1 - target["labels"][ours]
        target["teacher_boxes"] = target["boxes"][ours]
        target["teacher_logits"] = torch.from_numpy(t_logits)[rows].reshape(-1, t_logits.shape[1])
        target["labels"], target["boxes"] = target["labels"][~ours], target["boxes"][~ours]
        target["has_labels"] = torch.tensor(self.has_labels[index])
        return x, target


class DistillLetterboxedDataset(torch.utils.data.Dataset):
    """``DistillDataset`` for augmentation on the device (``train.augment_device``):
    ``(student frame uint8 [3, Hs, Ws], target, student params)``; the target also holds the
    teacher's frame ``teacher_image`` (uint8 ``[3, Ht, Wt]``) with its ``teacher_params`` row
    (the same draw, for the teacher's input), ``input_map`` and ``has_labels``."""

    def __init__(self, samples: list[Sample], has_labels: Sequence[bool],
                 student: tuple[tuple[int, int], list], teacher: tuple[tuple[int, int], list],
                 draw=None):
        from vit_perception.training.device_data import LetterboxedDataset, mean_fill

        if len(samples) != len(has_labels):
            raise ValueError("one has_labels flag per sample")
        self.student = LetterboxedDataset(samples, student[0], student[1], draw)
        self.has_labels = [bool(h) for h in has_labels]
        self.teacher_size, self.teacher_fill = teacher[0], mean_fill(teacher[1])

    def __len__(self) -> int:
        return len(self.student)

    def __getitem__(self, item) -> tuple[Tensor, dict, Tensor]:
        from vit_perception.training.device_data import letterbox_uint8
        from vit_perception.training.translator import input_map

        index, aug = self.student.sample_augment(item)
        image = np.asarray(self.student.samples[index].image)  # read once for both inputs
        frame, target, params = self.student.load(index, aug, image)
        teacher_frame, lb_t = letterbox_uint8(image, self.teacher_size, self.teacher_fill)
        target["teacher_image"] = teacher_frame
        target["teacher_params"] = aug.params(lb_t)
        target["input_map"] = input_map(aug.letterbox(self.teacher_size),
                                        aug.letterbox(self.student.size))
        target["has_labels"] = torch.tensor(self.has_labels[index])
        return frame, target, params

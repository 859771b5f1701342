"""The loader side of augmentation on the device (``train.augment_device``).

``LetterboxedDataset[(index, seed)]`` -> ``(frame, target, params)``: the frame letterboxed
into the model input as uint8 ``[3, H, W]`` (one shape for every sample, so a batch is one
pinned tensor and one upload), the target already moved by the sample's augmentation
(``labels [n]``, ``boxes [n, 4]`` normalised cxcywh of the input, as ``DetectionDataset``'s) and
the sample's ``batch_augment.PARAMS`` row, drawn by ``augment_draw.AugmentDraw`` from the
sampler's per-sample seed. ``collate`` stacks them; ``batch_augment`` does the pixels on the
device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from vit_perception.models.preprocess import Letterbox, have_opencv, letterbox_params
from vit_perception.training.augment_draw import AugmentDraw, FrameAugment
from vit_perception.training.dataset import Sample


def letterbox_uint8(frame: np.ndarray, size: tuple[int, int], fill: Sequence[int]
                    ) -> tuple[Tensor, Letterbox]:
    """``[h, w, 3]`` uint8 RGB -> (``[3, H, W]`` uint8 letterboxed into ``size = (W, H)`` on a
    ``fill`` canvas, its ``Letterbox``). The resize is ``models.preprocess``'s: OpenCV's
    bilinear of the uint8 pixels (torch's, rounded, where OpenCV is missing)."""
    h, w = frame.shape[:2]
    lb = letterbox_params(w, h, int(size[0]), int(size[1]))
    out = torch.empty(3, lb.dst_h, lb.dst_w, dtype=torch.uint8)
    out[:] = torch.tensor(list(fill), dtype=torch.uint8).view(3, 1, 1)
    if (lb.resized_h, lb.resized_w) == (h, w):
        pixels = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    elif have_opencv():
        import cv2

        pixels = torch.from_numpy(cv2.resize(np.ascontiguousarray(frame),
                                             (lb.resized_w, lb.resized_h),
                                             interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1)
    else:
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
        x = torch.nn.functional.interpolate(x, size=(lb.resized_h, lb.resized_w),
                                            mode="bilinear", align_corners=False)
        pixels = x[0].round().clamp(0, 255).to(torch.uint8)
    out[:, lb.pad_y:lb.pad_y + lb.resized_h, lb.pad_x:lb.pad_x + lb.resized_w] = pixels
    return out, lb


def mean_fill(mean: Sequence[float]) -> tuple[int, ...]:
    """The mean colour (0..1 RGB) as uint8 (the canvas of the letterbox and the zoom-out)."""
    return tuple(int(round(float(m) * 255)) for m in mean)


def augmented_target(aug: FrameAugment, sample: Sample, size: tuple[int, int]
                     ) -> dict[str, Tensor]:
    """The sample's boxes moved by ``aug`` into normalised cxcywh of a ``size`` input."""
    from vit_perception.models.box_ops import box_xyxy_to_cxcywh

    boxes, labels = aug.boxes(sample.boxes, sample.labels)
    w, h = int(size[0]), int(size[1])
    b = box_xyxy_to_cxcywh(torch.as_tensor(aug.letterbox(size).to_input(boxes)))
    return {"labels": torch.from_numpy(np.asarray(labels, np.int64)),
            "boxes": (b / b.new_tensor([w, h, w, h])).clamp(0, 1).float()}


class LetterboxedDataset(torch.utils.data.Dataset):
    """See the module docstring; ``draw`` None: no augmentation (identity rows)."""

    def __init__(self, samples: list[Sample], size: tuple[int, int], mean,
                 draw: AugmentDraw | None = None):
        self.samples, self.size, self.draw = samples, size, draw
        self.fill = mean_fill(mean)

    def __len__(self) -> int:
        return len(self.samples)

    def sample_augment(self, item) -> tuple[int, FrameAugment]:
        """``(index, FrameAugment)`` of ``item`` (an index or the sampler's ``(index, seed)``)."""
        index, seed = item if isinstance(item, tuple) else (item, 0)
        s = self.samples[index]
        if self.draw is None:
            return index, FrameAugment(s.width, s.height)
        return index, self.draw(seed, s.width, s.height, s.boxes)

    def __getitem__(self, item) -> tuple[Tensor, dict, Tensor]:
        return self.load(*self.sample_augment(item))

    def load(self, index: int, aug: FrameAugment, image: np.ndarray | None = None
             ) -> tuple[Tensor, dict, Tensor]:
        """Sample ``index`` under ``aug``: ``(frame, target, params)``; ``image``: its pixels
        when the caller has read them already (a disk-cached frame is then read once)."""
        s = self.samples[index]
        pixels = np.asarray(s.image) if image is None else image
        frame, lb = letterbox_uint8(pixels, self.size, self.fill)
        return frame, augmented_target(aug, s, self.size), aug.params(lb)


def collate(batch: list[tuple[Tensor, dict, Tensor]]) -> tuple[Tensor, list[dict], Tensor]:
    """``(frames [B, 3, H, W] uint8, targets, params [B, len(PARAMS)])``."""
    frames, targets, params = zip(*batch)
    return torch.stack(frames), list(targets), torch.stack(params)

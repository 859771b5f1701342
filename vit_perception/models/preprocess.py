"""Letterbox + normalise frames into the model input, in torch on the target device.

One geometry for training, every inference backend and the post-processor: the frame is scaled
by ``scale`` (aspect kept) to ``resized_w x resized_h``, placed at ``(pad_x, pad_y)`` in the
``dst_w x dst_h`` input, and the rest is filled with the mean colour (zero after normalising).
A point ``x`` of the frame (continuous pixel coordinates, edges at integers) lands at
``x * scale_x + pad_x`` in the input; ``Letterbox.to_source`` inverts that exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Letterbox:
    """Where a ``src_w x src_h`` frame sits in the ``dst_w x dst_h`` model input."""

    scale: float
    pad_x: int
    pad_y: int
    src_w: int
    src_h: int
    dst_w: int
    dst_h: int

    @property
    def resized_w(self) -> int:
        return min(self.dst_w, max(1, round(self.src_w * self.scale)))

    @property
    def resized_h(self) -> int:
        return min(self.dst_h, max(1, round(self.src_h * self.scale)))

    @property
    def scale_x(self) -> float:
        """Exact horizontal scale (the resized width is rounded to whole pixels)."""
        return self.resized_w / self.src_w

    @property
    def scale_y(self) -> float:
        return self.resized_h / self.src_h

    def to_source(self, boxes: np.ndarray | Tensor, clip: bool = True) -> np.ndarray | Tensor:
        """``[n, 4]`` xyxy in model-input pixels -> xyxy in frame pixels (clipped to the frame)."""
        out = boxes * 1.0
        out[..., 0::2] = (boxes[..., 0::2] - self.pad_x) / self.scale_x
        out[..., 1::2] = (boxes[..., 1::2] - self.pad_y) / self.scale_y
        if clip:
            out[..., 0::2] = out[..., 0::2].clip(0, self.src_w)
            out[..., 1::2] = out[..., 1::2].clip(0, self.src_h)
        return out

    def to_input(self, boxes: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """``[n, 4]`` xyxy in frame pixels -> xyxy in model-input pixels."""
        out = boxes * 1.0
        out[..., 0::2] = boxes[..., 0::2] * self.scale_x + self.pad_x
        out[..., 1::2] = boxes[..., 1::2] * self.scale_y + self.pad_y
        return out


def letterbox_params(src_w: int, src_h: int, dst_w: int, dst_h: int) -> Letterbox:
    """Largest aspect-preserving fit of ``src`` into ``dst``, centred (padding floored)."""
    scale = min(dst_w / src_w, dst_h / src_h)
    lb = Letterbox(scale, 0, 0, int(src_w), int(src_h), int(dst_w), int(dst_h))
    return Letterbox(scale, (dst_w - lb.resized_w) // 2, (dst_h - lb.resized_h) // 2,
                     int(src_w), int(src_h), int(dst_w), int(dst_h))


def preprocess(frames: Sequence[np.ndarray | Tensor], width, height=None, mean=None, std=None,
               device=None) -> tuple[Tensor, list[Letterbox]]:
    """``H x W x 3`` uint8 RGB frames -> (``[B, 3, height, width]`` float32, letterboxes).

    Also accepts the contract form ``preprocess(frames, (width, height), mean, std, device)``.
    Resizing is bilinear (``align_corners=False``) on ``device`` (default: the first frame's
    device for tensors, else CPU), of the uint8 pixels on the CPU and of floats elsewhere;
    frames of equal size are resized as one batch.
    """
    if isinstance(width, (tuple, list)):
        mean, std, device = height, mean, std
        width, height = width
    width, height = int(width), int(height)
    if device is None:
        device = frames[0].device if isinstance(frames[0], Tensor) else "cpu"
    device = torch.device(device)
    mean_t = torch.tensor(mean if mean is not None else IMAGENET_MEAN, device=device)
    std_t = torch.tensor(std if std is not None else IMAGENET_STD, device=device)
    mean_t, inv_std = mean_t.view(3, 1, 1) * 255.0, 1.0 / (std_t.view(3, 1, 1) * 255.0)
    out = torch.zeros(len(frames), 3, height, width, device=device)
    boxes = [letterbox_params(f.shape[1], f.shape[0], width, height) for f in frames]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(tuple(f.shape[:2]), []).append(i)
    for indices in groups.values():
        batch = torch.stack([torch.as_tensor(np.ascontiguousarray(frames[i]))
                             if not isinstance(frames[i], Tensor) else frames[i]
                             for i in indices]).to(device, non_blocking=True)
        x = batch.permute(0, 3, 1, 2)  # a channels-last view
        lb = boxes[indices[0]]
        if (lb.resized_h, lb.resized_w) != tuple(x.shape[-2:]):
            # On the CPU, torch resizes uint8 channels-last images directly (a vectorised
            # kernel, ~4x faster than resizing floats; results within one grey level).
            if x.dtype != torch.uint8 or device.type != "cpu":
                x = x.float()
            x = F.interpolate(x, size=(lb.resized_h, lb.resized_w), mode="bilinear",
                              align_corners=False)
        x = x.contiguous()
        for j, i in enumerate(indices):  # normalise straight into the letterboxed input
            dst = out[i, :, lb.pad_y:lb.pad_y + lb.resized_h, lb.pad_x:lb.pad_x + lb.resized_w]
            torch.sub(x[j], mean_t, out=dst)
            dst.mul_(inv_std)
    return out, boxes

"""The device path's augmentation, drawn per sample on the CPU: what ``training.augment`` does
to a frame, as numbers.

``AugmentDraw(seed, w, h, boxes)`` draws one ``FrameAugment`` from a generator seeded with the
sampler's per-sample seed (so a resumed run draws the same, whichever worker loads the sample):
horizontal flip, zoom-out onto a larger mean-colour canvas (side 1..``zoom_out_max``), a crop
that keeps every box whole (``augment.keep_boxes_window``, the CPU path's own window) and
brightness/contrast/saturation factors in 0.7..1.3. The augmented image is the window
``[0, aug_w] x [0, aug_h]`` in which a frame point ``x`` (flipped: ``w - x``) lands at ``x +
offset_x``, exactly the CPU path's zoom-out canvas cropped. ``FrameAugment.boxes`` moves the
boxes there (clipped to the window, boxes under one pixel dropped, as the CPU path does);
``FrameAugment.params`` turns it into one row of ``batch_augment.PARAMS`` for a model input:
the affine map from the frame letterboxed into that input to the augmented frame letterboxed
into it, the augmented frame's extent there and the photometric factors. Nothing here touches
pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vit_perception.models.preprocess import Letterbox, letterbox_params
from vit_perception.training.augment import augment_kwargs, keep_boxes_window

JITTER = 0.3  # brightness, contrast, saturation factors in 1 +- JITTER (the CPU path's)


@dataclass(frozen=True)
class FrameAugment:
    """One sample's augmentation of a ``w x h`` frame (see the module docstring)."""

    w: int
    h: int
    flip: bool = False
    offset_x: int = 0
    offset_y: int = 0
    aug_w: int = 0  # 0: the frame's own size
    aug_h: int = 0
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the augmented frame in frame pixels."""
        return (self.aug_w or self.w, self.aug_h or self.h)

    def boxes(self, boxes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame xyxy ``[n, 4]`` -> augmented-frame xyxy, clipped; boxes narrower or lower than
        one pixel are dropped with their labels."""
        b = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
        if self.flip:
            b[:, [0, 2]] = self.w - b[:, [2, 0]]
        b += np.asarray([self.offset_x, self.offset_y] * 2, np.float32)
        aw, ah = self.size
        b[:, 0::2] = b[:, 0::2].clip(0, aw)
        b[:, 1::2] = b[:, 1::2].clip(0, ah)
        keep = ((b[:, 2] - b[:, 0]) >= 1) & ((b[:, 3] - b[:, 1]) >= 1)
        return b[keep], np.asarray(labels).reshape(-1)[keep]

    def letterbox(self, size: tuple[int, int]) -> Letterbox:
        """Where the augmented frame sits in a ``size = (width, height)`` model input."""
        aw, ah = self.size
        return letterbox_params(aw, ah, int(size[0]), int(size[1]))

    def params(self, source: Letterbox) -> Tensor:
        """The ``batch_augment.PARAMS`` row for the frame letterboxed as ``source``: ``q = m * u +
        c`` per axis from source-input pixel ``u`` to output pixel ``q``, the augmented frame's
        extent in the output (xyxy) and the three photometric factors."""
        out = self.letterbox((source.dst_w, source.dst_h))
        rows = []
        for flip, length, offset, s0, p0, sa, pa in (
                (self.flip, self.w, self.offset_x, source.scale_x, source.pad_x, out.scale_x,
                 out.pad_x),
                (False, self.h, self.offset_y, source.scale_y, source.pad_y, out.scale_y,
                 out.pad_y)):
            # u -> frame x = (u - p0) / s0 -> (flipped) + offset -> * sa + pa
            if flip:
                rows += [-sa / s0, (length + offset + p0 / s0) * sa + pa]
            else:
                rows += [sa / s0, (offset - p0 / s0) * sa + pa]
        extent = [out.pad_x, out.pad_y, out.pad_x + out.resized_w, out.pad_y + out.resized_h]
        return torch.tensor([*rows, *extent, self.brightness, self.contrast, self.saturation],
                            dtype=torch.float32)


class AugmentDraw:
    """Draws ``FrameAugment``s with the probabilities of the ``train.augment`` section."""

    def __init__(self, *, hflip: float = 0.5, crop: float = 0.5, crop_min_scale: float = 0.4,
                 zoom_out: float = 0.2, zoom_out_max: float = 1.6, photometric: float = 0.5):
        self.hflip, self.crop, self.crop_min_scale = float(hflip), float(crop), crop_min_scale
        self.zoom_out, self.zoom_out_max = float(zoom_out), float(zoom_out_max)
        self.photometric = float(photometric)

    @classmethod
    def from_options(cls, options: dict) -> AugmentDraw:
        return cls(**augment_kwargs(options))

    def __call__(self, seed: int, w: int, h: int, boxes: np.ndarray) -> FrameAugment:
        """One draw for a ``w x h`` frame with ``boxes`` (xyxy ``[n, 4]``), from ``seed``."""
        gen = torch.Generator().manual_seed(int(seed))

        def rand(n: int = 1) -> list[float]:
            return torch.rand(n, generator=gen).tolist()

        flip = self.hflip > 0 and rand()[0] < self.hflip
        b = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
        if flip:
            b[:, [0, 2]] = w - b[:, [2, 0]]
        cw, ch, ox, oy = w, h, 0, 0  # canvas size, the frame's place on it
        if self.zoom_out > 0 and rand()[0] < self.zoom_out:
            r, u, v = rand(3)
            side = 1.0 + r * (self.zoom_out_max - 1.0)
            cw, ch = int(w * side), int(h * side)
            ox, oy = int((cw - w) * u), int((ch - h) * v)
        aw, ah = cw, ch
        if self.crop > 0 and rand()[0] < self.crop:
            union = None
            if len(b):
                union = (float(b[:, 0].min()) + ox, float(b[:, 1].min()) + oy,
                         float(b[:, 2].max()) + ox, float(b[:, 3].max()) + oy)
            left, top, aw, ah = keep_boxes_window(cw, ch, union, self.crop_min_scale, rand(4))
            ox, oy = ox - left, oy - top
        factors = [1.0, 1.0, 1.0]
        if self.photometric > 0 and rand()[0] < self.photometric:
            factors = [1.0 + JITTER * (2 * f - 1) for f in rand(3)]
        return FrameAugment(w, h, flip, ox, oy, aw, ah, *factors)

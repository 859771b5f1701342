"""Augmentation that moves boxes with the pixels (torchvision.transforms.v2 + tv_tensors).

Horizontal flip, scale jitter (a random crop that keeps every box whole zooms in; a zoom-out
onto a mean-colour canvas zooms out) and photometric jitter (brightness, contrast, saturation; no
hue shift or channel swap: colours name the synthetic classes, and hue is the slowest op on a
CPU). The output is still a uint8 frame of any size: the runtime's letterbox + normalisation
runs afterwards, unchanged.
All randomness comes from torch's global generator, which the dataset seeds per sample.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

# the ``train.augment`` keys both augmentation paths (this one and ``augment_draw``) take
AUGMENT_KEYS = ("hflip", "crop", "crop_min_scale", "zoom_out", "zoom_out_max", "photometric")


def augment_kwargs(options: dict) -> dict:
    """The ``AUGMENT_KEYS`` present in a ``train.augment`` section."""
    return {k: options[k] for k in AUGMENT_KEYS if k in options}


def keep_boxes_window(w: int, h: int, union: tuple[float, float, float, float] | None,
                      min_scale: float, u: list[float]) -> tuple[int, int, int, int]:
    """``(left, top, width, height)`` of a crop of a ``w x h`` image that contains ``union``
    (xyxy pixels of all boxes; None: no boxes) entirely, each side ``min_scale``..1 of the
    image's; ``u`` holds 4 uniform numbers in [0, 1) (size x, size y, position x, position y).
    Shared by the CPU augmentation and the device path's parameter draw."""
    if union is not None:
        x1, y1 = math.floor(union[0]), math.floor(union[1])
        x2, y2 = math.ceil(union[2]), math.ceil(union[3])
    else:
        x1, y1, x2, y2 = w / 2, h / 2, w / 2, h / 2
    x1, y1, x2, y2 = max(0, int(x1)), max(0, int(y1)), min(w, int(x2)), min(h, int(y2))
    min_w, min_h = max(x2 - x1, min_scale * w), max(y2 - y1, min_scale * h)
    cw = max(1, min(w, int(round(min_w + u[0] * (w - min_w)))))
    ch = max(1, min(h, int(round(min_h + u[1] * (h - min_h)))))
    # the left edge may move in [x2 - cw, x1] (box union inside) and [0, w - cw] (in frame)
    lo_x, hi_x = max(0, x2 - cw), max(max(0, x2 - cw), min(x1, w - cw))
    lo_y, hi_y = max(0, y2 - ch), max(max(0, y2 - ch), min(y1, h - ch))
    left = min(hi_x, lo_x + int(u[2] * (hi_x - lo_x + 1)))
    top = min(hi_y, lo_y + int(u[3] * (hi_y - lo_y + 1)))
    return left, top, cw, ch


class RandomCropKeepBoxes(torch.nn.Module):
    """With probability ``p``, crop a window (each side ``min_scale``..1 of the frame's) that
    contains every box entirely; frames without boxes are cropped freely."""

    def __init__(self, p: float = 0.5, min_scale: float = 0.4):
        super().__init__()
        self.p, self.min_scale = p, min_scale

    def forward(self, image: Tensor, boxes: tv_tensors.BoundingBoxes, *others: Tensor):
        """``others`` (masks of the image's size) are cropped with it."""
        if self.p <= 0 or torch.rand(()) >= self.p:
            return (image, boxes, *others)
        h, w = image.shape[-2:]
        union = None
        if len(boxes):
            union = (boxes[:, 0].min().item(), boxes[:, 1].min().item(),
                     boxes[:, 2].max().item(), boxes[:, 3].max().item())
        left, top, cw, ch = keep_boxes_window(w, h, union, self.min_scale,
                                              torch.rand(4).tolist())
        return tuple(TF.crop(x, top, left, ch, cw) for x in (image, boxes, *others))


class Augment:
    """``(image uint8 [3, h, w], boxes xyxy [n, 4], labels [n]) -> (image, boxes, labels)``."""

    def __init__(self, *, hflip: float = 0.5, crop: float = 0.5, crop_min_scale: float = 0.4,
                 zoom_out: float = 0.2, zoom_out_max: float = 1.6, photometric: float = 0.5,
                 fill=(124, 116, 104)):
        self.geometric = v2.Compose([
            v2.RandomHorizontalFlip(hflip),
            v2.RandomZoomOut(fill={tv_tensors.Image: list(fill), "others": 0},
                             side_range=(1.0, zoom_out_max), p=zoom_out)
            if zoom_out > 0 else v2.Identity(),
        ])
        self.crop = RandomCropKeepBoxes(crop, crop_min_scale)
        self.photometric = v2.RandomApply(
            [v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3)],
            p=photometric) if photometric > 0 else v2.Identity()

    @classmethod
    def from_options(cls, options: dict, mean=None) -> Augment:
        """From the ``train.augment`` section; ``mean`` (0..1 RGB) is the zoom-out fill."""
        fill = tuple(int(round(m * 255)) for m in (mean or (0.485, 0.456, 0.406)))
        return cls(**augment_kwargs(options), fill=fill)

    def __call__(self, image: Tensor, boxes: Tensor, labels: Tensor, source: bool = False):
        """With ``source``, a fourth value: ``source_map`` of the frame (where its pixels went,
        read from a coordinate mask that the flip, zoom-out and crop move with the pixels)."""
        h, w = image.shape[-2:]
        img = tv_tensors.Image(image)
        bb = tv_tensors.BoundingBoxes(boxes.float().reshape(-1, 4), format="XYXY",
                                      canvas_size=(h, w))
        others = (coordinate_mask(h, w),) if source else ()
        img, bb, *others = self.geometric(img, bb, *others)
        img, bb, *others = self.crop(img, bb, *others)
        img = self.photometric(img)
        boxes = bb.as_subclass(Tensor)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        out = (img.as_subclass(Tensor), boxes[keep], labels[keep])
        return (*out, source_map(others[0].as_subclass(Tensor))) if source else out


def coordinate_mask(h: int, w: int) -> tv_tensors.Mask:
    """``[2, h, w]`` int32: each pixel's ``x + 1`` and ``y + 1`` (0 is left for padding)."""
    ys, xs = torch.meshgrid(torch.arange(1, h + 1, dtype=torch.int32),
                            torch.arange(1, w + 1, dtype=torch.int32), indexing="ij")
    return tv_tensors.Mask(torch.stack((xs, ys)))


def identity_map(h: int, w: int) -> Tensor:
    """``source_map`` of a frame the augmentation left as it was."""
    return torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, float(w), float(h)])


def source_map(mask: Tensor) -> Tensor:
    """``[7]`` float from an augmented ``coordinate_mask``: ``(sx, tx, ty)`` with
    ``x_out = sx * x + tx``, ``y_out = y + ty`` (continuous pixel coordinates of the source
    frame -> the augmented one; ``sx`` is -1 after a flip), then the part of the source frame
    still visible as ``(x0, y0, x1, y1)`` source pixels. Flips, pads and crops are all an
    augmentation does to the geometry, so two pixels pin the map down."""
    valid = mask[0] > 0
    rows, cols = valid.any(1).nonzero()[:, 0], valid.any(0).nonzero()[:, 0]
    if len(rows) == 0:
        raise ValueError("the augmentation left no pixel of the frame")
    r, c1, c2 = int(rows[0]), int(cols[0]), int(cols[-1])
    x1, y1 = int(mask[0, r, c1]) - 1, int(mask[1, r, c1]) - 1
    flipped = c2 > c1 and int(mask[0, r, c2]) - 1 < x1
    sx, tx = (-1.0, float(x1 + c1 + 1)) if flipped else (1.0, float(c1 - x1))
    xs = mask[0][valid].float() - 1
    ys = mask[1][valid].float() - 1
    return torch.tensor([sx, tx, float(r - y1), float(xs.min()), float(ys.min()),
                         float(xs.max()) + 1, float(ys.max()) + 1])

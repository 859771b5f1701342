"""Letterbox + normalise frames into the model input, in torch on the target device.

One geometry for training, every inference backend and the post-processor: the frame is scaled
by ``scale`` (aspect kept) to ``resized_w x resized_h``, placed at ``(pad_x, pad_y)`` in the
``dst_w x dst_h`` input, and the rest is filled with the mean colour (zero after normalising).
A point ``x`` of the frame (continuous pixel coordinates, edges at integers) lands at
``x * scale_x + pad_x`` in the input; ``Letterbox.to_source`` inverts that exactly.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
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
               device=None, dtype: torch.dtype = torch.float32
               ) -> tuple[Tensor, list[Letterbox]]:
    """``H x W x 3`` uint8 RGB frames -> (``[B, 3, height, width]`` ``dtype``, letterboxes).

    Also accepts the contract form ``preprocess(frames, (width, height), mean, std, device)``.
    Resizing is bilinear (``align_corners=False``) on ``device`` (default: the first frame's
    device for tensors, else CPU): of the uint8 pixels with OpenCV on the CPU, of floats in
    torch elsewhere (frames of equal size as one batch). On CUDA the uint8 frames of a size
    are gathered into one reused pinned host buffer and uploaded in one asynchronous copy;
    letterbox and normalisation then run on the device, written in ``dtype`` (the model's).
    """
    if isinstance(width, (tuple, list)):
        mean, std, device = height, mean, std
        width, height = width
    width, height = int(width), int(height)
    if device is None:
        device = frames[0].device if isinstance(frames[0], Tensor) else "cpu"
    device = torch.device(device)
    mean = tuple(mean if mean is not None else IMAGENET_MEAN)
    std = tuple(std if std is not None else IMAGENET_STD)
    boxes = [letterbox_params(f.shape[1], f.shape[0], width, height) for f in frames]
    if device.type == "cpu" and all(f.dtype in (np.uint8, torch.uint8) for f in frames) \
            and have_opencv():
        out = torch.zeros(len(frames), 3, height, width)
        _letterbox_cpu(frames, boxes, out.numpy(), mean, std)
        return out.to(dtype), boxes
    out = torch.zeros(len(frames), 3, height, width, device=device, dtype=dtype)
    mean_t, inv_std = _normalisers(mean, std, str(device))
    groups: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(tuple(f.shape[:2]), []).append(i)
    for indices in groups.values():
        group = [frames[i] for i in indices]
        if device.type == "cuda" and all(isinstance(f, np.ndarray) and f.dtype == np.uint8
                                         for f in group):
            batch = uploader(device).upload(group)  # type: ignore[arg-type]
        else:
            batch = torch.stack([torch.as_tensor(np.ascontiguousarray(f))
                                 if not isinstance(f, Tensor) else f
                                 for f in group]).to(device, non_blocking=True)
        x = batch.permute(0, 3, 1, 2).float()
        lb = boxes[indices[0]]
        if (lb.resized_h, lb.resized_w) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=(lb.resized_h, lb.resized_w), mode="bilinear",
                              align_corners=False)
        x = (x - mean_t) * inv_std  # the group normalised in float32, written in dtype
        for j, i in enumerate(indices):
            out[i, :, lb.pad_y:lb.pad_y + lb.resized_h, lb.pad_x:lb.pad_x + lb.resized_w] = x[j]
    return out, boxes


@functools.lru_cache(maxsize=8)
def _normalisers(mean: tuple[float, ...], std: tuple[float, ...], device: str
                 ) -> tuple[Tensor, Tensor]:
    """``[3, 1, 1]`` mean and 1/std in 0-255 units on ``device``, made once (no host-to-device
    copy per frame)."""
    with torch.inference_mode(False):
        mean_t = torch.tensor(mean, device=device).view(3, 1, 1) * 255.0
        inv_std = 1.0 / (torch.tensor(std, device=device).view(3, 1, 1) * 255.0)
    return mean_t, inv_std


@functools.cache
def have_opencv() -> bool:
    """OpenCV present (it is a dependency; a bare GPU machine running scripts/gpu_check.sh may
    lack it, and the CPU frames of its training check then take the torch path)."""
    return importlib.util.find_spec("cv2") is not None


class PinnedUploader:
    """Uploads same-size uint8 frames as one ``[B, H, W, 3]`` tensor on ``device``.

    The frames are copied into a page-locked host buffer (one per ``(B, H, W)``, reused) and
    sent with one asynchronous copy; an event recorded after the copy makes the next use of that
    buffer wait until the device has read it. ``pin=False`` (any non-CUDA device) keeps the same
    buffering with ordinary memory, so the logic runs anywhere.
    """

    def __init__(self, device: torch.device | str, pin: bool | None = None,
                 max_buffers: int = 4) -> None:
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda" if pin is None else pin
        self.max_buffers = max_buffers
        self._buffers: dict[tuple[int, ...], tuple[Tensor, object | None]] = {}
        self._lock = threading.Lock()
        self.allocations = 0

    def upload(self, frames: Sequence[np.ndarray]) -> Tensor:
        shape = (len(frames), *frames[0].shape)
        with self._lock:
            host, done = self._buffers.pop(shape, (None, None))
            if host is None:
                if len(self._buffers) >= self.max_buffers:
                    self._buffers.pop(next(iter(self._buffers)))
                host = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin)
                self.allocations += 1
            if done is not None:
                done.synchronize()  # type: ignore[attr-defined]  # the last copy has read it
            view = host.numpy()
            for j, f in enumerate(frames):
                view[j] = f
            dev = host.to(self.device, non_blocking=self.pin, copy=True)
            event = None
            if self.pin:
                event = torch.cuda.Event()
                event.record(torch.cuda.current_stream(self.device))
            self._buffers[shape] = (host, event)
        return dev


_UPLOADERS: dict[str, PinnedUploader] = {}


def uploader(device: torch.device) -> PinnedUploader:
    """The process's uploader for ``device`` (pinned buffers are costly to allocate)."""
    key = str(device)
    if key not in _UPLOADERS:
        _UPLOADERS[key] = PinnedUploader(device)
    return _UPLOADERS[key]


def _letterbox_cpu(frames: Sequence[np.ndarray | Tensor], boxes: Sequence[Letterbox],
                   out: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> None:
    """The CPU path for uint8 frames: OpenCV's bilinear resize of the uint8 pixels (the same
    half-pixel geometry as torch's ``align_corners=False``, within one grey level) and the
    normalisation written straight into ``out``, one thread each. Measured at 640x480 ->
    320x240: 0.3 ms, against 0.6 ms in torch and 4.8 ms p90 for torch's two threads while a
    camera driver shares the two cores."""
    import cv2

    mean_a = (np.asarray(mean, np.float32) * 255.0)[:, None, None]
    inv_a = (1.0 / (np.asarray(std, np.float32) * 255.0))[:, None, None]
    for i, (frame, lb) in enumerate(zip(frames, boxes)):
        img = frame.numpy() if isinstance(frame, Tensor) else frame
        if (lb.resized_h, lb.resized_w) != img.shape[:2]:
            img = cv2.resize(np.ascontiguousarray(img), (lb.resized_w, lb.resized_h),
                             interpolation=cv2.INTER_LINEAR)
        dst = out[i, :, lb.pad_y:lb.pad_y + lb.resized_h, lb.pad_x:lb.pad_x + lb.resized_w]
        np.subtract(img.transpose(2, 0, 1), mean_a, out=dst, casting="unsafe")
        dst *= inv_a

"""DINO's multi-crop views of one uint8 RGB frame, in numpy + OpenCV (fast on a CPU).

Two global views (``global_scale`` of the frame area, ``global_size`` pixels square) and
``local_crops`` local views (``local_scale``, ``local_size``), each with a random resized crop,
horizontal flip, colour jitter, grayscale, Gaussian blur and (second global view) solarisation,
then normalised with the model's mean/std. Every random draw comes from a generator seeded by
the sample's seed, so a resumed run sees the same views. With ``attention_crops`` > 0 and a
frame's attention map (``dino.attention_crops``), that fraction of the local crops is centred
on a point drawn from the map instead of placed uniformly. With ``dense_weight`` > 0 the list
ends with a ``[2, 5]`` tensor: where each global view came from (x, y, w, h in frame pixels,
flipped), for ``dino.dense``; with ``region_weight`` > 0 it is ``[2 + local_crops, 5]``, the
local crops' too, for ``dino.region``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor


class MultiCrop:
    """``MultiCrop(opts, mean, std)(frame, seed[, prior])`` -> list of ``[3, S, S]`` float
    tensors (global views first). ``opts`` is the resolved ``cfg["pretrain"]`` section;
    ``prior`` is ``(attention map, cell side in pixels)`` from ``AttentionPriors``, or None."""

    def __init__(self, opts: dict, mean: Sequence[float], std: Sequence[float]):
        self.global_size = int(opts["global_size"])
        self.local_size = int(opts["local_size"])
        self.global_scale = tuple(float(v) for v in opts["global_scale"])
        self.local_scale = tuple(float(v) for v in opts["local_scale"])
        self.local_crops = int(opts["local_crops"])
        self.attention_crops = float(opts.get("attention_crops", 0.0))
        self.aug = dict(opts["augment"])
        self.local_geometry = float(opts.get("region_weight") or 0.0) > 0
        self.geometry = float(opts.get("dense_weight") or 0.0) > 0 or self.local_geometry
        self.mean = np.asarray(mean, np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, np.float32).reshape(1, 1, 3)

    @property
    def n_views(self) -> int:
        """Image views per frame (the geometry tensor, when there is one, is not a view)."""
        return 2 + self.local_crops

    def __call__(self, frame: np.ndarray, seed: int,
                 prior: tuple[np.ndarray, float] | None = None) -> list[Tensor]:
        rng = np.random.default_rng(seed)
        a = self.aug
        blur_g, sol_g = list(a["blur_global"]), list(a["solarize_global"])
        views, geometry = [], []
        for i in range(2):
            view, geom = self.view_and_box(frame, rng, self.global_size, self.global_scale,
                                           float(blur_g[i]), float(sol_g[i]))
            views.append(view)
            geometry.append(geom)
        guide = prior if self.attention_crops > 0 else None
        for _ in range(self.local_crops):
            centre = guide if guide is not None and rng.random() < self.attention_crops else None
            view, geom = self.view_and_box(frame, rng, self.local_size, self.local_scale,
                                           float(a["blur_local"]), 0.0, centre)
            views.append(view)
            if self.local_geometry:
                geometry.append(geom)
        if self.geometry:
            views.append(torch.tensor(geometry, dtype=torch.float32))
        return views

    def view(self, frame: np.ndarray, rng: np.random.Generator, size: int,
             scale: tuple[float, float], blur_p: float, solarize_p: float,
             prior: tuple[np.ndarray, float] | None = None) -> Tensor:
        return self.view_and_box(frame, rng, size, scale, blur_p, solarize_p, prior)[0]

    def view_and_box(self, frame: np.ndarray, rng: np.random.Generator, size: int,
                     scale: tuple[float, float], blur_p: float, solarize_p: float,
                     prior: tuple[np.ndarray, float] | None = None
                     ) -> tuple[Tensor, list[float]]:
        """The view and ``[x, y, w, h, flipped]``, its crop in frame pixels."""
        a = self.aug
        x0, y0, w, h = random_resized_box(frame.shape[1], frame.shape[0], scale, rng)
        if prior is not None:  # same size, centred on a point drawn from the attention map
            from vit_perception.dino.attention_crops import centred_box

            x0, y0, w, h = centred_box(prior[0], prior[1], frame.shape[1], frame.shape[0],
                                       w, h, rng)
        crop = frame[y0:y0 + h, x0:x0 + w]
        interp = cv2.INTER_AREA if w > size and h > size else cv2.INTER_LINEAR
        img = cv2.resize(np.ascontiguousarray(crop), (size, size),
                         interpolation=interp).astype(np.float32) / 255.0
        flipped = rng.random() < float(a["hflip"])
        if flipped:
            img = img[:, ::-1]
        if rng.random() < float(a["color_jitter"]):
            img = color_jitter(img, rng, float(a["brightness"]), float(a["contrast"]),
                               float(a["saturation"]), float(a["hue"]))
        if rng.random() < float(a["grayscale"]):
            img = np.repeat(gray(img)[..., None], 3, axis=2)
        if rng.random() < blur_p:
            lo, hi = (float(v) for v in a["blur_sigma"])
            sigma = rng.uniform(lo, hi) * size / 224.0  # sigmas are quoted for 224-pixel views
            img = cv2.GaussianBlur(np.ascontiguousarray(img), (0, 0), max(sigma, 1e-3))
        if rng.random() < solarize_p:
            img = np.where(img >= 0.5, 1.0 - img, img)
        img = (img - self.mean) / self.std
        view = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))
        return view, [float(x0), float(y0), float(w), float(h), float(flipped)]


def random_resized_box(width: int, height: int, scale: tuple[float, float],
                       rng: np.random.Generator, ratio: tuple[float, float] = (3 / 4, 4 / 3)
                       ) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box ``(x, y, w, h)``: area fraction in ``scale``,
    log-uniform aspect ratio; a centre crop of the frame after 10 misses."""
    area = width * height
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        r = math.exp(rng.uniform(*log_r))
        w = int(round(math.sqrt(target * r)))
        h = int(round(math.sqrt(target / r)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side, side


def gray(img: np.ndarray) -> np.ndarray:
    return img @ np.asarray([0.299, 0.587, 0.114], np.float32)


def color_jitter(img: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float,
                 saturation: float, hue: float) -> np.ndarray:
    """Brightness, contrast, saturation and hue changes (torchvision's factors) in random order
    on a float ``[H, W, 3]`` image in [0, 1]."""
    for op in rng.permutation(4):
        if op == 0 and brightness > 0:
            img = img * rng.uniform(1 - brightness, 1 + brightness)
        elif op == 1 and contrast > 0:
            f = rng.uniform(1 - contrast, 1 + contrast)
            img = img * f + (1 - f) * float(gray(img).mean())
        elif op == 2 and saturation > 0:
            f = rng.uniform(1 - saturation, 1 + saturation)
            img = img * f + (1 - f) * gray(img)[..., None]
        elif op == 3 and hue > 0:
            hsv = cv2.cvtColor(np.ascontiguousarray(np.clip(img, 0, 1), dtype=np.float32),
                               cv2.COLOR_RGB2HSV)
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue, hue) * 360.0) % 360.0
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        img = np.clip(img, 0.0, 1.0)
    return img.astype(np.float32, copy=False)


def collate_views(batch: Sequence[list[Tensor]]) -> list[Tensor]:
    """A list (batch) of per-frame view lists -> one ``[B, 3, S, S]`` tensor per view."""
    return [torch.stack([sample[v] for sample in batch]) for v in range(len(batch[0]))]

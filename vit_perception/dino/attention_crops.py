"""Local crops centred where the teacher's [CLS] attention is (``pretrain.attention_crops``).

Why: on robot frames the objects are a few percent of the frame, so DINO's random local crops
mostly show background and self-distillation learns the background. The teacher's [CLS]
attention finds the objects without a label long before the patch features tell them apart
(docs/RESULTS.md, issue 12), so local views centred on it show objects far more often.

``AttentionPriors`` holds one ``[h, w]`` map per frame (the teacher's [CLS] attention, mean
over heads, raised to ``power`` and normalised to sum 1), refreshed by ``refresh`` every few
epochs and saved with the run (``state_dict``), so a resumed run draws the same crops.
``centred_box`` draws a local crop's box around a cell drawn from one map.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn


class AttentionPriors:
    """Per-frame crop-centre distributions (``None`` until the first ``refresh``)."""

    def __init__(self, scale: float = 0.5, power: float = 2.0, batch_size: int = 32):
        self.scale, self.power, self.batch_size = float(scale), float(power), int(batch_size)
        self.maps: list[torch.Tensor] | None = None  # N maps [h, w] float32, each summing to 1
        self.cells: torch.Tensor | None = None  # [N]: a map cell's side in frame pixels
        self.epoch = -1  # the epoch whose start computed them

    def __getitem__(self, index: int) -> tuple[np.ndarray, float] | None:
        """(map, cell side in frame pixels) of frame ``index``; None before the first refresh."""
        if self.maps is None or self.cells is None:
            return None
        return self.maps[index].numpy(), float(self.cells[index])

    @torch.no_grad()
    def refresh(self, backbone: nn.Module, frames: Sequence[np.ndarray], mean, std,
                device: torch.device, epoch: int) -> None:
        """The teacher ``backbone``'s [CLS] attention on every frame, shrunk by ``scale``
        (the global views show the frame at about half its size). Frames of one size run in
        batches of ``batch_size``."""
        was_training = backbone.training
        backbone.eval()
        m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        maps: list[torch.Tensor | None] = [None] * len(frames)
        cells = torch.zeros(len(frames))
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(frames):
            by_shape.setdefault(np.asarray(f).shape, []).append(i)
        try:
            for shape, ids in by_shape.items():
                size = (max(1, round(shape[1] * self.scale)), max(1, round(shape[0] * self.scale)))
                for k in range(0, len(ids), self.batch_size):
                    chunk = ids[k:k + self.batch_size]
                    imgs = np.stack([cv2.resize(np.asarray(frames[i]), size,
                                                interpolation=cv2.INTER_AREA) for i in chunk])
                    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0 - m) / s
                    out = backbone(x.to(device))
                    if "attention" not in out:
                        raise ValueError("pretrain.attention_crops needs a backbone that returns "
                                         "[CLS] attention (a ViT)")
                    att = out["attention"].float().mean(dim=1).clamp_min(0).cpu() ** self.power
                    att = att / att.flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1)
                    cell = out["attention"].shape[-1]  # cols; padded width / cols = patch
                    padded_w = out["padded_size"][1] if "padded_size" in out else size[0]
                    for j, i in enumerate(chunk):
                        maps[i] = att[j]
                        cells[i] = padded_w / cell * shape[1] / size[0]
        finally:
            backbone.train(was_training)
        self.maps = [mp for mp in maps if mp is not None]
        self.cells = cells
        self.epoch = epoch

    def state_dict(self) -> dict:
        return {"maps": self.maps, "cells": self.cells, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        maps = state.get("maps")
        self.maps, self.cells = (list(maps) if maps is not None else None), state.get("cells")
        self.epoch = int(state.get("epoch", -1))


def centred_box(prior: np.ndarray, cell: float, width: int, height: int, w: int, h: int,
                rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A ``w x h`` box ``(x, y, w, h)`` inside a ``width x height`` frame, centred on a point
    drawn from ``prior [rows, cols]`` (a cell with its probability, then uniformly inside it;
    cells are ``cell`` frame pixels square from the top-left), shifted to fit the frame."""
    _rows, cols = prior.shape
    p = np.asarray(prior, np.float64).ravel()
    p = p / p.sum() if p.sum() > 0 else np.full(p.size, 1.0 / p.size)
    r, c = divmod(int(rng.choice(p.size, p=p)), cols)
    cx = min((c + rng.random()) * cell, width)
    cy = min((r + rng.random()) * cell, height)
    x0 = int(round(min(max(cx - w / 2, 0), width - w)))
    y0 = int(round(min(max(cy - h / 2, 0), height - h)))
    return x0, y0, w, h

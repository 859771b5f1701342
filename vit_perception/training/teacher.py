"""The frozen teacher of a distillation run: a detector checkpoint run once per batch in
``torch.inference_mode`` (optionally under autocast), never backpropagated."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def teacher_amp(setting: str | bool | None, device: torch.device) -> torch.dtype | None:
    """``distill.teacher_amp`` -> autocast dtype. ``auto``: bf16 (or fp16) on CUDA, none on the
    CPU; ``bf16`` also on the CPU (fast where the CPU has bf16 units); ``fp16`` CUDA only."""
    from vit_perception.training.optim import amp_dtype

    setting = str(setting).lower()
    if device.type == "cpu":
        return torch.bfloat16 if setting == "bf16" else None
    return amp_dtype(setting, device)


class Teacher:
    """``Teacher(checkpoint, device, amp)``; ``teacher(images [B, 3, H, W])`` -> float32
    ``pred_logits [B, N, K+1]``, ``pred_boxes [B, N, 4]`` (normalised cxcywh of its input) and
    ``features [B, C, h, w]``, as ordinary tensors (safe to use in the student's loss)."""

    def __init__(self, checkpoint: str | Path, device: torch.device, amp: str = "auto"):
        from vit_perception.models.checkpoint import load_checkpoint

        self.path = Path(checkpoint)
        model, _, _, cfg, _ = load_checkpoint(self.path, device)
        self.model = model.eval().requires_grad_(False)
        self.cfg = cfg
        self.classes = list(cfg["classes"])
        self.size = (int(cfg["input"]["width"]), int(cfg["input"]["height"]))
        self.mean, self.std = list(cfg["input"]["mean"]), list(cfg["input"]["std"])
        self.stride = int(self.model.backbone.stride)
        self.channels = int(self.model.backbone.out_channels)
        self.device = device
        self.amp = teacher_amp(amp, device)

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp,
                                                    enabled=self.amp is not None):
            out = self.model(images.to(self.device, non_blocking=True))
            out = {k: out[k].float() for k in ("pred_logits", "pred_boxes", "features")}
        return {k: v.clone() for k, v in out.items()}  # inference tensors -> ordinary ones

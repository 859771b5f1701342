"""Backbone-only models: what ``vit-perception pretrain`` writes as ``RUN_DIR/backbone.pt``.

A backbone-only checkpoint is an ordinary ``models.checkpoint`` file whose config has
``model.backbone_only: true`` and no classes; its weights are ``backbone.*`` (the detector's own
names), so ``train --init backbone.pt`` fills the detector's backbone and keeps its head fresh.
At run time ``BackboneModel`` returns the dense outputs without ``pred_logits`` /
``pred_boxes``: the predictor and the node then run in features-only mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn


def is_backbone_only(cfg: dict | None) -> bool:
    """True for the config of a backbone-only model."""
    return bool(((cfg or {}).get("model") or {}).get("backbone_only"))


class BackboneModel(nn.Module):
    """``images [B, 3, H, W]`` -> ``features [B, C, h, w]``, ``embedding [B, C]``,
    ``attention [B, heads, h, w]`` (no detections)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        out = self.backbone(images)
        return {"features": out["features"], "embedding": out["embedding"],
                "attention": out["attention"]}


def build_backbone_model(cfg: dict) -> BackboneModel:
    """The ``BackboneModel`` of a config (random weights; ``pretrained`` files not loaded)."""
    from vit_perception.models.builder import build_backbone

    size = (int(cfg["input"]["width"]), int(cfg["input"]["height"]))
    return BackboneModel(build_backbone(cfg["model"].get("backbone", {}), size, False))


def load_backbone_checkpoint(path: str | Path, map_location: Any = "cpu"
                             ) -> tuple[BackboneModel, dict]:
    """-> ``(model in eval mode, cfg)`` of a backbone-only checkpoint; ``CheckpointError``
    naming ``path`` when it is unreadable or its weights do not fit its config."""
    from vit_perception.models.checkpoint import CheckpointError, first_line, read_checkpoint

    data = read_checkpoint(path, map_location)
    cfg = data["config"]
    if not is_backbone_only(cfg):
        raise CheckpointError(f"{path}: a detector checkpoint, not a backbone-only one")
    try:
        model = build_backbone_model(cfg)
        model.load_state_dict(data["state_dict"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit its config: "
                              f"{first_line(exc, 300)}") from exc
    return model.eval(), cfg


def checkpoint_is_backbone_only(path: str | Path) -> bool:
    """Whether ``path`` (a ``.pt`` checkpoint) holds a backbone-only model; the tensors are
    memory-mapped, not read. False when it is unreadable (the ordinary loader says why)."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any failure: let load_checkpoint report it
        return False
    return isinstance(data, dict) and is_backbone_only(data.get("config"))

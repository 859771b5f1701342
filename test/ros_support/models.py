"""Small real models for node tests (random weights, seeded)."""

from __future__ import annotations

from pathlib import Path


def tiny_checkpoint(folder: Path) -> Path:
    """The tiny ViT-DETR config with seeded random weights saved as `folder/tiny.pt`."""
    import torch

    from vit_perception.config import available_configs, load_config
    from vit_perception.models.builder import build
    from vit_perception.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    name = next(n for n in available_configs() if "tiny" in n)
    cfg = load_config(name)
    model, _, _ = build(cfg)
    path = folder / "tiny.pt"
    save_checkpoint(path, model, cfg)
    return path


def tiny_backbone_checkpoint(folder: Path) -> Path:
    """A backbone-only checkpoint (what `pretrain` writes as backbone.pt) of the tiny config."""
    import torch

    from vit_perception.config import available_configs, load_config
    from vit_perception.models.backbone_model import build_backbone_model
    from vit_perception.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = load_config(next(n for n in available_configs() if "tiny" in n))
    cfg["model"]["backbone_only"] = True
    cfg["classes"] = []
    path = folder / "backbone.pt"
    save_checkpoint(path, build_backbone_model(cfg), cfg)
    return path

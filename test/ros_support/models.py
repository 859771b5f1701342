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

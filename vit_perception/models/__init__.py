"""Model core: ViT/Swin backbones, DETR head, Hungarian set loss, pre/post-processing.

``build(cfg) -> (model, criterion, postprocessor)``; import submodules for the rest.
"""

from __future__ import annotations


def build(cfg: dict, **kwargs):
    """See ``vit_perception.models.builder.build`` (imported lazily to keep this module light)."""
    from vit_perception.models.builder import build as _build

    return _build(cfg, **kwargs)


__all__ = ["build"]

"""The backbone a probe measures, from what the user names.

- a model config name or YAML: the config's backbone with random weights (seed 0), the baseline;
- a detector checkpoint (``train``'s ``best.pt`` / ``last.pt``): its backbone;
- a backbone-only checkpoint (``pretrain``'s ``backbone.pt``, ``models.backbone_model``), or
  any dict with a resolved ``config`` and the backbone's ``state_dict``;
- DINO / DINOv2 (or timm) ViT weights as published: loaded into ``--config``'s backbone, or,
  without one, into a ViT whose shape is read off the tensors (heads of 64 channels, as every
  DINO and DINOv2 model has).

Every file is read with ``torch.load(weights_only=True)`` (or safetensors).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


class BackboneSpecError(ValueError):
    """``--backbone`` names nothing loadable (the message says what was tried)."""


def _size(cfg: dict, input_size: tuple[int, int] | None) -> dict:
    if input_size:
        cfg = dict(cfg, input=dict(cfg.get("input", {}), width=int(input_size[0]),
                                   height=int(input_size[1])))
    return cfg


def _input_size(cfg: dict) -> tuple[int, int]:
    return int(cfg["input"]["width"]), int(cfg["input"]["height"])


def vit_shape_from_weights(sd: dict[str, torch.Tensor]) -> dict:
    """A ``model.backbone`` config section for a ViT state dict (DINO / DINOv2 key layout)."""
    if "patch_embed.proj.weight" not in sd:
        raise BackboneSpecError("not a ViT state dict (no patch_embed.proj.weight); "
                                "name a matching --config")
    proj = sd["patch_embed.proj.weight"]
    dim = int(proj.shape[0])
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    convs = [k for k in sd if re.fullmatch(r"patch_embed\.stem\.\d+\.weight", k)
             and sd[k].ndim == 4]  # the conv stem: one stride-2 convolution per halving
    # the cnn stem: two convolutions per halving (Sequentials), then two residual ones
    cnn = [k for k in sd if re.fullmatch(r"patch_embed\.stem\.\d+\.0\.weight", k)]
    halvings = len(convs) or len(cnn) // 2
    patch = 2 ** halvings if halvings else int(proj.shape[-1])
    section = {"type": "vit", "patch_size": patch, "embed_dim": dim,
               "depth": depth, "num_heads": max(1, dim // 64),
               "mlp_ratio": float(sd["blocks.0.mlp.fc1.weight"].shape[0]) / dim}
    regs = sd.get("register_tokens", sd.get("reg_token"))
    if regs is not None:
        section["num_registers"] = int(regs.shape[1])
    if convs:
        section["stem"] = "conv"
    elif cnn:
        section["stem"] = "cnn"
    if "blocks.0.ls1.gamma" in sd:
        section["layer_scale"] = 1e-5
    return section


def load_backbone(spec: str | Path, config: str | None = None,
                  input_size: tuple[int, int] | None = None) -> tuple[nn.Module, dict]:
    """(backbone in eval mode, resolved config) for ``spec``; see the module docstring.

    ``config`` (a name or YAML) is needed only for raw weights whose shape cannot be read off
    the tensors (Swin); ``input_size`` (width, height) overrides the config's input size.
    """
    from vit_perception.config import deep_merge, load_config
    from vit_perception.defaults import DEFAULTS
    from vit_perception.models.builder import build_backbone

    path = Path(spec)
    if not path.exists() and path.suffix in (".pt", ".pth", ".ckpt", ".safetensors"):
        raise BackboneSpecError(f"{path}: file not found")
    if not path.exists() or path.suffix in (".yaml", ".yml"):  # a config: random weights
        cfg = _size(load_config(str(spec)), input_size)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = build_backbone(cfg["model"]["backbone"], _input_size(cfg), False)
        return net.eval(), cfg
    data = None
    if path.suffix != ".safetensors":
        from vit_perception.models.checkpoint import FORMAT, load_checkpoint

        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - unreadable files get one clear message
            from vit_perception.models.checkpoint import load_error

            raise BackboneSpecError(str(load_error(path, exc, "backbone file"))) from exc
        if isinstance(data, dict) and data.get("format") == FORMAT:
            from vit_perception.models.backbone_model import (
                is_backbone_only,
                load_backbone_checkpoint,
            )

            if is_backbone_only(data.get("config")):  # pretrain's backbone.pt
                bmodel, cfg = load_backbone_checkpoint(path)
                return bmodel.backbone.eval(), _size(cfg, input_size)
            model, _criterion, _post, cfg, _extra = load_checkpoint(path)  # a detector
            cfg = _size(cfg, input_size)
            return model.backbone.eval(), cfg
        if isinstance(data, dict) and isinstance(data.get("config"), dict):  # config + weights
            cfg = _size(data["config"], input_size)
            state = data.get("backbone", data.get("state_dict"))
            if not isinstance(state, dict):
                raise BackboneSpecError(f"{path}: has a config but no backbone state_dict")
            state = {k.removeprefix("backbone."): v for k, v in state.items()}
            net = build_backbone(cfg["model"]["backbone"], _input_size(cfg), False)
            missing, unexpected = net.load_state_dict(state, strict=False)
            if missing:
                raise BackboneSpecError(f"{path}: backbone weights lack {', '.join(missing[:5])}"
                                        f"{' ...' if len(missing) > 5 else ''}")
            if unexpected:
                log.info("%s: ignored %d tensors that are not the backbone's", path,
                         len(unexpected))
            return net.eval(), cfg
    # published weights (DINO / DINOv2 / timm ViT, torchvision Swin)
    from vit_perception.models.weights import read_state_dict

    if config:
        cfg = _size(load_config(config), input_size)
    else:
        sd = read_state_dict(path)
        cfg = deep_merge(DEFAULTS, {"name": path.stem, "model": {
            "backbone": vit_shape_from_weights(sd)}})
        cfg = _size(cfg, input_size)
    section = dict(cfg["model"]["backbone"], pretrained=str(path))
    cfg["model"]["backbone"] = section
    net = build_backbone(section, _input_size(cfg), True)
    return net.eval(), cfg


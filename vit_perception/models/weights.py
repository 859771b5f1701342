"""Load pretrained backbone weights from files given as paths (the network is never used).

- ViT: DINO (facebookresearch/dino) and DINOv2 checkpoint files as published, also wrapped in
  ``teacher``/``student``/``model``/``state_dict`` with ``module.``/``backbone.`` prefixes; the
  positional embedding is interpolated to the configured grid, ``mask_token`` and ``head.*`` are
  ignored (unused for detection). timm's ``reg_token`` is accepted for ``register_tokens``.
- Swin: torchvision state-dict files (``swin_t-*.pth``); ``head.*`` is ignored.

Files are read with ``torch.load(weights_only=True)`` or safetensors, never by unpickling code.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from vit_perception.models.vit import ViTBackbone, interpolate_pos_embed

log = logging.getLogger(__name__)
WRAPPERS = ("teacher", "student", "model", "state_dict", "module")
PREFIXES = ("module.", "backbone.", "encoder.")


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable, or does not fit the backbone at all."""


@dataclass
class LoadReport:
    """What loading a weights file into a module did; ``str()`` is a readable summary."""

    path: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.path}: loaded {self.loaded} tensors, {len(self.missing)} missing, "
                 f"{len(self.unexpected)} unexpected, {len(self.ignored)} ignored"]
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("ignored", self.ignored)):
            if keys:
                lines.append(f"  {name}: {', '.join(keys[:20])}"
                             + (f" ... (+{len(keys) - 20})" if len(keys) > 20 else ""))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` or torch file, unwrapped and with common prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one clear error
        raise WeightsError(f"{path}: cannot read weights: {exc}") from exc
    while isinstance(sd, dict) and not any(isinstance(v, Tensor) for v in sd.values()):
        key = next((k for k in WRAPPERS if isinstance(sd.get(k), dict)), None)
        if key is None:
            raise WeightsError(f"{path}: no state dict found (top-level keys: {list(sd)[:10]})")
        sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, got {type(sd).__name__}")
    out = {}
    for k, v in sd.items():
        for prefix in PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix):]
        if isinstance(v, Tensor):
            out[k] = v
    return out


def _load(module: nn.Module, sd: dict[str, Tensor], report: LoadReport) -> LoadReport:
    own = module.state_dict()
    for k in list(sd):
        if k in own and own[k].shape != sd[k].shape:
            report.notes.append(f"{k}: shape {tuple(sd[k].shape)} != {tuple(own[k].shape)}")
            del sd[k]
            report.unexpected.append(k)
    result = module.load_state_dict(sd, strict=False)
    report.missing += list(result.missing_keys)
    report.unexpected += list(result.unexpected_keys)
    report.loaded = len(sd) - len(result.unexpected_keys)
    if report.loaded == 0:
        raise WeightsError(f"nothing in the file fits the backbone\n{report}")
    (log.warning if report.missing or report.unexpected else log.info)("%s", report)
    return report


def load_vit_weights(backbone: ViTBackbone, path: str | Path) -> LoadReport:
    """Load a DINO / DINOv2 (or timm) ViT file into ``backbone``; returns the report."""
    sd, report = read_state_dict(path), LoadReport(str(path))
    if "reg_token" in sd:
        sd["register_tokens"] = sd.pop("reg_token")
    for k in list(sd):
        if k == "mask_token" or k.startswith(("head.", "fc_norm.", "dino_head.")):
            report.ignored.append(k)
            del sd[k]
    if "pos_embed" in sd:
        pos = sd["pos_embed"]
        n = pos.shape[1]
        side = math.isqrt(n - 1)
        if side * side != n - 1 and math.isqrt(n) ** 2 == n:  # timm layout: no [CLS] position
            side = math.isqrt(n)
            pos = torch.cat((pos.new_zeros(1, 1, pos.shape[-1]), pos), dim=1)
            report.notes.append("pos_embed had no [CLS] position; zeros used")
        if side * side == pos.shape[1] - 1 and (side, side) != backbone.grid:
            pos = interpolate_pos_embed(pos, (side, side), backbone.grid)
            report.notes.append(f"pos_embed interpolated {side}x{side} -> "
                                f"{backbone.grid[0]}x{backbone.grid[1]}")
        sd["pos_embed"] = pos
    return _load(backbone, sd, report)


def load_swin_weights(backbone: nn.Module, path: str | Path) -> LoadReport:
    """Load a torchvision Swin state-dict file into a ``SwinBackbone``; returns the report."""
    sd, report = read_state_dict(path), LoadReport(str(path))
    for k in [k for k in sd if k.startswith("head.")]:
        report.ignored.append(k)
        del sd[k]
    return _load(backbone, sd, report)

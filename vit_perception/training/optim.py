"""AdamW with a lower backbone learning rate and no weight decay on norms, biases and tokens;
mixed precision settings (CUDA only)."""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

NO_DECAY_NAMES = ("pos_embed", "cls_token", "register_tokens", "query_content", "query_ref",
                  "relative_position_bias_table", "lora_")


def no_decay(name: str, param: torch.Tensor, extra: tuple[str, ...] = ()) -> bool:
    """Whether weight decay skips this parameter: norms, biases (1-D) and tokens/tables named in
    ``NO_DECAY_NAMES`` (plus ``extra``)."""
    return param.ndim <= 1 or any(k in name for k in (*NO_DECAY_NAMES, *extra))


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float,
                 weight_decay: float) -> list[dict]:
    """Up to four groups (backbone / head x decay / no decay) of the trainable parameters."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        backbone = name.startswith("backbone.")
        groups.setdefault((backbone, no_decay(name, p)), []).append(p)
    out = []
    for (backbone, skip_decay), params in sorted(groups.items()):
        base = lr * (backbone_lr_mult if backbone else 1.0)
        out.append({"params": params, "lr": base, "base_lr": base,
                    "weight_decay": 0.0 if skip_decay else weight_decay,
                    "name": f"{'backbone' if backbone else 'head'}"
                            f"{'_no_decay' if skip_decay else ''}"})
    if not out:
        raise ValueError("no trainable parameters")
    return out


def build_optimizer(model: nn.Module, opts: dict, pretrained: bool = False
                    ) -> torch.optim.AdamW:
    """AdamW over ``param_groups``; ``backbone_lr_mult: None`` means 0.1 for a ``pretrained``
    backbone and 1.0 for a random one."""
    mult = opts.get("backbone_lr_mult")
    if mult is None and pretrained:
        log.info("backbone learning rate 0.1x the head's (pretrained weights; "
                 "--set train.backbone_lr_mult=1.0 trains it at the full rate)")
    mult = (0.1 if pretrained else 1.0) if mult is None else float(mult)
    groups = param_groups(model, float(opts["lr"]), mult, float(opts["weight_decay"]))
    return torch.optim.AdamW(groups, lr=float(opts["lr"]), betas=tuple(opts["betas"]))


def amp_dtype(setting: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: None on CPU or with ``off``; ``auto`` picks bf16 where supported."""
    setting = str(setting).lower()
    if device.type != "cuda" or setting in ("off", "false", "none", "fp32", "0"):
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16

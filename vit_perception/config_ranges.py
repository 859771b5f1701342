"""The values a run option may take, so ``--set pretrain.local_crops=-2`` is refused by name.

``config_keys`` checks that a key exists and that its value is of the right kind (a number, a
list); this module checks that the number makes sense: ``check_ranges(cfg)`` raises
``ConfigError`` naming the first option of the ``train``, ``pretrain`` or ``distill`` section
outside its range (``None`` passes: it means "off" or "the default" wherever a key allows it).
Keys not listed here take any value of their kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _whole(v: Any) -> bool:
    return _number(v) and float(v).is_integer()


def _pair(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_number(x) for x in v)


# (what the message says the value must be, the test)
Rule = tuple[str, Callable[[Any], bool]]
POSITIVE: Rule = ("more than 0", lambda v: _number(v) and v > 0)
NON_NEGATIVE: Rule = ("0 or more", lambda v: _number(v) and v >= 0)
FRACTION: Rule = ("between 0 and 1", lambda v: _number(v) and 0 <= v <= 1)
COUNT: Rule = ("a whole number, 1 or more", lambda v: _whole(v) and v >= 1)
COUNT0: Rule = ("a whole number, 0 or more", lambda v: _whole(v) and v >= 0)
SCALES: Rule = ("a pair [low, high] with 0 < low <= high <= 1",
                lambda v: _pair(v) and 0 < v[0] <= v[1] <= 1)
PROBABILITIES: Rule = ("a list of probabilities between 0 and 1",
                       lambda v: isinstance(v, (list, tuple))
                       and all(_number(x) and 0 <= x <= 1 for x in v))
POSITIVE_PAIR: Rule = ("a pair [low, high] with 0 < low <= high",
                       lambda v: _pair(v) and 0 < v[0] <= v[1])
SHARE: Rule = ("more than 0 and at most 1", lambda v: _number(v) and 0 < v <= 1)

_AUGMENT_TRAIN = {"hflip": FRACTION, "crop": FRACTION, "crop_min_scale": SHARE,
                  "zoom_out": FRACTION, "photometric": FRACTION,
                  "zoom_out_max": ("1 or more", lambda v: _number(v) and v >= 1)}

RANGES: dict[str, dict[str, Any]] = {
    "train": {
        "epochs": COUNT, "batch_size": COUNT, "workers": COUNT0, "lr": POSITIVE,
        "backbone_lr_mult": NON_NEGATIVE, "weight_decay": NON_NEGATIVE, "clip_grad": NON_NEGATIVE,
        "warmup_steps": COUNT0, "min_lr_ratio": FRACTION, "ema_decay": FRACTION,
        "ema_warmup": NON_NEGATIVE, "repeat_threshold": NON_NEGATIVE, "samples_per_epoch": COUNT,
        "lora_rank": COUNT0, "lora_alpha": POSITIVE, "augment": _AUGMENT_TRAIN,
        "eval_every": COUNT0, "eval_every_steps": COUNT0, "eval_every_s": NON_NEGATIVE,
        "eval_max_fraction": FRACTION, "eval_score_threshold": FRACTION,
        "eval_max_detections": COUNT, "checkpoint_every_steps": COUNT0,
        "checkpoint_every_s": NON_NEGATIVE, "cache_max_mb": NON_NEGATIVE, "threads": COUNT0,
        "log_every_steps": COUNT,
    },
    "pretrain": {
        "epochs": COUNT, "batch_size": COUNT, "workers": COUNT0, "samples_per_epoch": COUNT,
        "global_size": COUNT, "local_size": COUNT, "global_scale": SCALES,
        "local_scale": SCALES, "local_crops": COUNT0, "attention_crops": FRACTION,
        "attention_every": COUNT, "attention_scale": SHARE,
        "attention_power": POSITIVE,
        "augment": {"hflip": FRACTION, "color_jitter": FRACTION, "brightness": NON_NEGATIVE,
                    "contrast": NON_NEGATIVE, "saturation": NON_NEGATIVE,
                    "hue": ("between 0 and 0.5", lambda v: _number(v) and 0 <= v <= 0.5),
                    "grayscale": FRACTION, "blur_global": PROBABILITIES,
                    "blur_local": FRACTION, "blur_sigma": POSITIVE_PAIR,
                    "solarize_global": PROBABILITIES},
        "out_dim": COUNT, "hidden_dim": COUNT, "bottleneck_dim": COUNT, "head_layers": COUNT,
        "freeze_last_layer_steps": COUNT0, "student_temp": POSITIVE, "teacher_temp": POSITIVE,
        "teacher_temp_warmup_start": POSITIVE, "teacher_temp_warmup_steps": COUNT0,
        "center_momentum": FRACTION, "momentum_start": FRACTION, "momentum_end": FRACTION,
        "centering": ("ema or sinkhorn", lambda v: v in ("ema", "sinkhorn")),
        "sinkhorn_iterations": COUNT, "koleo_weight": NON_NEGATIVE,
        "lr": POSITIVE, "min_lr": NON_NEGATIVE, "warmup_steps": COUNT0,
        "weight_decay": NON_NEGATIVE, "weight_decay_end": NON_NEGATIVE,
        "clip_grad": NON_NEGATIVE, "ibot_weight": NON_NEGATIVE, "ibot_out_dim": COUNT,
        "ibot_mask_ratio": ("a pair [low, high] with 0 <= low <= high < 1",
                            lambda v: _pair(v) and 0 <= v[0] <= v[1] < 1),
        "ibot_mask_prob": FRACTION, "pixel_weight": NON_NEGATIVE,
        "dense_weight": NON_NEGATIVE, "region_weight": NON_NEGATIVE,
        "dino_weight": NON_NEGATIVE, "lora_rank": COUNT0,
        "lora_alpha": POSITIVE, "unfreeze_blocks": COUNT0,
        "collapse_entropy_low": FRACTION, "collapse_entropy_high": FRACTION,
        "collapse_kl": NON_NEGATIVE, "collapse_patience": COUNT0, "collapse_share": FRACTION,
        "collapse_after_steps": COUNT0, "eval_every": COUNT, "checkpoint_every_s": NON_NEGATIVE,
        "checkpoint_every_steps": COUNT0, "cache_max_mb": NON_NEGATIVE, "threads": COUNT0,
        "log_every_steps": COUNT,
    },
    "distill": {
        "temperature": POSITIVE, "teacher_threshold": FRACTION,
        "teacher_ignore_threshold": FRACTION,
        "teacher_nms_iou": SHARE,
        "loss_gt": NON_NEGATIVE, "loss_kd_ce": NON_NEGATIVE, "loss_kd_noobj": NON_NEGATIVE,
        "kd_noobj_coef": NON_NEGATIVE, "loss_kd_bbox": NON_NEGATIVE,
        "loss_kd_giou": NON_NEGATIVE, "loss_feat_cos": NON_NEGATIVE,
        "loss_feat_l1": NON_NEGATIVE, "translator": {"hidden_dim": COUNT, "kernel_size": (
            "an odd whole number, 1 or more", lambda v: _whole(v) and v >= 1 and v % 2 == 1)},
        "unlabelled_repeat": COUNT,
    },
}


def check_ranges(cfg: dict, where: str = "") -> None:
    """Raise ``ConfigError`` for the first ``train``/``pretrain``/``distill`` value in ``cfg``
    outside its range. ``where`` (a file name) is put in front of the message."""
    from vit_perception.config import ConfigError

    def walk(values: Any, rules: dict, prefix: str) -> None:
        if not isinstance(values, dict):
            return
        for key, rule in rules.items():
            if key not in values or values[key] is None:
                continue
            value = values[key]
            if isinstance(rule, dict):
                walk(value, rule, f"{prefix}{key}.")
                continue
            what, ok = rule
            if not ok(value):
                head = f"{where}: " if where else ""
                raise ConfigError(f"{head}{prefix}{key} must be {what}, not {value!r}")

    for section, rules in RANGES.items():
        walk(cfg.get(section), rules, f"{section}.")

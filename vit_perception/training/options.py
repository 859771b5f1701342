"""Training hyper-parameters: the config's ``train:`` section merged over these defaults.

Every key can be set in a model config's ``train:`` section or with ``--set train.KEY=VALUE``;
the command-line flags (``--epochs``, ``--batch-size``, ...) write into the same section, so the
resolved ``RUN_DIR/config.yaml`` holds exactly what the run used.
"""

from __future__ import annotations

import copy

TRAIN_DEFAULTS: dict = {
    "epochs": 60,
    "batch_size": 8,  # per process (under torchrun the global batch is world_size times this)
    "workers": 0,
    "persistent_workers": True,  # loader workers kept across epochs (False: restarted each)
    "lr": 2.0e-4,  # head (and everything not in the backbone)
    # backbone lr = lr * backbone_lr_mult; None: 0.1 from pretrained weights (--init or
    # model.backbone.pretrained), 1.0 from random weights (a random backbone must learn fast)
    "backbone_lr_mult": None,
    "weight_decay": 1.0e-4,  # not applied to norms, biases, tokens and position embeddings
    "betas": [0.9, 0.999],
    "clip_grad": 0.1,  # max global gradient norm (DETR's value); 0 = off
    "warmup_steps": 50,
    "min_lr_ratio": 0.05,  # cosine decays to lr * min_lr_ratio
    "amp": "auto",  # auto (bf16 where supported, else fp16; CUDA only) | bf16 | fp16 | off
    "ema_decay": 0.999,  # 0 = no EMA (validation then uses the raw weights)
    "ema_warmup": 10.0,  # decay ramps as min(decay, (1 + n) / (ema_warmup + n))
    "sampler": "repeat_factor",  # repeat_factor | shuffle | replacement
    "repeat_threshold": 0.3,  # LVIS repeat-factor threshold on class frame frequency
    "samples_per_epoch": None,  # None: one pass over the (repeat-factor expanded) data
    "freeze_backbone": False,
    "lora_rank": 0,  # >0: LoRA on the ViT attention qkv/proj, backbone otherwise frozen
    "lora_alpha": None,  # None: equal to the rank (scale 1)
    "augment": {
        "hflip": 0.5,
        "crop": 0.5,  # probability of a random crop that keeps every box whole
        "crop_min_scale": 0.4,  # smallest crop side as a fraction of the frame side
        "zoom_out": 0.2,  # probability of placing the frame on a larger mean-colour canvas
        "zoom_out_max": 1.6,
        "photometric": 0.5,
    },
    # where augmentation runs: cpu (per sample in the loader workers), device (the loader
    # letterboxes uint8 frames, training/batch_augment.py warps and jitters the batch on the
    # training device), auto (device when training on CUDA, else cpu)
    "augment_device": "auto",
    "eval_every": 1,  # epochs (0 = not by epochs); see training/eval_schedule.py
    "eval_every_steps": 0,  # also validate every N optimiser steps (0 = off)
    "eval_every_s": 0.0,  # also validate every N seconds of training (0 = off)
    # a scheduled validation waits while validating so far (plus its last duration) would
    # exceed this share of the training time (0 = no limit); the final one always runs
    "eval_max_fraction": 0.1,
    "eval_score_threshold": 0.01,
    "eval_max_detections": 100,
    "checkpoint_every_steps": 0,  # 0 = off; last.pt is also written every checkpoint_every_s
    "checkpoint_every_s": 120.0,
    "cache_max_mb": 4096,  # decoded frames above this go to a disk cache (RUN_DIR/cache)
    "seed": 0,
    "ddp_find_unused": False,  # set True for a model with parameters some steps do not use
    "threads": 0,  # torch CPU threads; 0 = leave torch's default (1 is faster on a busy CPU)
    "log_every_steps": 10,
}


def train_options(cfg: dict) -> dict:
    """``cfg["train"]`` merged over ``TRAIN_DEFAULTS`` (nested ``augment`` merged too)."""
    from vit_perception.config import deep_merge

    return deep_merge(copy.deepcopy(TRAIN_DEFAULTS), cfg.get("train") or {})


AUGMENT_DEVICES = ("auto", "cpu", "device")


def augment_on_device(value: str, device) -> bool:
    """``train.augment_device`` resolved for a run on ``device`` (a ``torch.device``)."""
    from vit_perception.config import ConfigError

    if value not in AUGMENT_DEVICES:
        raise ConfigError(f"train.augment_device: {value!r} is not one of "
                         f"{', '.join(AUGMENT_DEVICES)}")
    return value == "device" or (value == "auto" and device.type == "cuda")

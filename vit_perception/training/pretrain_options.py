"""Self-distillation (DINO) hyper-parameters: the config's ``pretrain:`` section over defaults.

Every key can be set in a model config's ``pretrain:`` section or with
``--set pretrain.KEY=VALUE``; the command-line flags of ``vit-perception pretrain`` (``--epochs``,
``--batch-size``, ``--lora``, ...) write into the same section, so the resolved
``RUN_DIR/config.yaml`` holds exactly what the run used.

The defaults are chosen for the tiny configs on a small CPU (few prototypes, small crops, a
fast-moving teacher); the DINO paper's ViT-S/16 values are given in the comments.
"""

from __future__ import annotations

import copy

PRETRAIN_DEFAULTS: dict = {
    "epochs": 100,
    "batch_size": 16,  # frames per process per step (each gives 2 global + local_crops crops)
    "workers": 0,
    "samples_per_epoch": None,  # None: one pass over the frames
    # multi-crop (sizes are pixels, square; scales are fractions of the frame area)
    # small views, twice the steps per CPU minute of 96/48-pixel ones. The k-NN figures that
    # chose them (17-42%) came from a probe bag of 5-20-frame scenes (~25 distinct marks per
    # half: noise). On a one-frame-a-scene probe bag every recipe tried scores chance after 15
    # one-core minutes (k-NN 0.08-0.12: these defaults 0.099, views at the frame's own scale
    # 0.105, random weights 0.099); see docs/RESULTS.md, issue 12
    "global_size": 64,  # DINO: 224
    "local_size": 32,  # DINO: 96
    "global_scale": [0.1, 0.5],  # DINO: [0.4, 1.0] (0.25 with many local crops)
    "local_scale": [0.02, 0.1],  # DINO: [0.05, 0.4]
    "local_crops": 4,  # DINO: 6-10
    # local crops centred where the teacher's [CLS] attention is (dino/attention_crops.py), so
    # local views show the few-percent-of-the-frame objects instead of background; 0 = off
    "attention_crops": 0.0,  # fraction of the local crops centred on a point of the map
    "attention_every": 2,  # epochs between refreshes of the maps (the first at epoch 1)
    "attention_scale": 0.5,  # frames shrunk by this for the attention pass (~ global views)
    "attention_power": 2.0,  # the map raised to this power (sharper than the attention)
    "augment": {
        "hflip": 0.5,
        "color_jitter": 0.8,  # probability; strengths below
        "brightness": 0.4,
        "contrast": 0.4,
        "saturation": 0.2,
        "hue": 0.1,
        "grayscale": 0.2,
        "blur_global": [1.0, 0.1],  # blur probability for the first and second global view
        "blur_local": 0.5,
        "blur_sigma": [0.1, 2.0],
        "solarize_global": [0.0, 0.2],  # solarisation probability per global view
    },
    # projection head (DINOHead): MLP -> bottleneck -> L2 norm -> weight-normalised prototypes
    "out_dim": 512,  # K prototypes; DINO: 65536 (4096 here: no better, flatter teacher)
    "hidden_dim": 512,  # DINO: 2048
    "bottleneck_dim": 128,  # DINO: 256
    "head_layers": 3,
    "norm_last_layer": True,  # weight-norm gain fixed at 1 (DINO's stable choice for ViT)
    "freeze_last_layer_steps": 100,  # last layer frozen this many steps (DINO: first epoch)
    # temperatures: teacher sharper than the student, warmed up from teacher_temp_warmup_start
    "student_temp": 0.1,
    "teacher_temp": 0.04,  # DINO: 0.04-0.07 (0.07 here: teacher near uniform in 15 min)
    "teacher_temp_warmup_start": 0.04,
    "teacher_temp_warmup_steps": 300,
    "center_momentum": 0.9,
    # DINOv2's additions (dino/sinkhorn.py): the teacher's outputs balanced over the batch by
    # Sinkhorn-Knopp ("sinkhorn") in place of the EMA centre ("ema"), for DINO and iBOT; and
    # the KoLeo regulariser on the student's [CLS] of each global view (DINOv2: 0.1; 0 = off).
    # Off by default: together, with grey views, they are the first setting whose [CLS] crop
    # embedding tells the photo marks apart above random weights (crop k-NN +7-12 points in 15
    # one-core minutes, +11 in 30 on photo frames), but the box-pooled k-NN stays at
    # chance (docs/RESULTS.md, issue 12, fourteenth look)
    "centering": "ema",
    "sinkhorn_iterations": 3,
    "koleo_weight": 0.0,
    # teacher EMA momentum on a cosine schedule from momentum_start to momentum_end
    # DINO: 0.996 (slower teacher for long runs; in 15 CPU minutes it moved the [CLS]
    # attention off the objects: docs/RESULTS.md, issue 12, eleventh look)
    "momentum_start": 0.99,
    "momentum_end": 1.0,
    # optimiser (AdamW)
    "lr": 1.0e-3,  # not scaled with the batch (DINO: 5e-4 * batch / 256)
    "min_lr": 1.0e-6,
    "warmup_steps": 20,  # DINO: 10 epochs
    "weight_decay": 0.04,
    "weight_decay_end": 0.4,  # cosine schedule of the weight decay
    "clip_grad": 3.0,  # 0 = off
    "amp": "auto",  # auto | bf16 | fp16 | off (CUDA only)
    # iBOT-style masked patch-token loss (DINOv2), ViT only; 0 = off. On by default: the node
    # publishes patch features. 15 one-core minutes, one-frame-a-scene probe bag: k-NN 0.099 on,
    # 0.088 off (both chance; the earlier 42% vs 17-37% came from a too-small probe bag)
    "ibot_weight": 1.0,
    "ibot_out_dim": 512,  # prototypes of the patch head
    "ibot_mask_ratio": [0.1, 0.5],  # fraction of the patches masked, drawn per image
    "ibot_mask_prob": 0.5,  # fraction of the global views that are masked at all
    "ibot_separate_head": True,  # False: patch tokens share the [CLS] head
    # SimMIM/MAE-style masked-pixel target (dino/pixels.py), ViT only; 0 = off. A linear head
    # on the student's masked patch tokens predicts those patches' pixels in the unmasked view,
    # each patch normalised by its own mean and std (MAE's norm_pix_loss). The masks are the
    # iBOT ones above (drawn also when ibot_weight is 0). 15 one-core minutes, one-frame-a-scene
    # probe bags: the loss falls (0.95 -> 0.56) but k-NN stays at chance with weight 1 or 5
    # and alone (0.07-0.11): box-pooled patch pixels themselves score chance on that probe;
    # see docs/RESULTS.md, issue 12
    "pixel_weight": 0.0,
    "pixel_loss": "l1",  # l1 (SimMIM) | mse (MAE)
    # cross-view dense loss (dino/dense.py), ViT only; 0 = off: each patch of one global view
    # predicts the teacher's patch-head output at the same place of the frame in the other
    # global view (location-matched, as PixPro / VADeR), so a patch token has to stay the same
    # when the grid, scale and colours change; uses the iBOT patch head (built for it when
    # ibot_weight is 0)
    "dense_weight": 0.0,
    # region loss (dino/region.py), ViT only; 0 = off: the global views' patch tokens, pooled
    # over where each local crop lies in them (as the probe pools a box), predict the teacher's
    # [CLS] output for that local crop, so the patch tokens under an object hold what the
    # [CLS] learns of it (the teacher also runs on the local views). Off by default: with grey
    # views, Sinkhorn-Knopp and KoLeo on the photo marks, box-pooled k-NN 0.13 / 0.13 after 30
    # one-core minutes against 0.10 / 0.10 for random weights, inside the noise band
    # (docs/RESULTS.md, issue 12, fifteenth look)
    "region_weight": 0.0,
    "dino_weight": 1.0,  # weight of the [CLS] DINO loss (0: masked-pixel and/or iBOT only)
    # parameter-efficient continuation (ExPLoRA): LoRA on every block, last N blocks unfrozen
    "lora_rank": 0,
    "lora_alpha": None,  # None: equal to the rank
    "unfreeze_blocks": 0,
    # collapse detection: stop when the teacher's entropy stays below collapse_entropy_low
    # (one prototype) or above collapse_entropy_high (uniform; fractions of log K) with the
    # student-teacher KL under collapse_kl in at least collapse_share of the last
    # collapse_patience steps (a collapsed run's KL still spikes now and then; 1 = every step)
    "collapse_entropy_low": 0.05,
    "collapse_entropy_high": 0.98,
    "collapse_kl": 1.0e-3,
    "collapse_patience": 50,  # 0 = never stop
    "collapse_share": 0.9,
    "collapse_after_steps": 0,  # no detection before this step (0: from the start)
    "eval_every": 1,  # epochs between epoch rows / curves / backbone.pt (no validation set)
    "checkpoint_every_s": 120.0,
    "checkpoint_every_steps": 0,
    "cache_max_mb": 4096,
    "seed": 0,
    "threads": 0,
    "log_every_steps": 1,  # the collapse signals are logged every step
}


def pretrain_options(cfg: dict) -> dict:
    """``cfg["pretrain"]`` merged over ``PRETRAIN_DEFAULTS`` (nested ``augment`` merged too)."""
    from vit_perception.config import deep_merge

    return deep_merge(copy.deepcopy(PRETRAIN_DEFAULTS), cfg.get("pretrain") or {})

"""`vit-perception train`: fine-tune a detector on labelled frames recorded in rosbags.

    vit-perception train --config vit_tiny_detr --train a_bag b_bag --val c_bag --out runs/x
    vit-perception train ... --out runs/x --resume          # continue runs/x/last.pt exactly
    vit-perception train ... --out runs/x --overwrite       # delete that run and start again
    torchrun --nproc_per_node 4 -m vit_perception train ... # DDP, same arguments

Writes RUN_DIR/{best.pt, last.pt, config.yaml, metrics.jsonl, metrics.csv, steps.jsonl,
curves.png, tb/}. Training hyper-parameters live in the config's `train:` section
(vit_perception/training/options.py lists them with their defaults); the flags below and
`--set train.KEY=VALUE` override them.
"""

from __future__ import annotations

import argparse

from vit_perception.arg_types import non_negative_int
from vit_perception.commands.run_args import (
    add_run_arguments,
    prepare_run,
    print_detector_summary,
    resume_config,
    run_overrides,
)

__all__ = ["add_arguments", "resume_config", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="model config name or YAML file (vit_tiny_detr; with --resume the "
                             "run's own config)")
    parser.add_argument("--train", nargs="+", required=True, metavar="BAG",
                        help="training bags")
    parser.add_argument("--val", nargs="+", required=True, metavar="BAG",
                        help="validation bags (mAP each epoch)")
    parser.add_argument("--labels-topic", default="/labels",
                        help="vision_msgs/Detection2DArray ground truth (/labels)")
    add_run_arguments(parser, "train")
    parser.add_argument("--freeze-backbone", action="store_true",
                        help="train the DETR head only")
    parser.add_argument("--lora", type=non_negative_int, metavar="RANK",
                        help="LoRA of this rank on the ViT attention qkv/proj (backbone frozen)")
    parser.add_argument("--profile", type=int, nargs="?", const=30, metavar="STEPS",
                        help="print images/s of the whole training step (data, epoch "
                             "boundaries, validation) against a compute-only step of the same "
                             "model and batch on random data, over STEPS steps (30) after 5 "
                             "warm-up steps; trains in a temporary folder, --out is not written")


def _overrides(args: argparse.Namespace) -> dict:
    return run_overrides(args, "train", lora_rank=args.lora,
                         freeze_backbone=True if args.freeze_backbone else None)


def _profile(args: argparse.Namespace) -> int:
    import logging

    from vit_perception.config import load_config
    from vit_perception.training.profile import format_profile, profile_training

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.resume:
        raise ValueError("--profile starts a fresh temporary run; drop --resume")
    cfg = load_config(args.config or "vit_tiny_detr", _overrides(args))
    result = profile_training(cfg, args.train, args.val, device=args.device,
                              steps=int(args.profile), image_topic=args.image_topic,
                              labels_topic=args.labels_topic)
    print(format_profile(result))
    return 0


def run(args: argparse.Namespace) -> int:
    """Errors (bad bags, checkpoints, config keys) go to the CLI's error boundary (cli.main)."""
    if args.profile is not None:
        return _profile(args)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out, cfg = prepare_run(args, command="train", config=args.config,
                           default_config="vit_tiny_detr", overrides=_overrides(args),
                           bags=[*args.train, *args.val], labelled=[*args.train, *args.val])
    from vit_perception.training import train

    result = train(cfg, args.train, args.val, out, image_topic=args.image_topic,
                   labels_topic=args.labels_topic, resume=args.resume, init=args.init,
                   time_budget=args.time_budget, device=args.device,
                   progress=not args.no_progress)
    print_detector_summary(result)
    return 0

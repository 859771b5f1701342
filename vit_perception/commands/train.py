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

from vit_perception.arg_types import non_negative_int, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="model config name or YAML file (vit_tiny_detr; with --resume the "
                             "run's own config)")
    parser.add_argument("--train", nargs="+", required=True, metavar="BAG",
                        help="training bags")
    parser.add_argument("--val", nargs="+", required=True, metavar="BAG",
                        help="validation bags (mAP each epoch)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    parser.add_argument("--image-topic", default="/camera/image_raw")
    parser.add_argument("--labels-topic", default="/labels",
                        help="vision_msgs/Detection2DArray ground truth (/labels)")
    parser.add_argument("--epochs", type=positive_int, help="epochs (config train.epochs)")
    parser.add_argument("--time-budget", type=positive_float, metavar="MINUTES",
                        help="stop after this much wall-clock training, then evaluate and save")
    parser.add_argument("--resume", action="store_true",
                        help="continue RUN_DIR/last.pt (its config; --epochs/--set still apply)")
    parser.add_argument("--overwrite", action="store_true",
                        help="RUN_DIR holds a run: delete its files and start a new one")
    parser.add_argument("--init", metavar="PATH",
                        help="start from a checkpoint (a previous run's best/last.pt) or "
                             "backbone weights (torchvision Swin, DINO/DINOv2 ViT)")
    parser.add_argument("--init-partial", action="store_true",
                        help="accept an --init checkpoint of which fewer than half the tensors "
                             "fit the model (another architecture)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. train.lr=1e-4 (repeatable)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (auto)")
    parser.add_argument("--batch-size", type=positive_int)
    parser.add_argument("--workers", type=non_negative_int, help="data loader worker processes")
    parser.add_argument("--freeze-backbone", action="store_true",
                        help="train the DETR head only")
    parser.add_argument("--lora", type=non_negative_int, metavar="RANK",
                        help="LoRA of this rank on the ViT attention qkv/proj (backbone frozen)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--profile", type=int, nargs="?", const=30, metavar="STEPS",
                        help="print images/s of the whole training step (data, epoch "
                             "boundaries, validation) against a compute-only step of the same "
                             "model and batch on random data, over STEPS steps (30) after 5 "
                             "warm-up steps; trains in a temporary folder, --out is not written")


def _overrides(args: argparse.Namespace) -> dict:
    from vit_perception.config import deep_merge, parse_overrides

    train: dict = {}
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                       ("workers", args.workers), ("lora_rank", args.lora), ("seed", args.seed)):
        if value is not None:
            train[key] = value
    if args.freeze_backbone:
        train["freeze_backbone"] = True
    return deep_merge(parse_overrides(args.set), {"train": train} if train else {})


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


def resume_config(out, config: str | None, overrides: dict, command: str = "train") -> dict:
    """The config of the run in ``out`` (its last.pt) with ``overrides``; ``--config`` does not
    apply to a resumed run, and a note on stderr says so when it names another config."""
    import sys
    from pathlib import Path

    from vit_perception.config import deep_merge
    from vit_perception.training.state import load_resume

    last = Path(out) / "last.pt"
    run_cfg = load_resume(last)["config"]
    if config is not None and config != run_cfg.get("name"):
        print(f"vit-perception {command}: note: --resume continues {last} with the run's own "
              f"config ({run_cfg.get('name') or 'unnamed'}); --config {config} is ignored (--set, "
              "--epochs and the other flags apply)", file=sys.stderr)
    return deep_merge(run_cfg, overrides)


def run(args: argparse.Namespace) -> int:
    """Errors (bad bags, checkpoints, config keys) go to the CLI's error boundary (cli.main)."""
    if args.profile is not None:
        return _profile(args)
    import json
    import logging
    import os

    from vit_perception.config import load_config
    from vit_perception.data.bag_source import check_bag
    from vit_perception.training.run_dir import claim_run_dir

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = _overrides(args)
    if args.device is not None:
        from vit_perception.runtime.devices import check_device

        check_device(args.device)
    for bag in (*args.train, *args.val):  # a typo fails now, not after the model is built
        check_bag(bag)
    if args.resume:
        out = claim_run_dir(args.out, resume=True, overwrite=args.overwrite)
        cfg = resume_config(out, args.config, overrides)
    else:
        cfg = load_config(args.config or "vit_tiny_detr", overrides)
        if args.init:
            from vit_perception.training.state import check_init

            summary = check_init(cfg, args.init, partial=args.init_partial)
            if summary:
                logging.getLogger("vit_perception.train").info(summary)
        # last: with --overwrite this deletes the earlier run, so every other check comes first
        out = claim_run_dir(args.out, overwrite=args.overwrite)
    from vit_perception.training import train

    result = train(cfg, args.train, args.val, out, image_topic=args.image_topic,
                   labels_topic=args.labels_topic, resume=args.resume, init=args.init,
                   time_budget=args.time_budget, device=args.device,
                   progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:  # DDP: rank 0 reports
        return 0
    summary = {k: result[k] for k in ("stopped", "epochs", "steps", "minutes", "best_AP50",
                                      "best_AP", "best", "last")}
    summary["AP50"] = result["metrics"].get("AP50")
    summary["AP"] = result["metrics"].get("AP")
    print(json.dumps(summary, indent=1))
    return 0

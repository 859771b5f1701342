"""`vit-perception pretrain`: DINO self-distillation of a backbone on unlabelled rosbag frames.

    vit-perception pretrain --config vit_tiny_detr --bags a_bag b_bag --out runs/dino
    vit-perception pretrain ... --out runs/dino --resume      # continue runs/dino/last.pt exactly
    vit-perception pretrain --config vit_s16_detr --init dinov2_vits14.pth --lora 8 \\
        --unfreeze-blocks 1 --bags lab_bag --out runs/explora   # ExPLoRA continuation
    torchrun --nproc_per_node 4 -m vit_perception pretrain ...  # DDP, same arguments

Writes RUN_DIR/{backbone.pt, last.pt, config.yaml, steps.jsonl, metrics.jsonl, curves.png, tb/}.
backbone.pt (the teacher's backbone) works as `train --init RUN_DIR/backbone.pt` and as the
node's / predictor's `model` (features-only mode). Hyper-parameters live in the config's
`pretrain:` section (vit_perception/training/pretrain_options.py); the flags below and
`--set pretrain.KEY=VALUE` override them. Exit status 1 when the outputs collapsed.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vit_perception.arg_types import non_negative_int, positive_float, positive_int

    parser.add_argument("--config", default="vit_tiny_detr",
                        help="model config name or YAML file whose backbone is pretrained")
    parser.add_argument("--bags", nargs="+", required=True, metavar="BAG",
                        help="bags with the unlabelled frames (labels, if any, are ignored)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    parser.add_argument("--image-topic", default="/camera/image_raw")
    parser.add_argument("--epochs", type=positive_int, help="epochs (config pretrain.epochs)")
    parser.add_argument("--time-budget", type=positive_float, metavar="MINUTES",
                        help="stop after this much wall-clock training and save")
    parser.add_argument("--resume", action="store_true",
                        help="continue RUN_DIR/last.pt (its config; --epochs/--set still apply)")
    parser.add_argument("--overwrite", action="store_true",
                        help="RUN_DIR holds a run: delete its files and start a new one")
    parser.add_argument("--init", metavar="PATH",
                        help="start from a checkpoint (backbone.pt, a detector's best.pt) or "
                             "backbone weights (torchvision Swin, DINO/DINOv2 ViT)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. pretrain.out_dim=4096 (repeatable)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (auto)")
    parser.add_argument("--batch-size", type=positive_int, help="frames per step and process")
    parser.add_argument("--workers", type=non_negative_int, help="data loader worker processes")
    parser.add_argument("--lora", type=non_negative_int, metavar="RANK",
                        help="LoRA of this rank on every block's attention, backbone frozen "
                             "(ExPLoRA with --unfreeze-blocks)")
    parser.add_argument("--unfreeze-blocks", type=non_negative_int, metavar="N",
                        help="train the last N blocks fully (with --lora: ExPLoRA)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _overrides(args: argparse.Namespace) -> dict:
    from vit_perception.config import deep_merge, parse_overrides

    section: dict = {}
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                       ("workers", args.workers), ("lora_rank", args.lora),
                       ("unfreeze_blocks", args.unfreeze_blocks), ("seed", args.seed)):
        if value is not None:
            section[key] = value
    return deep_merge(parse_overrides(args.set), {"pretrain": section} if section else {})


def run(args: argparse.Namespace) -> int:
    """Errors (bad bags, checkpoints, config keys) go to the CLI's error boundary (cli.main)."""
    import json
    import logging
    import os
    import sys

    from vit_perception.config import load_config
    from vit_perception.data.bag_source import check_bag
    from vit_perception.training.run_dir import RUN_OUTPUTS, claim_run_dir

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = _overrides(args)
    if args.device is not None:
        from vit_perception.runtime.devices import check_device

        check_device(args.device)
    for bag in args.bags:  # a typo fails now, not after the model is built
        check_bag(bag)
    outputs = RUN_OUTPUTS + ("backbone.pt",)
    if args.resume:
        from vit_perception.commands.train import resume_config

        out = claim_run_dir(args.out, resume=True, overwrite=args.overwrite, outputs=outputs)
        cfg = resume_config(out, args.config if args.config != "vit_tiny_detr" else None,
                            overrides, command="pretrain")
    else:
        cfg = load_config(args.config, overrides)
        out = claim_run_dir(args.out, overwrite=args.overwrite, outputs=outputs)
    from vit_perception.training.pretrain import pretrain

    result = pretrain(cfg, args.bags, out, image_topic=args.image_topic,
                      resume=args.resume, init=args.init, time_budget=args.time_budget,
                      device=args.device, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:  # DDP: rank 0 reports
        return 0
    summary = {k: result[k] for k in ("stopped", "epochs", "steps", "minutes", "images_per_s",
                                      "crops_per_s", "backbone", "last")}
    history = result.get("history") or []
    if history:
        for key in ("loss", "teacher_entropy", "batch_entropy", "kl"):
            if key in history[-1]:
                summary[key] = history[-1][key]
    print(json.dumps(summary, indent=1))
    if result.get("collapse"):
        kept = ("backbone.pt is from the last epoch end before the collapse" if
                result.get("backbone") else "no backbone.pt written")
        print(f"vit-perception pretrain: error: {result['collapse']}; {kept}", file=sys.stderr)
        return 1
    return 0

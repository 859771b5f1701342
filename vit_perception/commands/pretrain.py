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
    from vit_perception.arg_types import non_negative_int
    from vit_perception.commands.run_args import add_run_arguments

    parser.add_argument("--config", default=None,
                        help="model config name or YAML file whose backbone is pretrained "
                             "(vit_tiny_detr; with --resume the run's own config)")
    parser.add_argument("--bags", nargs="+", required=True, metavar="BAG",
                        help="bags with the unlabelled frames (labels, if any, are ignored)")
    add_run_arguments(parser, "pretrain", init_partial=False,
                      init_help="start from a checkpoint (backbone.pt, a detector's best.pt) "
                                "or backbone weights (torchvision Swin, DINO/DINOv2 ViT)")
    parser.add_argument("--lora", type=non_negative_int, metavar="RANK",
                        help="LoRA of this rank on every block's attention, backbone frozen "
                             "(ExPLoRA with --unfreeze-blocks)")
    parser.add_argument("--unfreeze-blocks", type=non_negative_int, metavar="N",
                        help="train the last N blocks fully (with --lora: ExPLoRA)")


def _overrides(args: argparse.Namespace) -> dict:
    from vit_perception.commands.run_args import run_overrides

    return run_overrides(args, "pretrain", lora_rank=args.lora,
                         unfreeze_blocks=args.unfreeze_blocks)


def run(args: argparse.Namespace) -> int:
    """Errors (bad bags, checkpoints, config keys) go to the CLI's error boundary (cli.main)."""
    import json
    import logging
    import os
    import sys

    from vit_perception.commands.run_args import prepare_run
    from vit_perception.training.run_dir import RUN_OUTPUTS

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out, cfg = prepare_run(args, command="pretrain", config=args.config,
                           default_config="vit_tiny_detr", overrides=_overrides(args),
                           bags=list(args.bags), outputs=RUN_OUTPUTS + ("backbone.pt",))
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

"""`vit-perception distill`: train a small student detector against a big teacher checkpoint.

    vit-perception distill --teacher runs/big/best.pt --student-config vit_tiny_detr \\
        --train a_bag --unlabelled u_bag --val c_bag --out runs/student
    vit-perception distill --out runs/student --resume           # continue last.pt exactly
    torchrun --nproc_per_node 4 -m vit_perception distill ...    # DDP, same arguments

The teacher labels every frame (its confident predictions become the student's targets) and its
patch features teach the student's; `--train` frames also get the ordinary ground-truth loss,
`--unlabelled` frames only the teacher's. The run directory is `train`'s (best.pt, last.pt,
config.yaml, metrics, curves.png, tb/) and best.pt is an ordinary detector checkpoint for the
node, `eval`, `export` and `bench`. Hyper-parameters: the student config's `train:` section
(training/options.py) and `distill:` section (training/distill_options.py); `--set
distill.KEY=VALUE` / `--set train.KEY=VALUE` override them.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vit_perception.arg_types import positive_float
    from vit_perception.commands.run_args import add_run_arguments

    parser.add_argument("--teacher", metavar="CKPT",
                        help="teacher detector checkpoint (required unless --resume)")
    parser.add_argument("--student-config", default=None, metavar="CFG",
                        help="student model config name or YAML file (vit_tiny_detr)")
    parser.add_argument("--train", nargs="+", required=True, metavar="BAG",
                        help="labelled training bags (ground truth + teacher)")
    parser.add_argument("--unlabelled", nargs="+", default=[], metavar="BAG",
                        help="bags whose frames get the teacher's targets only (labels ignored)")
    parser.add_argument("--val", nargs="+", required=True, metavar="BAG",
                        help="labelled validation bags (mAP each epoch)")
    parser.add_argument("--temperature", type=positive_float, metavar="T",
                        help="softmax temperature of the class distillation (distill.temperature, "
                             "2)")
    parser.add_argument("--labels-topic", default="/labels")
    add_run_arguments(parser, "train", init_help="start the student from a checkpoint or "
                                                 "backbone weights")


def _overrides(args: argparse.Namespace) -> dict:
    from vit_perception.commands.run_args import run_overrides
    from vit_perception.config import deep_merge

    extra = {"distill": {"temperature": args.temperature}} if args.temperature else {}
    return deep_merge(run_overrides(args, "train"), extra)


def run(args: argparse.Namespace) -> int:
    """Errors (bad bags, checkpoints, config keys) go to the CLI's error boundary (cli.main)."""
    import logging

    from vit_perception.commands.run_args import prepare_run, print_detector_summary
    from vit_perception.errors import UsageError
    from vit_perception.models.checkpoint import read_checkpoint

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.teacher and not args.resume:
        raise UsageError("no teacher checkpoint given (--teacher CKPT)")
    if args.teacher:
        from vit_perception.models.backbone_model import is_backbone_only

        teacher = read_checkpoint(args.teacher)  # a wrong path fails now, naming it
        if is_backbone_only(teacher.get("config")):
            raise UsageError(f"--teacher {args.teacher}: a backbone-only checkpoint (pretrain's "
                             "backbone.pt) has no detection head to teach with; give a detector "
                             "checkpoint (train's or distill's best.pt)")
    out, cfg = prepare_run(args, command="distill", config=args.student_config,
                           default_config="vit_tiny_detr", overrides=_overrides(args),
                           bags=[*args.train, *args.unlabelled, *args.val],
                           config_flag="--student-config", labelled=[*args.train, *args.val])
    from vit_perception.training.distill import distill

    result = distill(cfg, args.teacher, args.train, args.val, out,
                     unlabelled_bags=args.unlabelled, image_topic=args.image_topic,
                     labels_topic=args.labels_topic, resume=args.resume, init=args.init,
                     time_budget=args.time_budget, device=args.device,
                     progress=not args.no_progress)
    print_detector_summary(result, "teacher")
    return 0

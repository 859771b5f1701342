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
    from vit_perception.arg_types import non_negative_int, positive_float, positive_int

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
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    parser.add_argument("--temperature", type=positive_float, metavar="T",
                        help="softmax temperature of the class distillation (distill.temperature, "
                             "2)")
    parser.add_argument("--image-topic", default="/camera/image_raw")
    parser.add_argument("--labels-topic", default="/labels")
    parser.add_argument("--epochs", type=positive_int, help="epochs (train.epochs)")
    parser.add_argument("--time-budget", type=positive_float, metavar="MINUTES",
                        help="stop after this much wall-clock training, then evaluate and save")
    parser.add_argument("--resume", action="store_true",
                        help="continue RUN_DIR/last.pt (its config and teacher)")
    parser.add_argument("--overwrite", action="store_true",
                        help="RUN_DIR holds a run: delete its files and start a new one")
    parser.add_argument("--init", metavar="PATH",
                        help="start the student from a checkpoint or backbone weights")
    parser.add_argument("--init-partial", action="store_true",
                        help="accept an --init checkpoint of which fewer than half the tensors "
                             "fit the student")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. distill.loss_feat_cos=0 (repeatable)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (auto)")
    parser.add_argument("--batch-size", type=positive_int)
    parser.add_argument("--workers", type=non_negative_int, help="data loader worker processes")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _overrides(args: argparse.Namespace) -> dict:
    from vit_perception.config import deep_merge, parse_overrides

    train = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                               ("workers", args.workers), ("seed", args.seed)) if v is not None}
    extra: dict = {"train": train} if train else {}
    if args.temperature is not None:
        extra["distill"] = {"temperature": args.temperature}
    return deep_merge(parse_overrides(args.set), extra)


def run(args: argparse.Namespace) -> int:
    """Errors (bad bags, checkpoints, config keys) go to the CLI's error boundary (cli.main)."""
    import json
    import logging
    import os
    import sys
    from pathlib import Path

    from vit_perception.config import deep_merge, load_config
    from vit_perception.errors import UsageError
    from vit_perception.models.checkpoint import read_checkpoint
    from vit_perception.training.run_dir import claim_run_dir

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.teacher and not args.resume:
        raise UsageError("no teacher checkpoint given (--teacher CKPT)")
    overrides = _overrides(args)
    if args.device is not None:
        from vit_perception.runtime.devices import check_device

        check_device(args.device)
    out = claim_run_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    if args.resume:
        from vit_perception.training.state import load_resume

        run_cfg = load_resume(Path(out) / "last.pt")["config"]
        if args.student_config is not None and args.student_config != run_cfg.get("name"):
            print(f"vit-perception distill: note: --resume continues {out / 'last.pt'} with the "
                  f"run's own config ({run_cfg.get('name') or 'unnamed'}); --student-config "
                  f"{args.student_config} is ignored", file=sys.stderr)
        cfg = deep_merge(run_cfg, overrides)
    else:
        cfg = load_config(args.student_config or "vit_tiny_detr", overrides)
        if args.init:
            from vit_perception.training.state import check_init

            summary = check_init(cfg, args.init, partial=args.init_partial)
            if summary:
                logging.getLogger("vit_perception.distill").info(summary)
    if args.teacher:
        read_checkpoint(args.teacher)  # a wrong path fails now, naming it
    from vit_perception.data.bag_source import check_bag

    for bag in (*args.train, *args.unlabelled, *args.val):  # a typo fails now
        check_bag(bag)
    from vit_perception.training.distill import distill

    result = distill(cfg, args.teacher, args.train, args.val, out,
                     unlabelled_bags=args.unlabelled, image_topic=args.image_topic,
                     labels_topic=args.labels_topic, resume=args.resume, init=args.init,
                     time_budget=args.time_budget, device=args.device,
                     progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:  # DDP: rank 0 reports
        return 0
    summary = {k: result[k] for k in ("stopped", "epochs", "steps", "minutes", "best_AP50",
                                      "best_AP", "best", "last", "teacher")}
    summary["AP50"] = result["metrics"].get("AP50")
    summary["AP"] = result["metrics"].get("AP")
    print(json.dumps(summary, indent=1))
    return 0

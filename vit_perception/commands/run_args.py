"""What the commands that own a run folder (`train`, `pretrain`, `distill`) share: their common
flags and the checks made before the folder is claimed (a typo fails at once, and with
`--overwrite` the earlier run is deleted only when the new one can start)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vit_perception.arg_types import non_negative_int, positive_float, positive_int


def add_run_arguments(parser: argparse.ArgumentParser, section: str,
                      init_help: str = "start from a checkpoint (a previous run's best/last.pt) "
                                       "or backbone weights (torchvision Swin, DINO/DINOv2 ViT)",
                      init_partial: bool = True) -> None:
    """``--out``, ``--image-topic``, ``--epochs``, ``--time-budget``, ``--resume``,
    ``--overwrite``, ``--init`` (and ``--init-partial``), ``--set``, ``--device``,
    ``--batch-size``, ``--workers``, ``--seed``, ``--no-progress``; ``section`` names the
    config section the numbers go to (``train``, ``pretrain``)."""
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    parser.add_argument("--image-topic", default="/camera/image_raw")
    parser.add_argument("--epochs", type=positive_int, help=f"epochs (config {section}.epochs)")
    parser.add_argument("--time-budget", type=positive_float, metavar="MINUTES",
                        help="stop after this much wall-clock training (all segments of a "
                             "resumed run), then evaluate and save")
    parser.add_argument("--resume", action="store_true",
                        help="continue RUN_DIR/last.pt exactly (its config; --epochs/--set "
                             "still apply)")
    parser.add_argument("--overwrite", action="store_true",
                        help="RUN_DIR holds a run: delete its files and start a new one")
    parser.add_argument("--init", metavar="PATH", help=init_help)
    if init_partial:
        parser.add_argument("--init-partial", action="store_true",
                            help="accept an --init checkpoint of which fewer than half the "
                                 "tensors fit the model (another architecture)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"config override, e.g. {section}.lr=1e-4 (repeatable)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (auto)")
    parser.add_argument("--batch-size", type=positive_int, help="frames per step and process")
    parser.add_argument("--workers", type=non_negative_int, help="data loader worker processes")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_overrides(args: argparse.Namespace, section: str, **flags: Any) -> dict:
    """``--set`` values with the flags given (not None) written into ``cfg[section]``."""
    from vit_perception.config import deep_merge, parse_overrides

    values = {"epochs": args.epochs, "batch_size": args.batch_size, "workers": args.workers,
              "seed": args.seed, **flags}
    chosen = {k: v for k, v in values.items() if v is not None}
    return deep_merge(parse_overrides(args.set), {section: chosen} if chosen else {})


def prepare_run(args: argparse.Namespace, *, command: str, config: str | None,
                default_config: str, overrides: dict, bags: list[str],
                outputs: tuple[str, ...] | None = None,
                config_flag: str = "--config",
                labelled: list[str] | None = None) -> tuple[Path, dict]:
    """Check the device, the bags and their topics (``args.image_topic`` on every bag,
    ``args.labels_topic`` on the ``labelled`` ones), then resolve the config (the run's own with
    ``--resume``) and check ``--init``; claim the run folder last. Returns ``(out, cfg)``."""
    import logging

    from vit_perception.config import load_config
    from vit_perception.data.bag_source import check_bag, check_topic
    from vit_perception.training.run_dir import RUN_OUTPUTS, claim_run_dir

    outputs = outputs or RUN_OUTPUTS
    if args.device is not None:
        from vit_perception.runtime.devices import check_device

        check_device(args.device)
    for bag in bags:  # a typo fails now, not after the model is built
        check_bag(bag)
    # and before the run folder is claimed: a wrong topic leaves no run behind
    for kind, checked in (("image", bags), ("labels", labelled or [])):
        topic = getattr(args, f"{kind}_topic", None)
        for bag in checked if topic else []:
            check_topic(bag, topic, kind)
    if args.resume:
        out = claim_run_dir(args.out, resume=True, overwrite=args.overwrite, outputs=outputs)
        return out, resume_config(out, config, overrides, command, config_flag)
    cfg = load_config(config or default_config, overrides)
    if args.init and hasattr(args, "init_partial"):
        from vit_perception.training.state import check_init

        summary = check_init(cfg, args.init, partial=args.init_partial)
        if summary:
            logging.getLogger(f"vit_perception.{command}").info(summary)
    # last: with --overwrite this deletes the earlier run, so every other check comes first
    return claim_run_dir(args.out, overwrite=args.overwrite, outputs=outputs), cfg


def resume_config(out: Path, config: str | None, overrides: dict, command: str = "train",
                  flag: str = "--config") -> dict:
    """The config of the run in ``out`` (its last.pt) with ``overrides``; ``--config`` does not
    apply to a resumed run, and a note on stderr says so when it names another config."""
    import sys

    from vit_perception.config import deep_merge
    from vit_perception.config_ranges import check_ranges
    from vit_perception.training.state import load_resume

    last = Path(out) / "last.pt"
    run_cfg = load_resume(last)["config"]
    if config is not None and config != run_cfg.get("name"):
        print(f"vit-perception {command}: note: --resume continues {last} with the run's own "
              f"config ({run_cfg.get('name') or 'unnamed'}); {flag} {config} is ignored "
              "(--set, --epochs and the other flags apply)", file=sys.stderr)
    check_ranges(overrides)
    return deep_merge(run_cfg, overrides)


def print_detector_summary(result: dict, *extra: str) -> None:
    """The JSON summary ``train`` and ``distill`` print (rank 0 only under torchrun): how the
    run stopped, its length, the best/last checkpoints, ``extra`` keys and the final AP50/AP."""
    import json
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    keys = ("stopped", "epochs", "steps", "minutes", "best_AP50", "best_AP", "best", "last")
    summary = {k: result[k] for k in (*keys, *extra)}
    summary["AP50"] = result["metrics"].get("AP50")
    summary["AP"] = result["metrics"].get("AP")
    print(json.dumps(summary, indent=1))

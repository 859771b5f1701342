"""The ``vit-perception`` command: one subcommand per job, each in ``vit_perception.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys

from vit_perception._version import __version__

# name -> one-line help; the module vit_perception.commands.<name> implements it.
SUBCOMMANDS = {
    "models": "list the model configs with parameter count and GFLOPs",
    "synth": "write a synthetic lab rosbag (images + ground-truth labels)",
    "train": "fine-tune a detector on frames recorded in rosbags",
    "pretrain": "DINO self-distillation of a backbone on unlabelled rosbag frames",
    "distill": "train a small student detector from a teacher checkpoint (+ unlabelled bags)",
    "eval": "replay a rosbag through the predictor and report COCO mAP and latency",
    "probe": "feature quality of a backbone on a labelled bag: k-NN, linear, attention in box",
    "extract": "extract frames from a rosbag for labelling, or import labelled COCO JSON",
    "export": "export a checkpoint to ONNX and build a TensorRT engine",
    "bench": "benchmark preprocess / inference / postprocess latency per backend",
    "demo": "the whole loop: synthesise a bag, train, evaluate, run the node",
    "bench-node": "benchmark perception_node under camera load over ROS 2 (needs env.sh)",
    "play": "publish a bag's image, camera_info and labels topics over ROS 2 (no rosbag2)",
    "record": "record the node's outputs over ROS 2 into a bag for eval (no rosbag2)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vit-perception",
        description="ViT/Swin + DETR perception for ROS 2: train, evaluate, export, benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (or VIT_PERCEPTION_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f"vit_perception.commands.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        # --debug is accepted after the command too (SUPPRESS: the global value stays unless given)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; errors become one line on stderr (see ``vit_perception.errors``)."""
    from vit_perception.errors import debug_requested, describe

    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one error boundary of the command line
        if debug_requested(args.debug):
            raise
        code, message = describe(exc)
        print(f"vit-perception {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())

"""`vit-perception eval`: COCO box metrics of a rosbag, replayed through a model or recorded.

    vit-perception eval --bag lab_bag --model runs/tiny/best.pt --json metrics.json
    vit-perception eval --bag recorded_bag --predictions-topic /detections
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vit_perception.arg_types import non_negative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, help="bag with images (and labels)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--model", help="checkpoint / ONNX / engine: replay every frame through it")
    mode.add_argument("--predictions-topic", metavar="TOPIC",
                      help="score Detection2DArray predictions recorded on TOPIC instead")
    parser.add_argument("--image-topic", default="/camera/image_raw")
    parser.add_argument("--labels-topic", default="/labels")
    parser.add_argument("--label-bag", action="append", default=[], metavar="BAG",
                        help="another bag holding the labels topic (repeatable)")
    parser.add_argument("--predictions-bag", action="append", default=[], metavar="BAG",
                        help="another bag holding the predictions topic (repeatable)")
    parser.add_argument("--classes", help="classes file, one name per line "
                        "(default: the sorted class_ids found in the labels)")
    parser.add_argument("--json", metavar="PATH", help="write the metrics as JSON")
    parser.add_argument("--out-dir", metavar="DIR",
                        help="PR curve and worst-frame PNGs (default: beside --json, else "
                        "BAG stem + _eval)")
    parser.add_argument("--worst", type=non_negative_int, default=4,
                        help="annotated worst frames to save (4)")
    parser.add_argument("--max-frames", type=positive_int, default=None)
    g = parser.add_argument_group("model mode")
    g.add_argument("--backend", default="torch", help="torch | onnx | tensorrt (torch)")
    g.add_argument("--device", default="cpu", help="cpu | cuda[:N] (cpu)")
    g.add_argument("--precision", default="fp32",
                   help="fp32 | fp16 | bf16 | int8 (onnxruntime CPU) (fp32)")
    from vit_perception.runtime.runner_options import add_torch_runner_arguments

    add_torch_runner_arguments(g)
    g.add_argument("--score-threshold", type=float, default=0.01,
                   help="keep detections above this score for scoring (0.01)")
    g.add_argument("--max-detections", type=positive_int, default=100)
    g.add_argument("--out-bag", metavar="PATH",
                   help="bag for the predictions on /detections (default: next to --json, else "
                   "BAG stem + _predictions); 'none' to skip")
    g.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    g.add_argument("--copy-images", action="store_true",
                   help="also copy the images into the output bag")


def _default_path(args: argparse.Namespace, suffix: str) -> Path:
    bag = Path(args.bag)
    base = Path(args.json).with_suffix("") if args.json else bag.parent / bag.stem
    path = base.parent / f"{base.name}{suffix}"
    k = 1
    while path.exists():
        path = base.parent / f"{base.name}{suffix}_{k}"
        k += 1
    return path


def run(args: argparse.Namespace) -> int:
    """Errors (bad bag, model, device, backend) go to the CLI's error boundary (cli.main)."""
    import contextlib
    import logging

    from vit_perception.data.bag_source import check_bag
    from vit_perception.evaluation.coco_metrics import format_table
    from vit_perception.evaluation.replay import replay_model, score_recorded
    from vit_perception.outputs import staged_output

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for bag in (args.bag, *args.label_bag, *args.predictions_bag):
        check_bag(bag)
    if args.json:  # an unwritable --json fails now, not after the replay
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    if args.model:
        from vit_perception.runtime.predictor import Predictor
        from vit_perception.runtime.runner_options import torch_runner_options

        out_bag = None
        if (args.out_bag or "").lower() != "none":
            out_bag = Path(args.out_bag) if args.out_bag else _default_path(args,
                                                                             "_predictions")
        predictor = Predictor.load(args.model, backend=args.backend, device=args.device,
                                   precision=args.precision,
                                   score_threshold=args.score_threshold,
                                   max_detections=args.max_detections,
                                   **torch_runner_options(args, args.backend))
        for attr in ("want_features", "want_attention", "want_embedding"):
            if hasattr(predictor, attr):
                setattr(predictor, attr, False)
        # the predictions bag appears only when every frame was replayed (no partial bag)
        with contextlib.ExitStack() as stack:
            stack.callback(getattr(predictor, "close", lambda: None))
            staged = stack.enter_context(staged_output(out_bag)) if out_bag else None
            result = replay_model(
                args.bag, predictor, args.image_topic, args.labels_topic, args.label_bag,
                args.classes, out_bag=staged, storage=args.storage,
                max_frames=args.max_frames, keep_worst=args.worst,
                copy_images=args.copy_images)
        if out_bag is not None:
            print(f"predictions: {out_bag} (/detections)")
    else:
        result = score_recorded(args.bag, args.predictions_topic, args.image_topic,
                                args.labels_topic, args.label_bag, args.predictions_bag,
                                classes=args.classes,
                                max_frames=args.max_frames, keep_worst=args.worst)
    metrics = result.metrics
    print(format_table(metrics))
    out_dir = Path(args.out_dir) if args.out_dir else _default_path(args, "_eval")
    figures = result.save_figures(out_dir)
    if figures:
        print(f"figures: {out_dir}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"metrics: {path}")
    return 0

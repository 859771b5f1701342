"""`vit-perception probe`: how good a backbone's features are on a labelled bag, no detector.

    vit-perception probe --backbone runs/dino/backbone.pt --bag photo_val --json probe.json
    vit-perception probe --backbone vit_tiny_detr --bag photo_val      # random weights

Prints and writes ``knn_accuracy`` (cosine k-NN, k=20, of box-pooled patch features, frames
split into a train and a test part), ``linear_accuracy`` (logistic regression on the same) and
``attention_in_box`` (the share of [CLS] attention inside the ground-truth boxes), and a PNG of
frames with their attention maps and PCA previews. Also ``knn_accuracy_crop`` and
``linear_accuracy_crop``: the same classifiers on each box's crop (twice its longer side,
resized to ``--crop-size``) embedded by the backbone alone ([CLS]), as DINO's k-NN embeds whole
images; ``--crop-size 0`` leaves them out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be WxH, e.g. 320x240, got {text!r}") from exc
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError("size must be at least 16x16")
    return w, h


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", required=True, metavar="PATH",
                        help="pretrain's backbone.pt, a detector checkpoint, DINO/DINOv2 weights, "
                        "or a model config name/YAML (random weights: the baseline)")
    parser.add_argument("--bag", required=True, metavar="LABELLED_BAG",
                        help="bag with images and ground-truth boxes")
    parser.add_argument("--image-topic", default="/camera/image_raw")
    parser.add_argument("--labels-topic", default="/labels")
    parser.add_argument("--classes", help="classes file (default: BAG/classes.txt if present, "
                        "else the sorted class_ids found)")
    parser.add_argument("--json", metavar="PATH", help="write the three figures as JSON")
    parser.add_argument("--png", metavar="PATH",
                        help="figure: frames, attention, PCA (default: beside --json, else "
                        "BAG stem + _probe.png)")
    parser.add_argument("--config", help="model config for raw weights whose shape cannot be "
                        "read off the file (Swin)")
    parser.add_argument("--reference", metavar="PATH",
                        help="a second backbone (same kinds as --backbone), e.g. a distilled "
                        "student's teacher: adds reference_cka and reference_r2, how much of its "
                        "box-pooled features --backbone's hold (linear CKA; held-out R^2 of a "
                        "ridge map); it runs at its own config's input size")
    parser.add_argument("--input-size", type=_size, metavar="WxH",
                        help="model input size (default: the backbone's config)")
    parser.add_argument("--crop-size", type=int, default=64, metavar="PIXELS",
                        help="side of each box's crop for knn_accuracy_crop / "
                        "linear_accuracy_crop (64; 0: off)")
    parser.add_argument("--test-fraction", type=_fraction, default=0.5,
                        help="last fraction of the frames held out for testing (0.5)")
    parser.add_argument("--max-frames", type=int, default=None, help="probe the first N frames")
    parser.add_argument("--figure-frames", type=int, default=6,
                        help="frames drawn in the PNG, evenly spaced (6)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:N] (cpu)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _out_paths(args: argparse.Namespace) -> tuple[Path | None, Path]:
    js = Path(args.json) if args.json else None
    if args.png:
        return js, Path(args.png)
    if js is not None:
        return js, js.with_suffix(".png")
    bag = Path(args.bag)
    return js, bag.parent / f"{bag.stem}_probe.png"


def _reference(args: argparse.Namespace, bag: Path, classes_src, result) -> dict[str, float]:
    """``reference_cka`` / ``reference_r2`` of ``result``'s pooled features against those of
    ``--reference`` on the same frames and boxes (each model in its own input size)."""
    from vit_perception.data.bags import read_frames
    from vit_perception.evaluation.feature_fidelity import fidelity
    from vit_perception.evaluation.probe import collect_features
    from vit_perception.evaluation.probe_backbone import load_backbone

    if result.pooled is None or result.frame_ids is None:
        raise ValueError(f"{bag}: no pooled box features to compare with --reference")
    backbone, cfg = load_backbone(args.reference, args.config)
    inp = cfg["input"]
    frames = read_frames(bag, args.image_topic, args.labels_topic, classes=classes_src,
                         labelled_only=True, max_frames=args.max_frames)
    ref, _ = collect_features(backbone, frames, (int(inp["width"]), int(inp["height"])),
                              inp.get("mean"), inp.get("std"), device=args.device,
                              batch_size=args.batch_size).pooled()
    return fidelity(result.pooled, ref, result.frame_ids, args.test_fraction)


def run(args: argparse.Namespace) -> int:
    import logging

    import numpy as np

    from vit_perception.data.bags import BagError, read_frames
    from vit_perception.evaluation.probe import probe_frames
    from vit_perception.evaluation.probe_backbone import load_backbone
    from vit_perception.evaluation.probe_figure import probe_figure

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    bag = Path(args.bag)
    try:
        if not bag.exists():
            raise FileNotFoundError(f"{bag}: bag not found")
        backbone, cfg = load_backbone(args.backbone, args.config, args.input_size)
        classes_src = args.classes or (bag / "classes.txt" if (bag / "classes.txt").is_file()
                                       else None)
        frames = read_frames(bag, args.image_topic, args.labels_topic, classes=classes_src,
                             labelled_only=True, max_frames=args.max_frames)
        total = len(frames.labels)
        if args.max_frames is not None:
            total = min(total, args.max_frames)
        if total == 0:
            raise ValueError(f"{bag}: no labels on {args.labels_topic}")
        keep = np.unique(np.linspace(0, total - 1, max(1, args.figure_frames)).round()
                         .astype(int)).tolist()
        bar = None
        if not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="frame", desc="probe", leave=False)
        if args.crop_size < 0:
            raise ValueError(f"--crop-size {args.crop_size}: expected pixels >= 0 (0: off)")
        inp = cfg["input"]
        try:
            result = probe_frames(
                backbone, frames, list(frames.classes),
                (int(inp["width"]), int(inp["height"])), inp.get("mean"), inp.get("std"),
                device=args.device, batch_size=args.batch_size,
                test_fraction=args.test_fraction, keep=keep,
                progress=bar.update if bar is not None else None, crop_size=args.crop_size)
        finally:
            if bar is not None:
                bar.close()
        reference = _reference(args, bag, classes_src, result) if args.reference else {}
    except (BagError, ValueError, FileNotFoundError, OSError, RuntimeError) as exc:
        print(f"vit-perception probe: error: {exc}", file=sys.stderr)
        return 2
    metrics = {**result.metrics(), **reference}
    print(f"backbone {args.backbone} ({cfg.get('name')}) on {bag}: {result.frames} frames, "
          f"{result.objects} objects ({result.train_objects} train / {result.test_objects} test "
          f"by frame), {len(set(result.classes))} classes")
    if result.unseen_test_objects:
        print(f"note: {result.unseen_test_objects} of {result.test_objects} test objects are of "
              "a class no train object has (no classifier can get them right): scenes longer "
              "than the bag's halves? Probe a longer bag or change --test-fraction")
    print(f"knn_accuracy {metrics['knn_accuracy']:.3f}  (cosine k-NN, k=20)")
    print(f"linear_accuracy {metrics['linear_accuracy']:.3f}  (logistic regression)")
    print(f"attention_in_box {metrics['attention_in_box']:.3f}  (boxes cover "
          f"{result.box_area_fraction:.3f} of the input: evenly spread attention scores that)")
    if "knn_accuracy_crop" in metrics:
        print(f"knn_accuracy_crop {metrics['knn_accuracy_crop']:.3f}  linear_accuracy_crop "
              f"{metrics['linear_accuracy_crop']:.3f}  (each box's {args.crop_size}-pixel crop, "
              "[CLS] embedding)")
    if reference:
        print(f"reference_cka {reference['reference_cka']:.3f}  reference_r2 "
              f"{reference['reference_r2']:.3f}  (how much of {args.reference}'s box features "
              "these hold: linear CKA; held-out R^2 of a ridge map fitted on the train half)")
        channels = result.pooled.shape[1] if result.pooled is not None else 0
        if result.train_objects <= channels:
            print(f"note: fewer train objects ({result.train_objects}) than this backbone's "
                  f"{channels} feature channels: the ridge map is underdetermined and "
                  "reference_r2 understates what the features hold; probe a longer bag")
    js, png = _out_paths(args)
    if result.samples:
        title = (f"{Path(args.backbone).name}: knn {metrics['knn_accuracy']:.3f}  linear "
                 f"{metrics['linear_accuracy']:.3f}  attention in box "
                 f"{metrics['attention_in_box']:.3f}")
        print(f"figure: {probe_figure(result.samples, png, title)}")
    if js is not None:
        js.parent.mkdir(parents=True, exist_ok=True)
        js.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"metrics: {js}")
    return 0

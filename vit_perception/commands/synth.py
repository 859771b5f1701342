"""`vit-perception synth OUT_BAG`: write a synthetic lab rosbag (images + ground-truth labels)."""

from __future__ import annotations

import argparse

from vit_perception.arg_types import positive_int


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be WxH, e.g. 640x480, got {text!r}") from exc
    if w < 64 or h < 64:
        raise argparse.ArgumentTypeError("size must be at least 64x64")
    return w, h


def _range(text: str) -> tuple[int, int]:
    parts = [int(v) for v in text.split("-")]
    lo, hi = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    if lo < 0 or hi < lo:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}")
    return lo, hi


def _scale(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split("-"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX, e.g. 0.1-0.3, got {text!r}") from exc
    if not 0 < lo <= hi <= 1:
        raise argparse.ArgumentTypeError(f"scale must be 0 < MIN <= MAX <= 1, got {text!r}")
    return lo, hi


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_bag", metavar="OUT_BAG", help="bag directory to create")
    parser.add_argument("--frames", type=positive_int, default=300,
                        help="number of frames (300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--size", type=_size, default=(640, 480), help="WxH (640x480)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--style", choices=("lab", "photo"), default="lab",
                        help="lab: coloured objects (default); photo: marks that differ only in "
                             "shape on photographs and textures, with distractors, lighting and "
                             "blur changes")
    parser.add_argument("--background", choices=("mixed", "plain"), default="mixed",
                        help="photo style: mixed (photographs and textures, default) or plain "
                        "(one flat grey level a scene: a control where only the marks hold "
                        "structure)")
    parser.add_argument("--classes", type=int, default=4,
                        help="number of object classes: 1-8 for lab, 1-10 for photo (4)")
    parser.add_argument("--compressed", action="store_true",
                        help="JPEG sensor_msgs/CompressedImage instead of rgb8 Image")
    parser.add_argument("--objects-per-frame", type=_range, default=(1, 4), metavar="MIN-MAX",
                        help="objects per scene (1-4)")
    parser.add_argument("--scene-length", type=_range, default=None, metavar="MIN-MAX",
                        help="frames per scene (lab 60-120, photo 5-20): shorter scenes give "
                        "more distinct backgrounds and objects per frame")
    parser.add_argument("--scale", type=_scale, default=None, metavar="MIN-MAX",
                        help="photo style: a mark's longer side over the frame's shorter side "
                        "(0.03-0.3); larger marks cover more of the backbone's patches")


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    from vit_perception.data.synth import class_names, write_synthetic_bag

    try:
        names = class_names(args.classes, args.style)
        if args.background != "mixed" and args.style != "photo":
            raise ValueError(f"--background {args.background} is for --style photo only")
        if args.scale is not None and args.style != "photo":
            raise ValueError("--scale is for --style photo only")
    except ValueError as exc:
        print(f"vit-perception synth: error: {exc}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    path = write_synthetic_bag(
        args.out_bag, frames=args.frames, seed=args.seed, size=args.size,
        storage=args.storage, num_classes=args.classes, compressed=args.compressed,
        objects_per_frame=args.objects_per_frame, style=args.style,
        scene_length=args.scene_length, background=args.background, scale=args.scale,
    )
    w, h = args.size
    details = ", plain background" if args.background != "mixed" else ""
    if args.scale is not None:
        details += f", marks {args.scale[0]:g}-{args.scale[1]:g} of the frame"
    print(f"wrote {path}: {args.frames} frames {w}x{h} ({args.style} style{details}, "
          f"{args.storage}"
          f"{', compressed' if args.compressed else ''}), classes "
          f"{', '.join(sorted(names))} in {time.perf_counter() - t0:.1f} s")
    return 0

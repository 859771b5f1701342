"""`vit-perception extract`: frames of a bag for labelling, and labelled COCO JSON back to a bag.

    vit-perception extract BAG OUT_DIR --every 10          # images/ + annotations.json
    vit-perception extract --from-coco labelled.json OUT_BAG [--images DIR]
"""

from __future__ import annotations

import argparse

from vit_perception.arg_types import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="BAG", nargs="?",
                        help="bag to extract frames from")
    parser.add_argument("out", metavar="OUT_DIR",
                        help="output folder (with --from-coco: the bag to write)")
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--every", type=positive_int, default=1, metavar="N",
                      help="every Nth frame (1)")
    pick.add_argument("--min-change", type=float, metavar="X",
                      help="only frames whose mean grey-level change (0-255, at 64x48) from "
                      "the last kept frame exceeds X")
    parser.add_argument("--image-topic", default="/camera/image_raw")
    parser.add_argument("--labels-topic", default="/labels",
                        help="existing labels to include in the COCO JSON (/labels)")
    parser.add_argument("--format", choices=("png", "jpg"), default="png")
    parser.add_argument("--from-coco", metavar="JSON",
                        help="the way back: write the labelled COCO JSON + images as a bag")
    parser.add_argument("--images", metavar="DIR",
                        help="image folder for --from-coco (default: the JSON's folder)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")


def run(args: argparse.Namespace) -> int:
    """Errors (bad bag, COCO file, images) go to the CLI's error boundary (cli.main)."""
    import json
    import logging

    from vit_perception.data.coco_io import coco_to_bag, extract_frames
    from vit_perception.errors import UsageError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.from_coco:
        if args.source:
            raise UsageError("with --from-coco give only OUT_BAG")
        bag = coco_to_bag(args.from_coco, args.out, args.images, storage=args.storage)
        print(f"wrote {bag} (/camera/image_raw + /labels; class order in "
              f"{bag / 'classes.txt'})")
        return 0
    if not args.source:
        raise UsageError("BAG OUT_DIR required (or --from-coco JSON OUT_BAG)")
    path = extract_frames(args.source, args.out, args.image_topic, args.labels_topic,
                          every=args.every, min_change=args.min_change,
                          image_format=args.format)
    coco = json.loads(path.read_text())
    print(f"wrote {len(coco['images'])} frames and {path} "
          f"({len(coco['annotations'])} existing annotations)")
    return 0

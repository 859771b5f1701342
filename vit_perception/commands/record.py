"""`vit-perception record OUT_BAG`: record the node's outputs into a bag, no rosbag2.

    vit-perception record preds_bag                          # /detections, until Ctrl-C
    vit-perception eval --bag lab_bag --predictions-topic /detections --predictions-bag preds_bag
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_bag", metavar="OUT_BAG", help="bag folder to create")
    parser.add_argument("--topics", nargs="+", default=["/detections"], metavar="TOPIC",
                        help="topics to record (/detections); each is subscribed once it "
                        "appears")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--duration", type=float, default=0.0, metavar="S",
                        help="stop after S seconds (default: at Ctrl-C / SIGTERM)")


def run(args: argparse.Namespace) -> int:
    from vit_perception.ros.bag_record import record

    stats = record(args.out_bag, args.topics, args.storage, args.duration)
    counts = ", ".join(f"{t} {stats.messages.get(t, 0)}" for t in args.topics)
    print(f"recorded into {args.out_bag}: {counts}")
    never = [t for t in args.topics if t not in stats.types]
    if never:
        print(f"never appeared: {', '.join(never)}")
    return 0

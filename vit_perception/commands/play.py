"""`vit-perception play BAG`: publish a bag's image (camera_info, labels) topics, no rosbag2.

    vit-perception play lab_bag                     # with the recorded timing
    vit-perception play lab_bag --rate 0            # as fast as the node answers each image
    vit-perception play lab_bag --rate 2 --loop --topics /camera/image_raw
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", metavar="BAG", help="rosbag2 folder, .mcap/.db3, or ROS 1 .bag")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="speed factor of the recorded timing (1.0); 0: lock-step, each "
                        "image waits for the node's answer on --wait-topic")
    parser.add_argument("--loop", action="store_true", help="play again until Ctrl-C")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC",
                        help="topics to publish (default: every image, camera_info and "
                        "Detection2DArray topic)")
    parser.add_argument("--wait-topic", default="/detections",
                        help="Detection2DArray topic answering each image with --rate 0 "
                        "(/detections)")
    parser.add_argument("--answer-timeout", type=float, default=10.0, metavar="S",
                        help="with --rate 0, go on after S seconds without an answer (10)")
    parser.add_argument("--wait", type=float, default=10.0, metavar="S",
                        help="wait up to S seconds for the node to subscribe before playing "
                        "(10)")


def run(args: argparse.Namespace) -> int:
    from vit_perception.ros.bag_play import play

    stats = play(args.bag, args.topics, args.rate, args.loop, args.wait_topic,
                 args.answer_timeout, args.wait)
    counts = ", ".join(f"{t} {n}" for t, n in sorted(stats.published.items()))
    print(f"published: {counts or 'nothing'}" + (f" ({stats.loops} loops)" if args.loop else "")
          + (f"; stopped by {stats.interrupted}" if stats.interrupted else ""))
    if stats.unanswered:
        print(f"{stats.unanswered} images got no answer on {args.wait_topic} within "
              f"{args.answer_timeout:g} s")
    return 0

"""A bag whose labels are a model's detections: the frames of BAG with the `/detections` of a
predictions bag (what `vit-perception eval --model CKPT` writes next to its JSON) as `/labels`.

Used for issue 13's pseudo-label rows (docs/RESULTS.md, seventh measurement): the teacher's
detections (score >= its threshold, 0.5) on the unlabelled bag, for `vit-perception train`.

    python scripts/teacher_labelled_bag.py runs/d2/bags/unlabelled \
        runs/d2/eval/teacher_unl_t05_predictions runs/d2/bags/pseudo_t05
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from rosbags.highlevel import AnyReader

from vit_perception.data.bag_writer import BagWriter
from vit_perception.data.msg_defs import DETECTION2D_ARRAY, typestore


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", type=Path, help="the frames (its own /labels, if any, are dropped)")
    ap.add_argument("predictions", type=Path, help="a predictions bag with /detections")
    ap.add_argument("out", type=Path, help="the new bag (must not exist)")
    ap.add_argument("--labels-topic", default="/labels")
    args = ap.parse_args()
    if args.out.exists():
        print(f"error: {args.out} exists", file=sys.stderr)
        return 2
    store = typestore()
    with AnyReader([args.bag], default_typestore=store) as frames, \
            AnyReader([args.predictions], default_typestore=store) as preds, \
            BagWriter(args.out, store=store) as out:
        for c, stamp, raw in frames.messages():
            if c.topic != args.labels_topic:
                out.write_raw(c.topic, c.msgtype, raw, stamp)
        n = 0
        for c, stamp, raw in preds.messages():
            if c.topic == "/detections":
                out.write_raw(args.labels_topic, DETECTION2D_ARRAY, raw, stamp)
                n += 1
    if (args.bag / "classes.txt").exists():
        shutil.copy(args.bag / "classes.txt", args.out / "classes.txt")
    print(f"{args.out}: {n} label messages from {args.predictions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

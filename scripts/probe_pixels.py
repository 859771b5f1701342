#!/usr/bin/env python3
"""Reference for `vit-perception probe` (issue 12): the same k-NN and linear probes on the
boxes' own pixels instead of a backbone's features.

Each ground-truth box is cut from the frame, turned grey, resized to SIZE x SIZE, normalised
(zero mean, unit variance) and its sign set so the box centre is positive (marks darker or
lighter than their background look alike); the split is the probe's (first / last half of the
frames). What this scores is what the box pixels tell about the class with no learning at all:
a backbone whose box-pooled features score far below it loses the shape, not the data.

With ``--patch P`` the features are instead each P-pixel patch's own pixels (the frame
letterboxed to ``--input-size`` and normalised as the probe does, every patch normalised by its
mean and std as the masked-pixel target of ``pretrain.pixel_weight`` is; ``--raw`` skips that),
pooled inside each box exactly as ``vit-perception probe`` pools a backbone's patch tokens:
what a backbone whose patch tokens held their pixels exactly would score.

With ``--context C`` each box is cut as ``probe``'s crop figures cut it (a square C times the
box's longer side around its centre, ``evaluation.probe.box_crops``) before it is turned grey,
resized and normalised: the pixel reference for ``knn_accuracy_crop`` (C = 2, ``--size 64``).

    python scripts/probe_pixels.py BAG [--size 16] [--context 2]
    python scripts/probe_pixels.py BAG --patch 16 [--raw] [--input-size 320x240]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def box_vector(gray, box, size: int, context: float = 0.0):
    import cv2
    import numpy as np

    from vit_perception.evaluation.probe import box_crops

    h, w = gray.shape
    if context > 0:
        v = box_crops(gray[..., None], np.asarray(box)[None], size, context)[0].ravel()
    else:
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        x1, y1 = min(max(x1, 0), w - 1), min(max(y1, 0), h - 1)
        crop = gray[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]
        v = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).ravel()
    v = (v - v.mean()) / (v.std() + 1e-6)
    centre = v[(size // 2) * size + size // 2]
    return -v if centre < 0 else v


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", metavar="LABELLED_BAG")
    parser.add_argument("--size", type=int, default=16, help="box side after resizing (16)")
    parser.add_argument("--image-topic", default="/camera/image_raw")
    parser.add_argument("--labels-topic", default="/labels")
    parser.add_argument("--context", type=float, default=0.0,
                        help="cut a square CONTEXT x the box's longer side, as probe's crops (0: "
                        "the box itself)")
    parser.add_argument("--patch", type=int, default=0,
                        help="pool P-pixel patches' pixels in the boxes as the probe does")
    parser.add_argument("--raw", action="store_true", help="with --patch: patches unnormalised")
    parser.add_argument("--input-size", default="320x240", help="with --patch: WxH (320x240)")
    args = parser.parse_args(argv)
    if args.patch:
        return pooled_patches(args)

    import cv2
    import numpy as np
    import torch

    from vit_perception.data.bags import BagError, read_frames
    from vit_perception.evaluation.probe import knn_accuracy, linear_accuracy, split_by_frame

    bag = Path(args.bag)
    classes = bag / "classes.txt"
    try:
        frames = read_frames(bag, args.image_topic, args.labels_topic,
                             classes=classes if classes.is_file() else None, labelled_only=True)
        xs, ys, fids = [], [], []
        for i, frame in enumerate(frames):
            gray = cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY).astype(np.float32)
            for box, label in zip(np.asarray(frame.boxes).reshape(-1, 4), frame.labels):
                xs.append(box_vector(gray, box, args.size, args.context))
                ys.append(int(label))
                fids.append(i)
        if not xs:
            raise ValueError(f"{bag}: no labelled boxes on {args.labels_topic}")
    except (BagError, ValueError, OSError) as exc:
        print(f"probe_pixels: error: {exc}", file=sys.stderr)
        return 2
    x, y, fid = torch.tensor(np.stack(xs)), torch.tensor(ys), np.asarray(fids)
    train, test = (torch.as_tensor(m) for m in split_by_frame(fid))
    knn = knn_accuracy(x[train], y[train], x[test], y[test])
    lin = linear_accuracy(x[train], y[train], x[test], y[test], train_frames=fid[train.numpy()])
    what = f"{args.context:g}x crops" if args.context > 0 else "box pixels"
    print(f"{what} ({args.size}x{args.size} grey, normalised) on {bag}: {len(y)} objects "
          f"({int(train.sum())} train / {int(test.sum())} test by frame)")
    print(f"knn_accuracy {knn:.3f}  linear_accuracy {lin:.3f}")
    return 0


def pooled_patches(args) -> int:
    import torch
    from torch import nn

    from vit_perception.data.bags import BagError, read_frames
    from vit_perception.dino.pixels import patchify, pixel_targets
    from vit_perception.evaluation.probe import probe_frames
    from vit_perception.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

    p = int(args.patch)

    class PatchPixels(nn.Module):  # a "backbone" whose patch tokens are the patches' pixels
        def forward(self, x):
            b, _, h, w = x.shape
            t = patchify(x, p) if args.raw else pixel_targets(x, p)
            gh, gw = -(-h // p), -(-w // p)
            return {"features": t.transpose(1, 2).reshape(b, t.shape[-1], gh, gw),
                    "attention": torch.zeros(b, 1, gh, gw), "padded_size": (gh * p, gw * p)}

    bag = Path(args.bag)
    classes = bag / "classes.txt"
    try:
        width, height = (int(v) for v in args.input_size.lower().split("x"))
        frames = read_frames(bag, args.image_topic, args.labels_topic,
                             classes=classes if classes.is_file() else None, labelled_only=True)
        r = probe_frames(PatchPixels(), frames, list(frames.classes), (width, height),
                         IMAGENET_MEAN, IMAGENET_STD)
    except (BagError, ValueError, OSError) as exc:
        print(f"probe_pixels: error: {exc}", file=sys.stderr)
        return 2
    kind = "raw" if args.raw else "normalised"
    print(f"box-pooled {p}-pixel patches ({kind}) at {width}x{height} on {bag}: {r.objects} "
          f"objects ({r.train_objects} train / {r.test_objects} test by frame)")
    print(f"knn_accuracy {r.knn_accuracy:.3f}  linear_accuracy {r.linear_accuracy:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

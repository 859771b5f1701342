#!/usr/bin/env python3
"""How far the issue-12 probe's box-pooled k-NN can go for a backbone at its input size, when
its patch tokens are *told* what they cover: a supervised upper bound, not a learning method.

A config's backbone, from its random weights (or ``--init``), is trained on a labelled bag's
frames with a 1x1 classifier on its patch features: each cell of the patch grid has the class of
the box that covers the largest share of it (at least ``--min-cover``), else "background".
Cross-entropy over the cells (background weighted ``--background-weight``), AdamW, for
``--time-budget`` minutes. The result is written as a backbone-only ``backbone.pt`` that
``vit-perception probe --backbone`` reads like ``pretrain``'s.

If these patch tokens, trained with every label at the node's resolution, still pool to
chance, the box-pooled figure is out of reach of the network in that budget whatever
self-supervision does; if they pool well, what ``pretrain`` lacks is the signal.

    python scripts/dense_label_bound.py LABELLED_BAG --out RUN_DIR [--config vit_tiny_detr]
        [--time-budget 15] [--val HELD_OUT_BAG] [--input-size 640x480]
        [--arch cnn --probe PROBE_BAG ...]

``--arch cnn`` trains a small convolutional network in place of the config's backbone: the
ViT configs' ``cnn`` stem alone, without the transformer, a reference for what a network with
a convolution's locality and translation equivariance learns in the same minutes at the same
stride of 16 pixels. It is not a package backbone, so instead of a ``backbone.pt`` the script
probes it itself on each ``--probe`` bag with the probe's own functions (box-pooled k-NN and
linear, as ``vit-perception probe``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def cell_targets(boxes, labels, grid, cell, background: int, min_cover: float):
    """``[h, w]`` class of each cell: the label of the box covering most of it, if at least
    ``min_cover``, else ``background``."""
    import numpy as np

    from vit_perception.evaluation.probe import box_weights

    target = np.full(grid, background, np.int64)
    best = np.full(grid, min_cover, np.float64)
    for box, label in zip(boxes, labels):
        cover = box_weights(box, grid, cell)
        win = cover >= best
        target[win], best[win] = int(label), cover[win]
    return target


def small_cnn(width: int = 192):
    """The ``cnn`` stem of the ViT configs (``models.vit.CNNStem``: per halving two 3x3
    convolutions, then two dilated 3x3 residual ones; stride 16) on its own, without ``proj``
    and the transformer, returning what the probe reads: ``features [B, width, H/16, W/16]``,
    ``embedding`` (their mean), ``attention`` (uniform: a CNN has none) and ``padded_size``."""
    import torch
    from torch import nn

    from vit_perception.models.vit import CNNStem

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = CNNStem(16, width).stem

        def forward(self, x):
            h, w = x.shape[-2:]
            pad_h, pad_w = (-h) % 16, (-w) % 16
            f = self.net(nn.functional.pad(x, (0, pad_w, 0, pad_h)))
            return {"features": f, "embedding": f.mean((2, 3)),
                    "attention": torch.ones(f.shape[0], 1, *f.shape[-2:]),
                    "padded_size": (h + pad_h, w + pad_w)}

    return SmallCNN()


def plot_curves(log_path: Path, out: Path) -> Path:
    """``curves.png``: the object cells' accuracy on the training batches and held out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("object_cell_accuracy", "training batches"),
                       ("held_out_object_cell_accuracy", "held-out bag")):
        pts = [(r["minutes"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="o" if "held" in key else None, ms=3, lw=0.9,
                    label=label)
    ax.set(xlabel="minutes", ylabel="accuracy of the object cells", ylim=(0, 1),
           title="patch cells told their class (supervised bound)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", metavar="LABELLED_BAG")
    parser.add_argument("--out", required=True, help="run folder (backbone.pt, log.jsonl)")
    parser.add_argument("--config", default="vit_tiny_detr")
    parser.add_argument("--init", default=None, help="a backbone to start from (probe's "
                        "--backbone forms); default: the config's random weights")
    parser.add_argument("--input-size", default=None, metavar="WxH",
                        help="train (and save the config) at this input size, not the config's")
    parser.add_argument("--time-budget", type=float, default=15.0, help="minutes (15)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--min-cover", type=float, default=0.25)
    parser.add_argument("--background-weight", type=float, default=0.1)
    parser.add_argument("--image-topic", default="/camera/image_raw")
    parser.add_argument("--labels-topic", default="/labels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val", default=None, metavar="LABELLED_BAG",
                        help="held-out bag: its object-cell accuracy is logged every "
                        "--val-every steps and at the end (did the cells' classes generalise?)")
    parser.add_argument("--val-every", type=int, default=150)
    parser.add_argument("--arch", choices=("config", "cnn"), default="config",
                        help="config: the config's backbone (default); cnn: a small CNN of "
                        "stride 16, probed here on --probe bags")
    parser.add_argument("--probe", nargs="*", default=[], metavar="LABELLED_BAG",
                        help="labelled bags to probe the trained network on here (box-pooled k-NN "
                        "and linear); the only probe of --arch cnn, which writes no backbone.pt")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F

    from vit_perception.data.bags import BagError, read_frames
    from vit_perception.evaluation.probe_backbone import load_backbone
    from vit_perception.models.backbone_model import BackboneModel
    from vit_perception.models.checkpoint import save_checkpoint
    from vit_perception.models.preprocess import preprocess

    bag = Path(args.bag)
    if args.arch == "cnn" and args.init:
        print("dense_label_bound: error: --init names a backbone to start from; --arch cnn "
              "always starts from its own random weights", file=sys.stderr)
        return 2
    try:
        size = None
        if args.input_size:
            width, height = args.input_size.lower().split("x")
            size = (int(width), int(height))
        backbone, cfg = load_backbone(args.init or args.config, args.config, size)
        if args.arch == "cnn":
            torch.manual_seed(args.seed)
            backbone = small_cnn()
        classes_src = bag / "classes.txt" if (bag / "classes.txt").is_file() else None
        stream = read_frames(bag, args.image_topic, args.labels_topic, classes=classes_src,
                             labelled_only=True)
        frames = list(stream)
        names = list(stream.classes)
        val = [] if args.val is None else list(read_frames(
            args.val, args.image_topic, args.labels_topic, classes=names, labelled_only=True))
    except (BagError, ValueError, OSError) as exc:
        print(f"dense_label_bound: error: {exc}", file=sys.stderr)
        return 2
    if not frames:
        print(f"dense_label_bound: error: {bag}: no labelled frames", file=sys.stderr)
        return 2
    background = len(names)
    w, h = int(cfg["input"]["width"]), int(cfg["input"]["height"])
    mean, std = cfg["input"].get("mean"), cfg["input"].get("std")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    backbone.train()
    with torch.no_grad():
        probe_out = backbone(torch.zeros(1, 3, h, w))
    channels = int(probe_out["features"].shape[1])
    head = torch.nn.Conv2d(channels, background + 1, 1)
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    weight = torch.ones(background + 1)
    weight[background] = args.background_weight
    ph, pw = probe_out.get("padded_size", (h, w))
    grid = (int(probe_out["features"].shape[-2]), int(probe_out["features"].shape[-1]))
    cell = (ph / grid[0], pw / grid[1])

    def cells(batch):
        x, lbs = preprocess([f.image for f in batch], w, h, mean, std)
        return x, torch.as_tensor(np.stack([
            cell_targets(np.asarray(lb.to_input(f.boxes), np.float64).reshape(-1, 4), f.labels,
                         grid, cell, background, args.min_cover)
            for f, lb in zip(batch, lbs)]))

    def object_cell_accuracy(predicted, target) -> float:
        """Share of the cells an object covers whose predicted class is its class."""
        fg = target != background
        return round(float((predicted[fg] == target[fg]).float().mean()), 3) if fg.any() else 0.0

    @torch.no_grad()
    def held_out() -> float:
        backbone.eval()
        predicted, targets = [], []
        for i in range(0, len(val), 32):
            x, target = cells(val[i:i + 32])
            predicted.append(head(backbone(x)["features"]).argmax(1))
            targets.append(target)
        backbone.train()
        return object_cell_accuracy(torch.cat(predicted), torch.cat(targets))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "log.jsonl").open("w")
    start, step, seen = time.monotonic(), 0, 0
    while time.monotonic() - start < args.time_budget * 60:
        idx = rng.choice(len(frames), args.batch_size, replace=False)
        x, target = cells([frames[i] for i in idx])
        if rng.random() < 0.5:  # brightness / contrast jitter on the normalised input
            x = x * float(rng.uniform(0.7, 1.3)) + float(rng.uniform(-0.3, 0.3))
        logits = head(backbone(x)["features"])
        loss = F.cross_entropy(logits, target, weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step, seen = step + 1, seen + len(idx)
        if step % 50 == 0:
            row = {"step": step, "frames": seen, "minutes": round((time.monotonic() - start) / 60,
                   2), "loss": round(float(loss.detach()), 4),
                   "object_cell_accuracy": object_cell_accuracy(logits.argmax(1), target)}
            if val and step % args.val_every == 0:
                row["held_out_object_cell_accuracy"] = held_out()
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(json.dumps(row), flush=True)
    final: dict = {"steps": step, "frames_seen": seen,
                   "frames_per_s": round(seen / (time.monotonic() - start), 2)}
    if args.arch == "config":
        cfg["model"]["backbone_only"] = True
        cfg["classes"] = []
        final["backbone"] = str(save_checkpoint(
            out / "backbone.pt", BackboneModel(backbone.eval()), cfg,
            {"step": step, "dense_label_bound": str(bag)}))
    if val:
        final["held_out_object_cell_accuracy"] = held_out()
    for probe_bag in args.probe:
        from vit_perception.evaluation.probe import probe_frames

        result = probe_frames(backbone.eval(), read_frames(
            probe_bag, args.image_topic, args.labels_topic, classes=names), names, (w, h),
            mean, std)
        final[f"probe {probe_bag}"] = {"knn_accuracy": round(result.knn_accuracy, 3),
                                       "linear_accuracy": round(result.linear_accuracy, 3)}
    log.write(json.dumps({"minutes": round((time.monotonic() - start) / 60, 2), **final}) + "\n")
    log.close()
    final["curves"] = str(plot_curves(out / "log.jsonl", out / "curves.png"))
    print(json.dumps(final))
    return 0


if __name__ == "__main__":
    sys.exit(main())

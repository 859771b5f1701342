#!/usr/bin/env python3
"""The object cells' accuracy against minutes of several `dense_label_bound.py` runs, in one PNG
(issue 12's seventeenth look): held out (markers, left) and on the training batches (right).
Reads each RUN_DIR/log.jsonl.

Usage: scripts/dense_bound_curves.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...] [--title TEXT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_rows(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    if not path.is_file():
        raise SystemExit(f"dense_bound_curves: {path}: not found (not a dense_label_bound.py "
                         "run directory?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--title", default="patch cells told their class (supervised bound)")
    args = parser.parse_args(argv)
    runs = []
    for item in args.runs:
        label, sep, run = item.partition("=")
        if not sep or not run:
            parser.error(f"{item!r}: expected LABEL=RUN_DIR")
        runs.append((label, read_rows(Path(run))))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_held, ax_train) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for label, rows in runs:
        held = [(r["minutes"], r["held_out_object_cell_accuracy"]) for r in rows
                if "held_out_object_cell_accuracy" in r]
        train = [(r["minutes"], r["object_cell_accuracy"]) for r in rows
                 if "object_cell_accuracy" in r]
        line = ax_held.plot(*zip(*held), marker="o", ms=3, lw=1, label=label)[0] if held \
            else None
        if train:
            ax_train.plot(*zip(*train), lw=0.8, label=label,
                          color=line.get_color() if line else None)
    ax_held.set(xlabel="minutes", ylabel="accuracy of the object cells", ylim=(0, 1),
                title="held-out bag")
    ax_train.set(xlabel="minutes", title="training batches")
    for ax in (ax_held, ax_train):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    plt.close(fig)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

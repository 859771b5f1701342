#!/usr/bin/env python3
"""Validation AP50 and training loss against minutes of several `train` runs, in one PNG
(issue 12's few-label figure). Reads each RUN_DIR/metrics.jsonl (train's epoch rows).

Usage: scripts/few_label_curves.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...] [--title TEXT]
       [--x minutes|step]

``--x step`` puts training steps on the x axis: runs of the same time budget on a shared machine
make different numbers of steps, and the step axis compares them at equal work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"few_label_curves: {path}: not found (not a train run directory?)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "AP50" in r and "minutes" in r]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--title", default="few labels: validation AP50 while training")
    parser.add_argument("--x", choices=("minutes", "step"), default="minutes")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for spec in args.runs:
        label, sep, run = spec.partition("=")
        if not sep:
            raise SystemExit(f"few_label_curves: {spec!r}: expected LABEL=RUN_DIR")
        rows = read_rows(Path(run))
        xs = [r[args.x] for r in rows]
        ax.plot(xs, [r["AP50"] for r in rows], marker=".", label=label)
        ax_loss.plot(xs, [r.get("loss", float("nan")) for r in rows], marker=".", label=label)
    for a, name in ((ax, "validation AP50"), (ax_loss, "training loss (epoch mean)")):
        a.set_xlabel("training minutes (one core)" if args.x == "minutes" else "training steps")
        a.set_ylabel(name)
        a.grid(alpha=0.3)
    ax.set_title(args.title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"curves: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

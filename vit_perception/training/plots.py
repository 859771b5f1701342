"""``curves.png``: training loss and validation AP / AP50 against wall-clock minutes."""

from __future__ import annotations

import os
from pathlib import Path


def plot_curves(epochs: list[dict], steps_path: Path, out: Path) -> Path:
    """Draw the loss (per logged step and per epoch) and mAP curves; written atomically."""
    import matplotlib

    from vit_perception.training.metrics_log import read_jsonl

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = read_jsonl(steps_path)
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(11, 4))
    if steps:
        ax_loss.plot([r["minutes"] for r in steps], [r["loss"] for r in steps], lw=0.8,
                     alpha=0.5, label="step")
    if epochs:
        ax_loss.plot([r["minutes"] for r in epochs], [r["loss"] for r in epochs], "o-",
                     label="epoch mean")
        for key in ("AP50", "AP"):
            pts = [(r["minutes"], r[key]) for r in epochs if r.get(key) is not None]
            if pts:
                ax_ap.plot(*zip(*pts), "o-", label=f"val {key}")
    ax_loss.set(xlabel="minutes", ylabel="loss", title="training loss", yscale="log")
    ax_ap.set(xlabel="minutes", ylabel="mAP", title="validation", ylim=(0, 1))
    for ax in (ax_loss, ax_ap):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.92, wspace=0.22)
    tmp = Path(out).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return Path(out)

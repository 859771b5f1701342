"""``curves.png`` of a pretraining run: loss, teacher entropy and student-teacher KL per step."""

from __future__ import annotations

import os
from pathlib import Path


def plot_pretrain_curves(steps_path: Path, out: Path, log_k: float) -> Path:
    """Three panels against wall-clock minutes; the entropy panel marks 0 and log K (the two
    collapses). Written atomically."""
    import matplotlib

    from vit_perception.training.metrics_log import read_jsonl

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_jsonl(steps_path) if r.get("loss") == r.get("loss")]  # drop NaN
    minutes = [r["minutes"] for r in rows]
    fig, (ax_loss, ax_ent, ax_kl) = plt.subplots(1, 3, figsize=(15, 4))
    named = (("dino_loss", "DINO"), ("ibot_loss", "iBOT"), ("pixel_loss", "masked pixels"),
             ("dense_loss", "cross-view dense"), ("region_loss", "region"), ("koleo_loss", "KoLeo"))
    parts = any(key in r for r in rows for key, _ in named[1:])
    for key, label in (("loss", "total"), *named):
        pts = [(m, r[key]) for m, r in zip(minutes, rows) if key in r]
        if pts and (key == "loss" or parts):
            ax_loss.plot(*zip(*pts), lw=0.8, label=label)
    for key, label in (("teacher_entropy", "teacher entropy (per image)"),
                       ("batch_entropy", "entropy of the batch mean")):
        pts = [(m, r[key]) for m, r in zip(minutes, rows) if key in r]
        if pts:
            ax_ent.plot(*zip(*pts), lw=0.8, label=label)
    ax_ent.axhline(log_k, color="grey", ls="--", lw=0.8, label="log K (uniform)")
    ax_ent.axhline(0.0, color="grey", ls=":", lw=0.8)
    pts = [(m, r["kl"]) for m, r in zip(minutes, rows) if "kl" in r]
    if pts:
        ax_kl.plot(*zip(*pts), lw=0.8, color="C3", label="KL(teacher || student)")
    ax_loss.set(xlabel="minutes", ylabel="loss", title="pretraining loss")
    ax_ent.set(xlabel="minutes", ylabel="nats", title="teacher entropy")
    ax_kl.set(xlabel="minutes", ylabel="nats", title="student-teacher KL")
    for ax in (ax_loss, ax_ent, ax_kl):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.13, top=0.92, wspace=0.25)
    tmp = Path(out).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, out)
    return Path(out)

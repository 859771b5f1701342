#!/usr/bin/env python3
"""The tables of ``scripts/gpu_learning.sh`` from its work folder: issue 13's teacher and three
students (AP50 / AP and any class on the held-out bag, steps, bench latency) and issue 12's
probe, few-label and throughput figures. A run that did not finish leaves its row as ``-``.

Usage: scripts/gpu_learning_summary.py WORK_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def steps(run: Path) -> str:
    """Optimiser steps of a train / distill run: its last metrics row."""
    try:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                if line.strip()]
    except (OSError, ValueError):
        return "-"
    return str(rows[-1].get("step", "-")) if rows else "-"


def ap(ev: dict | None) -> str:
    if ev is None:
        return f"{'-':>15s} {'-':>15s}"
    agn = ev.get("class_agnostic") or {}
    any_class = (f"{agn['AP50']:.3f} / {agn['AP']:.3f}" if "AP50" in agn else "-")
    return f"{ev['AP50']:.3f} / {ev['AP']:.3f} {any_class:>15s}"


def distillation(w: Path) -> list[str]:
    ph = w / "ph"
    out = ["issue 13: teacher and students on the held-out photo bag (4 classes)",
           f"{'model':38s} {'ckpt':5s} {'AP50 / AP':>15s} {'any class':>15s} {'steps':>7s}"]
    rows = [("teacher vit_s16_detr 320x240", "teacher"),
            ("student, labels alone", "labels_only"),
            ("student distilled, labels", "distilled"),
            ("student distilled, labels + 4x unl.", "distilled_unlabelled")]
    for label, run in rows:  # the run folder ph/RUN, its evals ph/eval/RUN_{best,last}.json
        for ck in ("best", "last"):
            ev = load(ph / "eval" / f"{run}_{ck}.json")
            out.append(f"{label:38s} {ck:5s} {ap(ev)} {steps(ph / run):>7s}")
    bench = load(w / "json" / "bench.json") or {}
    fps = {key.split("/")[0]: v.get("fps") for key, v in bench.items() if isinstance(v, dict)}
    t, s = fps.get("teacher"), fps.get("distilled_unlabelled")
    if t and s:
        out.append(f"bench (torch, batch 1, end to end): teacher {1000 / t:.1f} ms, student "
                   f"{1000 / s:.1f} ms, student {s / t:.1f}x faster")
    return out


def pretraining(w: Path) -> list[str]:
    out = ["", "issue 12: vit_tiny_detr probe on the one-frame-a-scene bag (10 classes, chance "
           "0.10)", f"{'backbone':24s} {'k-NN':>6s} {'linear':>7s} {'attn in box':>12s} "
           f"{'k-NN crops':>11s}"]
    for label, name in (("random weights", "probe_random"), ("pretrained", "probe_pretrained"),
                        ("grey, Sinkhorn, KoLeo", "probe_pretrained_v2")):
        p = load(w / "json" / f"{name}.json")
        if p is None:
            out.append(f"{label:24s} -")
            continue
        crop = p.get("knn_accuracy_crop")
        crop_s = f"{crop:11.3f}" if isinstance(crop, (int, float)) else f"{'-':>11s}"
        out.append(f"{label:24s} {p['knn_accuracy']:6.3f} {p['linear_accuracy']:7.3f} "
                   f"{p['attention_in_box']:12.3f} {crop_s}")
    for label, name in (("pretrain vit_tiny_detr", "pretrain"),
                        ("pretrain, grey, Sinkhorn, KoLeo", "pretrain_v2"),
                        ("throughput vit_s16_detr, alone", "throughput_vit_s16")):
        d = load(w / "json" / f"{name}.json")
        if d is not None:
            out.append(f"{label}: {d.get('steps')} steps, {d.get('images_per_s')} images/s "
                       f"({d.get('crops_per_s')} crops/s), teacher entropy "
                       f"{d.get('teacher_entropy')}, KL {d.get('kl')}")
    out += ["", "few labels: AP50 / AP on the held-out bag (200 frames)",
            f"{'labelled frames':20s} {'random init':>15s} {'pretrained':>15s} {'AP50 gain':>10s} "
            f"{'grey+SK+KoLeo':>15s} {'AP50 gain':>10s}"]
    for n in (40, 400):
        for ck in ("best", "last"):
            a = load(w / "json" / f"eval_train{n}_random_{ck}.json")
            row = f"{f'{n}, {ck}.pt':20s} {cell(a)}"
            for init in ("pretrained", "pretrained_v2"):
                b = load(w / "json" / f"eval_train{n}_{init}_{ck}.json")
                gain = f"{b['AP50'] - a['AP50']:+10.3f}" if a and b else f"{'-':>10s}"
                row += f" {cell(b)} {gain}"
            out.append(row)
    return out


def cell(e: dict | None) -> str:
    return f"{e['AP50']:.3f} / {e['AP']:.3f}".rjust(15) if e else f"{'-':>15s}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    w = Path(argv[0])
    print("\n".join(distillation(w) + pretraining(w)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

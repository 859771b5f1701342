"""`vit-perception demo`: the whole loop on synthetic lab data, on a CPU, in minutes.

1. synthesise a training bag and a held-out bag (coloured objects moving over varied scenes);
2. get a model: train the tiny config briefly (or take ``--checkpoint``);
3. evaluate it on the held-out bag through the predictor (COCO metrics, latency, PR curve);
4. run ``perception_node`` over the held-out frames through real ROS 2 topics and score what it
   publishes; write annotated frames;
5. print ``AP50 <value>`` and latency.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder")
    parser.add_argument("--config", default="vit_tiny_detr", help="model config to train")
    parser.add_argument("--checkpoint", default=None,
                        help="use this checkpoint instead of training (skips step 2)")
    parser.add_argument("--train-minutes", type=float, default=6.5,
                        help="training time budget in minutes")
    parser.add_argument("--train-frames", type=int, default=400)
    parser.add_argument("--val-frames", type=int, default=100)
    parser.add_argument("--size", default="320x240", help="synthetic frame size WxH")
    parser.add_argument("--classes", type=int, default=4, help="number of object classes")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda[:N] for training, the predictor and the node (cpu)")
    from vit_perception.runtime.runner_options import add_torch_runner_arguments

    add_torch_runner_arguments(parser)
    parser.add_argument("--no-node", action="store_true",
                        help="skip step 4 (for machines without ROS 2: no env.sh)")


def _step(n: int, text: str) -> None:
    print(f"\n[demo {n}/5] {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    import json
    import shutil
    import time
    from pathlib import Path

    from vit_perception.commands.bench import summarize
    from vit_perception.data.synth import write_synthetic_bag

    t_start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = tuple(int(v) for v in args.size.lower().split("x"))

    _step(1, f"synthetic lab bags in {out}")
    train_bag, val_bag = out / "lab_train", out / "lab_heldout"
    for bag, frames, seed in ((train_bag, args.train_frames, 1), (val_bag, args.val_frames, 2)):
        if not bag.exists():
            write_synthetic_bag(bag, frames=frames, seed=seed, size=size,
                                num_classes=args.classes)
        print(f"  {bag} ({frames} frames, {size[0]}x{size[1]}, {args.classes} classes)")
    classes = train_bag / "classes.txt"

    if args.checkpoint:
        _step(2, f"model: {args.checkpoint}")
        checkpoint = Path(args.checkpoint)
    else:
        _step(2, f"training {args.config} for {args.train_minutes:g} min on this machine")
        from vit_perception.config import load_config
        from vit_perception.training.loop import train

        run_dir = out / "run"
        cfg = load_config(args.config, {"classes": classes.read_text().split()})
        summary = train(cfg, [train_bag], [val_bag], run_dir, time_budget=args.train_minutes,
                        resume=(run_dir / "last.pt").exists(), device=args.device)
        checkpoint = Path(summary["best"])
        best = summary.get("best_AP50") or float("nan")
        print(f"  best checkpoint {checkpoint} (val AP50 {best:.3f}, {summary['steps']} steps, "
              f"{summary['minutes']:.1f} min); curves: {run_dir}/curves.png")

    _step(3, "evaluating on the held-out bag through the predictor")
    from vit_perception.evaluation.replay import replay_model
    from vit_perception.runtime.predictor import Predictor
    from vit_perception.runtime.runner_options import torch_runner_options

    runner_options = torch_runner_options(args)
    predictor = Predictor.load(checkpoint, backend="torch", device=args.device,
                               score_threshold=0.01, **runner_options)
    predictions = out / "predictions"
    if predictions.is_dir():  # this demo's own output from an earlier run: replaced
        shutil.rmtree(predictions)
    result = replay_model(val_bag, predictor, classes=classes, out_bag=predictions)
    result.save_figures(out / "eval")
    m = result.metrics
    report = {k: m[k] for k in ("AP", "AP50", "AP75", "AR100", "fps")}
    report["latency_ms"] = m["latency_ms"]
    print(f"  AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}  AP75 {m['AP75']:.3f}  "
          f"latency median {m['latency_ms']['median']:.1f} ms, {m['fps']:.1f} fps")

    node_ap50 = None
    if not args.no_node:
        _step(4, "perception_node over the held-out frames through ROS 2 topics")
        node_ap50, node_latency, node_preds = _run_node(
            checkpoint, val_bag, classes, out, {"device": args.device, **runner_options})
        report["node"] = {"AP50": node_ap50, "frames": len(node_preds),
                          "answered": len(node_latency),
                          "same_top_detection": _same_top(node_preds, result.predictions),
                          "latency_ms": summarize(node_latency)}

    _step(5, "results")
    minutes = (time.monotonic() - t_start) / 60
    report["minutes"] = minutes
    (out / "demo.json").write_text(json.dumps(report, indent=2, default=float))
    print(f"AP50 {m['AP50']:.3f}")
    print(f"latency median {m['latency_ms']['median']:.1f} ms p90 {m['latency_ms']['p90']:.1f} ms"
          f" (predictor, {predictor.input_size[0]}x{predictor.input_size[1]}, {args.device})")
    if node_ap50 is not None:
        print(f"node AP50 {node_ap50:.3f}, end-to-end latency median "
              f"{report['node']['latency_ms']['median']:.1f} ms p90 "
              f"{report['node']['latency_ms']['p90']:.1f} ms (lock-step: publish -> detections); "
              f"best detection as the predictor's on {report['node']['same_top_detection']}/"
              f"{report['node']['frames']} frames")
    print(f"annotated frames, PR curve: {out}/eval, {out}/node_frames; {minutes:.1f} min")
    return 0


def _run_node(checkpoint, val_bag, classes, out, params=None):
    """Replay the held-out frames through a perception_node process; score its detections."""
    import cv2
    import numpy as np

    from vit_perception.data.bags import read_frames
    from vit_perception.evaluation.coco_metrics import coco_metrics
    from vit_perception.ros.replay import replay
    from vit_perception.visualize import draw_detections

    frames = list(read_frames(val_bag, classes=classes, labelled_only=True))
    names = frames[0].classes if frames and frames[0].classes else []
    res = replay(((f.stamp_ns, f.frame_id, f.image) for f in frames),
                 {"model": str(checkpoint), "score_threshold": 0.01, **(params or {})},
                 out / "node.log")
    gts, preds = [], []
    frame_dir = out / "node_frames"
    frame_dir.mkdir(exist_ok=True)
    for i, f in enumerate(frames):
        dets = res.detections.get(f.stamp_ns, [])
        boxes = np.array([d[0] for d in dets], np.float32).reshape(-1, 4)
        labels = np.array([names.index(d[1]) if d[1] in names else -1 for d in dets], np.int64)
        scores = np.array([d[2] for d in dets], np.float32)
        gts.append({"boxes": f.boxes, "labels": f.labels})
        preds.append({"boxes": boxes, "labels": labels, "scores": scores})
        if i % max(1, len(frames) // 6) == 0:
            keep = scores >= 0.5
            drawn = draw_detections(f.image, boxes[keep], labels[keep], scores[keep], names)
            cv2.imwrite(str(frame_dir / f"frame_{i:04d}.png"), cv2.cvtColor(drawn,
                                                                          cv2.COLOR_RGB2BGR))
    metrics = coco_metrics(gts, preds, names)
    return metrics["AP50"], list(res.latency_ms.values()), preds


def _same_top(node_preds: list[dict], predictor_preds: list[dict], tol_px: float = 1.0) -> int:
    """Frames whose best detection (label, box within `tol_px`) is the same from the node
    and from the in-process predictor, or that both leave empty."""
    import numpy as np

    same = 0
    for a, b in zip(node_preds, predictor_preds):
        if len(a["scores"]) == 0 or len(b["scores"]) == 0:
            same += len(a["scores"]) == len(b["scores"])
            continue
        i, j = int(np.argmax(a["scores"])), int(np.argmax(b["scores"]))
        same += bool(a["labels"][i] == b["labels"][j]
                     and np.abs(np.asarray(a["boxes"][i]) - b["boxes"][j]).max() <= tol_px)
    return same

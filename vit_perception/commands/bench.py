"""`vit-perception bench`: preprocess / infer / postprocess latency and fps per backend.

All backends run in one process on the same frames, after warm-up; figures are medians and tail
percentiles in milliseconds. ``--model`` takes several models (a teacher and its student): each
runs every backend on the same camera frames (``--frame-size``, default the first model's input
size), each at its own input size, and the table adds each model's speed-up over the first per
backend. ``--json`` writes ``{label: {"preprocess": {...}, "infer": {...}, "postprocess": {...},
"fps": F, "model": M, "input_size": [W, H]}, "machine": {...}}``; the label is the backend, led
by the model's short name when there are several.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

from vit_perception.arg_types import non_negative_int, positive_int

STAGES = ("preprocess", "infer", "postprocess")
# onnxruntime int8 variants compared in one run (plain int8: static when calibrated, else dynamic)
INT8_VARIANTS = {"int8-static": True, "int8-dynamic": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="vit_s16_detr",
                        help="model config name or YAML (random weights; default %(default)s)")
    parser.add_argument("--model", nargs="+", metavar="MODEL",
                        help="checkpoint .pt, .onnx or .engine, or a config name (overrides "
                             "--config); several (a teacher and its student) run in one "
                             "process on the same frames and are compared")
    parser.add_argument("--backend", nargs="+", default=["torch", "onnxruntime"],
                        help="backends to compare (torch onnxruntime tensorrt), each optionally "
                             "with its own precision: onnxruntime:int8 torch:bf16")
    parser.add_argument("--onnx", help="the .onnx file the onnxruntime backends run (default: "
                        "--model exported); its calibrated <stem>.int8.onnx is the static int8")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "int8"],
                        help="fp16/bf16: torch, tensorrt; int8: onnxruntime on the CPU")
    parser.add_argument("--size", type=_size, help="model input WxH (default: the config's)")
    parser.add_argument("--frame-size", type=_size,
                        help="camera frame WxH (default: the model input size)")
    parser.add_argument("--batch", type=positive_int, default=1, help="frames per inference")
    parser.add_argument("--iters", type=positive_int, default=50)
    parser.add_argument("--warmup", type=non_negative_int, default=5)
    parser.add_argument("--threads", type=positive_int,
                        help="CPU threads for torch and ONNX Runtime (default: physical cores)")
    from vit_perception.runtime.runner_options import add_torch_runner_arguments

    add_torch_runner_arguments(parser, with_cast=True)
    parser.add_argument("--cache-dir", help="where exported ONNX / engines are cached")
    parser.add_argument("--json", help="write the results as JSON to this path")


def _size(text: str) -> tuple[int, int]:
    from vit_perception.arg_types import image_size

    return image_size(text)


def natural_frame(width: int, height: int, seed: int = 0) -> Any:
    """A natural-looking RGB uint8 frame: gradients, filled shapes, blur and sensor noise."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([
        80 + 100 * xx / max(width - 1, 1),
        60 + 120 * yy / max(height - 1, 1),
        140 + 60 * np.sin(xx / max(width, 1) * np.pi * rng.uniform(1, 3)),
    ], axis=-1)
    img = np.clip(base, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(4, 9))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(max(4, min(width, height) // 12), max(8, min(width, height) // 3)))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x0 + size, y0 + int(size * rng.uniform(0.5, 1.5))),
                          color, -1)
        else:
            cv2.circle(img, (x0, y0), size // 2, color, -1)
    img = cv2.GaussianBlur(img, (3, 3), 0)
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def summarize(samples_ms: list[float]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(samples_ms, dtype=np.float64)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def machine_info(threads: int) -> dict[str, Any]:
    import onnxruntime
    import torch

    from vit_perception.runtime.onnx_runner import physical_cores

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "physical_cores": physical_cores(), "threads": threads,
        "python": platform.python_version(), "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__, "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def bench_backend(predictor: Any, frames: list[Any], iters: int, warmup: int) -> dict[str, Any]:
    for _ in range(warmup):
        predictor.predict_batch(frames)
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    totals = []
    for _ in range(iters):
        t = predictor.predict_batch(frames)[0].timings
        for s in STAGES:
            samples[s].append(t[s])
        totals.append(sum(t[s] for s in STAGES))
    result: dict[str, Any] = {s: summarize(samples[s]) for s in STAGES}
    result["total"] = summarize(totals)
    result["fps"] = 1000.0 * len(frames) / result["total"]["median"]
    return result


def bench_visuals(prediction: Any, frame: Any, iters: int) -> dict[str, dict[str, float]]:
    """Per-frame cost of the node's optional image outputs (detections drawn, PCA preview with a
    reused basis, attention map) at the frame's size, from one real prediction."""
    import time

    from vit_perception.visualize import attention_map, draw_detections, pca_preview

    h, w = frame.shape[:2]
    jobs = {"detections/image": lambda: draw_detections(
        frame, prediction.boxes, prediction.labels, prediction.scores, prediction.class_names)}
    if prediction.features is not None:
        _, basis = pca_preview(prediction.features, w, h)
        jobs["features/preview"] = lambda: pca_preview(prediction.features, w, h, basis=basis)
        jobs["features/preview refit"] = lambda: pca_preview(prediction.features, w, h)
    if prediction.attention is not None:
        jobs["attention"] = lambda: attention_map(prediction.attention, w, h)
    out = {}
    for name, job in jobs.items():
        samples = []
        for _ in range(max(iters, 5)):
            t0 = time.perf_counter()
            job()
            samples.append((time.perf_counter() - t0) * 1e3)
        out[name] = summarize(samples)
    return out


def short_name(model: str) -> str:
    """``runs/d2/teacherA/best.pt`` -> ``teacherA/best.pt``; a config name stays as it is."""
    path = Path(model)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def speedups(labels: dict[str, tuple[int, str]]) -> list[tuple[str, str]]:
    """``(other, reference)`` label pairs to compare: the first model's backends against its
    first, then each later model against the first model on the same backend."""
    first = [label for label, (m, _) in labels.items() if m == 0]
    pairs = [(other, first[0]) for other in first[1:]]
    by_spec = {spec: label for label, (m, spec) in labels.items() if m == 0}
    pairs += [(label, by_spec[spec]) for label, (m, spec) in labels.items()
              if m > 0 and spec in by_spec]
    return pairs


def format_table(results: dict[str, dict[str, Any]],
                 pairs: list[tuple[str, str]] | None = None) -> str:
    width = max([18, *(len(n) + 2 for n in results)])
    head = f"{'backend':<{width}}" + "".join(
        f"{s + ' med/p90/p99 ms':>30}" for s in STAGES) + f"{'fps':>8}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        cells = "".join(
            f"{r[s]['median']:>12.2f}{r[s]['p90']:>9.2f}{r[s]['p99']:>9.2f}" for s in STAGES)
        lines.append(f"{name:<{width}}{cells}{r['fps']:>8.1f}")
    if pairs is None:
        names = list(results)
        pairs = [(other, names[0]) for other in names[1:]]
    for other, ref in pairs:
        infer = results[ref]["infer"]["median"] / results[other]["infer"]["median"]
        fps = results[other]["fps"] / results[ref]["fps"]
        lines.append(f"{other} vs {ref}: infer {infer:.2f}x faster, end to end {fps:.2f}x fps")
    return "\n".join(lines)


def load_backend(args: argparse.Namespace, model: str, spec: str, threads: int,
                 first: bool, prefix: str = "") -> tuple[str, Any] | None:
    """(label, predictor) of one ``--backend`` spec for ``model``, the label led by ``prefix``;
    None (said on stderr) when that backend cannot run here. ``--onnx`` is the first model's
    export."""
    import warnings

    from vit_perception.runtime.base import RunnerError
    from vit_perception.runtime.predictor import Predictor
    from vit_perception.runtime.runner_options import torch_runner_options

    backend, _, precision = spec.partition(":")
    precision = variant = precision or args.precision
    options: dict[str, Any] = torch_runner_options(args, backend)
    if backend in ("torch", "onnxruntime", "onnx", "ort"):
        options["threads"] = threads
    if precision in INT8_VARIANTS:  # onnxruntime:int8-static / int8-dynamic
        options["int8_calibrated"] = INT8_VARIANTS[precision]
        precision = "int8"
    onnx = args.onnx if first else None
    source = onnx if onnx and backend in ("onnxruntime", "onnx", "ort") else model
    graphs = options.get("cuda_graphs", str(args.device).startswith("cuda"))
    label = prefix + backend + ("+compile" if options.get("compile") else "") + \
        ("+graphs" if backend == "torch" and graphs else "") + \
        (f":{variant}" if variant != args.precision else "")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predictor = Predictor.load(
                source, backend=backend, device=args.device, precision=precision,
                input_size=args.size, score_threshold=0.5, cache_dir=args.cache_dir, **options)
    except RunnerError as exc:
        print(f"{prefix}{spec}: skipped: {exc}", file=sys.stderr)
        return None
    return label, predictor


def run(args: argparse.Namespace) -> int:
    import torch

    from vit_perception.runtime.onnx_runner import physical_cores

    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    models = args.model or [args.config]
    results: dict[str, dict[str, Any]] = {}
    labels: dict[str, tuple[int, str]] = {}
    frames = None
    visuals: dict[str, dict[str, float]] | None = None
    for index, model in enumerate(models):
        prefix = f"{short_name(model)} " if len(models) > 1 else ""
        for spec in args.backend:
            loaded = load_backend(args, model, spec, threads, index == 0, prefix)
            if loaded is None:
                continue
            label, predictor = loaded
            kind = getattr(predictor.runner, "int8_kind", "")
            if kind:
                print(f"{label}: int8 {kind}")
            if frames is None:
                fw, fh = args.frame_size or predictor.input_size
                frames = [natural_frame(fw, fh, seed=i) for i in range(args.batch)]
            with predictor:
                results[label] = bench_backend(predictor, frames, args.iters, args.warmup)
                if visuals is None:
                    visuals = bench_visuals(predictor.predict(frames[0]), frames[0], args.iters)
            results[label]["model"] = str(model)
            results[label]["input_size"] = list(predictor.input_size)
            labels[label] = (index, spec)
    if not results:
        print("no backend could run", file=sys.stderr)
        return 1
    inputs: dict[str, list[int]] = {}
    for r in results.values():
        inputs.setdefault(r["model"], r["input_size"])
    fw, fh = frames[0].shape[1], frames[0].shape[0]  # type: ignore[index]
    print("  ".join(f"model {m}  input {w}x{h}" for m, (w, h) in inputs.items()) +
          f"  frame {fw}x{fh}  batch {args.batch}  device {args.device}  {args.precision}  "
          f"threads {threads}  iters {args.iters}")
    print(format_table(results, speedups(labels)))
    if visuals:
        print("node image outputs, ms per frame (median/p90): " + ", ".join(
            f"{k} {v['median']:.2f}/{v['p90']:.2f}" for k, v in visuals.items()))
    if args.json:
        out: dict[str, Any] = {k: {s: v[s] for s in (*STAGES, "fps", "model", "input_size")}
                               for k, v in results.items()}
        w, h = next(iter(results.values()))["input_size"]
        out["machine"] = {**machine_info(threads), "model": str(models[0]), "input_size": [w, h],
                          "models": [str(m) for m in models], "frame_size": [fw, fh],
                          "batch": args.batch, "device": args.device,
                          "precision": args.precision, "iters": args.iters,
                          "warmup": args.warmup}
        out["visuals"] = visuals
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0

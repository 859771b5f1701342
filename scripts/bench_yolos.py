#!/usr/bin/env python3
"""`vit-perception bench` and the closest peer, YOLOS-S (random weights), in one process.

YOLOS-S is a ViT-S/16 with 100 detection tokens (Hugging Face transformers, torch eager fp32),
built from ``YolosConfig`` alone: nothing is downloaded. transformers is not a dependency of
this package, so it comes from a side folder, never from .venv:

    python -m pip install --target /tmp/yolos_site transformers
    python scripts/bench_yolos.py --side /tmp/yolos_site --size 640x480 \
        --model runs/demo/run/best.pt --onnx /tmp/demo640.onnx \
        --backend torch onnxruntime onnxruntime:int8-dynamic onnxruntime:int8-static

Every argument but ``--side`` goes to ``vit-perception bench`` (same threads, same input
size). Prints bench's table, then YOLOS-S's median inference time at the same input size and
each backend's median inference time as a fraction of it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def yolos_small(side: str):
    sys.path.append(side)  # after .venv: the package's torch and numpy stay the ones in use
    from transformers import YolosConfig, YolosForObjectDetection

    # hustvl/yolos-small: DeiT-S backbone, 100 detection tokens, mid position embeddings; 30.7M
    config = YolosConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                         intermediate_size=1536, patch_size=16, image_size=[512, 864],
                         num_detection_tokens=100, use_mid_position_embeddings=True,
                         num_labels=91)
    return YolosForObjectDetection(config).eval()


def time_model(model, width: int, height: int, iters: int, warmup: int) -> dict[str, float]:
    import numpy as np
    import torch

    x = torch.randn(1, 3, height, width)
    samples = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            model(pixel_values=x)
            if i >= warmup:
                samples.append((time.perf_counter() - t0) * 1e3)
    a = np.asarray(samples)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90))}


def main() -> int:
    from vit_perception.commands import bench

    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--side", required=True, help="folder with transformers installed")
    side_args, rest = own.parse_known_args()
    parser = argparse.ArgumentParser(prog="bench_yolos.py", parents=[own])
    bench.add_arguments(parser)
    args = parser.parse_args()
    out = Path(args.json or Path(tempfile.mkdtemp()) / "bench.json")
    args.json = str(out)
    status = bench.run(args)
    if status:
        return status
    results = json.loads(out.read_text())
    w, h = results["machine"]["input_size"]
    yolos = yolos_small(side_args.side)
    params = sum(p.numel() for p in yolos.parameters()) / 1e6
    peer = time_model(yolos, w, h, args.iters, args.warmup)
    print(f"\nYOLOS-S ({params:.1f}M parameters; transformers, torch eager fp32, random "
          f"weights) at {w}x{h}: infer "
          f"median {peer['median']:.1f} ms, p90 {peer['p90']:.1f} ms  "
          f"({results['machine']['cpu']}, threads {results['machine']['threads']})")
    for name, r in results.items():
        if isinstance(r, dict) and "infer" in r:
            print(f"  {name:<26} infer median {r['infer']['median']:8.1f} ms = "
                  f"{r['infer']['median'] / peer['median']:.2f}x YOLOS-S")
    results["yolos_s"] = {"infer": peer}
    out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

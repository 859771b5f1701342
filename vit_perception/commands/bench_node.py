"""`vit-perception bench-node`: perception_node under a 30 Hz camera over real ROS 2 topics.

Prints end-to-end latency (publish -> detections, median/p90), processed and drop rates, the
node's own overhead outside the model (decode + pre + post + publish) as a fraction of model
time, DDS transport latency with and without the shipped Fast DDS profile, and the node's memory
at the start and the end.

``--busy N`` runs N CPU-burning processes beside the node throughout (stopped at the end, on
Ctrl-C and on errors; they also end if this process is killed) and records them in the JSON,
with the threads, OMP_WAIT_POLICY and CPU model the figures were taken with.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="checkpoint or model config (default: the tiny config)")
    parser.add_argument("--size", default="640x480", help="camera frame size WxH")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds of camera load (600 for the 10-minute memory figure)")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:N] (cpu)")
    parser.add_argument("--precision", default="fp32", help="fp32 | fp16 | bf16 | int8 (fp32)")
    parser.add_argument("--cameras", type=int, default=1,
                        help="cameras served by one node (image_topics), each at --rate, "
                        "frames batched: latency and drops per camera (1)")
    parser.add_argument("--no-transport", action="store_true",
                        help="skip the transport latency comparison")
    parser.add_argument("--json", default=None, help="write the figures as JSON here")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="N CPU-burning processes beside the node for the whole run (the "
                             "other programs of a busy robot computer); always stopped")
    parser.add_argument("--threads", type=int, default=0,
                        help="the node's threads parameter (0: the backend's default)")


def _frames(n: int, w: int, h: int, rate: float):
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w, 3), np.uint8)
    for i in range(n):
        yield int(1e9 + i * 1e9 / rate), "camera", np.roll(base, i * 4, axis=1)


def memory_figures(samples: list[tuple[float, float]], warmup_s: float = 60.0) -> dict:
    """The node's RSS (MB) at the first frame, after ``warmup_s`` (allocator and kernel caches
    filled) and at the end, and the growth after warm-up in MB per minute (a leak shows here)."""
    if not samples:
        return {}
    warm = next(((t, m) for t, m in samples if t >= warmup_s), None)
    end_t, end_mb = samples[-1]
    out = {"start": samples[0][1], "end": end_mb, "seconds": end_t}
    if warm is not None and end_t > warm[0]:
        out[f"after_{warmup_s:g}s"] = warm[1]
        out["growth_mb_per_min_after_warmup"] = (end_mb - warm[1]) / ((end_t - warm[0]) / 60)
    return out


def run(args: argparse.Namespace) -> int:
    import os
    import tempfile
    from pathlib import Path

    import numpy as np

    from vit_perception.config import available_configs
    from vit_perception.cpu_load import CpuBurners
    from vit_perception.ros import replay, transport_bench
    from vit_perception.runtime.threads import cpu_model, default_threads

    w, h = (int(v) for v in args.size.lower().split("x"))
    model = args.model or next(n for n in available_configs() if "tiny" in n)
    n = int(args.duration * args.rate)
    log = Path(tempfile.mkdtemp(prefix="bench_node_")) / "node.log"
    if args.cameras < 1:
        raise ValueError(f"--cameras must be at least 1, got {args.cameras}")
    print(f"perception_node ({model}, {args.backend}/{args.device}/{args.precision}) under "
          f"{n} frames of {w}x{h} at {args.rate:g} Hz from {args.cameras} camera(s); node log "
          f"{log}", flush=True)
    if args.busy < 0:
        raise ValueError(f"--busy {args.busy}: must be 0 or more")
    params: dict[str, object] = {"model": model, "backend": args.backend, "device": args.device,
                                 "precision": args.precision, "score_threshold": 0.3}
    if args.threads:
        params["threads"] = args.threads
    with CpuBurners(args.busy) as burners:
        busy: dict[str, object] = {"processes": args.busy, "pids": burners.pids}
        if args.busy:
            print(f"{args.busy} CPU-burning process(es) beside the node: {burners.pids}",
                  flush=True)
        res = replay.replay(_frames(n, w, h, args.rate), params, log, rate_hz=args.rate,
                            memory_every_s=5.0, cameras=args.cameras)
    busy["stopped"] = not burners.procs
    lat = np.array(list(res.latency_ms.values()) or [np.nan])
    d = res.diagnostics
    figures = {
        "frames_sent": res.sent,
        "frames_processed": len(res.detections),
        "processed_rate_hz": len(res.detections) / args.duration,
        "drop_rate": 1.0 - len(res.detections) / max(res.sent, 1),
        "latency_ms": {"median": float(np.median(lat)), "p90": float(np.percentile(lat, 90))},
        "model_ms_median": float(d.get("model_ms_median", "nan")),
        "overhead_ms_median": float(d.get("overhead_ms_median", "nan")),
        "overhead_ms_by_stage": {k: float(d.get(f"{k}_ms_median", "nan"))
                                 for k in ("decode", "preprocess", "postprocess", "publish")},
        "overhead_fraction": float(d.get("overhead_fraction", "nan")),
        "memory_mb": memory_figures(res.rss_mb),
        "busy": busy,
        "threads": args.threads or default_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "cpu": cpu_model(),
    }
    if args.cameras > 1:
        figures["frames_per_batch_mean"] = float(d.get("frames_per_batch_mean", "nan"))
        figures["cameras"] = {
            name: {"frames_processed": len(dets),
                   "drop_rate": 1.0 - len(dets) / max(res.sent, 1),
                   "latency_ms": {"median": float(np.median(list(lat.values()) or [np.nan])),
                                  "p90": float(np.percentile(list(lat.values()) or [np.nan],
                                                             90))}}
            for name, (dets, lat) in res.cameras.items()}
    if not args.no_transport:
        profile = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")
        figures["transport"] = {
            "with_profile": transport_bench.measure({"FASTDDS_DEFAULT_PROFILES_FILE": profile},
                                                    w, h, args.rate) if profile else None,
            "default_fastdds": transport_bench.measure({"FASTDDS_DEFAULT_PROFILES_FILE": ""},
                                                       w, h, args.rate),
        }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0

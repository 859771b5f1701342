"""The GPU figures of issue 14 for this package's code paths (run by scripts/gpu_check.sh).

Prints, for each model config: model time (median ms, batch 1, random weights) of the torch
runner variants (fp32 / fp16 / bf16, autocast or the whole model cast, eager or CUDA graphs,
torch.compile + graphs for vit_s16_detr), batch 8 frames/s, the predictor end to end on a
640x480 uint8 frame the way the node calls it (detections only, and all outputs), and the
training ratio (``train --profile``: whole step against compute-only step; augmentation on
the device, ``train.augment_device``'s CUDA default, and in the loader). Everything runs
under one time budget, most important first; what does not fit is listed as skipped.

``--device cpu --quick`` is the dry run of the same code on a CPU (tiny config, small sizes).
Needs torch, torchvision, numpy, pyyaml, scipy and faster-coco-eval or pycocotools; not OpenCV,
rosbags, matplotlib, onnx or rclpy.
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAIN = "vit_s16_detr"
OTHERS = ["swin_t_detr", "vit_b16_detr", "vit_s14_reg_detr", "vit_tiny_detr"]
# name: (precision, cast, cuda_graphs)
VARIANTS = {
    "fp32 eager": ("fp32", "autocast", False),
    "fp16 autocast eager": ("fp16", "autocast", False),
    "bf16 autocast eager": ("bf16", "autocast", False),
    "fp16 cast half eager": ("fp16", "half", False),
    "fp32 graphs": ("fp32", "autocast", True),
    "fp16 autocast graphs": ("fp16", "autocast", True),
    "bf16 autocast graphs": ("bf16", "autocast", True),
    "fp16 cast half graphs (default fp16)": ("fp16", "half", True),
    "bf16 cast half graphs": ("bf16", "half", True),
}
SHORT = ["fp32 eager", "fp16 autocast eager", "fp32 graphs",
         "fp16 cast half graphs (default fp16)", "bf16 autocast graphs"]


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args = args
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.t0 = time.perf_counter()
        self.results: dict[str, Any] = {}
        self.failures: list[str] = []
        self.skipped: list[str] = []
        quick = args.quick
        if quick and not self.cuda:
            torch.set_num_threads(1)  # a dry run beside other work
        self.iters: int = 3 if quick else args.iters
        self.warmup: int = 1 if quick else min(10, args.iters)
        self.size = (96, 64) if quick else args.size  # None: each config's own input size
        self.frame_size = (160, 120) if quick else (640, 480)
        self.batch = 2 if quick else 8

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def run(self, name: str, need_s: float, job: Callable[[], Any]) -> Any:
        """Run ``job`` if ``need_s`` seconds are left; record failures without stopping."""
        if self.left() < need_s:
            self.skipped.append(name)
            print(f"  {name}: skipped (time budget: {self.left():.0f} s left)", flush=True)
            return None
        signal.alarm(max(1, int(self.left())))  # no job runs past the budget
        try:
            value = job()
        except Exception as exc:  # noqa: BLE001 - every failure is reported, the rest goes on
            self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"  {name}: FAILED {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            if self.args.debug:
                traceback.print_exc()
            return None
        finally:
            signal.alarm(0)
        self.results[name] = value
        return value

    def sync(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time_ms(self, fn: Callable[[], Any], iters: int | None = None) -> float:
        for _ in range(self.warmup):
            fn()
        self.sync()
        samples = []
        for _ in range(iters or self.iters):
            t = time.perf_counter()
            fn()
            self.sync()
            samples.append((time.perf_counter() - t) * 1e3)
        return statistics.median(samples)

    # ------------------------------------------------------------------ figures
    def model(self, config: str) -> tuple[Any, tuple[int, int]]:
        from vit_perception.runtime.loading import load_torch_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net, _post, cfg = load_torch_model(config, self.size)
        return net, (int(cfg["input"]["width"]), int(cfg["input"]["height"]))

    def variant(self, net: Any, size: tuple[int, int], precision: str, cast: str,
                graphs: bool, batch: int = 1, compile: bool = False) -> dict[str, float]:
        import torch

        from vit_perception.runtime.torch_runner import TorchRunner

        if graphs and not self.cuda:
            raise RuntimeError("CUDA graphs need a CUDA device (n/a in a CPU dry run)")
        runner = TorchRunner(net, device=self.device, precision=precision, cast=cast,
                             cuda_graphs=graphs, compile=compile)
        w, h = size
        x = torch.randn(batch, 3, h, w, device=self.device).to(runner.input_dtype)
        try:
            t = time.perf_counter()
            runner.infer({"images": x})  # activation, capture or compilation
            self.sync()
            first_s = time.perf_counter() - t
            ms = self.time_ms(lambda: runner.infer({"images": x}))
        finally:
            runner.deactivate()
            net.float()
        return {"ms": ms, "frames_per_s": 1e3 * batch / ms, "first_call_s": first_s}

    def config_variants(self, config: str, names: list[str], batch8: bool) -> None:
        net, size = self.model(config)
        tag = f"{config} {size[0]}x{size[1]}"
        print(f"{tag}, model time (median of {self.iters}, batch 1):", flush=True)
        for name in names:
            precision, cast, graphs = VARIANTS[name]
            if graphs and not self.cuda:
                print(f"  {name}: n/a on {self.device}")
                continue
            r = self.run(f"{config} {name}", 15,
                         functools.partial(self.variant, net, size, precision, cast, graphs))
            if r:
                print(f"  {name:<40} {r['ms']:8.2f} ms", flush=True)
        if batch8:
            graphs = self.cuda
            label = f"{config} batch {self.batch} fp16 cast half" + (" graphs" if graphs else "")
            r = self.run(label, 20, lambda: self.variant(net, size, "fp16", "half", graphs,
                                                         batch=self.batch))
            if r:
                print(f"  batch {self.batch}, fp16 cast half{' + graphs' if graphs else ''}: "
                      f"{r['ms']:.2f} ms = {r['frames_per_s']:.0f} frames/s", flush=True)
        self.free()

    def compile_variant(self, config: str) -> None:
        net, size = self.model(config)
        graphs = self.cuda
        r = self.run(f"{config} fp16 cast half compile" + ("+graphs" if graphs else ""), 120,
                     lambda: self.variant(net, size, "fp16", "half", graphs, compile=True))
        if r:
            print(f"  fp16 cast half, torch.compile{' + graphs' if graphs else ''}: "
                  f"{r['ms']:.2f} ms (first call, compiling: {r['first_call_s']:.0f} s)",
                  flush=True)
        self.free()

    def predictor(self, config: str) -> None:
        import numpy as np

        from vit_perception.runtime.predictor import Predictor

        w, h = self.frame_size
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(self.batch)]
        precision = "fp16" if self.cuda else "fp32"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = Predictor.load(config, backend="torch", device=str(self.device),
                                  precision=precision, input_size=self.size)
        print(f"{config} predictor end to end ({w}x{h} uint8 frame -> detections; "
              f"{precision}{', CUDA graphs' if self.cuda else ''}):", flush=True)
        try:
            for label, want in (("detections only", False), ("all outputs", True)):
                pred.want_features = pred.want_attention = pred.want_embedding = want
                r = self.run(f"{config} predictor {label}", 10,
                             lambda: {"ms": self.time_ms(lambda: pred.predict(frames[0]))})
                if r:
                    print(f"  {label:<40} {r['ms']:8.2f} ms", flush=True)
            pred.want_features = pred.want_attention = pred.want_embedding = False
            r = self.run(f"{config} predictor batch {self.batch}", 10,
                         lambda: {"ms": self.time_ms(lambda: pred.predict_batch(frames))})
            if r:
                print(f"  {self.batch} frames in one batch (cameras)   {r['ms']:8.2f} ms = "
                      f"{1e3 * self.batch / r['ms']:.0f} frames/s", flush=True)
        finally:
            pred.close()
        self.free()

    def training(self, config: str) -> None:
        from vit_perception.config import load_config
        from vit_perception.training.profile import format_profile, profile_training

        quick = self.args.quick
        train = {"batch_size": 2 if quick else 16, "workers": 0 if quick else 8,
                 "threads": 1 if quick else 0, "checkpoint_every_s": 0}
        overrides: dict = {"train": train}
        if self.size:
            overrides["input"] = {"width": self.size[0], "height": self.size[1]}
        cfg = load_config(config, overrides)
        frames = (8, 4, self.frame_size) if quick else (256, 32, self.frame_size)
        steps = 3 if quick else 100
        print(f"{config} training ratio (batch {train['batch_size']}, {frames[0]} synthetic "
              f"{frames[2][0]}x{frames[2][1]} frames, {frames[1]} validation frames, "
              f"workers {train['workers']}):", flush=True)
        r = self.run(f"{config} training ratio", 90 if not quick else 5,
                     lambda: profile_training(cfg, device=str(self.device), steps=steps,
                                              warmup=2 if quick else 5, synthetic=frames))
        if r:
            print("  " + format_profile(r).replace("\n", "\n  "), flush=True)
        self.free()
        # the same with augmentation on the other side (train.augment_device: auto is the
        # device on CUDA, the loader on a CPU); 50 timed steps, to leave the budget to the rest
        other = "cpu" if self.cuda else "device"
        cfg_other = load_config(config, {**overrides, "train": {**train,
                                                                "augment_device": other}})
        print(f"{config} training ratio, augmentation on the "
              f"{'CPU (loader)' if other == 'cpu' else 'device'}:", flush=True)
        r = self.run(f"{config} training ratio augment {other}", 60 if not quick else 5,
                     lambda: profile_training(cfg_other, device=str(self.device),
                                              steps=steps if quick else 50,
                                              warmup=2 if quick else 5, synthetic=frames))
        if r:
            print("  " + format_profile(r).replace("\n", "\n  "), flush=True)
        self.free()

    def free(self) -> None:
        import gc

        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def goals(self) -> None:
        r = self.results
        main_half = r.get(f"{MAIN} fp16 cast half graphs (default fp16)")
        fp32 = r.get(f"{MAIN} fp32 eager")
        end = r.get(f"{MAIN} predictor detections only")
        ratio = r.get(f"{MAIN} training ratio")
        print("goals (issue 14):")
        if main_half:
            print(f"  {MAIN} fp16 model time <= 1.5 ms: {main_half['ms']:.2f} ms")
        if main_half and fp32:
            print(f"  fp16 never slower than fp32: fp16 {main_half['ms']:.2f} ms, fp32 eager "
                  f"{fp32['ms']:.2f} ms")
        if end:
            print(f"  predictor end to end <= 2.5 ms: {end['ms']:.2f} ms")
        if ratio:
            print(f"  training >= 80% of compute-only: {100 * ratio['ratio']:.0f}% "
                  f"(augmentation on the {ratio.get('augment', 'cpu')})")
        for side in ("cpu", "device"):
            other = r.get(f"{MAIN} training ratio augment {side}")
            if other:
                print(f"    with augmentation on the {side}: {100 * other['ratio']:.0f}%")


def environment(device: str) -> None:
    """Fail early with a clear message when something the figures need is missing."""
    import importlib.util

    import torch

    missing = [m for m in ("numpy", "yaml", "torchvision", "scipy")
               if importlib.util.find_spec(m) is None]
    if not any(importlib.util.find_spec(m) for m in ("faster_coco_eval", "pycocotools")):
        missing.append("faster_coco_eval (or pycocotools)")
    if missing:
        sys.exit(f"gpu_check: missing Python modules: {', '.join(missing)} (scripts/gpu_check.sh"
                 " installs them from .whl/; fill it with scripts/gpu_check.sh --download)")
    try:  # present is not enough: scipy's wheel needs numpy >= 2 (torch's numpy may be older)
        from scipy.optimize import linear_sum_assignment  # noqa: F401
    except ImportError as exc:
        sys.exit(f"gpu_check: scipy does not import ({exc}); the matcher needs it")
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device (driver, "
                 "CUDA_VISIBLE_DEVICES, a CPU-only torch build?); --device cpu --quick is the "
                 "dry run")
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "-"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device {device} ({gpu}), "
          f"python {sys.version.split()[0]}", flush=True)


def block(modules: str) -> None:
    """Make ``modules`` unimportable (a dry run proving the check needs none of them)."""
    for name in filter(None, (m.strip() for m in modules.split(","))):
        sys.modules[name] = None  # type: ignore[assignment]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true",
                        help="tiny config and sizes, few iterations (the CPU dry run)")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="seconds for all figures; what does not fit is skipped (330)")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--size", type=lambda v: tuple(int(x) for x in v.lower().split("x")),
                        help="model input WxH for every config (default: each config's own)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--block", default="", help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", help="tracebacks of failures")
    args = parser.parse_args()
    block(args.block)
    environment(args.device)
    check = Check(args)

    def out_of_time(signum: int, frame: Any) -> None:
        raise TimeoutError(f"over the {args.budget_s:.0f} s budget")

    signal.signal(signal.SIGALRM, out_of_time)
    try:
        figures(check, args)
    except KeyboardInterrupt:  # the shell's hard limit: still say what was measured
        print("gpu_check: interrupted", file=sys.stderr)
        check.failures.append("interrupted")
    check.goals()
    if args.json:
        Path(args.json).write_text(json.dumps(check.results, indent=1, default=str))
    print(f"gpu_check: {time.perf_counter() - check.t0:.0f} s, {len(check.results)} figures, "
          f"{len(check.skipped)} skipped, {len(check.failures)} failed")
    for failure in check.failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if check.failures else 0


def figures(check: Check, args: argparse.Namespace) -> None:
    """Most important first: what does not fit the budget is skipped."""
    main_config = "vit_tiny_detr" if args.quick else MAIN
    names = [n for n in VARIANTS if "graphs" in n or "eager" in n and n[:4] in ("fp32", "bf16")]
    check.config_variants(main_config, names if args.quick else list(VARIANTS), batch8=True)
    check.predictor(main_config)
    check.training(main_config)
    for config in ([] if args.quick else OTHERS):
        check.config_variants(config, SHORT, batch8=True)
    if check.cuda:
        print(f"{main_config}, torch.compile (the first call compiles; the inductor cache "
              "under the engine cache keeps the result for the next process):")
        check.compile_variant(main_config)


if __name__ == "__main__":
    sys.exit(main())

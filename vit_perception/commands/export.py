"""`vit-perception export`: checkpoint or config -> ONNX (verified in ONNX Runtime) -> TensorRT.

The ONNX carries the run-time metadata (input size, mean/std, class names, model hash, config)
in ``metadata_props``; an engine is written with the same metadata in a JSON sidecar and cached
under a key of ONNX hash, TensorRT version, GPU, compute capability, precision and input shape.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from vit_perception.commands.bench import _size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="checkpoint .pt, or a model config name/YAML (random weights)")
    parser.add_argument("--out", help="output path (default: <config>-<W>x<H>.onnx here)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17")
    parser.add_argument("--size", type=_size, help="input WxH (default: the config's)")
    parser.add_argument("--dynamic-batch", action="store_true", help="symbolic batch axis")
    parser.add_argument("--format", choices=["onnx", "engine", "both"], default="onnx")
    parser.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                        help="TensorRT engine precision")
    parser.add_argument("--cache-dir", help="TensorRT engine cache (default ~/.cache/...)")
    parser.add_argument("--verify", type=int, default=3, metavar="N",
                        help="random inputs compared between PyTorch and ONNX Runtime (0: skip)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="max relative error accepted in the verification")
    q = parser.add_argument_group(
        "static int8 for ONNX Runtime on the CPU (written as <out stem>.int8.onnx, which "
        "`precision: int8` then takes)")
    q.add_argument("--int8-calibrate", nargs="+", metavar="BAG",
                   help="calibrate activations on frames of these bags, then replay held-out "
                        "frames through fp32 and int8 and print the AP change")
    q.add_argument("--calib-frames", type=int, default=100, metavar="N",
                   help="frames spread over the calibration bags (100)")
    q.add_argument("--calib-topic", default="/camera/image_raw", help="image topic")
    q.add_argument("--calib-method", choices=["percentile", "entropy", "minmax"],
                   default="percentile", help="activation ranges (percentile 99.999)")
    q.add_argument("--int8-attention", choices=["scores", "all", "float"], default="scores",
                   help="attention products in int8: q.k^T (scores, the default), q.k^T and "
                        "softmax.v (all: faster, coarser on diffuse heads) or neither (float)")
    q.add_argument("--val", nargs="+", metavar="BAG",
                   help="held-out bags for the AP check (default: the last quarter of each "
                        "calibration bag, which calibration does not use)")
    q.add_argument("--labels-topic", default="/labels", help="labels for the AP check")


def run(args: argparse.Namespace) -> int:
    import warnings

    from vit_perception.runtime.loading import load_torch_model
    from vit_perception.runtime.metadata import ModelMetadata, state_dict_hash
    from vit_perception.runtime.onnx_export import (
        export_onnx,
        op_histogram,
        tensorrt_problems,
        verify_onnx,
    )

    if args.int8_calibrate and args.format == "engine" and not args.out:
        print("--int8-calibrate writes next to the ONNX file: use --format onnx or both, or "
              "--out", file=sys.stderr)
        return 2
    if args.int8_calibrate:  # fail before the export, not after it
        from vit_perception.runtime.calibration import count_frames

        for bag in [*args.int8_calibrate, *(args.val or [])]:
            count_frames(bag, args.calib_topic)
    if args.opset < 17:
        print(f"--opset {args.opset}: need 17 or newer (LayerNormalization)", file=sys.stderr)
        return 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net, _post, cfg = load_torch_model(args.model, args.size)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    meta = ModelMetadata.from_config(cfg, state_dict_hash(net))
    width, height = meta.input_size
    out = Path(args.out) if args.out else Path(f"{meta.config_name or 'model'}-{width}x{height}")
    onnx_path = out if out.suffix == ".onnx" else out.with_suffix(".onnx")
    if args.format == "engine" and not args.out:
        onnx_path = onnx_path.with_suffix(".tmp.onnx")

    export_onnx(net, onnx_path, (width, height), opset=args.opset,
                dynamic_batch=args.dynamic_batch, metadata=meta)
    ops = op_histogram(onnx_path)
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB, opset {args.opset}, "
          f"input 1x3x{height}x{width}, {sum(ops.values())} nodes)")
    print("ops: " + ", ".join(f"{k} {v}" for k, v in list(ops.items())[:12]))
    problems = tensorrt_problems(onnx_path)
    if problems:
        print("ops TensorRT cannot run: " + ", ".join(problems), file=sys.stderr)
    else:
        print("TensorRT check: no denied ops")
    status = 0
    if args.verify:
        errors = verify_onnx(net, onnx_path, (width, height), trials=args.verify)
        print(f"ONNX Runtime vs PyTorch on {args.verify} random inputs:")
        for name, (abs_err, rel_err) in errors.items():
            flag = "" if rel_err <= args.tolerance else "  <-- above tolerance"
            print(f"  {name:<12} max abs {abs_err:.3e}  max rel {rel_err:.3e}{flag}")
        if any(rel > args.tolerance for _abs, rel in errors.values()):
            status = 1
    if problems:
        status = 1
    if args.int8_calibrate:
        from vit_perception.evaluation.int8_check import calibrate_and_check

        calibrate_and_check(onnx_path, args.int8_calibrate, args.calib_topic, args.calib_frames,
                            args.calib_method, args.val or (), args.labels_topic,
                            attention=args.int8_attention)
    if args.format in ("engine", "both"):
        status = max(status, _engine(args, onnx_path, meta, out))
        if args.format == "engine" and not args.out:
            onnx_path.unlink(missing_ok=True)
    return status


def _engine(args: argparse.Namespace, onnx_path: Path, meta, out: Path) -> int:
    from vit_perception.runtime.base import RunnerError
    from vit_perception.runtime.engine_cache import engine_for_onnx, engine_metadata_path
    from vit_perception.runtime.tensorrt_runner import tensorrt_available

    if not tensorrt_available():
        print("TensorRT engine not built: the `tensorrt` Python package and a CUDA GPU are needed "
              "(JetPack ships TensorRT; desktop: NVIDIA's pip index). The ONNX above can be "
              "built later on the robot with `vit-perception export --format engine`.",
              file=sys.stderr)
        return 3
    try:
        cached = engine_for_onnx(onnx_path, meta, args.precision, cache_dir=args.cache_dir)
    except RunnerError as exc:
        print(f"TensorRT engine build failed: {exc}", file=sys.stderr)
        return 1
    engine = out.with_suffix(".engine")
    shutil.copyfile(cached, engine)
    shutil.copyfile(engine_metadata_path(cached), engine_metadata_path(engine))
    print(f"wrote {engine} ({args.precision}) and {engine_metadata_path(engine)}; "
          f"cached as {cached}")
    return 0

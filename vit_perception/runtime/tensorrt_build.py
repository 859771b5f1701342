"""Build a TensorRT engine from ONNX (FP32 or FP16 with numerically fragile layers kept in FP32).

ViT/DETR in plain FP16 lose accuracy in LayerNorm (variance of large activations overflows) and
softmax; in FP16 mode those layers, and reductions, are pinned to FP32 through layer precision
constraints with ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vit_perception.runtime.base import RunnerError
from vit_perception.runtime.tensorrt_runner import import_tensorrt

PRECISIONS = ("fp32", "fp16")


def fp32_layer_types(trt: Any) -> set[Any]:
    """Layer types pinned to FP32 in FP16 mode."""
    return {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE}


def pin_fp32_layers(network: Any, trt: Any) -> int:
    """Constrain LayerNorm / softmax / reduce layers to FP32; returns how many were pinned."""
    kinds = fp32_layer_types(trt)
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in kinds:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def build_engine(
    onnx_path: str | Path,
    precision: str = "fp32",
    workspace_bytes: int = 2 << 30,
    max_batch: int = 1,
    verbose: bool = False,
) -> bytes:
    """Parse ``onnx_path`` and return a serialized engine (``RunnerError`` on failure)."""
    if precision not in PRECISIONS:
        raise RunnerError(f"tensorrt: precision {precision!r} not in {PRECISIONS}")
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RunnerError(f"tensorrt: cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16":
        if not builder.platform_has_fast_fp16:
            raise RunnerError("tensorrt: this GPU has no fast FP16")
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pin_fp32_layers(network, trt)
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise RunnerError(f"tensorrt: input {tensor.name} has dynamic spatial dims {shape}")
        if shape[0] < 0:  # dynamic batch: one profile 1..max_batch
            profile = profile or builder.create_optimization_profile()
            lo, hi = [1, *shape[1:]], [max(1, max_batch), *shape[1:]]
            profile.set_shape(tensor.name, lo, hi, hi)
    if profile is not None:
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RunnerError(f"tensorrt: engine build failed for {onnx_path}")
    return bytes(serialized)

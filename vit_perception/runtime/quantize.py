"""Dynamic int8 for ONNX Runtime on the CPU: int8 weights, activations quantised per run.

x86 int8 GEMMs multiply uint8 activations by int8 weights. With VNNI (AVX512-VNNI, AVX-VNNI) or
AMX the products are summed in 32 bits. Without them (AVX2 only, e.g. AMD EPYC before Zen 4, or
AVX-512 without VNNI) ONNX Runtime's kernels use ``vpmaddubsw``, which adds each *pair* of
products in 16 bits with saturation: ``255 * 127 * 2 = 64770`` overflows ``32767``, and the
features came out 10% off. ONNX Runtime's documentation gives the remedy used here: weights in
7 bits (``reduce_range``, ``|w| <= 64``), so a pair sums to at most ``255 * 64 * 2 = 32640`` and
can never saturate. Integer products are exact, so the reduced-range model gives the same
result on every CPU; the full-range one is used only where VNNI/AMX sum in 32 bits.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Iterable
from pathlib import Path

# x86 flags (as /proc/cpuinfo spells them) whose u8 x s8 kernels accumulate in 32 bits.
WIDE_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# Largest |weight| for which a pair of u8 x s8 products fits int16: 2 * 255 * 64 = 32640.
REDUCED_WEIGHT_MAX = 64


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def int8_needs_reduced_range(flags: Iterable[str] | None = None,
                             machine: str | None = None) -> bool:
    """True unless this is an x86 CPU whose int8 kernels cannot saturate (VNNI or AMX).

    Anything unknown (other architectures, unreadable flags) takes the reduced range: it is
    correct everywhere and costs a little accuracy (7-bit weights)."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return True
    return not (set(cpu_flags() if flags is None else flags) & WIDE_INT8_FLAGS)


def int8_variant_tag(reduce_range: bool) -> str:
    """The cache tag of a dynamic int8 copy: a copy made for one CPU kind is never reused on
    another (the full-range copy saturates without VNNI)."""
    return "ort-int8-r7" if reduce_range else "ort-int8-s8"


def ort_int8_model(source: Path, path: Path, reduce_range: bool | None = None) -> Path:
    """``source`` (the file ``path`` or its fused CPU variant) with the weights of every MatMul
    and fused Attention quantised to int8 (ONNX Runtime dynamic quantisation: activations are
    quantised per run, so no calibration data is needed).

    ``reduce_range``: 7-bit weights (see the module docstring); ``None`` decides from this CPU
    (``int8_needs_reduced_range``). Cached as ``<name>.<hash>.<int8_variant_tag>.onnx`` next to
    ``path`` (``onnx_runner._variant_path``).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from vit_perception.runtime.onnx_runner import _variant_path

    if reduce_range is None:
        reduce_range = int8_needs_reduced_range()
    data = Path(source).read_bytes()
    cached = _variant_path(path, data, int8_variant_tag(reduce_range))
    if cached.is_file():
        return cached
    tmp = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice for calibrated (static) runs
    try:
        # The fused Attention is a contrib op without shape inference: its outputs are float.
        quantize_dynamic(onnx.load_from_string(data), tmp, weight_type=QuantType.QInt8,
                         reduce_range=reduce_range, op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    os.replace(tmp, cached)
    return cached

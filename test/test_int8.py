"""int8 in ONNX Runtime: dynamic (weights only) on every x86 CPU kind, static (calibrated)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from vit_perception.runtime.base import RunnerError
from vit_perception.runtime.loading import load_torch_model
from vit_perception.runtime.metadata import ModelMetadata, state_dict_hash
from vit_perception.runtime.onnx_export import export_onnx
from vit_perception.runtime.onnx_runner import OnnxRunner, ort_cpu_model
from vit_perception.runtime.quantize import (
    REDUCED_WEIGHT_MAX,
    int8_needs_reduced_range,
    int8_variant_tag,
    ort_int8_model,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, post, cfg = load_torch_model("vit_tiny_detr")
    meta = ModelMetadata.from_config(cfg, state_dict_hash(net))
    path = export_onnx(net, tmp_path_factory.mktemp("tiny") / "tiny.onnx", meta.input_size,
                       metadata=meta)
    return net, post, meta, path


def _int8_weights(path) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return [numpy_helper.to_array(i) for i in model.graph.initializer
            if i.data_type == onnx.TensorProto.INT8]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def test_int8_weight_range_follows_the_cpu():
    """Full 8-bit weights only where u8 x s8 products are summed in 32 bits (VNNI, AMX)."""
    assert int8_needs_reduced_range({"sse4_2", "avx", "avx2", "fma"}, "x86_64")  # EPYC Rome
    assert int8_needs_reduced_range({"avx2", "avx512f", "avx512bw"}, "x86_64")  # Skylake-SP
    assert int8_needs_reduced_range(set(), "x86_64")  # unreadable flags: the safe choice
    assert int8_needs_reduced_range({"asimd", "asimddp"}, "aarch64")
    for wide in ({"avx2", "avx512bw", "avx512_vnni"}, {"avx2", "avx_vnni"}, {"amx_int8"}):
        assert not int8_needs_reduced_range(wide, "x86_64"), wide
    assert int8_variant_tag(True) != int8_variant_tag(False)


@pytest.mark.parametrize("reduce_range", [True, False], ids=["7bit-avx2", "8bit-vnni"])
def test_onnxruntime_int8_weights_are_quantised_cached_and_close(tiny, reduce_range):
    """precision int8, both weight ranges: a cached copy (one per range, so a copy made on one
    CPU kind is not reused on another) whose MatMul/Attention weights are int8; the backbone
    features stay within a few percent of fp32; the exported file is untouched.

    The 7-bit copy is what an AVX2-only CPU runs: its weights are at most 64 in magnitude, so a
    pair of u8 x s8 products (2 * 255 * 64 = 32640) cannot saturate the 16-bit sums of the
    AVX2 kernel, and integer products are exact: the error measured here is the error there.
    The 8-bit copy saturates on AVX2 (measured 0.100 on features there); it runs only on
    VNNI/AMX CPUs, so its accuracy is checked only on one.
    """
    import onnx

    net, _post, meta, path = tiny
    before = path.read_bytes()
    q = ort_int8_model(ort_cpu_model(path), path, reduce_range=reduce_range)
    assert q.name.endswith(f".{int8_variant_tag(reduce_range)}.onnx")
    assert path.read_bytes() == before
    assert ort_int8_model(ort_cpu_model(path), path, reduce_range=reduce_range) == q  # cached
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"DynamicQuantizeMatMul", "MatMulInteger", "QAttention"} & ops, sorted(ops)
    weights = _int8_weights(q)
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    if reduce_range:
        assert largest <= REDUCED_WEIGHT_MAX and 2 * 255 * largest <= 32767
    else:
        assert largest > REDUCED_WEIGHT_MAX  # really the full range
    w, h = meta.input_size
    x = {"images": torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(5))}
    with OnnxRunner(path) as fp32, OnnxRunner(path, precision="int8",
                                              int8_reduce_range=reduce_range) as int8:
        assert int8.model_file == q
        a, b = fp32.infer(x), int8.infer(x)
    if not reduce_range and int8_needs_reduced_range():
        pytest.skip("full-range int8 runs only on VNNI/AMX CPUs; this one saturates it")
    for name in ("features", "embedding"):
        rel = _rel(a[name], b[name])
        # measured 0.009-0.011 (features) and 0.020-0.027 (embedding) on both ranges
        assert 0 < rel < 0.05, (name, rel)  # quantised (not identical), yet close


def test_onnxruntime_int8_default_takes_this_cpus_range(tiny):
    _net, _post, _meta, path = tiny
    with OnnxRunner(path, precision="int8") as runner:
        assert runner.model_file is not None
        assert runner.model_file.name.endswith(
            f".{int8_variant_tag(int8_needs_reduced_range())}.onnx")
    with pytest.raises(RunnerError, match="precision"):
        OnnxRunner(path, precision="fp16")

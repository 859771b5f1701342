"""TensorRT engine build, cache and runner; run only where tensorrt and a CUDA GPU exist."""

from __future__ import annotations

import warnings

import pytest
import torch

from vit_perception.runtime.tensorrt_runner import tensorrt_available

pytestmark = pytest.mark.skipif(
    not tensorrt_available(),
    reason="needs the `tensorrt` Python package and a CUDA GPU (neither is installable here)",
)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from vit_perception.runtime.loading import load_torch_model
    from vit_perception.runtime.metadata import ModelMetadata, state_dict_hash
    from vit_perception.runtime.onnx_export import export_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, post, cfg = load_torch_model("vit_tiny_detr")
    meta = ModelMetadata.from_config(cfg, state_dict_hash(net))
    path = export_onnx(net, tmp_path_factory.mktemp("trt") / "tiny.onnx", meta.input_size,
                       metadata=meta)
    return net, meta, path


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 5e-2)])
def test_engine_matches_torch_and_is_cached(tiny_onnx, tmp_path, precision, tol):
    from vit_perception.runtime.engine_cache import engine_for_onnx, read_engine_metadata
    from vit_perception.runtime.onnx_export import compare_outputs
    from vit_perception.runtime.tensorrt_runner import TensorRTRunner
    from vit_perception.runtime.torch_runner import TorchRunner

    net, meta, onnx_path = tiny_onnx
    engine = engine_for_onnx(onnx_path, meta, precision, cache_dir=tmp_path)
    mtime = engine.stat().st_mtime_ns
    assert engine_for_onnx(onnx_path, meta, precision, cache_dir=tmp_path) == engine
    assert engine.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert read_engine_metadata(engine).extra["precision"] == precision
    w, h = meta.input_size
    x = {"images": torch.randn(2, 3, h, w, device="cuda")}
    with TorchRunner(net, device="cuda") as ref, TensorRTRunner(engine) as trt_runner:
        errors = compare_outputs(ref.infer(x), trt_runner.infer(x))
    for name, (_abs, rel) in errors.items():
        assert rel < tol, (name, rel)


def test_corrupt_engine_rebuilt(tiny_onnx, tmp_path):
    from vit_perception.runtime.engine_cache import engine_for_onnx

    _net, meta, onnx_path = tiny_onnx
    engine = engine_for_onnx(onnx_path, meta, "fp32", cache_dir=tmp_path)
    engine.write_bytes(b"\0" * 64)
    with pytest.warns(UserWarning, match="rebuilding"):
        again = engine_for_onnx(onnx_path, meta, "fp32", cache_dir=tmp_path)
    assert again.stat().st_size > 64

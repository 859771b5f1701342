"""`vit-perception export` end to end on the tiny config (ONNX, metadata, verification)."""

from __future__ import annotations

import pytest

from vit_perception.cli import main
from vit_perception.config import available_configs
from vit_perception.runtime.metadata import read_onnx_metadata
from vit_perception.runtime.tensorrt_runner import tensorrt_available


def tiny() -> str:
    names = sorted(n for n in available_configs() if "tiny" in n)
    if not names:
        pytest.skip("no config named *tiny* under config/models")
    return names[0]


def test_export_onnx_verifies_and_carries_metadata(tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    rc = main(["export", "--model", tiny(), "--out", str(out), "--size", "224x160",
               "--verify", "1"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "max abs" in text and "max rel" in text and "no denied ops" in text
    meta = read_onnx_metadata(out)
    assert meta.input_size == (224, 160) and meta.class_names and len(meta.model_hash) == 64
    assert meta.config_name == tiny() and len(meta.mean) == 3


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT present: the engine test covers it")
def test_engine_without_tensorrt_says_so(tmp_path, capsys):
    rc = main(["export", "--model", tiny(), "--out", str(tmp_path / "t.onnx"), "--format",
               "both", "--verify", "0", "--size", "64x64"])
    assert rc == 3
    assert "TensorRT engine not built" in capsys.readouterr().err
    assert (tmp_path / "t.onnx").is_file()


def test_export_rejects_old_opset(capsys):
    assert main(["export", "--model", "x", "--opset", "13"]) == 2

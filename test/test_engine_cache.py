"""Engine cache key and metadata logic, with injected builder/validator (no TensorRT needed)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from vit_perception.runtime.engine_cache import (
    EngineCache,
    EngineKey,
    engine_metadata_path,
    read_engine_metadata,
)
from vit_perception.runtime.metadata import ModelMetadata

KEY = EngineKey("onnxhash", "10.3.0", "Orin", "8.7", "fp16", (1, 3, 480, 640))
META = ModelMetadata(640, 480, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], ["person", "cup"],
                     "weights123", "vit_s16_detr")


class FakeBuilder:
    def __init__(self):
        self.calls = 0

    def __call__(self, onnx_path, precision):
        self.calls += 1
        return f"ENGINE {onnx_path.name} {precision} #{self.calls}".encode()


def validate(data: bytes) -> None:
    if not data.startswith(b"ENGINE"):
        raise ValueError("not an engine")


@pytest.fixture
def cache(tmp_path):
    return EngineCache(tmp_path / "engines", build=FakeBuilder(), validate=validate)


@pytest.fixture
def onnx_file(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_bytes(b"onnx")
    return p


@pytest.mark.parametrize("field,value", [
    ("onnx_sha256", "otherhash"), ("trt_version", "10.4.0"), ("gpu_name", "RTX 4090"),
    ("compute_capability", "8.9"), ("precision", "fp32"), ("input_shape", (1, 3, 240, 320)),
])
def test_each_key_field_changes_the_key(field, value):
    assert dataclasses.replace(KEY, **{field: value}).digest() != KEY.digest()


def test_key_is_stable():
    assert EngineKey(**dataclasses.asdict(KEY)).digest() == KEY.digest()
    assert EngineKey.from_fields(KEY.fields()) == KEY


def test_reuse_when_unchanged_and_sidecar_metadata(cache, onnx_file):
    first = cache.get_or_build(onnx_file, KEY, META)
    assert cache.build.calls == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get_or_build(onnx_file, KEY, META) == first
    assert cache.build.calls == 1
    meta = read_engine_metadata(first)
    assert meta.input_size == (640, 480) and meta.class_names == ["person", "cup"]
    assert meta.mean == META.mean and meta.std == META.std and meta.model_hash == "weights123"
    assert meta.extra["precision"] == "fp16" and meta.extra["trt_version"] == "10.3.0"
    assert meta.extra["key_fields"] == KEY.fields()
    assert meta.extra["engine_key"] == KEY.digest()


def test_rebuild_when_a_field_changes(cache, onnx_file):
    a = cache.get_or_build(onnx_file, KEY, META)
    b = cache.get_or_build(onnx_file, dataclasses.replace(KEY, trt_version="10.4.0"), META)
    assert a != b and cache.build.calls == 2
    assert read_engine_metadata(b).extra["trt_version"] == "10.4.0"


@pytest.mark.parametrize("damage", ["truncate", "garbage_same_sha", "sidecar", "missing_engine"])
def test_corrupt_engine_is_rebuilt_with_warning(cache, onnx_file, damage):
    path = cache.get_or_build(onnx_file, KEY, META)
    side = engine_metadata_path(path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:5])
    elif damage == "garbage_same_sha":  # bytes match the sidecar but TensorRT refuses them
        import hashlib
        import json

        path.write_bytes(b"garbage")
        d = json.loads(side.read_text())
        d["extra"]["engine_sha256"] = hashlib.sha256(b"garbage").hexdigest()
        side.write_text(json.dumps(d))
    elif damage == "sidecar":
        side.write_text("{not json")
    else:
        path.unlink()
    with pytest.warns(UserWarning, match="unusable.*rebuilding"):
        again = cache.get_or_build(onnx_file, KEY, META)
    assert again == path and cache.build.calls == 2
    assert validate(path.read_bytes()) is None
    assert read_engine_metadata(path).extra["key_fields"] == KEY.fields()


def test_missing_entry_builds_without_warning(cache, onnx_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.lookup(KEY) is None
        cache.get_or_build(onnx_file, KEY, META)

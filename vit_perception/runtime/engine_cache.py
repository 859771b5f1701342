"""A cache of TensorRT engines keyed by everything that makes an engine valid.

An engine is tied to the ONNX it came from, the TensorRT version, the GPU (name and compute
capability), the precision and the input shape. ``EngineCache.get_or_build`` reuses a cached
engine when all of these match and rebuilds when any changed; an engine whose bytes no longer
match its sidecar, or that fails to deserialize, is rebuilt with a warning. The builder and the
validator are injected, so this logic is tested without TensorRT.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vit_perception.runtime.metadata import ModelMetadata, file_sha256

SIDECAR_SUFFIX = ".json"


@dataclasses.dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    precision: str  # fp32 | fp16
    input_shape: tuple[int, ...]  # (B, 3, H, W)

    def fields(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    def digest(self) -> str:
        blob = json.dumps(self.fields(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    @classmethod
    def from_fields(cls, d: dict[str, Any]) -> EngineKey:
        return cls(**{**d, "input_shape": tuple(d["input_shape"])})


def engine_metadata_path(engine: str | Path) -> Path:
    return Path(engine).with_suffix(SIDECAR_SUFFIX)


def read_engine_metadata(engine: str | Path) -> ModelMetadata:
    """The metadata sidecar (``x.engine`` -> ``x.json``) of an engine."""
    side = engine_metadata_path(engine)
    try:
        return ModelMetadata.read_json(side)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{engine}: no readable metadata sidecar {side}: {exc}") from exc


def write_engine(engine_path: Path, data: bytes, meta: ModelMetadata, key: EngineKey) -> None:
    """Write engine bytes and their sidecar atomically (sidecar last: it marks completion)."""
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, engine_path)
    side = dataclasses.replace(meta, extra={
        **meta.extra,
        "precision": key.precision,
        "trt_version": key.trt_version,
        "engine_key": key.digest(),
        "key_fields": key.fields(),
        "engine_sha256": hashlib.sha256(data).hexdigest(),
    })
    side_path = engine_metadata_path(engine_path)
    tmp_side = side_path.with_name(side_path.name + f".tmp{os.getpid()}")
    side.write_json(tmp_side)
    os.replace(tmp_side, side_path)


class EngineCache:
    """``root/<key digest>.engine`` + ``.json``.

    ``build(onnx_path, precision) -> bytes`` makes an engine; ``validate(bytes)`` raises (any
    exception) when the bytes cannot be used, e.g. TensorRT refuses to deserialize them.
    """

    def __init__(
        self,
        root: str | Path,
        build: Callable[[Path, str], bytes],
        validate: Callable[[bytes], object] | None = None,
    ) -> None:
        self.root = Path(root)
        self.build = build
        self.validate = validate

    def path_for(self, key: EngineKey) -> Path:
        return self.root / f"{key.digest()}.engine"

    def lookup(self, key: EngineKey) -> Path | None:
        """The cached engine for ``key`` if present and intact (else a warning when corrupt)."""
        path = self.path_for(key)
        side = engine_metadata_path(path)
        if not path.exists() and not side.exists():
            return None
        try:
            meta = ModelMetadata.read_json(side)
            if meta.extra.get("key_fields") != key.fields():
                raise ValueError("sidecar key fields differ from the requested key")
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != meta.extra.get("engine_sha256"):
                raise ValueError("engine bytes do not match the sha256 in the sidecar")
            if self.validate is not None:
                self.validate(data)
        except Exception as exc:  # noqa: BLE001 - any failure means: rebuild
            warnings.warn(f"cached TensorRT engine {path} is unusable ({exc}); rebuilding",
                          stacklevel=2)
            return None
        return path

    def get_or_build(self, onnx_path: str | Path, key: EngineKey, meta: ModelMetadata) -> Path:
        """Reuse the engine cached under ``key`` or build, write and return a new one."""
        found = self.lookup(key)
        if found is not None:
            return found
        path = self.path_for(key)
        data = self.build(Path(onnx_path), key.precision)
        write_engine(path, data, meta, key)
        return path


def current_key(onnx_path: str | Path, precision: str, input_shape: tuple[int, ...],
                device_index: int = 0) -> EngineKey:
    """The key for this machine: needs tensorrt and a CUDA device."""
    import torch

    from vit_perception.runtime.tensorrt_runner import import_tensorrt

    trt = import_tensorrt()
    props = torch.cuda.get_device_properties(device_index)
    return EngineKey(
        onnx_sha256=file_sha256(onnx_path),
        trt_version=str(trt.__version__),
        gpu_name=str(props.name),
        compute_capability=f"{props.major}.{props.minor}",
        precision=precision,
        input_shape=tuple(int(d) for d in input_shape),
    )


def engine_for_onnx(
    onnx_path: str | Path, meta: ModelMetadata, precision: str = "fp32",
    cache_dir: str | Path | None = None, batch: int = 1,
) -> Path:
    """The cached (or freshly built) TensorRT engine for an ONNX file on this machine."""
    from vit_perception.runtime.loading import default_cache_dir
    from vit_perception.runtime.tensorrt_build import build_engine
    from vit_perception.runtime.tensorrt_runner import deserialize_engine

    root = Path(cache_dir) if cache_dir else default_cache_dir() / "engines"
    w, h = meta.input_size
    key = current_key(onnx_path, precision, (batch, 3, h, w))
    cache = EngineCache(root, build=lambda p, prec: build_engine(p, prec),
                        validate=deserialize_engine)
    return cache.get_or_build(onnx_path, key, meta)

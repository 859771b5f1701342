"""Run-time metadata that travels with an exported model (ONNX ``metadata_props``, engine JSON).

An engine or ONNX file carries its input size, mean/std, class names and the hash of the weights
it came from, so a deployed model is never paired with the wrong preprocessing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

PREFIX = "vit_perception."


@dataclasses.dataclass
class ModelMetadata:
    input_width: int
    input_height: int
    mean: list[float]
    std: list[float]
    class_names: list[str]
    model_hash: str = ""
    config_name: str = ""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # resolved model config
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # precision, trt version...

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        return self.input_width, self.input_height

    @classmethod
    def from_config(cls, cfg: dict, model_hash: str = "") -> ModelMetadata:
        inp = cfg["input"]
        return cls(
            input_width=int(inp["width"]),
            input_height=int(inp["height"]),
            mean=[float(v) for v in inp["mean"]],
            std=[float(v) for v in inp["std"]],
            class_names=[str(c) for c in cfg.get("classes", [])],
            model_hash=model_hash,
            config_name=str(cfg.get("name") or ""),
            config=cfg,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    # ONNX metadata_props: one string per field, JSON-encoded.
    def to_props(self) -> dict[str, str]:
        return {PREFIX + k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        data = {k[len(PREFIX):]: json.loads(v) for k, v in props.items() if k.startswith(PREFIX)}
        if "input_width" not in data:
            raise ValueError("no vit_perception metadata in the model")
        return cls.from_dict(data)

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def read_json(cls, path: str | Path) -> ModelMetadata:
        return cls.from_dict(json.loads(Path(path).read_text()))


def read_onnx_metadata(path: str | Path) -> ModelMetadata:
    """Metadata of an exported ONNX file (raises ``ValueError`` when it has none)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: {'is a folder, not' if path.is_dir() else 'no such'} "
                         "ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and friends name no file
        size = path.stat().st_size
        raise ValueError(f"{path}: not a readable ONNX model ({size} bytes; truncated or not "
                         f"ONNX?): {type(exc).__name__}: {exc}") from exc
    try:
        return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def state_dict_hash(model: Any) -> str:
    """sha256 over parameter/buffer names and bytes: the identity of a set of weights."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()

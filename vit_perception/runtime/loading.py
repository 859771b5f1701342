"""What the user names (checkpoint, config, ONNX, engine) -> (runner, postprocessor, meta)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vit_perception.runtime.base import Runner, RunnerError
from vit_perception.runtime.metadata import (
    ModelMetadata,
    read_onnx_metadata,
    state_dict_hash,
)

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def default_cache_dir() -> Path:
    """``$VIT_PERCEPTION_CACHE`` or ``~/.cache/vit_perception`` (exported ONNX, engines)."""
    env = os.environ.get("VIT_PERCEPTION_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vit_perception"


def _size_overrides(input_size: tuple[int, int] | None) -> dict:
    if not input_size:
        return {}
    return {"input": {"width": int(input_size[0]), "height": int(input_size[1])}}


def load_torch_model(
    model: str | Path, input_size: tuple[int, int] | None = None
) -> tuple[nn.Module, Any, dict]:
    """(model, postprocessor, cfg) from a checkpoint ``.pt`` or a config name/YAML.

    A config gives random weights (seeded, so its hash and exported files are reproducible) and a
    warning. ``input_size`` (width, height) overrides the config's input size.
    """
    from vit_perception.config import deep_merge, load_config
    from vit_perception.models import build

    path = Path(model)
    if path.suffix in (".onnx", *ENGINE_SUFFIXES):
        raise RunnerError(f"{path}: an exported model; this needs the PyTorch weights it came "
                          "from (a checkpoint .pt) or a model config")
    if path.suffix in (".pt", ".pth", ".ckpt"):
        from vit_perception.models.backbone_model import (
            checkpoint_is_backbone_only,
            load_backbone_checkpoint,
        )
        from vit_perception.models.checkpoint import load_checkpoint

        if checkpoint_is_backbone_only(path):  # pretrain's backbone.pt: features only
            backbone, cfg = load_backbone_checkpoint(path, map_location="cpu")
            cfg = deep_merge(cfg, _size_overrides(input_size))
            return backbone, postprocessor_for(ModelMetadata.from_config(cfg)), cfg
        net, _criterion, post, cfg, _extra = load_checkpoint(path, map_location="cpu")
        cfg = deep_merge(cfg, _size_overrides(input_size))
        return net.eval(), post, cfg
    cfg = load_config(model, _size_overrides(input_size) or None)
    warnings.warn(f"{model}: a model config, not a trained checkpoint: detections are random",
                  stacklevel=2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net, _criterion, post = build(cfg)
    return net.eval(), post, cfg


def postprocessor_for(meta: ModelMetadata) -> Any:
    """The model's PostProcessor for an exported model, from the config stored in its metadata."""
    from vit_perception.models.postprocess import PostProcessor

    post = (meta.config or {}).get("postprocess", {})
    return PostProcessor(meta.class_names, float(post.get("score_threshold", 0.5)),
                         int(post.get("max_detections", 100)))


def export_cached(
    net: nn.Module, cfg: dict, cache_dir: Path | None = None, opset: int = 17,
    model_hash: str | None = None,
) -> tuple[Path, ModelMetadata]:
    """Export ``net`` to ONNX under the cache dir, reusing an earlier export of the same weights."""
    from vit_perception.runtime.onnx_export import export_onnx

    meta = ModelMetadata.from_config(cfg, model_hash or state_dict_hash(net))
    w, h = meta.input_size
    name = f"{meta.config_name or 'model'}-{meta.model_hash[:16]}-{w}x{h}-opset{opset}.onnx"
    path = (cache_dir or default_cache_dir()) / "onnx" / name
    if not path.is_file():
        tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
        try:
            export_onnx(net, tmp, (w, h), opset=opset, metadata=meta)
            os.replace(tmp, path)
        finally:  # a failed or interrupted export leaves no partial file in the cache
            tmp.unlink(missing_ok=True)
    return path, meta


def load_runner(
    model: str | Path,
    backend: str,
    device: str = "cpu",
    precision: str = "fp32",
    input_size: tuple[int, int] | None = None,
    cache_dir: str | Path | None = None,
    **options: Any,
) -> tuple[Runner, Any, ModelMetadata]:
    """``model``: checkpoint ``.pt``, config name/YAML, ``.onnx`` or ``.engine`` (+ ``.json``).

    ``backend``: ``torch``, ``onnxruntime`` or ``tensorrt``. Torch models are exported (and for
    TensorRT built) on demand into ``cache_dir`` (torch.compile's inductor cache too). ``options``
    go to the runner (``compile``, ``cuda_graphs``, ``cast`` for torch; ``providers``,
    ``intra_op_threads`` for ONNX Runtime).
    """
    from vit_perception.runtime.devices import check_device

    check_device(device)  # cpu / cuda[:N] that exists, before anything is loaded or exported
    if backend == "tensorrt":  # before a checkpoint is exported to ONNX for it
        from vit_perception.runtime.tensorrt_runner import require_tensorrt

        require_tensorrt()
    path = Path(model)
    cache = Path(cache_dir) if cache_dir else None
    if path.is_dir():
        raise RunnerError(f"{path} is a folder; name a checkpoint (.pt), an .onnx or an .engine "
                          f"file in it (a run folder holds {path / 'best.pt'})")
    if path.suffix not in (*ENGINE_SUFFIXES, ".onnx") and (path.suffix or path.exists()) \
            and not path.is_file():
        raise RunnerError(f"{path}: no such file")
    if path.suffix in ENGINE_SUFFIXES:
        if backend != "tensorrt":
            raise RunnerError(f"{path}: a TensorRT engine runs only with backend 'tensorrt'")
        from vit_perception.runtime.engine_cache import read_engine_metadata
        from vit_perception.runtime.tensorrt_runner import TensorRTRunner

        meta = read_engine_metadata(path)
        return TensorRTRunner(path, device=device), postprocessor_for(meta), meta
    if path.suffix == ".onnx":
        meta = read_onnx_metadata(path)
        if input_size and tuple(input_size) != meta.input_size:
            raise RunnerError(f"{path}: exported for {meta.input_size}, not {tuple(input_size)}")
        return _onnx_backend(path, meta, backend, device, precision, cache, options)

    net, post, cfg = load_torch_model(model, input_size)
    meta = ModelMetadata.from_config(cfg, state_dict_hash(net))
    if backend == "torch":
        from vit_perception.runtime.torch_runner import TorchRunner

        runner = TorchRunner(net, device=device, precision=precision, cache_dir=cache,
                             **options)
        return runner, post, meta
    onnx_path, meta = export_cached(net, cfg, cache, model_hash=meta.model_hash)
    return _onnx_backend(onnx_path, meta, backend, device, precision, cache, options, post)


def _onnx_backend(
    path: Path, meta: ModelMetadata, backend: str, device: str, precision: str,
    cache: Path | None, options: dict[str, Any], post: Any = None,
) -> tuple[Runner, Any, ModelMetadata]:
    post = post if post is not None else postprocessor_for(meta)
    if backend == "onnxruntime":
        from vit_perception.runtime.onnx_runner import OnnxRunner

        return OnnxRunner(path, device=device, precision=precision, **options), post, meta
    if backend == "tensorrt":
        from vit_perception.runtime.engine_cache import engine_for_onnx
        from vit_perception.runtime.tensorrt_runner import TensorRTRunner

        engine = engine_for_onnx(path, meta, precision, cache_dir=cache)
        return TensorRTRunner(engine, device=device), post, meta
    raise RunnerError(f"{path}: backend {backend!r} cannot run an ONNX file "
                      "(use onnxruntime or tensorrt, or pass the checkpoint for torch)")

"""Trainer state in checkpoints: RNG states as plain values, ``--init`` and ``--resume`` files.

``last.pt`` is an ordinary model checkpoint (``models.checkpoint``: EMA weights with LoRA merged,
so it deploys like ``best.pt``) whose ``extra["trainer"]`` holds the raw model, optimizer, EMA,
sampler position, epoch/step, elapsed time and the torch/numpy/python RNG states, all tensors,
lists and numbers, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vit_perception.models.checkpoint import FORMAT, CheckpointError, load_error, read_checkpoint

log = logging.getLogger(__name__)


def rng_state() -> dict:
    """torch (CPU and CUDA), numpy and python RNG states as tensors / lists / numbers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_resume(path: str | Path) -> dict:
    """The raw ``last.pt`` dict; ``CheckpointError`` naming ``path`` when it is unusable."""
    data = read_checkpoint(path, "cpu")
    if "trainer" not in (data.get("extra") or {}):
        raise CheckpointError(f"{path}: has no trainer state (not a last.pt?); "
                              "use --init to start from its weights")
    return data


def load_fitting(module: nn.Module, state: dict, what: str) -> list[str]:
    """Load the tensors of ``state`` whose names and shapes fit ``module``; returns skipped keys.

    Used by ``--init`` so a checkpoint with another class list still initialises everything
    except the class heads.
    """
    own = module.state_dict()
    fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(fit))
    missing = sorted(set(own) - set(fit))
    module.load_state_dict(fit, strict=False)
    if skipped or missing:
        log.warning("%s: %d tensors loaded; skipped (shape/name mismatch) %s; kept fresh %s",
                    what, len(fit), skipped[:10], missing[:10])
    return skipped


def fit_pos_embed(model: nn.Module, state: dict, cfg: dict) -> dict:
    """``state`` with its ViT ``backbone.pos_embed`` interpolated to ``model``'s patch grid when
    the checkpoint was made for another input size (e.g. a ``pretrain`` backbone.pt)."""
    from vit_perception.models.vit import interpolate_pos_embed

    key, backbone = "backbone.pos_embed", getattr(model, "backbone", None)
    own = getattr(backbone, "pos_embed", None)
    if key not in state or own is None or state[key].shape == own.shape:
        return state
    try:
        p = int(cfg["model"]["backbone"].get("patch_size", 16))
        src = (-(-int(cfg["input"]["height"]) // p), -(-int(cfg["input"]["width"]) // p))
    except (KeyError, TypeError, ValueError, AttributeError):
        return state
    prefix = state[key].shape[1] - src[0] * src[1]
    if prefix < 1 or state[key].shape[2] != own.shape[2]:
        return state
    state = dict(state)
    state[key] = interpolate_pos_embed(state[key], src, backbone.grid, prefix)
    log.info("--init: pos_embed interpolated %dx%d -> %dx%d", *src, *backbone.grid)
    return state


def init_weights(model: nn.Module, path: str | Path, backbone_type: str = "vit") -> str:
    """``--init PATH``: a previous run's checkpoint (whole detector, shapes that fit) or a
    backbone weights file (torchvision Swin, DINO / DINOv2 ViT). Returns a one-line summary.

    Raises ``CheckpointError`` (unreadable checkpoint) or ``WeightsError``, both naming ``path``.
    """
    from vit_perception.models.weights import load_swin_weights, load_vit_weights

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: --init file not found")
    if path.suffix != ".safetensors":
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any reader failure names the file
            raise load_error(path, exc, "--init file") from exc
        if isinstance(data, dict) and data.get("format") == FORMAT:
            data = read_checkpoint(path, "cpu")
            state = fit_pos_embed(model, data["state_dict"], data["config"])
            skipped = load_fitting(model, state, str(path))
            return f"initialised from checkpoint {path} ({len(skipped)} tensors skipped)"
    loader = load_swin_weights if backbone_type == "swin" else load_vit_weights
    report = loader(model.backbone, path)
    return f"initialised backbone from {path}: {report.loaded} tensors"


# an --init checkpoint must fit at least this fraction of its tensors unless --init-partial
INIT_MIN_FIT = 0.5


def check_init(cfg: dict, path: str | Path, partial: bool = False) -> str | None:
    """How many tensors of the ``--init`` checkpoint ``path`` fit the model of ``cfg``.

    Returns a one-line summary (None for a backbone weights file, which its own loader checks).
    Raises ``CheckpointError`` saying how many matched when fewer than ``INIT_MIN_FIT`` of the
    checkpoint's tensors fit by name and shape (another architecture), unless ``partial``.
    """
    from vit_perception.config import deep_merge
    from vit_perception.models.builder import build

    path = Path(path)
    if path.suffix == ".safetensors" or not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure names the file
        raise load_error(path, exc, "--init file") from exc
    if not (isinstance(data, dict) and data.get("format") == FORMAT):
        return None
    state = data.get("state_dict") or {}
    classes = cfg.get("classes") or data.get("classes") or ["object"]
    with torch.random.fork_rng():  # the trainer's seeded start is not disturbed
        model, _criterion, _post = build(deep_merge(cfg, {"classes": list(classes)}),
                                         load_pretrained=False)
    state = fit_pos_embed(model, state, data.get("config") or {})  # as init_weights does
    own = model.state_dict()
    fit = [k for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)]
    summary = (f"--init {path}: {len(fit)} of its {len(state)} tensors fit the model "
               f"({len(own)} tensors) by name and shape")
    if len(fit) < INIT_MIN_FIT * max(len(state), 1) and not partial:
        raise CheckpointError(f"{summary}; it was trained for another architecture (its "
                              f"config: {data.get('config', {}).get('name') or '?'}). Pass "
                              "--init-partial to start from the few that fit")
    return summary

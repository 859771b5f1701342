"""One-file checkpoints: weights, resolved config, class names, preprocessing and trainer state.

Written atomically (temporary file + ``os.replace``) and read with ``torch.load(weights_only=True)``
so loading never runs pickled code. ``extra`` may hold plain tensors, dicts, lists, strings and
numbers (e.g. optimiser state, epoch, metrics).
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "vit_perception.checkpoint/1"
REQUIRED = ("format", "state_dict", "config", "classes", "preprocess")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or of another format (message names it)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return line[:limit] or type(exc).__name__


def folder_error(path: Path, what: str = "checkpoint") -> CheckpointError:
    """The error for a folder given where a file is wanted; a run folder's ``.pt`` files are
    named (best.pt and a pretrain run's backbone.pt first), so the fix is in the message."""
    first = {"best.pt": 0, "backbone.pt": 0, "last.pt": 1}
    found = sorted((p.name for p in Path(path).glob("*.pt")), key=lambda n: (first.get(n, 2), n))
    hint = (f"; it holds {', '.join(found)}: pass one of them, e.g. {Path(path) / found[0]}"
            if found else "")
    noun = what if what.endswith("file") else f"{what} file"
    return CheckpointError(f"{path} is a folder, not a {noun}{hint}")


def load_error(path: Path, exc: BaseException, what: str = "checkpoint") -> CheckpointError:
    """The error for a file ``torch.load(weights_only=True)`` refused or could not read.

    A refused pickle names the global (class or function) it wanted instead of repeating
    torch's advice to turn ``weights_only`` off; an empty file says so.
    """
    text = str(exc)
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"(Unsupported operand \d+)",
                                                                  text)
        which = f" (it refers to {found.group(1)})" if found else ""
        if found and found.group(1).startswith("Unsupported"):
            which = f" ({found.group(1).lower()}: a raw pickle, not a torch.save file)"
        return CheckpointError(f"{path}: this file holds code or objects that are not plain "
                               f"tensors; refusing to load it{which}")
    if path.is_dir():
        return folder_error(path, what)
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False
    if empty:
        return CheckpointError(f"{path}: the file is empty (0 bytes), not a {what}")
    return CheckpointError(f"{path}: cannot read {what} (truncated or corrupt?): "
                           f"{type(exc).__name__}: {first_line(exc)}")


def clean_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove ``.NAME.*.tmp`` files an interrupted ``save_checkpoint`` left in ``folder``."""
    removed = []
    for tmp in Path(folder).glob(".*.pt.*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def save_checkpoint(path: str | Path, model: nn.Module, cfg: dict,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``{format, state_dict, config, classes, preprocess, extra}`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": copy.deepcopy(cfg),
        "classes": list(cfg.get("classes", [])),
        "preprocess": copy.deepcopy(cfg.get("input", {})),
        "extra": extra or {},
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """The raw checkpoint dict, validated; raises ``CheckpointError`` naming ``path``."""
    path = Path(path)
    if path.is_dir():
        raise folder_error(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt/unsafe all become one error
        raise load_error(path, exc) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (format: {found!r})")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return data


def load_checkpoint(path: str | Path, map_location: Any = "cpu"):
    """-> ``(model, criterion, postprocessor, cfg, extra)``; the model is in eval mode."""
    from vit_perception.models.builder import build

    data = read_checkpoint(path, map_location)
    cfg = data["config"]
    try:
        model, criterion, postprocessor = build(cfg, load_pretrained=False)
        model.load_state_dict(data["state_dict"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit its config: "
                              f"{first_line(exc, 300)}") from exc
    device = map_location if isinstance(map_location, (str, torch.device)) else "cpu"
    return (model.to(device).eval(), criterion.to(device), postprocessor, cfg,
            data.get("extra", {}))

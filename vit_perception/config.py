"""Model/training configs: YAML files merged over defaults, with dotted command-line overrides.

A config is a plain dict; the resolved config is saved with every checkpoint so a result can be
reproduced from its own folder.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
# what a --model argument may name besides a config (for the message when it is none of them)
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
MODEL_SUFFIXES = (".pt", ".pth", ".ckpt", ".onnx", ".engine", ".plan", ".trt")


class ConfigError(ValueError):
    """A config file is missing or malformed; the message names the file or key."""


def config_dirs() -> list[Path]:
    """Where named model configs are looked up, in order."""
    dirs = [
        PACKAGE_DIR / "config_files",  # pip install: config/models shipped as package data
        PACKAGE_DIR.parent / "config" / "models",  # source checkout
    ]
    try:  # ROS 2 install: share/vit_perception/config/models
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("vit_perception")) / "config" / "models")
    except Exception:  # noqa: BLE001 - ament_index absent or package not installed
        pass
    return [d for d in dirs if d.is_dir()]


def available_configs() -> dict[str, Path]:
    """Map config name -> file for every shipped model config."""
    found: dict[str, Path] = {}
    for d in config_dirs():
        for f in sorted(d.glob("*.yaml")):
            found.setdefault(f.stem, f)
    return found


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A shipped config's name or a ``.yaml`` file -> its path (``ConfigError`` naming it)."""
    p = Path(name_or_path)
    if p.is_dir():
        raise ConfigError(f"{p} is a folder, not a config or checkpoint file (a run folder? "
                          f"name the file inside it, e.g. {p / 'best.pt'})")
    if p.suffix and p.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"{p}: not a model config (.yaml) or a known config name; "
                          f"expected {', '.join(MODEL_SUFFIXES)} or .yaml")
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    configs = available_configs()
    if str(name_or_path) not in configs:
        raise ConfigError(
            f"unknown config {str(name_or_path)!r}; known: {', '.join(sorted(configs)) or 'none'}"
        )
    return configs[str(name_or_path)]


def deep_merge(base: dict, update: dict) -> dict:
    """Return ``base`` updated recursively by ``update`` (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(items: list[str] | None, check: bool = True) -> dict:
    """``["train.lr=1e-4", "model.head.num_queries=30"]`` -> nested dict (values parsed as YAML).

    With ``check`` an unknown key or a value of the wrong kind raises ``ConfigError`` naming it
    (``config_keys.check_overrides``).
    """
    out: dict[str, Any] = {}
    raw: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r} is not KEY=VALUE (e.g. train.lr=1e-4)")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            first = " ".join(str(exc).split())
            raise ConfigError(f"--set {item}: the value of {key} is not a plain YAML value "
                              f"(number, string, list, mapping): {first}") from exc
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item}: {'.'.join(parts[:-1])} was set to a value "
                                  "earlier, it cannot also hold keys")
            node = child
        if isinstance(parsed, str) and _NUMBER.fullmatch(parsed.strip()):
            parsed = float(parsed)  # YAML 1.1 reads 1e-4 (no dot) as a string
        node[parts[-1]] = parsed
        raw[key] = item
    if check:
        from vit_perception.config_keys import check_overrides

        check_overrides(out, raw)
    return out


def load_config(name_or_path: str | Path, overrides: list[str] | dict | None = None) -> dict:
    """Load a named or file config, merged over the defaults file, then ``overrides``."""
    from vit_perception.defaults import DEFAULTS

    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    from vit_perception.config_ranges import check_ranges

    check_ranges(data, str(path))
    cfg = deep_merge(DEFAULTS, data)
    if not cfg.get("name"):
        cfg["name"] = path.stem
    if overrides:
        if not isinstance(overrides, dict):
            overrides = parse_overrides(overrides)
        check_ranges(overrides)
        cfg = deep_merge(cfg, overrides)
    return cfg

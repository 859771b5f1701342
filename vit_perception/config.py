"""Model/training configs: YAML files merged over defaults, with dotted command-line overrides.

A config is a plain dict; the resolved config is saved with every checkpoint so a result can be
reproduced from its own folder.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent


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
    p = Path(name_or_path)
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


def parse_overrides(items: list[str] | None) -> dict:
    """``["train.lr=1e-4", "model.head.num_queries=30"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
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
    cfg = deep_merge(DEFAULTS, data)
    if not cfg.get("name"):
        cfg["name"] = path.stem
    if overrides:
        if not isinstance(overrides, dict):
            overrides = parse_overrides(overrides)
        cfg = deep_merge(cfg, overrides)
    return cfg

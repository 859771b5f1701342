"""The keys a config may hold, so a ``--set`` typo is refused instead of silently ignored.

``check_overrides({"train": {"lrr": 1}})`` raises ``ConfigError`` naming ``train.lrr`` and the
close match ``train.lr``; a value of the wrong kind (``train.lr=notanumber``) is refused naming
its key. The known keys are a tree of default values (``schema()``):

- ``train`` / ``pretrain`` / ``distill``: ``TRAIN_DEFAULTS`` (training/options.py),
  ``PRETRAIN_DEFAULTS`` (training/pretrain_options.py), ``DISTILL_DEFAULTS``
  (training/distill_options.py), plus the keys a trainer writes into a run's config itself;
- everything else (``name``, ``classes``, ``input``, ``model``, ``loss``, ``postprocess``):
  ``DEFAULTS`` (defaults.py). Model backbone and head keys depend on the model type (a ViT has
  ``patch_size``/``depth``, a Swin ``variant``, a conv stem adds its own), and ``DEFAULTS`` holds
  only the keys all types share, so the model keys are the union of ``DEFAULTS``, every shipped
  config (config/models/*.yaml: a key one of them uses is a real key) and ``BUILDER_KEYS`` (what
  models/builder.py reads that no shipped config happens to set).

Only the kind of a value is checked (number, true/false, list, mapping) and only where the
default says it; keys whose default is None or a string take any value.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import yaml

# keys models/builder.py reads that DEFAULTS and the shipped configs may not all spell out
BUILDER_KEYS: dict = {
    "model": {"backbone": {"type": "vit", "patch_size": 16, "embed_dim": 384, "depth": 12,
                           "num_heads": 6, "mlp_ratio": 4.0, "num_registers": 0,
                           "layer_scale": None, "drop_path": 0.0, "variant": None}},
}
# keys a trainer adds to the resolved config of its run (RUN_DIR/config.yaml)
TRAINER_WRITTEN: dict = {"train": {"pretrained_backbone": None},
                         "model": {"backbone_only": None}}  # pretrain's backbone.pt


def _merge_keys(into: dict, other: dict) -> None:
    """Add the keys of ``other`` to ``into`` (recursively); existing defaults win."""
    for key, value in other.items():
        if isinstance(value, dict):
            node = into.get(key)
            if node is None:
                node = into[key] = {}
            if isinstance(node, dict):
                _merge_keys(node, value)
        elif key not in into:
            into[key] = None  # known key, no type to check (only a shipped config sets it)


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    """The tree of known keys -> default values (see the module docstring)."""
    import copy

    from vit_perception.defaults import DEFAULTS
    from vit_perception.training.options import TRAIN_DEFAULTS

    tree = copy.deepcopy(DEFAULTS)
    tree["train"] = copy.deepcopy(TRAIN_DEFAULTS)
    try:
        from vit_perception.training.pretrain_options import PRETRAIN_DEFAULTS

        tree["pretrain"] = copy.deepcopy(PRETRAIN_DEFAULTS)
    except ImportError:  # pragma: no cover - section not in this build
        pass
    try:
        from vit_perception.training.distill_options import DISTILL_DEFAULTS

        tree["distill"] = copy.deepcopy(DISTILL_DEFAULTS)
    except ImportError:  # pragma: no cover - section not in this build
        pass
    _merge_keys(tree, BUILDER_KEYS)
    _merge_keys(tree, TRAINER_WRITTEN)
    from vit_perception.config import available_configs

    for path in available_configs().values():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict):
            _merge_keys(tree, {k: v for k, v in data.items() if k in ("model", "input")})
    return tree


def _all_paths(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.append(path)
        if isinstance(value, dict):
            out += _all_paths(value, path + ".")
    return out


def _unknown(path: str, key: str, siblings: list[str], raw: str) -> str:
    parent = path.rpartition(".")[0]
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean {(parent + '.' if parent else '') + close[0]!r}?"
    else:
        elsewhere = [p for p in _all_paths(schema()) if p.endswith("." + key)]
        if elsewhere:
            hint = f"did you mean {elsewhere[0]!r}?"
        elif len(siblings) <= 12:
            hint = f"known keys{' in ' + parent if parent else ''}: {', '.join(sorted(siblings))}"
        else:
            hint = f"{len(siblings)} keys are known{' in ' + parent if parent else ''}"
    return f"--set {raw}: unknown config key {path!r}; {hint}"


def _kind_error(path: str, default: Any, value: Any, raw: str) -> str | None:
    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if isinstance(default, bool):
        if not isinstance(value, bool):
            return f"--set {raw}: {path} takes true or false, not {value!r}"
    elif is_number(default):
        if not is_number(value):
            return f"--set {raw}: {path} takes a number, not {value!r}"
    elif isinstance(default, list):
        if not isinstance(value, list):
            return f"--set {raw}: {path} takes a list such as {default!r}, not {value!r}"
    elif isinstance(default, dict) and not isinstance(value, dict):
        return f"--set {raw}: {path} is a section ({', '.join(sorted(default))}), not a value"
    return None


def check_overrides(overrides: dict, raw: dict[str, str] | None = None,
                    _tree: dict | None = None, _prefix: str = "") -> None:
    """Raise ``ConfigError`` for an unknown key or a value of the wrong kind in ``overrides``.

    ``raw`` maps a dotted key to the ``KEY=VALUE`` text the user typed (for the message).
    """
    from vit_perception.config import ConfigError

    tree = schema() if _tree is None else _tree
    raw = raw or {}
    for key, value in overrides.items():
        path = f"{_prefix}{key}"
        text = raw.get(path) or next((t for p, t in raw.items() if p.startswith(path + ".")),
                                     f"{path}={value}")
        if key not in tree:
            raise ConfigError(_unknown(path, str(key), [str(k) for k in tree], text))
        default = tree[key]
        if isinstance(value, dict) and isinstance(default, dict):
            check_overrides(value, raw, default, path + ".")
            continue
        if isinstance(value, dict):
            raise ConfigError(f"--set {text}: {path} is a value, not a section")
        message = _kind_error(path, default, value, text)
        if message:
            raise ConfigError(message)

"""The launch arguments that set node parameters, and their conversion (no launch import here).

    ros2 launch vit_perception perception.launch.py model:=runs/lab/best.pt device:=cuda \
        compressed:=true autostart:=false

An argument left empty keeps the params file's value; a given one overrides it. The launch
files declare these with their descriptions (so `ros2 launch ... --show-args` lists them) and
turn the given strings into typed parameters with `node_overrides`.
"""

from __future__ import annotations

import yaml

# name -> (parameter type, description). Every name is a parameter of perception_node.
NODE_ARGUMENTS: dict[str, tuple[str, str]] = {
    "model": ("str", "checkpoint (.pt), .onnx, TensorRT .engine, or a model config name "
                     "(random weights)"),
    "backend": ("str", "torch | onnxruntime | tensorrt"),
    "device": ("str", "cpu | cuda | cuda:N"),
    "precision": ("str", "fp32 | fp16 | bf16 | int8 (onnxruntime on the CPU)"),
    "compressed": ("bool", "true: the image topic carries sensor_msgs/CompressedImage"),
    "autostart": ("bool", "false: stay unconfigured until `ros2 lifecycle set` configures it"),
    "score_threshold": ("float", "minimum detection score, 0..1"),
    "image_topics": ("list", "several cameras in one node, batched, e.g. "
                             "\"[/front/image_raw, /rear/image_raw]\"; outputs under front/, "
                             "rear/ (camera_topic is then unused)"),
    "threads": ("int", "CPU threads of the inference backend, 0: its own choice"),
    "cuda_graphs": ("bool", "torch on CUDA: capture CUDA graphs (default true)"),
    "compile": ("bool", "torch.compile the model (slow first frames)"),
}
UNSET_NOTE = " (empty: the params file's value)"

_BOOLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


class LaunchArgumentError(ValueError):
    """A launch argument's value does not fit its parameter; the message names both."""


def _convert(name: str, kind: str, text: str):
    try:
        if kind == "bool":
            return _BOOLS[text.strip().lower()]
        if kind == "float":
            return float(text)
        if kind == "int":
            return int(text)
        if kind == "list":
            value = yaml.safe_load(text)
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("expected a list of topics")
            return value
        return text
    except (KeyError, ValueError, yaml.YAMLError) as exc:
        raise LaunchArgumentError(f"launch argument {name}:={text!r} is not a {kind} "
                                  f"({exc})") from None


def node_overrides(given: dict[str, str]) -> dict[str, object]:
    """Typed parameter values of the node arguments given non-empty (`given`: name -> text)."""
    out: dict[str, object] = {}
    for name, (kind, _) in NODE_ARGUMENTS.items():
        text = given.get(name, "")
        if text is not None and str(text).strip() != "":
            out[name] = _convert(name, kind, str(text))
    return out

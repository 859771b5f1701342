"""The node's parameters: declared with descriptors, validated into a plain dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.parameter import Parameter

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
RELIABILITY = ("best_effort", "reliable")
FEATURE_DTYPES = ("float16", "float32")


class ParamError(ValueError):
    """A parameter has a bad value; the message names the parameter."""


@dataclass
class NodeSettings:
    """Everything the node reads from its parameters (algorithm code never sees rclpy)."""

    model: str = "vit_s16_detr"
    backend: str = "torch"
    device: str = "cpu"
    precision: str = "fp32"
    input_width: int = 0
    input_height: int = 0
    score_threshold: float = 0.5
    max_detections: int = 100
    class_names: list[str] = field(default_factory=list)
    compressed: bool = False
    publish_detections_image: bool = True
    publish_features: bool = True
    publish_preview: bool = True
    publish_attention: bool = True
    features_rate_divider: int = 1
    features_dtype: str = "float16"
    qos_depth: int = 1
    qos_reliability: str = "best_effort"
    image_topics: list[str] = field(default_factory=list)
    threads: int = 0
    cuda_graphs: bool = True
    compile: bool = False

    @property
    def input_size(self) -> tuple[int, int] | None:
        if self.input_width and self.input_height:
            return self.input_width, self.input_height
        return None

    def runner_options(self) -> dict[str, object]:
        """Predictor.load's runner options set away from their defaults (a runner that does
        not know an option then fails only where the user asked for it)."""
        options: dict[str, object] = {}
        if self.threads:
            options["threads"] = self.threads
        if not self.cuda_graphs:
            options["cuda_graphs"] = False
        if self.compile:
            options["compile"] = True
        return options


# name -> (description, read_only, range or choices)
_SPECS: dict[str, tuple[str, bool, object]] = {
    "model": ("checkpoint (.pt), .onnx, TensorRT .engine, or a model config name/YAML "
              "(random weights)", True, None),
    "backend": ("inference backend", True, BACKENDS),
    "device": ("cpu, cuda or cuda:N", True, None),
    "precision": ("fp32, fp16, bf16 (torch, tensorrt) or int8 (onnxruntime on the CPU)", True,
                  PRECISIONS),
    "input_width": ("model input width in pixels, 0: the model's own", True, (0, 4096)),
    "input_height": ("model input height in pixels, 0: the model's own", True, (0, 4096)),
    "score_threshold": ("minimum detection score (run-time changeable)", False, (0.0, 1.0)),
    "max_detections": ("most detections per frame (run-time changeable)", False, (1, 1000)),
    "class_names": ("class names overriding the model's (empty: the model's)", True, None),
    "compressed": ("the `image` topic carries sensor_msgs/CompressedImage, not Image", True,
                   None),
    "publish_detections_image": ("publish detections/image while subscribed", False, None),
    "publish_features": ("publish features while subscribed", False, None),
    "publish_preview": ("publish features/preview while subscribed", False, None),
    "publish_attention": ("publish attention while subscribed", False, None),
    "features_rate_divider": ("publish features every Nth processed frame", False, (1, 1000)),
    "features_dtype": ("float16 or float32", False, FEATURE_DTYPES),
    "qos_depth": ("image subscription queue depth", True, (1, 100)),
    "qos_reliability": ("image subscription reliability", True, RELIABILITY),
    "image_topics": ("camera topics served by this node, batched together; outputs go under "
                     "<camera>/ (e.g. front/detections); empty: the one remappable `image` "
                     "topic, outputs without prefix", True, None),
    "threads": ("CPU threads of the inference backend, 0: its own choice", True, (0, 256)),
    "cuda_graphs": ("capture CUDA graphs (torch on CUDA only; ignored on the CPU)", True, None),
    "compile": ("torch.compile the model (slow first frames; torch only)", True, None),
}
_STRING_ARRAYS = ("class_names", "image_topics")


def declare(node) -> None:
    """Declare every parameter with its descriptor and the NodeSettings default."""
    defaults = NodeSettings()
    for name, (text, read_only, bounds) in _SPECS.items():
        value = getattr(defaults, name)
        desc = ParameterDescriptor(description=text, read_only=read_only)
        if isinstance(bounds, tuple) and len(bounds) == 2 and isinstance(bounds[0], float):
            desc.floating_point_range = [FloatingPointRange(from_value=bounds[0],
                                                            to_value=bounds[1])]
            desc.dynamic_typing = True  # `-p score_threshold:=1` arrives as an integer
        elif isinstance(bounds, tuple) and len(bounds) == 2 and isinstance(bounds[0], int):
            desc.integer_range = [IntegerRange(from_value=bounds[0], to_value=bounds[1], step=1)]
        elif bounds:
            desc.additional_constraints = "one of: " + ", ".join(bounds)
        if name in _STRING_ARRAYS:
            node.declare_parameter(name, Parameter.Type.STRING_ARRAY, desc)
        else:
            node.declare_parameter(name, value, desc)


def _check(name: str, value):
    _, _, bounds = _SPECS[name]
    if isinstance(bounds, tuple) and len(bounds) == 2 and not isinstance(bounds[0], str):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"parameter '{name}' must be a number, got {value!r}")
        if not bounds[0] <= value <= bounds[1]:
            raise ParamError(f"parameter '{name}' = {value} is outside [{bounds[0]}, "
                             f"{bounds[1]}]")
        return float(value) if isinstance(bounds[0], float) else int(value)
    if bounds and value not in bounds:
        raise ParamError(f"parameter '{name}' = {value!r} is not one of {', '.join(bounds)}")
    return value


def read(node) -> NodeSettings:
    """All parameters as NodeSettings; raises ParamError naming the first bad one."""
    values = {}
    for name in _SPECS:
        if name in _STRING_ARRAYS:  # a string array declared without a value reads as unset
            p = node.get_parameter_or(name, Parameter(name, Parameter.Type.STRING_ARRAY, []))
            values[name] = list(p.value or [])
            continue
        value = node.get_parameter(name).value
        values[name] = _check(name, value)
    if not values["model"]:
        raise ParamError("parameter 'model' is empty: give a checkpoint or a model config")
    topics = [t.strip() for t in values["image_topics"]]
    if any(not t for t in topics) or len(set(topics)) != len(topics):
        raise ParamError(f"parameter 'image_topics' = {values['image_topics']!r}: topics must "
                         "be non-empty and distinct")
    values["image_topics"] = topics
    return NodeSettings(**values)


def validate_changes(params: list[Parameter]) -> SetParametersResult:
    """set-parameters callback: reject out-of-range or wrongly typed run-time changes."""
    for p in params:
        if p.name not in _SPECS:
            continue
        try:
            if p.type_ == ParameterType.PARAMETER_NOT_SET:
                raise ParamError(f"parameter '{p.name}' cannot be unset")
            _check(p.name, p.value)
        except ParamError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
    return SetParametersResult(successful=True)


def apply_runtime_change(settings: NodeSettings, params: list[Parameter]) -> None:
    """Copy accepted run-time changes into settings (only the non-read-only ones)."""
    for p in params:
        if p.name in _SPECS and not _SPECS[p.name][1]:
            setattr(settings, p.name, _check(p.name, p.value))

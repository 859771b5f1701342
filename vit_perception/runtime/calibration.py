"""Static int8 for ONNX Runtime, calibrated on frames from the robot's own bags.

``calibration_frames(bags, topic, count)`` picks frames spread over the bags (with the last part
of each bag held out for checking), ``quantize_calibrated(export, frames, ...)`` writes the int8
model next to the export as ``<stem>.int8.onnx``: per-channel int8 weights, uint8 activations
whose ranges come from the calibration frames run through the package's own preprocessing, and
the calibration set in the model's metadata (``extra["int8"]``). The runner takes that file for
``precision: int8`` when it was calibrated from the same export (``static_int8_for``).

How it is made: ONNX Runtime's ``quantize_static`` writes a QDQ model (MatMul outputs left
float), ``qdq_integer.integer_matmuls`` turns each quantised MatMul into the integer GEMM with
a float output that ONNX Runtime's CPU kernels run fastest (its QDQ fusions otherwise requantise
every GEMM's output, or run per-channel GEMMs in float). What is int8: the backbone's weight
GEMMs (patch Conv, qkv, proj, MLP) and, by default, the attention scores q.k^T
(``int8_attention``); the DETR head's GEMMs are dynamic int8 (weights int8, activations
quantised per run: static ranges in the head cost 0.9 AP points on the demo model, dynamic
ones nothing). LayerNorm, GELU, softmax and softmax.v stay float. Weights take 7 bits
(``reduce_range``), and so do the int8 activation operands, because the file moves between
machines: see ``runtime.quantize`` for why 8 bits saturate on CPUs without VNNI.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

METHODS = ("percentile", "entropy", "minmax")
PERCENTILE = 99.999
# Nodes whose names contain one of these stay in float: the DETR head (see the docstring).
FLOAT_SCOPES = ("/head/",)
HEAD_MODES = ("dynamic", "float")


class CalibrationError(ValueError):
    """A calibration bag or frame set that cannot be used; the message names it."""


@dataclass
class CalibrationSet:
    """Frames for calibration and which frames of the bags are held out for checking.

    ``frames``: RGB uint8 images; ``picked``: (bag index, frame index) of each; ``holdout_from``:
    per bag, the first frame index held out (frames from there on were not used).
    """

    bags: list[str]
    topic: str
    frames: list[np.ndarray]
    picked: list[tuple[int, int]]
    holdout_from: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"bags": list(self.bags), "topic": self.topic, "frames": len(self.frames),
                "frames_per_bag": [sum(1 for b, _ in self.picked if b == i)
                                   for i in range(len(self.bags))],
                "bag_frames": list(self.counts), "holdout_from": list(self.holdout_from)}


def count_frames(bag: str | Path, topic: str) -> int:
    """Image messages on ``topic`` in ``bag``; a clear ``CalibrationError`` when the bag is
    missing, has no such topic, or has no frame on it."""
    from vit_perception.data.bag_source import BagError, bag_topics, iter_messages

    path = Path(bag)
    if not path.exists():
        raise CalibrationError(f"calibration bag not found: {path}")
    try:
        topics = bag_topics(path)
    except BagError as exc:  # not a bag at all (an empty folder, a 0-byte file)
        raise CalibrationError(f"calibration bag: {exc}") from exc
    if topic not in topics:
        raise CalibrationError(f"calibration bag {path}: no topic {topic}; topics: "
                               f"{sorted(topics) or 'none (empty or not a bag)'}")
    n = sum(1 for _ in iter_messages(path, [topic]))
    if n == 0:
        raise CalibrationError(f"calibration bag {path}: no frames on {topic}")
    return n


def calibration_frames(bags: Sequence[str | Path], topic: str, count: int,
                       holdout: float = 0.0) -> CalibrationSet:
    """``count`` frames spread evenly over the frames of ``bags`` on ``topic``, leaving the last
    ``holdout`` fraction of each bag (by time) unused so it can check the result."""
    from vit_perception.data.bags import read_frames

    if not bags:
        raise CalibrationError("no calibration bag given")
    if count < 1:
        raise CalibrationError(f"calibration frames must be at least 1, not {count}")
    counts = [count_frames(b, topic) for b in bags]
    usable = [max(1, math.ceil(n * (1.0 - holdout))) if holdout else n for n in counts]
    total = sum(usable)
    flat = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))
    starts = np.cumsum([0, *usable])
    wanted: dict[int, set[int]] = {}
    for g in flat.tolist():
        b = int(np.searchsorted(starts, g, side="right") - 1)
        wanted.setdefault(b, set()).add(g - int(starts[b]))
    frames, picked = [], []
    for b, indices in sorted(wanted.items()):
        last = max(indices)
        for frame in read_frames(bags[b], topic, labels_topic=None):
            if frame.index in indices:
                frames.append(frame.image)
                picked.append((b, frame.index))
            if frame.index >= last:
                break
    return CalibrationSet([str(b) for b in bags], topic, frames, picked, usable, counts)


class FrameReader:
    """ONNX Runtime's ``CalibrationDataReader`` over RGB frames, preprocessed exactly as the
    predictor does (letterbox to the model's input, normalise with its mean/std)."""

    def __init__(self, frames: Sequence[np.ndarray], input_name: str,
                 input_size: tuple[int, int], mean: Sequence[float], std: Sequence[float]):
        self.frames = list(frames)
        self.input_name = input_name
        self.input_size = input_size
        self.mean, self.std = list(mean), list(std)
        self._it: Iterator[np.ndarray] = iter(self.frames)

    def get_next(self) -> dict[str, np.ndarray] | None:
        from vit_perception.models.preprocess import preprocess

        frame = next(self._it, None)
        if frame is None:
            return None
        images, _ = preprocess([frame], self.input_size, self.mean, self.std, "cpu")
        return {self.input_name: images.numpy().astype(np.float32)}

    def rewind(self) -> None:
        self._it = iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read ``frames[start_index:end_index]`` next: quantize_static's strided calibration
        (``CalibStridedMinMax``, any method) collects one frame at a time, so memory holds one
        frame's intermediate tensors instead of every frame's (vit_s16_detr at 640x480: about
        1 GB a frame, which 32 frames made an out-of-memory kill)."""
        self._it = iter(self.frames[start_index:end_index])


def static_int8_path(export: str | Path) -> Path:
    """Where the calibrated copy of ``export`` lives: ``<stem>.int8.onnx`` beside it."""
    path = Path(export)
    return path.with_name(f"{path.stem}.int8.onnx")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def int8_info(path: str | Path) -> dict[str, Any] | None:
    """The calibration record of a static int8 file (None for any other ONNX file)."""
    from vit_perception.runtime.metadata import read_onnx_metadata

    try:
        info = read_onnx_metadata(path).extra.get("int8")
    except (ValueError, OSError):
        return None
    return info if isinstance(info, dict) else None


def static_int8_for(export: str | Path) -> Path | None:
    """The calibrated copy of ``export`` when one exists and was made from this very file
    (the export's sha256 is in its metadata); a stale copy is ignored with a warning."""
    path = Path(export)
    info = int8_info(path)
    if info is not None:  # the export is itself a calibrated file
        return path
    candidate = static_int8_path(path)
    if not candidate.is_file():
        return None
    info = int8_info(candidate)
    if info is None or info.get("source_sha256") != _sha256(path):
        log.warning("%s was not calibrated from %s as it is now (re-run `vit-perception export "
                    "--int8-calibrate`); using dynamic int8", candidate, path)
        return None
    return candidate


def float_nodes(proto: Any) -> list[str]:
    """Weight-GEMM nodes left in float: those inside ``FLOAT_SCOPES`` (the DETR head)."""
    return [n.name for n in proto.graph.node
            if n.op_type in ("MatMul", "Gemm", "Conv") and any(s in n.name for s in FLOAT_SCOPES)]


def summary(head: str, attention: str) -> str:
    """What a static int8 file holds in int8, in words."""
    products = {"scores": "attention scores (q.k^T)", "all": "q.k^T and softmax.v",
                "float": ""}[attention]
    floats = {"scores": "softmax and softmax.v", "all": "softmax", "float":
              "softmax and the attention products"}[attention]
    return (f"backbone GEMMs{' and ' + products if products else ''} in int8 (7-bit weights"
            f"{' and k, v' if attention == 'all' else ' and k' if products else ''}); the DETR "
            f"head's GEMMs {'in dynamic int8' if head == 'dynamic' else 'in float'}; "
            f"LayerNorm, {floats} in float")


def quantize_calibrated(export: str | Path, calib: CalibrationSet, method: str = "percentile",
                        out: str | Path | None = None, head: str = "dynamic",
                        attention: str = "scores") -> Path:
    """Write the static int8 copy of ``export`` calibrated on ``calib.frames``; returns its
    path (``static_int8_path(export)`` unless ``out``).

    ``head``: the DETR head's weight GEMMs in ``"float"`` or ``"dynamic"`` int8 (7-bit weights,
    activations quantised per run: what cost AP in the head was the fixed activation ranges).
    ``attention``: which attention products are int8 (``int8_attention.MODES``)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from vit_perception.runtime import int8_attention
    from vit_perception.runtime.metadata import ModelMetadata, read_onnx_metadata
    from vit_perception.runtime.qdq_integer import integer_matmuls

    if method not in METHODS:
        raise CalibrationError(f"calibration method {method!r} not in {list(METHODS)}")
    if not calib.frames:
        raise CalibrationError(f"no calibration frames read from {calib.bags}")
    if head not in HEAD_MODES:
        raise CalibrationError(f"head {head!r} not in {list(HEAD_MODES)}")
    if attention not in int8_attention.MODES:
        raise CalibrationError(f"int8 attention {attention!r} not in "
                               f"{list(int8_attention.MODES)}")

    export = Path(export)
    meta = read_onnx_metadata(export)
    proto = onnx.load(str(export))
    input_name = proto.graph.input[0].name
    excluded = float_nodes(proto)
    products, kept_float = int8_attention.split_by_mode(
        *int8_attention.attention_products(proto, FLOAT_SCOPES), attention)
    excluded += kept_float
    reader = FrameReader(calib.frames, input_name, meta.input_size, meta.mean, meta.std)
    target = Path(out) if out else static_int8_path(export)
    record = {**calib.describe(), "method": method, "kind": "static",
              "format": "QDQ with MatMulIntegerToFloat",
              "per_channel": True, "reduce_range": True, "activations": "uint8",
              "weights": "int8", "float_scopes": list(FLOAT_SCOPES),
              "float_gemms": len(excluded), "attention": attention, "head": head,
              "source": export.name, "source_sha256": _sha256(export)}
    if method == "percentile":
        record["percentile"] = PERCENTILE
    calibrate = {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy,
                 "minmax": CalibrationMethod.MinMax}[method]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice meant for its own developers
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        # k^T (and v): symmetric int8 (x86 integer GEMMs take uint8 x int8), 7 bits below
        second = {t: [{"quant_type": QuantType.QInt8, "symmetric": True}]
                  for t in products.values()}
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
            quantize_static(
                proto, tmp, reader, quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv", "MatMul", "Gemm"], per_channel=True,
                reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded, calibrate_method=calibrate,
                extra_options={"CalibPercentile": PERCENTILE, "ActivationSymmetric": False,
                               "CalibStridedMinMax": 1,  # one frame's tensors at a time
                               "WeightSymmetric": True, "TensorQuantOverrides": second,
                               "OpTypesToExcludeOutputQuantization": ["MatMul"]})
        quantized = onnx.load(str(tmp))
        record["int8_attention_products"] = int8_attention.narrow_to_7_bits(
            quantized, products.values())
        record["integer_matmuls"] = integer_matmuls(quantized)
        record["summary"] = summary(head, attention)
        matmuls = {n.name for n in proto.graph.node if n.op_type == "MatMul"}
        head_gemms = [n for n in excluded if n in matmuls]
        if head == "dynamic" and head_gemms:
            quantize_dynamic(quantized, tmp, weight_type=QuantType.QInt8, reduce_range=True,
                             op_types_to_quantize=["MatMul"], nodes_to_quantize=head_gemms,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            quantized = onnx.load(str(tmp))
            record["float_gemms"] = len(excluded) - len(head_gemms)
        meta = ModelMetadata.from_dict({**meta.to_dict(),
                                        "extra": {**meta.extra, "int8": record}})
        del quantized.metadata_props[:]
        for key, value in meta.to_props().items():
            quantized.metadata_props.add(key=key, value=value)
        onnx.save(quantized, str(tmp))
        os.replace(tmp, target)
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
    return target

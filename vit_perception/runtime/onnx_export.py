"""Export a model to ONNX (TorchScript exporter), check it for TensorRT and verify it in ORT."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from vit_perception.runtime import INPUT_NAME, OUTPUT_NAMES
from vit_perception.runtime.metadata import ModelMetadata

# Ops TensorRT's ONNX parser cannot run (control flow, sequences, strings) or that betray a
# data-dependent export we do not want on the robot. A small deny list, not a full checker.
TRT_DENY_OPS = frozenset(
    {
        "If", "Loop", "Scan",
        "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceLength",
        "SplitToSequence", "ConcatFromSequence",
        "StringNormalizer", "TfIdfVectorizer", "RegexFullMatch", "StringConcat", "StringSplit",
        "Unique", "Compress", "Multinomial", "RandomNormal", "RandomUniform",
        "RandomNormalLike", "RandomUniformLike", "Optional", "OptionalGetElement",
        "OptionalHasElement",
    }
)


class NamedOutputs(nn.Module):
    """Wrap a dict-returning model so the exporter sees a tuple in a fixed order."""

    def __init__(self, model: nn.Module, output_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.output_names = list(output_names)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images)
        return tuple(out[k] for k in self.output_names)


def present_outputs(model: nn.Module, width: int, height: int) -> list[str]:
    """The names among ``OUTPUT_NAMES`` the model returns as tensors (eval mode, one image)."""
    with torch.inference_mode():
        out = model.eval()(torch.zeros(1, 3, height, width))
    return [k for k in OUTPUT_NAMES if isinstance(out.get(k), torch.Tensor)]


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int],
    opset: int = 17,
    dynamic_batch: bool = False,
    metadata: ModelMetadata | None = None,
) -> Path:
    """Write ``model`` as ONNX: input ``images [B,3,H,W]``, outputs named as the model's dict.

    ``input_size`` is (width, height), fixed; ``dynamic_batch`` makes the batch axis symbolic.
    ``metadata`` goes into the file's ``metadata_props``.
    """
    import onnx

    if opset < 17:
        raise ValueError(f"opset {opset} < 17: LayerNormalization needs opset 17")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = input_size
    model = model.eval().cpu()
    names = present_outputs(model, width, height)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {n: {0: "batch"} for n in [INPUT_NAME, *names]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints in shapes
        torch.onnx.export(
            NamedOutputs(model, names),
            (torch.zeros(1, 3, height, width),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=names,
            opset_version=opset,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    if metadata is not None:
        for key, value in metadata.to_props().items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    proto.producer_name = "vit_perception"
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    return path


def tensorrt_problems(path: str | Path) -> list[str]:
    """Ops in the graph (subgraphs included) TensorRT cannot run; empty when none."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    problems: list[str] = []

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            if node.op_type in TRT_DENY_OPS:
                problems.append(f"{node.op_type} ({node.name or 'unnamed'})")
            elif node.domain not in ("", "ai.onnx"):
                problems.append(f"{node.domain}::{node.op_type} (custom domain)")
            for attr in node.attribute:
                if attr.g.node:
                    visit(attr.g)
        for init in graph.initializer:
            if init.data_type == onnx.TensorProto.DOUBLE:
                problems.append(f"float64 initializer {init.name}")

    visit(proto.graph)
    return problems


def op_histogram(path: str | Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def compare_outputs(
    reference: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor]
) -> dict[str, tuple[float, float]]:
    """Per output: (max abs error, max abs error / max abs reference value)."""
    errors = {}
    for name, ref in reference.items():
        if name not in candidate:
            continue
        ref32 = ref.detach().float().cpu()
        diff = (candidate[name].detach().float().cpu() - ref32).abs().max().item()
        scale = ref32.abs().max().item()
        errors[name] = (diff, diff / scale if scale > 0 else diff)
    return errors


def verify_onnx(
    model: nn.Module, path: str | Path, input_size: tuple[int, int], trials: int = 3, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Run fresh random inputs through PyTorch and ONNX Runtime; worst error per output."""
    from vit_perception.runtime.onnx_runner import OnnxRunner
    from vit_perception.runtime.torch_runner import TorchRunner

    width, height = input_size
    gen = torch.Generator().manual_seed(seed)
    worst: dict[str, tuple[float, float]] = {}
    with TorchRunner(model) as ref, OnnxRunner(path) as ort_runner:
        for _ in range(trials):
            x = {INPUT_NAME: torch.randn(1, 3, height, width, generator=gen)}
            for name, (a, r) in compare_outputs(ref.infer(x), ort_runner.infer(x)).items():
                pa, pr = worst.get(name, (0.0, 0.0))
                worst[name] = (max(a, pa), max(r, pr))
    return worst

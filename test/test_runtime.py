"""Runner interface, PyTorch vs ONNX Runtime agreement, ONNX checks, predictor geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vit_perception.commands.bench import natural_frame
from vit_perception.runtime import OUTPUT_NAMES
from vit_perception.runtime.base import RunnerError
from vit_perception.runtime.metadata import ModelMetadata, read_onnx_metadata
from vit_perception.runtime.onnx_export import (
    compare_outputs,
    export_onnx,
    tensorrt_problems,
)
from vit_perception.runtime.onnx_runner import OnnxRunner
from vit_perception.runtime.torch_runner import TorchRunner

W, H = 64, 48


class StandIn(nn.Module):
    """A tiny ViT-DETR look-alike with the model core's output contract."""

    def __init__(self, dim: int = 32, queries: int = 5, classes: int = 3) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 16, 16)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.queries = nn.Parameter(torch.randn(queries, dim))
        self.cls = nn.Linear(dim, classes + 1)
        self.box = nn.Linear(dim, 4)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.patch(images)  # [B,C,h,w]
        b, c, h, w = f.shape
        tokens = self.norm(f.flatten(2).transpose(1, 2))
        q = self.queries.unsqueeze(0).expand(b, -1, -1)
        hs, attn = self.attn(q, tokens, tokens, need_weights=True)
        return {
            "pred_logits": self.cls(hs),
            "pred_boxes": self.box(hs).sigmoid(),
            "features": f,
            "embedding": tokens.mean(1),
            "attention": attn[:, :1].reshape(b, 1, h, w).expand(b, 4, h, w).contiguous(),
        }


@pytest.fixture(scope="module")
def standin_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = StandIn().eval()
    meta = ModelMetadata(W, H, [0.5] * 3, [0.25] * 3, ["a", "b", "c"], "abc", "standin")
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "m.onnx", (W, H), metadata=meta)
    return model, path, meta


def test_torch_and_onnxruntime_agree_on_standin(standin_onnx):
    model, path, _ = standin_onnx
    gen = torch.Generator().manual_seed(1)
    with TorchRunner(model) as ref, OnnxRunner(path, intra_op_threads=1) as ort:
        assert ort.output_names == list(OUTPUT_NAMES)
        for _ in range(5):
            x = {"images": torch.randn(1, 3, H, W, generator=gen)}
            errors = compare_outputs(ref.infer(x), ort.infer(x))
            assert set(errors) == set(OUTPUT_NAMES)
            for name, (abs_err, _rel) in errors.items():
                assert abs_err < 1e-4, name


def test_onnx_metadata_and_tensorrt_check(standin_onnx):
    _, path, meta = standin_onnx
    assert read_onnx_metadata(path) == meta
    assert tensorrt_problems(path) == []


def test_tensorrt_check_flags_control_flow(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    def branch(name):
        out = helper.make_tensor_value_info(name, TensorProto.FLOAT, [1])
        const = helper.make_node("Constant", [], [name],
                                 value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
        return helper.make_graph([const], name, [], [out])

    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("t"), else_branch=branch("e"))
    graph = helper.make_graph([node], "g", [cond], [out])
    path = tmp_path / "if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert any(p.startswith("If") for p in tensorrt_problems(path))


def test_onnx_runner_io_binding_on_cpu_matches_plain_run(standin_onnx):
    _, path, _ = standin_onnx
    x = {"images": torch.randn(2, 3, H, W)}  # exported for batch 1: run image by image
    with OnnxRunner(path, io_binding=True) as bound, OnnxRunner(path) as plain:
        a, b = bound.infer(x), plain.infer(x)
        one = plain.infer({"images": x["images"][1:]})
    for name in OUTPUT_NAMES:
        torch.testing.assert_close(a[name], b[name])
        torch.testing.assert_close(a[name][1:], one[name])


def test_dynamic_batch_export(tmp_path):
    model = StandIn().eval()
    path = export_onnx(model, tmp_path / "dyn.onnx", (W, H), dynamic_batch=True)
    x = {"images": torch.randn(3, 3, H, W)}
    with TorchRunner(model) as ref, OnnxRunner(path) as ort:
        assert ort._fixed_batch is None
        for _name, (abs_err, _) in compare_outputs(ref.infer(x), ort.infer(x)).items():
            assert abs_err < 1e-4


def test_runner_interface(standin_onnx):
    model, _, _ = standin_onnx
    runner = TorchRunner(model, precision="bf16")
    assert not runner.is_active
    with runner:
        assert runner.is_active
        out = runner.infer({"images": torch.randn(1, 3, H, W)})
        assert set(out) == set(OUTPUT_NAMES)
        with pytest.raises(RunnerError, match="missing inputs"):
            runner.infer({"x": torch.zeros(1)})
    assert not runner.is_active
    with pytest.raises(RunnerError, match="CUDA graphs"):
        TorchRunner(model, cuda_graphs=True)
    with pytest.raises(RunnerError, match="precision"):
        TorchRunner(model, precision="int3")


def test_natural_frames_look_natural():
    a, b = natural_frame(320, 240, seed=0), natural_frame(320, 240, seed=1)
    assert a.shape == (240, 320, 3) and a.dtype == np.uint8
    assert a.std() > 20 and not np.array_equal(a, b)

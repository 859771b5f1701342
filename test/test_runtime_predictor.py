"""The tiny config through PyTorch and ONNX Runtime: same outputs, boxes in frame pixels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from vit_perception.commands.bench import natural_frame
from vit_perception.config import available_configs
from vit_perception.runtime import OUTPUT_NAMES
from vit_perception.runtime.base import Runner
from vit_perception.runtime.loading import load_torch_model
from vit_perception.runtime.metadata import ModelMetadata, state_dict_hash
from vit_perception.runtime.onnx_export import compare_outputs, export_onnx, tensorrt_problems
from vit_perception.runtime.onnx_runner import OnnxRunner
from vit_perception.runtime.predictor import Grid, Predictor
from vit_perception.runtime.torch_runner import TorchRunner


def tiny_config_name() -> str:
    names = [n for n in available_configs() if "tiny" in n]
    if not names:
        pytest.skip("no config named *tiny* under config/models")
    return sorted(names)[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, post, cfg = load_torch_model(tiny_config_name())
    meta = ModelMetadata.from_config(cfg, state_dict_hash(net))
    path = export_onnx(net, tmp_path_factory.mktemp("tiny") / "tiny.onnx", meta.input_size,
                       metadata=meta)
    return net, post, meta, path


def test_tiny_export_is_tensorrt_clean(tiny):
    assert tensorrt_problems(tiny[3]) == []


def test_torch_and_onnxruntime_agree_fp32(tiny):
    """Five random inputs and two natural frames, every named output."""
    net, post, meta, path = tiny
    w, h = meta.input_size
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, 3, h, w, generator=gen) for _ in range(5)]
    torch_runner, ort_runner = TorchRunner(net), OnnxRunner(path)
    pred = Predictor(torch_runner, post, meta)
    for seed, size in ((1, (640, 480)), (2, (300, 200))):
        inputs.append(pred.preprocess([natural_frame(*size, seed=seed)])[0])
    with torch_runner, ort_runner:
        for x in inputs:
            errors = compare_outputs(torch_runner.infer({"images": x}),
                                     ort_runner.infer({"images": x}))
            assert set(errors) == set(OUTPUT_NAMES)
            for name, (abs_err, rel_err) in errors.items():
                assert rel_err < 1e-4 and abs_err < 1e-3, (name, abs_err, rel_err)


def test_predictors_agree_and_onnx_metadata_drives_preprocessing(tiny):
    net, post, meta, path = tiny
    frames = [natural_frame(640, 480, seed=3), natural_frame(300, 200, seed=4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an .onnx with metadata loads without warnings
        ort_pred = Predictor.load(path, backend="onnxruntime", score_threshold=0.0,
                                  max_detections=10)
    assert ort_pred.input_size == meta.input_size and ort_pred.class_names == meta.class_names
    torch_pred = Predictor(TorchRunner(net), post, meta, score_threshold=0.0, max_detections=10)
    for a, b in zip(torch_pred.predict_batch(frames), ort_pred.predict_batch(frames)):
        assert len(a) == len(b) == 10
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.features.shape == b.features.shape and a.features.dtype == np.float32
        assert set(a.timings) == {"preprocess", "infer", "postprocess"}
    ort_pred.score_threshold, ort_pred.max_detections = 1.1, 5
    assert len(ort_pred.predict(frames[0])) == 0
    ort_pred.want_features = ort_pred.want_attention = False
    p = ort_pred.predict(frames[0])
    assert p.features is None and p.attention is None and p.embedding is not None
    ort_pred.close()


class FixedRunner(Runner):
    """Returns preset normalised cxcywh boxes with one confident class per query."""

    def __init__(self, boxes: torch.Tensor, num_classes: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.boxes, self.num_classes, self.grid = boxes, num_classes, grid

    def _activate(self) -> None:
        pass

    def _infer(self, inputs):
        b, n = inputs["images"].shape[0], self.boxes.shape[0]
        logits = torch.full((b, n, self.num_classes + 1), -10.0)
        logits[..., 0] = 10.0
        gh, gw = self.grid
        return {"pred_logits": logits, "pred_boxes": self.boxes.expand(b, n, 4),
                "features": torch.zeros(b, 8, gh, gw), "embedding": torch.zeros(b, 8),
                "attention": torch.zeros(b, 2, gh, gw)}


def test_boxes_land_in_frame_pixels():
    from vit_perception.models.postprocess import PostProcessor
    from vit_perception.models.preprocess import letterbox_params

    in_w, in_h, frame_w, frame_h = 320, 240, 300, 200  # letterboxed: padding top and bottom
    lb = letterbox_params(frame_w, frame_h, in_w, in_h)
    assert lb.pad_y > 0
    want = np.array([[0, 0, frame_w, frame_h], [30, 40, 120, 100]], dtype=np.float64)
    xyxy = lb.to_input(want.copy()) / np.array([in_w, in_h, in_w, in_h])
    cxcywh = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                       xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], 1)
    runner = FixedRunner(torch.tensor(cxcywh, dtype=torch.float32), 2, (in_h // 16, in_w // 16))
    meta = ModelMetadata(in_w, in_h, [0.5] * 3, [0.2] * 3, ["a", "b"])
    pred = Predictor(runner, PostProcessor(["a", "b"]), meta).predict(
        np.zeros((frame_h, frame_w, 3), np.uint8))
    order = np.argsort(pred.boxes[:, 2])[::-1]
    np.testing.assert_allclose(pred.boxes[order], want, atol=1e-3)
    assert pred.label_names == ["a", "a"]
    grid = pred.grid
    assert isinstance(grid, Grid) and grid.stride_x == 16 and grid.offset_y == lb.pad_y
    # first and last cell centres fall inside the frame (padding rows map outside it)
    x0, y0 = grid.cell_to_frame(0, 1)
    x1, y1 = grid.cell_to_frame(in_w // 16 - 1, in_h // 16 - 2)
    assert 0 < x0 < 16 and 0 < y0 < 16 and frame_w - 16 < x1 < frame_w and y1 < frame_h
    col, row = grid.frame_to_cell(*grid.cell_to_frame(7, 5))
    assert abs(col - 7) < 1e-9 and abs(row - 5) < 1e-9


def test_onnxruntime_cpu_copy_fuses_attention_and_leaves_the_export_plain(tiny):
    """The runner's CPU copy (ORT ``Attention`` contrib ops) agrees with the plain graph and
    with torch; the deployable file keeps standard ops only."""
    import onnx

    from vit_perception.runtime.onnx_runner import fuse_attention, ort_cpu_model

    net, _post, meta, path = tiny
    before = path.read_bytes()
    proto = onnx.load(str(path))
    depth = len(net.backbone.blocks)
    assert fuse_attention(proto) == depth  # the last one too, whose qkv the [CLS] map shares
    fused = ort_cpu_model(path)
    assert fused != path and path.read_bytes() == before and tensorrt_problems(path) == []
    assert ort_cpu_model(path) == fused  # cached next to the file
    w, h = meta.input_size
    x = {"images": torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(3))}
    with TorchRunner(net) as ref, OnnxRunner(path) as on, OnnxRunner(path,
                                                                   fuse_attention=False) as off:
        want = ref.infer(x)
        for runner in (on, off):
            for name, (abs_err, rel_err) in compare_outputs(want, runner.infer(x)).items():
                assert rel_err < 1e-4 and abs_err < 1e-3, (name, abs_err, rel_err)

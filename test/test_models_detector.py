"""Built detectors: output names and shapes, overfitting two images, checkpoints, ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vit_perception.config import load_config
from vit_perception.models import build
from vit_perception.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

MICRO = {"classes": ["a", "b"], "input": {"width": 64, "height": 48},
         "model": {"backbone": {"embed_dim": 48, "depth": 1, "num_heads": 3},
                   "head": {"hidden_dim": 32, "num_queries": 8, "dec_layers": 2,
                            "ffn_dim": 64, "nheads": 2}}}
TARGETS = [{"labels": torch.tensor([0, 1]),
            "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]])},
           {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not fight parallel jobs for the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _micro(**overrides):
    torch.manual_seed(0)
    return build(load_config("vit_tiny_detr", {**MICRO, **overrides}))


@pytest.mark.parametrize("name", ["vit_tiny_detr", "swin_t_detr"])
def test_forward_outputs_named_tensors(name):
    cfg = load_config(name, {"input": {"width": 96, "height": 64}})
    model, criterion, _ = build(cfg)
    k = len(cfg["classes"])
    x = torch.randn(2, 3, 64, 96)
    model.eval()
    with torch.no_grad():
        out = model(x)
    n = out["pred_logits"].shape[1]
    assert set(out) == {"pred_logits", "pred_boxes", "features", "embedding", "attention"}
    assert out["pred_logits"].shape == (2, n, k + 1) and out["pred_boxes"].shape == (2, n, 4)
    c, h, w = out["features"].shape[1:]
    assert out["embedding"].shape == (2, c)
    assert out["attention"].shape[0] == 2 and out["attention"].shape[2:] == (h, w)
    assert torch.all((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1.5))
    model.train()
    out = model(x)
    assert len(out["aux_outputs"]) == cfg["model"]["head"]["dec_layers"] - 1
    losses = criterion(out, [TARGETS[0], TARGETS[1]])
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])


def test_overfitting_two_images_drives_loss_near_zero():
    model, criterion, post = _micro()
    x = torch.randn(2, 3, 48, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    model.train()
    first = None
    for _ in range(150):
        losses = criterion(model(x), TARGETS)
        first = first if first is not None else losses["loss"].item()
        opt.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
    final = losses["loss"].item()
    assert final < 0.05 * first, (first, final)
    assert losses["loss_bbox"].item() < 0.05 and losses["loss_ce"].item() < 0.05
    model.eval()
    with torch.no_grad():
        out = model(x)
    from vit_perception.models.preprocess import letterbox_params

    dets = post(out, [letterbox_params(64, 48, 64, 48)] * 2)
    assert dets[1].labels.tolist() == [1]
    np.testing.assert_allclose(dets[1].boxes[0], [19.2, 14.4, 44.8, 33.6], atol=2.0)


def test_checkpoint_round_trip_and_errors(tmp_path):
    model, _, _ = _micro()
    cfg = load_config("vit_tiny_detr", MICRO)
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", model, cfg,
                           extra={"epoch": 3, "metrics": {"AP50": 0.5}, "ema": [torch.ones(2)]})
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temp file left
    loaded, criterion, post, cfg2, extra = load_checkpoint(path)
    assert cfg2 == cfg and extra["epoch"] == 3 and post.classes == ["a", "b"]
    x = torch.randn(1, 3, 48, 64)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x)["pred_boxes"], loaded(x)["pred_boxes"])
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "vit_perception.checkpoint/1" and raw["preprocess"]["width"] == 64

    with pytest.raises(CheckpointError, match="missing.pt.*not found"):
        load_checkpoint(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": model.state_dict()}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a vit_perception"):
        load_checkpoint(foreign)
    wrong = tmp_path / "wrong.pt"
    raw["config"]["model"]["head"]["hidden_dim"] = 48
    torch.save(raw, wrong)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(wrong)


def test_onnx_export_matches_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, _, _ = _micro()
    model.eval()
    x = torch.randn(1, 3, 48, 64)
    names = ["pred_logits", "pred_boxes", "features", "embedding", "attention"]

    class Wrapped(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, images):
            out = self.net(images)
            return tuple(out[k] for k in names)

    path = tmp_path / "model.onnx"
    torch.onnx.export(Wrapped(model), (x,), str(path), input_names=["images"],
                      output_names=names, opset_version=17, dynamo=False)
    got = ort.InferenceSession(str(path)).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    for name, value in zip(names, got):
        np.testing.assert_allclose(value, ref[name].numpy(), atol=2e-4, rtol=1e-3, err_msg=name)


def test_models_command_counts_parameters_and_flops():
    from vit_perception.commands.models import count

    cfg = load_config("vit_tiny_detr", MICRO)
    params, gflops, _attention = count(cfg, 64, 48)
    model, _, _ = _micro()
    assert params == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    assert 0 < gflops < 1


def test_sine_tables_are_cached_per_size_and_match_a_fresh_computation():
    import math

    from vit_perception.models.position_encoding import PositionEmbeddingSine, _sine

    pe = PositionEmbeddingSine(16)
    for h, w in ((3, 4), (5, 7), (3, 4)):
        with torch.inference_mode():
            got = pe(h, w)
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h * 2 * math.pi
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w * 2 * math.pi
        pos_y = _sine(ys, 16, 10000.0)[:, None, :].expand(h, w, -1)
        pos_x = _sine(xs, 16, 10000.0)[None, :, :].expand(h, w, -1)
        want = torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1).unsqueeze(0)
        assert got.shape == (1, 32, h, w) and torch.equal(got, want)
        assert not got.is_inference()  # usable by autograd after an inference_mode warm-up
    assert pe(5, 7) is pe(5, 7)


def test_non_two_stage_trains_after_an_inference_mode_forward():
    """Cached tables first built under inference_mode must not break a later backward pass."""
    head = {**MICRO["model"]["head"], "two_stage": False}
    model, _, _ = _micro(model={**MICRO["model"], "head": head})
    x = torch.randn(1, 3, 48, 64)
    with torch.inference_mode():
        model.eval()(x)
    out = model.train()(x)
    (out["pred_boxes"].sum() + out["pred_logits"].sum()).backward()


def test_vit_model_build_does_not_import_timm():
    import subprocess
    import sys

    code = ("import sys, torch; from vit_perception.config import load_config; "
            "from vit_perception.models import build; build(load_config('vit_tiny_detr')); "
            "sys.exit(1 if 'timm' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0

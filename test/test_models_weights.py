"""Pretrained-weight files in the published key layouts load with zero missing keys; pos-embed
interpolation to other input sizes."""

from __future__ import annotations

import functools

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from vit_perception.models.swin import SwinBackbone
from vit_perception.models.vit import ViTBackbone, interpolate_pos_embed
from vit_perception.models.weights import WeightsError, load_swin_weights, load_vit_weights


def _dino_vits16_state_dict() -> dict:
    """Random weights in facebookresearch/dino's ViT-S/16 layout (224 px, no head)."""
    return dict(_dino_vits16_cached())


@functools.lru_cache(maxsize=1)
def _dino_vits16_cached() -> dict:
    sd = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0).state_dict()
    assert sd["pos_embed"].shape == (1, 197, 384)
    return sd


def _dinov2_vits14_reg_state_dict() -> dict:
    """Random weights in DINOv2's ViT-S/14-reg4 layout: 518 px pos_embed incl. [CLS],
    ``register_tokens``, ``mask_token``, ``ls1.gamma``/``ls2.gamma``."""
    model = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0)
    sd = dict(model.state_dict())
    sd["register_tokens"] = sd.pop("reg_token")
    pos = sd.pop("pos_embed")  # timm: 37*37 patch positions only
    sd["pos_embed"] = torch.cat((torch.randn(1, 1, 384), pos), dim=1)
    sd["mask_token"] = torch.zeros(1, 384)
    assert sd["pos_embed"].shape == (1, 1370, 384) and "blocks.0.ls1.gamma" in sd
    return sd


def test_dino_checkpoint_loads_with_zero_missing_keys(tmp_path):
    sd = _dino_vits16_state_dict()
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(sd, path)
    net = ViTBackbone(input_size=(320, 240), patch_size=16, embed_dim=384, depth=12, num_heads=6)
    report = load_vit_weights(net, path)
    assert report.missing == [] and report.unexpected == [], str(report)
    assert torch.equal(net.blocks[11].mlp.fc2.weight, sd["blocks.11.mlp.fc2.weight"])
    assert net.pos_embed.shape == (1, 1 + 15 * 20, 384) and "interpolated" in str(report)
    assert torch.equal(net.pos_embed[:, 0], sd["pos_embed"][:, 0])


def test_dino_teacher_wrapper_with_prefixes(tmp_path):
    sd = {f"backbone.{k}": v for k, v in _dino_vits16_state_dict().items()}
    sd["head.mlp.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "checkpoint.pth"
    torch.save({"teacher": sd, "epoch": 3}, path)
    net = ViTBackbone(input_size=(224, 224), patch_size=16, embed_dim=384, depth=12, num_heads=6)
    report = load_vit_weights(net, path)
    assert report.missing == [] and report.unexpected == [] and report.ignored


def test_dinov2_checkpoint_loads_with_zero_missing_keys(tmp_path):
    sd = _dinov2_vits14_reg_state_dict()
    path = tmp_path / "dinov2_vits14_reg4_pretrain.safetensors"
    save_file(sd, str(path))
    net = ViTBackbone(input_size=(644, 476), patch_size=14, embed_dim=384, depth=12, num_heads=6,
                      num_registers=4, layer_scale=1e-5)
    report = load_vit_weights(net, path)
    assert report.missing == [] and report.unexpected == [], str(report)
    assert report.ignored == ["mask_token"]
    assert torch.equal(net.register_tokens, sd["register_tokens"])
    assert torch.equal(net.blocks[3].ls2.gamma, sd["blocks.3.ls2.gamma"])


def test_mismatched_architecture_is_reported(tmp_path):
    path = tmp_path / "dino.pth"
    torch.save(_dino_vits16_state_dict(), path)
    net = ViTBackbone(input_size=(224, 224), patch_size=16, embed_dim=384, depth=14, num_heads=6)
    report = load_vit_weights(net, path)
    assert any(k.startswith("blocks.13.") for k in report.missing)
    assert "missing" in str(report)


def test_torchvision_swin_state_dict_loads_with_zero_missing_keys(tmp_path):
    sd = torchvision.models.swin_t(weights=None).state_dict()
    path = tmp_path / "swin_t-704ceda3.pth"
    torch.save(sd, path)
    net = SwinBackbone(variant="t")
    report = load_swin_weights(net, path)
    assert report.missing == [] and report.unexpected == [], str(report)
    assert report.ignored == ["head.weight", "head.bias"]


def test_unreadable_weights_raise_clear_errors(tmp_path):
    net = ViTBackbone(input_size=(64, 64), patch_size=16, embed_dim=48, depth=1, num_heads=3)
    with pytest.raises(WeightsError, match="not found"):
        load_vit_weights(net, tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="bad.pth"):
        load_vit_weights(net, bad)
    other = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, other)
    with pytest.raises(WeightsError, match="nothing in the file fits"):
        load_vit_weights(net, other)


def test_pos_embed_interpolation_identity_and_smoothness():
    pos = torch.randn(1, 1 + 4 * 6, 8)
    assert torch.equal(interpolate_pos_embed(pos, (4, 6), (4, 6)), pos)
    # a linear ramp stays (nearly) a linear ramp when resampled
    ramp = torch.linspace(0, 1, 6).repeat(4, 1).reshape(1, 24, 1).expand(1, 24, 8)
    ramp = torch.cat((torch.zeros(1, 1, 8), ramp), dim=1)
    out = interpolate_pos_embed(ramp, (4, 6), (8, 12))
    grid = out[0, 1:, 0].reshape(8, 12)
    assert out.shape == (1, 97, 8) and torch.all(grid[:, 1:] >= grid[:, :-1] - 1e-4)


@pytest.mark.parametrize("size", [(224, 224), (320, 240), (448, 336)])
def test_vit_runs_at_three_input_sizes_with_interpolated_pos_embed(size):
    torch.manual_seed(0)
    net = ViTBackbone(input_size=(224, 224), patch_size=16, embed_dim=48, depth=2,
                      num_heads=3, num_registers=2).eval()
    w, h = size
    with torch.no_grad():
        out = net(torch.randn(1, 3, h, w))
    assert out["features"].shape == (1, 48, h // 16, w // 16)
    assert out["attention"].shape == (1, 3, h // 16, w // 16)
    total = out["attention"].sum(dim=(2, 3))
    assert torch.all(total <= 1 + 1e-5) and torch.all(total > 0)
    assert net.pos_embed_for((h // 16, w // 16)).shape == (1, 1 + (h // 16) * (w // 16), 48)


def test_cls_attention_matches_timm_reference():
    """The explicit [CLS] attention equals softmax(q k^T / sqrt(d)) from timm's own modules."""
    torch.manual_seed(1)
    net = ViTBackbone(input_size=(64, 48), patch_size=16, embed_dim=48, depth=1, num_heads=3).eval()
    x = torch.randn(2, 1 + 12, 48)
    blk = net.blocks[0]
    qkv = blk.attn.qkv(blk.norm1(x)).reshape(2, 13, 3, 3, 16).permute(2, 0, 3, 1, 4)
    ref = (qkv[0] @ qkv[1].transpose(-2, -1) / 4.0).softmax(-1)[:, :, 0, 1:].reshape(2, 3, 3, 4)
    assert torch.allclose(net.cls_attention(blk, x, (3, 4)), ref, atol=1e-6)

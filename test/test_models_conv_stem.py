"""model.backbone.stem: conv (Xiao et al. 2021) and cnn (a small ResNet-like network, a hybrid
ViT) give the patch stem's grid, train, export to ONNX and agree with ONNX Runtime; the patch
stem (and DINO weight loading) is unchanged."""

from __future__ import annotations

import pytest
import torch
import yaml

from vit_perception.cli import main
from vit_perception.config import load_config, resolve_config_path
from vit_perception.evaluation.probe_backbone import vit_shape_from_weights
from vit_perception.models import build
from vit_perception.models.vit import CNNStem, ConvStem, PatchEmbed, ViTBackbone


def _vit(stem: str, **kw) -> ViTBackbone:
    args = dict(input_size=(160, 128), patch_size=16, embed_dim=64, depth=1, num_heads=2)
    return ViTBackbone(**{**args, **kw}, stem=stem)


def test_conv_stem_same_grid_as_patch_stem():
    torch.manual_seed(0)
    conv, patch = _vit("conv"), _vit("patch")
    assert isinstance(conv.patch_embed, ConvStem) and isinstance(patch.patch_embed, PatchEmbed)
    strides = [m.stride for m in conv.patch_embed.stem if isinstance(m, torch.nn.Conv2d)]
    assert strides == [(2, 2)] * 4  # 16 = 2^4
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in conv.patch_embed.stem) == 4
    assert conv.patch_embed.proj.kernel_size == (1, 1)
    for h, w in ((128, 160), (100, 90)):  # a multiple of the patch, and a padded size
        x = torch.randn(2, 3, h, w)
        a, b = conv.eval()(x), patch.eval()(x)
        assert a["features"].shape == b["features"].shape
        assert a["attention"].shape == b["attention"].shape
        assert a["padded_size"] == b["padded_size"]
    # the stem learns: one step changes its first convolution
    conv.train()
    before = conv.patch_embed.stem[0].weight.detach().clone()
    opt = torch.optim.SGD(conv.parameters(), lr=0.1)
    conv(torch.randn(2, 3, 128, 160))["features"].pow(2).mean().backward()
    opt.step()
    assert not torch.equal(before, conv.patch_embed.stem[0].weight)


def test_cnn_stem_same_grid_learns_and_its_shape_is_read_off_the_weights():
    torch.manual_seed(0)
    cnn, patch = _vit("cnn"), _vit("patch")
    assert isinstance(cnn.patch_embed, CNNStem)
    convs = [m for m in cnn.patch_embed.stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.stride for m in convs] == [(2, 2), (1, 1)] * 4 + [(1, 1)] * 2  # 16 = 2^4
    assert [m.dilation for m in convs[-2:]] == [(2, 2)] * 2
    for h, w in ((128, 160), (100, 90)):
        x = torch.randn(2, 3, h, w)
        a, b = cnn.eval()(x), patch.eval()(x)
        assert a["features"].shape == b["features"].shape
        assert a["padded_size"] == b["padded_size"]
    cnn.train()
    before = convs[0].weight.detach().clone()
    opt = torch.optim.SGD(cnn.parameters(), lr=0.1)
    cnn(torch.randn(2, 3, 128, 160))["features"].pow(2).mean().backward()
    opt.step()
    assert not torch.equal(before, convs[0].weight)
    section = vit_shape_from_weights(cnn.state_dict())
    assert section["stem"] == "cnn" and section["patch_size"] == 16
    assert section["embed_dim"] == 64 and section["depth"] == 1
    assert vit_shape_from_weights(_vit("conv").state_dict())["stem"] == "conv"
    assert "stem" not in vit_shape_from_weights(patch.state_dict())


def test_stem_key_validated_and_defaults_to_patch():
    with pytest.raises(ValueError, match="stem must be one of patch, conv, cnn"):
        _vit("convolution")
    with pytest.raises(ValueError, match="power-of-two"):
        _vit("conv", patch_size=14)
    with pytest.raises(ValueError, match="stem: cnn needs a power-of-two"):
        _vit("cnn", patch_size=14)
    cfg = load_config("vit_tiny_detr")
    assert cfg["model"]["backbone"]["stem"] == "patch"
    model, _, _ = build(load_config("vit_tiny_detr", {"classes": ["a"]}))
    assert isinstance(model.backbone.patch_embed, PatchEmbed)
    conv_model, _, _ = build(load_config(
        "vit_tiny_detr", {"classes": ["a"], "model": {"backbone": {"stem": "conv"}}}))
    assert isinstance(conv_model.backbone.patch_embed, ConvStem)
    # the transformer's parameter names are the same: only patch_embed.* differs
    names = {k for k in model.state_dict() if not k.startswith("backbone.patch_embed")}
    conv_names = {k for k in conv_model.state_dict()
                  if not k.startswith("backbone.patch_embed")}
    assert names == conv_names


@pytest.mark.parametrize("stem", ["conv", "cnn"])
def test_conv_stem_exports_and_matches_onnxruntime(tmp_path, capsys, stem):
    cfg = yaml.safe_load(resolve_config_path("vit_tiny_detr").read_text())
    cfg["name"] = f"vit_tiny_{stem}_detr"
    cfg["model"]["backbone"]["stem"] = stem
    path = tmp_path / f"vit_tiny_{stem}_detr.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "conv.onnx"
    rc = main(["export", "--model", str(path), "--out", str(out), "--size", "160x128",
               "--verify", "1"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "max abs" in text and out.is_file()

"""Training pieces: resumable sampler, box-aware augmentation + runtime preprocessing, LoRA,
EMA, schedule, optimizer groups, RNG state round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from vit_perception.models.preprocess import letterbox_params
from vit_perception.training.augment import Augment
from vit_perception.training.dataset import DetectionDataset, Sample, to_model_input
from vit_perception.training.ema import ModelEMA
from vit_perception.training.lora import LoRALinear, apply_lora, merge_lora
from vit_perception.training.optim import build_optimizer, param_groups
from vit_perception.training.sampler import ResumableSampler, repeat_factors
from vit_perception.training.schedule import lr_factor
from vit_perception.training.state import rng_state, set_rng_state


def test_sampler_resumes_mid_epoch_and_shards():
    s = ResumableSampler(10, mode="shuffle", samples_per_epoch=13, seed=4)
    s.set_state(2)
    whole = list(s)
    assert len(whole) == 13 and {i for i, _ in whole} == set(range(10))
    s.set_state(2, start=5)
    assert list(s) == whole[5:]
    s.set_state(3)
    assert list(s) != whole  # a new order each epoch
    shards = []
    for rank in range(2):
        r = ResumableSampler(10, mode="shuffle", samples_per_epoch=13, seed=4, rank=rank,
                             world_size=2)
        r.set_state(2)
        shards.append(list(r))
    assert len(shards[0]) == len(shards[1]) == 7
    assert [x for pair in zip(*shards) for x in pair][:13] == whole


def test_repeat_factors_oversample_rare_classes():
    labels = [np.array([0])] * 9 + [np.array([0, 1])]
    f = repeat_factors(labels, 2, threshold=0.5)
    assert f[:9] == pytest.approx([1.0] * 9) and f[9] == pytest.approx(np.sqrt(0.5 / 0.1))
    s = ResumableSampler(10, mode="repeat_factor", factors=f, seed=0)
    counts = np.bincount([i for i, _ in s], minlength=10)
    assert counts[9] >= 2 and len(s) == round(f.sum())
    rs = ResumableSampler(10, mode="replacement", factors=f, samples_per_epoch=50, seed=0)
    assert len(list(rs)) == 50


def test_augmentation_moves_boxes_with_pixels():
    # a white square on black: after any augmentation the box still frames the white pixels
    image = torch.zeros(3, 120, 160, dtype=torch.uint8)
    image[:, 30:60, 100:140] = 255
    boxes, labels = torch.tensor([[100.0, 30.0, 140.0, 60.0]]), torch.tensor([1])
    aug = Augment(hflip=0.5, crop=1.0, zoom_out=0.5, photometric=0.0, fill=(0, 0, 0))
    for seed in range(12):
        torch.manual_seed(seed)
        img, b, lab = aug(image, boxes, labels)
        assert lab.tolist() == [1] and b.shape == (1, 4)
        x1, y1, x2, y2 = b[0].round().int().tolist()
        mask = img[0] > 127
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert (xs.min().item(), ys.min().item()) == (x1, y1), seed
        assert (xs.max().item() + 1, ys.max().item() + 1) == (x2, y2), seed


def test_source_map_says_where_every_pixel_went():
    """``Augment(..., source=True)``: the map from source to augmented pixels holds for every
    visible pixel through flips, zoom-outs and crops, and asking for it leaves the draw"""
    aug = Augment(hflip=0.5, crop=0.7, zoom_out=0.5, photometric=0.0)
    img = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(0))
    boxes, labels = torch.tensor([[5.0, 6.0, 12.0, 20.0]]), torch.tensor([0])
    kinds = set()
    for seed in range(16):
        torch.manual_seed(seed)
        out, b, _, where = aug(img, boxes, labels, source=True)
        torch.manual_seed(seed)
        plain, b_plain, _ = aug(img, boxes, labels)
        assert torch.equal(out, plain) and torch.equal(b, b_plain)
        sx, tx, ty, x0, y0, x1, y1 = where.tolist()
        kinds.add((sx < 0, out.shape[-2:] != img.shape[-2:]))
        ys, xs = torch.meshgrid(torch.arange(int(y0), int(y1)), torch.arange(int(x0), int(x1)),
                                indexing="ij")
        xo = (sx * (xs + 0.5) + tx - 0.5).round().long()
        assert torch.equal(out[:, ys + int(ty), xo], img[:, ys, xs])
        edges = sorted((sx * float(boxes[0, 0]) + tx, sx * float(boxes[0, 2]) + tx))
        torch.testing.assert_close(b[0], torch.tensor([edges[0], float(boxes[0, 1]) + ty,
                                                       edges[1], float(boxes[0, 3]) + ty]))
    assert {k[0] for k in kinds} == {True, False} and any(k[1] for k in kinds)


def test_dataset_uses_runtime_letterbox_and_is_seeded():
    img = np.full((120, 200, 3), 128, np.uint8)
    s = Sample(np.array([[20.0, 10.0, 60.0, 50.0]], np.float32), np.array([0]), 200, 120, "x",
               _image=img)
    ds = DetectionDataset([s], (160, 128), [0.5] * 3, [0.25] * 3,
                          Augment(crop=1.0, photometric=1.0))
    a, b = ds[(0, 7)], ds[(0, 7)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    x, target = to_model_input(torch.from_numpy(img).permute(2, 0, 1), torch.tensor(s.boxes),
                               torch.tensor(s.labels), (160, 128), [0.5] * 3, [0.25] * 3)
    lb = letterbox_params(200, 120, 160, 128)
    x1, y1, x2, y2 = lb.to_input(s.boxes)[0]
    expect = [(x1 + x2) / 2 / 160, (y1 + y2) / 2 / 128, (x2 - x1) / 160, (y2 - y1) / 128]
    assert target["boxes"][0].tolist() == pytest.approx(expect, abs=1e-6)
    assert x.shape == (3, 128, 160) and x[:, 0].abs().max() == 0  # padding rows are the mean


def test_lora_trains_only_low_rank_and_merges_exactly():
    torch.manual_seed(0)
    block = nn.Module()
    block.attn = nn.Module()
    block.attn.qkv, block.attn.proj = nn.Linear(8, 24), nn.Linear(8, 8)
    assert apply_lora(block, rank=2) == 2
    assert isinstance(block.attn.qkv, LoRALinear)
    trainable = sorted(n for n, p in block.named_parameters() if p.requires_grad)
    assert trainable == ["attn.proj.lora_A", "attn.proj.lora_B", "attn.qkv.lora_A",
                         "attn.qkv.lora_B"]
    with torch.no_grad():
        block.attn.qkv.lora_B.normal_()
    x = torch.randn(5, 8)
    merged = merge_lora(block)
    assert type(merged.attn.qkv) is nn.Linear
    assert torch.allclose(merged.attn.qkv(x), block.attn.qkv(x), atol=1e-5)
    assert set(merged.state_dict()) == {"attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                                        "attn.proj.bias"}


def test_ema_update_and_schedule():
    model = nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.9, warmup=1.0)
    old = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, momentum=0.5)
    assert torch.allclose(ema.module.weight, 0.5 * old + 0.5)
    ema.update(model, momentum=0.0)
    assert torch.equal(ema.module.weight, model.weight)
    assert int(ema.updates) == 2 and ema.momentum() == pytest.approx(0.9)
    assert lr_factor(0.0, 0, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(0.0, 20, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(1.0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(0.5, 50, 10, 0.1) == pytest.approx(0.55)


def test_param_groups_split_backbone_and_decay():
    model = nn.Module()
    model.backbone = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    model.head = nn.Linear(4, 2)
    groups = {g["name"]: g for g in param_groups(model, 1e-3, 0.1, 0.05)}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4)
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0
    assert groups["head"]["lr"] == pytest.approx(1e-3) and groups["head"]["weight_decay"] == 0.05


def test_pretrained_backbone_gets_a_tenth_of_the_lr_and_the_log_says_so(caplog):
    model = nn.Module()
    model.backbone = nn.Linear(4, 4)
    model.head = nn.Linear(4, 2)
    opts = {"lr": 1e-3, "weight_decay": 0.05, "betas": (0.9, 0.999), "backbone_lr_mult": None}

    def backbone_lr(**kwargs) -> float:
        opt = build_optimizer(model, dict(opts, **kwargs.pop("opts", {})), **kwargs)
        return next(g["lr"] for g in opt.param_groups if g["name"] == "backbone")

    with caplog.at_level("INFO", logger="vit_perception.training.optim"):
        assert backbone_lr() == pytest.approx(1e-3)
        assert "backbone learning rate" not in caplog.text
        assert backbone_lr(pretrained=True) == pytest.approx(1e-4)
        assert "backbone_lr_mult=1.0" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="vit_perception.training.optim"):
        assert backbone_lr(pretrained=True, opts={"backbone_lr_mult": 1.0}) == pytest.approx(1e-3)
        assert "backbone learning rate" not in caplog.text


def test_rng_state_round_trip_loads_weights_only(tmp_path):
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_disk_cache_when_frames_exceed_the_memory_limit(tmp_path):
    from vit_perception.data.synth import write_synthetic_bag
    from vit_perception.training.dataset import bag_classes, load_frames

    bag = write_synthetic_bag(tmp_path / "bag", frames=3, seed=0, size=(96, 64), num_classes=2)
    classes = bag_classes([bag], "/camera/image_raw", "/labels")
    mem = load_frames([bag], classes, "/camera/image_raw", "/labels")
    disk = load_frames([bag], classes, "/camera/image_raw", "/labels", cache_max_mb=0,
                       cache_dir=tmp_path / "cache")
    assert len(disk) == 3 and len(list((tmp_path / "cache").glob("*.npy"))) == 3
    for a, b in zip(mem, disk):
        assert a._path is None and b._image is None
        assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)


def test_init_from_checkpoint_or_backbone_file(tmp_path):
    from vit_perception.config import load_config
    from vit_perception.models.builder import build
    from vit_perception.models.checkpoint import save_checkpoint
    from vit_perception.training.state import init_weights

    small = {"input": {"width": 64, "height": 64}, "classes": ["a", "b"]}
    cfg = load_config("vit_tiny_detr", small)
    source, _, _ = build(cfg)
    save_checkpoint(tmp_path / "best.pt", source, cfg)
    target, _, _ = build(load_config("vit_tiny_detr", {**small, "classes": ["a", "b", "c"]}))
    summary = init_weights(target, tmp_path / "best.pt")  # class heads (K+1 rows) skipped
    assert "checkpoint" in summary and "(0 tensors skipped)" not in summary
    assert torch.equal(target.backbone.pos_embed, source.backbone.pos_embed)
    assert torch.equal(target.head.box_head.layers[0].weight, source.head.box_head.layers[0].weight)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in
                            source.backbone.state_dict().items()}}, tmp_path / "dino.pth")
    fresh, _, _ = build(cfg)
    assert "backbone" in init_weights(fresh, tmp_path / "dino.pth")
    assert torch.equal(fresh.backbone.blocks[0].attn.qkv.weight,
                       source.backbone.blocks[0].attn.qkv.weight)

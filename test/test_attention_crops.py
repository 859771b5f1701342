"""pretrain.attention_crops: local crops centred where the teacher's [CLS] attention is."""

from __future__ import annotations

import numpy as np
import torch

from vit_perception.config import load_config
from vit_perception.dino.attention_crops import AttentionPriors, centred_box
from vit_perception.dino.multicrop import MultiCrop
from vit_perception.models.builder import build_backbone
from vit_perception.training.pretrain_options import pretrain_options


def test_centred_box_centres_on_the_map_and_stays_inside_the_frame():
    prior = np.zeros((5, 6), np.float32)
    prior[2, 3] = 1.0  # cell x 48-64, y 32-48 at 16 pixels a cell
    rng = np.random.default_rng(0)
    for _ in range(200):
        x, y, w, h = centred_box(prior, 16.0, 96, 72, 20, 14, rng)
        assert (w, h) == (20, 14)
        assert 48 - 1 <= x + w / 2 <= 64 + 1 and 32 - 1 <= y + h / 2 <= 48 + 1
    corner = np.zeros((5, 6), np.float32)
    corner[4, 5] = 1.0  # bottom-right cell, partly past a 90 x 70 frame: box shifted inside
    for _ in range(50):
        x, y, w, h = centred_box(corner, 16.0, 90, 70, 30, 30, rng)
        assert 0 <= x and x + w <= 90 and 0 <= y and y + h <= 70


def test_guided_local_crops_show_the_attended_object():
    cfg = load_config("vit_tiny_detr")
    opts = pretrain_options({"pretrain": {
        "local_crops": 6, "local_scale": [0.02, 0.03], "attention_crops": 1.0,
        "augment": {"color_jitter": 0.0, "grayscale": 0.0, "blur_local": 0.0,
                    "blur_global": [0.0, 0.0], "solarize_global": [0.0, 0.0]}}})
    mc = MultiCrop(opts, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[100:120, 200:220] = 255  # the object: 0.5% of the frame
    prior = np.zeros((15, 20), np.float32)
    prior[6:8, 12:14] = 1.0  # the teacher attends to it (16-pixel cells)
    guided = [v for s in range(20) for v in mc(frame, s, (prior, 16.0))[2:]]
    plain = [v for s in range(20) for v in mc(frame, s)[2:]]
    assert all(v.max() > 0.5 for v in guided)  # every guided view shows (part of) the object
    assert sum(float(v.max() > 0.5) for v in plain) < 0.25 * len(plain)
    # off by default: the same seed gives the same views with or without a map
    off = MultiCrop(pretrain_options({}), cfg["input"]["mean"], cfg["input"]["std"])
    for a, b in zip(off(frame, 3), off(frame, 3, (prior, 16.0)), strict=True):
        torch.testing.assert_close(a, b)


def test_priors_refresh_from_the_backbone_and_round_trip():
    cfg = load_config("vit_tiny_detr", {"input": {"width": 64, "height": 64}})
    torch.manual_seed(0)
    net = build_backbone(cfg["model"]["backbone"], (64, 64), False).train()
    rng = np.random.default_rng(1)
    frames = [(rng.random((64, 80, 3)) * 255).astype(np.uint8) for _ in range(3)]
    frames.append((rng.random((48, 64, 3)) * 255).astype(np.uint8))  # another size
    priors = AttentionPriors(scale=0.5, power=2.0, batch_size=2)
    assert priors[0] is None
    priors.refresh(net, frames, cfg["input"]["mean"], cfg["input"]["std"],
                   torch.device("cpu"), epoch=3)
    assert net.training  # the caller's mode is kept
    m, cell = priors[0]
    assert m.shape == (2, 3) and abs(m.sum() - 1) < 1e-5  # 32x40 pixels: 2x3 16-pixel cells
    assert cell == 32.0  # one cell of the half-size pass is 32 frame pixels
    with torch.no_grad():
        small = torch.from_numpy(np.asarray(
            __import__("cv2").resize(frames[0], (40, 32), interpolation=3))).permute(2, 0, 1)
        x = (small[None].float() / 255 - torch.tensor(cfg["input"]["mean"]).view(1, 3, 1, 1)) \
            / torch.tensor(cfg["input"]["std"]).view(1, 3, 1, 1)
        att = net.eval()(x)["attention"].mean(1)[0] ** 2
    np.testing.assert_allclose(m, (att / att.sum()).numpy(), rtol=1e-4, atol=1e-6)
    assert priors[3][0].shape == (2, 2)
    again = AttentionPriors()
    again.load_state_dict(priors.state_dict())
    assert again.epoch == 3
    np.testing.assert_array_equal(again[1][0], priors[1][0])

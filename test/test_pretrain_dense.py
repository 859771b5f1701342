"""pretrain's cross-view dense loss (``pretrain.dense_weight``, dino/dense.py): the views keep
where they came from; patches are matched across views by their place in the frame; the loss
is the formula; a few steps lower it; off, nothing changes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vit_perception.config import load_config
from vit_perception.dino.dense import DenseLoss, frame_to_view, matched_grid, view_to_frame
from vit_perception.dino.multicrop import MultiCrop, collate_views
from vit_perception.dino.network import Teacher, build_network
from vit_perception.dino.objective import Objective
from vit_perception.models.builder import build_backbone
from vit_perception.training.pretrain_options import pretrain_options

SMALL = {"global_size": 64, "local_size": 32, "local_crops": 1, "out_dim": 64,
         "hidden_dim": 64, "bottleneck_dim": 32, "ibot_out_dim": 64, "seed": 5, "lr": 1e-3}
NO_AUG = {"hflip": 0.5, "color_jitter": 0.0, "grayscale": 0.0, "blur_global": [0.0, 0.0],
          "blur_local": 0.0, "solarize_global": [0.0, 0.0]}


def test_views_keep_their_crop_and_flip_in_the_frame():
    opts = pretrain_options({"pretrain": {**SMALL, "dense_weight": 1.0, "augment": NO_AUG}})
    mc = MultiCrop(opts, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    rng = np.random.default_rng(0)
    frame = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    flips = set()
    for seed in range(6):
        views = mc(frame, seed)
        assert len(views) == 2 + 1 + 1 and views[-1].shape == (2, 5)
        for view, (x, y, w, h, flip) in zip(views[:2], views[-1].tolist()):
            crop = frame[int(y):int(y + h), int(x):int(x + w)]
            want = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA
                              if w > 64 and h > 64 else cv2.INTER_LINEAR) / 255.0
            if flip:
                want = want[:, ::-1]
            flips.add(flip)
            np.testing.assert_allclose(view.permute(1, 2, 0).numpy(), want, atol=1e-6)
    assert flips == {0.0, 1.0}
    plain = MultiCrop(pretrain_options({"pretrain": {**SMALL, "augment": NO_AUG}}),
                      (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(frame, 0)
    assert len(plain) == 3 and all(torch.equal(a, b) for a, b in zip(plain, mc(frame, 0)))


def test_patch_centres_are_matched_by_their_place_in_the_frame():
    size, grid = (64, 64), (4, 4)
    a = torch.tensor([[0.0, 0.0, 64.0, 64.0, 0.0]])
    b = torch.tensor([[32.0, 0.0, 64.0, 64.0, 0.0]])  # half a view to the right
    coords, inside = matched_grid(a, b, grid, size)
    cols = inside.view(4, 4)
    assert cols[:, 2:].all() and not cols[:, :2].any()
    # A's columns 2 and 3 are B's columns 0 and 1: their centres, -0.75 and -0.25
    torch.testing.assert_close(coords.view(4, 4, 2)[0, 2:, 0], torch.tensor([-0.75, -0.25]))
    torch.testing.assert_close(coords.view(4, 4, 2)[:, 0, 1],
                               torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    flipped = b.clone()
    flipped[0, 4] = 1.0  # B mirrored: A's column 2 lies in B's last column
    coords, _ = matched_grid(a, flipped, grid, size)
    torch.testing.assert_close(coords.view(4, 4, 2)[0, 2:, 0], torch.tensor([0.75, 0.25]))
    # a view at twice the scale: frame and view pixels round-trip, flips included
    g = torch.tensor([[10.0, 20.0, 128.0, 96.0, 1.0]])
    pts = torch.tensor([[0.0, 0.0], [63.0, 10.0], [32.0, 32.0]])
    frame_pts = view_to_frame(pts, g, size)
    torch.testing.assert_close(frame_pts[0, 0], torch.tensor([138.0, 20.0]))
    torch.testing.assert_close(frame_to_view(frame_pts, g, size)[0], pts)


def test_dense_loss_follows_the_formula_and_counts_only_the_overlap():
    torch.manual_seed(0)
    n, k = 16, 8
    student, teacher = torch.randn(2 * 2, n, k), torch.randn(2 * 2, n, k)
    same = torch.tensor([[4.0, 2.0, 64.0, 64.0, 0.0]] * 2).repeat(2, 1, 1)  # [B, 2, 5]
    loss_fn = DenseLoss(k, student_temp=0.2, center_momentum=0.8)
    loss_fn.center.fill_(0.3)
    loss, overlap = loss_fn(student, teacher, same, (4, 4), (64, 64), teacher_temp=0.05)
    s, t = student.chunk(2), teacher.chunk(2)
    want = sum(
        (-(F.softmax((t[b] - 0.3) / 0.05, -1) * F.log_softmax(s[a] / 0.2, -1)).sum(-1)).mean()
        for a, b in ((0, 1), (1, 0))) / 2
    assert overlap == 1.0 and float(loss) == pytest.approx(float(want), rel=1e-5)
    torch.testing.assert_close(loss_fn.center,
                               0.8 * 0.3 + 0.2 * teacher.mean(dim=(0, 1), keepdim=True))
    # view 1 half a view to the right: only the patches both views hold count, and a student
    # changed where the views do not overlap does not change the loss
    shifted = same.clone()
    shifted[:, 1, 0] += 32
    loss_fn.center.fill_(0.3)
    loss_a, overlap = loss_fn(student, teacher, shifted, (4, 4), (64, 64), 0.05)
    changed = student.clone().view(4, 4, 4, k)
    changed[:2, :, :2] += 5.0  # view 0's left half: outside view 1
    changed[2:, :, 2:] += 5.0  # view 1's right half: outside view 0
    loss_fn.center.fill_(0.3)
    loss_b, _ = loss_fn(changed.view(4, n, k), teacher, shifted, (4, 4), (64, 64), 0.05)
    assert overlap == 0.5 and float(loss_a) == pytest.approx(float(loss_b), rel=1e-6)


def _setup(**extra):
    opts = pretrain_options({"pretrain": {**SMALL, **extra}})
    cfg = load_config("vit_tiny_detr", {"input": {"width": 64, "height": 64}})
    torch.manual_seed(0)
    student = build_network(build_backbone(cfg["model"]["backbone"], (64, 64), False), opts)
    rng = np.random.default_rng(0)
    mc = MultiCrop(opts, cfg["input"]["mean"], cfg["input"]["std"])
    frames = [(rng.random((96, 128, 3)) * 255).astype(np.uint8) for _ in range(4)]
    return opts, student, collate_views([mc(f, i) for i, f in enumerate(frames)])


def train_steps(objective, student, teacher, views, geometry, steps: int = 12) -> list[dict]:
    """``steps`` AdamW steps (lr 1e-3, teacher momentum 0.9) on one batch: each step's stats."""
    optim = torch.optim.AdamW(student.parameters(), lr=1e-3)
    out = []
    for step in range(steps):
        loss, stats = objective(student, teacher, views, 0.04,
                                torch.Generator().manual_seed(step), geometry)
        optim.zero_grad()
        loss.backward()
        optim.step()
        teacher.update(student, 0.9)
        out.append(stats)
    return out


def test_few_steps_lower_the_dense_loss_without_ibot():
    torch.set_num_threads(1)
    opts, student, views = _setup(dense_weight=1.0, ibot_weight=0.0)
    geometry = views.pop()
    assert student.patch_head is not None  # built for the dense loss alone
    teacher, objective = Teacher(student), Objective(opts, True)
    stats = train_steps(objective, student, teacher, views, geometry)
    dense = [s["dense_loss"] for s in stats]
    assert all("ibot_loss" not in s and 0 < s["dense_overlap"] <= 1 for s in stats)
    assert sum(dense[-2:]) / 2 < 0.85 * dense[0], dense
    with pytest.raises(AssertionError, match="geometry"):
        objective(student, teacher, views, 0.04, torch.Generator().manual_seed(0))

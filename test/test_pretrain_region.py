"""pretrain's region loss (``pretrain.region_weight``, dino/region.py): a local crop is found
in each global view by its place in the frame; the tokens there are pooled as the probe pools a
box; the loss is DINO's cross-entropy to the teacher's [CLS] of the crop; a few steps lower it;
off, the views are those of before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_pretrain_dense import NO_AUG, SMALL, _setup, train_steps

from vit_perception.dino.multicrop import MultiCrop
from vit_perception.dino.network import Teacher
from vit_perception.dino.objective import Objective
from vit_perception.dino.region import pooled_regions, region_loss, region_weights
from vit_perception.training.pretrain_options import pretrain_options


def test_a_local_crop_is_pooled_over_the_cells_it_covers_in_a_global_view():
    view = torch.tensor([[0.0, 0.0, 64.0, 64.0, 0.0]])  # the frame's top-left 64 px, unscaled
    one_cell = torch.tensor([[16.0, 16.0, 16.0, 16.0, 0.0]])
    w, ok = region_weights(one_cell, view, (4, 4), (64, 64))
    assert ok.all() and w.view(4, 4)[1, 1] == 1 and w.sum() == 1
    mirrored = view.clone()
    mirrored[0, 4] = 1.0  # the global view flipped: the crop lies in the mirrored column
    w, _ = region_weights(one_cell, mirrored, (4, 4), (64, 64))
    assert w.view(4, 4)[1, 2] == 1
    # a global view of twice that frame area: a 32-px crop at x 8..40 lies at view pixels
    # 4..20 (and 0..16 down): 3/4 of cell (0, 0) and 1/4 of cell (0, 1), weighted so
    wide = torch.tensor([[0.0, 0.0, 128.0, 128.0, 0.0]])
    w, _ = region_weights(torch.tensor([[8.0, 0.0, 32.0, 32.0, 0.0]]), wide, (4, 4), (64, 64))
    torch.testing.assert_close(w.view(4, 4)[0, :2], torch.tensor([0.75, 0.25]))
    assert float(w.view(4, 4)[1:].sum()) == 0 and float(w.view(4, 4)[0, 2:].sum()) == 0
    # half the crop outside the view is the limit; more than half outside is left out
    half = torch.tensor([[56.0, 0.0, 16.0, 16.0, 0.0]])
    assert region_weights(half, view, (4, 4), (64, 64))[1].item()
    assert not region_weights(half + torch.tensor([[1.0, 0, 0, 0, 0]]), view, (4, 4),
                              (64, 64))[1].item()


def test_pooled_regions_pair_every_global_view_with_every_local_crop():
    torch.manual_seed(0)
    b, n_local, d = 3, 2, 5
    tokens = torch.randn(2 * b, 16, d)
    geometry = torch.tensor([[0.0, 0.0, 64.0, 64.0, 0.0]] * 2
                            + [[16.0, 16.0, 16.0, 16.0, 0.0], [48.0, 0.0, 16.0, 16.0, 0.0]])
    pooled, index, valid = pooled_regions(tokens, geometry.repeat(b, 1, 1), (4, 4), (64, 64))
    assert pooled.shape == (2 * n_local * b, d) and valid.all()
    assert index.tolist() == [0, 1, 2, 3, 4, 5] * 2  # local view-major rows: l * B + b
    torch.testing.assert_close(pooled[0], tokens[0, 5])  # view 0, crop 0, frame 0: cell (1, 1)
    torch.testing.assert_close(pooled[3 + 1], tokens[1, 3])  # view 0, crop 1, frame 1: (0, 3)
    torch.testing.assert_close(pooled[6 + 2], tokens[b + 2, 5])  # view 1, crop 0, frame 2


def test_region_loss_is_dino_cross_entropy_over_the_valid_pairs():
    torch.manual_seed(0)
    student, logits = torch.randn(4, 8), torch.randn(4, 8)
    targets = F.softmax(logits / 0.05, -1)
    valid = torch.tensor([True, False, True, True])
    want = (-(targets * F.log_softmax(student / 0.2, -1)).sum(-1))[valid].mean()
    assert float(region_loss(student, targets, valid, 0.2)) == pytest.approx(float(want))
    changed = student.clone()
    changed[1] += 7.0  # a left-out pair does not count
    assert float(region_loss(changed, targets, valid, 0.2)) == pytest.approx(float(want))
    assert float(region_loss(student, targets, torch.zeros(4, dtype=torch.bool), 0.2)) == 0


def test_views_are_unchanged_and_every_crop_keeps_its_place():
    opts = pretrain_options({"pretrain": {**SMALL, "region_weight": 1.0, "augment": NO_AUG}})
    frame = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
    views = MultiCrop(opts, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(frame, 3)
    plain = MultiCrop(pretrain_options({"pretrain": {**SMALL, "augment": NO_AUG}}),
                      (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(frame, 3)
    assert views[-1].shape == (2 + SMALL["local_crops"], 5)
    assert all(torch.equal(a, b) for a, b in zip(plain, views[:-1]))
    x, y, w, h, _ = views[-1][2].tolist()  # the local crop's rectangle lies in the frame
    assert 0 <= x and x + w <= 160 and 0 <= y and y + h <= 120 and w * h > 0


def test_few_steps_lower_the_region_loss():
    torch.set_num_threads(1)
    opts, student, views = _setup(region_weight=1.0, local_crops=4,
                                  local_scale=[0.05, 0.15], global_scale=[0.5, 0.9])
    geometry = views.pop()
    assert geometry.shape[1] == len(views) == 6
    teacher, objective = Teacher(student), Objective(opts, True)
    stats = train_steps(objective, student, teacher, views, geometry)
    region = [s["region_loss"] for s in stats]
    assert all(0 < s["region_valid"] <= 1 for s in stats)
    assert sum(region[-2:]) / 2 < 0.85 * region[0], region
    with pytest.raises(AssertionError, match="geometry"):
        objective(student, teacher, views, 0.04, torch.Generator().manual_seed(0),
                  geometry[:, :2])
    off = Objective(pretrain_options({"pretrain": SMALL}), True)
    assert "region_loss" not in off(student, teacher, views, 0.04,
                                    torch.Generator().manual_seed(0))[1]

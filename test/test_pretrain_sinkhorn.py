"""DINOv2's Sinkhorn-Knopp centring and KoLeo regulariser (``dino/sinkhorn.py``)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_pretrain import SMALL, _network, _optimise, _views

from vit_perception.cli import main
from vit_perception.data.synth import write_synthetic_bag
from vit_perception.dino.loss import DINOLoss, PatchLoss
from vit_perception.dino.network import Teacher
from vit_perception.dino.objective import Objective
from vit_perception.dino.sinkhorn import koleo_loss, sinkhorn_knopp
from vit_perception.training.pretrain_options import pretrain_options


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return str(write_synthetic_bag(root / "photo", frames=8, seed=1, size=(96, 72),
                                   style="photo", num_classes=2))


def test_sinkhorn_rows_are_distributions_and_prototypes_balanced():
    torch.manual_seed(0)
    logits = torch.randn(12, 8)
    logits[:, 0] += 5.0  # one prototype dominates every row under a plain softmax
    plain = torch.softmax(logits / 0.1, dim=-1)
    assert float(plain[:, 0].sum()) > 0.9 * 12
    q = sinkhorn_knopp(logits, 0.1, iterations=200)
    torch.testing.assert_close(q.sum(1), torch.ones(12), rtol=0, atol=1e-5)
    torch.testing.assert_close(q.sum(0), torch.full((8,), 12 / 8), rtol=0, atol=1e-3)
    # three iterations (the default) already move most of the dominant prototype's share away
    q3 = sinkhorn_knopp(logits, 0.1)
    torch.testing.assert_close(q3.sum(1), torch.ones(12), rtol=0, atol=1e-5)
    assert float(q3[:, 0].sum()) < 0.5 * float(plain[:, 0].sum())
    # rows permute with the batch; a constant added to every logit changes nothing (the shift
    # that keeps exp from overflowing)
    perm = torch.randperm(12)
    torch.testing.assert_close(sinkhorn_knopp(logits[perm], 0.1), q3[perm])
    torch.testing.assert_close(sinkhorn_knopp(logits + 40.0, 0.1), q3, rtol=1e-4, atol=1e-6)


def test_sinkhorn_of_no_rows_is_empty():
    assert sinkhorn_knopp(torch.zeros(0, 5), 0.1).shape == (0, 5)


def test_dino_loss_with_sinkhorn_targets():
    torch.manual_seed(1)
    loss_fn = DINOLoss(6, student_temp=0.2, center_momentum=0.8, centering="sinkhorn")
    student, teacher = torch.randn(3 * 2, 6), torch.randn(2 * 2, 6)
    loss, stats = loss_fn(student, teacher, teacher_temp=0.05)
    q = sinkhorn_knopp(teacher, 0.05, 3).chunk(2)
    s = torch.log_softmax(student / 0.2, dim=-1).chunk(3)
    pairs = [(i, v) for i in range(2) for v in range(3) if v != i]
    expected = sum(-(q[i] * s[v]).sum(-1).mean() for i, v in pairs) / len(pairs)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    p = torch.cat(q)
    assert stats["teacher_entropy"] == pytest.approx(
        float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean()), rel=1e-4)
    # the centre is still kept, so a run's saved state does not depend on the choice
    torch.testing.assert_close(loss_fn.center, 0.2 * teacher.mean(0, keepdim=True))
    with pytest.raises(ValueError, match="pretrain.centering"):
        DINOLoss(6, centering="mean")


def test_patch_loss_balances_only_the_masked_patches():
    torch.manual_seed(2)
    student, teacher = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    masks = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    loss = PatchLoss(4, student_temp=0.1, centering="sinkhorn")(student, teacher, masks, 0.05)
    q = sinkhorn_knopp(teacher[masks], 0.05, 3)
    ce = -(q * torch.log_softmax(student[masks] / 0.1, dim=-1)).sum(-1)
    expected = (ce[:2].mean() + ce[2:].mean()) / 2  # per image, then over images
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_koleo_is_the_log_nearest_neighbour_distance_and_spreads_points():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised: orthogonal, distance sqrt(2)
    assert float(koleo_loss(x)) == pytest.approx(-math.log(math.sqrt(2)), rel=1e-6)
    assert float(koleo_loss(x[:1])) == 0.0
    torch.manual_seed(3)
    x = (torch.randn(16, 8) * 0.05 + torch.ones(8)).requires_grad_(True)  # a tight cluster
    optim = torch.optim.SGD([x], lr=0.05)

    def nearest() -> float:
        z = torch.nn.functional.normalize(x.detach(), dim=-1)
        d = torch.cdist(z, z) + torch.eye(16) * 9
        return float(d.min(1).values.mean())

    before = nearest()
    for _ in range(30):
        optim.zero_grad()
        koleo_loss(x).backward()
        optim.step()
    assert nearest() > 2 * before


def test_sinkhorn_and_koleo_lower_the_loss_and_are_logged():
    torch.set_num_threads(1)
    opts = pretrain_options({"pretrain": {**SMALL, "ibot_weight": 1.0, "centering": "sinkhorn",
                                          "koleo_weight": 0.1}})
    student, cfg = _network(opts)
    teacher, objective = Teacher(student), Objective(opts, True)
    steps = _optimise(objective, student, teacher, _views(opts, cfg), 12)
    losses, stats = [loss for loss, _ in steps], steps[-1][1]
    assert {"koleo_loss", "ibot_loss", "dino_loss"} <= set(stats)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-2:]) / 2 < 0.85 * losses[0], losses


def test_pretrain_command_takes_the_options_and_refuses_a_bad_centering(bag, tmp_path,
                                                                        capsys):
    small = [f"--set=pretrain.{k}={v}" for k, v in SMALL.items() if k != "batch_size"]
    common = ["pretrain", "--config", "vit_tiny_detr", "--bags", bag, "--no-progress",
              "--set", "input.width=64", "--set", "input.height=64", "--batch-size", "4",
              "--set", "pretrain.samples_per_epoch=4", "--epochs", "2", *small]
    run = tmp_path / "run"
    assert main([*common, "--out", str(run), "--set", "pretrain.centering=sinkhorn",
                 "--set", "pretrain.koleo_weight=0.1"]) == 0
    rows = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["koleo_loss"]) for r in rows)
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "bad"),
                 "--set", "pretrain.centering=mean"]) == 2
    err = capsys.readouterr().err
    assert "pretrain.centering" in err and "ema or sinkhorn" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()  # refused before any run folder is made

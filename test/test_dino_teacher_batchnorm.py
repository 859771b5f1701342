"""The DINO teacher of a backbone with BatchNorm (the conv and cnn stems) normalises with its own
batch statistics, as DINO's teacher does: the EMA moves its parameters, not its running
statistics. In eval mode with the initial statistics its tokens are the same for every frame
and its centred targets are uniform (docs/RESULTS.md, issue 12, eighteenth look)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from vit_perception.config import load_config
from vit_perception.dino.network import Teacher, build_network, vit_tokens
from vit_perception.models.builder import build_backbone
from vit_perception.training.pretrain_options import pretrain_options

SMALL = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "ibot_weight": 0.0}


def _student(stem: str):
    cfg = load_config("vit_tiny_detr", {"input": {"width": 64, "height": 64},
                                        "model": {"backbone": {"stem": stem}}})
    torch.manual_seed(0)
    backbone = build_backbone(cfg["model"]["backbone"], (64, 64), False)
    return build_network(backbone, pretrain_options({"pretrain": SMALL})).train()


def _frames(n: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)  # frames that differ in brightness and content
    return torch.randn(n, 3, 64, 64, generator=g) * 0.5 + torch.randn(n, 3, 1, 1, generator=g)


def _mean_cosine_between_frames(net, x: torch.Tensor) -> float:
    with torch.no_grad():
        cls, _ = vit_tokens(net.backbone, x)
    c = torch.nn.functional.normalize(cls, dim=1)
    sim = c @ c.T
    return float(sim[~torch.eye(len(x), dtype=torch.bool)].mean())


def test_cnn_stem_teacher_tells_frames_apart_at_init():
    student = _student("cnn")
    teacher = Teacher(student)
    x = _frames()
    frozen = Teacher(student).module.eval()  # the old teacher: every layer in eval mode
    assert _mean_cosine_between_frames(frozen, x) > 0.999  # the constant the student copied
    assert _mean_cosine_between_frames(teacher.module, x) < 0.98
    norms = [m for m in teacher.module.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(m.training for m in norms)
    assert not any(m.training for m in teacher.module.modules()
                   if not isinstance(m, _BatchNorm) and not list(m.children()))


@pytest.mark.parametrize("stem", ["conv", "cnn"])
def test_ema_moves_parameters_and_leaves_the_teachers_own_statistics(stem):
    student = _student(stem)
    teacher = Teacher(student)
    teacher([_frames(), _frames()])  # the teacher's own batches move its running statistics
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student([_frames()])  # and the student's its own
    teacher.update(student, 0.75)
    after, new = teacher.module.state_dict(), student.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats
    for name, value in before.items():
        if name in stats or name.endswith("num_batches_tracked"):
            torch.testing.assert_close(after[name], value, rtol=0, atol=0)
            assert not torch.equal(after[name], new[name]) or name.endswith("tracked")
        else:
            torch.testing.assert_close(after[name], 0.75 * value + 0.25 * new[name],
                                       rtol=0, atol=1e-6)


def test_batch_statistics_survive_an_eval_mode_pass():
    teacher = Teacher(_student("cnn"))
    teacher.module.backbone.eval()  # as the attention-map pass leaves it
    x = _frames()
    teacher([x, x])
    norms = [m for m in teacher.module.modules() if isinstance(m, _BatchNorm)]
    assert all(m.training for m in norms)
    assert _mean_cosine_between_frames(teacher.module, x) < 0.98

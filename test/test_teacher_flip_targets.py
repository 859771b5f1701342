"""scripts/teacher_flip_targets.py's fusion of a plain and a mirrored teacher pass (the figures of
issue 13's eleventh measurement): a detection the mirror confirms keeps its score and gets the
two boxes' score-weighted mean; one it does not confirm keeps its box and half its score."""

from __future__ import annotations

import torch
from script_loader import load_script


def _script():
    return load_script("teacher_flip_targets")


def _logits(p_class0: float) -> torch.Tensor:
    """One query: class 0 with probability ``p_class0``, the rest "no object" (K = 2)."""
    return torch.tensor([p_class0, 1e-6, 1.0 - p_class0]).log()


def test_confirmed_detection_is_averaged_and_unconfirmed_one_halved():
    fuse = _script().fuse_flipped
    boxes = torch.tensor([[[0.30, 0.5, 0.2, 0.2], [0.80, 0.2, 0.1, 0.1]]])
    logits = torch.stack([_logits(0.9), _logits(0.8)])[None]
    # the mirrored pass, as it came: the first object at 1 - 0.32 (slightly shifted once mirrored
    # back), nothing where the second one is (its second query is far away, another class)
    boxes_m = torch.tensor([[[0.68, 0.5, 0.2, 0.2], [0.10, 0.9, 0.1, 0.1]]])
    logits_m = torch.stack([_logits(0.7), torch.tensor([1e-6, 0.9, 0.1]).log()])[None]
    fused_logits, fused_boxes = fuse(logits, boxes, logits_m, boxes_m)
    prob = fused_logits.softmax(-1)[0]
    assert torch.allclose(prob.sum(-1), torch.ones(2))
    assert abs(prob[0, 0].item() - 0.8) < 1e-4  # (0.9 + 0.7) / 2
    assert abs(prob[1, 0].item() - 0.4) < 1e-4  # 0.8 / 2: the mirror saw no object there
    assert abs(fused_boxes[0, 0, 0].item() - (0.9 * 0.30 + 0.7 * 0.32) / 1.6) < 1e-5
    assert torch.allclose(fused_boxes[0, 1], boxes[0, 1], atol=1e-6)


def test_a_mirror_symmetric_teacher_changes_nothing():
    fuse = _script().fuse_flipped
    torch.manual_seed(0)
    boxes = torch.rand(2, 5, 4) * 0.3 + torch.tensor([0.35, 0.35, 0.1, 0.1])
    logits = torch.randn(2, 5, 4)
    mirrored = torch.cat([1.0 - boxes[..., :1], boxes[..., 1:]], -1)
    fused_logits, fused_boxes = fuse(logits, boxes, logits, mirrored)
    assert torch.allclose(fused_logits.softmax(-1), logits.softmax(-1), atol=1e-5)
    assert torch.allclose(fused_boxes, boxes, atol=1e-5)

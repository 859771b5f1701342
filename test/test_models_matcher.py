"""Hungarian matcher and set criterion: optimality, batching, empty targets, perfect predictions."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision

from vit_perception.models.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from vit_perception.models.criterion import SetCriterion
from vit_perception.models.matcher import HungarianMatcher


def _random_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, 4]`` valid normalised cxcywh boxes."""
    c = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
    return torch.cat((c, wh), dim=1)


def _random_case(bs: int, queries: int, classes: int, sizes: list[int], seed: int):
    gen = torch.Generator().manual_seed(seed)
    outputs = {"pred_logits": torch.randn(bs, queries, classes + 1, generator=gen),
               "pred_boxes": _random_boxes(bs * queries, gen).view(bs, queries, 4)}
    targets = [{"labels": torch.randint(0, classes, (n,), generator=gen),
                "boxes": _random_boxes(n, gen)} for n in sizes]
    return outputs, targets


def _cost(matcher, outputs, target, i):
    prob = outputs["pred_logits"][i].softmax(-1)
    boxes = outputs["pred_boxes"][i]
    return (matcher.cost_class * -prob[:, target["labels"]]
            + matcher.cost_bbox * torch.cdist(boxes, target["boxes"], p=1)
            - matcher.cost_giou * generalized_box_iou(box_cxcywh_to_xyxy(boxes),
                                                      box_cxcywh_to_xyxy(target["boxes"])))


@pytest.mark.parametrize("seed", range(6))
def test_matcher_is_optimal_against_brute_force(seed):
    matcher = HungarianMatcher()
    n_targets = seed % 3 + 1
    outputs, targets = _random_case(1, 5, 3, [n_targets], seed)
    (rows, cols), = matcher(outputs, targets)
    cost = _cost(matcher, outputs, targets[0], 0)
    found = cost[rows, cols].sum().item()
    best = min(sum(cost[perm[j], j].item() for j in range(n_targets))
               for perm in itertools.permutations(range(5), n_targets))
    assert len(rows) == n_targets and sorted(cols.tolist()) == list(range(n_targets))
    assert found == pytest.approx(best, abs=1e-5)


def test_batched_matching_equals_per_image():
    matcher = HungarianMatcher()
    outputs, targets = _random_case(3, 7, 4, [2, 0, 5], seed=11)
    batched = matcher(outputs, targets)
    for i, target in enumerate(targets):
        single = matcher({k: v[i:i + 1] for k, v in outputs.items()}, [target])[0]
        assert torch.equal(batched[i][0], single[0]) and torch.equal(batched[i][1], single[1])


def test_empty_targets_give_no_match_and_finite_losses():
    matcher = HungarianMatcher()
    outputs, targets = _random_case(2, 6, 3, [0, 0], seed=3)
    assert all(len(r) == 0 and len(c) == 0 for r, c in matcher(outputs, targets))
    losses = SetCriterion(3, matcher)(outputs, targets)
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
    assert torch.isfinite(losses["loss"]) and losses["loss_ce"].item() > 0


def test_perfect_prediction_gives_zero_box_loss_and_right_permutation():
    gen = torch.Generator().manual_seed(5)
    boxes, labels = _random_boxes(3, gen), torch.tensor([2, 0, 1])
    perm = torch.tensor([4, 0, 2])  # query q = perm[j] predicts target j exactly
    pred_boxes = _random_boxes(6, gen)
    pred_boxes[perm] = boxes
    logits = torch.full((6, 4), -10.0)
    logits[:, 3] = 10.0  # no-object everywhere ...
    logits[perm] = -10.0
    logits[perm, labels] = 10.0  # ... except the matched queries
    outputs = {"pred_logits": logits[None], "pred_boxes": pred_boxes[None]}
    targets = [{"labels": labels, "boxes": boxes}]
    (rows, cols), = HungarianMatcher()(outputs, targets)
    assert dict(zip(cols.tolist(), rows.tolist())) == dict(enumerate(perm.tolist()))
    losses = SetCriterion(3, HungarianMatcher())(outputs, targets)
    assert losses["loss_bbox"].item() < 1e-6 and losses["loss_giou"].item() < 1e-6
    assert losses["loss_ce"].item() < 1e-6


def test_wrong_prediction_is_not_near_zero():
    """The criterion can fail: shifted boxes give clearly positive box losses."""
    gen = torch.Generator().manual_seed(6)
    boxes = _random_boxes(2, gen)
    outputs = {"pred_logits": torch.zeros(1, 4, 3),
               "pred_boxes": (boxes + torch.tensor([0.1, 0.1, 0.0, 0.0])).repeat(2, 1)[None]}
    losses = SetCriterion(2, HungarianMatcher())(outputs, [{"labels": torch.tensor([0, 1]),
                                                            "boxes": boxes}])
    assert losses["loss_bbox"].item() > 0.1 and losses["loss_giou"].item() > 0.1


def test_unmatched_queries_on_ignore_boxes_leave_the_class_loss():
    """A target's ``ignore_boxes``: an unmatched query overlapping one (IoU >= 0.5) is not taught
    "no object" (its weight in the weighted-mean cross-entropy is 0); a matched query on one
    still learns its class, queries elsewhere still learn "no object", and without ignore boxes
    the loss is the plain one."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(9)
    boxes = _random_boxes(4, gen)
    boxes[2] = torch.tensor([0.3, 0.3, 0.2, 0.2])
    logits = torch.randn(1, 4, 3, generator=gen)
    outputs = {"pred_logits": logits, "pred_boxes": boxes[None]}
    target = {"labels": torch.tensor([1]), "boxes": boxes[0:1].clone()}  # query 0 matches
    unsure = torch.stack([boxes[2] + torch.tensor([0.01, 0.0, 0.0, 0.0]), boxes[0]])
    criterion = SetCriterion(2, HungarianMatcher())
    plain = criterion(outputs, [target])["loss_ce"]
    assert criterion(outputs, [{**target, "ignore_boxes": unsure[:0]}])["loss_ce"] == plain
    got = criterion(outputs, [{**target, "ignore_boxes": unsure}])["loss_ce"]
    ce = F.cross_entropy(logits[0], torch.tensor([1, 2, 2, 2]), reduction="none")
    weight = torch.tensor([1.0, 0.1, 0.0, 0.1])  # query 2 sits on the unsure box
    assert got.item() == pytest.approx(((weight * ce).sum() / weight.sum()).item(), rel=1e-5)
    assert plain.item() == pytest.approx(
        ((torch.tensor([1.0, 0.1, 0.1, 0.1]) * ce).sum() / 1.3).item(), rel=1e-5)


def test_aux_losses_and_weighted_total():
    outputs, targets = _random_case(2, 5, 3, [2, 1], seed=8)
    outputs["aux_outputs"] = [dict(outputs), dict(outputs)]
    criterion = SetCriterion(3, HungarianMatcher(), loss_ce=1.0, loss_bbox=5.0, loss_giou=2.0)
    losses = criterion(outputs, targets)
    assert {"loss_ce_0", "loss_bbox_1", "loss_giou_1"} <= set(losses)
    expected = sum(w * losses[k + s] for k, w in criterion.weights.items()
                   for s in ("", "_0", "_1"))
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_giou_matches_torchvision():
    gen = torch.Generator().manual_seed(2)
    a = box_cxcywh_to_xyxy(_random_boxes(7, gen))
    b = box_cxcywh_to_xyxy(_random_boxes(5, gen))
    b[0] = a[0]  # identical pair
    b[1] = torch.tensor([0.9, 0.9, 0.95, 0.95])  # far away: negative GIoU
    ours = generalized_box_iou(a, b)
    assert torch.allclose(ours, torchvision.ops.generalized_box_iou(a, b), atol=1e-6)
    assert ours[0, 0].item() == pytest.approx(1.0) and ours[:, 1].min() < 0


def test_matching_all_sets_at_once_equals_one_set_at_a_time():
    """The criterion matches the decoder layers and the (larger) encoder proposal set in one
    call; each result must be what matching that set alone gives."""
    matcher = HungarianMatcher()
    last, targets = _random_case(3, 7, 4, [2, 0, 5], seed=12)
    aux, _ = _random_case(3, 7, 4, [2, 0, 5], seed=13)
    enc, _ = _random_case(3, 11, 4, [2, 0, 5], seed=14)
    together = matcher.match_sets([last, aux, enc], targets)
    for outputs, got in zip((last, aux, enc), together):
        for (r1, c1), (r2, c2) in zip(got, matcher(outputs, targets)):
            assert torch.equal(r1, r2) and torch.equal(c1, c2)
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 3
    assert all(len(r) == 0 for m in matcher.match_sets([last, enc], empty) for r, _ in m)

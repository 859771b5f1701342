"""Distillation losses and geometry: KL zero for a student equal to its teacher, the T^2
temperature scaling, teacher boxes and feature cells mapped between differently letterboxed
inputs, feature losses on the frame's cells only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vit_perception.models.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from vit_perception.models.criterion import SetCriterion
from vit_perception.models.matcher import HungarianMatcher
from vit_perception.models.preprocess import letterbox_params
from vit_perception.training.distill_losses import (
    DetectionDistillLoss,
    feature_losses,
    softened_kl,
    teacher_targets,
)
from vit_perception.training.translator import (
    FeatureTranslator,
    input_map,
    map_boxes,
    teacher_cells,
)


def _outputs(seed: int, b: int = 2, n: int = 6, k: int = 3) -> dict:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, n, k + 1, generator=g) * 3
    centres = torch.rand(b, n, 2, generator=g) * 0.6 + 0.2
    sizes = torch.rand(b, n, 2, generator=g) * 0.2 + 0.1
    return {"pred_logits": logits, "pred_boxes": torch.cat((centres, sizes), -1)}


def test_kl_term_is_zero_when_student_equals_teacher():
    teacher = _outputs(0)
    targets = teacher_targets(teacher["pred_logits"], teacher["pred_boxes"], 0.3)
    assert 0 < sum(len(t["labels"]) for t in targets) < 12  # some, not all, are confident
    loss = DetectionDistillLoss(HungarianMatcher(), temperature=2.0, aux=False)
    same = loss({k: v.clone() for k, v in teacher.items()}, targets)
    assert same["loss_kd_ce"].item() == pytest.approx(0.0, abs=1e-6)
    assert same["loss_kd_bbox"].item() == pytest.approx(0.0, abs=1e-6)
    assert same["loss_kd_giou"].item() == pytest.approx(0.0, abs=1e-6)
    assert same["loss_kd_noobj"].item() > 0  # unconfident teacher queries: learn "no object"
    other = loss(_outputs(1), targets)
    assert other["loss_kd_ce"].item() > 0.05 and other["loss_kd_bbox"].item() > 0.01


def test_object_targets_drop_the_teachers_no_object_mass():
    """``object_only``: the target is the teacher's softened distribution over the classes
    alone; a student that copies it there with no "no object" mass scores zero, the student
    equal to the teacher does not, and the gradient lowers the student's no-object logit."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(5, 4, generator=g) * 2
    for temp in (1.0, 2.0):
        p_cls = F.softmax(t[:, :-1] / temp, -1)
        s = t.clone()
        s[:, -1] = -1e4  # the same class logits, no "no object"
        assert torch.allclose(softened_kl(s, t, temp, object_only=True), torch.zeros(5),
                              atol=1e-5)
        same = t.clone().requires_grad_(True)
        kl = softened_kl(same, t, temp, object_only=True)
        log_s = F.log_softmax(t / temp, -1)[:, :-1]
        torch.testing.assert_close(kl, temp**2 * (p_cls * (p_cls.log() - log_s)).sum(-1))
        assert (kl > 0).all()
        kl.sum().backward()
        assert (same.grad[:, -1] > 0).all()  # descending the loss lowers "no object"


def test_hard_targets_are_the_set_criterion_on_the_teachers_detections():
    """``hard``: the teacher's confident detections become pseudo-labels, and the class terms
    add up to the set criterion's weighted cross-entropy (and the box terms to its box losses)
    against those labels, whatever the temperature."""
    teacher, student = _outputs(0), _outputs(1)
    targets = teacher_targets(teacher["pred_logits"], teacher["pred_boxes"], 0.3)
    criterion = SetCriterion(3, HungarianMatcher(), eos_coef=0.1, aux_loss=False)
    want = criterion(student, [{"labels": t["labels"], "boxes": t["boxes"]} for t in targets])
    for temp in (1.0, 4.0):
        got = DetectionDistillLoss(HungarianMatcher(), temperature=temp, aux=False,
                                   hard=True)(student, targets)
        torch.testing.assert_close(got["loss_kd_ce"] + got["loss_kd_noobj"], want["loss_ce"])
        torch.testing.assert_close(got["loss_kd_bbox"], want["loss_bbox"])
        torch.testing.assert_close(got["loss_kd_giou"], want["loss_giou"])
    soft = DetectionDistillLoss(HungarianMatcher(), temperature=1.0, aux=False)(student, targets)
    assert soft["loss_kd_ce"].item() != pytest.approx(got["loss_kd_ce"].item(), rel=1e-3)


def test_unsure_teacher_boxes_keep_overlapping_queries_out_of_no_object():
    """``ignore_threshold``: the teacher's predictions between it and the threshold become
    ``ignore_boxes``; a student query on one of them is not taught "no object", the others are,
    and without unsure boxes the loss is the plain one."""
    teacher = _outputs(0)
    scores = teacher["pred_logits"].softmax(-1)[..., :-1].max(-1).values
    plain = teacher_targets(teacher["pred_logits"], teacher["pred_boxes"], 0.5)
    unsure = teacher_targets(teacher["pred_logits"], teacher["pred_boxes"], 0.5, 0.2)
    for p, u, s in zip(plain, unsure, scores):
        torch.testing.assert_close(u["boxes"], p["boxes"])
        assert len(p["ignore_boxes"]) == 0
        assert len(u["ignore_boxes"]) == int(((s >= 0.2) & (s < 0.5)).sum()) > 0
    loss = DetectionDistillLoss(HungarianMatcher(), aux=False)
    student = {k: v.clone() for k, v in teacher.items()}  # queries sit on the teacher's boxes
    a, b = loss(student, plain), loss(student, unsure)
    assert a["loss_kd_ce"].item() == pytest.approx(0.0, abs=1e-6)
    # unsure queries leave the no-object term: it is the mean over the other unmatched queries
    n_unsure = sum(len(u["ignore_boxes"]) for u in unsure)
    background = torch.ones(2, 6, dtype=torch.bool)
    for i, s in enumerate(scores):
        background[i] = s < 0.2
    ce = F.cross_entropy(student["pred_logits"][background],
                         torch.full((int(background.sum()),), 3), reduction="sum")
    n_matched = sum(len(p["labels"]) for p in plain)
    want = 0.1 * ce / (n_matched + 0.1 * (12 - n_matched - n_unsure))
    torch.testing.assert_close(b["loss_kd_noobj"], want)
    assert b["loss_kd_noobj"].item() != pytest.approx(a["loss_kd_noobj"].item())


def test_teacher_nms_drops_same_class_duplicates_from_targets_and_unsure_boxes():
    """``nms_iou``: a teacher prediction overlapping a higher-scoring one of the same class by
    more than the IoU is no target and no unsure box; another class on the same spot, a box
    elsewhere and everything at a higher IoU setting stay."""
    a = [0.50, 0.50, 0.20, 0.20]
    near = [0.51, 0.50, 0.20, 0.21]  # IoU 0.86 with a
    shifted = [0.52, 0.50, 0.20, 0.20]  # IoU 0.82 with a, 0.86 with near
    far = [0.15, 0.20, 0.10, 0.10]
    #         class, score, box
    preds = [(0, 0.9, a), (0, 0.7, near), (1, 0.8, near), (0, 0.3, shifted), (0, 0.6, far)]
    probs = torch.full((1, len(preds), 4), 0.0)
    for q, (c, p, _) in enumerate(preds):
        probs[0, q] = (1 - p) / 3
        probs[0, q, c] = p
    logits, boxes = probs.log(), torch.tensor([[b for _, _, b in preds]])
    plain = teacher_targets(logits, boxes, 0.5, 0.2)[0]
    assert plain["labels"].tolist() == [0, 0, 1, 0] and len(plain["ignore_boxes"]) == 1
    got = teacher_targets(logits, boxes, 0.5, 0.2, nms_iou=0.5)[0]
    assert got["labels"].tolist() == [0, 1, 0]
    torch.testing.assert_close(got["boxes"], boxes[0, [0, 2, 4]])
    torch.testing.assert_close(got["scores"], torch.tensor([0.9, 0.8, 0.6]))
    assert len(got["ignore_boxes"]) == 0  # the unsure one repeats the 0.9 box
    loose = teacher_targets(logits, boxes, 0.5, 0.2, nms_iou=0.95)[0]
    assert loose["labels"].tolist() == plain["labels"].tolist()
    assert len(loose["ignore_boxes"]) == 1


def test_nms_iou_setting_reads_off_and_rejects_non_ious():
    from vit_perception.errors import UsageError
    from vit_perception.training.distill import nms_iou

    assert nms_iou({"teacher_nms_iou": 0.5}) == 0.5
    for off in (None, False):
        assert nms_iou({"teacher_nms_iou": off}) is None
    for bad in (0, 1.5, "high", True):
        with pytest.raises(UsageError, match=f"teacher_nms_iou: {bad!r} is not an IoU"):
            nms_iou({"teacher_nms_iou": bad})


def test_temperature_scales_kl_by_t_squared_and_softens_the_targets():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g) * 4, torch.randn(5, 4, generator=g) * 4
    entropies = []
    for temp in (1.0, 2.0, 4.0):
        p_t = F.softmax(t / temp, -1)
        kl = F.kl_div(F.log_softmax(s / temp, -1), p_t, reduction="none").sum(-1)
        torch.testing.assert_close(softened_kl(s, t, temp), temp**2 * kl)
        entropies.append(float(-(p_t * p_t.log()).sum(-1).mean()))
    assert entropies[0] < entropies[1] < entropies[2]
    # the T^2 factor keeps the gradient's size comparable across temperatures (Hinton et al.)
    grads = []
    for temp in (1.0, 8.0):
        x = s.clone().requires_grad_(True)
        softened_kl(x, t, temp).sum().backward()
        grads.append(float(x.grad.norm()))
    assert 0.2 < grads[1] / grads[0] < 5.0


def test_teacher_boxes_map_to_the_student_input_across_aspect_ratios():
    frame = [400, 300]  # augmented frame size
    lb_t, lb_s = letterbox_params(*frame, 128, 128), letterbox_params(*frame, 96, 48)
    assert lb_t.pad_y > 0 and lb_s.pad_x > 0  # padded on different sides
    boxes = torch.tensor([[10.0, 20.0, 110.0, 170.0], [300.0, 0.0, 400.0, 300.0]])

    def normalised(lb):
        b = box_xyxy_to_cxcywh(lb.to_input(boxes))
        return b / b.new_tensor([lb.dst_w, lb.dst_h] * 2)

    maps = input_map(lb_t, lb_s)[None]
    mapped = map_boxes(normalised(lb_t)[None], maps)[0]
    torch.testing.assert_close(mapped, normalised(lb_s), atol=2e-3, rtol=0)
    # a teacher box reaching into its letterbox padding (above the frame) is clipped to the frame
    spill = torch.tensor([[[0.5, lb_t.pad_y / 128, 0.2, 0.2]]])  # centred on the frame's top edge
    top = box_cxcywh_to_xyxy(map_boxes(spill, maps))[0, 0]
    assert top[1].item() == pytest.approx(0.0, abs=1e-4)  # the frame's top in the student input
    want = 0.1 * lb_t.dst_h / lb_t.scale_y * lb_s.scale_y / lb_s.dst_h  # 0.1 of the teacher input
    assert top[3].item() == pytest.approx(want, rel=0.02)


def test_feature_cells_sample_the_student_map_and_mask_the_padding():
    lb = letterbox_params(160, 120, 128, 128)  # 128x96 frame, 16 rows of padding top/bottom
    maps = input_map(lb, lb)[None]
    grid, mask = teacher_cells(maps, (8, 8), (1.0, 1.0), (1.0, 1.0))
    student = torch.randn(1, 5, 8, 8)
    sampled = F.grid_sample(student, grid, align_corners=False)
    torch.testing.assert_close(sampled, student)  # same geometry: the identity
    assert mask[0].all(-1).tolist() == [False] + [True] * 6 + [False]
    translator = FeatureTranslator(5, 7, hidden_dim=8)
    assert translator(student, grid).shape == (1, 7, 8, 8)
    teacher = torch.randn(1, 7, 8, 8)
    perfect = teacher.clone()
    perfect[:, :, 0] = -teacher[:, :, 0]  # wrong only on a padding row: no loss there
    losses = feature_losses(perfect, teacher, mask)
    assert losses["loss_feat_cos"].item() == pytest.approx(0.0, abs=1e-5)
    assert feature_losses(-teacher, teacher, mask)["loss_feat_cos"].item() == pytest.approx(2.0)


def test_ignore_threshold_setting_reads_off_and_rejects_non_scores():
    """``distill.teacher_ignore_threshold`` as ``--set`` parses it (YAML): null and ``off``
    (False) turn it off, a score not below ``teacher_threshold`` does too, a string or a number
    outside [0, 1) is a clear error naming the key."""
    from vit_perception.errors import UsageError
    from vit_perception.training.distill import ignore_threshold

    assert ignore_threshold({"teacher_threshold": 0.5, "teacher_ignore_threshold": 0.2}) == 0.2
    for off in (None, False, 0.5, 0.7):
        assert ignore_threshold({"teacher_threshold": 0.5, "teacher_ignore_threshold": off}) is None
    for bad in ("low", 1.5, -0.1):
        with pytest.raises(UsageError, match=f"teacher_ignore_threshold: {bad!r} is not a score"):
            ignore_threshold({"teacher_threshold": 0.5, "teacher_ignore_threshold": bad})

"""Distillation losses: teacher predictions as targets for the student's queries, and dense
feature matching.

``teacher_targets`` keeps the teacher's confident predictions (max class probability at least
the threshold) with their full logits; ``DetectionDistillLoss`` matches student queries to them
with the Hungarian matcher and returns

- ``loss_kd_ce``: ``T^2 * KL(softmax(t / T) || softmax(s / T))`` of the matched queries (with
  ``hard``: cross-entropy to the teacher's best class, the set criterion's class loss with the
  teacher's detections as pseudo-labels),
- ``loss_kd_noobj``: cross-entropy to "no object" of the unmatched queries,

both over DETR's weighted count ``matched + noobj_coef * unmatched`` (so together they are the
set criterion's class loss with soft targets), and ``loss_kd_bbox`` (L1) and ``loss_kd_giou``
over the number of teacher targets. With ``teacher_targets(..., ignore_threshold)`` the teacher's
uncertain predictions (best class probability in ``[ignore_threshold, threshold)``) come along
as ``ignore_boxes``: an unmatched student query whose box overlaps one of them (IoU >= 0.5) is
left out of ``loss_kd_noobj`` (and its count), so a student is not taught that an object the
teacher half-saw is background; with ``nms_iou`` the teacher's duplicates (a same-class
prediction overlapping a higher-scoring one) are dropped from both. ``feature_losses`` gives
``loss_feat_cos`` and ``loss_feat_l1`` between translated student and teacher features on the
frame's cells.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vit_perception.models.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from vit_perception.models.criterion import on_unsure_boxes
from vit_perception.models.matcher import HungarianMatcher

KD_TERMS = ("loss_kd_ce", "loss_kd_noobj", "loss_kd_bbox", "loss_kd_giou")
FEATURE_TERMS = ("loss_feat_cos", "loss_feat_l1")


def softened_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float,
                object_only: bool = False) -> Tensor:
    """``[M, K+1]`` each -> ``[M]``: ``T^2 * KL(softmax(t / T) || softmax(s / T))`` (Hinton et
    al.: the T^2 factor keeps gradient magnitudes comparable across temperatures). With
    ``object_only`` the teacher's distribution is renormalised over the K classes (its last,
    "no object", column gets no mass): a query matched to a teacher target is an object, and
    the softened target keeps only how the teacher ranks the classes."""
    t = float(temperature)
    log_s = F.log_softmax(student_logits.float() / t, dim=-1)
    teacher = teacher_logits.float()
    if object_only:
        teacher, log_s = teacher[:, :-1], log_s[:, :-1]
    log_t = F.log_softmax(teacher / t, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1) * (t * t)


def teacher_targets(logits: Tensor, boxes: Tensor, threshold: float,
                    ignore_threshold: float | None = None,
                    nms_iou: float | None = None) -> list[dict]:
    """Teacher ``pred_logits [B, N, K+1]`` and ``pred_boxes [B, N, 4]`` (already in the student's
    normalised cxcywh) -> per image ``logits [m, K+1]``, ``labels [m]``, ``boxes [m, 4]``,
    ``scores [m]`` of the predictions whose best class probability is ``>= threshold`` (boxes
    with no width or height, e.g. wholly in letterbox padding, are left out), and
    ``ignore_boxes [u, 4]``: those scoring in ``[ignore_threshold, threshold)`` (none when
    ``ignore_threshold`` is None). With ``nms_iou``, a prediction overlapping a higher-scoring
    one of the same class by more than that IoU is a duplicate and left out of both (an
    under-trained DETR repeats its objects; a student taught the repeats learns to repeat)."""
    prob = logits.float().softmax(-1)[..., :-1]
    scores, labels = prob.max(-1)
    sized = (boxes[..., 2] > 1e-3) & (boxes[..., 3] > 1e-3)
    low = float("inf") if ignore_threshold is None else float(ignore_threshold)
    out = []
    for i in range(logits.shape[0]):
        valid = sized[i]
        if nms_iou is not None:
            valid = valid & ~duplicates(boxes[i], scores[i], labels[i], min(threshold, low),
                                        nms_iou)
        keep = (scores[i] >= threshold) & valid
        unsure = (scores[i] >= low) & (scores[i] < threshold) & valid
        out.append({"logits": logits[i][keep].float(), "labels": labels[i][keep],
                    "boxes": boxes[i][keep].float(), "scores": scores[i][keep],
                    "ignore_boxes": boxes[i][unsure].float()})
    return out


def duplicates(boxes: Tensor, scores: Tensor, labels: Tensor, threshold: float,
               iou: float) -> Tensor:
    """``[N]`` bool: the predictions (cxcywh ``boxes``) scoring ``>= threshold`` that class-wise
    non-maximum suppression at ``iou`` removes (a higher-scoring prediction of the same class
    overlaps them by more than ``iou``)."""
    from torchvision.ops import batched_nms

    candidates = (scores >= threshold).nonzero()[:, 0]
    out = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if len(candidates) < 2:
        return out
    kept = batched_nms(box_cxcywh_to_xyxy(boxes[candidates].float()),
                       scores[candidates].float(), labels[candidates], float(iou))
    out[candidates] = True
    out[candidates[kept]] = False
    return out


class DetectionDistillLoss(nn.Module):
    """Student outputs vs ``teacher_targets``: unweighted ``KD_TERMS``, summed over the final
    prediction set and (``aux``) each ``aux_outputs`` set."""

    def __init__(self, matcher: HungarianMatcher, temperature: float = 2.0,
                 noobj_coef: float = 0.1, aux: bool = True, object_only: bool = False,
                 hard: bool = False):
        super().__init__()
        self.matcher, self.temperature = matcher, float(temperature)
        self.noobj_coef, self.aux, self.object_only = float(noobj_coef), aux, bool(object_only)
        self.hard = bool(hard)

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        sets = [outputs]
        if self.aux:
            sets += list(outputs.get("aux_outputs", []))
        losses = {k: outputs["pred_logits"].new_zeros((), dtype=torch.float32) for k in KD_TERMS}
        sets = [{"pred_logits": p["pred_logits"].float(), "pred_boxes": p["pred_boxes"].float()}
                for p in sets]
        matches = self.matcher.match_sets(  # every set's costs in one batch, one host copy
            sets, [{"labels": t["labels"], "boxes": t["boxes"]} for t in targets])
        for preds, indices in zip(sets, matches):
            for name, value in self.set_losses(preds, targets, indices).items():
                losses[name] = losses[name] + value
        return losses

    def set_losses(self, outputs: dict, targets: list[dict],
                   indices: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        """The four terms of one float ``[B, N, ...]`` prediction set and its matching
        (``forward`` matches every set at once)."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        b, n = logits.shape[:2]
        dev = logits.device
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]
                              ).to(dev)
        src_idx = torch.cat([src for src, _ in indices]).to(dev)
        t_logits = torch.cat([t["logits"][j.to(dev)] for t, (_, j) in zip(targets, indices)]
                             ).reshape(-1, logits.shape[-1])
        t_boxes = torch.cat([t["boxes"][j.to(dev)] for t, (_, j) in zip(targets, indices)]
                            ).reshape(-1, 4)
        t_labels = torch.cat([t["labels"][j.to(dev)] for t, (_, j) in zip(targets, indices)]
                             ).reshape(-1).long()
        matched = torch.zeros(b, n, dtype=torch.bool, device=dev)
        matched[batch_idx, src_idx] = True
        background = ~(matched | on_unsure_boxes(boxes.detach(), targets))
        n_matched, n_background = int(src_idx.numel()), int(background.sum())
        denom = max(n_matched + self.noobj_coef * n_background, 1e-6)
        if self.hard:
            kl = F.cross_entropy(logits[batch_idx, src_idx], t_labels, reduction="none")
        else:
            kl = softened_kl(logits[batch_idx, src_idx], t_logits, self.temperature,
                             self.object_only)
        noobj = F.cross_entropy(logits[background],
                                torch.full((n_background,), logits.shape[-1] - 1,
                                           dtype=torch.int64, device=dev), reduction="sum")
        num_boxes = max(n_matched, 1)
        src_boxes = boxes[batch_idx, src_idx]
        l1 = F.l1_loss(src_boxes, t_boxes, reduction="sum") / num_boxes
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src_boxes),
                                              box_cxcywh_to_xyxy(t_boxes)))
        return {"loss_kd_ce": kl.sum() / denom,
                "loss_kd_noobj": self.noobj_coef * noobj / denom,
                "loss_kd_bbox": l1, "loss_kd_giou": (1 - giou).sum() / num_boxes}


def feature_losses(student: Tensor, teacher: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Translated student ``[B, C, h, w]`` vs teacher ``[B, C, h, w]`` features on the cells of
    ``mask [B, h, w]``: mean ``1 - cosine`` and mean smooth-L1 against the teacher standardised
    per cell (zero mean, unit variance over channels, so the target's scale is fixed)."""
    s = student.float().permute(0, 2, 3, 1)[mask]  # [M, C]
    t = teacher.float().permute(0, 2, 3, 1)[mask]
    if s.numel() == 0:
        zero = student.sum() * 0.0
        return {"loss_feat_cos": zero, "loss_feat_l1": zero}
    cos = 1 - F.cosine_similarity(s, t, dim=-1)
    target = F.layer_norm(t, t.shape[-1:])
    return {"loss_feat_cos": cos.mean(), "loss_feat_l1": F.smooth_l1_loss(s, target)}

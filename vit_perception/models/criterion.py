"""DETR set criterion: Hungarian matching, then cross-entropy (no-object weighted), L1 and GIoU.

A target may carry ``ignore_boxes [u, 4]`` (cxcywh): regions where an object may be that no box
labels, such as a teacher's uncertain detections when its confident ones are the labels. An
unmatched query whose box overlaps one of them (IoU >= 0.5) is left out of the class loss
instead of being taught "no object" (``on_unsure_boxes``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vit_perception.models.box_ops import box_cxcywh_to_xyxy, box_iou, generalized_box_iou
from vit_perception.models.matcher import HungarianMatcher


class SetCriterion(nn.Module):
    """Losses of one prediction set and of each ``aux_outputs`` / ``enc_outputs`` set.

    Returns ``loss_ce``, ``loss_bbox``, ``loss_giou`` (suffixed ``_0``, ``_1``, ... for auxiliary
    decoder layers and ``_enc`` for two-stage proposals) and their weighted sum under ``loss``.
    Box losses are averaged over the number of ground-truth boxes in the batch.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, *, loss_ce: float = 1.0,
                 loss_bbox: float = 5.0, loss_giou: float = 2.0, eos_coef: float = 0.1,
                 aux_loss: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
        self.aux_loss = aux_loss
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        """``outputs`` from the model; ``targets`` per image ``labels [n]``, ``boxes [n, 4]``
        normalised cxcywh. Returns a dict of scalar losses, the weighted total under ``loss``."""
        device = outputs["pred_logits"].device
        targets = [{"labels": t["labels"].to(device), "boxes": t["boxes"].to(device).float(),
                    **({"ignore_boxes": t["ignore_boxes"].to(device).float()}
                       if t.get("ignore_boxes") is not None else {})} for t in targets]
        num_boxes = max(sum(len(t["labels"]) for t in targets), 1)
        sets = [("", outputs)]
        if self.aux_loss:
            sets += [(f"_{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))]
            if "enc_outputs" in outputs:
                sets.append(("_enc", outputs["enc_outputs"]))
        losses: dict[str, Tensor] = {}
        total = outputs["pred_logits"].new_zeros(())
        matches = self.matcher.match_sets([preds for _, preds in sets], targets)
        for (suffix, preds), indices in zip(sets, matches):
            for name, value in self.set_losses(preds, targets, num_boxes, indices).items():
                losses[name + suffix] = value
                total = total + self.weights[name] * value
        losses["loss"] = total
        return losses

    def set_losses(self, outputs: dict, targets: list[dict], num_boxes: int,
                   indices: list[tuple[Tensor, Tensor]] | None = None) -> dict[str, Tensor]:
        """Unweighted ``loss_ce``, ``loss_bbox``, ``loss_giou`` of one ``[B, N, ...]`` set
        (``indices``: its matching, when the caller matched all sets at once)."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if indices is None:
            indices = self.matcher(outputs, targets)
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        batch_idx, src_idx = batch_idx.to(logits.device), src_idx.to(logits.device)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64,
                                    device=logits.device)
        matched_labels = torch.cat([t["labels"][j.to(logits.device)]
                                    for t, (_, j) in zip(targets, indices)])
        target_classes[batch_idx, src_idx] = matched_labels
        if any(len(t.get("ignore_boxes", ())) for t in targets):
            weight = self.empty_weight[target_classes]  # F.cross_entropy's weighted mean ...
            unsure = on_unsure_boxes(boxes.detach(), targets)
            unsure[batch_idx, src_idx] = False
            weight = weight * ~unsure  # ... less the unmatched queries on unsure regions
            ce = F.cross_entropy(logits.float().transpose(1, 2), target_classes,
                                 reduction="none")
            loss_ce = (weight * ce).sum() / weight.sum().clamp(min=1e-6)
        else:
            loss_ce = F.cross_entropy(logits.float().transpose(1, 2), target_classes,
                                      self.empty_weight)
        src_boxes = boxes[batch_idx, src_idx].float()
        tgt_boxes = torch.cat([t["boxes"][j.to(logits.device)]
                               for t, (_, j) in zip(targets, indices)]).reshape(-1, 4)
        loss_bbox = F.l1_loss(src_boxes, tgt_boxes, reduction="sum") / num_boxes
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src_boxes),
                                              box_cxcywh_to_xyxy(tgt_boxes)))
        loss_giou = (1 - giou).sum() / num_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}


def on_unsure_boxes(boxes: Tensor, targets: list[dict], iou: float = 0.5) -> Tensor:
    """``[B, N]`` bool: the queries whose box (cxcywh) overlaps one of the image's
    ``ignore_boxes`` by at least ``iou``."""
    out = torch.zeros(boxes.shape[:2], dtype=torch.bool, device=boxes.device)
    for i, t in enumerate(targets):
        unsure = t.get("ignore_boxes")
        if unsure is None or len(unsure) == 0:
            continue
        overlap = box_iou(box_cxcywh_to_xyxy(boxes[i].float()),
                          box_cxcywh_to_xyxy(unsure.to(boxes.device).float()))[0]
        out[i] = overlap.max(-1).values >= iou
    return out

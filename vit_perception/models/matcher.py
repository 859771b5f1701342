"""Hungarian matching between predictions and ground truth (DETR's ``HungarianMatcher``)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from vit_perception.models.box_ops import box_cxcywh_to_xyxy, generalized_box_iou


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising ``cost_class * -p(class) + cost_bbox * L1 +
    cost_giou * -GIoU``; unmatched predictions are "no object"."""

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        """``outputs``: ``pred_logits [B, N, K+1]``, ``pred_boxes [B, N, 4]`` cxcywh;
        ``targets``: per image ``labels [n]``, ``boxes [n, 4]`` cxcywh.

        Returns per image ``(pred_idx [m], target_idx [m])`` int64, ``m = min(N, n)``.
        """
        bs, num_queries = outputs["pred_logits"].shape[:2]
        prob = outputs["pred_logits"].flatten(0, 1).float().softmax(-1)  # [B*N, K+1]
        boxes = outputs["pred_boxes"].flatten(0, 1).float()  # [B*N, 4]
        tgt_ids = torch.cat([t["labels"] for t in targets]).to(prob.device)
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes).reshape(-1, 4)
        cost = (self.cost_class * -prob[:, tgt_ids]
                + self.cost_bbox * torch.cdist(boxes, tgt_boxes, p=1)
                - self.cost_giou * generalized_box_iou(box_cxcywh_to_xyxy(boxes),
                                                       box_cxcywh_to_xyxy(tgt_boxes)))
        cost = cost.view(bs, num_queries, -1).cpu()
        sizes = [len(t["boxes"]) for t in targets]
        result = []
        for i, c in enumerate(cost.split(sizes, -1)):
            rows, cols = linear_sum_assignment(c[i].numpy())
            result.append((torch.as_tensor(rows, dtype=torch.int64),
                           torch.as_tensor(cols, dtype=torch.int64)))
        return result

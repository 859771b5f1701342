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
        return self.match_sets([outputs], targets)[0]

    @torch.no_grad()
    def match_sets(self, sets: list[dict], targets: list[dict]
                   ) -> list[list[tuple[Tensor, Tensor]]]:
        """``forward`` for several prediction sets of one batch (the last decoder layer, the
        auxiliary layers, the encoder proposals) against the same targets: the cost matrices
        of sets of one shape are computed as one batch on the device, all of them come to the
        host in one copy (one synchronisation per training step, not one per set), and the
        assignments run on the CPU. Returns one ``forward`` result per set."""
        if not sets:
            return []
        device = sets[0]["pred_logits"].device
        tgt_ids = torch.cat([t["labels"] for t in targets]).to(device)
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(device).float().reshape(-1, 4)
        sizes = [len(t["boxes"]) for t in targets]
        groups: dict[tuple[int, ...], list[int]] = {}
        for j, out in enumerate(sets):
            groups.setdefault(tuple(out["pred_logits"].shape), []).append(j)
        shapes, flat = [], []
        for (bs, queries, _), members in groups.items():
            logits = torch.stack([sets[j]["pred_logits"] for j in members]).flatten(0, 2)
            boxes = torch.stack([sets[j]["pred_boxes"] for j in members]).flatten(0, 2)
            flat.append(self.cost(logits, boxes, tgt_ids, tgt_boxes).reshape(-1))
            shapes.append((members, bs, queries))
        host = torch.cat(flat).cpu()  # the one device-to-host copy
        result: list[list[tuple[Tensor, Tensor]]] = [[] for _ in sets]
        offset = 0
        for members, bs, queries in shapes:
            n = len(members) * bs * queries * len(tgt_ids)
            cost = host[offset:offset + n].view(len(members), bs, queries, len(tgt_ids))
            offset += n
            for s, j in enumerate(members):
                result[j] = _assign(cost[s], sizes)
        return result

    def cost(self, logits: Tensor, boxes: Tensor, tgt_ids: Tensor, tgt_boxes: Tensor) -> Tensor:
        """``[P, K+1]`` logits and ``[P, 4]`` cxcywh boxes against ``T`` targets -> ``[P, T]``."""
        prob = logits.float().softmax(-1)
        boxes = boxes.float()
        return (self.cost_class * -prob[:, tgt_ids]
                + self.cost_bbox * torch.cdist(boxes, tgt_boxes, p=1)
                - self.cost_giou * generalized_box_iou(box_cxcywh_to_xyxy(boxes),
                                                       box_cxcywh_to_xyxy(tgt_boxes)))


def _assign(cost: Tensor, sizes: list[int]) -> list[tuple[Tensor, Tensor]]:
    """``[B, N, T]`` host costs, ``T`` split by image -> per image ``(pred_idx, target_idx)``."""
    result = []
    for i, c in enumerate(cost.split(sizes, -1)):
        rows, cols = linear_sum_assignment(c[i].numpy())
        result.append((torch.as_tensor(rows, dtype=torch.int64),
                       torch.as_tensor(cols, dtype=torch.int64)))
    return result

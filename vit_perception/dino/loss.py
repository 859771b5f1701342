"""DINO's loss: cross-entropy from centred, sharpened teacher views to the student's other views.

The teacher's distribution is ``softmax((t - center) / teacher_temp)`` with no gradient
(stop-gradient); the student's is ``softmax(s / student_temp)``. Centring (an EMA of the
teacher's batch means) keeps one prototype from dominating; sharpening (``teacher_temp`` below
``student_temp``) keeps the distribution from going uniform. The two together avoid collapse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vit_perception.dino.collective import all_reduce
from vit_perception.dino.sinkhorn import CENTERINGS, sinkhorn_knopp


class DINOLoss(nn.Module):
    """``forward(student [V*B, K], teacher [G*B, K], teacher_temp)`` -> (loss, stats).

    Rows are grouped by view: the first ``G`` student views are the same global crops the
    teacher saw, in the same order. Every teacher view ``i`` is compared with every student
    view ``v != i``. ``stats`` holds the collapse signals (no gradient): ``teacher_entropy``
    (mean per-sample entropy, nats), ``batch_entropy`` (entropy of the batch-mean teacher
    distribution: how many prototypes are in use) and ``kl`` (mean KL(teacher || student) over
    the compared pairs). The centre is updated after the loss, from this batch's teacher rows.
    ``centering="sinkhorn"`` (DINOv2) balances the teacher's global views of the batch with
    ``sinkhorn_iterations`` Sinkhorn-Knopp steps instead of subtracting the centre (which is
    still updated, so a run's state is the same either way).
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "ema", sinkhorn_iterations: int = 3):
        super().__init__()
        self.out_dim = int(out_dim)
        self.student_temp = float(student_temp)
        self.center_momentum = float(center_momentum)
        self.centering = check_centering(centering)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.register_buffer("center", torch.zeros(1, out_dim))

    def targets(self, teacher: Tensor, teacher_temp: float) -> Tensor:
        """The teacher's rows as target distributions (no gradient)."""
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(teacher, teacher_temp, self.sinkhorn_iterations)
        return F.softmax((teacher.float() - self.center) / teacher_temp, dim=-1).detach()

    def forward(self, student: Tensor, teacher: Tensor, teacher_temp: float,
                n_global: int = 2) -> tuple[Tensor, dict[str, float]]:
        student_views = student.float().div(self.student_temp).chunk(
            student.shape[0] // (teacher.shape[0] // n_global))
        teacher_probs = self.targets(teacher, teacher_temp)
        teacher_views = teacher_probs.chunk(n_global)
        total, kl, pairs = student.new_zeros(()), 0.0, 0
        for i, q in enumerate(teacher_views):
            log_q = q.clamp_min(1e-12).log()
            for v, s in enumerate(student_views):
                if v == i:
                    continue
                log_p = F.log_softmax(s, dim=-1)
                total = total + torch.sum(-q * log_p, dim=-1).mean()
                kl += float(torch.sum(q * (log_q - log_p.detach()), dim=-1).mean())
                pairs += 1
        loss = total / max(pairs, 1)
        stats = collapse_stats(teacher_probs)
        stats["kl"] = kl / max(pairs, 1)
        self.update_center(teacher)
        return loss, stats

    @torch.no_grad()
    def update_center(self, teacher: Tensor) -> None:
        """``center = m * center + (1 - m) * mean(teacher rows)`` (mean over all processes)."""
        batch_center = all_reduce(teacher.float().mean(dim=0, keepdim=True), "mean")
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


def check_centering(kind: str) -> str:
    if kind not in CENTERINGS:
        raise ValueError(f"pretrain.centering must be one of {', '.join(CENTERINGS)}, "
                         f"not {kind!r}")
    return kind


@torch.no_grad()
def collapse_stats(probs: Tensor) -> dict[str, float]:
    """``teacher_entropy`` (mean row entropy) and ``batch_entropy`` (of the mean row), nats."""
    p = probs.float()
    row = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
    mean = p.mean(0)
    batch = -(mean * mean.clamp_min(1e-12).log()).sum()
    return {"teacher_entropy": float(row), "batch_entropy": float(batch),
            "log_k": math.log(p.shape[-1])}


class PatchCentre(nn.Module):
    """The state of a patch-level loss: the student's temperature and the centre of the
    teacher's patch outputs (``[1, 1, K]``, an EMA of batch means over images and patches)."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "ema", sinkhorn_iterations: int = 3):
        super().__init__()
        self.student_temp = float(student_temp)
        self.center_momentum = float(center_momentum)
        self.centering = check_centering(centering)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.register_buffer("center", torch.zeros(1, 1, out_dim))

    @torch.no_grad()
    def update_center(self, teacher: Tensor) -> None:
        batch_center = all_reduce(teacher.float().mean(dim=(0, 1), keepdim=True), "mean")
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


class PatchLoss(PatchCentre):
    """iBOT's masked-patch objective: the student's patch tokens at masked positions predict the
    teacher's (centred, sharpened) outputs for the same, unmasked view.

    ``forward(student [B, N, K], teacher [B, N, K], masks [B, N] bool, teacher_temp)``: the
    cross-entropy is averaged over each image's masked patches, then over images with a mask.
    With ``centering="sinkhorn"`` the teacher's outputs at the masked positions are balanced
    together (as DINOv2 does), the others are not used.
    """

    def forward(self, student: Tensor, teacher: Tensor, masks: Tensor,
                teacher_temp: float) -> Tensor:
        if self.centering == "sinkhorn":
            q = torch.zeros_like(teacher, dtype=torch.float32)  # every process joins the sums
            q[masks] = sinkhorn_knopp(teacher[masks], teacher_temp, self.sinkhorn_iterations)
        else:
            q = F.softmax((teacher.float() - self.center) / teacher_temp, dim=-1).detach()
        ce = torch.sum(-q * F.log_softmax(student.float() / self.student_temp, dim=-1), dim=-1)
        m = masks.float()
        per_image = (ce * m).sum(-1) / m.sum(-1).clamp_min(1.0)
        has_mask = (m.sum(-1) > 0).float()
        loss = (per_image * has_mask).sum() / has_mask.sum().clamp_min(1.0)
        self.update_center(teacher)
        return loss

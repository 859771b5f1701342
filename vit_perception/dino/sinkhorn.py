"""DINOv2's Sinkhorn-Knopp centring of the teacher's outputs, and its KoLeo regulariser.

``sinkhorn_knopp(logits [N, K], temp, iterations)`` turns the teacher's logits into targets by
alternately normalising ``exp(logits / temp)`` so that every prototype carries the same share of
the batch (columns sum to ``N / K``) and every row is a distribution (rows sum to 1): a batch-wide
balance that replaces DINO's EMA centre (SwAV's equipartition, used by DINOv2). Rows and the
batch are summed over all processes under torch.distributed (each may hold a different
number of rows, none included), as the EMA centre's mean is.

``koleo_loss(x [N, D])``: the Kozachenko-Leonenko entropy estimator's loss,
``-mean(log(distance to the nearest other row))`` on L2-normalised rows, which spreads a batch's
embeddings over the sphere (DINOv2 applies it to the student's [CLS] of each global view).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vit_perception.dino.collective import all_reduce

CENTERINGS = ("ema", "sinkhorn")


@torch.no_grad()
def sinkhorn_knopp(logits: Tensor, temp: float, iterations: int = 3) -> Tensor:
    """Balanced teacher targets ``[N, K]`` (rows sum to 1), no gradient."""
    x = logits.float() / float(temp)
    shift = x.max() if x.numel() else x.new_tensor(float("-inf"))
    x = x - all_reduce(shift, "max")  # one shift for every process: exp cannot overflow
    q = torch.exp(x).t()  # K x N
    k = q.shape[0]
    n_total = float(all_reduce(x.new_tensor(float(q.shape[1]))))  # rows may differ by process
    q /= all_reduce(q.sum()).clamp_min(1e-30)
    for _ in range(int(iterations)):
        q /= all_reduce(q.sum(dim=1, keepdim=True)).clamp_min(1e-30)  # every prototype: 1/K
        q /= k
        q /= q.sum(dim=0, keepdim=True).clamp_min(1e-30)  # every row: 1/N
        q /= n_total
    return (q * n_total).t()


def koleo_loss(x: Tensor, eps: float = 1e-8) -> Tensor:
    """``-mean(log(nearest-neighbour distance))`` over the rows of ``x`` (L2-normalised)."""
    if x.shape[0] < 2:
        return x.new_zeros(())
    z = F.normalize(x.float(), dim=-1, eps=eps)
    with torch.no_grad():
        sim = z @ z.t()
        sim.fill_diagonal_(-2.0)  # never one's own neighbour
        nearest = sim.argmax(dim=1)
    dist = (z - z[nearest]).norm(dim=-1)
    return -torch.log(dist + eps).mean()

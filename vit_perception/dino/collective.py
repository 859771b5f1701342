"""A tensor reduced over every process under torch.distributed (itself without it)."""

from __future__ import annotations

from torch import Tensor


def all_reduce(x: Tensor, op: str = "sum") -> Tensor:
    """``x`` summed (``"sum"``), averaged (``"mean"``) or maximised (``"max"``) over all
    processes; a new tensor under torch.distributed, ``x`` itself without it."""
    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized()):
        return x
    x = x.clone()
    tdist.all_reduce(x, op=tdist.ReduceOp.MAX if op == "max" else tdist.ReduceOp.SUM)
    return x / tdist.get_world_size() if op == "mean" else x

"""iBOT patch masks: for a fraction of the images, a random share of the patches is masked."""

from __future__ import annotations

import torch
from torch import Tensor


def random_masks(batch: int, n_patches: int, ratio: tuple[float, float], prob: float,
                 generator: torch.Generator | None = None) -> Tensor:
    """``[batch, n_patches]`` bool. Each image is masked with probability ``prob``; a masked
    image has ``round(r * n_patches)`` patches masked, ``r`` uniform in ``ratio``, chosen at
    random (at least one)."""
    masks = torch.zeros(batch, n_patches, dtype=torch.bool)
    lo, hi = float(ratio[0]), float(ratio[1])
    for b in range(batch):
        if float(torch.rand((), generator=generator)) >= prob:
            continue
        r = lo + (hi - lo) * float(torch.rand((), generator=generator))
        k = max(1, int(round(r * n_patches)))
        masks[b, torch.randperm(n_patches, generator=generator)[:k]] = True
    return masks

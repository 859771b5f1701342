"""A resumable sampler for small data sets: repeat-factor, shuffle or with-replacement.

Each epoch's order is a pure function of ``(seed, epoch)``, so a run resumed at ``(epoch,
position)`` sees exactly the samples it would have seen. Every item is ``(index, sample_seed)``;
the dataset seeds that sample's augmentation with ``sample_seed``, which makes augmentation
independent of worker processes and resumable too. Under DDP each rank takes every
``world_size``-th item of the (padded) epoch order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch


def repeat_factors(labels: Sequence[np.ndarray], num_classes: int,
                   threshold: float) -> np.ndarray:
    """LVIS repeat factors: ``r(img) = max over its classes c of max(1, sqrt(t / f(c)))`` where
    ``f(c)`` is the fraction of frames containing class ``c``."""
    present = [set(np.asarray(lab).tolist()) for lab in labels]
    freq = np.zeros(max(num_classes, 1))
    for classes in present:
        for c in classes:
            freq[c] += 1
    freq /= max(len(labels), 1)
    per_class = np.where(freq > 0, np.maximum(1.0, np.sqrt(threshold / np.maximum(freq, 1e-12))),
                         1.0)
    return np.asarray([max((per_class[c] for c in classes), default=1.0) for classes in present])


class ResumableSampler(torch.utils.data.Sampler):
    """Yields ``(index, sample_seed)`` for one epoch, from ``start`` (samples already used)."""

    def __init__(self, num_items: int, *, mode: str = "repeat_factor",
                 factors: np.ndarray | None = None, samples_per_epoch: int | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        if mode not in ("repeat_factor", "shuffle", "replacement"):
            raise ValueError(f"unknown sampler {mode!r} (repeat_factor, shuffle, replacement)")
        self.num_items, self.mode, self.seed = num_items, mode, int(seed)
        self.factors = np.ones(num_items) if factors is None else np.asarray(factors, float)
        expected = int(round(self.factors.sum())) if mode == "repeat_factor" else num_items
        self.samples_per_epoch = int(samples_per_epoch or expected)
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_state(self, epoch: int, start: int = 0) -> None:
        """Next iteration yields epoch ``epoch`` from its ``start``-th (per-rank) sample."""
        self.epoch, self.start = int(epoch), int(start)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def epoch_order(self, epoch: int) -> list[int]:
        """The whole epoch's indices (before sharding across ranks)."""
        rng = np.random.default_rng([self.seed, epoch])
        n = self.samples_per_epoch
        if self.mode == "replacement":
            p = self.factors / self.factors.sum()
            return rng.choice(self.num_items, size=n, replace=True, p=p).tolist()
        if self.mode == "repeat_factor":  # stochastic rounding of each frame's repeat factor
            whole = np.floor(self.factors)
            reps = (whole + (rng.random(self.num_items) < self.factors - whole)).astype(int)
            pool = np.repeat(np.arange(self.num_items), reps)
        else:
            pool = np.arange(self.num_items)
        out: list[int] = []
        while len(out) < n:  # as many shuffled passes as samples_per_epoch needs
            out.extend(rng.permutation(pool).tolist())
        return out[:n]

    def __len__(self) -> int:
        return max(0, self.per_rank() - self.start)

    def per_rank(self) -> int:
        return math.ceil(self.samples_per_epoch / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.epoch_order(self.epoch)
        total = self.per_rank() * self.world_size
        order = (order * (total // max(len(order), 1) + 1))[:total]  # pad for equal shards
        seeds = np.random.default_rng([self.seed, self.epoch, 1]).integers(
            0, 2**31 - 1, size=total)
        for pos in range(self.rank + self.start * self.world_size, total, self.world_size):
            yield order[pos], int(seeds[pos])

"""A small bounded cache of captured CUDA graphs, one per input shape and batch size.

Kept free of CUDA so its keying and eviction are tested on any machine: ``TorchRunner`` stores
one captured graph (with its static input and outputs) per ``(batch, C, H, W, dtype)`` key and
replays the one that fits the incoming batch. The least recently used entry is evicted (and
handed to ``on_evict``, which frees the graph's memory pool) once ``max_size`` shapes are held.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import torch

V = TypeVar("V")

GraphKey = tuple[int, int, int, int, str]


def graph_key(images: torch.Tensor) -> GraphKey:
    """``[B, C, H, W]`` tensor -> ``(B, C, H, W, dtype)``: what a captured graph is fixed to."""
    if images.ndim != 4:
        raise ValueError(f"expected a [B, C, H, W] batch, got shape {tuple(images.shape)}")
    b, c, h, w = (int(s) for s in images.shape)
    return (b, c, h, w, str(images.dtype).removeprefix("torch."))


class GraphCache(Generic[V]):
    """LRU map ``GraphKey -> V`` holding at most ``max_size`` entries."""

    def __init__(self, max_size: int = 4, on_evict: Callable[[V], None] | None = None) -> None:
        if max_size < 1:
            raise ValueError(f"graph cache size must be at least 1, not {max_size}")
        self.max_size = max_size
        self.on_evict = on_evict
        self._entries: OrderedDict[GraphKey, V] = OrderedDict()
        self.captures = 0  # entries ever stored (a replay of a cached shape does not count)

    def get(self, key: GraphKey) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: GraphKey, value: V) -> list[GraphKey]:
        """Store ``value``; returns the keys evicted to make room (oldest use first)."""
        if key in self._entries:
            self._drop(key)
        self._entries[key] = value
        self.captures += 1
        evicted = []
        while len(self._entries) > self.max_size:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            evicted.append(oldest)
        return evicted

    def clear(self) -> None:
        for key in list(self._entries):
            self._drop(key)

    def keys(self) -> list[GraphKey]:
        """Held keys, least recently used first."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def _drop(self, key: GraphKey) -> None:
        value = self._entries.pop(key)
        if self.on_evict is not None:
            self.on_evict(value)

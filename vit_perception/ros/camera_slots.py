"""Newest-wins frame slots, one per camera, taken together so waiting frames share a batch.

Each subscription callback `put()`s its camera's newest message and returns; the inference
thread `take()`s every frame waiting at that moment, one per camera, and runs them as one batch.
A frame replaced before it was taken is dropped (and counted), so inference never falls behind
into a backlog, and a camera flooding the node never displaces another camera's frame.

No rclpy here: the items are whatever the node stores (message, receive time).
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class SlotClosed(Exception):
    """`CameraSlots.take` or `put` after `close()` (take: once nothing is waiting)."""

# Last topic components that name an image stream rather than a camera.
_STREAM_NAMES = {"image", "image_raw", "image_rect", "image_rect_color", "image_color",
                 "image_mono", "compressed"}


class CameraSlots(Generic[T]):
    """One newest-wins slot per camera name. Thread-safe."""

    def __init__(self, cameras: Sequence[str]):
        if not cameras:
            raise ValueError("CameraSlots needs at least one camera")
        self.cameras = list(cameras)
        self._cond = threading.Condition()
        self._items: dict[str, T] = {}
        self._closed = False
        self.dropped: Counter[str] = Counter()

    def put(self, camera: str, item: T) -> bool:
        """Store `item` as `camera`'s newest frame; True if a waiting one was replaced."""
        with self._cond:
            if self._closed:
                raise SlotClosed("put on closed camera slots")
            if camera not in self.cameras:
                raise KeyError(f"unknown camera {camera!r}; cameras: {self.cameras}")
            dropped = camera in self._items
            if dropped:
                self.dropped[camera] += 1
            self._items[camera] = item
            self._cond.notify()
            return dropped

    def take(self, timeout: float | None = None) -> list[tuple[str, T]]:
        """Every waiting frame as `(camera, item)` in camera order, after waiting up to `timeout`
        seconds for the first; [] on timeout. Raises `SlotClosed` once closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return []
            if not self._items:
                raise SlotClosed("camera slots closed")
            batch = [(c, self._items[c]) for c in self.cameras if c in self._items]
            self._items.clear()
            return batch

    def clear(self) -> None:
        """Forget waiting frames (deactivation: a frame from before is never processed)."""
        with self._cond:
            self._items.clear()

    def close(self) -> None:
        """Wake the waiting `take`; later `put`s raise `SlotClosed`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def camera_names(topics: Sequence[str]) -> list[str]:
    """A short unique name per image topic, used as the prefix of that camera's outputs.

    ``/front/image_raw`` -> ``front``, ``/robot/left/image_rect`` -> ``robot_left``,
    ``/cam0`` -> ``cam0``; a topic with nothing left, or a name already taken, becomes
    ``camera<i>``.
    """
    names: list[str] = []
    for i, topic in enumerate(topics):
        parts = [p for p in topic.strip().split("/") if p]
        while len(parts) > 1 and parts[-1] in _STREAM_NAMES:
            parts.pop()
        name = re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts))
        if not name or name[0].isdigit() or name in names or name in _STREAM_NAMES:
            name = f"camera{i}"
        names.append(name)
    return names

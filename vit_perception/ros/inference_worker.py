"""The node's inference thread: loads the model, then serves the cameras' frames in batches.

The thread lives from configure to cleanup and does all of the process's torch work, the model
load included. PyTorch's CPU kernels run on GNU OpenMP, which gives every thread that starts
parallel work a thread pool of its own; with two such pools on a machine's cores libgomp stops
spinning between parallel regions, and a CPU forward pass took twice as long (28.8 ms against
14.9 ms for the tiny model) when the model was loaded in another thread.

No rclpy here: the node passes in what to load and what to do with a batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from vit_perception.ros.camera_slots import CameraSlots, SlotClosed


class InferenceWorker:
    """``start()`` runs ``load()`` in the thread and returns its result once loaded (re-raising
    its exception); the thread then calls ``serve(batch)`` with every batch of waiting frames,
    ``[(camera, item), ...]``, until ``stop()``. An exception out of ``serve`` goes to
    ``on_error`` and the thread carries on."""

    def __init__(self, cameras: Sequence[str], load: Callable[[], Any],
                 serve: Callable[[list[tuple[str, Any]]], None],
                 on_error: Callable[[BaseException], None]):
        self.slots: CameraSlots[Any] = CameraSlots(cameras)
        self._load, self._serve, self._on_error = load, serve, on_error
        self.loaded = threading.Event()
        self._failure: list[BaseException] = []
        self._result: Any = None
        self.thread = threading.Thread(target=self._run, name="inference", daemon=True)

    def start(self, wait: Callable[[threading.Event], Any] | None = None) -> Any:
        """Start the thread and wait for the load (``wait(event)`` may raise to give up)."""
        self.thread.start()
        if wait is None:
            self.loaded.wait()
        else:
            wait(self.loaded)
        if self._failure:
            self.stop()
            raise self._failure[0]
        return self._result

    def _run(self) -> None:
        try:
            self._result = self._load()
        except Exception as exc:  # noqa: BLE001 - handed to start(), which re-raises it
            self._failure.append(exc)
            return
        finally:
            self.loaded.set()
        while True:
            try:
                batch = self.slots.take(timeout=0.5)
            except SlotClosed:
                return
            if batch:
                try:
                    self._serve(batch)
                except Exception as exc:  # noqa: BLE001 - one bad batch never ends the thread
                    self._on_error(exc)

    def stop(self, timeout: float = 30.0) -> bool:
        """Close the slots and wait for the current batch to finish; True if the thread ended.
        A thread still loading is not waited for (a load cannot be interrupted)."""
        self.slots.close()
        if self.loaded.is_set() and self.thread.ident is not None:
            self.thread.join(timeout)
        return not self.thread.is_alive()

"""Ending the node cleanly on SIGINT/SIGTERM: exit code 0, no traceback, loading interruptible.

rclpy's own signal handler shuts the context down inside the signal, while the inference thread
may still be publishing ("publisher's context is invalid"), and Python's KeyboardInterrupt ends
the process with -2 (launch reports "process has died"). Here a signal only sets a flag; the
main thread spins in short steps, sees it, stops the worker, destroys the node and only then
shuts the context down.

    with ShutdownSignals() as signals:
        spin_until(executor, signals)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType


class LoadingInterrupted(RuntimeError):
    """A shutdown signal arrived while the model was loading."""


class ShutdownSignals:
    """SIGINT and SIGTERM set `requested` (and remember which signal) instead of raising."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.name = ""
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.name = self.name or signal.Signals(signum).name
        self.requested.set()

    def __enter__(self) -> ShutdownSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def wait_or_raise(self, done: threading.Event, step_s: float = 0.1) -> None:
        """Wait for `done`; raise `LoadingInterrupted` as soon as a signal is requested."""
        while not done.wait(step_s):
            if self.requested.is_set():
                raise LoadingInterrupted(f"{self.name or 'shutdown'} while loading the model")


def spin_until(executor, signals: ShutdownSignals, step_s: float = 0.1) -> None:
    """Run callbacks until a shutdown signal (the wait wakes every `step_s` to check)."""
    while not signals.requested.is_set():
        executor.spin_once(timeout_sec=step_s)


def exit_if_stuck(thread: threading.Thread | None, code: int = 0) -> None:
    """A thread still inside a model load cannot be stopped: leave at once (after the context
    is down and the logs are flushed) instead of tearing torch down under it."""
    if thread is not None and thread.is_alive():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

"""CPU-burning processes beside a benchmark: the other programs of a busy robot computer.

``with CpuBurners(n) as burners:`` starts ``n`` Python processes that each keep one core busy
and stops them on leaving the block, also on Ctrl-C or an error. A burner also ends by itself
when its parent is gone (killed with SIGKILL, which no ``finally`` survives), so none outlives
the benchmark.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import TracebackType

# Spins; every ~10 ms looks whether the parent that started it is still there.
_BURNER = """
import os, sys
parent = int(sys.argv[1])
while os.getppid() == parent:
    for _ in range(100_000):
        pass
"""


class CpuBurners:
    """``n`` busy processes (``pids``) for the duration of a ``with`` block."""

    def __init__(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"busy processes must be 0 or more, not {n}")
        self.n = n
        self.procs: list[subprocess.Popen] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self) -> CpuBurners:
        try:
            for _ in range(self.n):
                # own session: a Ctrl-C in the terminal reaches the benchmark, which stops us
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-c", _BURNER, str(os.getpid())], start_new_session=True,
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        self.procs = [p for p in self.procs if p.poll() is None]

    def __enter__(self) -> CpuBurners:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

"""CPU threads for inference on a machine shared with a camera driver, a planner and a map.

- ``default_threads()``: all physical cores but one (at least one), the default of the torch and
  ONNX Runtime runners on the CPU, so the camera driver keeps a core while the model runs.
- Idle threads must not spin: ONNX Runtime's ``allow_spinning`` is off in every session
  (``onnx_runner.session_options``), and ``shared_machine_wait_policy()`` sets
  ``OMP_WAIT_POLICY=PASSIVE`` for PyTorch's OpenMP pool. libgomp reads that variable once, when
  torch loads it, so it must run before ``import torch``: ``vit_perception.ros`` calls it on
  import, which comes before anything in the node imports torch. A value already in the
  environment wins (``OMP_WAIT_POLICY=ACTIVE perception_node`` on a machine of its own).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

WAIT_POLICY = "PASSIVE"


def physical_cores() -> int:
    """Physical CPU cores usable by this process (hyper-threads share a core's FP units, so they
    rarely help GEMMs; the affinity mask of a container or taskset bounds the count)."""
    try:
        cores = set()
        phys = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":")[1].strip()
            elif line.startswith("core id"):
                cores.add((phys, line.split(":")[1].strip()))
        n = len(cores)
    except OSError:
        n = 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(n or usable or 1, usable or 1))


def default_threads() -> int:
    """Inference threads when none are given: one core left to the camera driver."""
    return max(1, physical_cores() - 1)


def shared_machine_wait_policy() -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the environment has a value; returns the value
    in force. Without effect on a process that has already loaded torch (``torch_loaded``)."""
    return os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def torch_loaded() -> bool:
    return "torch" in sys.modules


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), to go with every speed figure."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

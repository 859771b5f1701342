"""``check_device("cuda:1")``: a device string the package can use, checked before any work.

``cpu`` and ``cuda[:N]`` are accepted; anything else (``tpu``, ``gpu``, a typo) is a
``UsageError`` (exit code 2), and a CUDA device on a machine without CUDA or with fewer GPUs is a
``RunnerError`` (exit code 1) saying what torch sees, instead of a driver traceback later.
"""

from __future__ import annotations

import torch

from vit_perception.errors import UsageError
from vit_perception.runtime.base import RunnerError

KINDS = ("cpu", "cuda")


def check_device(device: str | torch.device) -> torch.device:
    """The ``torch.device`` for ``device``; raises naming it when it cannot be used here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise UsageError(f"--device {device!r}: not a device; use cpu, cuda or cuda:N") from exc
    if dev.type not in KINDS:
        raise UsageError(f"--device {device!r}: not supported; use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA" if torch.version.cuda is None
                   else "no NVIDIA GPU or driver is visible")
            raise RunnerError(f"--device {device}: CUDA is not available ({why}, torch "
                              f"{torch.__version__}); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise RunnerError(f"--device {device}: this machine has {count} CUDA device(s) "
                              f"(cuda:0..cuda:{count - 1})")
    return dev

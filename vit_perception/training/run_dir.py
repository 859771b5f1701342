"""Who may write into a run folder: ``claim_run_dir(out, resume, overwrite)``, called by every
command that owns one (``train``, ``pretrain``, ``distill``) before anything is written.

A folder that already holds a run is refused unless ``--resume`` (continue it) or
``--overwrite`` (delete that run's files first, and only those); stale temporaries of an
interrupted checkpoint save are removed either way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vit_perception.errors import UsageError

# what a run writes (training/run.py and its subclasses); any of them marks a folder as a run.
# A command whose run writes more passes its own tuple (e.g. RUN_OUTPUTS + ("backbone.pt",)).
RUN_OUTPUTS = ("last.pt", "best.pt", "config.yaml", "metrics.jsonl", "metrics.csv",
               "steps.jsonl", "curves.png", "tb", "cache")


def _main_process() -> bool:
    """Under torchrun only rank 0 deletes anything (every rank makes the same checks)."""
    return int(os.environ.get("RANK", "0")) == 0


def claim_run_dir(out: str | Path, resume: bool = False, overwrite: bool = False,
                  outputs: tuple[str, ...] = RUN_OUTPUTS) -> Path:
    """Check that a run may be written to ``out``; returns it as a ``Path``.

    Raises ``UsageError`` (exit code 2) naming the folder when ``out`` holds a run and neither
    ``resume`` nor ``overwrite`` is given, when ``resume`` finds no ``last.pt``, when ``out`` is a
    file, or when both flags are given. With ``overwrite`` the files in ``outputs`` are deleted
    (nothing else in the folder is touched). ``.*.pt.*.tmp`` files left by a killed checkpoint
    save are removed.
    """
    from vit_perception.models.checkpoint import clean_stale_temporaries

    out = Path(out)
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other: --resume continues the run "
                         f"in {out}, --overwrite deletes it")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a run folder")
    found = [out / name for name in outputs if (out / name).exists()]
    if resume:
        if not (out / "last.pt").is_file():
            raise UsageError(f"--resume: {out / 'last.pt'} not found, so there is no run to "
                             f"continue in {out} (drop --resume to start one)")
    elif found and not overwrite:
        names = ", ".join([str(found[0]), *(p.name for p in found[1:])])
        raise UsageError(f"{out} already holds a run ({names}); "
                         "use --resume to continue it, --overwrite to replace it, or another "
                         "--out folder")
    elif found and _main_process():
        for path in found:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    if out.is_dir() and _main_process():
        clean_stale_temporaries(out)
    return out

"""Outputs that appear whole or not at all: write under a temporary name, rename on success.

    with staged_output("lab_predictions") as tmp:   # tmp: a path that does not exist yet
        write_bag(tmp)                               # any exception: tmp is deleted
    # here lab_predictions exists, complete

The temporary path sits in a hidden sibling folder (``.NAME.partial-XXXX/NAME``), so the rename is
atomic on one file system and a bag keeps its own name for its storage files. An interrupted
run leaves only such hidden folders; ``staged_output`` removes the stale ones of the same
``NAME`` before it starts.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def staged_output(final: str | Path, replace_empty_dir: bool = True) -> Iterator[Path]:
    """Yield a fresh path to write ``final`` at; it is renamed to ``final`` when the block ends
    without an exception and deleted when it raises (or is interrupted).

    ``final`` must not exist (``FileExistsError`` naming it), except as an empty folder when
    ``replace_empty_dir``.
    """
    final = Path(final)
    if final.exists() and not (replace_empty_dir and final.is_dir() and not any(final.iterdir())):
        raise FileExistsError(errno.EEXIST, "already exists; not overwriting it (remove it or "
                              "name another output)", str(final))
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{final.name}.partial-*"):
        _remove(stale)
    holder = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=parent))
    tmp = holder / final.name
    try:
        yield tmp
        if not tmp.exists():
            return
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        os.replace(tmp, final)
    finally:
        _remove(holder)

"""Run logs: ``metrics.jsonl`` / ``metrics.csv`` per epoch, ``steps.jsonl`` per logged step,
TensorBoard scalars in ``tb/``. On resume, rows past the resumed point are dropped first."""

from __future__ import annotations

import csv
import json
from pathlib import Path

EPOCH_FIELDS = ("minutes", "epoch", "step", "loss", "lr", "AP", "AP50", "AP75", "best")


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a ``.jsonl`` log ([] when absent), skipping a line cut by a kill."""
    if not Path(path).is_file():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _truncate_jsonl(path: Path, keep) -> list[dict]:
    if not path.is_file():
        return []
    rows = [row for row in read_jsonl(path) if keep(row)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


class RunLog:
    """Writes the logs of one run directory (rank 0 only)."""

    def __init__(self, out_dir: Path, resume_step: int | None = None, tensorboard: bool = True):
        self.dir = Path(out_dir)
        self.epochs_path = self.dir / "metrics.jsonl"
        self.steps_path = self.dir / "steps.jsonl"
        if resume_step is None:
            for p in (self.epochs_path, self.steps_path, self.dir / "metrics.csv"):
                p.unlink(missing_ok=True)
            self.epochs: list[dict] = []
        else:
            self.epochs = _truncate_jsonl(self.epochs_path, lambda r: r["step"] <= resume_step)
            _truncate_jsonl(self.steps_path, lambda r: r["step"] <= resume_step)
            self._write_csv()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.dir / "tb"), purge_step=resume_step)
            except ImportError:  # tensorboard not installed: the files still have it all
                self.tb = None

    def step(self, step: int, epoch: int, losses: dict[str, float], lr: float,
             minutes: float) -> None:
        row = {"step": step, "epoch": epoch, "minutes": round(minutes, 4), "lr": lr,
               **{k: round(v, 6) for k, v in losses.items()}}
        with open(self.steps_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in losses.items():
                self.tb.add_scalar(f"train/{k}", v, step)
            self.tb.add_scalar("train/lr", lr, step)

    def epoch(self, row: dict) -> None:
        self.epochs.append(row)
        with open(self.epochs_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._write_csv()
        if self.tb is not None:
            for k in ("loss", "AP", "AP50", "AP75"):
                if row.get(k) is not None:
                    self.tb.add_scalar(f"{'train' if k == 'loss' else 'val'}/epoch_{k}",
                                       row[k], row["step"])
            self.tb.flush()

    def _write_csv(self) -> None:
        with open(self.dir / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, EPOCH_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.epochs)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

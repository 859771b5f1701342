"""Validation on a schedule (steps, seconds, epochs) within a share of the training time, and
`train --profile` (whole step against compute-only step) on the CPU."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from vit_perception.cli import main
from vit_perception.config import load_config
from vit_perception.data.synth import write_synthetic_bag
from vit_perception.training import train
from vit_perception.training.eval_schedule import EvalSchedule

FAST = ["--set", "input.width=96", "--set", "input.height=64", "--set", "train.threads=1",
        "--set", "train.warmup_steps=0", "--set", "train.checkpoint_every_s=0"]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return str(write_synthetic_bag(tmp_path_factory.mktemp("bags") / "b", frames=8, seed=1,
                                   size=(160, 120), num_classes=2))


def test_schedule_by_steps_time_and_epochs():
    s = EvalSchedule(every_epochs=0, every_steps=5)
    assert [step for step in range(1, 13) if s.due_after_step(step, step * 1.0)
            and s.record(step, step * 1.0, 0.0) is None] == [5, 10]
    t = EvalSchedule(every_epochs=2, every_s=10.0)
    assert not t.due_after_step(3, 9.0) and t.due_after_step(4, 10.5)
    t.record(4, 10.5, 0.1)
    assert not t.due_after_step(5, 15.0) and t.due_after_step(9, 20.6)
    assert not t.due_at_epoch_end(1, 21.0) and t.due_at_epoch_end(2, 21.0)
    assert EvalSchedule.from_options({"eval_every": 1}).by_steps_or_time is False


def test_validation_share_is_kept():
    s = EvalSchedule(every_epochs=1, max_fraction=0.1)
    assert s.due_at_epoch_end(1, 2.0)  # the first always runs: its cost becomes known
    s.record(16, 2.0, 2.5)  # 2.5 s of validation after 2 s of training
    assert not s.due_at_epoch_end(2, 4.0)  # 2.5 + 2.5 > 0.1 * 4
    assert not s.due_at_epoch_end(30, 49.0)
    assert s.due_at_epoch_end(31, 50.0)  # 5.0 <= 0.1 * 50
    assert EvalSchedule(every_epochs=1).due_at_epoch_end(2, 0.1)  # no share: every epoch


def test_training_validates_every_n_steps(bag, tmp_path):
    cfg = load_config("vit_tiny_detr", {"input": {"width": 96, "height": 64}})
    cfg["train"].update(epochs=3, batch_size=2, samples_per_epoch=4, eval_every=0,
                        eval_every_steps=3, eval_max_fraction=0, threads=1, warmup_steps=0,
                        checkpoint_every_s=0)
    result = train(cfg, [bag], [bag], tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # 2 steps an epoch, no validation by epochs: after step 3 (a mid-epoch row), then the final
    # one after step 6 (not twice, though step 6 is also 3 steps after the last)
    assert [(r["step"], r["epoch"]) for r in rows] == [(3, 1.5), (6, 3.0)]
    assert result["steps"] == 6 and all("AP50" in r for r in rows)


def test_train_profile_prints_whole_and_compute_only_rates(bag, tmp_path, capsys):
    out = tmp_path / "not_written"
    assert main(["train", "--profile", "3", "--config", "vit_tiny_detr", "--train", bag,
                 "--val", bag, "--out", str(out), "--batch-size", "2", *FAST]) == 0
    text = capsys.readouterr().out
    whole = re.search(r"whole .*: ([0-9.]+) images/s", text)
    compute = re.search(r"compute only .*: ([0-9.]+) images/s", text)
    ratio = re.search(r"ratio whole / compute-only: ([0-9]+)%", text)
    assert whole and compute and ratio, text
    assert float(whole.group(1)) > 0 and float(compute.group(1)) > 0
    assert abs(int(ratio.group(1)) - 100 * float(whole.group(1)) / float(compute.group(1))) <= 1
    assert not out.exists()


def test_synthetic_frames_for_any_class_count():
    from vit_perception.training.profile import synthetic_samples

    samples = synthetic_samples(6, (64, 48), num_classes=12, seed=3)
    assert len(samples) == 6 and all(s.image.shape == (48, 64, 3) for s in samples)
    boxes = np.concatenate([s.boxes for s in samples])
    assert (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 48).all()
    assert (boxes[:, :2] < boxes[:, 2:]).all()
    labels = np.concatenate([s.labels for s in samples])
    assert labels.max() < 12 and len(set(labels.tolist())) > 3

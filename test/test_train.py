"""train: a few steps lower the loss; a run killed mid-epoch resumes onto the same loss curve;
corrupt --resume / --init files are reported with their path; outputs of a run directory."""

from __future__ import annotations

import json

import pytest
import torch

from ros_support.bags import train_val_bags
from vit_perception.cli import main
from vit_perception.config import load_config
from vit_perception.models.checkpoint import load_checkpoint
from vit_perception.training import StopTraining, train

FAST = {
    "input": {"width": 96, "height": 64},
    # one thread: on a shared 2-core machine two contended threads are several times slower
    "train": {"batch_size": 2, "warmup_steps": 0, "log_every_steps": 1, "ema_decay": 0.9,
              "checkpoint_every_s": 0, "seed": 3, "threads": 1},
}


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    return train_val_bags(tmp_path_factory.mktemp("bags"), 8, 4)


def _cfg(**train) -> dict:
    cfg = load_config("vit_tiny_detr", FAST)
    cfg["train"].update(train)
    return cfg


def _step_losses(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def test_few_steps_lower_the_loss(bags, tmp_path):
    # 4 frames repeated, no augmentation: the set loss must fall within a dozen steps
    cfg = _cfg(epochs=1, samples_per_epoch=16, lr=5e-4, batch_size=2,
               augment={"hflip": 0, "crop": 0, "zoom_out": 0, "photometric": 0})
    result = train(cfg, [bags[1]], [bags[1]], tmp_path / "run", progress=False)
    losses = _step_losses(tmp_path / "run")
    assert result["steps"] == 8 and sorted(losses) == list(range(1, 9))
    first, last = losses[1], sum(losses[s] for s in (7, 8)) / 2
    assert last < 0.9 * first, losses  # measured: 19.9 -> 16.0
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.jsonl", "metrics.csv",
                 "curves.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert any((tmp_path / "run" / "tb").iterdir())
    model, _, _, cfg_loaded, extra = load_checkpoint(tmp_path / "run" / "best.pt")
    assert cfg_loaded["classes"] == result["classes"] == ["green_ball", "red_cube"]
    assert "AP50" in extra["metrics"]
    # the loaded weights are the EMA weights the run evaluated
    x = torch.zeros(1, 3, 64, 96)
    assert model(x)["pred_boxes"].shape[::2] == (1, 4)


def test_killed_run_resumes_on_the_same_curve(bags, tmp_path):
    kwargs = {"epochs": 2, "samples_per_epoch": 4, "checkpoint_every_steps": 1}
    full = train(_cfg(**kwargs), [bags[0]], [bags[1]], tmp_path / "full", progress=False)
    assert full["steps"] == 4

    def kill_at_4(step, losses):  # dies in step 4; last.pt was written at step 3 (mid epoch 2)
        if step == 4:
            raise StopTraining("simulated kill")

    with pytest.raises(StopTraining):
        train(_cfg(**kwargs), [bags[0]], [bags[1]], tmp_path / "cut", progress=False,
              step_callback=kill_at_4)
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    trainer = state["extra"]["trainer"]
    assert (trainer["step"], trainer["epoch"], trainer["epoch_start"]) == (3, 1, 2)
    resumed = train(_cfg(**kwargs), [bags[0]], [bags[1]], tmp_path / "cut", resume=True,
                    progress=False)
    assert resumed["steps"] == 4
    a, b = _step_losses(tmp_path / "full"), _step_losses(tmp_path / "cut")
    assert sorted(a) == sorted(b) == list(range(1, 5))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-5), (step, a, b)
    assert resumed["metrics"]["AP"] == pytest.approx(full["metrics"]["AP"], abs=1e-6)
    epochs = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1.0, 2.0]


@pytest.mark.parametrize("flag", ["--resume", "--init"])
def test_corrupt_checkpoint_is_reported_with_its_path(bags, tmp_path, capsys, flag):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    bad = (run_dir if flag == "--resume" else tmp_path) / "last.pt"  # --init: not a run's file
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    argv = ["train", "--config", "vit_tiny_detr", "--train", bags[0], "--val", bags[1],
            "--out", str(run_dir), "--no-progress"]
    argv += ["--resume"] if flag == "--resume" else ["--init", str(bad)]
    assert main(argv) == 1  # a file that cannot be read (2 is for wrong arguments)
    err = capsys.readouterr().err
    assert str(bad) in err and "error" in err


def test_same_command_under_torchrun_trains_data_parallel(bags, tmp_path):
    """Two CPU processes (gloo): each takes half the frames, rank 0 alone writes the run."""
    import os
    import subprocess
    import sys

    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "vit_perception", "train", "--train", bags[0], "--val", bags[1],
           "--out", str(run_dir), "--epochs", "2", "--batch-size", "2", "--no-progress",
           "--set", "input.width=96", "--set", "input.height=64", "--set", "train.threads=1",
           "--set", "train.warmup_steps=0", "--set", "train.log_every_steps=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    # 8 frames, 2 ranks x batch 2: 2 steps an epoch (one process would take 4)
    assert summary["steps"] == 4 and summary["stopped"] == "epochs", summary
    assert sorted(_step_losses(run_dir)) == [1, 2, 3, 4]  # one row a step: rank 0 writes
    epochs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1.0, 2.0]
    model, *_ = load_checkpoint(run_dir / "last.pt")
    assert not any(k.startswith("module.") for k in model.state_dict())

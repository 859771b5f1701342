"""scripts/gpu_check: its CPU dry run (the same code as on a GPU, without OpenCV, rosbags,
matplotlib, onnx or rclpy) prints every kind of figure; a machine without torch is refused
with a message before anything runs."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BARE = "cv2,rosbags,matplotlib,onnx,onnxruntime,rclpy,tensorboard,skimage,apsw"


@pytest.fixture(autouse=True)
def _restore():
    from vit_perception.models.preprocess import have_opencv

    threads, modules = torch.get_num_threads(), dict(sys.modules)
    have_opencv.cache_clear()  # the dry run must find OpenCV missing, later tests present
    yield
    have_opencv.cache_clear()
    torch.set_num_threads(threads)
    for name in BARE.split(","):  # the dry run blocked these imports in this process
        if sys.modules.get(name, 0) is None:
            del sys.modules[name]
            if modules.get(name) is not None:
                sys.modules[name] = modules[name]


def test_cpu_dry_run_prints_every_figure(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--device", "cpu", "--quick",
                                      "--block", BARE])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "scripts" / "gpu_check.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    for line in ("fp32 eager", "bf16 autocast eager", "fp16 cast half graphs (default fp16): "
                 "n/a on cpu", "batch 2, fp16 cast half:", "detections only", "all outputs",
                 "2 frames in one batch", "training step, whole", "training step, compute only",
                 "ratio whole / compute-only", "training ratio, augmentation on the device:",
                 "augmentation on the device, ", "0 failed"):
        assert line in out, line


def test_shell_refuses_a_python_without_torch(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -S -I \"$@\"\n")  # no site-packages
    fake.chmod(0o755)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True,
                          text=True, env={**os.environ, "PYTHON": str(fake)}, timeout=60)
    assert proc.returncode == 2
    assert "lacks torch torchvision numpy yaml" in proc.stderr

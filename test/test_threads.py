"""CPU threads of the runners on a shared machine: a core left by default, no spinning."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from vit_perception.runtime.base import RunnerError
from vit_perception.runtime.loading import load_torch_model
from vit_perception.runtime.metadata import ModelMetadata, state_dict_hash
from vit_perception.runtime.onnx_export import export_onnx
from vit_perception.runtime.onnx_runner import OnnxRunner
from vit_perception.runtime.threads import default_threads, physical_cores
from vit_perception.runtime.torch_runner import TorchRunner


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, _post, cfg = load_torch_model("vit_tiny_detr", (64, 64))
    meta = ModelMetadata.from_config(cfg, state_dict_hash(net))
    path = export_onnx(net, tmp_path_factory.mktemp("t") / "t.onnx", meta.input_size,
                       metadata=meta)
    return net, path


def test_default_threads_leave_a_core():
    assert default_threads() == max(1, physical_cores() - 1)
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


def test_onnxruntime_threads_option(tiny):
    _net, path = tiny
    with OnnxRunner(path) as runner:
        assert runner.intra_op_threads == default_threads()
    with OnnxRunner(path, threads=1) as runner:
        assert runner.intra_op_threads == 1
        x = {"images": torch.zeros(1, 3, 64, 64)}
        assert runner.infer(x)["features"].shape[0] == 1
    with pytest.raises(RunnerError, match="threads"):
        OnnxRunner(path, threads=-1)


def test_torch_threads_set_on_activate_and_restored(tiny):
    net, _path = tiny
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with TorchRunner(net):  # default on the CPU: a core left
            assert torch.get_num_threads() == default_threads()
        assert torch.get_num_threads() == 2
        with TorchRunner(net, threads=1):
            assert torch.get_num_threads() == 1
        with TorchRunner(net, threads=0):  # 0: torch's own choice, untouched
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_ros_package_sets_the_wait_policy_before_torch_loads(given, expected):
    """libgomp reads OMP_WAIT_POLICY once, when torch loads it: importing vit_perception.ros
    (which the node does first) sets it without importing torch; a user's value wins."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = ("import os, sys, vit_perception.ros; "
            "print('torch' in sys.modules, os.environ['OMP_WAIT_POLICY'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["False", expected]

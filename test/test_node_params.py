"""The node's settings hand the backend options to Predictor.load only when set away from their
defaults, so a runner that lacks an option fails only where the user asked for it."""

from __future__ import annotations

import pytest


def test_runner_options_only_when_set():
    from ros_support.processes import require_ros

    require_ros()
    from vit_perception.ros.params import NodeSettings

    assert NodeSettings().runner_options() == {}  # threads 0, cuda_graphs on (CUDA), no compile
    s = NodeSettings(threads=4, cuda_graphs=False, compile=True)
    assert s.runner_options() == {"threads": 4, "cuda_graphs": False, "compile": True}


def test_runner_options_reach_the_runner(tmp_path):
    """cuda_graphs off and compile off on the CPU load; the torch runner records them."""
    from vit_perception.ros.params import NodeSettings
    from vit_perception.runtime.predictor import Predictor

    s = NodeSettings(model="vit_tiny_detr", cuda_graphs=False)
    with pytest.warns(UserWarning, match="random"):
        predictor = Predictor.load(s.model, backend=s.backend, device=s.device,
                                   **s.runner_options())
    assert predictor.runner.cuda_graphs is False and predictor.runner.compile is False
    predictor.close()

"""Test-wide setup: a ROS_DOMAIN_ID of our own per run, discovery on localhost, few threads."""

from __future__ import annotations

import os
import random

# Set before anything imports rclpy (child processes inherit it).
if "VIT_PERCEPTION_TEST_DOMAIN" not in os.environ:
    os.environ["VIT_PERCEPTION_TEST_DOMAIN"] = "1"
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(10, 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402

try:
    import torch

    torch.set_num_threads(2)
except ImportError:  # pragma: no cover - torch is a hard dependency
    pass


def pytest_report_header(config):
    return f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} (discovery on localhost)"


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """A TorchRunner left active sets torch's threads (cores but one by default): restore the
    count after each test so later tests in the process keep theirs."""
    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)

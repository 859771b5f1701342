"""Start ROS processes for tests: own process group, SIGINT restored, stopped as a group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from vit_perception.ros.replay import stop_node


def require_ros():
    """Import rclpy or skip; where VIT_PERCEPTION_REQUIRE_ROS=1 (CI) a missing ROS fails."""
    import pytest

    try:
        import rclpy  # noqa: F401

        from vit_perception.msg import FeatureMap  # noqa: F401
    except ImportError as exc:
        if os.environ.get("VIT_PERCEPTION_REQUIRE_ROS") == "1":
            raise
        pytest.skip(f"ROS 2 environment not available ({exc}); source env.sh")


def _restore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def ros_process(args: list[str], log_path: Path | None = None, env: dict | None = None):
    """Run ``python args...`` as its own process group; SIGINT then SIGKILL it on exit."""
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_restore_sigint,
        env={**os.environ, **(env or {})},
    )
    try:
        yield proc
    finally:
        stop_node(proc)
        if log_path:
            out.close()

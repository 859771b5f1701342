"""Feed frames to a perception_node process over real ROS 2 topics and collect its outputs.

Used by ``vit-perception demo`` (the node over a held-out bag's frames) and
``vit-perception bench-node`` (30 Hz camera load: latency, drops, overhead, memory).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ReplayResult:
    """What came back; with several cameras, `detections` and `latency_ms` are the first
    camera's and `cameras` holds each camera's (name -> (detections, latency_ms))."""

    detections: dict[int, list] = field(default_factory=dict)  # stamp_ns -> [(xyxy, name, score)]
    latency_ms: dict[int, float] = field(default_factory=dict)  # stamp_ns -> publish->detections
    sent: int = 0
    diagnostics: dict[str, str] = field(default_factory=dict)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB) of the node
    cameras: dict[str, tuple[dict[int, list], dict[int, float]]] = field(default_factory=dict)


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def start_node(params: dict[str, object], log_path: Path, env: dict | None = None):
    """Start perception_node in its own process group (stop with ``stop_node``)."""
    args = [sys.executable, "-m", "vit_perception.ros.perception_node", "--ros-args"]
    for key, value in params.items():
        args += ["-p", f"{key}:={value}"]
    return subprocess.Popen(args, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stop_node(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def replay(frames: Iterable[tuple[int, str, np.ndarray]], params: dict[str, object],
           log_path: Path, rate_hz: float = 0.0, settle_s: float = 3.0,
           memory_every_s: float = 0.0, startup_timeout_s: float = 120.0,
           cameras: int = 1) -> ReplayResult:
    """Publish ``(stamp_ns, frame_id, rgb)`` frames to a fresh node; collect detections.

    ``rate_hz`` 0: lock-step (each frame waits for its detections, nothing dropped); otherwise
    a camera-like fixed rate where the node drops what it cannot keep up with. ``cameras`` > 1:
    the node serves ``/cam<i>/image_raw`` (parameter ``image_topics``) and every frame goes to
    each camera at once (synchronised cameras: the node can batch them).
    """
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    from vit_perception.image_encodings import rgb_to_image_fields

    result = ReplayResult()
    published: dict[int, float] = {}
    names = [f"cam{i}" for i in range(cameras)] if cameras > 1 else ["camera"]
    for name in names:
        result.cameras[name] = ({}, {})
    result.detections, result.latency_ms = result.cameras[names[0]]
    if cameras > 1:
        params = {**params, "image_topics": "[" + ", ".join(f"/{n}/image_raw" for n in names)
                  + "]"}
    proc = start_node({"qos_reliability": "reliable", **params}, log_path)
    t_start = time.monotonic()
    try:
        with rclpy.init():
            node = Node("vit_perception_replay")
            qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
            pubs = [node.create_publisher(Image, f"/{n}/image_raw" if cameras > 1 else "image",
                                          qos) for n in names]

            def on_detections(msg, dets: dict, latency: dict):
                key = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                if key in published:
                    latency[key] = (time.monotonic() - published[key]) * 1e3
                dets[key] = [
                    ((d.bbox.center.position.x - d.bbox.size_x / 2,
                      d.bbox.center.position.y - d.bbox.size_y / 2,
                      d.bbox.center.position.x + d.bbox.size_x / 2,
                      d.bbox.center.position.y + d.bbox.size_y / 2),
                     d.results[0].hypothesis.class_id if d.results else "",
                     d.results[0].hypothesis.score if d.results else 0.0)
                    for d in msg.detections]

            def on_diag(msg):
                for status in msg.status:
                    if "perception_node" in status.name:
                        result.diagnostics = {kv.key: kv.value for kv in status.values}

            for n in names:
                node.create_subscription(
                    Detection2DArray, f"{n}/detections" if cameras > 1 else "detections",
                    lambda m, out=result.cameras[n]: on_detections(m, *out), 50)
            node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
            deadline = time.monotonic() + startup_timeout_s
            while not all(p.get_subscription_count() for p in pubs):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"perception_node did not start; see {log_path}")
                rclpy.spin_once(node, timeout_sec=0.1)
            next_memory = 0.0
            period = 1.0 / rate_hz if rate_hz > 0 else 0.0
            t_next = time.monotonic()
            for stamp_ns, frame_id, rgb in frames:
                msg = Image(**rgb_to_image_fields(rgb, "rgb8"))
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns),
                                                                        1_000_000_000)
                msg.header.frame_id = frame_id
                if period:
                    while time.monotonic() < t_next:
                        rclpy.spin_once(node, timeout_sec=max(0.0, t_next - time.monotonic()))
                    t_next += period
                published[int(stamp_ns)] = time.monotonic()
                for pub in pubs:
                    pub.publish(msg)
                result.sent += 1
                if not period:  # lock-step
                    wait_until = time.monotonic() + 30
                    while not all(int(stamp_ns) in d for d, _ in result.cameras.values()) \
                            and time.monotonic() < wait_until:
                        rclpy.spin_once(node, timeout_sec=0.05)
                else:
                    rclpy.spin_once(node, timeout_sec=0)
                now = time.monotonic() - t_start
                if memory_every_s and now >= next_memory:
                    result.rss_mb.append((now, rss_mb(proc.pid)))
                    next_memory = now + memory_every_s
            end = time.monotonic() + settle_s
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)
            if memory_every_s:
                result.rss_mb.append((time.monotonic() - t_start, rss_mb(proc.pid)))
            node.destroy_node()
    finally:
        stop_node(proc)
    return result

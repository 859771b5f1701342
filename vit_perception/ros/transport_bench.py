"""One-way DDS latency of camera-sized images between two processes (a talker and us).

Run by ``vit-perception bench-node`` with and without the shipped Fast DDS profile, to show what
the larger shared-memory segment buys for 640x480 rgb8 frames.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def talker(width: int, height: int, rate_hz: float, count: int, reliable: bool) -> None:
    """Publish ``count`` rgb8 frames stamped with the wall clock at publish time."""
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    with rclpy.init():
        node = Node("transport_bench_talker")
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        pub = node.create_publisher(Image, "transport_bench", qos)
        data = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8).tobytes()
        while pub.get_subscription_count() == 0:
            rclpy.spin_once(node, timeout_sec=0.05)
        time.sleep(1.0)
        for i in range(count):
            msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=data)
            msg.header.frame_id = str(i)
            ns = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
            pub.publish(msg)
            time.sleep(1.0 / rate_hz)
        time.sleep(1.0)


def measure(env: dict, width: int = 640, height: int = 480, rate_hz: float = 30.0,
            count: int = 150, reliable: bool = True) -> dict:
    """Start a talker process with ``env``; listen here; return latency figures in ms."""
    import os
    import subprocess

    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    latencies: list[float] = []
    proc = subprocess.Popen(
        [sys.executable, "-m", "vit_perception.ros.transport_bench", str(width), str(height),
         str(rate_hz), str(count), "1" if reliable else "0"],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with rclpy.init():
            node = Node("transport_bench_listener")
            qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE if reliable
                             else ReliabilityPolicy.BEST_EFFORT)

            def on_image(msg):
                sent = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                latencies.append((time.time_ns() - sent) / 1e6)

            node.create_subscription(Image, "transport_bench", on_image, qos)
            deadline = time.monotonic() + count / rate_hz + 30
            while proc.poll() is None and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.05)
            node.destroy_node()
    finally:
        proc.kill()
        proc.wait()
    arr = np.array(latencies) if latencies else np.array([np.nan])
    return {"median_ms": float(np.median(arr)), "p90_ms": float(np.percentile(arr, 90)),
            "received": len(latencies), "sent": count,
            "loss": 1.0 - len(latencies) / count}


if __name__ == "__main__":
    w, h, r, n, rel = sys.argv[1:6]
    talker(int(w), int(h), float(r), int(n), rel == "1")

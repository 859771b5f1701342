"""Publish a bag's camera topics over ROS 2 without rosbag2 (rosbags reads, rclpy publishes).

    vit-perception play lab_bag                 # recorded timing
    vit-perception play lab_bag --rate 0        # as fast as the node answers each image
    vit-perception play lab_bag --loop --rate 2 --topics /camera/image_raw

rosbag2 messages are CDR already and go out as they were recorded (raw bytes, stamps and all);
ROS 1 bags are converted to CDR first. `rate` 0 is lock-step: after each image the player waits
for a message with that image's header stamp on `wait_topic` (the node's detections), so no
frame is dropped however slow the node is.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from vit_perception.ros.shutdown import ShutdownSignals

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
DEFAULT_TYPES = (*IMAGE_TYPES, "sensor_msgs/msg/CameraInfo",
                 "vision_msgs/msg/Detection2DArray")


class PlayError(ValueError):
    """The bag or the topics asked for cannot be played; the message names them."""


@dataclass
class PlayStats:
    published: dict[str, int] = field(default_factory=dict)  # topic -> messages
    unanswered: int = 0  # lock-step images without an answer within the timeout
    loops: int = 0
    interrupted: str = ""  # the signal that ended playback early


def message_class(msgtype: str):
    """The rclpy message class of a ROS 2 type name (``sensor_msgs/msg/Image``)."""
    pkg, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise PlayError(f"message type {msgtype} is not available in this ROS environment "
                        f"({exc})") from None


def _stamp_key(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def choose_topics(available: dict[str, str], topics: Sequence[str] | None) -> dict[str, str]:
    """{topic: type} to play: the given topics (each must be in the bag), else every image,
    camera_info and Detection2DArray (labels) topic."""
    if topics:
        missing = [t for t in topics if t not in available]
        if missing:
            raise PlayError(f"topics {missing} are not in the bag; it has "
                            f"{sorted(available)}")
        return {t: available[t] for t in topics}
    chosen = {t: k for t, k in available.items() if k in DEFAULT_TYPES}
    if not any(k in IMAGE_TYPES for k in chosen.values()):
        raise PlayError(f"no image topic in the bag; it has {available}")
    return chosen


def play(bag: str | Path, topics: Sequence[str] | None = None, rate: float = 1.0,
         loop: bool = False, wait_topic: str = "/detections", answer_timeout_s: float = 10.0,
         wait_subscribers_s: float = 10.0, log=print) -> PlayStats:
    """Publish `bag`'s topics until the end (or forever with `loop`, or a SIGINT/SIGTERM)."""
    from rosbags.highlevel import AnyReader

    from vit_perception.data.msg_defs import typestore

    path = Path(bag)
    if not path.exists():
        raise FileNotFoundError(f"bag not found: {path}")
    if rate < 0:
        raise PlayError(f"--rate must be >= 0 (0: lock-step), got {rate}")
    store = typestore()
    stats = PlayStats()
    with ShutdownSignals() as signals, \
            rclpy.init(signal_handler_options=SignalHandlerOptions.NO):
        node = rclpy.create_node("vit_perception_player")
        try:
            with AnyReader([path], default_typestore=store) as reader:
                chosen = choose_topics({c.topic: c.msgtype for c in reader.connections}, topics)
                qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
                pubs = {t: node.create_publisher(message_class(k), t, qos)
                        for t, k in chosen.items()}
                answers: set[tuple[int, int]] = set()
                ready = [p.get_subscription_count for t, p in pubs.items()
                         if chosen[t] in IMAGE_TYPES]
                if rate == 0:
                    sub = node.create_subscription(
                        message_class("vision_msgs/msg/Detection2DArray"), wait_topic,
                        lambda m: answers.add(_stamp_key(m)),
                        QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
                    ready.append(sub.get_publisher_count)
                deadline = time.monotonic() + wait_subscribers_s
                while not all(count() for count in ready) \
                        and time.monotonic() < deadline and not signals.requested.is_set():
                    rclpy.spin_once(node, timeout_sec=0.05)
                log(f"playing {path}: {', '.join(sorted(chosen))} "
                    f"({'lock-step on ' + wait_topic if rate == 0 else f'rate {rate:g}'})")
                conns = [c for c in reader.connections if c.topic in chosen]
                while not signals.requested.is_set():
                    _play_once(reader, conns, pubs, node, rate, answers, answer_timeout_s,
                               signals, stats)
                    stats.loops += 1
                    if not loop:
                        break
                # let reliable writers hand their last messages over before the node goes
                end = time.monotonic() + 0.5
                while time.monotonic() < end and not signals.requested.is_set():
                    rclpy.spin_once(node, timeout_sec=0.05)
        finally:
            node.destroy_node()
        stats.interrupted = signals.name
    return stats


def _play_once(reader, conns, pubs, node, rate, answers, answer_timeout_s, signals,
               stats: PlayStats) -> None:
    start_wall, start_log = time.monotonic(), None
    for conn, log_ns, raw in reader.messages(connections=conns):
        if signals.requested.is_set():
            return
        if rate > 0:
            start_log = log_ns if start_log is None else start_log
            due = start_wall + (log_ns - start_log) * 1e-9 / rate
            while time.monotonic() < due and not signals.requested.is_set():
                rclpy.spin_once(node, timeout_sec=min(0.05, max(0.0, due - time.monotonic())))
        data = bytes(raw) if reader.is2 else bytes(reader.typestore.serialize_cdr(
            reader.deserialize(raw, conn.msgtype), conn.msgtype))
        pubs[conn.topic].publish(data)
        stats.published[conn.topic] = stats.published.get(conn.topic, 0) + 1
        if rate == 0 and conn.msgtype in IMAGE_TYPES:
            msg = reader.deserialize(raw, conn.msgtype)
            key = (int(msg.header.stamp.sec), int(msg.header.stamp.nanosec))
            deadline = time.monotonic() + answer_timeout_s
            while key not in answers and time.monotonic() < deadline \
                    and not signals.requested.is_set():
                rclpy.spin_once(node, timeout_sec=0.05)
            if key not in answers:
                stats.unanswered += 1
        else:
            rclpy.spin_once(node, timeout_sec=0)

"""Record topics into a rosbag2 bag without rosbag2 (rclpy subscribes raw, rosbags writes).

    vit-perception record preds_bag                      # the node's /detections
    vit-perception record preds_bag --topics /detections /vision_info /features

Each topic is subscribed once it appears on the graph, with its publishers' reliability and
durability (so latched /vision_info arrives too); messages are written as the CDR bytes that
arrived, with their receive time, until SIGINT/SIGTERM or `duration_s`. The bag then closes
normally and `vit-perception eval --predictions-topic` (or `ros2 bag play`) reads it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from vit_perception.ros.bag_play import message_class
from vit_perception.ros.shutdown import ShutdownSignals

DEFAULT_TOPICS = ("/detections",)


class RecordError(ValueError):
    """A topic cannot be recorded (its type is unknown to rosbags); the message names it."""


@dataclass
class RecordStats:
    messages: dict[str, int] = field(default_factory=dict)  # topic -> messages written
    types: dict[str, str] = field(default_factory=dict)  # topic -> type
    interrupted: str = ""


def _package_msg_dirs() -> list[Path]:
    """Where vit_perception's own .msg files are: the installed share folder, the source tree."""
    dirs = [Path(__file__).resolve().parents[2] / "msg"]
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.insert(0, Path(get_package_share_directory("vit_perception")) / "msg")
    except Exception:  # noqa: BLE001 - not installed with colcon: the source tree only
        pass
    return dirs


def ensure_type(store, msgtype: str) -> None:
    """Make `msgtype` known to the rosbags type store (vit_perception's own from .msg files)."""
    if msgtype in store.fielddefs:
        return
    pkg, _, name = msgtype.split("/")
    if pkg == "vit_perception":
        from rosbags.typesys import get_types_from_msg

        for folder in _package_msg_dirs():
            path = folder / f"{name}.msg"
            if path.is_file():
                store.register(get_types_from_msg(path.read_text(), msgtype))
                return
    raise RecordError(f"cannot record type {msgtype}: rosbags does not know it")


def _qos_for(node, topic: str) -> QoSProfile:
    infos = node.get_publishers_info_by_topic(topic)
    reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
    latched = bool(infos) and all(
        i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    return QoSProfile(depth=100,
                      reliability=ReliabilityPolicy.RELIABLE if reliable
                      else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched
                      else DurabilityPolicy.VOLATILE)


def record(out: str | Path, topics: Sequence[str] = DEFAULT_TOPICS, storage: str = "mcap",
           duration_s: float = 0.0, log=print) -> RecordStats:
    """Record `topics` into the new bag `out` until a signal (or `duration_s` > 0 passes)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from vit_perception.data.msg_defs import typestore

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"output bag exists: {out}")
    if storage not in ("mcap", "sqlite3"):
        raise RecordError(f"storage must be mcap or sqlite3, got {storage!r}")
    topics = [t if t.startswith("/") else f"/{t}" for t in topics]
    store = typestore()
    stats = RecordStats()
    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap"
                    else StoragePlugin.SQLITE3)
    writer.open()
    with ShutdownSignals() as signals, \
            rclpy.init(signal_handler_options=SignalHandlerOptions.NO):
        node = rclpy.create_node("vit_perception_recorder")
        try:
            pending = list(topics)
            unmatched: dict[str, object] = {}  # topic -> subscription without a publisher yet
            log(f"recording {', '.join(topics)} into {out} (Ctrl-C to stop)")
            end = time.monotonic() + duration_s if duration_s > 0 else float("inf")
            while not signals.requested.is_set() and time.monotonic() < end:
                if pending:
                    pending = _subscribe_new(node, pending, store, writer, stats, unmatched)
                for topic, sub in list(unmatched.items()):
                    if sub.get_publisher_count() > 0:  # type: ignore[attr-defined]
                        log(f"connected: {topic} ({stats.types[topic]})")
                        del unmatched[topic]
                rclpy.spin_once(node, timeout_sec=0.05)
        finally:
            node.destroy_node()
            writer.close()
        stats.interrupted = signals.name
    return stats


def _subscribe_new(node, pending: list[str], store, writer, stats: RecordStats,
                   subs: dict[str, object]) -> list[str]:
    """Subscribe to the pending topics that now have a type on the graph; the rest."""
    graph = dict(node.get_topic_names_and_types())
    still = []
    for topic in pending:
        kinds = graph.get(topic)
        if not kinds:
            still.append(topic)
            continue
        msgtype = kinds[0]
        ensure_type(store, msgtype)
        conn = writer.add_connection(topic, msgtype, typestore=store)
        stats.types[topic], stats.messages[topic] = msgtype, 0

        def write(data: bytes, conn=conn, topic=topic) -> None:
            writer.write(conn, time.time_ns(), data)
            stats.messages[topic] += 1

        subs[topic] = node.create_subscription(message_class(msgtype), topic, write,
                                               _qos_for(node, topic), raw=True)
    return still

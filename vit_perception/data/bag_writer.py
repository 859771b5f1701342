"""Write images and vision_msgs/Detection2DArray into rosbag2 bags (mcap or sqlite3) with rosbags.

    with BagWriter("out_bag", storage="mcap") as bag:
        bag.write_image("/camera/image_raw", stamp_ns, "camera_optical_frame", rgb)
        bag.write_detections("/labels", stamp_ns, "camera_optical_frame", boxes, names)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vit_perception.data.msg_defs import COMPRESSED_IMAGE, DETECTION2D_ARRAY, IMAGE, VISION_INFO
from vit_perception.data.msg_defs import typestore as _typestore

STORAGES = ("mcap", "sqlite3")


def _header(store, stamp_ns: int, frame_id: str):
    t = store.types
    stamp = t["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000),
                                             nanosec=int(stamp_ns % 1_000_000_000))
    return t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = "rgb8", store=None):
    """A sensor_msgs/Image (rosbags message object) from an `[H, W, 3]` uint8 RGB frame."""
    from vit_perception.image_encodings import rgb_to_image_fields

    store = store or _typestore()
    fields = rgb_to_image_fields(rgb, encoding)
    fields["data"] = np.frombuffer(fields["data"], np.uint8)
    return store.types[IMAGE](header=_header(store, stamp_ns, frame_id), **fields)


def compressed_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = "jpeg",
                         quality: int = 90, store=None):
    """A sensor_msgs/CompressedImage (JPEG or PNG) from an RGB frame."""
    from vit_perception.image_encodings import rgb_to_compressed

    store = store or _typestore()
    format_, data = rgb_to_compressed(rgb, fmt, quality)
    return store.types[COMPRESSED_IMAGE](header=_header(store, stamp_ns, frame_id),
                                         format=format_, data=np.frombuffer(data, np.uint8))


def detections_msg(boxes, class_names: Sequence[str], stamp_ns: int, frame_id: str,
                   scores=None, store=None):
    """A vision_msgs/Detection2DArray: one Detection2D per `xyxy` pixel box, one hypothesis each.

    bbox.center is the box centre and size_x/size_y its width/height, in pixels. `scores`
    default to 1.0 (ground truth).
    """
    store = store or _typestore()
    t = store.types
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(class_names) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(class_names)} class names")
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64)
    header = _header(store, stamp_ns, frame_id)
    pose = t["geometry_msgs/msg/PoseWithCovariance"](
        pose=t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
            orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        ),
        covariance=np.zeros(36, np.float64),
    )
    detections = []
    for (x1, y1, x2, y2), name, score in zip(boxes, class_names, scores):
        hyp = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=str(name),
                                                             score=float(score)),
            pose=pose,
        )
        bbox = t["vision_msgs/msg/BoundingBox2D"](
            center=t["vision_msgs/msg/Pose2D"](
                position=t["vision_msgs/msg/Point2D"](x=float(x1 + x2) / 2, y=float(y1 + y2) / 2),
                theta=0.0,
            ),
            size_x=float(x2 - x1),
            size_y=float(y2 - y1),
        )
        detections.append(t["vision_msgs/msg/Detection2D"](header=header, results=[hyp],
                                                           bbox=bbox, id=""))
    return t[DETECTION2D_ARRAY](header=header, detections=detections)


class BagWriter:
    """A rosbag2 writer (rosbags, metadata version 9) for images and detections.

    `path` is the bag directory to create (it must not exist). Topics are added on first write.
    """

    def __init__(self, path: str | Path, storage: str = "mcap", store=None):
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        self.store = store or _typestore()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._connections: dict[str, object] = {}

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def open(self) -> None:
        self._writer.open()

    def close(self) -> None:
        self._writer.close()

    def write(self, topic: str, msgtype: str, msg, stamp_ns: int) -> None:
        """Serialise and write one message (receive time `stamp_ns`)."""
        self.write_raw(topic, msgtype, self.store.serialize_cdr(msg, msgtype), stamp_ns)

    def write_raw(self, topic: str, msgtype: str, data: bytes, stamp_ns: int) -> None:
        """Write one message already serialised as CDR (e.g. copied from another bag)."""
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.store)
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise ValueError(f"topic {topic} has type {conn.msgtype}, not {msgtype}")
        self._writer.write(conn, int(stamp_ns), data)

    def write_image(self, topic: str, stamp_ns: int, frame_id: str, rgb: np.ndarray,
                    compressed: bool = False, fmt: str = "jpeg", quality: int = 90) -> None:
        """An RGB frame as sensor_msgs/Image (rgb8) or, if `compressed`, CompressedImage."""
        if compressed:
            msg = compressed_image_msg(rgb, stamp_ns, frame_id, fmt, quality, self.store)
            self.write(topic, COMPRESSED_IMAGE, msg, stamp_ns)
        else:
            self.write(topic, IMAGE, image_msg(rgb, stamp_ns, frame_id, store=self.store),
                       stamp_ns)

    def write_detections(self, topic: str, stamp_ns: int, frame_id: str, boxes,
                         class_names: Sequence[str], scores=None,
                         receive_ns: int | None = None) -> None:
        """Boxes (xyxy px) as a vision_msgs/Detection2DArray with header stamp `stamp_ns`."""
        msg = detections_msg(boxes, class_names, stamp_ns, frame_id, scores, self.store)
        self.write(topic, DETECTION2D_ARRAY, msg, stamp_ns if receive_ns is None else receive_ns)

    def write_vision_info(self, topic: str, stamp_ns: int, frame_id: str, method: str,
                          database_location: str = "", database_version: int = 0) -> None:
        """A vision_msgs/VisionInfo (e.g. the class list's location)."""
        msg = self.store.types[VISION_INFO](
            header=_header(self.store, stamp_ns, frame_id), method=method,
            database_location=database_location, database_version=int(database_version))
        self.write(topic, VISION_INFO, msg, stamp_ns)

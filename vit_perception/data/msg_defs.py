"""vision_msgs (ROS 2, version 4 layout) message definitions for the rosbags type store.

The text below is the field layout of the real ``vision_msgs`` package, so the RIHS01 type hashes
rosbags computes equal rosidl's and bags written here play on a robot (and the reverse).
"""

from __future__ import annotations

from functools import lru_cache

VISION_MSGS: dict[str, str] = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": (
        "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n"
    ),
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\n"
        "vision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\n"
        "string id\n"
    ),
    "vision_msgs/msg/Detection2DArray": (
        "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n"
    ),
    "vision_msgs/msg/VisionInfo": (
        "std_msgs/Header header\n"
        "string method\n"
        "string database_location\n"
        "int32 database_version\n"
    ),
}

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
DETECTION2D_ARRAY = "vision_msgs/msg/Detection2DArray"
VISION_INFO = "vision_msgs/msg/VisionInfo"


def _base_store():
    from rosbags.typesys import Stores, get_typestore

    store = getattr(Stores, "ROS2_KILTED", None) or Stores.LATEST
    return get_typestore(store)


@lru_cache(maxsize=1)
def typestore():
    """The ROS 2 (Kilted, or rosbags' latest) type store with vision_msgs registered."""
    from rosbags.typesys import get_types_from_msg

    store = _base_store()
    types: dict = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def register(store) -> None:
    """Register the vision_msgs types into another rosbags type store (if missing)."""
    from rosbags.typesys import get_types_from_msg

    types: dict = {}
    for name, text in VISION_MSGS.items():
        if name not in store.fielddefs:
            types.update(get_types_from_msg(text, name))
    if types:
        store.register(types)

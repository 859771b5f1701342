"""Two real processes over DDS: sensor_msgs/Image and our FeatureMap arrive intact."""

import time
from pathlib import Path

import numpy as np
import pytest

from ros_support.processes import require_ros, ros_process

pytestmark = pytest.mark.ros
HERE = Path(__file__).parent


def test_image_and_feature_map_cross_processes_intact(tmp_path):
    require_ros()
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from ros_support.talker import known_features, known_image
    from vit_perception.msg import FeatureMap

    images, features = [], []
    with ros_process([str(HERE / "ros_support" / "talker.py")], tmp_path / "talker.log"):
        with rclpy.init():
            node = Node("dds_test_listener")
            node.create_subscription(Image, "camera/image_raw", images.append,
                                     qos_profile_sensor_data)
            node.create_subscription(FeatureMap, "features", features.append, 10)
            deadline = time.monotonic() + 30
            while (len(images) < 5 or len(features) < 5) and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.1)
            node.destroy_node()
    assert len(images) >= 5, (tmp_path / "talker.log").read_text()
    assert len(features) >= 5
    for img in images:
        seq = img.header.stamp.sec - 1000
        assert img.header.stamp.nanosec == 500
        assert img.header.frame_id == "camera_optical_frame"
        assert (img.height, img.width, img.encoding, img.step) == (480, 640, "rgb8", 1920)
        got = np.frombuffer(img.data, np.uint8).reshape(480, 640, 3)
        np.testing.assert_array_equal(got, known_image(seq))
    for fm in features:
        seq = fm.header.stamp.sec - 1000
        assert (fm.height, fm.width, fm.channels, fm.dtype, fm.layout) == (8, 6, 4, "float32",
                                                                          "HWC")
        got = np.frombuffer(fm.data, np.float32).reshape(fm.height, fm.width, fm.channels)
        np.testing.assert_array_equal(got, known_features(seq))
        assert list(fm.embedding) == [float(seq), 1.5]

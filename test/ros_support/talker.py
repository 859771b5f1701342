"""A second process for the DDS test: publishes known Image and FeatureMap messages at 20 Hz."""

import sys

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image

from vit_perception.msg import FeatureMap


def known_image(seq: int) -> np.ndarray:
    """A deterministic 480x640x3 pattern the receiver can recompute from the stamp."""
    yy, xx = np.mgrid[0:480, 0:640]
    return ((xx + 3 * yy + 7 * seq)[..., None] * np.array([1, 2, 5])).astype(np.uint8)


def known_features(seq: int) -> np.ndarray:
    return (np.arange(8 * 6 * 4, dtype=np.float32).reshape(8, 6, 4) + seq) / 7.0


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with rclpy.init():
        node = Node("dds_test_talker")
        image_pub = node.create_publisher(Image, "camera/image_raw", 10)
        feat_pub = node.create_publisher(FeatureMap, "features", 10)
        state = {"seq": 0}

        def tick():
            seq = state["seq"]
            if seq >= count:
                return
            img = Image()
            img.header.stamp.sec, img.header.stamp.nanosec = 1000 + seq, 500
            img.header.frame_id = "camera_optical_frame"
            img.height, img.width, img.encoding, img.step = 480, 640, "rgb8", 640 * 3
            img.data = known_image(seq).tobytes()
            image_pub.publish(img)
            fm = FeatureMap()
            fm.header = img.header
            fm.model_id = "test"
            fm.height, fm.width, fm.channels = 8, 6, 4
            fm.dtype, fm.layout = FeatureMap.DTYPE_FLOAT32, FeatureMap.LAYOUT_HWC
            fm.stride_x = fm.stride_y = 16.0
            fm.embedding = [float(seq), 1.5]
            fm.data = known_features(seq).tobytes()
            feat_pub.publish(fm)
            state["seq"] += 1

        node.create_timer(0.05, tick)
        try:
            rclpy.spin(node)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass


if __name__ == "__main__":
    main()

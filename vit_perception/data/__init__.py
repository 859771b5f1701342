"""Rosbag I/O (through the ``rosbags`` library, no rclpy), synthetic bags and COCO import/export."""

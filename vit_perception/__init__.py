"""vit_perception: ViT/Swin + DETR detection and DINO features for ROS 2.

In a ROS 2 install this file is replaced by the one rosidl writes for the messages, so it holds
nothing the package needs; it only lets the messages built by colcon (another directory named
``vit_perception`` on the path) be imported beside this source tree.
"""
__path__ = __import__("pkgutil").extend_path(__path__, __name__)  # noqa: F821

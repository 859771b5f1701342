"""Everything that imports rclpy or ROS messages lives in this subpackage."""

from vit_perception.runtime.threads import shared_machine_wait_policy

# Before anything here imports torch (libgomp reads it once): idle OpenMP threads sleep rather
# than spin, leaving the cores to the camera driver (see runtime/threads.py).
shared_machine_wait_policy()

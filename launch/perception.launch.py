"""Launch the perception node on one camera.

    ros2 launch vit_perception perception.launch.py camera_topic:=/camera/image_raw
    ros2 launch vit_perception perception.launch.py namespace:=front camera_topic:=/front/image_raw

Several cameras: one launch per camera, each in its own namespace. The Fast DDS profile with a
large shared-memory segment (config/fastdds_profile.xml) is selected for the node unless
FASTDDS_DEFAULT_PROFILES_FILE is already set; start the camera driver with the same profile.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode


def generate_launch_description():
    share = get_package_share_directory("vit_perception")
    default_params = os.path.join(share, "config", "perception.yaml")
    profile = os.environ.get(
        "FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(share, "config", "fastdds_profile.xml")
    )
    return LaunchDescription([
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="sensor_msgs/Image (or CompressedImage) topic"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="node parameters (see config/perception.yaml)"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the outputs (one per camera)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (bag replay)"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", profile),
        LifecycleNode(
            package="vit_perception",
            executable="perception_node",
            name="perception_node",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"),
                        {"use_sim_time": LaunchConfiguration("use_sim_time")}],
            remappings=[("image", LaunchConfiguration("camera_topic"))],
            output="screen",
        ),
    ])

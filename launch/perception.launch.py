"""Launch the perception node on one camera (or several, batched: image_topics).

    ros2 launch vit_perception perception.launch.py camera_topic:=/camera/image_raw
    ros2 launch vit_perception perception.launch.py namespace:=front \
        camera_topic:=/front/image_raw model:=runs/lab/best.pt device:=cuda precision:=fp16
    ros2 launch vit_perception perception.launch.py \
        image_topics:="[/front/image_raw, /rear/image_raw]"
    ros2 launch vit_perception perception.launch.py --show-args

Node arguments (model, backend, device, precision, compressed, autostart, score_threshold, ...)
override the params file when given and keep its value when left empty. The Fast DDS profile
with a large shared-memory segment (config/fastdds_profile.xml) is selected for the node unless
FASTDDS_DEFAULT_PROFILES_FILE is already set; start the camera driver with the same profile.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from vit_perception.ros.launch_args import NODE_ARGUMENTS, UNSET_NOTE, node_overrides


def launch_node(context):
    overrides = node_overrides({name: LaunchConfiguration(name).perform(context)
                                for name in NODE_ARGUMENTS})
    sim_time = LaunchConfiguration("use_sim_time").perform(context)
    overrides["use_sim_time"] = sim_time.strip().lower() == "true"
    return [LifecycleNode(
        package="vit_perception",
        executable="perception_node",
        name="perception_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[("image", LaunchConfiguration("camera_topic"))],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
        output="screen",
    )]


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
                              description="namespace of the node and its outputs"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (bag replay)"),
        DeclareLaunchArgument("log_level", default_value="info",
                              description="debug | info | warn | error"),
        *[DeclareLaunchArgument(name, default_value="", description=text + UNSET_NOTE)
          for name, (_, text) in NODE_ARGUMENTS.items()],
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", profile),
        OpaqueFunction(function=launch_node),
    ])

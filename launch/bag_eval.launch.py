"""Replay a bag through the live node and record its outputs, for evaluation on a robot.

    ros2 launch vit_perception bag_eval.launch.py bag:=lab.mcap out:=lab_predictions \
        model:=runs/lab/best.pt
    vit-perception eval --bag lab.mcap --predictions-topic /detections \
        --predictions-bag lab_predictions

Needs `ros2 bag` with the mcap storage plugin (ros-$ROS_DISTRO-rosbag2 and
ros-$ROS_DISTRO-rosbag2-storage-mcap). Without rosbag2: `vit-perception play` and
`vit-perception record` do the same (see the README).

Plays the bag with /clock, runs the node with use_sim_time, and records detections (with the
input images' stamps) into `out`; the launch ends when the bag has been played.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from vit_perception.ros.launch_args import NODE_ARGUMENTS, UNSET_NOTE, node_overrides


def launch_node(context):
    overrides = node_overrides({name: LaunchConfiguration(name).perform(context)
                                for name in NODE_ARGUMENTS})
    return [LifecycleNode(
        package="vit_perception",
        executable="perception_node",
        name="perception_node",
        namespace="",
        parameters=[LaunchConfiguration("params_file"), {**overrides, "use_sim_time": True}],
        remappings=[("image", "/camera/image_raw")],
        output="screen",
    )]


def generate_launch_description():
    share = get_package_share_directory("vit_perception")
    bag = LaunchConfiguration("bag")
    play = ExecuteProcess(
        cmd=["ros2", "bag", "play", bag, "--clock", "--rate", LaunchConfiguration("rate"),
             "--delay", "2.0"],
        output="screen",
    )
    record = ExecuteProcess(
        cmd=["ros2", "bag", "record", "-o", LaunchConfiguration("out"), "/detections",
             "/camera/image_raw", "/labels"],
        output="screen",
    )
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="input bag (images on /camera/image_raw)"),
        DeclareLaunchArgument("out", default_value="predictions_bag",
                              description="output bag with /detections"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("params_file",
                              default_value=os.path.join(share, "config", "perception.yaml"),
                              description="node parameters (see config/perception.yaml)"),
        *[DeclareLaunchArgument(name, default_value="", description=text + UNSET_NOTE)
          for name, (_, text) in NODE_ARGUMENTS.items()],
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               os.path.join(share, "config", "fastdds_profile.xml")),
        OpaqueFunction(function=launch_node),
        record,
        play,
        RegisterEventHandler(OnProcessExit(target_action=play,
                                           on_exit=[EmitEvent(event=Shutdown())])),
    ])

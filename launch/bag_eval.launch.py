"""Replay a bag through the live node and record its outputs, for evaluation on a robot.

    ros2 launch vit_perception bag_eval.launch.py bag:=lab.mcap out:=lab_predictions
    vit-perception eval --bag lab_predictions --predictions-topic /detections \
        --label-bags lab.mcap

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
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode


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
                              default_value=os.path.join(share, "config", "perception.yaml")),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               os.path.join(share, "config", "fastdds_profile.xml")),
        LifecycleNode(
            package="vit_perception",
            executable="perception_node",
            name="perception_node",
            namespace="",
            parameters=[LaunchConfiguration("params_file"), {"use_sim_time": True}],
            remappings=[("image", "/camera/image_raw")],
            output="screen",
        ),
        record,
        play,
        RegisterEventHandler(OnProcessExit(target_action=play,
                                           on_exit=[EmitEvent(event=Shutdown())])),
    ])

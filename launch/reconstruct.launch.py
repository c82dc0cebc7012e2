"""ros2 launch da3_ros reconstruct.launch.py image:=/camera/color/image_raw camera_info:=/camera/color/camera_info

Arguments (all optional):
  weights      official DA3 checkpoint folder (model.safetensors + config.json) or ours; '' = embedded default
  variant      variant name when the checkpoint has no config.json
  image        input image topic (remapped onto the node's 'image'; '<image>/compressed' with use_compressed)
  camera_info  input CameraInfo topic
  use_compressed  subscribe to sensor_msgs/CompressedImage
  config       parameter file (default: share/da3_ros/config/reconstruct.yaml)
  use_sim_time use /clock (rosbag replay with --clock)
  rviz         also start RViz with config/reconstruct.rviz
  device       torch device (auto, cpu, cuda)
  fastdds_profile  Fast DDS profile for the node (config/fastdds_local_large_data.xml: large images, one machine)
Launch arguments that are left empty do not override the parameter file.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

ARGS = {
    "weights": ("", "official DA3 checkpoint folder or model.safetensors ('' = embedded default)"),
    "variant": ("", "variant name when the checkpoint has no config.json"),
    "image": ("/camera/color/image_raw", "input image topic"),
    "camera_info": ("/camera/color/camera_info", "input CameraInfo topic"),
    "use_compressed": ("false", "subscribe to <image>/compressed (sensor_msgs/CompressedImage)"),
    "config": ("", "parameter YAML (default: share/da3_ros/config/reconstruct.yaml)"),
    "use_sim_time": ("false", "use /clock, e.g. for rosbag replay with --clock"),
    "rviz": ("false", "start RViz with config/reconstruct.rviz"),
    "device": ("", "torch device: auto, cpu, cuda ('' = from the parameter file)"),
    "fastdds_profile": ("", "Fast DDS XML profile for the node, e.g. config/fastdds_local_large_data.xml "
                            "(large images on one machine)"),
}


def _nodes(context, *_, **__):
    share = get_package_share_directory("da3_ros")
    get = {name: LaunchConfiguration(name).perform(context) for name in ARGS}
    config = get["config"] or os.path.join(share, "config", "reconstruct.yaml")
    overrides = {"use_sim_time": get["use_sim_time"].lower() == "true",
                 "use_compressed": get["use_compressed"].lower() == "true"}
    for name in ("weights", "variant", "device"):
        if get[name]:
            overrides[name] = get[name]
    image = get["image"]
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": get["fastdds_profile"]} if get["fastdds_profile"] else None
    reconstruct = Node(
        package="da3_ros", executable="reconstruct", name="reconstruct", output="screen", additional_env=env,
        parameters=[config, overrides],
        remappings=[("image", image), ("image/compressed", image + "/compressed"),
                    ("camera_info", get["camera_info"])],
    )
    return [reconstruct]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("da3_ros")
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGS.items()]
    rviz = Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                arguments=["-d", os.path.join(share, "config", "reconstruct.rviz")],
                parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
                condition=IfCondition(LaunchConfiguration("rviz")))
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes), rviz])

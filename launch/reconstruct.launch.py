"""ros2 launch da3_ros reconstruct.launch.py image:=/camera/color/image_raw camera_info:=/camera/color/camera_info

On a robot (odom -> base_link -> camera from odometry and robot_state_publisher; the node publishes map -> odom):
    ros2 launch da3_ros reconstruct.launch.py config:=$(ros2 pkg prefix da3_ros)/share/da3_ros/config/robot.yaml \
        image:=/camera/color/image_raw camera_info:=/camera/color/camera_info
A rig of cameras cam0..cam2 (topics /cam0/color/image_raw, /cam0/color/camera_info, ...):
    ros2 launch da3_ros reconstruct.launch.py config:=.../config/rig.yaml cameras:=cam0,cam1,cam2 \
        image_suffix:=color/image_raw camera_info_suffix:=color/camera_info

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
  backend      torch, torch_graph or onnxruntime; onnx_model  exported graph(s) for onnxruntime
  precision    auto, fp32, bf16, fp16; warm_up_size  camera image size WxH to prepare the network for at start-up
  fastdds_profile  Fast DDS profile for the node (config/fastdds_local_large_data.xml: large images, one machine)
  cameras      rig: comma-separated camera namespaces; each camera's input is /<ns>/<image_suffix> and
               /<ns>/<camera_info_suffix>, its outputs <ns>/depth ... ('' = one camera on image / camera_info)
  image_suffix, camera_info_suffix   rig topic names under each namespace (image_raw, camera_info)
  pose_source_frame  condition the windows on TF poses of this frame, e.g. odom ('' = from the parameter file)
  odom_frame, base_frame, tf_mode    the robot's frames (see config/robot.yaml)
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
    "backend": ("", "torch, torch_graph or onnxruntime ('' = from the parameter file)"),
    "onnx_model": ("", "backend onnxruntime: exported .onnx file or folder ('' = from the parameter file)"),
    "precision": ("", "auto, fp32, bf16 or fp16 ('' = from the parameter file)"),
    "warm_up_size": ("", "camera image size WxH to prepare the network for at start-up ('' = from the parameter "
                         "file)"),
    "fastdds_profile": ("", "Fast DDS XML profile for the node, e.g. config/fastdds_local_large_data.xml "
                            "(large images on one machine)"),
    "cameras": ("", "rig: comma-separated camera namespaces, e.g. cam0,cam1,cam2 ('' = one camera)"),
    "image_suffix": ("image_raw", "rig: image topic under each camera namespace"),
    "camera_info_suffix": ("camera_info", "rig: CameraInfo topic under each camera namespace"),
    "pose_source_frame": ("", "condition windows on TF poses of this frame, e.g. odom ('' = from the parameter file)"),
    "odom_frame": ("", "frame the node publishes map -> X to ('' = from the parameter file)"),
    "base_frame": ("", "robot base frame ('' = from the parameter file)"),
    "tf_mode": ("", "auto, map_to_odom or map_to_camera ('' = from the parameter file)"),
}
# launch arguments that override node parameters of the same name when they are not empty
OVERRIDES = ("weights", "variant", "device", "backend", "onnx_model", "precision", "warm_up_size", "cameras",
             "pose_source_frame", "odom_frame", "base_frame", "tf_mode")


def _nodes(context, *_, **__):
    share = get_package_share_directory("da3_ros")
    get = {name: LaunchConfiguration(name).perform(context) for name in ARGS}
    config = get["config"] or os.path.join(share, "config", "reconstruct.yaml")
    overrides = {"use_sim_time": get["use_sim_time"].lower() == "true",
                 "use_compressed": get["use_compressed"].lower() == "true"}
    for name in OVERRIDES:
        if get[name]:
            overrides[name] = get[name]
    image = get["image"]
    remappings = [("image", image), ("image/compressed", image + "/compressed"), ("camera_info", get["camera_info"])]
    for ns in (n.strip() for n in get["cameras"].split(",") if n.strip()):  # a rig: each camera's own topics
        remappings += [(f"{ns}/image", f"/{ns}/{get['image_suffix']}"),
                       (f"{ns}/image/compressed", f"/{ns}/{get['image_suffix']}/compressed"),
                       (f"{ns}/camera_info", f"/{ns}/{get['camera_info_suffix']}")]
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": get["fastdds_profile"]} if get["fastdds_profile"] else None
    reconstruct = Node(
        package="da3_ros", executable="reconstruct", name="reconstruct", output="screen", additional_env=env,
        parameters=[config, overrides], remappings=remappings,
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

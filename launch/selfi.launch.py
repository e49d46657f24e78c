"""Launch selfi_node (ROS 2 launch / launch_ros).

    ros2 launch selfi_ros selfi.launch.py image_topic:=/camera/color/image_raw \
        camera_info_topic:=/camera/color/camera_info backend:=colmap

``params_file`` (default: the installed config/selfi.yaml) is loaded first; every other argument maps to
the node parameter of the same name and overrides the file only when given (empty = keep the file's value).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# (argument = node parameter name, description); test/test_params.py checks them against the node
ARGUMENTS = [
    ("image_topic", "sensor_msgs/Image topic (compressed: <image_topic>/compressed)"),
    ("camera_info_topic", "sensor_msgs/CameraInfo topic"),
    ("image_transport", "raw | compressed"),
    ("odom_topic", "optional nav_msgs/Odometry topic"),
    ("camera_frame", "camera optical frame (default: the image header frame_id)"),
    ("map_frame", "fixed frame of poses and clouds"),
    ("odom_frame", "odometry frame"),
    ("base_frame", "robot base frame"),
    ("publish_tf", "auto | map_to_camera | map_to_odom | map_to_base_link | none"),
    ("backend", "colmap / vggt / oracle / <module>:<Class>; its options are its config's parameters"),
    ("checkpoint", "model weights file (vggt)"),
    ("device", "torch device (vggt): auto (cuda when present, else cpu) / cpu / cuda / cuda:N"),
    ("qos", "input QoS: sensor_data | reliable"),
    ("use_sim_time", "true to use /clock (bag replay)"),
    ("map_path", "a folder written by ~/save_map, loaded at start"),
    ("save_dir", "~/save_map folder (default $ROS_HOME/selfi_map)"),
    ("save_on_shutdown", "true to save the map to save_dir on shutdown"),
]
BOOL_ARGUMENTS = {"use_sim_time", "save_on_shutdown"}


def _node(context):
    overrides = {}
    for name, _ in ARGUMENTS:
        value = LaunchConfiguration(name).perform(context)
        if value != "":
            overrides[name] = value.lower() in ("true", "1", "yes") if name in BOOL_ARGUMENTS else value
    return [Node(
        package="selfi_ros",
        executable="selfi_node",
        name="selfi_node",
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file").perform(context), overrides],
    )]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("selfi_ros"), "config", "selfi.yaml")
    args = [DeclareLaunchArgument("params_file", default_value=default_params,
                                  description="YAML with selfi_node parameters")]
    for name, description in ARGUMENTS:
        args.append(DeclareLaunchArgument(name, default_value="", description=description + " (empty: params_file)"))
    return LaunchDescription(args + [OpaqueFunction(function=_node)])

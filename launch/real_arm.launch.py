"""`ros2 launch ceed_vla_ros real_arm.launch.py [name:=value ...]`: see ceed_vla_ros.bringup.

The nodes, their parameter file (config/real_arm.yaml) and the launch arguments are defined once in
ceed_vla_ros.bringup; `ceed-vla launch real_arm` starts the same nodes where `ros2 launch` is missing.
"""

from ceed_vla_ros.bringup import launch_description


def generate_launch_description():
    return launch_description("real_arm")

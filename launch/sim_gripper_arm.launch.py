"""`ros2 launch ceed_vla_ros sim_gripper_arm.launch.py [name:=value ...]`: see ceed_vla_ros.bringup.

The nodes, their parameter file (config/sim_gripper_arm.yaml) and the launch arguments are defined once
in ceed_vla_ros.bringup; `ceed-vla launch sim_gripper_arm` starts the same nodes where `ros2 launch` is
missing.
"""

from ceed_vla_ros.bringup import launch_description


def generate_launch_description():
    return launch_description("sim_gripper_arm")

"""ceed_vla_ros: CEED-VLA (consistency-distilled, early-exit Jacobi decoding) policies for ROS 2 arms.

The ROS-free core (decoding, action tokenizer, checkpoints, training, simulation, safety math) lives
in this package and never imports rclpy; the thin rclpy node classes live in ``ceed_vla_ros.nodes``.
The generated message types (``ceed_vla_ros.msg``) are installed into this same package by the
rosidl build.
"""

__version__ = "0.1.0"

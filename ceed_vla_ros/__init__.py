"""ceed_vla_ros: CEED-VLA (consistency-distilled, early-exit Jacobi decoding) policies for ROS 2 arms.

The ROS-free core (decoding, action tokenizer, checkpoints, training, simulation, safety math) lives
in this package and never imports rclpy; the thin rclpy node classes live in ``ceed_vla_ros.nodes``.
The generated message types (``ceed_vla_ros.msg``, ``ceed_vla_ros.srv``) are installed into this
same package by the rosidl build.
"""

from pkgutil import extend_path

# Run from a source checkout (its folder first on sys.path), this package has no generated msg/ and
# srv/: extend_path adds the installed copy's folder, so `ceed_vla_ros.msg` still imports from it.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"

"""ROS-free MuJoCo tabletop simulation: a 4-joint arm, three coloured cubes and a goal marker.

* :mod:`ceed_vla_ros.sim.mjcf` - the scene, generated as an MJCF string.
* :mod:`ceed_vla_ros.sim.env` - :class:`TabletopArmEnv`, language-conditioned reach/push tasks.
* :mod:`ceed_vla_ros.sim.expert` - scripted damped-least-squares experts for both tasks.
* :mod:`ceed_vla_ros.sim.recorder` - HDF5 demonstration datasets and ``ceed-vla record``.

Importing this package selects headless EGL rendering (``MUJOCO_GL=egl``) unless ``MUJOCO_GL`` is
already set. MuJoCo reads the variable when it is first imported, so import this package (or set
the variable) before anything imports :mod:`mujoco`.
"""

import os
import sys
import warnings

if "MUJOCO_GL" not in os.environ:
    if "mujoco" in sys.modules:
        warnings.warn(
            "mujoco was imported before ceed_vla_ros.sim without MUJOCO_GL set; headless "
            "rendering may fail. Set MUJOCO_GL=egl or import ceed_vla_ros.sim first.",
            RuntimeWarning,
            stacklevel=2,
        )
    os.environ["MUJOCO_GL"] = "egl"

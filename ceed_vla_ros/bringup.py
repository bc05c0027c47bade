"""The one source of truth for bring-up: which nodes start, with which parameter file and arguments.

``launch/*.launch.py`` (``ros2 launch`` on a ROS 2 computer) and ``ceed-vla launch <setup>`` (the
runner for environments without ``ros2 launch``) both build their nodes from :data:`SETUPS`, so they
start the same executables with the same parameter files, remappings and overrides.

A launch argument sets one or more node parameters, or remaps a topic. Its default is the value in
the setup's parameter file, so an argument left alone changes nothing.

When a node exits on its own, both bring-ups do the same (:attr:`NodeLaunch.respawn`): the camera
subscriber and the policy are restarted after :data:`RESPAWN_DELAY_S` (meanwhile no fresh actions
arrive and the arm driver's watchdog holds the arm); the arm driver and the simulated arm are what
keeps the arm safe, so their exit ends the whole bring-up. So does the exit of the episode
recorder (a respawned recorder would silently lose the episode in progress). A node with
:attr:`NodeLaunch.finishes` does a finite job (the sim episode runner): its exit ends the bring-up
too, and the runner's exit code is then that node's (0: the job is done).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ceed_vla_ros.paths import share_directory


@dataclass(frozen=True)
class LaunchArgument:
    """``name:=value`` on the command line; sets ``parameters`` [(node, parameter)] or a remap."""

    name: str
    description: str
    parameters: tuple[tuple[str, str], ...] = ()
    remap: tuple[str, str] | None = None  # (node, topic name inside the node)
    remap_default: str = ""

    def __post_init__(self) -> None:
        if bool(self.parameters) == (self.remap is not None):
            raise ValueError(f"launch argument {self.name}: give parameters or a remap, not both or neither")


@dataclass(frozen=True)
class NodeLaunch:
    executable: str
    name: str
    respawn: bool = False  # restarted when it exits; otherwise its exit ends the bring-up
    exit_reason: str = "it keeps the arm safe, stopping all"  # said when its exit ends the bring-up
    finishes: bool = False  # a finite job: its exit code is the bring-up's (0: done)


RESPAWN_DELAY_S = 2.0
"""Seconds between a respawned node's exit and its restart (a node that cannot start retries)."""
SIGTERM_TIMEOUT_S = 10.0
"""``ros2 launch``: seconds after Ctrl-C before a node still running gets SIGTERM (default 5)."""


@dataclass(frozen=True)
class Setup:
    name: str
    description: str
    params_file: str  # inside config/
    nodes: tuple[NodeLaunch, ...]
    arguments: tuple[LaunchArgument, ...] = field(default=())

    def params_path(self, config_dir: Path | None = None) -> Path:
        return (config_dir or share_directory() / "config") / self.params_file


CAMERA = NodeLaunch("camera_subscriber", "camera_subscriber", respawn=True)
POLICY = NodeLaunch("policy_node", "policy", respawn=True)
DRIVER = NodeLaunch("arm_driver", "arm_driver")
SIM_ARM = NodeLaunch("sim_arm", "sim_arm")
RECORDER = NodeLaunch("episode_recorder", "episode_recorder", exit_reason="the recorder stopped, stopping all")
SIM_EPISODE_RUNNER = NodeLaunch(
    "sim_episode_runner", "sim_episode_runner", exit_reason="the episodes are recorded (or it failed)", finishes=True
)

_COMMON_ARGUMENTS = (
    LaunchArgument(
        "model_dir",
        "shared model directory (empty: $CEED_VLA_MODEL_DIR or the shipped models/)",
        parameters=(("camera_subscriber", "model_dir"), ("policy", "model_dir"), ("arm_driver", "model_dir")),
    ),
    LaunchArgument(
        "checkpoint",
        "checkpoint name inside model_dir",
        parameters=(("camera_subscriber", "checkpoint"), ("policy", "checkpoint")),
    ),
    LaunchArgument(
        "instruction", "task instruction (empty: follow /ceed_vla/instruction)", parameters=(("policy", "instruction"),)
    ),
    LaunchArgument("decoding_mode", "ar | jacobi | early_exit", parameters=(("policy", "decoding_mode"),)),
    LaunchArgument(
        "early_exit_steps", "Jacobi iterations in early_exit mode", parameters=(("policy", "early_exit_steps"),)
    ),
    LaunchArgument(
        "camera_topic",
        "sensor_msgs/Image topic of the camera",
        remap=("camera_subscriber", "image"),
        remap_default="/camera/image_raw",
    ),
    LaunchArgument(
        "image_transport",
        "raw (sensor_msgs/Image) | compressed (CompressedImage on <camera_topic>/compressed)",
        parameters=(("camera_subscriber", "image_transport"),),
    ),
    LaunchArgument(
        "controller_interface", "forward_position | joint_trajectory", parameters=(("arm_driver", "command_interface"),)
    ),
    LaunchArgument(
        "enable_actuation",
        "send joint commands to the arm (true | false)",
        parameters=(("arm_driver", "enable_actuation"),),
    ),
    LaunchArgument(
        "control_rate_hz",
        "arm driver command rate (Hz; e.g. 200 or 500)",
        parameters=(("arm_driver", "control_rate_hz"),),
    ),
    LaunchArgument(
        "control_loop",
        "streamer (native thread publishes the planned commands) | thread (Python deadline thread) | "
        "rclpy_timer (the previous loop, for comparison)",
        parameters=(("arm_driver", "control_loop"),),
    ),
    LaunchArgument(
        "realtime_priority",
        "SCHED_FIFO priority of the driver's control thread (0: normal scheduling)",
        parameters=(("arm_driver", "realtime_priority"),),
    ),
)

_RECORD_ARGUMENTS = (
    LaunchArgument(
        "dataset_dir",
        "LeRobot dataset folder to record into (created, or appended to)",
        parameters=(("episode_recorder", "dataset_dir"),),
    ),
    LaunchArgument(
        "fps", "frames per second recorded (the policy's step rate)", parameters=(("episode_recorder", "fps"),)
    ),
    LaunchArgument(
        "instruction",
        "task text of the episodes (empty: the latest /ceed_vla/instruction)",
        parameters=(("episode_recorder", "instruction"),),
    ),
    LaunchArgument(
        "image_storage",
        "image (lossless PNG in the parquet) | video (mp4)",
        parameters=(("episode_recorder", "image_storage"),),
    ),
    LaunchArgument(
        "video_codec", "h264 | av1 (image_storage video)", parameters=(("episode_recorder", "video_codec"),)
    ),
)

SETUPS: dict[str, Setup] = {
    "sim_arm": Setup(
        name="sim_arm",
        description="MuJoCo arm + camera subscriber + policy + arm driver, all on this computer",
        params_file="sim_arm.yaml",
        nodes=(SIM_ARM, CAMERA, POLICY, DRIVER),
        arguments=_COMMON_ARGUMENTS
        + (
            LaunchArgument("task", "reach | push", parameters=(("sim_arm", "task"),)),
            LaunchArgument("seed", "layout seed of the first episode", parameters=(("sim_arm", "seed"),)),
        ),
    ),
    "sim_gripper_arm": Setup(
        name="sim_gripper_arm",
        description="MuJoCo 6-joint arm with a parallel gripper (pick) + camera subscriber + policy (end-effector "
        "actions + gripper) + arm driver (IK, gripper joint), all on this computer",
        params_file="sim_gripper_arm.yaml",
        nodes=(SIM_ARM, CAMERA, POLICY, DRIVER),
        arguments=_COMMON_ARGUMENTS
        + (
            LaunchArgument("task", "pick | reach", parameters=(("sim_arm", "task"),)),
            LaunchArgument("seed", "layout seed of the first episode", parameters=(("sim_arm", "seed"),)),
        ),
    ),
    "real_arm": Setup(
        name="real_arm",
        description="camera subscriber + policy + arm driver for a ros2_control arm and a camera driver you start",
        params_file="real_arm.yaml",
        nodes=(CAMERA, POLICY, DRIVER),
        arguments=_COMMON_ARGUMENTS,
    ),
    "record": Setup(
        name="record",
        description="episode recorder for teleoperated demonstrations on a robot (camera, arm and teleoperation "
        "drivers are yours); start / stop / discard episodes with its services or `ceed-vla episode`",
        params_file="record.yaml",
        nodes=(RECORDER,),
        arguments=_RECORD_ARGUMENTS
        + (
            LaunchArgument(
                "camera_topic",
                "sensor_msgs/Image topic of the camera",
                remap=("episode_recorder", "image"),
                remap_default="/camera/image_raw",
            ),
            LaunchArgument(
                "joint_names",
                "joints of state and action, in order, e.g. [j1, j2]",
                parameters=(("episode_recorder", "joint_names"),),
            ),
            LaunchArgument(
                "action_topic",
                "the commands recorded as the action",
                parameters=(("episode_recorder", "action_topic"),),
            ),
            LaunchArgument(
                "action_type",
                "forward_position (Float64MultiArray) | joint_state (a leader arm) | joint_trajectory (first point)",
                parameters=(("episode_recorder", "action_type"),),
            ),
            LaunchArgument(
                "on_shutdown", "what Ctrl-C does with an episode in progress: discard | save",
                parameters=(("episode_recorder", "on_shutdown"),),
            ),
        ),
    ),
    "record_sim": Setup(
        name="record_sim",
        description="N scripted-expert demonstrations of the simulated arm, recorded over DDS into a LeRobot "
        "dataset (sim arm with expert_teleop + episode recorder + episode runner); ends when they are saved",
        params_file="record_sim.yaml",
        nodes=(SIM_ARM, RECORDER, SIM_EPISODE_RUNNER),
        arguments=_RECORD_ARGUMENTS
        + (
            LaunchArgument("episodes", "episodes to save", parameters=(("sim_episode_runner", "episodes"),)),
            LaunchArgument(
                "task", "reach | push", parameters=(("sim_arm", "task"), ("sim_episode_runner", "task"))
            ),
            LaunchArgument(
                "seed", "layout seed of the first episode (attempt i: seed + i)",
                parameters=(("sim_arm", "seed"), ("sim_episode_runner", "seed")),
            ),
            LaunchArgument("image_size", "camera image size (px)", parameters=(("sim_arm", "image_size"),)),
            LaunchArgument(
                "camera_rate_hz", "camera frame rate (Hz)", parameters=(("sim_arm", "camera_rate_hz"),)
            ),
            LaunchArgument(
                "max_episode_s", "wall seconds an attempt may take to succeed",
                parameters=(("sim_episode_runner", "max_episode_s"),),
            ),
            LaunchArgument(
                "keep_failed", "save attempts that did not succeed too (true | false)",
                parameters=(("sim_episode_runner", "keep_failed"),),
            ),
        ),
    ),
}


def get_setup(name: str) -> Setup:
    try:
        return SETUPS[name]
    except KeyError:
        raise ValueError(f"unknown setup {name!r}; choose from {', '.join(SETUPS)}") from None


def read_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """``{node: {parameter: value}}`` of a ROS 2 parameter file."""
    data = yaml.safe_load(path.read_text()) or {}
    return {node: dict((body or {}).get("ros__parameters", {})) for node, body in data.items()}


def argument_default(setup: Setup, argument: LaunchArgument, config_dir: Path | None = None) -> str:
    """The value the parameter file already gives (as a launch-argument string)."""
    if argument.remap is not None:
        return argument.remap_default
    node, parameter = argument.parameters[0]
    value = read_parameters(setup.params_path(config_dir)).get(node, {}).get(parameter, "")
    return _to_argument_string(value)


def _to_argument_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_assignments(items: list[str], setup: Setup) -> dict[str, str]:
    """``["name:=value", ...]`` -> {name: value}; unknown names are an error."""
    known = {argument.name for argument in setup.arguments}
    values = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep:
            raise ValueError(f"launch arguments look like name:=value, got {item!r}")
        if name not in known:
            raise ValueError(f"unknown launch argument {name!r} for {setup.name}; known: {', '.join(sorted(known))}")
        values[name] = value
    return values


def node_ros_arguments(
    setup: Setup, node: NodeLaunch, values: dict[str, str], config_dir: Path | None = None
) -> list[str]:
    """``--ros-args`` of one node: its name, the parameter file, then argument overrides/remaps.

    Parameter overrides are added only for arguments given in ``values`` (the parameter file holds
    the defaults); remaps always (their default lives here, not in the parameter file).
    """
    args = ["--ros-args", "-r", f"__node:={node.name}", "--params-file", str(setup.params_path(config_dir))]
    for argument in setup.arguments:
        if argument.remap is not None:
            if argument.remap[0] == node.name:
                args += ["-r", f"{argument.remap[1]}:={values.get(argument.name, argument.remap_default)}"]
            continue
        if argument.name not in values:
            continue
        value = values[argument.name]
        for target_node, parameter in argument.parameters:
            if target_node == node.name:
                # a YAML-quoted string keeps "" and text that looks like a number a string
                args += ["-p", f"{parameter}:={_yaml_value(value, setup, target_node, parameter, config_dir)}"]
    return args


def _yaml_value(value: str, setup: Setup, node: str, parameter: str, config_dir: Path | None) -> str:
    """``value`` written so that the parameter keeps the type the parameter file gives it."""
    declared = read_parameters(setup.params_path(config_dir)).get(node, {}).get(parameter)
    if isinstance(declared, str):
        return yaml.safe_dump(value, default_style='"').strip()
    if isinstance(declared, float) and not isinstance(declared, bool):
        try:
            return repr(float(value))  # `500` stays a double parameter (ROS would read an integer)
        except ValueError:
            return value
    return value


def launch_description(setup_name: str):
    """A ``launch.LaunchDescription`` for ``ros2 launch`` (imports launch/launch_ros lazily)."""
    from launch.actions import DeclareLaunchArgument, Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue

    from launch import LaunchDescription

    setup = get_setup(setup_name)
    params_file = setup.params_path()
    declared_types = read_parameters(params_file)
    actions: list[Any] = [
        DeclareLaunchArgument(
            argument.name, default_value=argument_default(setup, argument), description=argument.description
        )
        for argument in setup.arguments
    ]
    for node in setup.nodes:
        overrides = {}
        remappings = []
        for argument in setup.arguments:
            if argument.remap is not None and argument.remap[0] == node.name:
                remappings.append((argument.remap[1], LaunchConfiguration(argument.name)))
            for target_node, parameter in argument.parameters:
                if target_node == node.name:
                    value_type = type(declared_types.get(node.name, {}).get(parameter, ""))
                    if value_type is list:
                        value_type = None  # launch_ros reads the argument as YAML: "[j1, j2]" is a list
                    overrides[parameter] = ParameterValue(LaunchConfiguration(argument.name), value_type=value_type)
        if node.respawn:
            on_exit = {"respawn": True, "respawn_delay": RESPAWN_DELAY_S}
        else:
            on_exit = {"on_exit": [Shutdown(reason=f"{node.name} exited: {node.exit_reason}")]}
        actions.append(
            Node(
                package="ceed_vla_ros",
                executable=node.executable,
                name=node.name,
                parameters=[str(params_file), overrides],
                remappings=remappings,
                output="screen",
                emulate_tty=True,
                sigterm_timeout=str(SIGTERM_TIMEOUT_S),
                **on_exit,
            )
        )
    return LaunchDescription(actions)

"""The bring-up description: one source for ros2 launch and the pip runner, consistent with config/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ceed_vla_ros.bringup import (
    SETUPS,
    argument_default,
    get_setup,
    node_ros_arguments,
    parse_assignments,
    read_parameters,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"


def executables() -> set[str]:
    names = set()
    for line in (REPO / "ceed_vla_ros/executables.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            names.add(line.split("=")[0].strip())
    return names


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_every_node_has_an_executable_and_a_parameter_section(name):
    setup = SETUPS[name]
    sections = read_parameters(setup.params_path(CONFIG))
    assert {node.executable for node in setup.nodes} <= executables()
    assert {node.name for node in setup.nodes} == set(sections)
    for argument in setup.arguments:
        for node, parameter in argument.parameters:
            assert parameter in sections[node], (
                f"{argument.name} targets {node}.{parameter}, not in {setup.params_file}"
            )


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_launch_file_uses_the_same_setup(name):
    text = (REPO / "launch" / f"{name}.launch.py").read_text()
    assert f'launch_description("{name}")' in text


def test_real_arm_is_safe_by_default():
    sections = read_parameters(get_setup("real_arm").params_path(CONFIG))
    assert sections["arm_driver"]["enable_actuation"] is False


def test_sim_gripper_arm_matches_the_simulated_gripper_arm():
    from ceed_vla_ros.sim.robots import GRIPPER_ARM

    sections = read_parameters(get_setup("sim_gripper_arm").params_path(CONFIG))
    assert (sections["sim_arm"]["robot"], sections["sim_arm"]["task"]) == ("gripper_arm", "pick")
    driver = sections["arm_driver"]
    arm = GRIPPER_ARM.arm_joints
    assert driver["joint_names"] == list(GRIPPER_ARM.joint_names[:arm])
    assert [list(pair) for pair in zip(driver["position_lower"], driver["position_upper"])] == [
        list(limits) for limits in GRIPPER_ARM.joint_limits[:arm]]
    assert len(driver["max_velocity"]) == len(driver["max_acceleration"]) == arm
    assert (driver["gripper_interface"], driver["gripper_joint"]) == ("joint", GRIPPER_ARM.joint_names[arm])
    assert (driver["gripper_closed_position"], driver["gripper_open_position"]) == GRIPPER_ARM.joint_limits[arm]
    assert (CONFIG.parent / driver["urdf_file"]).is_file() and driver["urdf_file"] == f"config/{GRIPPER_ARM.urdf}"
    for node in ("camera_subscriber", "policy"):
        assert sections[node]["checkpoint"] == "sim_gripper_student"
    assert (sections["policy"]["decoding_mode"], sections["policy"]["early_exit_steps"]) == ("early_exit", 2)


def test_argument_defaults_are_the_parameter_file_values():
    setup = get_setup("sim_arm")
    values = {a.name: argument_default(setup, a, CONFIG) for a in setup.arguments}
    assert values["checkpoint"] == "sim_student"
    assert values["early_exit_steps"] == "2"
    assert values["enable_actuation"] == "true"
    assert values["camera_topic"] == "/camera/image_raw"


def test_ros_arguments_carry_the_parameter_file_overrides_and_remaps():
    setup = get_setup("sim_arm")
    values = parse_assignments(
        ["checkpoint:=007", "early_exit_steps:=3", "camera_topic:=/cam/rgb", "model_dir:="], setup
    )
    by_node = {node.name: node_ros_arguments(setup, node, values, CONFIG) for node in setup.nodes}
    policy = by_node["policy"]
    assert policy[:5] == ["--ros-args", "-r", "__node:=policy", "--params-file", str(CONFIG / "sim_arm.yaml")]
    overrides = [policy[i + 1] for i, a in enumerate(policy) if a == "-p"]
    # strings stay strings (YAML-quoted), integers stay integers
    parsed = {o.split(":=")[0]: yaml.safe_load(o.split(":=", 1)[1]) for o in overrides}
    assert parsed == {"checkpoint": "007", "early_exit_steps": 3, "model_dir": ""}
    assert "image:=/cam/rgb" in by_node["camera_subscriber"]
    assert "-r" not in by_node["arm_driver"][3:]
    defaults = node_ros_arguments(setup, setup.nodes[1], {}, CONFIG)
    assert setup.nodes[1].name == "camera_subscriber" and "image:=/camera/image_raw" in defaults
    assert all("checkpoint" not in a for a in by_node["arm_driver"])


def test_unknown_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown launch argument 'chekpoint'"):
        parse_assignments(["chekpoint:=x"], get_setup("sim_arm"))
    with pytest.raises(ValueError, match="name:=value"):
        parse_assignments(["checkpoint=x"], get_setup("sim_arm"))


def test_launch_description_respawns_camera_and_policy_and_ends_with_the_driver(monkeypatch):
    """The structure ``ros2 launch`` gets. launch/launch_ros are not installable here, so minimal
    stand-ins record what bringup.launch_description builds with them (their real signatures:
    launch_ros.actions.Node forwards respawn / respawn_delay / on_exit / sigterm_timeout to
    launch.actions.ExecuteProcess)."""
    import sys
    import types

    class Recorded:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    modules = {
        name: types.ModuleType(name)
        for name in (
            "launch",
            "launch.actions",
            "launch.substitutions",
            "launch_ros",
            "launch_ros.actions",
            "launch_ros.parameter_descriptions",
        )
    }
    modules["launch"].LaunchDescription = Recorded
    modules["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (Recorded,), {})
    modules["launch.actions"].Shutdown = type("Shutdown", (Recorded,), {})
    modules["launch.substitutions"].LaunchConfiguration = Recorded
    modules["launch_ros.actions"].Node = type("Node", (Recorded,), {})
    modules["launch_ros.parameter_descriptions"].ParameterValue = Recorded
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    from ceed_vla_ros.bringup import RESPAWN_DELAY_S, launch_description

    for setup_name in SETUPS:
        actions = launch_description(setup_name).args[0]
        nodes = {a.kwargs["name"]: a.kwargs for a in actions if type(a).__name__ == "Node"}
        assert set(nodes) == {node.name for node in SETUPS[setup_name].nodes}
        for name, kwargs in nodes.items():
            assert float(kwargs["sigterm_timeout"]) >= 10.0
            if name in ("camera_subscriber", "policy"):
                assert kwargs["respawn"] is True and kwargs["respawn_delay"] == RESPAWN_DELAY_S
                assert "on_exit" not in kwargs
            else:
                assert not kwargs.get("respawn", False)
                assert [type(a).__name__ for a in kwargs["on_exit"]] == ["Shutdown"]

"""The package is at once a colcon/ament package and a pip package: both halves must agree.

The colcon half is checked by building CMakeLists.txt into a scratch install prefix exactly as colcon
would (ament_cmake, rosidl), with the ROS 2 build tools of the environment.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

import ceed_vla_ros

REPO = Path(__file__).resolve().parents[1]
PACKAGE_XML = ElementTree.parse(REPO / "package.xml").getroot()

# ROS packages our Python code may import, by import name -> package.xml key.
ROS_IMPORTS = {
    "rclpy": "rclpy", "std_msgs": "std_msgs", "sensor_msgs": "sensor_msgs",
    "trajectory_msgs": "trajectory_msgs", "std_srvs": "std_srvs", "builtin_interfaces": "builtin_interfaces",
    "diagnostic_msgs": "diagnostic_msgs", "geometry_msgs": "geometry_msgs", "cv_bridge": "cv_bridge",
    "launch": "launch", "launch_ros": "launch_ros", "rcl_interfaces": "rcl_interfaces",
    "ament_index_python": "ament_index_python",
}


def declared(tag_names: tuple[str, ...]) -> set[str]:
    return {el.text.strip() for tag in tag_names for el in PACKAGE_XML.findall(tag)}


def executables() -> dict[str, str]:
    entries = {}
    for line in (REPO / "ceed_vla_ros" / "executables.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, target = (part.strip() for part in line.split("=", 1))
            entries[name] = target
    return entries


def imported_top_level_modules(root: Path) -> set[str]:
    modules = set()
    for path in list(root.rglob("*.py")) + list((REPO / "launch").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


def test_package_xml_is_an_ament_cmake_interface_package():
    assert PACKAGE_XML.get("format") == "3"
    assert PACKAGE_XML.findtext("name") == "ceed_vla_ros"
    assert PACKAGE_XML.findtext("export/build_type") == "ament_cmake"
    assert PACKAGE_XML.findtext("member_of_group") == "rosidl_interface_packages"
    assert "rosidl_default_generators" in declared(("buildtool_depend",))
    assert "rosidl_default_runtime" in declared(("exec_depend", "depend"))


def test_package_xml_declares_every_ros_package_the_code_imports():
    runtime = declared(("depend", "exec_depend"))
    missing = {ROS_IMPORTS[m] for m in imported_top_level_modules(REPO / "ceed_vla_ros") if m in ROS_IMPORTS}
    assert missing - runtime == set()
    # and the message dependencies of msg/ are build+exec dependencies
    used_in_msgs = {m.group(1) for f in list((REPO / "msg").glob("*.msg")) + list((REPO / "srv").glob("*.srv"))
                    for m in re.finditer(r"^\s*([a-z_]+)/\w+", f.read_text(), re.M)}
    assert used_in_msgs <= declared(("depend",))


def test_cmakelists_builds_the_package_that_package_xml_names():
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(ceed_vla_ros\)", cmake, re.M)
    for dependency in declared(("depend",)):
        assert f"find_package({dependency} REQUIRED)" in cmake


def test_pip_install_matches_package_xml_and_executables():
    distribution = importlib.metadata.distribution("ceed_vla_ros")
    assert distribution.version == PACKAGE_XML.findtext("version") == ceed_vla_ros.__version__
    scripts = {ep.name: ep.value for ep in distribution.entry_points if ep.group == "console_scripts"}
    assert scripts == executables()


def test_tests_run_against_the_installed_package_not_the_source_tree():
    # The source tree has no generated ceed_vla_ros.msg; the installed package must be the one tested.
    assert REPO / "ceed_vla_ros" not in Path(ceed_vla_ros.__file__).resolve().parents


@pytest.mark.parametrize("name", sorted(executables()))
def test_console_scripts_start(name):
    script = Path(sys.executable).parent / name
    assert script.exists(), f"console script {name} not installed next to {sys.executable}"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


@pytest.mark.parametrize("name", sorted(executables()))
def test_pip_install_has_ros2_run_executables(name):
    # `ros2 run` / `ros2 launch` from a ROS 2 install find the pip-installed package through
    # AMENT_PREFIX_PATH=<venv prefix>, and then look for <prefix>/lib/ceed_vla_ros/<name>.
    prefix = Path(sys.prefix)
    assert (prefix / "share/ament_index/resource_index/packages/ceed_vla_ros").exists()
    assert (prefix / "share/ceed_vla_ros/package.xml").exists()
    launcher = prefix / "lib" / "ceed_vla_ros" / name
    assert os.access(launcher, os.X_OK), f"{launcher} missing or not executable"
    result = subprocess.run([str(launcher), "--help"], capture_output=True, text=True, timeout=60)  # as ros2 run does
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


@pytest.fixture(scope="module")
def colcon_style_install(tmp_path_factory) -> Path:
    """Configure, build and install CMakeLists.txt into a fresh prefix, as colcon build would."""
    tmp = tmp_path_factory.mktemp("colcon")
    build, prefix = tmp / "build", tmp / "install"
    tool_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=tool_dir + os.pathsep + os.environ.get("PATH", ""))
    cmake = shutil.which("cmake", path=env["PATH"])
    assert cmake, "cmake is required to build the ROS interfaces"
    configure = [cmake, "-S", str(REPO), "-B", str(build), f"-DCMAKE_INSTALL_PREFIX={prefix}",
                 f"-DCMAKE_PREFIX_PATH={sys.prefix}", f"-DPython3_EXECUTABLE={sys.executable}",
                 "-DBUILD_TESTING=OFF"]
    if shutil.which("ninja", path=env["PATH"]):
        configure += ["-G", "Ninja"]
    for command in (configure, [cmake, "--build", str(build), "--target", "install"]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return prefix


def test_colcon_install_layout(colcon_style_install):
    prefix = colcon_style_install
    share = prefix / "share" / "ceed_vla_ros"
    assert (prefix / "share/ament_index/resource_index/packages/ceed_vla_ros").exists()
    assert (share / "package.xml").read_text() == (REPO / "package.xml").read_text()
    for kind in ("msg", "srv"):
        sources = sorted(p.name for p in (REPO / kind).glob(f"*.{kind}"))
        assert sorted(p.name for p in (share / kind).glob(f"*.{kind}")) == sources
    for folder in ("launch", "config"):
        for source in (REPO / folder).rglob("*"):
            if source.is_file():
                assert (share / source.relative_to(REPO)).read_bytes() == source.read_bytes()
    purelib = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    python_package = Path(purelib) / "ceed_vla_ros"
    # the hand-written __init__ wins over the empty one rosidl generates
    assert (python_package / "__init__.py").read_text() == (REPO / "ceed_vla_ros/__init__.py").read_text()
    for source in (REPO / "ceed_vla_ros").rglob("*.py"):
        assert (python_package / source.relative_to(REPO / "ceed_vla_ros")).exists(), source
    assert (python_package / "msg" / "__init__.py").exists()
    assert (python_package / "srv" / "__init__.py").exists()


@pytest.mark.parametrize("name", sorted(executables()))
def test_colcon_installs_ros2_run_executables(colcon_style_install, name):
    launcher = colcon_style_install / "lib" / "ceed_vla_ros" / name
    assert os.access(launcher, os.X_OK), f"{launcher} missing or not executable"
    # Run the launcher with this environment's interpreter (a ROS install runs it with python3),
    # importing the package from the colcon-style prefix as a sourced workspace would.
    purelib = sysconfig.get_path("purelib", vars={"base": str(colcon_style_install),
                                                  "platbase": str(colcon_style_install)})
    env = dict(os.environ, PYTHONPATH=purelib)
    result = subprocess.run([sys.executable, str(launcher), "--help"], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


@pytest.mark.parametrize("module", ["ceed_vla_ros.nodes.arm_driver", "ceed_vla_ros.nodes.camera_subscriber",
                                    "ceed_vla_ros.metadata", "ceed_vla_ros.arm_control"])
def test_metadata_readers_never_import_torch_or_transformers(module, tmp_path):
    # The checkpoint metadata is the torch-free contract: the driver and the camera node stay small.
    code = (f"import sys, {module}; heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules); "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_messages_import_from_the_repository_root():
    # a source checkout first on sys.path (cwd = repo) still finds the installed ceed_vla_ros.msg / .srv
    code = "from ceed_vla_ros.msg import ActionTokens; from ceed_vla_ros.srv import ResetEpisode; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr

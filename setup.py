"""pip build of ceed_vla_ros for a machine without a ROS 2 install.

On a ROS 2 computer, colcon builds this package from CMakeLists.txt (ament_cmake). Here the same
CMakeLists.txt is driven by pip: the msg/ interfaces are generated and compiled against the ROS 2
wheels from PyPI that are installed in the active environment (Kilted: requirements.txt, Jazzy:
requirements-jazzy.txt; so build with ``pip install --no-build-isolation .``), in a build tree of
that environment's own (``build/<env>-<hash>/``), then

- the generated Python interface packages (``ceed_vla_ros/msg``, ``ceed_vla_ros/srv`` + their
  typesupport extension modules)
  is added to the hand-written ``ceed_vla_ros`` package,
- the generated C libraries go to ``<prefix>/lib`` (the ROS wheels' bootstrapper puts that directory
  on LD_LIBRARY_PATH), and the ament index entries, msg definitions, package.xml, launch/ and
  config/ go to ``<prefix>/share``, as a colcon install would lay them out,
- every line of ``ceed_vla_ros/executables.txt`` becomes a console script.

Name and version come from package.xml, the single place they are written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ElementTree
from distutils.command.install_data import install_data
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGE = "ceed_vla_ros"
# One build tree per environment: the Kilted (.venv) and Jazzy (.venv-jazzy) builds must not share a
# CMake cache (it records the ROS prefix and Python it was configured with) nor setuptools' build/lib
# (it holds the interfaces generated against one distribution).
ENV_TAG = f"{Path(sys.prefix).name.lstrip('.') or 'env'}-{hashlib.sha1(sys.prefix.encode()).hexdigest()[:8]}"
BUILD_BASE = ROOT / "build" / ENV_TAG
CMAKE_BUILD_DIR = BUILD_BASE / "cmake"
CMAKE_STAGE_DIR = BUILD_BASE / "cmake-stage"


def read_package_xml() -> tuple[str, str, str]:
    root = ElementTree.parse(ROOT / "package.xml").getroot()
    name = root.findtext("name").strip()
    version = root.findtext("version").strip()
    description = " ".join(root.findtext("description").split())
    if name != PACKAGE:
        raise RuntimeError(f"package.xml names {name!r}, setup.py builds {PACKAGE!r}")
    return name, version, description


def read_executables() -> list[str]:
    """console_scripts entries from executables.txt (also read by CMakeLists.txt)."""
    entries = []
    for line in (ROOT / PACKAGE / "executables.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, target = (part.strip() for part in line.partition("="))
        if not name or ":" not in target:
            raise RuntimeError(f"executables.txt: cannot parse {line!r} (want: name = module:function)")
        entries.append(f"{name} = {target}")
    return entries


def staged_site_packages() -> Path:
    purelib = Path(sysconfig.get_path("purelib", vars={"base": "", "platbase": ""}).lstrip("/"))
    return CMAKE_STAGE_DIR / purelib


def run_cmake() -> None:
    """Configure (once), build and stage-install the interfaces; ninja rebuilds only what changed."""
    cmake = shutil.which("cmake", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if cmake is None:
        raise RuntimeError("cmake not found: install it (pip install cmake) in this environment")
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    configure = [
        cmake, "-S", str(ROOT), "-B", str(CMAKE_BUILD_DIR), "-G", "Ninja",
        f"-DCMAKE_PREFIX_PATH={sys.prefix}",
        f"-DCMAKE_INSTALL_PREFIX={CMAKE_STAGE_DIR}",
        f"-DPython3_EXECUTABLE={sys.executable}",
        "-DBUILD_TESTING=OFF",
    ]
    if not (CMAKE_BUILD_DIR / "build.ninja").exists():
        print("ceed_vla_ros: configuring the ROS interface build (CMake)", flush=True)
        subprocess.run(configure, check=True, env=env)
    print("ceed_vla_ros: building the ROS interfaces in msg/ (rosidl)", flush=True)
    subprocess.run([cmake, "--build", str(CMAKE_BUILD_DIR), "--target", "install"], check=True, env=env)


class BuildPyWithInterfaces(build_py):
    """build_py + the rosidl-generated message package copied into the build tree."""

    def run(self) -> None:
        run_cmake()
        # build/lib is reused between builds: a module deleted or moved in the source would linger in it
        shutil.rmtree(Path(self.build_lib) / PACKAGE, ignore_errors=True)
        super().run()
        generated = staged_site_packages() / PACKAGE
        target = Path(self.build_lib) / PACKAGE
        for interface_kind in ("msg", "srv"):
            if (generated / interface_kind).is_dir():
                shutil.copytree(generated / interface_kind, target / interface_kind, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.c"))
        for extension in generated.glob(f"{PACKAGE}_s__*.so"):
            shutil.copy2(extension, target / extension.name)


class InstallDataWithInterfaces(install_data):
    """install_data + the generated libraries and ament index entries from the CMake stage."""

    def run(self) -> None:
        stage = CMAKE_STAGE_DIR
        if not stage.is_dir():
            raise RuntimeError(f"{stage} is missing: build_py did not run the CMake build")
        self.data_files = list(self.data_files or [])
        self.data_files.append(("lib", sorted(str(p) for p in (stage / "lib").glob(f"lib{PACKAGE}__*.so"))))
        self.data_files.append((f"lib/{PACKAGE}", [str(p) for p in ros2_run_launchers()]))
        for index_dir in sorted((stage / "share" / "ament_index" / "resource_index").iterdir()):
            entries = [str(p) for p in index_dir.iterdir() if p.name == PACKAGE]
            if entries:
                self.data_files.append((f"share/ament_index/resource_index/{index_dir.name}", entries))
        for interface_kind in ("msg", "srv"):
            generated = stage / "share" / PACKAGE / interface_kind
            if generated.is_dir():
                files = sorted(str(p) for p in generated.iterdir())
                self.data_files.append((f"share/{PACKAGE}/{interface_kind}", files))
        super().run()


def ros2_run_launchers() -> list[Path]:
    """``<prefix>/lib/ceed_vla_ros/<name>`` for ``ros2 run`` / ``ros2 launch``, one per executable.

    Each hands over to the console script ``<prefix>/bin/<name>``, which pip writes with this
    environment's interpreter (the launchers CMake writes start ``python3`` from PATH instead,
    right for a ROS 2 install, not for a virtual environment).
    """
    folder = ROOT / "build" / "ros2-run-launchers"
    folder.mkdir(parents=True, exist_ok=True)
    launchers = []
    for entry in read_executables():
        name = entry.split("=")[0].strip()
        launcher = folder / name
        launcher.write_text(f'#!/bin/sh\nexec "$(dirname "$0")/../../bin/{name}" "$@"\n')
        launcher.chmod(0o755)
        launchers.append(launcher)
    return launchers


def tree_data_files(directory: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing ROOT/<directory> under share/<package>/<directory>."""
    entries = []
    for folder in sorted((ROOT / directory).rglob("*")) + [ROOT / directory]:
        if not folder.is_dir() or "__pycache__" in folder.parts:
            continue
        files = sorted(str(p.relative_to(ROOT)) for p in folder.iterdir() if p.is_file())
        if files:
            entries.append((f"share/{PACKAGE}/{folder.relative_to(ROOT)}", files))
    return entries


name, version, description = read_package_xml()

setup(
    name=name,
    version=version,
    description=description,
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["executables.txt", "**/*.xml", "**/*.yaml"]},
    data_files=[
        (f"share/{PACKAGE}", ["package.xml"]),
        *tree_data_files("launch"),
        *tree_data_files("config"),
        *tree_data_files("models"),
    ],
    entry_points={"console_scripts": read_executables()},
    cmdclass={"build_py": BuildPyWithInterfaces, "install_data": InstallDataWithInterfaces},
    options={"build": {"build_base": str(BUILD_BASE.relative_to(ROOT))}},
    zip_safe=False,
)

"""Per-period cost of the arm driver's control step, two source trees side by side in one run.

    python results/control_loop/step_cost.py BASE_SRC NEW_SRC [--joints 4 7] [--rounds 4]

BASE_SRC / NEW_SRC: folders that hold a ``ceed_vla_ros`` package (e.g. ``git worktree add /tmp/base
<commit>`` and the repository root). Each round runs ``ArmDriverCore.step`` at 500 Hz for 10,000
periods, a new 4-step joint_delta chunk every 0.1 s (what the sim suite sends), in a fresh
interpreter per tree, the trees alternating; prints the median over rounds of the per-period cost
and the ratio. CPU-only, no ROS; the machine's load shifts both the same way.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

PROBE = r"""
import sys, time
import numpy as np
from ceed_vla_ros.arm_control import ArmDriverCore, JointLimits
import ceed_vla_ros
ceed_vla_ros_file = ceed_vla_ros.__file__
n = int(sys.argv[1])
limits = JointLimits(names=tuple(f"j{i}" for i in range(n)), lower=(-2.0,) * n, upper=(2.0,) * n,
                     max_velocity=(2.0,) * n)
core = ArmDriverCore(limits=limits, control_period_s=0.002, watchdog_timeout_s=1e9, enable_actuation=True)
core.on_joint_state(0.0, np.zeros(n))
rng = np.random.default_rng(0)
now = 0.0
def run(periods):
    global now
    for i in range(periods):
        if i % 50 == 0:
            core.on_chunk(now, rng.uniform(-0.2, 0.2, (4, n)), "joint_delta", 0.1, now)
        core.step(now)
        now += 0.002
run(2000)
start = time.perf_counter()
run(10000)
print((time.perf_counter() - start) / 10000 * 1e6, ceed_vla_ros_file)
"""


def cost_us(src: str, joints: int) -> float:
    # run from an empty folder: ``python -c`` puts the working directory first on sys.path
    result = subprocess.run([sys.executable, "-c", PROBE, str(joints)], env={"PYTHONPATH": os.path.abspath(src)},
                            cwd=tempfile.gettempdir(), capture_output=True, text=True, check=True)
    cost, package = result.stdout.split()
    if not package.startswith(os.path.abspath(src)):
        raise RuntimeError(f"{src}: the probe imported {package}")
    return float(cost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_src")
    parser.add_argument("new_src")
    parser.add_argument("--joints", type=int, nargs="+", default=[4, 7])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    print("| joints | base us / period (median) | new us / period (median) | new / base |")
    print("|---:|---:|---:|---:|")
    for joints in args.joints:
        base, new = [], []
        for _ in range(args.rounds):
            base.append(cost_us(args.base_src, joints))
            new.append(cost_us(args.new_src, joints))
        b, n = statistics.median(base), statistics.median(new)
        print(f"| {joints} | {b:.1f} | {n:.1f} | {n / b:.2f} |")


if __name__ == "__main__":
    main()

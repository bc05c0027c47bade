"""Benchmarks of the robot side: ``ceed-vla bench-kinematics`` and ``ceed-vla bench-transitions``.

``bench-kinematics``: the cost of one IK solve of the arm driver (pinocchio DLS, position-only
on the 4-joint sim arm from ``config/sim_arm.urdf``, and full pose on a 6-joint arm), for targets
a chunk step away from the seed (what ``ee_delta`` chunks ask: FK of the seed + a random move of
``--step-cm``), with success rate and iterations, next to one forward kinematics call and to the
driver's control period: an IK solve per chunk step (not per control period) must be far below it.

``bench-transitions``: closed loop in the simulator with the arm driver's core in the loop
(ROS-free, simulated time, so every strategy sees the same seeds and the same timing): a camera
frame every ``step_dt`` (the policy re-plans every chunk step, as the ROS suite does), each chunk
arrives ``--latency-ms`` after its frame, the driver streams at ``--control-hz`` into the MuJoCo
position actuators. Strategies (``--strategies``):

* ``replace``: the new chunk replaces the rest of the old one (random-prompt-token init);
* ``warm_start``: the same, with the Jacobi block initialised from the previous chunk;
* ``temporal_ensemble``: ACT-style averaging of overlapping steps (``--ensemble-decay``);
* ``pin``: prefix pinning in the decoder: the steps executing by the time the chunk arrives
  (``ceil(latency / step_dt)``) are pinned to the previous chunk's tokens, the rest warm-started.

Motion profiles of the driver (``--motion``, each strategy runs with each): ``cubic`` (the driver's
default: cubic Hermite through the chunk's steps from the command's position and velocity, position,
velocity AND acceleration limits ``--max-acceleration``, decelerating stops) and ``linear`` (the
former driver: straight lines between the steps, position and velocity limits only).

Per strategy and profile: success with its 95 % Wilson interval, Jacobi iterations per chunk, the
peak |acceleration| and |jerk| of the commanded joint positions (second / third difference per
period^2 / period^3; the largest over all episodes and the mean of the episodes' peaks), RMS jerk,
and at the chunk boundaries the step in the commanded velocity (max over joints of |v after - v
before|) and in the target (max over joints of |new schedule - old schedule| one step ahead).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np

from ceed_vla_ros.tools.statistics import format_rate

STRATEGIES = ("replace", "warm_start", "temporal_ensemble", "pin")
MOTIONS = ("linear", "cubic")
DEFAULT_SEED = 5_000_000  # far from every recorded training seed


# -- bench-kinematics ---------------------------------------------------------------------------------
def add_kinematics_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--solves", type=int, default=2000, help="IK solves per arm")
    parser.add_argument("--step-cm", type=float, default=2.0, help="size of the random tip move per solve (cm)")
    parser.add_argument("--seed", type=int, default=0)


def kinematics_main(args: argparse.Namespace) -> int:
    from ceed_vla_ros.kinematics import ArmKinematics, rotation_matrix
    from ceed_vla_ros.paths import share_directory
    from ceed_vla_ros.sim.mjcf import JOINT_NAMES

    urdf = Path(__file__).resolve().parents[2] / "config" / "sim_arm.urdf"
    if not urdf.is_file():
        urdf = share_directory() / "config" / "sim_arm.urdf"
    six = _six_joint_urdf()
    arms = [("sim arm, 4 joints, position only", ArmKinematics.from_file(urdf, JOINT_NAMES, "base_link", "tool_tip"),
             False),
            ("6-joint arm, position + rotation", ArmKinematics(six, [f"j{i}" for i in range(1, 7)], "base", "tip"),
             True)]
    rng = np.random.default_rng(args.seed)
    print(f"{args.solves} IK solves per arm, targets {args.step_cm:g} cm (and up to 0.1 rad) from the seed's pose")
    print("| arm | solve us p50 / p99 | FK us | reached | iterations mean / max | solves per 5 ms control period |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for label, arm, with_rotation in arms:
        solve_us, fk_us, iterations, reached = [], [], [], 0
        for _ in range(args.solves):
            seed = rng.uniform(arm.lower * 0.8, arm.upper * 0.8)
            start = time.perf_counter()
            position, rotation = arm.forward(seed)
            fk_us.append((time.perf_counter() - start) * 1e6)
            direction = rng.normal(size=3)
            target_p = position + direction / np.linalg.norm(direction) * args.step_cm / 100.0
            target_r = rotation_matrix(rng.uniform(-0.1, 0.1, 3), "axis_angle") @ rotation if with_rotation else None
            start = time.perf_counter()
            result = arm.solve(target_p, target_r, seed)
            solve_us.append((time.perf_counter() - start) * 1e6)
            iterations.append(result.iterations)
            reached += result.reached
        p50, p99 = np.percentile(solve_us, [50, 99])
        row = dict(arm=label, solve_us_p50=p50, solve_us_p99=p99, fk_us=float(np.median(fk_us)),
                   reached=reached, solves=args.solves, iterations_mean=float(np.mean(iterations)),
                   iterations_max=int(np.max(iterations)))
        rows.append(row)
        print(f"| {label} | {p50:.0f} / {p99:.0f} | {row['fk_us']:.1f} | {format_rate(reached, args.solves)} | "
              f"{row['iterations_mean']:.1f} / {row['iterations_max']} | {5000 / p50:.0f} |")
    print("(targets whose IK is not reached from that seed include moves out of the workspace or past a joint "
          "limit: the driver refuses those chunks and holds)")
    return 0


def _six_joint_urdf() -> str:
    joints = [("z", "0 0 0.1"), ("y", "0 0 0.1"), ("y", "0.3 0 0"), ("x", "0.1 0 0"), ("y", "0.15 0 0"),
              ("x", "0.05 0 0")]
    links = "".join(f'<link name="l{i}"/>' for i in range(1, 7))
    body = "".join(
        f'<joint name="j{i}" type="revolute"><parent link="{"base" if i == 1 else f"l{i - 1}"}"/>'
        f'<child link="l{i}"/><origin xyz="{xyz}"/><axis xyz="{" ".join("1" if a == c else "0" for c in "xyz")}"/>'
        f'<limit lower="-2.5" upper="2.5" velocity="2" effort="1"/></joint>'
        for i, (a, xyz) in enumerate(joints, start=1))
    return (f'<?xml version="1.0"?><robot name="arm6"><link name="base"/>{links}<link name="tip"/>{body}'
            '<joint name="tip_joint" type="fixed"><parent link="l6"/><child link="tip"/>'
            '<origin xyz="0.05 0 0"/></joint></robot>')


# -- bench-transitions ---------------------------------------------------------------------------------
def add_transitions_arguments(parser: argparse.ArgumentParser) -> None:
    from ceed_vla_ros.paths import add_model_dir_argument

    parser.add_argument("--checkpoint", default="sim_student")
    parser.add_argument("--mode", default="early_exit", choices=("jacobi", "early_exit"))
    parser.add_argument("--early-exit-steps", type=int, default=2)
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--task", default="reach", choices=("reach", "push"))
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of episode 0 (episode i: seed + i)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="image -> chunk at the driver")
    parser.add_argument("--control-hz", type=float, default=100.0)
    parser.add_argument("--ensemble-decay", type=float, default=0.5)
    parser.add_argument("--motion", nargs="+", choices=MOTIONS, default=["cubic"],
                        help="driver motion profiles to run (each strategy with each): cubic (the driver's: "
                        "acceleration limits, cubic interpolation) and/or linear (the former driver)")
    parser.add_argument("--max-acceleration", type=float, default=20.0,
                        help="cubic: joint acceleration limit, rad/s^2 (config/sim_arm.yaml's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write <name>.json and <name>.md here")
    parser.add_argument("--name", default="results", help="file name stem of the results in --out")
    add_model_dir_argument(parser)


def run_transition_episode(env, policy, strategy: str, seed: int, decode, latency_s: float, control_hz: float,
                           ensemble_decay: float, motion: str = "cubic", max_acceleration: float = 20.0) -> dict:
    """One closed-loop episode with the driver core between the policy and the simulated arm."""
    from ceed_vla_ros.arm_control import ArmDriverCore, JointLimits
    from ceed_vla_ros.decoding import DecodeSettings

    obs = env.reset(seed=seed)
    policy.reset()
    metadata = policy.metadata
    dt = metadata.dt
    period = 1.0 / control_hz
    max_velocity = env.max_joint_step / env.dt
    limits = JointLimits(tuple(env.joint_names), tuple(env.joint_limits[:, 0]), tuple(env.joint_limits[:, 1]),
                         (max_velocity,) * len(env.joint_names), (max_acceleration,) * len(env.joint_names))
    driver = ArmDriverCore(limits=limits, control_period_s=period, watchdog_timeout_s=0.5, enable_actuation=True,
                           chunk_transition="temporal_ensemble" if strategy == "temporal_ensemble" else "replace",
                           ensemble_decay=ensemble_decay, motion=motion, plan_trajectories=False)
    settings = DecodeSettings(decode.mode, decode.early_exit_steps,
                              "warm_start" if strategy in ("warm_start", "pin") else "random_prompt_tokens")
    pin_steps = max(1, math.ceil(latency_s / dt - 1e-9)) if strategy == "pin" else 0
    horizon_s = env.horizon * env.dt
    ticks_per_frame = max(1, int(round(dt * control_hz)))
    latency_ticks = int(round(latency_s * control_hz))
    driver.on_joint_state(0.0, env.joint_positions)
    pending: list[tuple[int, float, np.ndarray]] = []
    commands, iterations, velocity_steps, target_steps = [], [], [], []
    previous_stamp, success = None, False
    for tick in range(int(round(horizon_s * control_hz))):
        now = tick * period
        if tick % ticks_per_frame == 0:
            steps_executed = None if previous_stamp is None else int(round((now - previous_stamp) / dt))
            out = policy.predict(env.render_current(), env.joint_positions, obs["instruction"], settings,
                                 steps_executed=steps_executed, pin_steps=pin_steps)
            previous_stamp = now
            iterations.append(out.stats.iterations)
            pending.append((tick + latency_ticks, now, out.actions))
        while pending and pending[0][0] <= tick:
            _, stamp, actions = pending.pop(0)
            old = driver._chunk
            ahead = now + dt
            before = None if old is None or old.finished(now) else old.sample(ahead)
            accepted, _ = driver.on_chunk(stamp, actions, metadata.action_space, dt, now)
            if accepted and before is not None:
                target_steps.append(float(np.max(np.abs(driver._chunk.sample(ahead) - before))))
                velocity_steps.append(len(commands))  # index of the first command under the new chunk
        command = driver.step(now)
        commands.append(command.positions)
        env.set_joint_command(command.positions)
        env.advance(period)
        driver.on_joint_state(now + period, env.joint_positions)
        if env.success():
            success = True
            break
    commands = np.array(commands)
    velocity = np.diff(commands, axis=0) / period
    acceleration = np.diff(commands, n=2, axis=0) / period**2
    jerk = np.diff(commands, n=3, axis=0) / period**3
    steps = [float(np.max(np.abs(velocity[i] - velocity[i - 1]))) for i in velocity_steps if 1 <= i < len(velocity)]
    return dict(success=success, iterations=iterations, velocity_steps=steps, target_steps=target_steps,
                jerk_sq=float(np.sum(jerk**2)), jerk_n=int(jerk.size),
                peak_acceleration=float(np.abs(acceleration).max(initial=0.0)),
                peak_jerk=float(np.abs(jerk).max(initial=0.0)))


def transitions_main(args: argparse.Namespace) -> int:
    import torch

    from ceed_vla_ros.checkpoint import load_checkpoint
    from ceed_vla_ros.decoding import DecodeSettings
    from ceed_vla_ros.paths import model_dir_argument
    from ceed_vla_ros.policy import CeedVlaPolicy
    from ceed_vla_ros.sim.env import TabletopArmEnv

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(model_dir_argument(args.model_dir), args.checkpoint)
    decode = DecodeSettings(args.mode, args.early_exit_steps if args.mode == "early_exit" else None)
    rows = []
    start = time.perf_counter()
    with TabletopArmEnv(task=args.task, image_size=checkpoint.metadata.image.height) as env:
        for strategy, motion in ((s, m) for s in args.strategies for m in args.motion):
            policy = CeedVlaPolicy(checkpoint, decode, seed=args.seed)
            episodes = []
            for i in range(args.episodes):
                episodes.append(run_transition_episode(env, policy, strategy, args.seed + i, decode,
                                                       args.latency_ms / 1000.0, args.control_hz,
                                                       args.ensemble_decay, motion, args.max_acceleration))
                ok = sum(e["success"] for e in episodes)
                print(f"\r{strategy} {motion}: {i + 1}/{args.episodes} episodes, {ok} successes", end="", flush=True)
            print()
            successes = sum(e["success"] for e in episodes)
            iterations = [n for e in episodes for n in e["iterations"]]
            velocity_steps = [s for e in episodes for s in e["velocity_steps"]]
            target_steps = [s for e in episodes for s in e["target_steps"]]
            jerk_rms = math.sqrt(sum(e["jerk_sq"] for e in episodes) / max(1, sum(e["jerk_n"] for e in episodes)))
            rows.append(dict(strategy=strategy, motion=motion, successes=successes, episodes=len(episodes),
                             iterations_mean=statistics.fmean(iterations), jerk_rms=jerk_rms,
                             peak_acceleration=max(e["peak_acceleration"] for e in episodes),
                             peak_acceleration_mean=statistics.fmean(e["peak_acceleration"] for e in episodes),
                             peak_jerk=max(e["peak_jerk"] for e in episodes),
                             peak_jerk_mean=statistics.fmean(e["peak_jerk"] for e in episodes),
                             velocity_step_mean=statistics.fmean(velocity_steps) if velocity_steps else 0.0,
                             velocity_step_p95=float(np.percentile(velocity_steps, 95)) if velocity_steps else 0.0,
                             target_step_mean=statistics.fmean(target_steps) if target_steps else 0.0,
                             boundaries=len(velocity_steps)))
    header = (f"{args.checkpoint} {args.mode}{f' k={args.early_exit_steps}' if args.mode == 'early_exit' else ''}, "
              f"{args.task}, seeds {args.seed}-{args.seed + args.episodes - 1}, latency {args.latency_ms:g} ms, "
              f"control {args.control_hz:g} Hz, ensemble decay {args.ensemble_decay:g}, max velocity 2 rad/s, "
              f"cubic: max acceleration {args.max_acceleration:g} rad/s^2, "
              f"{time.perf_counter() - start:.0f} s")
    table = [header, "",
             "| strategy | motion | success | Jacobi iterations / chunk | peak acceleration rad/s^2 max / mean | "
             "peak jerk rad/s^3 max / mean | RMS jerk rad/s^3 | boundary velocity step rad/s mean / p95 | "
             "boundary target step rad mean |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        table.append(f"| {r['strategy']} | {r['motion']} | {format_rate(r['successes'], r['episodes'])} | "
                     f"{r['iterations_mean']:.2f} | {r['peak_acceleration']:.0f} / {r['peak_acceleration_mean']:.0f} | "
                     f"{r['peak_jerk']:.0f} / {r['peak_jerk_mean']:.0f} | {r['jerk_rms']:.0f} | "
                     f"{r['velocity_step_mean']:.3f} / {r['velocity_step_p95']:.3f} | {r['target_step_mean']:.4f} |")
    by = {(r["strategy"], r["motion"]): r for r in rows}
    for strategy in args.strategies:
        if (strategy, "linear") in by and (strategy, "cubic") in by:
            lin, cub = by[(strategy, "linear")], by[(strategy, "cubic")]
            ratios = {key: cub[key] / lin[key] if lin[key] else float("nan")
                      for key in ("peak_acceleration", "peak_jerk", "jerk_rms")}
            table.append(f"\n{strategy}, cubic / linear: peak acceleration x{ratios['peak_acceleration']:.3f}, "
                         f"peak jerk x{ratios['peak_jerk']:.3f}, RMS jerk x{ratios['jerk_rms']:.3f}")
    text = "\n".join(table) + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.md").write_text(
            f"`{getattr(args, 'command_line', 'ceed-vla bench-transitions')}`\n\n" + text)
        (args.out / f"{args.name}.json").write_text(json.dumps(dict(meta=header, rows=rows), indent=2))
        print(f"results in {args.out}")
    return 0

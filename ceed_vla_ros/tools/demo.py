"""``ceed-vla demo``: a simulated robot's suite end to end, a handful of episodes with live progress, a summary.

Starts the sim bring-up of ``--robot`` (simulated robot, camera subscriber, policy, arm driver; the
same processes as ``ceed-vla launch <setup>``), then for each episode resets the simulated robot to
a seed through ``/sim_arm/reset_episode``, waits until ``/sim_arm/success`` turns true or the
episode times out, and shows success so far, the policy's chunk rate and its Jacobi iterations from
``/actions``. Node output goes to a log file whose path is printed.

Options (``ceed-vla demo --help``):

* ``--robot arm|gripper_arm`` (default ``arm``): which bring-up starts, see :data:`ROBOTS`:
  ``arm`` is setup ``sim_arm`` (4-joint arm, default task ``reach``), ``gripper_arm`` is setup
  ``sim_gripper_arm`` (6-joint arm with a gripper, default task ``pick``, and a wrist camera).
* ``--task``: the episodes' task (default: the robot's); ``--seed`` the first episode's seed (+1
  per episode); ``--episodes``, ``--episode-timeout``, ``--startup-timeout``, ``--log``.
* ``name:=value`` launch arguments of the setup (``checkpoint:=``, ``model_dir:=``,
  ``decoding_mode:=``, ``early_exit_steps:=`` ...), as for ``ceed-vla launch``.
* ``--video PATH`` (``.mp4``: H.264 through PyAV; ``.gif``: Pillow, e.g. for a README; give it
  twice for both from one run): every front-camera frame (``/camera/image_raw`` of ``sim_arm``)
  received during each episode, in arrival order at the sim's ``camera_rate_hz``, scaled to
  ``--video-size`` px square (default 256; nearest neighbour when enlarging, area when shrinking),
  above a caption band: the instruction; the decoding mode and the policy's rate (chunks/s over
  the last second of ``/actions``); the latest chunk's Jacobi iterations, forward passes and
  decode time; the episode index, seed and success so far. Frames stamped before the episode's
  reset frame (the previous episode's) are skipped; after a success the video goes on for
  :data:`HOLD_AFTER_SUCCESS_S`. The file's path and frame count are printed at the end.
* ``--wrist``: the wrist camera (``/wrist_camera/image_raw``) side by side with the front one
  (the latest wrist frame with each front frame; robots with a wrist camera only).

The written frame is ``(panels x SIZE)`` wide and ``SIZE + caption_band_height(SIZE)`` high.
"""

from __future__ import annotations

import argparse
import collections
import os
import queue
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ceed_vla_ros.bringup import get_setup
from ceed_vla_ros.tools.launcher import NodeSuite


@dataclass(frozen=True)
class DemoRobot:
    """What ``--robot`` chooses: the bring-up setup, its tasks and cameras."""

    setup: str
    default_task: str
    tasks: tuple[str, ...]
    wrist_camera: bool = False


ROBOTS: dict[str, DemoRobot] = {
    "arm": DemoRobot("sim_arm", "reach", ("reach", "push")),
    "gripper_arm": DemoRobot("sim_gripper_arm", "pick", ("pick", "reach"), wrist_camera=True),
}
"""``--robot`` -> bring-up; ``arm`` is the default."""

WRIST_CAMERA_TOPIC = "/wrist_camera/image_raw"
"""The sim_arm node's wrist camera (robots with one), like ``/camera/image_raw`` in the root namespace."""
VIDEO_SUFFIXES = (".mp4", ".gif")
DEFAULT_VIDEO_SIZE = 256
HOLD_AFTER_SUCCESS_S = 0.5
"""With ``--video``, frames are still written this long after a success (the caption shows it)."""
RATE_WINDOW_S = 1.0
_START_STAMP = re.compile(r"episode start stamp (\d+)\.(\d+)")


@dataclass
class ActionLog:
    """Chunks seen on /actions during one episode."""

    stamps: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)

    def rate_hz(self) -> float:
        if len(self.stamps) < 2:
            return 0.0
        return (len(self.stamps) - 1) / (self.stamps[-1] - self.stamps[0])


@dataclass
class EpisodeResult:
    seed: int
    instruction: str
    success: bool
    seconds: float
    actions: ActionLog


# ----------------------------------------------------------------------------------------------
# video: captions, frames, writers


def policy_rate_hz(stamps, now: float, window_s: float = RATE_WINDOW_S) -> float:
    """Chunks/s from the arrival times (monotonic s, ascending) of /actions: over the chunks of the
    last ``window_s``; with fewer than two there, 1 / the last gap while the last chunk is recent
    (under 2 s); else 0 (no policy output)."""
    recent = [t for t in stamps if now - t <= window_s]
    if len(recent) >= 2 and recent[-1] > recent[0]:
        return (len(recent) - 1) / (recent[-1] - recent[0])
    if len(stamps) >= 2 and now - stamps[-1] <= 2.0 and stamps[-1] > stamps[-2]:
        return 1.0 / (stamps[-1] - stamps[-2])
    return 0.0


def decoding_label(mode: str, early_exit_steps: int) -> str:
    """``/actions``' decoding_mode as shown in the caption."""
    if mode == "early_exit":
        return f"early exit k={early_exit_steps}" if early_exit_steps else "early exit"
    return {"ar": "AR", "jacobi": "Jacobi"}.get(mode, mode or "-")


def caption_lines(*, instruction: str, chunk, rate_hz: float, episode: int, episodes: int, seed: int,
                  successes: int, finished: int, succeeded: bool) -> list[str]:
    """The caption band's four lines. ``chunk``: the latest ActionTokens (None before the first);
    ``successes``/``finished``: the episodes before this one; ``succeeded``: this one has."""
    if chunk is None:
        mode, decode = "-", "no chunk yet"
    else:
        mode = decoding_label(chunk.decoding_mode, chunk.early_exit_steps)
        decode = (f"{chunk.iterations} it/chunk, {chunk.forward_passes} passes, "
                  f"{chunk.decode_time_ms:.0f} ms")
    done = finished + (1 if succeeded else 0)
    outcome = " - success" if succeeded else ""
    return [
        instruction or "-",
        f"{mode} | policy {rate_hz:.1f} Hz",
        decode,
        f"ep {episode}/{episodes} seed {seed} | success {successes + (1 if succeeded else 0)}/{done}{outcome}",
    ]


CAPTION_LINES = 4
_BAND_BACKGROUND = (24, 24, 24)
_TEXT = (240, 240, 240)
_TEXT_SUCCESS = (90, 230, 90)


def _font_scale(size: int) -> float:
    return max(0.35, size / 512)


def _line_height(size: int) -> int:
    import cv2

    (_, text_h), baseline = cv2.getTextSize("Hg", cv2.FONT_HERSHEY_SIMPLEX, _font_scale(size), 1)
    return text_h + baseline + max(2, size // 64)


def caption_band_height(size: int) -> int:
    """Height (px, even) of the caption band under ``size`` px camera panels."""
    height = CAPTION_LINES * _line_height(size) + max(4, size // 32)
    return height + height % 2


def _band_top(size: int) -> int:
    return max(2, size // 64)


def caption_line_rows(size: int, index: int) -> tuple[int, int]:
    """Rows [start, stop) of caption line ``index`` in a written frame (``size`` px panels)."""
    start = size + _band_top(size) + index * _line_height(size)
    return start, start + _line_height(size)


def video_frame_shape(size: int, panels: int) -> tuple[int, int]:
    """(height, width) of a written frame."""
    return size + caption_band_height(size), size * panels


def _panel(rgb: np.ndarray | None, size: int) -> np.ndarray:
    import cv2

    if rgb is None:
        return np.zeros((size, size, 3), dtype=np.uint8)
    height, width = rgb.shape[:2]
    if (height, width) == (size, size):
        return rgb
    enlarge = size >= max(height, width)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_NEAREST if enlarge else cv2.INTER_AREA)


def _put_line(band: np.ndarray, text: str, y: int, scale: float, colour) -> None:
    """Draw ``text`` left-aligned at baseline ``y``, shrunk (then cut with ...) to the band's width."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    margin = max(3, band.shape[1] // 80)
    room = band.shape[1] - 2 * margin
    width = cv2.getTextSize(text, font, scale, 1)[0][0]
    if width > room:
        scale = max(scale * room / width, scale * 0.7)
        while len(text) > 1 and cv2.getTextSize(text, font, scale, 1)[0][0] > room:
            text = text[:-4].rstrip() + "..." if len(text) > 4 else text[:-1]
    cv2.putText(band, text, (margin, y), font, scale, colour, 1, cv2.LINE_AA)


def compose_frame(images: list[np.ndarray | None], lines: list[str], size: int,
                  highlight_last: bool = False) -> np.ndarray:
    """One video frame: the camera images (RGB) side by side, each ``size`` px square (None: black),
    above the caption band holding ``lines``."""
    import cv2

    picture = np.concatenate([_panel(image, size) for image in images], axis=1)
    band = np.empty((caption_band_height(size), picture.shape[1], 3), dtype=np.uint8)
    band[:] = _BAND_BACKGROUND
    scale = _font_scale(size)
    line_h = _line_height(size)
    (_, text_h), _ = cv2.getTextSize("Hg", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    top = _band_top(size)
    for i, text in enumerate(lines[:CAPTION_LINES]):
        colour = _TEXT_SUCCESS if highlight_last and i == len(lines) - 1 else _TEXT
        _put_line(band, text, top + i * line_h + text_h, scale, colour)
    return np.ascontiguousarray(np.concatenate([picture, band], axis=0))


class Mp4Writer:
    """H.264 (yuv420p) mp4 through PyAV, one frame per call at ``fps``."""

    def __init__(self, path: Path, shape: tuple[int, int], fps: Fraction) -> None:
        import av

        height, width = shape
        self.path = path
        self.container = av.open(str(path), "w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "veryfast"})
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.time_base = 1 / fps
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.frames
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


class GifWriter:
    """Animated GIF through Pillow (frames kept palettised in memory, written at close). Pillow stores
    identical consecutive frames as one that lasts as long; ``frames`` counts the frames given."""

    def __init__(self, path: Path, shape: tuple[int, int], fps: Fraction) -> None:
        from PIL import Image

        self.path = path
        self.duration_ms = max(20, 10 * round(100 / float(fps)))  # GIF delays are whole 1/100 s
        self.images: list = []
        self.frames = 0
        path.write_bytes(b"")  # an unwritable path fails now, not after the episodes
        self._image = Image

    def write(self, rgb: np.ndarray) -> None:
        image = self._image.fromarray(rgb, "RGB")
        self.images.append(image.quantize(colors=256, method=self._image.Quantize.FASTOCTREE,
                                          dither=self._image.Dither.NONE))
        self.frames += 1

    def close(self) -> None:
        if not self.images:
            return
        first, *rest = self.images
        first.save(self.path, save_all=True, append_images=rest, duration=self.duration_ms, loop=0)
        self.images = []


def open_video_writer(path: Path, shape: tuple[int, int], fps: Fraction):
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        return Mp4Writer(path, shape, fps)
    if suffix == ".gif":
        return GifWriter(path, shape, fps)
    raise ValueError(f"--video {path}: write .mp4 or .gif")


class VideoRecorder:
    """Composes and writes frames on its own thread (the ROS callbacks only queue them)."""

    def __init__(self, paths: list[Path], size: int, panels: int, fps: Fraction) -> None:
        self.size, self.panels, self.fps = size, panels, fps
        self.shape = video_frame_shape(size, panels)
        self.writers = []
        try:
            for path in paths:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.writers.append(open_video_writer(path, self.shape, fps))
        except BaseException:
            for writer in self.writers:
                writer.close()
            raise
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="demo_video", daemon=True)
        self._thread.start()

    def add(self, images: list[np.ndarray | None], lines: list[str], success: bool) -> None:
        self._queue.put((images, lines, success))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            images, lines, success = item
            try:
                frame = compose_frame(images, lines, self.size, highlight_last=success)
                for writer in self.writers:
                    writer.write(frame)
            except Exception as error:  # reported at close; the episodes go on
                self.error = error

    def close(self) -> list[tuple[Path, int]]:
        """Write out the queued frames and finish the files; [(path, frames written)]."""
        self._queue.put(None)
        self._thread.join()
        for writer in self.writers:
            try:
                writer.close()
            except Exception as error:
                self.error = self.error or error
        return [(writer.path, writer.frames) for writer in self.writers]


def camera_rate_hz(setup, values: dict[str, str]) -> float:
    """The sim's camera_rate_hz: a ``camera_rate_hz:=`` argument, else the setup's parameter file."""
    from ceed_vla_ros.bringup import read_parameters

    if "camera_rate_hz" in values:
        return float(values["camera_rate_hz"])
    return float(read_parameters(setup.params_path()).get("sim_arm", {}).get("camera_rate_hz", 15.0))


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def episode_start_ns(message: str) -> int | None:
    """The reset frame's stamp in a ResetEpisode response message (ns), or None if it names none."""
    found = _START_STAMP.search(message)
    return int(found.group(1)) * 1_000_000_000 + int(found.group(2)) if found else None


# ----------------------------------------------------------------------------------------------
# episodes


def run_episodes(args: argparse.Namespace, progress, recorder: VideoRecorder | None = None) -> list[EpisodeResult]:
    """Drive the already running suite through the episodes (a probe node in this process)."""
    from ceed_vla_ros.nodes.interfaces import probe_node

    with probe_node("ceed_vla_demo") as node:
        return _drive_episodes(node, args, progress, recorder)


def _drive_episodes(node, args: argparse.Namespace, progress, recorder: VideoRecorder | None = None
                    ) -> list[EpisodeResult]:
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Bool

    from ceed_vla_ros.image_conversion import ImageConversionError, image_to_rgb
    from ceed_vla_ros.msg import ActionTokens
    from ceed_vla_ros.nodes.interfaces import (
        ACTIONS_TOPIC,
        SIM_CAMERA_TOPIC,
        SIM_RESET_SERVICE,
        SIM_SUCCESS_TOPIC,
    )
    from ceed_vla_ros.nodes.rclpy_compat import call_service
    from ceed_vla_ros.srv import ResetEpisode

    lock = threading.Lock()
    state = {"success": False, "armed": False, "log": ActionLog()}
    # video: None between episodes (frames dropped), "pending" while a reset is in flight (frames kept
    # until its start stamp is known), "on" during an episode
    video = {"mode": None, "pending": [], "start_ns": 0, "wrist": None, "chunk": None, "instruction": "",
             "episode": 0, "seed": 0, "successes": 0, "finished": 0, "bad_frames": 0}
    chunk_times: collections.deque = collections.deque(maxlen=256)
    use_wrist = bool(getattr(args, "wrist", False))

    def on_success(msg: Bool) -> None:
        # /sim_arm/success is in order but carries no stamp: a True still in flight from the previous
        # episode could arrive after the reset. Every episode starts at the home pose (not a success),
        # so count True only after the first False that follows the reset.
        with lock:
            if not state["armed"]:
                state["armed"] = not msg.data
                return
            state["success"] = state["success"] or msg.data

    def on_actions(msg: ActionTokens) -> None:
        now = time.monotonic()
        with lock:
            log = state["log"]
            log.stamps.append(now)
            log.iterations.append(msg.iterations)
            log.decode_ms.append(msg.decode_time_ms)
            chunk_times.append(now)
            video["chunk"] = msg

    def queue_frame(rgb: np.ndarray) -> None:
        """(under the lock) one front frame of the episode in progress, with its caption now."""
        wrist = None
        if use_wrist and video["wrist"] is not None and video["wrist"][0] >= video["start_ns"]:
            wrist = video["wrist"][1]
        lines = caption_lines(instruction=video["instruction"], chunk=video["chunk"],
                              rate_hz=policy_rate_hz(chunk_times, time.monotonic()), episode=video["episode"],
                              episodes=args.episodes, seed=video["seed"], successes=video["successes"],
                              finished=video["finished"], succeeded=state["success"])
        recorder.add([rgb, wrist] if use_wrist else [rgb], lines, state["success"])

    def to_rgb(msg: Image) -> np.ndarray | None:
        try:
            return image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data)
        except ImageConversionError:
            video["bad_frames"] += 1
            return None

    def on_image(msg: Image) -> None:
        with lock:
            if video["mode"] is None:
                return
            rgb = to_rgb(msg)
            if rgb is None:
                return
            stamp = _stamp_ns(msg.header.stamp)
            if video["mode"] == "pending":
                video["pending"].append((stamp, rgb))
            elif stamp >= video["start_ns"]:
                queue_frame(rgb)

    def on_wrist(msg: Image) -> None:
        with lock:
            if video["mode"] is None:
                return
            rgb = to_rgb(msg)
            if rgb is not None:
                video["wrist"] = (_stamp_ns(msg.header.stamp), rgb)

    node.create_subscription(Bool, SIM_SUCCESS_TOPIC, on_success, 10)
    node.create_subscription(ActionTokens, ACTIONS_TOPIC, on_actions, 10)
    if recorder is not None:
        node.create_subscription(Image, SIM_CAMERA_TOPIC, on_image, qos_profile_sensor_data)
        if use_wrist:
            node.create_subscription(Image, WRIST_CAMERA_TOPIC, on_wrist, qos_profile_sensor_data)
    reset = node.create_client(ResetEpisode, SIM_RESET_SERVICE)
    results: list[EpisodeResult] = []
    try:
        if not reset.wait_for_service(timeout_sec=args.startup_timeout):
            raise RuntimeError(f"/sim_arm/reset_episode did not appear within {args.startup_timeout:.0f} s")
        deadline = time.monotonic() + args.startup_timeout
        while time.monotonic() < deadline and not state["log"].stamps:
            time.sleep(0.1)  # the policy loads and warms up before its first chunk
        if not state["log"].stamps:
            raise RuntimeError(f"no /actions within {args.startup_timeout:.0f} s: see the node log")
        for index in range(args.episodes):
            seed = args.seed + index
            if recorder is not None:
                with lock:
                    video["mode"], video["pending"] = "pending", []
            response = call_service(reset, ResetEpisode.Request(task=args.task, seed=seed, colour=""), 10.0)
            if response is None or not response.success:
                raise RuntimeError(f"reset to seed {seed} failed: {response.message if response else 'timeout'}")
            with lock:
                state["success"], state["armed"], state["log"] = False, False, ActionLog()
                if recorder is not None:
                    start_ns = episode_start_ns(response.message)
                    video.update(instruction=response.instruction, episode=index + 1, seed=seed,
                                 start_ns=start_ns if start_ns is not None else 0, mode="on")
                    for stamp, rgb in video["pending"]:
                        if start_ns is None or stamp >= start_ns:
                            queue_frame(rgb)
                    video["pending"] = []
            started = time.monotonic()
            while time.monotonic() - started < args.episode_timeout and not state["success"]:
                time.sleep(0.05)
            with lock:
                result = EpisodeResult(seed, response.instruction, state["success"], time.monotonic() - started,
                                       state["log"])
            if recorder is not None:
                if result.success:
                    time.sleep(HOLD_AFTER_SUCCESS_S)  # a few frames with the success in the caption
                with lock:
                    video["mode"] = None
                    video["successes"] += result.success
                    video["finished"] += 1
            results.append(result)
            progress(result, results)
    finally:
        with lock:
            video["mode"] = None
        node.destroy_client(reset)
    return results


def summary_table(results: list[EpisodeResult]) -> str:
    rows = ["| episode | seed | instruction | success | time s | chunks/s | median iterations | median decode ms |",
            "|---:|---:|---|:---:|---:|---:|---:|---:|"]
    for i, r in enumerate(results, 1):
        iterations = statistics.median(r.actions.iterations) if r.actions.iterations else float("nan")
        decode = statistics.median(r.actions.decode_ms) if r.actions.decode_ms else float("nan")
        rows.append(f"| {i} | {r.seed} | {r.instruction} | {'yes' if r.success else 'no'} | {r.seconds:.1f} | "
                    f"{r.actions.rate_hz():.1f} | {iterations:.0f} | {decode:.1f} |")
    successes = sum(r.success for r in results)
    rows.append(f"\nsuccess: {successes}/{len(results)}")
    return "\n".join(rows)


def _video_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--video-size takes an integer, got {text!r}") from None
    if size < 32 or size > 2048 or size % 2:
        raise argparse.ArgumentTypeError(f"--video-size must be an even number of pixels in 32-2048, got {size}")
    return size


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "--video: each frame is the camera image (with --wrist: both) scaled to --video-size px square above a "
        "caption band, one frame per camera frame received during an episode, at the sim's camera_rate_hz. "
        "Example: ceed-vla demo --episodes 3 --video demo.mp4 --video demo.gif")
    all_tasks = sorted({task for robot in ROBOTS.values() for task in robot.tasks})
    parser.add_argument("--robot", choices=tuple(ROBOTS), default="arm",
                        help="simulated robot: " + "; ".join(
                            f"{name}: setup {r.setup}, tasks {' | '.join(r.tasks)}"
                            + (", wrist camera" if r.wrist_camera else "") for name, r in ROBOTS.items())
                        + " (default arm)")
    parser.add_argument("--episodes", type=int, default=5, help="episodes to run (default 5)")
    parser.add_argument("--task", choices=all_tasks, default=None,
                        help="task of the episodes (default: the robot's first, reach for arm, pick for gripper_arm)")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first episode (+1 per episode)")
    parser.add_argument("--episode-timeout", type=float, default=10.0, help="seconds before an episode fails")
    parser.add_argument("--startup-timeout", type=float, default=90.0, help="seconds to wait for the suite")
    parser.add_argument("--log", default=None, help="node log file (default: a new file in the temp dir)")
    parser.add_argument("--video", type=Path, action="append", default=[], metavar="PATH",
                        help="write the episodes' camera frames with a caption (instruction, decoding mode, policy "
                             "Hz, iterations per chunk, episode, seed, success so far) to PATH: .mp4 (H.264) or "
                             ".gif; may be given twice (e.g. an .mp4 and a .gif of the same run)")
    parser.add_argument("--video-size", type=_video_size, default=DEFAULT_VIDEO_SIZE, metavar="PX",
                        help=f"side of each camera image in the video, px (even; default {DEFAULT_VIDEO_SIZE}); "
                             "the caption band is added below")
    parser.add_argument("--wrist", action="store_true",
                        help=f"with --video: the wrist camera ({WRIST_CAMERA_TOPIC}) beside the front one "
                             "(robots with a wrist camera)")
    parser.add_argument("assignments", nargs="*", metavar="name:=value",
                        help="launch arguments of the robot's bring-up, e.g. checkpoint:=sim_teacher "
                             "decoding_mode:=ar early_exit_steps:=3")


def cli_main(args: argparse.Namespace) -> int:
    from ceed_vla_ros.bringup import parse_assignments

    robot = ROBOTS[args.robot]
    args.task = args.task or robot.default_task
    if args.task not in robot.tasks:
        print(f"ceed-vla demo: the {args.robot} robot does tasks {', '.join(robot.tasks)}, not {args.task!r}",
              file=sys.stderr)
        return 2
    if args.wrist and not robot.wrist_camera:
        print(f"ceed-vla demo: --wrist: the {args.robot} robot has no wrist camera", file=sys.stderr)
        return 2
    for path in args.video:
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            print(f"ceed-vla demo: --video {path}: write {' or '.join(VIDEO_SUFFIXES)}", file=sys.stderr)
            return 2
    try:
        setup = get_setup(robot.setup)
        values = parse_assignments(args.assignments, setup)
    except ValueError as error:
        print(f"ceed-vla demo: {error}", file=sys.stderr)
        return 2
    values.setdefault("task", args.task)
    recorder = None
    if args.video:
        fps = Fraction(camera_rate_hz(setup, values)).limit_denominator(1001)
        try:
            recorder = VideoRecorder(args.video, args.video_size, 2 if args.wrist else 1, fps)
        except (OSError, ValueError) as error:
            print(f"ceed-vla demo: cannot write the video: {error}", file=sys.stderr)
            return 2
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    log_path = args.log or tempfile.mkstemp(prefix="ceed_vla_demo_", suffix=".log")[1]
    print(f"starting the {setup.name} suite ({', '.join(n.name for n in setup.nodes)}), task {args.task}; "
          f"node log: {log_path}", flush=True)
    try:
        code, results, dead = _run_suite(args, setup, values, log_path, recorder)
    except BaseException:  # Ctrl-C: the frames so far are still written out
        if recorder is not None:
            _print_videos(recorder, recorder.close())
        raise
    written = recorder.close() if recorder is not None else []
    if results is not None:
        print(summary_table(results))
    _print_videos(recorder, written)
    if recorder is not None:
        if recorder.error is not None:
            print(f"ceed-vla demo: writing the video failed: {recorder.error!r}", file=sys.stderr)
            code = code or 1
        elif results is not None and not any(frames for _, frames in written):
            print(f"ceed-vla demo: no camera frames on /camera/image_raw during the episodes; see {log_path}",
                  file=sys.stderr)
            code = code or 1
    if dead and results is not None:
        print(f"nodes that exited during the demo: {dead}; see {log_path}", file=sys.stderr)
        return 1
    return code


def _print_videos(recorder: VideoRecorder | None, written: list[tuple[Path, int]]) -> None:
    for path, frames in written:
        height, width = recorder.shape
        print(f"video: {path} ({frames} frames, {width}x{height} px, {float(recorder.fps):g} fps)", flush=True)


def _run_suite(args, setup, values, log_path, recorder):
    """(exit code, results or None on failure, nodes that exited)."""
    from tqdm import tqdm

    with open(log_path, "w") as log, NodeSuite(setup, values, output=log) as suite:
        bar = tqdm(total=args.episodes, unit="episode", desc="demo", dynamic_ncols=True)

        def progress(result: EpisodeResult, results: list[EpisodeResult]) -> None:
            successes = sum(r.success for r in results)
            iterations = result.actions.iterations
            bar.set_postfix_str(f"success {successes}/{len(results)}, policy {result.actions.rate_hz():.1f} Hz, "
                                f"iterations {statistics.median(iterations) if iterations else float('nan'):.0f}")
            bar.update(1)

        try:
            results = run_episodes(args, progress, recorder)
        except RuntimeError as error:
            bar.close()
            print(f"ceed-vla demo: {error}", file=sys.stderr)
            dead = suite.dead_nodes()
            if dead:
                print(f"nodes that exited: {dead}", file=sys.stderr)
            return 1, None, dead
        bar.close()
        return 0, results, suite.dead_nodes()

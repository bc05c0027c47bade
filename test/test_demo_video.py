"""``ceed-vla demo --video``: captioned frames (no DDS), then one short episode of the sim suite over real
DDS written to an .mp4 and a .gif that are decoded back and checked (size, frame count, caption band)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ceed_vla_ros.tools import demo

REPO_ROOT = Path(__file__).resolve().parents[1]


def _lines(instruction="reach the red cube", succeeded=False):
    chunk = SimpleNamespace(decoding_mode="early_exit", early_exit_steps=2, iterations=2, forward_passes=3,
                            decode_time_ms=11.4)
    return demo.caption_lines(instruction=instruction, chunk=chunk, rate_hz=14.96, episode=2, episodes=5, seed=1001,
                              successes=1, finished=1, succeeded=succeeded)


def test_caption_names_mode_rate_iterations_episode_and_success():
    lines = _lines()
    assert lines[0] == "reach the red cube"
    assert lines[1] == "early exit k=2 | policy 15.0 Hz"
    assert lines[2] == "2 it/chunk, 3 passes, 11 ms"
    assert lines[3] == "ep 2/5 seed 1001 | success 1/1"
    assert _lines(succeeded=True)[3] == "ep 2/5 seed 1001 | success 2/2 - success"
    assert demo.decoding_label("ar", 0) == "AR" and demo.decoding_label("jacobi", 0) == "Jacobi"


def test_policy_rate_is_chunks_per_second_over_the_last_second():
    stamps = [10.0 + 0.1 * i for i in range(31)]  # 10 Hz up to 13.0 s
    assert demo.policy_rate_hz(stamps, 13.0) == pytest.approx(10.0)
    assert demo.policy_rate_hz([0.0, 0.5, 1.0, 1.5, 2.0], 2.0) == pytest.approx(2.0)  # 1.0 .. 2.0: 2 gaps in 1 s
    assert demo.policy_rate_hz([1.0, 2.0], 2.5) == pytest.approx(1.0)  # one chunk in the window: the last gap
    assert demo.policy_rate_hz(stamps, 20.0) == 0.0  # the policy went quiet
    assert demo.policy_rate_hz([], 1.0) == 0.0


def test_episode_start_stamp_is_read_from_the_reset_message():
    message = "task reach, seed 3, colour red; episode start stamp 1700000000.000012345"
    assert demo.episode_start_ns(message) == 1700000000 * 10**9 + 12345
    assert demo.episode_start_ns("task reach") is None


def test_frame_is_the_upscaled_camera_above_a_caption_band():
    rng = np.random.default_rng(0)
    camera = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    frame = demo.compose_frame([camera], _lines(), 256)
    assert frame.shape == (*demo.video_frame_shape(256, 1), 3) and frame.shape[1] == 256
    # nearest-neighbour upscaling: every camera pixel becomes a 4x4 block
    assert np.array_equal(frame[:256], np.repeat(np.repeat(camera, 4, axis=0), 4, axis=1))
    band = frame[256:]
    assert band.shape[0] == demo.caption_band_height(256) > 0
    assert 0.01 < (band.max(axis=2) > 150).mean() < 0.5  # light text on the dark band
    other = demo.compose_frame([camera], _lines("push the blue cube to the goal"), 256)
    rows = slice(*demo.caption_line_rows(256, 0))
    assert not np.array_equal(frame[rows], other[rows])  # the instruction is drawn
    rows = slice(*demo.caption_line_rows(256, 1))
    assert np.array_equal(frame[rows], other[rows])  # ... on its own line
    wrist = demo.compose_frame([camera, None], _lines(), 128)
    assert wrist.shape == (*demo.video_frame_shape(128, 2), 3) and wrist.shape[1] == 256
    assert not wrist[:128, 128:].any()  # no wrist frame yet: black


def test_bad_options_are_refused_before_anything_starts(capsys):
    parser = argparse.ArgumentParser()
    demo.add_cli_arguments(parser)
    assert demo.cli_main(parser.parse_args(["--video", "out.avi"])) == 2
    assert demo.cli_main(parser.parse_args(["--wrist", "--video", "out.mp4"])) == 2
    assert demo.cli_main(parser.parse_args(["--task", "pick"])) == 2  # arm does not pick
    assert "no wrist camera" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--video-size", "101"])


def _decode_mp4(path: Path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    return frames, rate


def _decode_gif(path: Path):
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        durations = []
        frames = []
        for frame in ImageSequence.Iterator(image):
            durations.append(frame.info.get("duration"))
            frames.append(np.asarray(frame.convert("RGB")))
    return frames, durations


def test_demo_writes_a_captioned_mp4_and_gif_of_an_episode(tiny_model_dir, tmp_path):
    size = 128
    mp4, gif, log = tmp_path / "demo.mp4", tmp_path / "video" / "demo.gif", tmp_path / "nodes.log"
    command = [sys.executable, "-m", "ceed_vla_ros.tools.cli", "demo", "--episodes", "1", "--seed", "1000",
               "--episode-timeout", "3", "--startup-timeout", "150", "--log", str(log), "--video", str(mp4),
               "--video", str(gif), "--video-size", str(size), f"model_dir:={tiny_model_dir}", "checkpoint:=tiny_sim",
               "decoding_mode:=early_exit", "early_exit_steps:=1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    env.setdefault("MUJOCO_GL", "egl")
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    details = (f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-3000:]}\nnode log:\n"
               f"{log.read_text()[-3000:] if log.exists() else ''}")
    assert result.returncode == 0, details
    instruction = re.search(r"^\| 1 \| 1000 \| ([^|]+?) \|", result.stdout, re.M)
    assert instruction, details
    height, width = demo.video_frame_shape(size, 1)
    instruction_rows = slice(*demo.caption_line_rows(size, 0))

    def instruction_line(text: str) -> np.ndarray:
        return demo.compose_frame([None], [text, "", "", ""], size)[instruction_rows].astype(np.int16)

    expected = instruction_line(instruction.group(1))
    others = [instruction_line(text) for colour in ("red", "green", "blue")
              for text in (f"reach the {colour} cube", f"push the {colour} cube to the goal")
              if text != instruction.group(1)]

    for path, (frames, timing) in ((mp4, _decode_mp4(mp4)), (gif, _decode_gif(gif))):
        printed = re.search(rf"^video: {re.escape(str(path))} \((\d+) frames, {width}x{height} px, 15 fps\)$",
                            result.stdout, re.M)
        assert printed, details
        # 3 s of a 15 Hz camera (the tiny random policy does not succeed): every frame received is written
        written = int(printed.group(1))
        assert 25 <= written <= 15 * (3 + 1), details  # ~46: no frames from before the reset or after the end
        if path.suffix == ".mp4":
            assert len(frames) == written and timing == Fraction(15), (len(frames), timing)
        else:  # Pillow merges identical consecutive frames into one that lasts as long
            assert 0 < len(frames) <= written and sum(timing) == 70 * written, (len(frames), timing)
            assert set(timing) <= {70 * n for n in range(1, written + 1)}, timing  # 15 fps in whole 1/100 s
        assert all(frame.shape == (height, width, 3) for frame in frames), (path, frames[0].shape)
        frame = frames[len(frames) // 2].astype(np.int16)
        band, camera = frame[size:], frame[:size]
        assert 0.01 < (band.max(axis=2) > 150).mean() < 0.5, path  # text on the band
        assert np.abs(band - np.array(demo._BAND_BACKGROUND)).max(axis=2).mean() < 40, path  # dark band
        assert np.abs(camera - np.array(demo._BAND_BACKGROUND)).max(axis=2).mean() > 40, path  # the scene
        assert camera.std() > 10, path
        # the instruction line reads the episode's instruction, not another one
        near = np.abs(frame[instruction_rows] - expected).mean()
        off = min(np.abs(frame[instruction_rows] - other).mean() for other in others)
        assert near < 0.5 * off, (path, near, off)
        # the scene moves or at least the caption changes (rate, decode time) between first and last frame
        assert not np.array_equal(frames[0], frames[-1]), path

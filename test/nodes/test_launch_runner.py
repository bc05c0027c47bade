"""``ceed-vla launch``: a dead camera or policy is restarted, a dead arm driver ends the bring-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path


def children(parent: int) -> dict[str, int]:
    """{executable name: pid} of the processes whose parent is ``parent``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [Path(w.decode()).name for w in cmdline[:2]]
        if int(fields[1]) == parent and words:
            # a console script runs as `python <bin>/<name> ...`
            found[words[1] if words[0].startswith("python") and len(words) > 1 else words[0]] = int(entry.name)
    return found


def test_runner_respawns_the_policy_and_stops_when_the_driver_dies(tiny_model_dir, wait_until):
    log = tempfile.TemporaryFile(mode="w+")
    command = [str(Path(sys.executable).parent / "ceed-vla"), "launch", "real_arm", f"model_dir:={tiny_model_dir}",
               "checkpoint:=tiny_sim", "instruction:=reach the red cube"]
    runner = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)

    def output() -> str:
        log.flush()
        log.seek(0)
        return log.read()

    try:
        assert wait_until(lambda: {"policy_node", "arm_driver", "camera_subscriber"} <= set(children(runner.pid)), 30.0)
        assert wait_until(lambda: "loaded tiny_sim" in output(), 60.0), output()
        first_policy = children(runner.pid)["policy_node"]
        os.kill(first_policy, signal.SIGKILL)
        assert wait_until(lambda: "policy restarted" in output(), 20.0), output()
        assert wait_until(lambda: children(runner.pid).get("policy_node", first_policy) != first_policy, 10.0)
        assert runner.poll() is None, output()
        others = children(runner.pid)
        os.kill(others.pop("arm_driver"), signal.SIGKILL)
        assert runner.wait(timeout=30) == 1, output()
        assert "arm_driver exited with code -9: stopping the others" in output()
        assert [pid for pid in others.values() if Path(f"/proc/{pid}").exists()] == [], output()
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGINT)
            runner.wait(timeout=30)

"""``sim_episode_runner``: records N demonstrations of the simulated arm into a LeRobot dataset, over DDS.

The sequencer of the ``record_sim`` bring-up (``ceed-vla launch record_sim``): the simulated arm with
``expert_teleop`` (the scripted expert publishes its joint targets on the forward command topic, as
a teleoperator would), an ``episode_recorder`` recording camera, ``/joint_states`` and those
commands, and this node, which for each episode

1. calls ``/sim_arm/reset_episode`` (task ``task``, seed ``seed`` + attempt number),
2. waits ``settle_s`` (the reset frame and the expert's first command reach the recorder), then
   calls ``/episode_recorder/start_episode`` (a refusal, e.g. no instruction received yet by a
   recorder just started, is retried for ``SERVICE_TIMEOUT_S``),
3. watches ``/sim_arm/success``: ``hold_s`` after the first success it calls
   ``/episode_recorder/stop_episode`` (saved); an episode that has not succeeded after
   ``max_episode_s`` is discarded (``~/discard_episode``), or saved with ``keep_failed``,

until ``episodes`` are saved, then it exits with code 0 (which ends the bring-up); after
``max_attempts`` attempts, or when a service fails, with code 1. Ctrl-C stops it (the episode in
progress is discarded by the recorder's ``on_shutdown``). Progress goes to the log, one line per episode.

Parameters (read-only):

* ``episodes`` (int 1-100000, default 10): episodes to save.
* ``task`` (string, default ``reach``): reach | push.
* ``seed`` (int >= 0, default 0): layout seed of the first attempt; attempt i uses ``seed + i``.
* ``max_episode_s`` (double, default 12.0): wall seconds an attempt may take to succeed.
* ``hold_s`` (double, default 0.5): seconds recorded after the success (the arm holds: "stay" frames).
* ``settle_s`` (double, default 0.3): seconds between the reset and the recorder's start.
* ``keep_failed`` (bool, default false): save attempts that did not succeed too.
* ``max_attempts`` (int, default 0): give up after this many attempts (0: 2 x episodes + 5).
* ``sim_node``, ``recorder_node`` (strings, defaults ``/sim_arm``, ``/episode_recorder``): whose services.
"""

from __future__ import annotations

import sys
import threading
import time

from rclpy.node import Node
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from ceed_vla_ros.nodes.parameters import Param, StartupError, declare_parameters, parameter_values, usage
from ceed_vla_ros.sim.env import TASKS

SERVICE_TIMEOUT_S = 30.0
"""Seconds to wait for a service to appear, and for a response."""
SAVE_TIMEOUT_S = 600.0
"""Seconds to wait for ``stop_episode``: saving encodes every frame (see ``ceed-vla bench-recorder``)."""

PARAMETERS = (
    Param("episodes", 10, "episodes to save", minimum=1, maximum=100000, read_only=True),
    Param("task", "reach", "task of every episode", choices=TASKS, read_only=True),
    Param("seed", 0, "layout seed of the first attempt (attempt i: seed + i)", minimum=0, maximum=2**62,
          read_only=True),
    Param("max_episode_s", 12.0, "wall seconds an attempt may take to succeed", minimum=0.5, maximum=3600.0,
          read_only=True),
    Param("hold_s", 0.5, "seconds recorded after the success", minimum=0.0, maximum=60.0, read_only=True),
    Param("settle_s", 0.3, "seconds between the reset and the recorder's start", minimum=0.0, maximum=10.0,
          read_only=True),
    Param("keep_failed", False, "save attempts that did not succeed too", read_only=True),
    Param("max_attempts", 0, "give up after this many attempts (0: 2 x episodes + 5)", minimum=0,
          maximum=1000000, read_only=True),
    Param("sim_node", "/sim_arm", "the simulated arm (its ~/reset_episode and ~/success)", read_only=True),
    Param("recorder_node", "/episode_recorder", "the episode recorder (its start/stop/discard services)",
          read_only=True),
)


class EpisodeRunnerNode(Node):
    """Services and the success topic; :meth:`run` (another thread) sequences the episodes."""

    def __init__(self) -> None:
        super().__init__("sim_episode_runner")
        from ceed_vla_ros.srv import ResetEpisode

        declare_parameters(self, PARAMETERS)
        self.values = parameter_values(self, PARAMETERS)
        sim, recorder = self.values["sim_node"].rstrip("/"), self.values["recorder_node"].rstrip("/")
        if not sim or not recorder:
            raise StartupError("sim_node and recorder_node must name nodes, e.g. /sim_arm")
        self._reset = self.create_client(ResetEpisode, f"{sim}/reset_episode")
        self._recorder = {name: self.create_client(Trigger, f"{recorder}/{name}")
                          for name in ("start_episode", "stop_episode", "discard_episode")}
        self._success_since: float | None = None  # monotonic time of the first success seen while armed
        self._armed = False
        self._lock = threading.Lock()
        self.create_subscription(Bool, f"{sim}/success", self._on_success, 10)

    def _on_success(self, msg: Bool) -> None:
        with self._lock:
            if self._armed and msg.data and self._success_since is None:
                self._success_since = time.monotonic()

    def _arm(self, armed: bool) -> None:
        with self._lock:
            self._armed, self._success_since = armed, None

    def _succeeded_for(self) -> float | None:
        with self._lock:
            return None if self._success_since is None else time.monotonic() - self._success_since

    def _call(self, client, request, stop: threading.Event, timeout_s: float = SERVICE_TIMEOUT_S):
        from ceed_vla_ros.nodes.rclpy_compat import call_service

        deadline = time.monotonic() + SERVICE_TIMEOUT_S
        while not client.wait_for_service(timeout_sec=0.5):
            if stop.is_set():
                return None
            if time.monotonic() > deadline:
                raise RuntimeError(f"service {client.srv_name} not available after {SERVICE_TIMEOUT_S:.0f} s")
        response = call_service(client, request, timeout_s)
        if response is None:
            raise RuntimeError(f"service {client.srv_name}: no response within {timeout_s:.0f} s")
        return response

    def _start_recording(self, stop: threading.Event):
        """``start_episode``; a refusal is retried for ``SERVICE_TIMEOUT_S`` (a recorder just started
        may not have the sim's latched instruction yet), then it is an error."""
        deadline = time.monotonic() + SERVICE_TIMEOUT_S
        while True:
            started = self._call(self._recorder["start_episode"], Trigger.Request(), stop)
            if started is None or started.success:
                return started
            if time.monotonic() > deadline:
                raise RuntimeError(f"start_episode refused: {started.message}")
            if stop.wait(0.2):
                return None

    def run(self, stop: threading.Event) -> int:
        """Record the episodes; 0 when all are saved (or stopped), 1 on failure."""
        from ceed_vla_ros.srv import ResetEpisode

        v = self.values
        log = self.get_logger()
        max_attempts = v["max_attempts"] or 2 * v["episodes"] + 5
        saved = attempts = 0
        try:
            while saved < v["episodes"] and not stop.is_set():
                if attempts >= max_attempts:
                    log.error(f"gave up after {attempts} attempts: {saved} of {v['episodes']} episodes saved")
                    return 1
                seed = v["seed"] + attempts
                attempts += 1
                reset = self._call(self._reset, ResetEpisode.Request(task=v["task"], seed=seed, colour=""), stop)
                if reset is None:
                    break
                if not reset.success:
                    raise RuntimeError(f"reset_episode refused: {reset.message}")
                if stop.wait(v["settle_s"]):
                    break
                self._arm(True)
                started = self._start_recording(stop)
                if started is None:
                    break
                t0 = time.monotonic()
                while not stop.is_set():
                    held = self._succeeded_for()
                    if held is not None and held >= v["hold_s"]:
                        break
                    if held is None and time.monotonic() - t0 > v["max_episode_s"]:
                        break
                    stop.wait(0.02)
                if stop.is_set():
                    break
                success = self._succeeded_for() is not None
                self._arm(False)
                seconds = time.monotonic() - t0
                if success or v["keep_failed"]:
                    done = self._call(self._recorder["stop_episode"], Trigger.Request(), stop, SAVE_TIMEOUT_S)
                    if done is None:
                        break
                    if not done.success:
                        raise RuntimeError(f"stop_episode failed: {done.message}")
                    saved += 1
                    log.info(f"[{saved}/{v['episodes']}] seed {seed} {'succeeded' if success else 'FAILED'} "
                             f"in {seconds:.1f} s: {done.message}")
                else:
                    self._call(self._recorder["discard_episode"], Trigger.Request(), stop)
                    log.warning(f"seed {seed}: no success within {v['max_episode_s']:.1f} s: discarded")
        except RuntimeError as error:
            log.error(str(error))
            return 1
        if saved >= v["episodes"]:
            log.info(f"done: {saved} episodes saved in {attempts} attempts")
        else:
            log.info(f"stopped: {saved} of {v['episodes']} episodes saved")
        return 0


def main(args: list[str] | None = None) -> int:
    """Spin the node in a background thread and sequence the episodes in this one."""
    import os

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from ceed_vla_ros.nodes.interfaces import stop_requested

    argv = list(sys.argv if args is None else args)
    own_args = argv[1 : argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if "--help" in own_args or "-h" in own_args:
        print(usage(__doc__, PARAMETERS, "sim_episode_runner"))
        return 0
    code = 0
    node = executor = thread = None
    with stop_requested() as stop:
        try:
            rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
            node = EpisodeRunnerNode()
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            thread = threading.Thread(target=executor.spin, daemon=True)
            thread.start()
            code = node.run(stop)
        except StartupError as error:
            print(f"cannot start: {error}", file=sys.stderr, flush=True)
            code = 1
        except KeyboardInterrupt:
            pass
        finally:
            if executor is not None:
                executor.shutdown()
            if thread is not None:
                thread.join(timeout=5)
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
    if args is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

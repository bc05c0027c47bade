"""What the nodes and the tools that talk to them share: topic names, QoS, stamps, joint lookup,
an in-process probe node and the stop signals. One place each.

Topic names are the defaults the nodes use (relative names such as ``camera/image_raw`` resolve
in the node's namespace; remap them as usual with ``-r``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence

from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

ACTIONS_TOPIC = "/actions"
JOINT_STATES_TOPIC = "/joint_states"
POLICY_IMAGE_TOPIC = "/ceed_vla/image"  # the camera subscriber's output, the policy's input
INSTRUCTION_TOPIC = "/ceed_vla/instruction"
FORWARD_COMMAND_TOPIC = "/forward_position_controller/commands"
TRAJECTORY_TOPIC = "/joint_trajectory_controller/joint_trajectory"
SIM_CAMERA_TOPIC = "camera/image_raw"  # relative: /camera/image_raw in the root namespace
SIM_SUCCESS_TOPIC = "/sim_arm/success"
SIM_RESET_SERVICE = "/sim_arm/reset_episode"

LATCHED_QOS = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
"""Depth 1, reliable, transient local: late joiners get the last message (the instruction)."""

ACTIONS_QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
"""/actions by default: reliable, keep last 10 (the driver keeps only the newest chunk anyway)."""


_QOS_POLICIES = ("history", "depth", "reliability", "durability", "lifespan", "deadline", "liveliness",
                 "liveliness_lease_duration", "avoid_ros_namespace_conventions")


def overridable_qos(profile: QoSProfile) -> dict:
    """Keyword arguments for create_publisher / create_subscription that make the topic's QoS
    settable with ROS 2's own override parameters: ``qos_overrides.<topic>.<publisher|subscription>.
    <history|depth|reliability>`` (read-only, from the parameter file or ``-p``), for the links that
    may cross machines. rclpy writes the overrides INTO the profile it is given, so each endpoint
    gets its own copy (sharing one, an override of one endpoint silently changed the next).
    """
    options = QoSOverridingOptions.with_default_policies()
    own = QoSProfile(**{policy: getattr(profile, policy) for policy in _QOS_POLICIES})
    return {"qos_profile": own, "qos_overriding_options": options}


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stamp_to_seconds(stamp) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


class JointPicker:
    """Positions of ``names`` (in that order) out of sensor_msgs/JointState messages.

    The name -> index map is built once per distinct ``msg.name`` list (drivers publish the same
    list every time), not per message.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._cached_names: tuple[str, ...] | None = None
        self._indices: list[int] | None = None

    def indices(self, msg_names: Sequence[str]) -> list[int] | None:
        """Indices of ``names`` in ``msg_names``; None if one is missing."""
        key = tuple(msg_names)
        if key != self._cached_names:
            position = {name: i for i, name in enumerate(key)}
            self._cached_names = key
            self._indices = [position[n] for n in self.names] if all(n in position for n in self.names) else None
        return self._indices

    def pick(self, msg) -> list[float] | None:
        """The positions of ``names`` in ``msg``; None if a name is missing or the lengths disagree."""
        if len(msg.position) != len(msg.name):
            return None
        indices = self.indices(msg.name)
        return None if indices is None else [msg.position[i] for i in indices]


@contextlib.contextmanager
def stop_requested() -> Iterator[threading.Event]:
    """An event set by SIGINT / SIGTERM while the block runs (previous handlers restored after):
    a stop request only asks the loop to end, nothing is torn down from the signal handler."""
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def probe_node(name: str, setup: Callable | None = None) -> Iterator:
    """An rclpy node in this process, in its own context (command-line arguments are not ROS
    arguments here), spun by a background executor; cleaned up on exit. ``setup(node)`` runs before
    spinning starts (create subscriptions there to miss nothing)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context, args=[])
    node = rclpy.create_node(name, context=context)
    if setup is not None:
        setup(node)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        executor.shutdown()
        thread.join(timeout=5)  # the spin loop has left before its node's handles go away
        node.destroy_node()
        rclpy.shutdown(context=context)

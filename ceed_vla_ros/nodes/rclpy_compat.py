"""What differs between the rclpy of Humble, Jazzy, Kilted and rolling, for what this package uses.

The one place that knows. Every rclpy / rcl_interfaces API the package and its tests use was read on
each distribution's rclpy: the ``humble`` (3.3.x), ``jazzy`` (7.1.x) and ``rolling`` branches of
github.com/ros2/rclpy, the Kilted wheel (rclpy 9.1.2, ``requirements.txt``) and the Jazzy wheel
(rclpy 7.1.6, ``requirements-jazzy.txt``). ``make test`` runs the suite on Kilted,
``make test ROS_DISTRO=jazzy`` on Jazzy; Humble has no wheels we can install, so
``test/test_rclpy_compat.py`` checks statically that nothing listed in :data:`DIFFERENCES` as
missing on Humble is used outside this module, and runs the Humble fallbacks below on the installed
rclpy (whose semantics they rely on are the same on every branch, as noted per entry).

Missing somewhere (use the function here instead; each entry is also in :data:`DIFFERENCES`):

- ``Node.add_post_set_parameters_callback``: not on Humble; came with Iron (ros2/rclpy#966, "Support
  for pre-set and post-set parameter callback", 2022-07). Use :func:`add_post_set_callback`.
- ``rclpy.parameter_client`` (``AsyncParameterClient``): not on Humble; came with Iron
  (ros2/rclpy#959, "implement parameter_client", 2022-06). Use :func:`parameter_client`.
- ``Client.call(request, timeout_sec=...)``: Humble's ``call`` has no timeout (waits forever);
  the argument came with Jazzy (ros2/rclpy#1188, 2023-11; not on the humble or iron branches).
  Use :func:`call_service`. It also evens out what a timeout does: Jazzy's ``call`` returns None,
  Kilted's and rolling's raise ``TimeoutError`` (ros2/rclpy#1271, 2024-12); ``call_service``
  returns None on all of them.
- ``with rclpy.init(...):``: ``init`` returns a context manager only since Kilted (ros2/rclpy#1298,
  2024-06, after Jazzy branched); on Humble and Jazzy it returns None. Call ``rclpy.init`` and
  ``rclpy.try_shutdown`` explicitly (``parameters.run_node`` does).
- ``with rclpy.Context():``: ``Context`` is a context manager since Iron (ros2/rclpy#1117,
  2023-05); not on Humble. Call ``rclpy.init(context=...)`` / ``rclpy.shutdown(context=...)``.
- ``rclpy.experimental.EventsExecutor`` (the executor in C++: far less CPU per callback than the
  Python ``SingleThreadedExecutor``): in the Kilted wheel (rclpy 9.1.2) and rolling; not in the
  Jazzy wheel (rclpy 7.1.6, checked: no ``rclpy/experimental``) nor on Humble. Use
  :func:`low_overhead_executor`, which falls back to ``SingleThreadedExecutor``.

Present on all four, checked (no wrapper needed): ``rclpy.init(args=, context=,
signal_handler_options=)``; ``rclpy.signals.SignalHandlerOptions`` (``.NO``); ``rclpy.try_shutdown``
(re-exported from ``rclpy.utilities`` on Humble and Jazzy, its own function on rolling);
``rclpy.shutdown(context=)``; ``rclpy.Context``; ``rclpy.create_node(name, context=)``;
``rclpy.spin_once(node, timeout_sec=)``; ``rclpy.executors.ExternalShutdownException`` and
``SingleThreadedExecutor(context=)`` with ``add_node``, ``spin``, ``spin_once(timeout_sec=)``,
``shutdown``; ``rclpy.exceptions.InvalidParameterTypeException`` / ``InvalidParameterValueException``;
``rclpy.qos``: ``QoSProfile(depth=, reliability=, durability=)``, ``ReliabilityPolicy`` /
``DurabilityPolicy`` and their ``QoS*Policy`` aliases, ``qos_profile_sensor_data``;
``rclpy.clock.Clock(clock_type=ClockType.STEADY_TIME)``; ``rclpy.duration.Duration``;
``rclpy.parameter.Parameter(name, value=)``; ``Node``: ``declare_parameter(name, value,
descriptor)``, ``get_parameter``, ``set_parameters``, ``add_on_set_parameters_callback``,
``create_publisher`` / ``create_subscription`` / ``create_service`` / ``create_client``,
``create_timer(period, callback, clock=)``, ``get_clock``, ``get_logger`` (``warning``,
``throttle_duration_sec=``), ``get_name``, ``get_fully_qualified_name``, ``resolve_topic_name``,
``get_publishers_info_by_topic``, ``destroy_subscription``, ``destroy_node``; ``Client``:
``call_async``, ``wait_for_service(timeout_sec=)``, ``service_is_ready``; ``Publisher
.get_subscription_count``; ``rcl_interfaces`` ``ParameterDescriptor`` (``read_only``,
``integer_range``, ``floating_point_range``, ``additional_constraints``), ``SetParametersResult``,
``SetParameters`` / ``DescribeParameters`` / ``GetParameters``; ``launch_ros``
``ParameterValue(value, value_type=)``.

Same everywhere, and relied on by the Humble fallbacks: ``add_on_set_parameters_callback`` puts the
callback in FRONT of the node's list (``insert(0, ...)``), the callbacks run in list order, and the
first refusal stops the rest and keeps the old values (humble, jazzy and rolling ``node.py``,
``_set_parameters_atomically``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

HUMBLE, JAZZY, KILTED, ROLLING = "humble", "jazzy", "kilted", "rolling"


@dataclass(frozen=True)
class Difference:
    """One rclpy API this package must not use directly, as a static check can find it.

    ``kind``: ``attribute`` (``x.<name>`` anywhere, or ``from ... import <name>``), ``module``
    (importing the module ``<name>`` or reaching it as ``rclpy.<...>``), ``call_keyword``
    (a call ``x.<name>(..., <keyword>=...)`` or with more positional arguments than the old
    signature takes), ``with_call`` (``with <...>.<name>(...):`` or ``with <name>(...):``).
    """

    name: str
    kind: str
    missing_on: tuple[str, ...]
    upstream: str
    instead: str
    keyword: str | None = None
    max_positional: int | None = None


DIFFERENCES: tuple[Difference, ...] = (
    Difference("add_post_set_parameters_callback", "attribute", (HUMBLE,),
               "ros2/rclpy#966 (Iron)", "rclpy_compat.add_post_set_callback(node, callback)"),
    Difference("rclpy.parameter_client", "module", (HUMBLE,),
               "ros2/rclpy#959 (Iron)", "rclpy_compat.parameter_client(node, remote_node_name)"),
    Difference("AsyncParameterClient", "attribute", (HUMBLE,),
               "ros2/rclpy#959 (Iron)", "rclpy_compat.parameter_client(node, remote_node_name)"),
    Difference("call", "call_keyword", (HUMBLE,),
               "ros2/rclpy#1188 (Jazzy)", "rclpy_compat.call_service(client, request, timeout_sec)",
               keyword="timeout_sec", max_positional=1),
    Difference("init", "with_call", (HUMBLE, JAZZY),
               "ros2/rclpy#1298 (Kilted)", "rclpy.init(...) then rclpy.try_shutdown() in a finally"),
    Difference("Context", "with_call", (HUMBLE,),
               "ros2/rclpy#1117 (Iron)", "rclpy.init(context=c) then rclpy.shutdown(context=c)"),
    Difference("EventsExecutor", "attribute", (HUMBLE, JAZZY),
               "rclpy.experimental (Kilted wheel 9.1.2; not the Jazzy wheel 7.1.6)",
               "rclpy_compat.low_overhead_executor()"),
)


def missing_on(distribution: str) -> tuple[Difference, ...]:
    return tuple(d for d in DIFFERENCES if distribution in d.missing_on)


# -- Node.add_post_set_parameters_callback (Humble: missing) -----------------------------------------
def add_post_set_callback(node, callback: Callable[[list], None]) -> None:
    """Run ``callback(parameters)`` after a parameter change was accepted, on every distribution.

    Jazzy, Kilted, rolling (and Iron): ``node.add_post_set_parameters_callback``; rclpy calls it after
    the new values are stored. Humble: :func:`post_set_via_on_set_callback`. Register it BEFORE the
    node's own on-set validators (see there), and let ``callback`` use the parameters it is given,
    not ``node.get_parameter`` (on Humble that still returns the old value during the call).
    """
    if hasattr(node, "add_post_set_parameters_callback"):
        node.add_post_set_parameters_callback(callback)
    else:
        post_set_via_on_set_callback(node, callback)


def post_set_via_on_set_callback(node, callback: Callable[[list], None]) -> None:
    """Humble's stand-in for a post-set callback: an on-set callback that accepts and runs ``callback``.

    rclpy puts each new on-set callback in front and stops at the first refusal, so a callback
    registered before all others runs last, and only when every validator registered after it (in
    ``declare_parameters`` the node's own checks, then e.g. ``checkpoint_change_validator``) has
    accepted; after it rclpy stores the values unconditionally. The one callback every node already
    has is rclpy's own (``TimeSource._on_parameter_event``, registered in ``Node.__init__`` on every
    branch), which runs after this one and accepts everything. Any other on-set callback already on
    the node is refused here (read from rclpy's private list, where it can be read), since it would
    run after ``callback`` and could still refuse the change.
    """
    from rcl_interfaces.msg import SetParametersResult

    for private_list in ("_parameters_callbacks", "_on_set_parameters_callbacks"):  # Humble; Iron+
        for registered in getattr(node, private_list, None) or ():
            owner = getattr(registered, "__self__", None)
            if type(owner).__module__ != "rclpy.time_source":
                raise RuntimeError("register the post-set callback before any on-set parameters callback: "
                                   "on Humble it only runs after the validators added after it")

    def run_when_accepted(parameters: list) -> Any:
        callback(parameters)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(run_when_accepted)


# -- Client.call(request, timeout_sec=) (Humble: no timeout) -----------------------------------------
def call_service(client, request, timeout_sec: float | None):
    """``client.call(request, timeout_sec=...)``: the response, or None after ``timeout_sec``.

    Like rclpy's ``call``, it blocks until another thread's executor delivers the response: never
    call it from a callback of the executor that spins ``client``'s node.
    """
    if not _call_takes_timeout(client):  # Humble
        return call_service_via_call_async(client, request, timeout_sec)
    try:
        return client.call(request, timeout_sec=timeout_sec)
    except TimeoutError:  # Kilted, rolling (ros2/rclpy#1271); Jazzy returns None itself
        return None


def _call_takes_timeout(client) -> bool:
    import inspect

    return "timeout_sec" in inspect.signature(client.call).parameters


def call_service_via_call_async(client, request, timeout_sec: float | None):
    """Humble's stand-in: what Jazzy's ``Client.call`` does, from ``call_async`` (on every branch)."""
    done = threading.Event()
    future = client.call_async(request)
    future.add_done_callback(lambda _future: done.set())
    if not future.done() and not done.wait(timeout_sec):
        client.remove_pending_request(future)  # frees the request (Humble has it too)
        return None
    if future.exception() is not None:
        raise future.exception()
    return future.result()


# -- rclpy.parameter_client.AsyncParameterClient (Humble: missing) -----------------------------------
def parameter_client(node, remote_node_name: str):
    """A client for ``remote_node_name``'s parameter services with AsyncParameterClient's interface
    for what this package uses: ``wait_for_services``, ``get_parameters``, ``set_parameters``,
    ``describe_parameters`` (each returns an rclpy Future of the service response).

    rclpy's AsyncParameterClient where it exists (Iron and later), else
    :class:`ParameterServicesClient`.
    """
    try:
        from rclpy.parameter_client import AsyncParameterClient
    except ImportError:  # Humble
        return ParameterServicesClient(node, remote_node_name)
    return AsyncParameterClient(node, remote_node_name)


class ParameterServicesClient:
    """Humble's stand-in for AsyncParameterClient: plain clients of the ``rcl_interfaces`` parameter
    services every node offers (``ros2 param`` uses the same services), same service names."""

    def __init__(self, node, remote_node_name: str) -> None:
        from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters

        self.node = node
        self.remote_node_name = remote_node_name
        self._types = {"get": GetParameters, "set": SetParameters, "describe": DescribeParameters}
        self._clients = {
            "get": node.create_client(GetParameters, f"{remote_node_name}/get_parameters"),
            "set": node.create_client(SetParameters, f"{remote_node_name}/set_parameters"),
            "describe": node.create_client(DescribeParameters, f"{remote_node_name}/describe_parameters"),
        }

    def services_are_ready(self) -> bool:
        return all(client.service_is_ready() for client in self._clients.values())

    def wait_for_services(self, timeout_sec: float | None = None) -> bool:
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        for client in self._clients.values():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not client.wait_for_service(timeout_sec=remaining):
                return False
        return True

    def get_parameters(self, names: Sequence[str]):
        return self._clients["get"].call_async(self._types["get"].Request(names=list(names)))

    def set_parameters(self, parameters: Sequence[Any]):
        from rclpy.parameter import Parameter

        messages = [p.to_parameter_msg() if isinstance(p, Parameter) else p for p in parameters]
        return self._clients["set"].call_async(self._types["set"].Request(parameters=messages))

    def describe_parameters(self, names: Sequence[str]):
        return self._clients["describe"].call_async(self._types["describe"].Request(names=list(names)))


# -- rclpy.experimental.EventsExecutor (Humble, Jazzy: missing) ----------------------------------------


def low_overhead_executor(context=None):
    """``rclpy.experimental.EventsExecutor`` where this rclpy has it (Kilted, rolling), else a
    ``SingleThreadedExecutor``; both run callbacks one at a time on the spinning thread."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        from rclpy.executors import SingleThreadedExecutor

        return SingleThreadedExecutor(context=context)
    return EventsExecutor(context=context)

"""Declared, documented, validated node parameters.

Each node lists its parameters as :class:`Param` entries. :func:`declare_parameters` declares them
with a ParameterDescriptor (description, numeric range, read-only flag) and installs one
set-parameters callback that rejects a bad value with a reason and keeps the old one. rclpy itself
enforces types, ranges and read-only; the callback adds choices and per-parameter checks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from ceed_vla_ros.nodes import rclpy_compat

Check = Callable[[Any], "str | None"]  # returns the reason a value is refused, or None


class StartupError(Exception):
    """A node cannot start (bad start-up parameters, no usable checkpoint); the message says why."""


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False
    check: Check | None = None

    def descriptor(self) -> ParameterDescriptor:
        description = self.description
        if self.choices:
            description += f" (one of: {', '.join(self.choices)})"
        if self.read_only:
            description += " [read-only: set it at start-up]"
        descriptor = ParameterDescriptor(description=description, read_only=self.read_only)
        if self.minimum is not None or self.maximum is not None:
            if isinstance(self.default, bool) or not isinstance(self.default, (int, float)):
                raise TypeError(f"parameter {self.name}: a range needs a numeric default")
            if isinstance(self.default, int):
                descriptor.integer_range = [
                    IntegerRange(from_value=int(self.minimum), to_value=int(self.maximum), step=0)
                ]
            else:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(self.minimum), to_value=float(self.maximum), step=0.0)
                ]
        if self.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(self.choices)
        return descriptor

    def refusal(self, value: Any) -> str | None:
        if self.choices and value not in self.choices:
            return f"{self.name}: {value!r} is not one of {', '.join(self.choices)}"
        if self.check is not None:
            reason = self.check(value)
            if reason:
                return f"{self.name}: {reason}"
        return None


def declare_parameters(
    node: Node, params: Sequence[Param], on_accepted: Callable[[list[Parameter]], None] | None = None
) -> None:
    """Declare ``params`` on ``node`` and validate every later change.

    ``on_accepted`` (optional) runs after a change is accepted, with the new parameters; it must
    not fail (do slow work in the background), and must read the new values from its argument (on
    Humble, ``node.get_parameter`` still returns the old ones while it runs).
    """
    by_name = {p.name: p for p in params}
    for param in params:
        try:
            node.declare_parameter(param.name, param.default, param.descriptor())
        except (InvalidParameterTypeException, InvalidParameterValueException) as error:
            # a start-up override of the wrong type or out of range: rclpy's reason, no traceback
            raise StartupError(f"invalid start-up parameter {param.name}: {error}") from error
        reason = param.refusal(node.get_parameter(param.name).value)
        if reason:
            raise StartupError(f"invalid start-up parameter: {reason}")

    def validate(changes: list[Parameter]) -> SetParametersResult:
        for change in changes:
            param = by_name.get(change.name)
            if param is None:
                continue
            reason = param.refusal(change.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    if on_accepted is not None:
        # before the validator: on Humble the post-set callback is an on-set callback, which runs
        # after every validator only when it was registered first (see rclpy_compat)
        rclpy_compat.add_post_set_callback(node, on_accepted)
    node.add_on_set_parameters_callback(validate)


def checkpoint_change_validator(model_dir) -> Callable[[list[Parameter]], SetParametersResult]:
    """A set-parameters callback refusing a ``checkpoint`` whose metadata cannot be read from
    ``model_dir`` (missing, outside the directory, malformed); the full load happens later."""
    from ceed_vla_ros.metadata import CheckpointError, load_metadata

    def validate(changes: list[Parameter]) -> SetParametersResult:
        for change in changes:
            if change.name == "checkpoint":
                try:
                    load_metadata(model_dir, change.value)
                except CheckpointError as error:
                    return SetParametersResult(successful=False, reason=f"checkpoint: {error}")
        return SetParametersResult(successful=True)

    return validate


def parameter_values(node: Node, params: Sequence[Param]) -> dict[str, Any]:
    return {p.name: node.get_parameter(p.name).value for p in params}


def usage(description: str, params: Sequence[Param], executable: str = "node") -> str:
    """``--help`` text: the node's description and its parameters."""
    lines = [description.strip(), "", f"usage: {executable} [--ros-args -p name:=value ...]", "", "parameters:"]
    for param in params:
        limits = ""
        if param.minimum is not None or param.maximum is not None:
            limits = f" [{param.minimum} .. {param.maximum}]"
        lines.append(f"  {param.name} (default {param.default!r}){limits}: {param.descriptor().description}")
    return "\n".join(lines)


def run_node(
    node_factory: Callable[[], Node],
    args: list[str] | None = None,
    *,
    description: str = "",
    params: Sequence[Param] = (),
    executor_factory: Callable[[], object] | None = None,
) -> int:
    """init rclpy, spin the node until Ctrl-C / SIGTERM, then destroy it and shut down cleanly.

    Returns the exit code: 0 after a stop request, 1 when the node cannot start (one
    ``cannot start: <reason>`` line on stderr, no traceback). ``--help`` / ``-h`` before
    ``--ros-args`` prints :func:`usage` and exits. SIGINT and SIGTERM only ask the spin loop to stop,
    and the node is destroyed before rclpy shuts down: rclpy's own handlers shut the context down
    from another thread while callbacks may still publish, which ends in a traceback. One
    single-threaded executor runs all callbacks, so they never overlap (``executor_factory``: another
    one-thread executor, e.g. :func:`~ceed_vla_ros.nodes.rclpy_compat.low_overhead_executor`). ``rclpy.init`` is called
    and shut down explicitly: it is a context manager only since 2024 (not on Humble or Jazzy).
    With ``args`` None (the program's own command line) the process exits right after the
    shutdown, without the interpreter's slow teardown.
    """
    argv = list(sys.argv if args is None else args)
    own_args = argv[1 : argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if "--help" in own_args or "-h" in own_args:
        print(usage(description, params, Path(argv[0]).name if argv else "node"))
        return 0

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from ceed_vla_ros.nodes.interfaces import stop_requested

    node = executor = None
    code = 0
    with stop_requested() as stop:
        try:
            rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
            node = node_factory()
            executor = executor_factory() if executor_factory is not None else SingleThreadedExecutor()
            executor.add_node(node)
            executor.spin_once(timeout_sec=0.1)  # run once even if stopped during start-up
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.1)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except StartupError as error:
            print(f"cannot start: {error}", file=sys.stderr, flush=True)
            code = 1
        finally:
            if executor is not None:
                executor.shutdown()
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()  # also destroys a node whose __init__ failed (newer rclpy tracks them)
    if args is None:
        # Running as the program (console script, ros2 run): everything is shut down, so skip the
        # interpreter's teardown, which takes seconds with torch loaded on a busy 2-core machine
        # (measured ~2 s per process, 20 ms for everything above) and made ros2 launch escalate.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code

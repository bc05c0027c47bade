"""``/diagnostics`` (diagnostic_msgs/DiagnosticArray) for every node of the suite, once per second.

Each node gives a function returning a :class:`Health` (level, one-line message, key values);
counters are turned into rates over the publishing period here, so nodes only count events.
``ros2 topic echo /diagnostics`` or rqt_runtime_monitor shows them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def status_name(node_name: str) -> str:
    """The ``DiagnosticStatus.name`` a node of the suite publishes under: ``ceed_vla_ros: <node name>``."""
    return f"ceed_vla_ros: {node_name}"


@dataclass
class Health:
    level: bytes
    message: str
    values: dict[str, object] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)  # reported as totals and as <name>_per_s


class DiagnosticsPublisher:
    def __init__(self, node: Node, report: Callable[[], Health], period_s: float = 1.0) -> None:
        self.node = node
        self.report = report
        self.publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._previous_counters: dict[str, int] = {}
        self._previous_time = time.monotonic()
        node.create_timer(period_s, self._publish)

    def _publish(self) -> None:
        health = self.report()
        now = time.monotonic()
        elapsed = max(now - self._previous_time, 1e-6)
        values = {key: value for key, value in health.values.items()}
        for key, total in health.counters.items():
            values[key] = total
            values[f"{key}_per_s"] = round((total - self._previous_counters.get(key, 0)) / elapsed, 2)
        self._previous_counters, self._previous_time = dict(health.counters), now
        status = DiagnosticStatus(
            level=health.level,
            name=status_name(self.node.get_name()),
            message=health.message,
            hardware_id=self.node.get_fully_qualified_name(),
            values=[KeyValue(key=key, value=_format(value)) for key, value in values.items()],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.publisher.publish(msg)


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


class WarningThrottle:
    """Log each KIND of warning at most once per ``period_s``, so a flood of one problem cannot
    hide another. The kind is given, or the first two words of the message."""

    def __init__(self, logger, period_s: float = 2.0) -> None:
        self.logger = logger
        self.period_s = period_s
        self._last: dict[str, float] = {}

    def warn(self, message: str, kind: str | None = None) -> None:
        kind = kind if kind is not None else " ".join(message.split()[:2])
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) >= self.period_s:
            self._last[kind] = now
            self.logger.warning(message)

"""Link relay node: forwards ActionTokens from one topic to another through a lossy, delayed link.

For trying a deployment's failure modes on one computer (the policy on a GPU workstation, the
driver on the robot computer, a Wi-Fi or VPN link between them): remap the policy's output to
``/actions_raw`` and let this node publish ``/actions``. Each message is dropped with probability
``drop_probability`` or delivered ``delay_ms + U(0, jitter_ms)`` later (``tools/link_model.py``);
all three may be changed at run time (``ros2 param set /link_relay drop_probability 1.0`` is an
outage). Messages are forwarded unchanged (stamps included), so the driver sees exactly what a late
or lost chunk looks like. ``/diagnostics`` counts received, dropped and forwarded messages.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time

from rclpy.node import Node
from rclpy.parameter import Parameter

from ceed_vla_ros.msg import ActionTokens
from ceed_vla_ros.nodes.diagnostics import OK, WARN, DiagnosticsPublisher, Health
from ceed_vla_ros.nodes.interfaces import ACTIONS_QOS, ACTIONS_TOPIC, overridable_qos
from ceed_vla_ros.nodes.parameters import Param, StartupError, declare_parameters, parameter_values, run_node
from ceed_vla_ros.tools.link_model import LinkModel

PARAMETERS = (
    Param("input_topic", "/actions_raw", "ActionTokens topic to read (remap the policy's /actions here)",
          read_only=True),
    Param("output_topic", ACTIONS_TOPIC, "ActionTokens topic to publish (what the arm driver reads)", read_only=True),
    Param("drop_probability", 0.0, "share of messages lost (1.0: an outage)", minimum=0.0, maximum=1.0),
    Param("delay_ms", 0.0, "fixed delay of every delivered message", minimum=0.0, maximum=60000.0),
    Param("jitter_ms", 0.0, "extra uniform random delay 0..jitter_ms (reorders when > the send period)",
          minimum=0.0, maximum=60000.0),
    Param("seed", 0, "random seed of the drops and the jitter", minimum=0, maximum=2**31 - 1, read_only=True),
)


class LinkRelayNode(Node):
    def __init__(self) -> None:
        super().__init__("link_relay")
        declare_parameters(self, PARAMETERS, on_accepted=self._on_parameters_changed)
        values = parameter_values(self, PARAMETERS)
        if values["input_topic"] == values["output_topic"]:
            raise StartupError(f"input_topic and output_topic are both {values['input_topic']!r}")
        self.link = LinkModel(values["drop_probability"], values["delay_ms"] / 1e3, values["jitter_ms"] / 1e3,
                              seed=values["seed"])
        self.received = self.dropped = self.forwarded = 0
        self._pending: list[tuple[float, int, ActionTokens]] = []  # (due, order, message) heap
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stopping = False
        self.publisher = self.create_publisher(ActionTokens, values["output_topic"], **overridable_qos(ACTIONS_QOS))
        self.create_subscription(ActionTokens, values["input_topic"], self._on_message,
                                 **overridable_qos(ACTIONS_QOS))
        self._sender = threading.Thread(target=self._send_loop, name="link-relay-sender", daemon=True)
        self._sender.start()
        DiagnosticsPublisher(self, self._health)
        self.get_logger().info(f"{values['input_topic']} -> {values['output_topic']}: {self._describe()}")

    def _describe(self) -> str:
        return (f"drop {self.link.drop_probability:.0%}, delay {self.link.delay_s * 1e3:g} ms "
                f"+ U(0, {self.link.jitter_s * 1e3:g}) ms")

    def _on_parameters_changed(self, parameters: list[Parameter]) -> None:
        if not any(p.name in ("drop_probability", "delay_ms", "jitter_ms") for p in parameters):
            return  # e.g. rclpy declaring the qos_overrides.* parameters
        values = {"drop_probability": self.link.drop_probability, "delay_ms": self.link.delay_s * 1e3,
                  "jitter_ms": self.link.jitter_s * 1e3}
        values.update({p.name: p.value for p in parameters if p.name in values})
        with self._wake:
            self.link.configure(values["drop_probability"], values["delay_ms"] / 1e3, values["jitter_ms"] / 1e3)
        self.get_logger().info(f"link now: {self._describe()}")

    def _on_message(self, msg: ActionTokens) -> None:
        with self._wake:
            self.received += 1
            delay = self.link.fate()
            if delay is None:
                self.dropped += 1
                return
            heapq.heappush(self._pending, (time.monotonic() + delay, next(self._order), msg))
            self._wake.notify()

    def _send_loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (not self._pending or self._pending[0][0] > time.monotonic()):
                    timeout = None if not self._pending else self._pending[0][0] - time.monotonic()
                    self._wake.wait(timeout)
                if self._stopping:
                    return
                _, _, msg = heapq.heappop(self._pending)
            self.publisher.publish(msg)
            with self._wake:
                self.forwarded += 1

    def _health(self) -> Health:
        with self._wake:
            counters = {"messages_received": self.received, "messages_dropped": self.dropped,
                        "messages_forwarded": self.forwarded}
            pending = len(self._pending)
        level = WARN if self.link.drop_probability >= 1.0 else OK
        return Health(level, self._describe(), values={"in_flight": pending}, counters=counters)

    def destroy_node(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._sender.join(timeout=2.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(LinkRelayNode, args, description=__doc__, params=PARAMETERS)


if __name__ == "__main__":
    raise SystemExit(main())

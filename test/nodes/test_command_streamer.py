"""The native command streamer over real DDS: queued commands arrive in order with their values,
truncation takes back exactly the unpublished ones, empty periods send nothing, the gripper
message rides along, refusals (past, too far ahead) and a clean stop (no timing asserted)."""

from __future__ import annotations

import threading
import time

import pytest
from std_msgs.msg import Float64MultiArray

from ceed_vla_ros.nodes.command_streamer import LIBRARY_NAME, NativeCommandStreamer, library_candidates

PERIOD_S = 0.005


class Receiver:
    def __init__(self, node, topic: str) -> None:
        self.lock = threading.Lock()
        self.messages: list[list[float]] = []
        node.create_subscription(Float64MultiArray, topic, self._on_message, 1000)

    def _on_message(self, msg) -> None:
        with self.lock:
            self.messages.append(list(msg.data))

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def received(self) -> list[list[float]]:
        with self.lock:
            return list(self.messages)


@pytest.fixture
def streaming(ros_node, wait_until):
    """(streamer, receiver of /stream_test, gripper receiver): a 4-joint streamer on ros_node's
    publishers, its thread started a while ahead, publishers matched to the receivers."""
    publisher = ros_node.create_publisher(Float64MultiArray, "/stream_test", 10)
    gripper_publisher = ros_node.create_publisher(Float64MultiArray, "/stream_test_gripper", 10)
    receiver, gripper = Receiver(ros_node, "/stream_test"), Receiver(ros_node, "/stream_test_gripper")
    assert wait_until(lambda: publisher.get_subscription_count() >= 1
                      and gripper_publisher.get_subscription_count() >= 1, 10.0)
    streamer = NativeCommandStreamer(publisher, 4, PERIOD_S, capacity=256, gripper_publisher=gripper_publisher)
    yield streamer, receiver, gripper
    streamer.stop()
    streamer.close()


def values_of(index: int) -> list[float]:
    return [index + 0.25, -index * 0.5, index * 1e-3, 7.0]


def test_queued_commands_arrive_in_order_then_empty_periods_send_nothing(streaming, wait_until):
    streamer, receiver, gripper = streaming
    for index in range(60):
        assert streamer.push(index, values_of(index), gripper=index / 100.0)
    status = streamer.start(time.monotonic_ns() + 200_000_000)
    assert status.startswith("normal scheduling")
    assert wait_until(lambda: receiver.count() >= 60 and gripper.count() >= 60, 10.0), streamer.counters()
    assert receiver.received() == [values_of(index) for index in range(60)]
    assert gripper.received() == [[index / 100.0] for index in range(60)]
    assert wait_until(lambda: streamer.counters()["empty"] >= 20, 5.0)  # the queue ran out: periods go on
    counters = streamer.counters()
    assert counters["published"] == 60 and counters["errors"] == 0
    assert receiver.count() == 60  # nothing sent for the empty periods
    assert streamer.next_index() == 60 + counters["empty"] + counters["missed"]


def test_truncate_takes_back_exactly_the_commands_after_the_kept_ones(streaming, wait_until):
    streamer, receiver, _ = streaming
    for index in range(200):
        streamer.push(index, values_of(index), 0.0)
    streamer.start(time.monotonic_ns() + 100_000_000)
    assert wait_until(lambda: receiver.count() >= 30, 10.0)
    next_index = streamer.truncate(keep=3)  # the first period taken back
    assert 33 <= next_index < 200
    # the new plan: nothing for 5 periods, then other values
    for index in range(next_index + 5, next_index + 25):
        assert streamer.push(index, [-1.0, -2.0, -3.0, float(index)], 0.0)
    assert wait_until(lambda: streamer.next_index() > next_index + 30, 10.0)
    received = receiver.received()
    old = [message for message in received if message[3] == 7.0]
    new = [message for message in received if message[3] != 7.0]
    assert received == old + new  # nothing of the old plan after the truncation
    indices = [round(message[0] - 0.25) for message in old]
    assert old == [values_of(i) for i in indices]
    assert indices == sorted(set(indices)) and indices[-1] < next_index  # only periods before the cut
    kept = set(range(next_index - 3, next_index))  # published from the old plan (but a skipped period)
    assert len(kept & set(indices)) >= 3 - streamer.counters()["missed"]
    assert new == [[-1.0, -2.0, -3.0, float(index)] for index in range(next_index + 5, next_index + 25)]
    assert streamer.counters()["published"] == len(received)


def test_push_refuses_past_periods_and_periods_beyond_the_queue(streaming, wait_until):
    streamer, receiver, _ = streaming
    assert not streamer.push(256, values_of(0), 0.0)  # capacity 256: periods 0..255 only
    assert not streamer.push(-1, values_of(0), 0.0)
    assert streamer.push(255, values_of(255), 0.0)
    streamer.start(time.monotonic_ns())
    assert wait_until(lambda: streamer.next_index() > 10, 10.0)
    assert not streamer.push(0, values_of(0), 0.0)  # already past
    streamer.stop()
    stopped_at = streamer.next_index()
    time.sleep(0.1)
    assert streamer.next_index() == stopped_at  # the thread has ended
    assert receiver.count() == 0


def test_a_missing_library_is_reported_with_the_paths_tried(monkeypatch, tmp_path):
    import ceed_vla_ros.nodes.command_streamer as module

    monkeypatch.setattr(module, "_library", None)
    monkeypatch.setattr(module, "library_candidates", lambda: [tmp_path / "lib" / LIBRARY_NAME])
    with pytest.raises(OSError, match=f"{LIBRARY_NAME} not found .*{tmp_path}"):
        module.load_library()
    assert any(path.is_file() for path in library_candidates())  # the installed one is found

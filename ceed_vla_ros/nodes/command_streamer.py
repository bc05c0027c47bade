"""The native command streamer (``src/command_streamer.c``, built with the package), through ctypes.

A native thread publishes the arm driver's queued ``std_msgs/Float64MultiArray`` commands with
``rcl_publish`` on the node's own publishers, one per period at absolute deadlines on the monotonic
clock, without Python in the period: no interpreter wake-up, no GIL, no message conversion. The
driver plans the commands a few periods ahead (:class:`ceed_vla_ros.control_loop.LookaheadPlanner`)
and :class:`NativeCommandStreamer` is its :class:`~ceed_vla_ros.control_loop.CommandSink`.

The library is ``lib/libceed_vla_ros__command_streamer.so`` of the install prefix (colcon's
install space, or the virtual environment for the pip build); :func:`load_library` looks for it
there and raises ``OSError`` naming the paths it tried.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence
from pathlib import Path

LIBRARY_NAME = "libceed_vla_ros__command_streamer.so"
COUNTER_NAMES = ("published", "missed", "empty", "errors", "max_late_ns")

_library: ctypes.CDLL | None = None


def library_candidates() -> list[Path]:
    """Where the library may be: ``<prefix>/lib`` of every AMENT_PREFIX_PATH entry, then this
    interpreter's prefix (a virtual environment) and the prefix above this package's install."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    here = Path(__file__).resolve().parents  # <prefix>/lib/pythonX.Y/site-packages/ceed_vla_ros/nodes/
    if len(here) > 5:
        prefixes.append(str(here[5]))
    seen, candidates = set(), []
    for prefix in prefixes:
        path = Path(prefix) / "lib" / LIBRARY_NAME
        if path not in seen:
            seen.add(path)
            candidates.append(path)
    return candidates


def load_library() -> ctypes.CDLL:
    """The streamer library (loaded once); ``OSError`` if it is not installed."""
    global _library
    if _library is not None:
        return _library
    tried = []
    for path in library_candidates():
        if path.is_file():
            library = ctypes.CDLL(str(path))
            break
        tried.append(str(path))
    else:
        raise OSError(f"{LIBRARY_NAME} not found (tried {', '.join(tried)}); rebuild the package "
                      "(colcon build, or make install)")
    void_p, int64 = ctypes.c_void_p, ctypes.c_int64
    signatures = {
        "ceed_streamer_create": (void_p, [void_p, ctypes.c_size_t, void_p, int64, ctypes.c_size_t]),
        "ceed_streamer_start": (ctypes.c_int, [void_p, int64, ctypes.c_int]),
        "ceed_streamer_push": (ctypes.c_int, [void_p, int64, ctypes.POINTER(ctypes.c_double), ctypes.c_double]),
        "ceed_streamer_truncate": (int64, [void_p, int64]),
        "ceed_streamer_next_index": (int64, [void_p]),
        "ceed_streamer_counters": (None, [void_p, ctypes.POINTER(int64)]),
        "ceed_streamer_status": (ctypes.c_char_p, [void_p]),
        "ceed_streamer_last_error": (None, [void_p, ctypes.c_char_p, ctypes.c_size_t]),
        "ceed_streamer_stop": (None, [void_p]),
        "ceed_streamer_destroy": (None, [void_p]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(library, name)
        function.restype, function.argtypes = restype, argtypes
    _library = library
    return library


class NativeCommandStreamer:
    """Publishes queued commands on ``publisher`` (``width`` values; ``gripper_publisher``: one more
    message with the gripper value, None: none) every ``period_s``, at most ``capacity`` periods
    queued ahead. The publishers must be ``std_msgs/Float64MultiArray`` publishers of a live node
    and outlive the streamer: :meth:`close` it before destroying them (or the node)."""

    def __init__(self, publisher, width: int, period_s: float, capacity: int, gripper_publisher=None) -> None:
        self._lib = load_library()
        self.width, self.period_s, self.capacity = int(width), float(period_s), int(capacity)
        self.period_ns = int(round(period_s * 1e9))
        self._publishers = (publisher, gripper_publisher)  # kept alive as long as the streamer
        gripper_pointer = None if gripper_publisher is None else gripper_publisher.handle.pointer
        self._handle = self._lib.ceed_streamer_create(publisher.handle.pointer, self.width, gripper_pointer,
                                                      self.period_ns, self.capacity)
        if not self._handle:
            raise ValueError(f"ceed_streamer_create refused width {width}, period {period_s} s, capacity {capacity}")
        self._values = (ctypes.c_double * self.width)()
        self._counters = (ctypes.c_int64 * len(COUNTER_NAMES))()
        self.first_deadline_ns = 0
        self.status = "not started"

    def start(self, first_deadline_ns: int, realtime_priority: int = 0) -> str:
        """Start the thread (period 0 due at ``first_deadline_ns``, ``time.monotonic_ns`` clock);
        returns its scheduling in words, as :func:`ceed_vla_ros.control_loop.set_realtime_priority`."""
        self.first_deadline_ns = int(first_deadline_ns)
        error = self._lib.ceed_streamer_start(self._handle, self.first_deadline_ns, int(realtime_priority))
        self.status = self._lib.ceed_streamer_status(self._handle).decode()
        if error:
            raise OSError(error, self.status)
        return self.status

    def push(self, index: int, values: Sequence[float], gripper: float) -> bool:
        buffer = self._values
        buffer[:] = values
        return self._lib.ceed_streamer_push(self._handle, index, buffer, gripper) == 0

    def truncate(self, keep: int = 0) -> int:
        return self._lib.ceed_streamer_truncate(self._handle, keep)

    def next_index(self) -> int:
        return self._lib.ceed_streamer_next_index(self._handle)

    def counters(self) -> dict[str, int]:
        """published, missed (periods skipped by late wake-ups), empty (nothing queued), errors
        (rcl_publish failures), max_late_ns (largest wake-up lateness)."""
        self._lib.ceed_streamer_counters(self._handle, self._counters)
        return dict(zip(COUNTER_NAMES, self._counters))

    def last_error(self) -> str:
        buffer = ctypes.create_string_buffer(1100)
        self._lib.ceed_streamer_last_error(self._handle, buffer, len(buffer))
        return buffer.value.decode(errors="replace")

    def stop(self) -> None:
        """Stop publishing and join the thread (at most about one period)."""
        if self._handle:
            self._lib.ceed_streamer_stop(self._handle)

    def close(self) -> None:
        if self._handle:
            self._lib.ceed_streamer_destroy(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()

"""Shared test set-up: real DDS kept on this machine, one ROS domain per test run."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Every test run talks over real DDS; keep discovery on localhost and give the run its own domain
# (make test sets one; a bare `pytest` gets a random one here). Child processes inherit both.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes; return whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def wait_until() -> Callable[[Callable[[], bool], float], bool]:
    """Bounded polling (DDS discovery between processes can take seconds): never a fixed sleep."""
    return _wait_until

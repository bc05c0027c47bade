"""The link benchmark's set-up and bookkeeping, and the success-rate interval (no DDS)."""

from __future__ import annotations

import argparse

import pytest

from ceed_vla_ros.bringup import node_ros_arguments
from ceed_vla_ros.tools.link_bench import RAW_TOPIC, held_share, linked_setup, parse_setting
from ceed_vla_ros.tools.statistics import format_rate, wilson_interval


def test_the_relay_sits_between_the_policy_and_the_driver():
    setup = linked_setup()
    names = [n.name for n in setup.nodes]
    assert names.index("link_relay") < names.index("arm_driver") and "policy" in names
    policy = next(n for n in setup.nodes if n.name == "policy")
    driver = next(n for n in setup.nodes if n.name == "arm_driver")
    assert f"/actions:={RAW_TOPIC}" in node_ros_arguments(setup, policy, {})
    assert not any("/actions:=" in a for a in node_ros_arguments(setup, driver, {}))


def test_settings_parse_and_bad_ones_are_refused():
    assert parse_setting("0.2:150") == (0.2, 150.0, 0.0)
    assert parse_setting("0:150:50") == (0.0, 150.0, 50.0)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_setting("0.2")


def test_held_share_integrates_the_latched_transitions():
    transitions = [(0.0, True), (2.0, False), (5.0, True), (6.0, False)]
    assert held_share(transitions, 1.0, 9.0) == pytest.approx((1.0 + 1.0) / 8.0)
    assert held_share(transitions, 5.5, 5.9) == pytest.approx(1.0)  # inside a hold
    assert held_share([], 0.0, 1.0) == 0.0


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(61, 200)  # issue #16's push re-measurement: 30.5 %, 24.5-37.2 %
    assert low == pytest.approx(0.245, abs=5e-4) and high == pytest.approx(0.372, abs=5e-4)
    low, high = wilson_interval(46, 50)  # z = 1.96: 0.8116-0.9685 by the formula in the docstring
    assert low == pytest.approx(0.8116, abs=5e-4) and high == pytest.approx(0.9685, abs=5e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert format_rate(2, 2) == "2/2 (100 %, 95 % CI 34-100 %)"
    with pytest.raises(ValueError):
        wilson_interval(3, 2)

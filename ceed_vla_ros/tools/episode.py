"""``ceed-vla episode start|stop|discard``: control a running episode recorder without a ROS 2 install.

Calls ``/episode_recorder/<action>_episode`` (std_srvs/Trigger) over DDS and prints its answer:
what ``ros2 service call /episode_recorder/start_episode std_srvs/srv/Trigger`` does where the
``ros2`` tool is missing (pip environments). Exit code 0 when the recorder accepted, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys

ACTIONS = ("start", "stop", "discard")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, help="start, stop (save) or discard the episode")
    parser.add_argument("--recorder", default="/episode_recorder", help="the recorder node's name")
    parser.add_argument("--wait", type=float, default=20.0, help="seconds to wait for the service to appear")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the answer (stop encodes every frame)"
    )


def cli_main(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from std_srvs.srv import Trigger

    from ceed_vla_ros.nodes.interfaces import probe_node
    from ceed_vla_ros.nodes.rclpy_compat import call_service

    service = f"{args.recorder.rstrip('/')}/{args.action}_episode"
    with probe_node(f"ceed_vla_episode_{os.getpid()}") as node:
        client = node.create_client(Trigger, service)
        if not client.wait_for_service(timeout_sec=args.wait):
            print(f"ceed-vla episode: no service {service} (is the recorder running, same ROS_DOMAIN_ID?)",
                  file=sys.stderr)
            return 1
        response = call_service(client, Trigger.Request(), args.timeout)
    if response is None:
        print(f"ceed-vla episode: {service} did not answer within {args.timeout:.0f} s", file=sys.stderr)
        return 1
    print(f"{'ok' if response.success else 'refused'}: {response.message}")
    return 0 if response.success else 1

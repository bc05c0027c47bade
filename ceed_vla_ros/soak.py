"""``ceed-vla soak``: the sim suite at full rate for minutes; see :mod:`ceed_vla_ros.pipeline_bench`."""

from ceed_vla_ros.pipeline_bench import add_soak_arguments as add_cli_arguments
from ceed_vla_ros.pipeline_bench import soak_main as cli_main

__all__ = ["add_cli_arguments", "cli_main"]

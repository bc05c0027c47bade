"""Tools on top of the core and the nodes: the ``ceed-vla`` command line (``cli``), closed-loop
evaluation, the benchmarks, the demo and the bring-up runner (``launcher``)."""

#!/bin/sh
# The latency-aware measurement of results/latency/README.md (issue #18), as run (from the repository root).
set -e
uptime > results/latency/replan_load.txt
.venv/bin/ceed-vla eval --settings sim_teacher:ar sim_teacher:jacobi sim_student:jacobi sim_student:early_exit:1 \
  sim_student:early_exit:2 sim_student:early_exit:3 sim_student:early_exit:1+fused --tasks reach reach_moving \
  --episodes 50 --seed 5000000 --execute-steps 1 --latency none measured model:58,18 --threads 1 --model-dir models \
  --no-progress --out results/latency/replan
uptime >> results/latency/replan_load.txt

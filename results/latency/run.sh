#!/bin/sh
# The latency-aware measurement of results/latency/README.md (issue #18), as run.
set -e
S="sim_teacher:ar sim_teacher:jacobi sim_student:jacobi sim_student:early_exit:1 sim_student:early_exit:2 sim_student:early_exit:3 sim_student:early_exit:1+fused"
for mode in replan:1 chunk:4; do
  name=${mode%%:*}; steps=${mode##*:}
  uptime > results/latency/${name}_load.txt
  .venv/bin/ceed-vla eval --settings $S --tasks reach reach_moving --episodes 50 --seed 5000000 \
    --execute-steps $steps --latency none measured model:58,18 --threads 1 --model-dir models \
    --no-progress --out results/latency/$name
  uptime >> results/latency/${name}_load.txt
done

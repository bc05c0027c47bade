#!/bin/sh
# The latency-aware measurement of the teacher and student trained for reach_moving (issue #18), as run
# from the repository root; same seeds, tasks, settings and latencies as ../run.sh (the shipped models).
set -e
uptime > results/latency/moving/load.txt
.venv/bin/ceed-vla eval --settings sim_teacher_moving:ar sim_teacher_moving:jacobi sim_student_moving:jacobi \
  sim_student_moving:early_exit:1 sim_student_moving:early_exit:2 sim_student_moving:early_exit:3 \
  sim_student_moving:early_exit:1+fused --tasks reach reach_moving \
  --episodes 50 --seed 5000000 --execute-steps 1 --latency none measured model:58,18 --threads 1 --model-dir models \
  --no-progress --out results/latency/moving
uptime >> results/latency/moving/load.txt

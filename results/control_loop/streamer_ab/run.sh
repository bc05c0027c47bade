# The native streamer vs the Python deadline thread, side by side in each run, order alternating:
#   bash results/control_loop/streamer_ab/run.sh   (about 9 minutes on 2 cores; keep the machine quiet)
set -eu
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-85}
out=results/control_loop/streamer_ab
mkdir -p $out/raw
run=0
for loops in streamer,thread thread,streamer; do
  run=$((run + 1))
  ceed-vla bench-pipeline --rates 500 --loops $loops --seconds 20 --realtime-priority 50 \
    --probe-realtime-priority 40 --out $out/raw/run_$run > $out/raw/run_$run.log 2>&1
  echo "run $run ($loops)"; sed -n '/^control loop/,$p' $out/raw/run_$run.log
done
ceed-vla bench-pipeline --rates 200 --loops streamer,thread --seconds 20 --realtime-priority 50 \
  --probe-realtime-priority 40 --out $out/raw/run_200hz > $out/raw/run_200hz.log 2>&1
echo "run 200 Hz"; sed -n '/^control loop/,$p' $out/raw/run_200hz.log

: "${BASE_SRC:?a source tree of the commit before, e.g. git worktree add /tmp/base ad327fe~1}"; export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=84
mkdir -p results/control_loop/float_step_ab/raw
for r in 1 2 3; do for tree in base new; do
  src=$PWD; [ $tree = base ] && src="$BASE_SRC"
  PYTHONPATH=$src ceed-vla bench-pipeline --rates 500 --seconds 20 --realtime-priority 50 --probe-realtime-priority 40 --out results/control_loop/float_step_ab/raw/${tree}_$r > results/control_loop/float_step_ab/raw/${tree}_$r.log 2>&1
  echo "$tree $r $(grep '^| 500 |' results/control_loop/float_step_ab/raw/${tree}_$r.log | tr '\n' ' ')"
done; done

# CPU % of one core per thread of the running arm_driver over a window (Linux schedstat run time):
#   ceed-vla launch sim_arm control_rate_hz:=500.0 realtime_priority:=50 &   # wait ~30 s, then:
#   bash results/control_loop/thread_cpu.sh 15
set -eu
seconds=${1:-10}
pid=$(pgrep -f "bin/arm_driver" | head -1)
snapshot() { for t in /proc/$pid/task/*; do echo "$(cat $t/comm) $(cut -d' ' -f1 $t/schedstat)"; done; }
before=$(snapshot); sleep "$seconds"; after=$(snapshot)
printf '%s\n--\n%s\n' "$before" "$after" | awk -v s="$seconds" '
  $0 == "--" { second = 1; next }
  { if (second) b[$1] += $2; else a[$1] += $2 }
  END { for (n in b) { p = (b[n] - a[n]) / s / 1e7; t += p; if (p >= 0.005) printf "%-18s %6.2f %%\n", n, p }
        printf "%-18s %6.2f %%\n", "all threads", t }' | sort -k2 -nr

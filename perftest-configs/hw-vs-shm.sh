#!/usr/bin/env bash
# Modeled-hardware backend (fast mode) vs shared-memory references, in the same run.
#
#   perftest-configs/hw-vs-shm.sh [--rounds N] [--check]
#
# Measures, per round: memcpy bandwidth of 64 KiB buffers and the one-way latency of a
# ping-pong between two processes spinning on shared memory (eca-refbench), then unmodified
# ib_write_bw -R (64 KiB) and ib_write_lat -R (2 bytes) on the modeled adapter. Medians:
#   bandwidth ratio = ib_write_bw / memcpy          (target >= 0.60)
#   latency ratio   = ib_write_lat t_avg / ping-pong (target <= 3.00)
# Then OS bypass: system calls per operation of ib_write_bw -R and ib_send_lat -R, counted
# with strace -f -c over all threads of both processes, as the difference between a long and
# a short run divided by the difference in operations (so set-up and teardown cancel out).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ref="$build/bin/eca-refbench"
rounds=3 check=0
parse_opts rounds check! -- "$@"
[ -x "$ref" ] || { echo "no $ref (run scripts/build.sh)" >&2; exit 2; }
need_tools strace
export ECA_BACKEND=hwmodel ECA_HWMODEL_MODE=fast


# perftest_pair PREFIX PROGRAM ARGS... : server and client; PREFIX wraps both (e.g. strace)
perftest_pair() {
  local wrap=$1 prog=$2; shift 2
  local port
  port=$(free_port)
  $wrap "$run" "$prog" -R -F -p "$port" "$@" >"$tmp/srv.out" 2>&1 &
  local spid=$!
  pids+=("$spid")
  wait_port "$port"
  $wrap "$run" "$prog" -R -F -p "$port" "$@" 127.0.0.1 >"$tmp/cli.out" 2>&1
  wait "$spid"
}

: >"$tmp/mc"; : >"$tmp/pp"; : >"$tmp/bw"; : >"$tmp/lat"
for r in $(seq 1 "$rounds"); do
  "$ref" memcpy --size 65536 --seconds 2 | awk '{print $2}' >>"$tmp/mc"
  "$ref" pingpong --iters 200000 | awk '{print $2}' >>"$tmp/pp"
  perftest_pair "" ib_write_bw -s 65536 -n 100000
  awk '$1 == 65536 && NF >= 5 {printf "%.0f\n", $4 * 1048576}' "$tmp/cli.out" >>"$tmp/bw"
  perftest_pair "" ib_write_lat -s 2 -n 100000
  awk '$1 == 2 && NF >= 6 {print $6}' "$tmp/cli.out" >>"$tmp/lat"
  echo "round $r: memcpy $(tail -n1 "$tmp/mc") B/s, ping-pong $(tail -n1 "$tmp/pp") us," \
       "ib_write_bw $(tail -n1 "$tmp/bw") B/s, ib_write_lat $(tail -n1 "$tmp/lat") us"
done
for f in mc pp bw lat; do
  [ "$(grep -c . "$tmp/$f" || true)" -eq "$rounds" ] || { echo "missing results ($f)" >&2; exit 1; }
done
mc=$(median <"$tmp/mc"); pp=$(median <"$tmp/pp"); bw=$(median <"$tmp/bw"); lat=$(median <"$tmp/lat")
bw_ratio=$(awk -v a="$bw" -v b="$mc" 'BEGIN {printf "%.3f", a/b}')
lat_ratio=$(awk -v a="$lat" -v b="$pp" 'BEGIN {printf "%.3f", a/b}')
bw_ok=$(awk -v r="$bw_ratio" 'BEGIN {print (r >= 0.60) ? "met" : "NOT met"}')
lat_ok=$(awk -v r="$lat_ratio" 'BEGIN {print (r <= 3.00) ? "met" : "NOT met"}')

# system calls per operation: strace totals of a short and a long run, both processes
count_pair() {
  local prog=$1 size=$2 n=$3 port
  port=$(free_port)
  strace -f -c -o "$tmp/st.srv" "$run" "$prog" -R -F -p "$port" -s "$size" -n "$n" >/dev/null 2>&1 &
  local spid=$!
  pids+=("$spid")
  wait_port "$port"
  strace -f -c -o "$tmp/st.cli" "$run" "$prog" -R -F -p "$port" -s "$size" -n "$n" 127.0.0.1 >/dev/null 2>&1
  wait "$spid"
  awk '/ total$/ {s += $4} END {print s+0}' "$tmp/st.srv" "$tmp/st.cli"
}
per_op() {  # PROGRAM SIZE SHORT LONG
  local a b
  a=$(count_pair "$1" "$2" "$3")
  b=$(count_pair "$1" "$2" "$4")
  awk -v a="$a" -v b="$b" -v n1="$3" -v n2="$4" 'BEGIN {d=(b-a)/(n2-n1); if (d < 0) d = 0; printf "%.4f", d}'
}
sc_bw=$(per_op ib_write_bw 65536 20000 200000)
sc_lat=$(per_op ib_send_lat 2 20000 100000)

printf '\n%-38s %14s %14s %8s  %s\n' "metric (median of $rounds rounds)" "modeled HW" "reference" "ratio" "target"
printf '%-38s %14.0f %14.0f %8s  %s\n' "64 KiB write bandwidth [MB/s]" \
  "$(awk -v x="$bw" 'BEGIN{print x/1e6}')" "$(awk -v x="$mc" 'BEGIN{print x/1e6}')" "$bw_ratio" ">= 0.60 vs memcpy ($bw_ok)"
printf '%-38s %14s %14s %8s  %s\n' "2 B write latency, one-way [us]" "$lat" "$pp" "$lat_ratio" "<= 3.00 vs shm ping-pong ($lat_ok)"
printf '%-38s %14s\n' "syscalls/op ib_write_bw -R (all threads)" "$sc_bw"
printf '%-38s %14s\n' "syscalls/op ib_send_lat -R (all threads)" "$sc_lat"
echo
echo "reproduce: $0 --rounds $rounds"
if [ "$check" = 1 ] && { [ "$bw_ok" != met ] || [ "$lat_ok" != met ]; }; then exit 1; fi
exit 0

#!/usr/bin/env bash
# Software backend vs raw TCP, measured in the same run on loopback.
#
#   perftest-configs/sw-vs-tcp.sh [--rounds N] [--bw-iters N] [--lat-iters N] [--check]
#
# Each round measures, back to back: qperf tcp_bw (64 KiB messages) and tcp_lat (2 bytes),
# then unmodified ib_write_bw -R (64 KiB) and ib_write_lat -R (2 bytes) over this stack.
# The medians over the rounds are compared:
#   bandwidth ratio = ib_write_bw average / tcp_bw        (target >= 0.90)
#   latency ratio   = ib_write_lat t_avg / tcp_lat one-way (target <= 1.30)
# qperf's tcp_lat and ib_write_lat both report one-way latency (half a round trip).
# qperf's tcp_lat sleeps in recv() while ib_write_lat busy-polls, so each round also measures
# sockperf's busy-polling TCP ping-pong (non-blocking sockets, 14-byte messages, its minimum;
# average of half round trips): the like-for-like reference for a polling stack, reported
# beside the target's ratio. On a loaded machine the two references part: a sleeping thread
# is woken at once, a polling one waits for its turn on the CPU like ib_write_lat does.
# With --check the exit status says whether both targets were met.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=3 bw_iters=20000 lat_iters=5000 check=0
parse_opts rounds bw-iters lat-iters check! -- "$@"
need_tools qperf sockperf ib_write_bw ib_write_lat



# qperf TEST SIZE -> value in bytes/s (bw) or microseconds (lat)
qperf_run() {
  local test=$1 size=$2 port out
  port=$(free_port)
  qperf -lp "$port" >/dev/null 2>&1 &
  local spid=$!
  pids+=("$spid")
  wait_port "$port"
  out=$(timeout 60 qperf -lp "$port" 127.0.0.1 -t 3 -m "$size" -vu "$test")
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  case "$test" in
    tcp_bw) echo "$out" | awk '/bw *=/ {v=$3; u=$4; m=(u ~ /^GB/)?1e9:(u ~ /^MB/)?1e6:(u ~ /^KB/)?1e3:1; printf "%.0f\n", v*m}' ;;
    tcp_lat) echo "$out" | awk '/latency *=/ {v=$3; u=$4; m=(u ~ /^ms/)?1000:(u ~ /^ns/)?0.001:1; printf "%.3f\n", v*m}' ;;
  esac
}

# -> sockperf's busy-polling TCP ping-pong: average one-way latency in microseconds
sockperf_lat() {
  local port out
  port=$(free_port)
  sockperf sr --tcp -i 127.0.0.1 -p "$port" --nonblocked >/dev/null 2>&1 &
  local spid=$!
  pids+=("$spid")
  wait_port "$port"
  out=$(timeout 60 sockperf pp --tcp -i 127.0.0.1 -p "$port" --nonblocked -m 14 -t 3 2>&1)
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  echo "$out" | sed 's/\x1b\[[0-9;]*m//g' | awk -F'avg-latency=' 'NF > 1 {split($2, a, " "); printf "%.3f\n", a[1]}'
}

# perftest PROGRAM ARGS... -> client output file
perftest_run() {
  local prog=$1; shift
  local port out="$tmp/$prog.out"
  port=$(free_port)
  "$run" "$prog" -R -F -p "$port" "$@" >"$tmp/$prog.srv" 2>&1 &
  local spid=$!
  pids+=("$spid")
  wait_port "$port"
  timeout 120 "$run" "$prog" -R -F -p "$port" "$@" 127.0.0.1 >"$out" 2>&1
  wait "$spid"
  echo "$out"
}


: >"$tmp/tcp_bw"; : >"$tmp/tcp_lat"; : >"$tmp/poll_lat"; : >"$tmp/eca_bw"; : >"$tmp/eca_lat"
for r in $(seq 1 "$rounds"); do
  qperf_run tcp_bw 64K >>"$tmp/tcp_bw"
  qperf_run tcp_lat 2 >>"$tmp/tcp_lat"
  sockperf_lat >>"$tmp/poll_lat"
  f=$(perftest_run ib_write_bw -s 65536 -n "$bw_iters")
  # BW average is in MiB/s (perftest: MiB = 2^20 bytes)
  awk '$1 == 65536 && NF >= 5 {printf "%.0f\n", $4 * 1048576}' "$f" >>"$tmp/eca_bw"
  f=$(perftest_run ib_write_lat -s 2 -n "$lat_iters")
  awk '$1 == 2 && NF >= 6 {print $6}' "$f" >>"$tmp/eca_lat"
  echo "round $r: tcp_bw $(tail -n1 "$tmp/tcp_bw") B/s, tcp_lat $(tail -n1 "$tmp/tcp_lat") us," \
       "sockperf $(tail -n1 "$tmp/poll_lat") us, ib_write_bw $(tail -n1 "$tmp/eca_bw") B/s, ib_write_lat $(tail -n1 "$tmp/eca_lat") us"
done
for f in tcp_bw tcp_lat poll_lat eca_bw eca_lat; do
  n=$(grep -c . "$tmp/$f" || true)
  [ "$n" -eq "$rounds" ] || { echo "missing results in $f ($n of $rounds)" >&2; exit 1; }
done

tb=$(median <"$tmp/tcp_bw"); tl=$(median <"$tmp/tcp_lat"); pl=$(median <"$tmp/poll_lat")
eb=$(median <"$tmp/eca_bw"); el=$(median <"$tmp/eca_lat")
bw_ratio=$(awk -v a="$eb" -v b="$tb" 'BEGIN {printf "%.3f", a/b}')
lat_ratio=$(awk -v a="$el" -v b="$tl" 'BEGIN {printf "%.3f", a/b}')
poll_ratio=$(awk -v a="$el" -v b="$pl" 'BEGIN {printf "%.3f", a/b}')
bw_ok=$(awk -v r="$bw_ratio" 'BEGIN {print (r >= 0.90) ? "met" : "NOT met"}')
lat_ok=$(awk -v r="$lat_ratio" 'BEGIN {print (r <= 1.30) ? "met" : "NOT met"}')
printf '\n%-34s %14s %14s %8s  %s\n' "metric (median of $rounds rounds)" "software iWARP" "raw TCP" "ratio" "target"
printf '%-34s %14.0f %14.0f %8s  %s\n' "64 KiB write bandwidth [MB/s]" "$(awk -v x="$eb" 'BEGIN{print x/1e6}')" \
  "$(awk -v x="$tb" 'BEGIN{print x/1e6}')" "$bw_ratio" ">= 0.90 ($bw_ok)"
printf '%-34s %14s %14s %8s  %s\n' "2 B write latency, one-way [us]" "$el" "$tl" "$lat_ratio" "<= 1.30 ($lat_ok)"
printf '%-34s %14s %14s %8s  %s\n' "  vs busy-polling TCP (sockperf)" "$el" "$pl" "$poll_ratio" "(information)"
echo
echo "reproduce: $0 --rounds $rounds --bw-iters $bw_iters --lat-iters $lat_iters"
if [ "$check" = 1 ] && { [ "$bw_ok" != met ] || [ "$lat_ok" != met ]; }; then exit 1; fi
exit 0

#!/usr/bin/env bash
# rsockets vs kernel TCP sockets, measured with the same unmodified rstream in the same run
# on loopback: `-T s` makes rstream use normal sockets, without it rstream uses rsockets
# (our librdmacm through eca-run).
#
#   perftest-configs/rsocket-vs-tcp.sh [--rounds N] [--bw-size BYTES] [--bw-count N]
#                                      [--lat-size BYTES] [--lat-iters N] [--mode b|n|a]
#
# bandwidth: rstream -S BW_SIZE -C BW_COUNT (BW_COUNT transfers each way), Gb/s
# latency:   rstream -S LAT_SIZE -C 1 -I LAT_ITERS (ping-pong), usec per one-way transfer
# ECA_BACKEND=hwmodel measures rsockets on the modeled adapter instead of the software
# backend. Each round runs the four measurements back to back; medians over the rounds are printed
# with the ratio rsocket/TCP. Every rstream command is printed, so each figure can be
# reproduced on its own.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=3 bw_size=1048576 bw_count=200 lat_size=64 lat_iters=5000 mode=b
parse_opts rounds bw-size bw-count lat-size lat-iters mode -- "$@"
need_tools rstream

# rs KIND ARGS... -> the client's result line. KIND: rsocket (through eca-run) or tcp (-T s).
rs() {
  local kind=$1 port pre=() topt=(-T "$mode")
  shift
  port=$(free_port)
  if [ "$kind" = rsocket ]; then pre=("$run"); else topt+=(-T s); fi
  echo "  ${pre[*]:+${pre[*]} }rstream -p $port $* ${topt[*]}   # server" >&2
  echo "  ${pre[*]:+${pre[*]} }rstream -s 127.0.0.1 -p $port $* ${topt[*]}   # client" >&2
  timeout 300 "${pre[@]}" rstream -p "$port" "$@" "${topt[@]}" >"$tmp/srv.out" 2>&1 &
  local spid=$!
  pids+=("$spid")
  wait_port "$port"
  timeout 300 "${pre[@]}" rstream -s 127.0.0.1 -p "$port" "$@" "${topt[@]}" >"$tmp/cli.out" 2>&1
  wait "$spid"
  grep '^custom' "$tmp/cli.out" || { cat "$tmp/cli.out" >&2; return 1; }
}

: >"$tmp/bw_rsocket"; : >"$tmp/bw_tcp"; : >"$tmp/lat_rsocket"; : >"$tmp/lat_tcp"
for r in $(seq 1 "$rounds"); do
  echo "round $r/$rounds:" >&2
  for kind in rsocket tcp; do
    rs "$kind" -S "$bw_size" -C "$bw_count" | awk '{print $7}' >>"$tmp/bw_$kind"
    rs "$kind" -S "$lat_size" -C 1 -I "$lat_iters" | awk '{print $8}' >>"$tmp/lat_$kind"
  done
done
bw_r=$(median <"$tmp/bw_rsocket"); bw_t=$(median <"$tmp/bw_tcp")
lat_r=$(median <"$tmp/lat_rsocket"); lat_t=$(median <"$tmp/lat_tcp")
echo
echo "rstream over loopback, backend ${ECA_BACKEND:-software}, mode -T $mode, median of $rounds rounds ($(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
printf '%-34s %12s %12s %8s\n' "measurement" "rsocket" "TCP" "ratio"
printf '%-34s %12s %12s %8.2f\n' "bandwidth $bw_size B x $bw_count (Gb/s)" "$bw_r" "$bw_t" \
  "$(awk -v a="$bw_r" -v b="$bw_t" 'BEGIN {print (b > 0) ? a / b : 0}')"
printf '%-34s %12s %12s %8.2f\n' "latency $lat_size B ping-pong (us)" "$lat_r" "$lat_t" \
  "$(awk -v a="$lat_r" -v b="$lat_t" 'BEGIN {print (b > 0) ? a / b : 0}')"
echo "reproduce: ${ECA_BACKEND:+ECA_BACKEND=$ECA_BACKEND }$0 --rounds $rounds --bw-size $bw_size --bw-count $bw_count --lat-size $lat_size --lat-iters $lat_iters --mode $mode"

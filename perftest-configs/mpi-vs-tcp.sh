#!/usr/bin/env bash
# MPI over eca-iwarp vs MPI over TCP, measured in the same run between two network
# namespaces joined by a veth pair (created here, deleted at exit; run as root).
#
#   perftest-configs/mpi-vs-tcp.sh [--rounds N] [--lat-iters N] [--bw-rounds N] [--pp-iters N]
#
# The same program (tests/mpi/mpi_check.c --bench, 2 ranks, one per namespace) runs under
# build/bin/eca-mpirun over:
#   verbs-sw  verbs;ofi_rxm on the software backend          (the figures the targets are for)
#   verbs-hw  verbs;ofi_rxm on the modeled adapter            (for information)
#   tcp-rxm   libfabric's tcp;ofi_rxm                         (reference)
#   ob1-tcp   Open MPI's own TCP transport (pml ob1, btl tcp)  (reference)
# and reports the medians over the rounds of: the first exchange after MPI_Init (1 byte each
# way, connection set-up included), 8-byte ping-pong latency (half a round trip) and 1 MiB
# streaming bandwidth; then Debian's fi_pingpong (msg endpoints, 64 B) over verbs and over
# libfabric's tcp provider. Ratios and targets (against tcp;ofi_rxm / the tcp provider):
#   8 B latency <= 1.0x, 1 MiB bandwidth >= 2x, fi_pingpong 64 B <= 1.2x, first exchange <= 1.5x
# Each round also measures the ceiling of any TCP-based transport over the same veth pair:
# iperf3, one stream of 1 MiB writes (information: every byte of the software backend crosses
# one TCP connection, so its MPI bandwidth cannot exceed this).
# eca-mpirun leaves the ranks unbound (--bind-to none) because both "hosts" are this machine:
# bound, each namespace's rank sat on core 0 and every configuration measured one shared core.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=3 lat_iters=2000 bw_rounds=20 pp_iters=2000
parse_opts rounds lat-iters bw-rounds pp-iters -- "$@"
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 2; }
mpirun_w="$build/bin/eca-mpirun"
prog="$build/bin/mpi_check"
[ -x "$prog" ] || { echo "$prog missing (libopenmpi-dev, then rebuild)" >&2; exit 2; }
need_tools mpirun fi_pingpong iperf3 ip

# --- two namespaces and a veth pair
net=$((RANDOM % 200 + 20))
ns_a="eca-mpibench-$$-a" ns_b="eca-mpibench-$$-b"
ip_a="10.214.$net.1" ip_b="10.214.$net.2"
cleanup_ns() {
  local ns pid
  for ns in "$ns_a" "$ns_b"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
}
trap 'cleanup; cleanup_ns' EXIT
ip netns add "$ns_a"
ip netns add "$ns_b"
ip link add "eb$$a" netns "$ns_a" type veth peer name "eb$$b" netns "$ns_b"
ip -n "$ns_a" addr add "$ip_a/24" dev "eb$$a"
ip -n "$ns_b" addr add "$ip_b/24" dev "eb$$b"
for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
ip -n "$ns_a" link set "eb$$a" up
ip -n "$ns_b" link set "eb$$b" up
for _ in $(seq 1 200); do
  ip -n "$ns_b" -o link show "eb$$b" | grep -q LOWER_UP && break
  sleep 0.05
done

# mpi_bench FABRIC BACKEND -> "first_us lat_us bw_MBps" (one run)
mpi_bench() {
  local out="$tmp/mpi.$1.$2.out"
  timeout -k 10 300 ip netns exec "$ns_a" "$mpirun_w" --fabric "$1" --backend "$2" \
    --netns "$ip_b=$ns_b" -np 2 --host "$ip_a,$ip_b" "$prog" --bench "$lat_iters" "$bw_rounds" \
    >"$out" 2>&1 || { echo "mpirun ($1, $2) failed:" >&2; tail -20 "$out" >&2; return 1; }
  awk -F= '/^first_exchange_us=/ {f=$2} /^lat8_us=/ {l=$2} /^bw1m_MBps=/ {b=$2}
           END {if (f == "" || l == "" || b == "") exit 1; print f, l, b}' "$out"
}

# serve_in_a PORT COMMAND...: starts a server in namespace A (output to $tmp/srv.out), sets
# spid, and waits until something listens on PORT there.
serve_in_a() {
  local port=$1
  shift
  ip netns exec "$ns_a" "$@" >"$tmp/srv.out" 2>&1 &
  spid=$!
  pids+=("$spid")
  for _ in $(seq 1 200); do
    [ -n "$(ip netns exec "$ns_a" ss -ltnH "sport = :$port")" ] && break
    sleep 0.05
  done
}

# pingpong PROVIDER -> usec/xfer of 64-byte messages over msg endpoints (one run)
pingpong() {
  local port out="$tmp/pp.out" spid
  port=$(free_port)
  serve_in_a "$port" "$run" timeout 120 fi_pingpong -p "$1" -e msg -B "$port" -I "$pp_iters" -S 64
  timeout 120 ip netns exec "$ns_b" "$run" fi_pingpong -p "$1" -e msg -P "$port" -I "$pp_iters" -S 64 \
    "$ip_a" >"$out" 2>&1 || { echo "fi_pingpong -p $1 failed:" >&2; tail -5 "$out" >&2; }
  wait "$spid" 2>/dev/null || true
  # fi_pingpong abbreviates counts (2k); the row is size, count, =acked, bytes, time, MB/s, usec/xfer.
  awk '$1 == "64" && NF >= 8 && $7 ~ /^[0-9.]+$/ {print $7}' "$out"
}

# -> iperf3 single-stream TCP throughput from B to A, MB/s (10^6 B/s)
tcp_ceiling() {
  local port spid
  port=$(free_port)
  serve_in_a "$port" timeout 30 iperf3 -s -1 -p "$port"
  timeout 30 ip netns exec "$ns_b" iperf3 -c "$ip_a" -p "$port" -t 2 -l 1M -J 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e6))' || true
  wait "$spid" 2>/dev/null || true
}

configs=("verbs software" "verbs hwmodel" "tcp software" "ob1 software")
names=(verbs-sw verbs-hw tcp-rxm ob1-tcp)
declare -A first lat bw
for i in "${!configs[@]}"; do first[$i]=""; lat[$i]=""; bw[$i]=""; done
pp_v="" pp_t="" ceil=""
for r in $(seq 1 "$rounds"); do
  c=$(tcp_ceiling); [ -n "$c" ] && ceil+="$c "
  printf 'round %d iperf3 TCP over the veth pair: %s MB/s\n' "$r" "${c:-?}" >&2
  for i in "${!configs[@]}"; do
    # shellcheck disable=SC2086
    if v=$(mpi_bench ${configs[$i]}); then
      read -r f l b <<<"$v"
      first[$i]+="$f "; lat[$i]+="$l "; bw[$i]+="$b "
      printf 'round %d %-9s first %10.1f us  lat8 %8.2f us  bw1m %8.1f MB/s\n' "$r" "${names[$i]}" "$f" "$l" "$b" >&2
    fi
  done
  pv=$(pingpong verbs); [ -n "$pv" ] && pp_v+="$pv "
  pt=$(pingpong tcp); [ -n "$pt" ] && pp_t+="$pt "
  printf 'round %d fi_pingpong 64 B: verbs %s us, tcp %s us\n' "$r" "${pv:-?}" "${pt:-?}" >&2
done

med() { tr ' ' '\n' <<<"$1" | grep . | median; }
echo
printf '%-9s %14s %12s %14s\n' config "first (us)" "lat8 (us)" "bw1m (MB/s)"
for i in "${!configs[@]}"; do
  [ -n "${lat[$i]}" ] || { printf '%-9s %14s\n' "${names[$i]}" failed; continue; }
  printf '%-9s %14.1f %12.2f %14.1f\n' "${names[$i]}" "$(med "${first[$i]}")" "$(med "${lat[$i]}")" "$(med "${bw[$i]}")"
done
ppv=$(med "$pp_v") ppt=$(med "$pp_t")
printf 'fi_pingpong msg 64 B usec/xfer: verbs %s, tcp %s\n' "$ppv" "$ppt"
if [ -n "$ceil" ]; then
  printf 'TCP ceiling (iperf3, one stream, same veth pair): %.1f MB/s' "$(med "$ceil")"
  [ -n "${bw[0]}" ] && awk -v b="$(med "${bw[0]}")" -v c="$(med "$ceil")" 'BEGIN {printf "; verbs-sw bw1m is %.2fx of it", b/c}'
  [ -n "${bw[2]}" ] && awk -v b="$(med "${bw[2]}")" -v c="$(med "$ceil")" 'BEGIN {printf ", tcp-rxm %.2fx", b/c}'
  echo
fi
if [ -n "${lat[0]}" ] && [ -n "${lat[2]}" ]; then
  awk -v l="$(med "${lat[0]}")" -v lt="$(med "${lat[2]}")" -v b="$(med "${bw[0]}")" -v bt="$(med "${bw[2]}")" \
      -v f="$(med "${first[0]}")" -v ft="$(med "${first[2]}")" -v p="$ppv" -v pt="$ppt" 'BEGIN {
    printf "verbs-sw vs tcp-rxm: lat8 %.2fx (target <= 1.0), bw1m %.2fx (target >= 2), first exchange %.2fx (target <= 1.5)\n", l/lt, b/bt, f/ft
    if (p > 0 && pt > 0) printf "fi_pingpong 64 B verbs vs tcp: %.2fx (target <= 1.2)\n", p/pt }'
fi
echo "reproduce: $0 --rounds $rounds --lat-iters $lat_iters --bw-rounds $bw_rounds --pp-iters $pp_iters"

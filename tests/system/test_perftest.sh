#!/usr/bin/env bash
# Debian's unmodified perftest over rdma_cm (-R) on 127.0.0.1:
#  - ib_send_bw, ib_write_bw, ib_read_bw over every size of -a (2 B .. 8 MiB);
#  - ib_send_lat, ib_write_lat, ib_read_lat at a few sizes;
#  - ib_write_bw with 8 QPs.
# Every expected result row must be present with non-zero numbers, both sides must exit
# 0, and neither may print an error.
# shellcheck source=tests/system/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_library
require_program ib_send_bw ib_write_bw ib_read_bw ib_send_lat ib_write_lat ib_read_lat

ERRORS='error|couldn.?t|failed|unable to|not supported|illegal|unsupported'

# perf NAME TIMEOUT PROGRAM ARGS...: server "PROGRAM -R -F -p PORT ARGS", client the same
# plus 127.0.0.1; checks exit codes and that neither side printed an error.
perf() {
  local name=$1 timeout=$2 prog=$3
  shift 3
  local port
  port=$(free_port)
  run_pair --name "$name" --port "$port" --timeout "$timeout" \
    "$prog" -R -F -p "$port" "$@" -- \
    "$prog" -R -F -p "$port" "$@" 127.0.0.1
  local f
  for f in "$CLIENT_OUT" "$CLIENT_ERR" "$SERVER_OUT" "$SERVER_ERR"; do
    assert_not_contains "$f" "$ERRORS" "$name $(basename "$f")"
  done
}

# check_bw NAME FILE ITERS EXPECTED_SIZES...: FILE has exactly one bandwidth row per expected
# size (" #bytes #iterations BW-peak BW-average MsgRate"), each reporting ITERS completed
# iterations, and no other rows. The figures themselves are not asserted on: on a loaded
# machine perftest can print a small size's bandwidth as 0.00 MB/s.
check_bw() {
  local name=$1 file=$2 iters=$3
  shift 3
  assert_contains "$file" '^ *#bytes +#iterations +BW peak\[[A-Za-z/]+\] +BW average\[[A-Za-z/]+\] +MsgRate\[Mpps\]' \
    "$name result header"
  local rows
  rows=$(awk '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ && NF == 5 && $3 ~ /^[0-9.]+$/ &&
              $4 ~ /^[0-9.]+$/ && $5 ~ /^[0-9.]+$/ { print $1, $2 }' "$file")
  local got
  got=$(awk '{ print $1 }' <<<"$rows" | tr '\n' ' ' | sed 's/ $//')
  [[ "$got" == "$*" ]] || { cat "$file" >&2; fail "$name: result rows for sizes '$got', expected '$*'"; }
  local size n
  while read -r size n; do
    [[ "$n" == "$iters" ]] ||
      { cat "$file" >&2; fail "$name: size $size reports $n iterations, expected $iters"; }
  done <<<"$rows"
  log "$name: $(wc -l <<<"$rows") result rows, each with $iters iterations"
}

# check_lat NAME FILE SIZE: one latency row for SIZE
# (" #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9%") with
# 0 < t_min <= t_typical <= t_max and 0 < t_avg.
check_lat() {
  local name=$1 file=$2 size=$3
  assert_contains "$file" '^ *#bytes +#iterations +t_min\[usec\] +t_max\[usec\] +t_typical\[usec\] +t_avg\[usec\]' \
    "$name result header"
  local rows
  rows=$(awk '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ && NF >= 6 && $3 ~ /^[0-9.]+$/ { print }' "$file")
  [[ $(wc -l <<<"$rows") == 1 && -n "$rows" ]] || { cat "$file" >&2; fail "$name: expected one latency row"; }
  local bytes iters tmin tmax ttyp tavg rest
  read -r bytes iters tmin tmax ttyp tavg rest <<<"$rows"
  [[ "$bytes" == "$size" ]] || fail "$name: latency row for $bytes bytes, expected $size"
  awk -v a="$tmin" -v b="$ttyp" -v c="$tmax" -v d="$tavg" \
    'BEGIN { exit !(a > 0 && a <= b && b <= c && d > 0) }' ||
    { cat "$file" >&2; fail "$name: implausible latencies min=$tmin typical=$ttyp max=$tmax avg=$tavg"; }
  log "$name: $bytes B, $iters iterations, t_typical $ttyp us, t_avg $tavg us"
}

ALL_SIZES=""
for ((i = 1; i <= 23; i++)); do ALL_SIZES+="$((1 << i)) "; done
ALL_SIZES=${ALL_SIZES% }

# --- bandwidth over all sizes
for prog in ib_send_bw ib_write_bw ib_read_bw; do
  perf "$prog" 180 "$prog" -a -n 200
  # shellcheck disable=SC2086
  check_bw "$prog -a" "$CLIENT_OUT" 200 $ALL_SIZES
done

# --- several QPs at once
perf ib_write_bw_q8 120 ib_write_bw -q 8 -s 65536 -n 500
check_bw "ib_write_bw -q 8" "$CLIENT_OUT" 4000 65536  # perftest counts the iterations of all 8 QPs

# --- latency at a few sizes
for prog in ib_send_lat ib_write_lat ib_read_lat; do
  for size in 2 4096 65536 1048576; do
    iters=1000
    ((size >= 1048576)) && iters=100
    perf "${prog}_$size" 60 "$prog" -s "$size" -n "$iters"
    check_lat "$prog -s $size" "$CLIENT_OUT" "$size"
  done
done

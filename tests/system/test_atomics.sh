#!/usr/bin/env bash
# RFC 7306 atomics on 127.0.0.1, with unmodified Debian programs and a contention test:
#  - ib_atomic_bw -R and ib_atomic_lat -R, each with -A FETCH_AND_ADD and -A CMP_AND_SWAP:
#    one result row with 1000 iterations, no error on either side;
#  - tests/system/atomic_counter.c: 3 client processes x 4 QPs, 300 increments per QP of one
#    counter (FETCH_AND_ADD; then a CMP_AND_SWAP loop), while a thread of the server
#    process increments the same counter with CPU atomics. The final counter must equal the
#    remote increments plus the local ones, and the values the remote increments replaced
#    must all differ (no two increments saw the same value).
# qperf's rc_compare_swap_mr and rc_fetch_add_mr run in test_qperf.sh.
# shellcheck source=tests/system/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_library
require_program ib_atomic_bw ib_atomic_lat

ERRORS='error|couldn.?t|failed|unable to|not supported|illegal|unsupported'

# perftest NAME PROGRAM ARGS...: server "PROGRAM -R -F -p PORT ARGS", client the same plus
# 127.0.0.1; one result row for 8 bytes and 1000 iterations with positive figures.
perftest() {
  local name=$1 prog=$2
  shift 2
  local port
  port=$(free_port)
  run_pair --name "$name" --port "$port" --timeout 120 \
    "$prog" -R -F -p "$port" "$@" -- "$prog" -R -F -p "$port" "$@" 127.0.0.1
  local f
  for f in "$CLIENT_OUT" "$CLIENT_ERR" "$SERVER_OUT" "$SERVER_ERR"; do
    assert_not_contains "$f" "$ERRORS" "$name $(basename "$f")"
  done
  local row
  if [[ "$prog" == *_lat ]]; then
    # #bytes #iterations t_min t_max t_typical t_avg ...: 0 < t_min <= t_typical <= t_max
    row=$(awk '$1 == "8" && $2 == "1000" && $3 > 0 && $3 <= $5 && $5 <= $4 && $6 > 0' "$CLIENT_OUT")
  else
    # #bytes #iterations BW-peak BW-average MsgRate: the figures are numbers (not asserted
    # positive: a loaded machine can round a small-message bandwidth to 0.00)
    row=$(awk '$1 == "8" && $2 == "1000" && NF == 5 && $5 ~ /^[0-9.]+$/' "$CLIENT_OUT")
  fi
  [[ -n "$row" ]] || { cat "$CLIENT_OUT" >&2; fail "$name: no valid result row for 8 bytes x 1000"; }
  log "$name: $row"
}

perftest bw_fetch_add ib_atomic_bw -A FETCH_AND_ADD
perftest bw_cmp_swap ib_atomic_bw -A CMP_AND_SWAP
perftest lat_fetch_add ib_atomic_lat -A FETCH_AND_ADD
perftest lat_cmp_swap ib_atomic_lat -A CMP_AND_SWAP

# --- contention: several processes, several QPs each, one counter
COUNTER="$TEST_TMP/atomic_counter"
"${CC:-cc}" -O2 -Wall -pthread -o "$COUNTER" "$ECA_SRC/tests/system/atomic_counter.c" \
  -libverbs -lrdmacm || fail "cannot build atomic_counter"
NPROC=3 NQP=4 ITERS=300
for mode in fetch_add cas; do
  port=$(free_port)
  start_bg "counter.$mode.server" timeout -k 5 200 "$ECA_RUN" "$COUNTER" server "$port" $((NPROC * NQP))
  spid=$BG_PID
  wait_port "$port" 20 "" "$spid"
  cpids=()
  for ((p = 0; p < NPROC; p++)); do
    arg=()
    [[ "$mode" == cas ]] && arg=(cas)
    start_bg "counter.$mode.client$p" timeout -k 5 180 "$ECA_RUN" \
      "$COUNTER" client 127.0.0.1 "$port" "$NQP" "$ITERS" "${arg[@]}"
    cpids+=("$BG_PID")
  done
  for ((p = 0; p < NPROC; p++)); do
    wait_pid "${cpids[$p]}" 190
    [[ "$WAIT_RC" == 0 ]] ||
      { show_outputs "counter.$mode.server" "counter.$mode.client$p"; fail "$mode: client $p exited $WAIT_RC"; }
  done
  wait_pid "$spid" 30
  [[ "$WAIT_RC" == 0 ]] || { show_outputs "counter.$mode.server"; fail "$mode: server exited $WAIT_RC"; }
  counter=$(awk '$1 == "counter" { print $2 }' "$TEST_TMP/counter.$mode.server.out")
  local_incs=$(awk '$1 == "local" { print $2 }' "$TEST_TMP/counter.$mode.server.out")
  remote=$((NPROC * NQP * ITERS))
  cat "$TEST_TMP"/counter."$mode".client*.out >"$TEST_TMP/counter.$mode.values"
  lines=$(wc -l <"$TEST_TMP/counter.$mode.values")
  distinct=$(sort -n "$TEST_TMP/counter.$mode.values" | uniq | wc -l)
  [[ "$lines" == "$remote" ]] || fail "$mode: clients reported $lines increments, expected $remote"
  [[ "$distinct" == "$remote" ]] ||
    fail "$mode: only $distinct distinct values among $remote remote increments"
  [[ -n "$counter" && -n "$local_incs" ]] || { show_outputs "counter.$mode.server"; fail "$mode: no counter"; }
  [[ "$counter" == $((remote + local_incs)) ]] ||
    fail "$mode: counter $counter, expected $remote remote + $local_incs local increments"
  log "$mode: counter $counter = $remote remote increments ($NPROC processes x $NQP QPs) + $local_incs CPU increments; all remote results distinct"
done

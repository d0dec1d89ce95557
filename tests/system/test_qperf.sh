#!/usr/bin/env bash
# qperf's RC tests over rdma_cm (-cm1, required for iWARP) on 127.0.0.1, including the
# RFC 7306 atomics (rc_compare_swap_mr, rc_fetch_add_mr): every test prints a non-zero
# bandwidth, latency or message rate and nothing failed.
# shellcheck source=tests/system/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_library
require_program qperf

TESTS=(rc_bw rc_lat rc_rdma_write_bw rc_rdma_read_bw rc_rdma_write_lat rc_rdma_read_lat
       rc_compare_swap_mr rc_fetch_add_mr)
port=$(free_port)
# The qperf server serves clients until it is killed; it is stopped (and reaped) below.
start_bg qperf.server timeout -k 5 300 "$ECA_RUN" qperf -lp "$port"
spid=$BG_PID
wait_port "$port" 20 "" "$spid"

start_bg qperf.client timeout -k 5 180 "$ECA_RUN" \
  qperf -lp "$port" -cm1 -to 20 -t 2 -uu 127.0.0.1 "${TESTS[@]}"
wait_pid "$BG_PID" 190
crc=$WAIT_RC
out="$TEST_TMP/qperf.client.out"
all="$TEST_TMP/qperf.all"
cat "$out" "$TEST_TMP/qperf.client.err" >"$all"
_alive "$spid" || { show_outputs qperf.server qperf.client; fail "qperf server died during the run"; }
stop_pid "$spid" TERM 5
[[ "$crc" == 0 ]] || { show_outputs qperf.server qperf.client; fail "qperf client exited $crc"; }
assert_not_contains "$all" 'fail|error|timeout|timed out' "qperf output"

# Output: "<test>:" then indented "<name>  =  <value> <unit>" lines.
for t in "${TESTS[@]}"; do
  case "$t" in
    *_bw) key=bw ;;
    *_lat) key=latency ;;
    *_mr) key=msg_rate ;;
  esac
  line=$(awk -v t="$t:" -v k="$key" '
    $0 == t { inside = 1; next }
    /^[^ \t]/ { inside = 0 }
    inside && $1 == k && $2 == "=" { print $3, $4; exit }' "$out")
  [[ -n "$line" ]] || { cat "$out" >&2; fail "qperf $t: no '$key = ' result"; }
  read -r value unit <<<"$line"
  [[ "$value" =~ ^[0-9]+(\.[0-9]+)?$ ]] || fail "qperf $t: non-numeric $key '$value'"
  awk -v v="$value" 'BEGIN { exit !(v > 0) }' || fail "qperf $t: $key is $value $unit"
  log "qperf $t: $key = $value $unit"
done

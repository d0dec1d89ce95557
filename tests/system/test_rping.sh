#!/usr/bin/env bash
# rping (librdmacm's ping-pong: SEND of buffer advertisements, RDMA READ of the
# client's buffer, RDMA WRITE back, with -V validating the data every iteration)
# between an unmodified server and client over 127.0.0.1, for several sizes.
# shellcheck source=tests/system/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_library
require_program rping

COUNT=200
# 23 is rping's smallest valid size, 65535 its largest (-S must be < 64 KiB).
for size in 23 64 4096 65535; do
  port=$(free_port)
  run_pair --name "rping_$size" --port "$port" --timeout 120 \
    rping -s -a 127.0.0.1 -p "$port" -C "$COUNT" -V -S "$size" -- \
    rping -c -a 127.0.0.1 -p "$port" -C "$COUNT" -V -v -S "$size"
  # -v prints one "ping data: ..." line per completed (and validated) iteration.
  n=$(grep -c '^ping data: ' "$CLIENT_OUT" || true)
  [[ "$n" == "$COUNT" ]] || { show_outputs "rping_$size.client"; fail "rping -S $size: $n of $COUNT iterations printed"; }
  grep -v '^ping data: ' "$CLIENT_OUT" >"$TEST_TMP/rping_$size.client.other" || true
  for f in "$TEST_TMP/rping_$size.client.other" "$CLIENT_ERR" "$SERVER_OUT" "$SERVER_ERR"; do
    assert_not_contains "$f" 'error|fail|invalid|mismatch|unable|couldn' "rping -S $size $(basename "$f")"
  done
  log "rping -S $size: $n validated iterations"
done

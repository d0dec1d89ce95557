#!/usr/bin/env bash
# rsockets in our librdmacm, judged by unmodified Debian programs over 127.0.0.1:
#  - rstream (rdmacm-utils) in its blocking, nonblocking and async (rpoll) modes, each
#    verifying the data (-T v), for small, slot-sized and multi-slot transfers;
#  - riostream (riomap/riowrite into the peer's buffer), verifying, blocking and async;
#  - Debian's librspreload.so preloaded into a plain BSD-socket echo server and client
#    (tests/system/rsocket_echo.c) that verify every byte; a plain TCP client that reaches
#    the preloaded server proves its socket is an rsocket (it speaks MPA, not TCP echo);
#  - rstream across two network namespaces joined by a veth pair.
# shellcheck source=tests/system/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_library
require_program rstream riostream cc

PRELOAD=/usr/lib/x86_64-linux-gnu/rsocket/librspreload.so
[[ -e "$PRELOAD" ]] || fail "$PRELOAD missing (package librdmacm1, scripts/install-deps.sh)"

check_quiet() {  # no error words in any output of the last pair
  local what=$1 f
  for f in "$CLIENT_OUT" "$CLIENT_ERR" "$SERVER_OUT" "$SERVER_ERR"; do
    assert_not_contains "$f" 'error|fail|invalid|mismatch|unable|reset|refused' "$what $(basename "$f")"
  done
}

# rstream: -S size -C count gives one custom test; both ends print one result line.
for mode in b n a; do
  for spec in 64:500 65536:200 1000000:20; do
    size=${spec%%:*} count=${spec##*:}
    port=$(free_port)
    name="rstream_${mode}_$size"
    run_pair --name "$name" --port "$port" --timeout 120 \
      rstream -p "$port" -S "$size" -C "$count" -T "$mode" -T v -- \
      rstream -s 127.0.0.1 -p "$port" -S "$size" -C "$count" -T "$mode" -T v
    assert_contains "$CLIENT_OUT" "^custom +[0-9.]+[kmg]? +$count +1 " "$name client result"
    assert_contains "$SERVER_OUT" "^custom +[0-9.]+[kmg]? +$count +1 " "$name server result"
    check_quiet "$name"
    log "$name: $count verified transfers of $size bytes"
  done
done

for mode in b a; do
  port=$(free_port)
  name="riostream_$mode"
  run_pair --name "$name" --port "$port" --timeout 120 \
    riostream -p "$port" -S 65536 -C 50 -T "$mode" -T v -- \
    riostream -s 127.0.0.1 -p "$port" -S 65536 -C 50 -T "$mode" -T v
  assert_contains "$CLIENT_OUT" '^custom +64k +50 +1 ' "$name client result"
  check_quiet "$name"
  log "$name: 50 verified riowrite transfers of 64 KiB"
done

# librspreload.so into an unmodified socket program.
preloaded_echo echo server client 127.0.0.1 3000000
log "librspreload echo: 3000000 bytes verified"

# Across namespaces: the rsocket connection runs over the veth pair's device.
[[ $(id -u) == 0 ]] || fail "needs root to create network namespaces"
require_program ip
make_netns_pair
port=$(free_port)
run_pair --name rstream_netns --port "$port" --server-ns "$NS_A" --client-ns "$NS_B" --timeout 120 \
  rstream -b "$IP_A" -p "$port" -S 65536 -C 100 -T v -- \
  rstream -s "$IP_A" -p "$port" -S 65536 -C 100 -T v
assert_contains "$CLIENT_OUT" '^custom +64k +100 +1 ' "rstream across namespaces"
check_quiet rstream_netns
log "rstream across namespaces $NS_A <-> $NS_B: 100 verified transfers of 64 KiB"

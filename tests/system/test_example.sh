#!/usr/bin/env bash
# The example program (examples/rdma_write_pingpong.c), built against rdma-core's headers
# and linked to this project's libraries, runs WITHOUT the launcher (its RPATH finds
# build/lib) and verifies every RDMA WRITE it receives.
# shellcheck source=tests/system/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_library
prog="$ECA_BUILD/bin/rdma_write_pingpong"
[[ -x "$prog" ]] || fail "$prog was not built"

# No LD_LIBRARY_PATH: the loader must find our libraries through the RPATH alone.
env -u LD_LIBRARY_PATH ldd "$prog" >"$TEST_TMP/ldd.out" 2>&1 || { cat "$TEST_TMP/ldd.out" >&2; fail "ldd $prog failed"; }
for lib in libibverbs.so.1 librdmacm.so.1; do
  path=$(awk -v l="$lib" '$1 == l && $2 == "=>" { print $3 }' "$TEST_TMP/ldd.out")
  [[ -n "$path" && "$(realpath "$path")" == "$(realpath "$ECA_BUILD/lib/$lib")" ]] ||
    { cat "$TEST_TMP/ldd.out" >&2; fail "$prog loads $lib from '${path:-nowhere}', not from $ECA_BUILD/lib"; }
done

for size in 1 4096 1048576; do
  iters=500
  ((size >= 1048576)) && iters=50
  port=$(free_port)
  run_pair --no-launcher --name "pingpong_$size" --port "$port" --timeout 120 \
    env -u LD_LIBRARY_PATH "$prog" -s -a 127.0.0.1 -p "$port" -n "$iters" -S "$size" -- \
    env -u LD_LIBRARY_PATH "$prog" -a 127.0.0.1 -p "$port" -n "$iters" -S "$size"
  assert_contains "$CLIENT_OUT" "^client: $iters round trips of $size bytes verified; round trip [0-9.]+ us" "client result"
  assert_contains "$SERVER_OUT" "^server: $iters round trips of $size bytes verified" "server result"
  log "$(tail -n 1 "$CLIENT_OUT")"
done

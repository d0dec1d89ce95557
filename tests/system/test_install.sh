#!/usr/bin/env bash
# The installation (into a temporary prefix, never the system): the libraries land in
# <prefix>/lib/eca, the installed launcher finds them wherever the prefix is, and a
# program built with `pkg-config eca-iwarp` links to and runs on them.
# shellcheck source=tests/system/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_library
require_program cmake pkg-config cc ldd ibv_devices

prefix="$TEST_TMP/prefix"
cmake --install "$ECA_BUILD" --prefix "$prefix" >"$TEST_TMP/install.log" 2>&1 ||
  { cat "$TEST_TMP/install.log" >&2; fail "cmake --install failed"; }
libdir=$(dirname "$(find "$prefix" -name 'libibverbs.so.1' -print -quit)")
[[ "$libdir" == "$prefix/lib/eca" || "$libdir" == "$prefix"/lib/*/eca ]] ||
  fail "libibverbs.so.1 installed in '$libdir', expected <prefix>/<libdir>/eca"
for f in libibverbs.so.1 librdmacm.so.1 libibverbs.so librdmacm.so; do
  [[ -e "$libdir/$f" ]] || fail "$f not installed in $libdir"
done
[[ -x "$prefix/bin/eca-run" ]] || fail "eca-run not installed in $prefix/bin"
pc=$(find "$prefix" -name eca-iwarp.pc -print -quit)
[[ -n "$pc" ]] || fail "eca-iwarp.pc not installed"

# The installed launcher uses the installed libraries.
"$prefix/bin/eca-run" ldd "$(command -v ibv_devices)" >"$TEST_TMP/ldd_inst.out" 2>&1 ||
  { cat "$TEST_TMP/ldd_inst.out" >&2; fail "ldd through the installed launcher failed"; }
path=$(awk '$1 == "libibverbs.so.1" { print $3 }' "$TEST_TMP/ldd_inst.out")
[[ "$(realpath "$path")" == "$(realpath "$libdir/libibverbs.so.1")" ]] ||
  fail "installed eca-run loads libibverbs.so.1 from '$path'"
timeout -k 5 60 "$prefix/bin/eca-run" ibv_devices </dev/null >"$TEST_TMP/devices.out" 2>&1 ||
  { cat "$TEST_TMP/devices.out" >&2; fail "ibv_devices through the installed launcher failed"; }
assert_contains "$TEST_TMP/devices.out" "^[[:space:]]+${DEV_PREFIX}_lo[[:space:]]" "ibv_devices (installed)"

# A program built with pkg-config against the installation.
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --define-prefix --cflags --libs eca-iwarp) || fail "pkg-config eca-iwarp failed"
[[ "$flags" == *"-L$libdir"* ]] || fail "pkg-config --libs gives '$flags', expected -L$libdir"
# shellcheck disable=SC2086
cc -std=gnu11 -O2 -Wall -o "$TEST_TMP/pingpong" "$ECA_SRC/examples/rdma_write_pingpong.c" $flags \
  >"$TEST_TMP/cc.log" 2>&1 || { cat "$TEST_TMP/cc.log" >&2; fail "building the example with pkg-config failed"; }
env -u LD_LIBRARY_PATH ldd "$TEST_TMP/pingpong" >"$TEST_TMP/ldd_pp.out" 2>&1
for lib in libibverbs.so.1 librdmacm.so.1; do
  path=$(awk -v l="$lib" '$1 == l { print $3 }' "$TEST_TMP/ldd_pp.out")
  [[ -n "$path" && "$(realpath "$path")" == "$(realpath "$libdir/$lib")" ]] ||
    { cat "$TEST_TMP/ldd_pp.out" >&2; fail "the pkg-config-built program loads $lib from '${path:-nowhere}'"; }
done
port=$(free_port)
run_pair --no-launcher --name pingpong --port "$port" --timeout 60 \
  env -u LD_LIBRARY_PATH "$TEST_TMP/pingpong" -s -a 127.0.0.1 -p "$port" -n 200 -S 65536 -- \
  env -u LD_LIBRARY_PATH "$TEST_TMP/pingpong" -a 127.0.0.1 -p "$port" -n 200 -S 65536
assert_contains "$CLIENT_OUT" '^client: 200 round trips of 65536 bytes verified' "installed pingpong"

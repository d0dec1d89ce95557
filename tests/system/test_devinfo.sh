#!/usr/bin/env bash
# Device discovery and loading through unmodified Debian programs:
#  - every RDMA program and plugin of Debian's packages links against our libraries
#    with no missing symbol or version (ldd -r through the launcher);
#  - ibv_devices lists ${DEV_PREFIX}_lo; ibv_devinfo -v reports an iWARP RNIC with an active
#    Ethernet port and sane limits;
#  - libfabric (fi_info), pyverbs and Open MPI (ompi_info) load our libraries.
# shellcheck source=tests/system/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_library
require_program ibv_devices ibv_devinfo fi_info ompi_info ldd

LOADER_ERRORS='undefined symbol|symbol lookup error|version .[A-Z0-9_.]+. not found|cannot open shared object|error while loading shared libraries'

# run NAME CMD...: runs CMD through the launcher (bounded), output in $TEST_TMP/NAME.*,
# sets RC.
run() {
  local name=$1
  shift
  RC=0
  timeout -k 5 60 "$ECA_RUN" "$@" </dev/null >"$TEST_TMP/$name.out" 2>"$TEST_TMP/$name.err" || RC=$?
}

# --- 1. every consumer binds to our libraries, with every versioned symbol present.
objects=()
for p in ib_send_bw ib_send_lat ib_write_bw ib_write_lat ib_read_bw ib_read_lat \
         ib_atomic_bw ib_atomic_lat rping ucmatose udaddy mckey rdma_client rdma_server \
         rdma_xclient rdma_xserver riostream rstream cmtime ibv_devices ibv_devinfo \
         ibv_rc_pingpong ibv_srq_pingpong ibv_uc_pingpong ibv_ud_pingpong \
         ibv_xsrq_pingpong ibv_asyncwatch qperf fi_info fi_pingpong; do
  command -v "$p" >/dev/null && objects+=("$(command -v "$p")")
done
((${#objects[@]} >= 25)) || fail "expected at least 25 installed RDMA programs, found ${#objects[@]}"
for obj in "${objects[@]}"; do
  run ldd ldd -r "$obj"
  [[ $RC == 0 ]] || { cat "$TEST_TMP/ldd.err" >&2; fail "ldd -r $obj exited $RC"; }
  cat "$TEST_TMP/ldd.out" "$TEST_TMP/ldd.err" >"$TEST_TMP/ldd.all"
  # Only the libraries under test matter here: unresolved symbols of other libraries
  # (none expected either) are not what this test is about.
  if grep -E "libibverbs\.so\.1|librdmacm\.so\.1" "$TEST_TMP/ldd.all" |
      grep -v -F "$ECA_BUILD/lib/" | grep -q .; then
    cat "$TEST_TMP/ldd.all" >&2
    fail "$obj does not resolve libibverbs/librdmacm to $ECA_BUILD/lib"
  fi
  if grep -E "version .(IBVERBS|RDMACM)[A-Z0-9_.]*. not found|undefined symbol: .*version (IBVERBS|RDMACM)" \
      "$TEST_TMP/ldd.all" >"$TEST_TMP/ldd.bad"; then
    head -n 20 "$TEST_TMP/ldd.bad" >&2
    fail "$obj: unresolved libibverbs/librdmacm symbols ($(wc -l <"$TEST_TMP/ldd.bad") lines)"
  fi
done
log "${#objects[@]} programs resolve every libibverbs/librdmacm symbol against the build"

# --- 2. ibv_devices
run devices ibv_devices
[[ $RC == 0 ]] || { cat "$TEST_TMP/devices.err" >&2; fail "ibv_devices exited $RC"; }
assert_contains "$TEST_TMP/devices.out" "^[[:space:]]+${DEV_PREFIX}_lo[[:space:]]+[0-9a-f]{16}$" "ibv_devices"
assert_not_contains "$TEST_TMP/devices.err" "$LOADER_ERRORS" "ibv_devices stderr"

# --- 3. ibv_devinfo -v
run devinfo ibv_devinfo -v -d ${DEV_PREFIX}_lo
[[ $RC == 0 ]] || { cat "$TEST_TMP/devinfo.err" >&2; fail "ibv_devinfo -v exited $RC"; }
out="$TEST_TMP/devinfo.out"
assert_contains "$out" "^hca_id:[[:space:]]+${DEV_PREFIX}_lo$" "ibv_devinfo hca_id"
assert_contains "$out" '^[[:space:]]+transport:[[:space:]]+iWARP \(1\)$' "ibv_devinfo transport"
assert_contains "$out" '^[[:space:]]+phys_port_cnt:[[:space:]]+1$' "ibv_devinfo phys_port_cnt"
assert_contains "$out" '^[[:space:]]+state:[[:space:]]+PORT_ACTIVE \(4\)$' "ibv_devinfo port state"
assert_contains "$out" '^[[:space:]]+link_layer:[[:space:]]+Ethernet$' "ibv_devinfo link_layer"
assert_contains "$out" '^[[:space:]]+atomic_cap:[[:space:]]+ATOMIC_GLOB \(2\)$' "ibv_devinfo atomic_cap (RFC 7306 atomics as CPU atomics)"

# check_min NAME MIN: "NAME: <n>" in the ibv_devinfo output has n >= MIN.
check_min() {
  local v
  v=$(awk -v k="$1:" '$1 == k { print $2; exit }' "$out")
  [[ "$v" =~ ^(0x[0-9a-fA-F]+|[0-9]+)$ ]] || fail "ibv_devinfo: no numeric '$1' (got '$v')"
  # a 64-bit hex value with the top bit set reads as negative in bash: it is huge
  ((v < 0 || v >= $2)) || fail "ibv_devinfo: $1 = $v, expected >= $2"
  log "$1 = $v (>= $2)"
}
check_min max_qp 1
check_min max_qp_wr 1
check_min max_sge 6
check_min max_cq 1
check_min max_cqe 1
check_min max_mr 1
check_min max_pd 1
check_min max_qp_rd_atom 128
check_min max_qp_init_rd_atom 1
check_min max_res_rd_atom 1
check_min max_srq 1
check_min max_srq_wr 1
check_min max_srq_sge 1
check_min max_mr_size 4096
assert_not_contains "$TEST_TMP/devinfo.err" "$LOADER_ERRORS" "ibv_devinfo stderr"

# The non-verbose listing of all devices works too.
run devinfo_all ibv_devinfo
[[ $RC == 0 ]] || { cat "$TEST_TMP/devinfo_all.err" >&2; fail "ibv_devinfo exited $RC"; }
assert_contains "$TEST_TMP/devinfo_all.out" "^hca_id:[[:space:]]+${DEV_PREFIX}_lo$" "ibv_devinfo (all devices)"

# --- 4. pyverbs: the extension modules load against our library and can use the device.
run pyverbs "$PYTHON" -c '
import pyverbs.device as d
import pyverbs.enums as e
from pyverbs.pd import PD
from pyverbs.mr import MR
import os
lo = os.environ["DEV_PREFIX"] + "_lo"
names = [x.name.decode() for x in d.get_device_list()]
assert lo in names, names
with d.Context(name=lo) as ctx:
    a = ctx.query_device()
    assert a.max_qp > 0 and a.max_mr > 0, (a.max_qp, a.max_mr)
    with PD(ctx) as pd:
        with MR(pd, 65536, e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE) as mr:
            assert mr.length == 65536, mr.length
            print("pyverbs ok", names, a.max_qp, hex(mr.rkey))
'
[[ $RC == 0 ]] || { cat "$TEST_TMP/pyverbs.out" "$TEST_TMP/pyverbs.err" >&2; fail "pyverbs exited $RC"; }
assert_contains "$TEST_TMP/pyverbs.out" '^pyverbs ok ' "pyverbs"

# --- 5. libfabric: its verbs provider binds to our libraries. Whether it offers a fabric
# on loopback is up to libfabric (0, or 61 = FI_ENODATA); it must not crash or miss symbols.
run fi_info_verbs fi_info -p verbs
[[ $RC == 0 || $RC == 61 ]] || {
  cat "$TEST_TMP/fi_info_verbs.out" "$TEST_TMP/fi_info_verbs.err" >&2
  fail "fi_info -p verbs exited $RC (expected 0 or 61)"
}
cat "$TEST_TMP/fi_info_verbs.out" "$TEST_TMP/fi_info_verbs.err" >"$TEST_TMP/fi_info_verbs.all"
assert_not_contains "$TEST_TMP/fi_info_verbs.all" "$LOADER_ERRORS" "fi_info -p verbs"
run fi_info fi_info
[[ $RC == 0 ]] || { cat "$TEST_TMP/fi_info.err" >&2; fail "fi_info exited $RC"; }
assert_contains "$TEST_TMP/fi_info.out" '^provider: ' "fi_info"
cat "$TEST_TMP/fi_info.out" "$TEST_TMP/fi_info.err" >"$TEST_TMP/fi_info.all"
assert_not_contains "$TEST_TMP/fi_info.all" "$LOADER_ERRORS" "fi_info"

# --- 6. Open MPI: the openib BTL (linked against libibverbs) loads as a component.
run ompi_info ompi_info
[[ $RC == 0 ]] || { cat "$TEST_TMP/ompi_info.err" >&2; fail "ompi_info exited $RC"; }
cat "$TEST_TMP/ompi_info.out" "$TEST_TMP/ompi_info.err" >"$TEST_TMP/ompi_info.all"
assert_not_contains "$TEST_TMP/ompi_info.all" "$LOADER_ERRORS|unable to open mca_" "ompi_info"
assert_contains "$TEST_TMP/ompi_info.out" 'MCA btl: openib ' "ompi_info (openib component)"

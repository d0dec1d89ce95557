#!/usr/bin/env bash
# Two network namespaces joined by a veth pair (created here, deleted at exit): the
# device of each side is ${DEV_PREFIX}_<veth>, and ib_write_bw -R, ib_read_lat -R and rping
# run between the namespaces over the veth addresses.
# shellcheck source=tests/system/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_library
require_program ip ib_write_bw ib_read_lat rping ibv_devices
[[ $(id -u) == 0 ]] || fail "needs root to create network namespaces"

make_netns_pair
log "namespaces $NS_A ($VETH_A $IP_A) <-> $NS_B ($VETH_B $IP_B)"

# Each namespace sees its own interfaces as devices: ${DEV_PREFIX}_lo and ${DEV_PREFIX}_<veth>.
for side in A B; do
  ns_var=NS_$side; veth_var=VETH_$side
  ns=${!ns_var}; veth=${!veth_var}
  timeout -k 5 60 ip netns exec "$ns" "$ECA_RUN" ibv_devices </dev/null \
    >"$TEST_TMP/devices_$side.out" 2>"$TEST_TMP/devices_$side.err" ||
    { cat "$TEST_TMP/devices_$side.err" >&2; fail "ibv_devices in $ns failed"; }
  assert_contains "$TEST_TMP/devices_$side.out" "^[[:space:]]+${DEV_PREFIX}_${veth}[[:space:]]" "ibv_devices in $ns"
  timeout -k 5 60 ip netns exec "$ns" "$ECA_RUN" ibv_devinfo -d "${DEV_PREFIX}_$veth" </dev/null \
    >"$TEST_TMP/devinfo_$side.out" 2>"$TEST_TMP/devinfo_$side.err" ||
    { cat "$TEST_TMP/devinfo_$side.err" >&2; fail "ibv_devinfo -d ${DEV_PREFIX}_$veth in $ns failed"; }
  assert_contains "$TEST_TMP/devinfo_$side.out" 'state:[[:space:]]+PORT_ACTIVE \(4\)' "${DEV_PREFIX}_$veth port state"
done

ERRORS='error|couldn.?t|failed|unable to|not supported|illegal|unsupported'
check_clean() { assert_pair_clean "$1" "$ERRORS"; }

# rx_bytes NS IF: bytes received so far by interface IF in namespace NS.
rx_bytes() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/rx_bytes"; }

# --- ib_write_bw -R: server in A, client in B.
rx_before=$(rx_bytes "$NS_A" "$VETH_A")
port=$(free_port)
run_pair --name write_bw --port "$port" --server-ns "$NS_A" --client-ns "$NS_B" --timeout 120 \
  ib_write_bw -R -F -p "$port" -s 65536 -n 2000 -- \
  ib_write_bw -R -F -p "$port" -s 65536 -n 2000 "$IP_A"
check_clean ib_write_bw
row=$(awk '$1 == "65536" && $2 ~ /^[0-9]+$/ && NF == 5 { print $2 }' "$CLIENT_OUT")
[[ -n "$row" ]] || { cat "$CLIENT_OUT" >&2; fail "ib_write_bw: no result row for 65536 bytes"; }
# Completed iterations, not the printed figures (load must not be able to fail the test).
[[ "$row" == 2000 ]] || { cat "$CLIENT_OUT" >&2; fail "ib_write_bw: $row iterations, expected 2000"; }
rx_delta=$(($(rx_bytes "$NS_A" "$VETH_A") - rx_before))
if [[ "$DEV_PREFIX" == ecahw ]]; then
  # The modeled adapter sets connections up over the veth (rdma_cm, MPA) but moves the data
  # through its shared-memory path: the veth must carry far less than the 125 MiB written.
  ((rx_delta > 0)) || fail "$VETH_A saw no connection set-up traffic"
  ((rx_delta < 2 * 1024 * 1024)) || fail "$VETH_A received $rx_delta bytes: the data path used the host network"
else
  # The data really crossed the veth: A's end received at least the 2000 x 64 KiB written.
  ((rx_delta >= 2000 * 65536)) || fail "$VETH_A received only $rx_delta bytes during ib_write_bw"
fi
log "ib_write_bw across namespaces: 2000 iterations of 64 KiB; $VETH_A received $rx_delta bytes"

# --- ib_read_lat -R: server in B, client in A (the other direction).
port=$(free_port)
run_pair --name read_lat --port "$port" --server-ns "$NS_B" --client-ns "$NS_A" --timeout 120 \
  ib_read_lat -R -F -p "$port" -s 4096 -n 1000 -- \
  ib_read_lat -R -F -p "$port" -s 4096 -n 1000 "$IP_B"
check_clean ib_read_lat
row=$(awk '$1 == "4096" && $2 ~ /^[0-9]+$/ && NF >= 6 { print $5 }' "$CLIENT_OUT")
[[ -n "$row" ]] || { cat "$CLIENT_OUT" >&2; fail "ib_read_lat: no result row for 4096 bytes"; }
awk -v t="$row" 'BEGIN { exit !(t > 0) }' || fail "ib_read_lat: t_typical $row"
log "ib_read_lat across namespaces: t_typical $row us"

# --- rping with data validation.
port=$(free_port)
run_pair --name rping --port "$port" --server-ns "$NS_A" --client-ns "$NS_B" --timeout 120 \
  rping -s -a "$IP_A" -p "$port" -C 100 -V -S 4096 -- \
  rping -c -a "$IP_A" -p "$port" -C 100 -V -v -S 4096
n=$(grep -c '^ping data: ' "$CLIENT_OUT" || true)
[[ "$n" == 100 ]] || fail "rping across namespaces: $n of 100 iterations"
log "rping across namespaces: $n validated iterations"

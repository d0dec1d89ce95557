#!/usr/bin/env bash
# IPv6: the GID table of lo lists ::1; rping (data validated), ucmatose and
# rdma_server/rdma_client over ::1; then two namespaces joined by a veth pair that has only
# IPv6 addresses (ULA fd00::/8 and link-local, created here): the IPv6-only veth is a
# device whose GIDs list its addresses, and rping (to the ULA, and to the link-local
# address with its %scope, against a server on the IPv6 wildcard, and from a scoped
# source), ucmatose, rstream (rsockets over AF_INET6) and fi_pingpong -6 (libfabric's verbs
# provider, msg and rdm endpoints) run across. rstream, riostream and Debian's librspreload.so
# in an IPv6 socket program (tests/system/rsocket_echo.c) also run over ::1.
# perftest 4.5-0.17 and qperf 0.4.11 (Debian 12) resolve the server with AF_INET only
# (getaddrinfo fails for an IPv6 address before any RDMA call), so they cannot be run over
# IPv6 unmodified; upstream perftest added --ipv6-addr in 23.07.
# shellcheck source=tests/system/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_library
require_program ip rping ucmatose rdma_server rdma_client rstream riostream ibv_devinfo ibv_devices \
  fi_pingpong cc
[[ $(id -u) == 0 ]] || fail "needs root to create network namespaces"
[[ -n "$(ip -6 -o addr show dev lo scope host)" ]] || fail "lo has no ::1 (IPv6 disabled?)"

ERRORS='error|couldn.?t|failed|unable|invalid|mismatch|not supported|unsupported'
check_clean() { assert_pair_clean "$1" "$ERRORS"; }

# gid_re ADDR: the ibv_devinfo GID line of an IPv6 address (all eight groups, zero-padded).
gid_re() {
  local full
  full=$("$PYTHON" -c 'import ipaddress, sys; print(ipaddress.IPv6Address(sys.argv[1]).exploded)' "$1")
  echo "GID\\[ *[0-9]+\\]:[[:space:]]+$full,"
}

# rping_pair NAME SERVER_NS CLIENT_NS SERVER_ADDR CLIENT_ADDR [CLIENT_ARGS...]: 100
# validated iterations.
rping_pair() {
  local name=$1 sns=$2 cns=$3 saddr=$4 caddr=$5 port n
  shift 5
  port=$(free_port)
  run_pair --name "$name" --port "$port" --server-ns "$sns" --client-ns "$cns" --timeout 120 \
    rping -s -a "$saddr" -p "$port" -C 100 -V -S 4096 -- \
    rping -c -a "$caddr" -p "$port" -C 100 -V -v -S 4096 "$@"
  n=$(grep -c '^ping data: ' "$CLIENT_OUT" || true)
  [[ "$n" == 100 ]] || { show_outputs "$name.server" "$name.client"; fail "$name: $n of 100 iterations"; }
  grep -v '^ping data: ' "$CLIENT_OUT" >"$TEST_TMP/$name.client.other" || true
  CLIENT_OUT="$TEST_TMP/$name.client.other" check_clean "$name"
  log "$name: rping $caddr: $n validated iterations"
}

# ucmatose_pair NAME SERVER_NS CLIENT_NS BIND_ADDR SERVER_ADDR: 4 connections, 20 messages each.
ucmatose_pair() {
  local name=$1 sns=$2 cns=$3 baddr=$4 saddr=$5 port
  port=$(free_port)
  run_pair --name "$name" --port "$port" --server-ns "$sns" --client-ns "$cns" --timeout 120 \
    ucmatose -b "$baddr" -p "$port" -c 4 -C 20 -- \
    ucmatose -s "$saddr" -p "$port" -c 4 -C 20
  assert_contains "$CLIENT_OUT" '^test complete' "$name client"
  assert_contains "$SERVER_OUT" '^test complete' "$name server"
  assert_contains "$CLIENT_OUT" '^return status 0' "$name client"
  log "$name: ucmatose to $saddr: 4 connections complete"
}

# rstream_pair NAME SERVER_NS CLIENT_NS ADDR [PROGRAM]: 100 verified 64 KiB transfers.
rstream_pair() {
  local name=$1 sns=$2 cns=$3 addr=$4 prog=${5:-rstream} port
  port=$(free_port)
  run_pair --name "$name" --port "$port" --server-ns "$sns" --client-ns "$cns" --timeout 120 \
    "$prog" -b "$addr" -p "$port" -S 65536 -C 100 -T v -- \
    "$prog" -s "$addr" -p "$port" -S 65536 -C 100 -T v
  assert_contains "$CLIENT_OUT" '^custom +64k +100 +1 ' "$name client"
  assert_contains "$SERVER_OUT" '^custom +64k +100 +1 ' "$name server"
  check_clean "$name"
  log "$name: $prog to $addr: 100 verified transfers of 64 KiB"
}

# --- loopback ::1
timeout -k 5 60 "$ECA_RUN" ibv_devinfo -v -d "${DEV_PREFIX}_lo" </dev/null \
  >"$TEST_TMP/devinfo_lo.out" 2>"$TEST_TMP/devinfo_lo.err" ||
  { cat "$TEST_TMP/devinfo_lo.err" >&2; fail "ibv_devinfo -d ${DEV_PREFIX}_lo failed"; }
assert_contains "$TEST_TMP/devinfo_lo.out" "$(gid_re ::1)" "GID of ::1 on ${DEV_PREFIX}_lo"

rping_pair rping_lo "" "" ::1 ::1
ucmatose_pair ucmatose_lo "" "" ::1 ::1
port=$(free_port)
run_pair --name rdma_server_lo --port "$port" --timeout 60 \
  rdma_server -s ::1 -p "$port" -- rdma_client -s ::1 -p "$port"
assert_contains "$CLIENT_OUT" '^rdma_client: end 0' "rdma_client"
assert_contains "$SERVER_OUT" '^rdma_server: end 0' "rdma_server"
log "rdma_server/rdma_client over ::1"
rstream_pair rstream_lo "" "" ::1
rstream_pair riostream_lo "" "" ::1 riostream

# Debian's librspreload.so turns an IPv6 socket program's sockets into rsockets.
preloaded_echo echo6 server6 client6 ::1 3000000
log "librspreload echo over ::1: 3000000 bytes verified"

# --- two namespaces, IPv6 only
make_netns_pair --ipv6-only
[[ -z "$(ip -n "$NS_A" -4 -o addr show dev "$VETH_A")" ]] || fail "$VETH_A has an IPv4 address"
ll_a=$(ip -n "$NS_A" -6 -o addr show dev "$VETH_A" scope link | awk '{ split($4, a, "/"); print a[1]; exit }')
[[ -n "$ll_a" ]] || fail "$VETH_A has no link-local address"
log "namespaces $NS_A ($VETH_A $IP_A $ll_a) <-> $NS_B ($VETH_B $IP_B), IPv6 only"

for side in A B; do
  ns_var=NS_$side; veth_var=VETH_$side; ip_var=IP_$side
  ns=${!ns_var}; veth=${!veth_var}; addr=${!ip_var}
  timeout -k 5 60 ip netns exec "$ns" "$ECA_RUN" ibv_devices </dev/null \
    >"$TEST_TMP/devices_$side.out" 2>"$TEST_TMP/devices_$side.err" ||
    { cat "$TEST_TMP/devices_$side.err" >&2; fail "ibv_devices in $ns failed"; }
  assert_contains "$TEST_TMP/devices_$side.out" "^[[:space:]]+${DEV_PREFIX}_${veth}[[:space:]]" "ibv_devices in $ns"
  timeout -k 5 60 ip netns exec "$ns" "$ECA_RUN" ibv_devinfo -v -d "${DEV_PREFIX}_$veth" </dev/null \
    >"$TEST_TMP/devinfo_$side.out" 2>"$TEST_TMP/devinfo_$side.err" ||
    { cat "$TEST_TMP/devinfo_$side.err" >&2; fail "ibv_devinfo -d ${DEV_PREFIX}_$veth in $ns failed"; }
  assert_contains "$TEST_TMP/devinfo_$side.out" 'state:[[:space:]]+PORT_ACTIVE \(4\)' "${DEV_PREFIX}_$veth port state"
  assert_contains "$TEST_TMP/devinfo_$side.out" "$(gid_re "$addr")" "GID of $addr on ${DEV_PREFIX}_$veth"
done
assert_contains "$TEST_TMP/devinfo_A.out" "$(gid_re "$ll_a")" "GID of $ll_a on ${DEV_PREFIX}_$VETH_A"

rping_pair rping_ula "$NS_A" "$NS_B" "$IP_A" "$IP_A"
rping_pair rping_link_local "$NS_A" "$NS_B" :: "$ll_a%$VETH_B"
# A link-local destination without a scope id takes the scope of the given source (-I).
ll_b=$(ip -n "$NS_B" -6 -o addr show dev "$VETH_B" scope link | awk '{ split($4, a, "/"); print a[1]; exit }')
[[ -n "$ll_b" ]] || fail "$VETH_B has no link-local address"
rping_pair rping_link_local_src "$NS_A" "$NS_B" "$ll_a%$VETH_A" "$ll_a" -I "$ll_b%$VETH_B"
ucmatose_pair ucmatose_ula "$NS_A" "$NS_B" "$IP_A" "$IP_A"
rstream_pair rstream_ula "$NS_A" "$NS_B" "$IP_A"

# --- libfabric over IPv6: fi_pingpong over verbs (msg) and verbs;ofi_rxm (rdm), data checked.
endpoints=(msg rdm)
[[ "$DEV_PREFIX" == ecahw ]] && endpoints=(rdm)  # see test_mpi.sh: a defect of the adapter model
for ep in "${endpoints[@]}"; do
  prov=verbs
  [[ $ep == rdm ]] && prov='verbs;ofi_rxm'
  port=$(free_port)
  run_pair --name "pingpong_$ep" --port "$port" --server-ns "$NS_A" --client-ns "$NS_B" --timeout 120 \
    fi_pingpong -6 -p "$prov" -e "$ep" -B "$port" -c -I 50 -S 65536 -- \
    fi_pingpong -6 -p "$prov" -e "$ep" -P "$port" -c -I 50 -S 65536 "$IP_A"
  assert_contains "$CLIENT_OUT" "^64k[[:space:]]+50[[:space:]]+=50[[:space:]]" "fi_pingpong -e $ep over IPv6"
  log "fi_pingpong -e $ep to $IP_A: data checked"
done

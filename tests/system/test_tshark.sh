#!/usr/bin/env bash
# On-the-wire check with Wireshark's dissectors: captures (tshark on lo, started before
# and stopped after) an ib_write_bw -R and an ib_read_bw -R session, then requires
# (mpa_check.py): MPA Request/Reply with CRC negotiated and no markers, every FPDU of
# the reassembled streams with a correct CRC32c and DDP/RDMAP version 1, the expected
# RDMA WRITE / READ messages, and tshark's iwarp_mpa and iwarp_ddp_rdmap dissectors
# decoding the traffic (> 0 frames) with a good CRC and no malformed frame wherever a
# TCP segment starts with a whole FPDU. A second pair of sessions runs with CRC off and
# checks that the CRC field is still present in every FPDU (RFC 5044), as zero. Two
# ib_atomic_bw -R sessions (FetchAdd, CmpSwap) check the RFC 7306 Atomic Request and
# Response frames byte by byte and as tshark 4.0 decodes them (mpa_check.py --atomics).
#
# Wireshark's MPA dissector is heuristic on TCP and enabled by default ("Decode As" is
# not needed) but must see the MPA Request and Reply, hence the capture runs from
# before the connection is made; tcp.try_heuristic_first makes it win over any
# port-based dissector registered for the (random) port.
# shellcheck source=tests/system/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_library
require_program tshark ib_write_bw ib_read_bw ib_atomic_bw
[[ $(id -u) == 0 ]] || fail "needs root to capture on lo"

ERRORS='error|couldn.?t|failed|unable to|not supported|illegal|unsupported'

# capture_pair NAME [--crc off] MIN_SPEC... -- PROGRAM ARGS...: runs PROGRAM -R (server and
# client) under a capture of its port, then checks the capture.
capture_pair() {
  local name=$1
  shift
  local -a mins=()
  if [[ "$1" == --crc ]]; then mins+=(--crc "$2"); shift 2; fi
  if [[ "$1" == --atomics ]]; then mins+=(--atomics "$2"); shift 2; fi
  while [[ "$1" != "--" ]]; do mins+=(--min "$1"); shift; done
  shift
  local prog=$1
  shift
  local port pcap="$TEST_TMP/$name.pcapng"
  port=$(free_port)
  # -P -l: packet summaries on stdout as packets arrive, so the test can tell when
  # the capture really runs ("Capturing on ..." is printed before it does): it
  # connects to the not-yet-listening port (SYN, RST) until tshark shows a packet.
  start_bg "$name.tshark" tshark -n -l -P -i lo -B 64 -f "tcp port $port" -w "$pcap"
  local tpid=$BG_PID i
  for ((i = 0; i < 200; i++)); do
    [[ -s "$TEST_TMP/$name.tshark.out" ]] && break
    _alive "$tpid" || { show_outputs "$name.tshark"; fail "$name: tshark exited before capturing"; }
    "$PYTHON" -c 'import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    pass' "$port"
    sleep 0.05
  done
  [[ -s "$TEST_TMP/$name.tshark.out" ]] || { show_outputs "$name.tshark"; fail "$name: tshark captured nothing within 200 probes"; }

  run_pair --name "$name" --port "$port" --timeout 120 \
    "$prog" -R -F -p "$port" "$@" -- \
    "$prog" -R -F -p "$port" "$@" 127.0.0.1
  local f
  for f in "$CLIENT_OUT" "$CLIENT_ERR" "$SERVER_OUT" "$SERVER_ERR"; do
    assert_not_contains "$f" "$ERRORS" "$name $(basename "$f")"
  done

  # Every packet of the session was handed to the kernel before the programs exited;
  # tshark writes out what it captured and exits on SIGTERM.
  stop_pid "$tpid" TERM 20
  [[ -s "$pcap" ]] || { show_outputs "$name.tshark"; fail "$name: empty capture"; }
  if grep -Eq '[1-9][0-9]* packets? dropped' "$TEST_TMP/$name.tshark.err"; then
    show_outputs "$name.tshark"
    fail "$name: the capture dropped packets"
  fi

  "$PYTHON" "$ECA_SRC/tests/system/mpa_check.py" "$pcap" "$port" "${mins[@]}" \
    >"$TEST_TMP/$name.check.out" 2>"$TEST_TMP/$name.check.err" || {
      cat "$TEST_TMP/$name.check.out" "$TEST_TMP/$name.check.err" >&2
      fail "$name: capture check failed: $(head -n 1 "$TEST_TMP/$name.check.err")"
    }
  log "$name capture:"
  sed 's/^/    /' "$TEST_TMP/$name.check.out" >&2
}

capture_pair write write:i2r:100 -- ib_write_bw -s 4096 -n 100
capture_pair read read_req:i2r:100 read_resp:r2i:100 -- ib_read_bw -s 4096 -n 100
capture_pair fetch_add --atomics fetch_add atomic_req:i2r:100 atomic_resp:r2i:100 -- \
  ib_atomic_bw -A FETCH_AND_ADD -n 100
capture_pair cmp_swap --atomics cmp_swap atomic_req:i2r:100 atomic_resp:r2i:100 -- \
  ib_atomic_bw -A CMP_AND_SWAP -n 100
# CRC off: the initiator does not ask for it and the responder follows (ECA_MPA_CRC=0 on
# both ends; only the client's setting matters). Every FPDU still carries the CRC field,
# zero, which Wireshark shows as "CRC: 0x00000000", and nothing is malformed.
ECA_MPA_CRC=0 capture_pair write_nocrc --crc off write:i2r:100 -- ib_write_bw -s 4096 -n 100
ECA_MPA_CRC=0 capture_pair read_nocrc --crc off read_req:i2r:100 read_resp:r2i:100 -- \
  ib_read_bw -s 4096 -n 100

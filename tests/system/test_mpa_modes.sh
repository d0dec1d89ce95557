#!/usr/bin/env bash
# MPA negotiation between two processes of our own stack, in every mode a peer can choose:
# revision 1 and 2, and CRC asked for or not by the initiator and insisted on or not by
# either end (RFC 5044: CRC is used unless both ends agree to omit it). Each case runs
# Debian's rping -V (SEND, RDMA READ and RDMA WRITE with data validation) with NULL
# connection parameters on the accepting side, and checks from both processes' logs that
# they negotiated the expected revision and CRC setting.
# shellcheck source=tests/system/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_library
require_program rping

COUNT=50
# initiator-env  responder-env  expected-crc
CASES=(
  "ECA_MPA_CRC=1|ECA_MPA_CRC=1|1"
  "ECA_MPA_CRC=0|ECA_MPA_CRC=1|0"
  "ECA_MPA_CRC=0|ECA_MPA_CRC_REQUIRED=1|1"
  "ECA_MPA_CRC=1|ECA_MPA_CRC_REQUIRED=1|1"
  "ECA_MPA_CRC=0 ECA_MPA_CRC_REQUIRED=1|ECA_MPA_CRC=0|1"
)

for rev in 1 2; do
  for c in "${CASES[@]}"; do
    IFS='|' read -r ienv renv want <<<"$c"
    name="rev${rev}_${want}_$(echo "$ienv-$renv" | tr -c 'A-Za-z0-9=-' _ | tr -s _)"
    port=$(free_port)
    # shellcheck disable=SC2086  # the env words are meant to split
    run_pair --name "$name" --port "$port" --timeout 60 \
      env ECA_LOG=info $renv rping -s -a 127.0.0.1 -p "$port" -C "$COUNT" -V -S 4096 -- \
      env ECA_LOG=info ECA_MPA_REV="$rev" $ienv rping -c -a 127.0.0.1 -p "$port" -C "$COUNT" -V -v -S 4096
    n=$(grep -c '^ping data: ' "$CLIENT_OUT" || true)
    [[ "$n" == "$COUNT" ]] || { show_outputs "$name.client"; fail "$name: $n of $COUNT validated iterations"; }
    for side in SERVER_ERR CLIENT_ERR; do
      f=${!side}
      line=$(grep -m1 -E 'connected: mpa rev [0-9]+, crc [01]' "$f" || true)
      [[ -n "$line" ]] || { show_outputs "$name.server" "$name.client"; fail "$name: no connection line in $side"; }
      [[ "$line" == *"mpa rev $rev, crc $want"* ]] ||
        fail "$name: $side negotiated '${line#*connected: }', expected rev $rev crc $want"
    done
    log "$name: rev $rev crc $want, $n validated iterations"
  done
done

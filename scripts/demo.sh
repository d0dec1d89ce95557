#!/usr/bin/env bash
# The demo: installs the dependencies, builds, then runs Debian's UNMODIFIED ib_write_bw
# (perftest) over rdma_cm on 127.0.0.1 against this project's libibverbs/librdmacm via
# the launcher, and prints the client's result table. Exits non-zero on any failure.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash scripts/install-deps.sh
bash scripts/build.sh

ECA_RUN="$root/build/bin/eca-run"
SIZE=65536
ITERS=2000
work=$(mktemp -d "${TMPDIR:-/tmp}/eca-demo.XXXXXX")
server_pid=""

cleanup() {
  local rc=$?
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(/usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')

echo "== ibv_devices (through $ECA_RUN)"
"$ECA_RUN" ibv_devices

echo "== ib_write_bw -R server on port $port"
timeout -k 5 180 "$ECA_RUN" ib_write_bw -R -F -p "$port" -s "$SIZE" -n "$ITERS" \
  </dev/null >"$work/server.log" 2>&1 &
server_pid=$!

# Wait (bounded) until the server listens.
for ((i = 0; i < 400; i++)); do
  [[ -n "$(ss -ltnH "sport = :$port")" ]] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    cat "$work/server.log" >&2
    echo "demo: the server exited before listening" >&2
    exit 1
  fi
  sleep 0.05
done
[[ -n "$(ss -ltnH "sport = :$port")" ]] || { cat "$work/server.log" >&2; echo "demo: server not listening after 20s" >&2; exit 1; }

echo "== ib_write_bw -R client -> 127.0.0.1:$port ($ITERS x $SIZE bytes)"
client_rc=0
timeout -k 5 120 "$ECA_RUN" ib_write_bw -R -F -p "$port" -s "$SIZE" -n "$ITERS" 127.0.0.1 \
  </dev/null >"$work/client.log" 2>&1 || client_rc=$?
cat "$work/client.log"

server_rc=0
wait "$server_pid" || server_rc=$?
server_pid=""
if ((client_rc != 0 || server_rc != 0)); then
  echo "== server output" >&2
  cat "$work/server.log" >&2
  echo "demo: FAILED (client exit $client_rc, server exit $server_rc)" >&2
  exit 1
fi

# The result row: " 65536  2000  <peak> <average> <msgrate>" with a non-zero average.
row=$(awk -v s="$SIZE" '$1 == s && NF == 5 && $2 ~ /^[0-9]+$/ { print $4; exit }' "$work/client.log")
if [[ -z "$row" ]] || ! awk -v b="$row" 'BEGIN { exit !(b > 0) }'; then
  echo "demo: FAILED (no non-zero result row for $SIZE bytes)" >&2
  exit 1
fi
echo "demo: OK: ib_write_bw over eca-iwarp, $SIZE-byte RDMA WRITEs, average $row MB/s"

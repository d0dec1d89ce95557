# shellcheck shell=bash
# Shared helpers for the system tests (sourced, not run).
#
# Every test runs unmodified Debian programs through $ECA_BUILD/bin/eca-run, only on
# 127.0.0.0/8 or on veth pairs inside network namespaces it creates itself. Every
# process it starts is recorded, killed by its own pid and reaped at exit; every
# namespace it creates is deleted at exit. A test prints "PASS <name>" or
# "FAIL <name>: <reason>" as its last line and exits 0 only on PASS.
#
# Environment: ECA_BUILD (build tree), ECA_SRC (source tree); both set by ctest.

# shellcheck disable=SC2034  # CLIENT_OUT, STOP_RC, ... are results for the tests
set -Eeuo pipefail

: "${ECA_BUILD:?ECA_BUILD must point at the build tree}"
: "${ECA_SRC:?ECA_SRC must point at the source tree}"

ECA_RUN="$ECA_BUILD/bin/eca-run"
# Devices are named after the backend the library uses (ECA_BACKEND): ecasw_<if> or ecahw_<if>.
case "${ECA_BACKEND:-software}" in
  hwmodel|hw) DEV_PREFIX=ecahw ;;
  *) DEV_PREFIX=ecasw ;;
esac
export DEV_PREFIX
TEST_NAME=$(basename "${BASH_SOURCE[1]:-$0}" .sh)
TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/eca-${TEST_NAME}.XXXXXX")
PYTHON=/usr/bin/python3

declare -a _ECA_PIDS=()      # pids to kill and reap at exit
declare -A _ECA_PID_NAME=()  # pid -> name (for messages)
declare -a _ECA_NETNS=()     # namespaces to delete at exit
_ECA_NETNS_SEQ=0
FAIL_REASON=""

log() { printf '[%s] %s\n' "$TEST_NAME" "$*" >&2; }

# fail MSG: the test fails with MSG (exits; the EXIT trap prints "FAIL name: MSG").
fail() {
  FAIL_REASON="$*"
  exit 1
}

_on_err() {
  local rc=$? line=$1 cmd=$2
  [[ -n "$FAIL_REASON" ]] || FAIL_REASON="command failed with status $rc at line $line: $cmd"
}
trap '_on_err "$LINENO" "$BASH_COMMAND"' ERR
trap 'FAIL_REASON=${FAIL_REASON:-"interrupted"}; exit 130' INT TERM HUP

_forget_pid() {
  local pid=$1 p
  local -a keep=()
  for p in "${_ECA_PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
  _ECA_PIDS=("${keep[@]}")
  unset "_ECA_PID_NAME[$pid]"
}

# stop_pid PID [SIGNAL] [GRACE_SECONDS]: sends SIGNAL (TERM) to PID, waits up to GRACE
# seconds for it to exit, then SIGKILLs it; reaps it. Sets STOP_RC to its exit status.
_alive() {  # a zombie child still answers kill -0; ps tells it apart
  kill -0 "$1" 2>/dev/null && [[ "$(ps -o stat= -p "$1" 2>/dev/null)" != Z* ]]
}
stop_pid() {
  local pid=$1 sig=${2:-TERM} grace=${3:-5} i
  kill -s "$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 20; i++)); do
    _alive "$pid" || break
    sleep 0.05
  done
  if _alive "$pid"; then kill -s KILL "$pid" 2>/dev/null || true; fi
  STOP_RC=0
  wait "$pid" 2>/dev/null || STOP_RC=$?
  _forget_pid "$pid"
}

cleanup() {
  local rc=$? pid ns
  trap - ERR INT TERM HUP
  set +e
  for pid in "${_ECA_PIDS[@]}"; do
    stop_pid "$pid" TERM 3
  done
  for ns in "${_ECA_NETNS[@]}"; do
    ip netns del "$ns" 2>/dev/null
  done
  if ((rc == 0)); then
    echo "PASS $TEST_NAME"
  else
    echo "FAIL $TEST_NAME: ${FAIL_REASON:-exit status $rc}"
  fi
  if [[ "${ECA_KEEP_TMP:-0}" == 1 ]]; then
    echo "(outputs kept in $TEST_TMP)" >&2
  else
    rm -rf "$TEST_TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT

# free_port: prints a TCP port the kernel just reported free on 127.0.0.1.
free_port() {
  "$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# in_ns NS CMD...: runs CMD in namespace NS ("" = the current one).
in_ns() {
  local ns=$1
  shift
  if [[ -n "$ns" ]]; then ip netns exec "$ns" "$@"; else "$@"; fi
}

# wait_port PORT [TIMEOUT_S=20] [NETNS] [PID]: waits until something listens on TCP
# PORT (in NETNS); fails early if PID (the would-be listener) exits first.
wait_port() {
  local port=$1 timeout=${2:-20} ns=${3:-} pid=${4:-} i
  for ((i = 0; i < timeout * 20; i++)); do
    if [[ -n "$(in_ns "$ns" ss -ltnH "sport = :$port" 2>/dev/null)" ]]; then
      return 0
    fi
    if [[ -n "$pid" ]] && ! _alive "$pid"; then
      show_outputs "${_ECA_PID_NAME[$pid]:-}"
      fail "${_ECA_PID_NAME[$pid]:-process $pid} exited before listening on port $port"
    fi
    sleep 0.05
  done
  fail "nothing listened on port $port${ns:+ in netns $ns} within ${timeout}s"
}

# start_bg NAME CMD...: starts CMD in the background with stdout/stderr in
# $TEST_TMP/NAME.out/.err; records its pid for cleanup; sets BG_PID.
start_bg() {
  local name=$1
  shift
  "$@" </dev/null >"$TEST_TMP/$name.out" 2>"$TEST_TMP/$name.err" &
  BG_PID=$!
  _ECA_PIDS+=("$BG_PID")
  _ECA_PID_NAME[$BG_PID]=$name
}

# wait_pid PID TIMEOUT_S: waits (bounded) for PID to exit and reaps it. Sets WAIT_RC to
# its exit status, or to "timeout" (after killing it) when it did not exit in time.
# (Not usable in $(...): a subshell cannot reap the test's children.)
wait_pid() {
  local pid=$1 timeout=$2 i
  for ((i = 0; i < timeout * 20; i++)); do
    if ! _alive "$pid"; then
      WAIT_RC=0
      wait "$pid" 2>/dev/null || WAIT_RC=$?
      _forget_pid "$pid"
      return 0
    fi
    sleep 0.05
  done
  stop_pid "$pid" TERM 3
  WAIT_RC=timeout
}

# show_outputs NAME...: prints the saved stdout/stderr of the named processes.
show_outputs() {
  local n f
  for n in "$@"; do
    for f in "$TEST_TMP/$n.out" "$TEST_TMP/$n.err"; do
      [[ -s "$f" ]] || continue
      echo "----- $(basename "$f") (last 60 lines) -----" >&2
      tail -n 60 "$f" >&2
    done
  done
}

# run_pair [--name N] [--port P] [--server-ns NS] [--client-ns NS] [--timeout S]
#          [--no-launcher] SERVER_CMD... -- CLIENT_CMD...
# Starts SERVER_CMD (through eca-run unless --no-launcher, in --server-ns), waits until port P listens, runs
# CLIENT_CMD (through eca-run, in --client-ns) bounded by --timeout (default 120 s), then
# waits (bounded) for the server to exit. Fails the test, printing both outputs, if
# either side exits non-zero or hangs. Sets CLIENT_OUT/CLIENT_ERR/SERVER_OUT/SERVER_ERR.
run_pair() {
  local name=pair port="" sns="" cns="" timeout=120 launcher=("$ECA_RUN")
  while (($#)); do
    case "$1" in
      --name) name=$2; shift 2 ;;
      --port) port=$2; shift 2 ;;
      --server-ns) sns=$2; shift 2 ;;
      --client-ns) cns=$2; shift 2 ;;
      --timeout) timeout=$2; shift 2 ;;
      --no-launcher) launcher=(); shift ;;
      *) break ;;
    esac
  done
  [[ -n "$port" ]] || fail "run_pair: --port is required"
  local -a server=() client=()
  while (($#)) && [[ "$1" != "--" ]]; do server+=("$1"); shift; done
  (($#)) || fail "run_pair: missing -- between server and client commands"
  shift
  client=("$@")
  ((${#server[@]} && ${#client[@]})) || fail "run_pair: empty server or client command"

  local -a sprefix=() cprefix=()
  [[ -n "$sns" ]] && sprefix=(ip netns exec "$sns")
  [[ -n "$cns" ]] && cprefix=(ip netns exec "$cns")

  SERVER_OUT="$TEST_TMP/$name.server.out"; SERVER_ERR="$TEST_TMP/$name.server.err"
  CLIENT_OUT="$TEST_TMP/$name.client.out"; CLIENT_ERR="$TEST_TMP/$name.client.err"

  log "$name: server: ${server[*]}"
  start_bg "$name.server" timeout -k 5 $((timeout + 30)) "${sprefix[@]}" "${launcher[@]}" "${server[@]}"
  local spid=$BG_PID
  wait_port "$port" 20 "$sns" "$spid"

  log "$name: client: ${client[*]}"
  start_bg "$name.client" timeout -k 5 "$timeout" "${cprefix[@]}" "${launcher[@]}" "${client[@]}"
  local cpid=$BG_PID crc src
  wait_pid "$cpid" $((timeout + 10)); crc=$WAIT_RC
  # A server whose client failed may wait for it forever: give it less time then.
  local swait=30
  [[ "$crc" == 0 ]] || swait=5
  wait_pid "$spid" "$swait"; src=$WAIT_RC
  if [[ "$crc" != 0 || "$src" != 0 ]]; then
    show_outputs "$name.server" "$name.client"
    local why="client exit $crc, server exit $src"
    [[ "$crc" == 124 ]] && why="client timed out after ${timeout}s; server exit $src"
    [[ "$src" == timeout ]] && why="client exit $crc; server did not exit within ${swait}s"
    fail "$name: $why"
  fi
}

# make_netns_pair [--ipv6-only]: creates two namespaces joined by a veth pair, with lo and
# the veths up and 10.212.R.1/24 (A) and 10.212.R.2/24 (B); with --ipv6-only, no IPv4
# address on the veths but the ULAs fd00:212:R::1/64 (A) and fd00:212:R::2/64 (B) and the
# link-local addresses, usable at once (duplicate address detection is off inside the
# namespaces). Sets NS_A NS_B VETH_A VETH_B IP_A IP_B. The namespaces (and with them the
# veths) are deleted at exit.
make_netns_pair() {
  local id="$$${_ECA_NETNS_SEQ}" net=$((RANDOM % 250 + 1)) i v6=0 ns
  [[ "${1:-}" == --ipv6-only ]] && v6=1
  _ECA_NETNS_SEQ=$((_ECA_NETNS_SEQ + 1))
  NS_A="eca-${id}-a"; NS_B="eca-${id}-b"
  VETH_A="ev${id}a"; VETH_B="ev${id}b"  # at most 15 characters
  IP_A="10.212.$net.1"; IP_B="10.212.$net.2"
  ((v6)) && { IP_A="fd00:212:$net::1"; IP_B="fd00:212:$net::2"; }
  ip netns add "$NS_A"; _ECA_NETNS+=("$NS_A")
  ip netns add "$NS_B"; _ECA_NETNS+=("$NS_B")
  if ((v6)); then  # before the veths exist, so that their link-local addresses skip DAD too
    for ns in "$NS_A" "$NS_B"; do
      ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    done
  fi
  ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
  if ((v6)); then
    ip -n "$NS_A" addr add "$IP_A/64" dev "$VETH_A" nodad
    ip -n "$NS_B" addr add "$IP_B/64" dev "$VETH_B" nodad
  else
    ip -n "$NS_A" addr add "$IP_A/24" dev "$VETH_A"
    ip -n "$NS_B" addr add "$IP_B/24" dev "$VETH_B"
  fi
  for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
  ip -n "$NS_A" link set "$VETH_A" up
  ip -n "$NS_B" link set "$VETH_B" up
  for ((i = 0; i < 200; i++)); do
    if ip -n "$NS_A" -o link show "$VETH_A" | grep -q 'LOWER_UP' &&
       ip -n "$NS_B" -o link show "$VETH_B" | grep -q 'LOWER_UP'; then
      return 0
    fi
    sleep 0.05
  done
  fail "veth pair $VETH_A/$VETH_B did not come up within 10s"
}

# plain_tcp_echo HOST PORT: sends a few lines over a kernel TCP connection and prints
# "echoed" if they come back within 5 s, else "not-echoed" (an rsocket server's port is
# served by rdma_cm, which drops a peer that does not speak MPA).
plain_tcp_echo() {
  "$PYTHON" - "$1" "$2" <<'PY'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.settimeout(5)
s.sendall(b"plain tcp hello " * 16)
data = b""
try:
    while len(data) < 256:
        b = s.recv(4096)
        if not b:
            break
        data += b
except OSError:
    pass
print("echoed" if b"plain tcp hello" in data else "not-echoed")
PY
}

# preloaded_echo TAG SERVER_MODE CLIENT_MODE HOST BYTES: Debian's librspreload.so in the socket
# program tests/system/rsocket_echo.c (built once into $TEST_TMP). A kernel TCP client to HOST
# gets no echo from the preloaded server (the port is served by the iWARP connection manager,
# which drops a peer that does not speak MPA); a preloaded client gets BYTES echoed and verified.
preloaded_echo() {
  local tag=$1 smode=$2 cmode=$3 host=$4 bytes=$5 port spid cpid crc src got
  local prog="$TEST_TMP/rsocket_echo" preload=/usr/lib/x86_64-linux-gnu/rsocket/librspreload.so
  [[ -x "$prog" ]] || "${CC:-cc}" -O2 -Wall -o "$prog" "$ECA_SRC/tests/system/rsocket_echo.c" ||
    fail "cannot build rsocket_echo"
  port=$(free_port)
  start_bg "$tag.server" timeout -k 5 150 "$ECA_RUN" env LD_PRELOAD="$preload" "$prog" "$smode" "$port"
  spid=$BG_PID
  wait_port "$port" 20 "" "$spid"
  got=$(plain_tcp_echo "$host" "$port")
  [[ "$got" == not-echoed ]] || fail "$tag: a plain TCP client was echoed: the preloaded server did not use rsockets"
  start_bg "$tag.client" timeout -k 5 120 "$ECA_RUN" env LD_PRELOAD="$preload" "$prog" "$cmode" "$port" "$bytes"
  cpid=$BG_PID
  wait_pid "$cpid" 130; crc=$WAIT_RC
  wait_pid "$spid" 30; src=$WAIT_RC
  [[ "$crc" == 0 && "$src" == 0 ]] || { show_outputs "$tag.server" "$tag.client"; fail "$tag: client $crc, server $src"; }
  assert_contains "$TEST_TMP/$tag.client.out" "^client verified $bytes bytes$" "$tag client"
  assert_contains "$TEST_TMP/$tag.server.out" "^server echoed $bytes bytes$" "$tag server"
}

# assert_pair_clean WHAT REGEX: no output of the last run_pair (both ends, stdout and
# stderr) matches the extended REGEX (case-insensitive).
assert_pair_clean() {
  local f
  for f in "$CLIENT_OUT" "$CLIENT_ERR" "$SERVER_OUT" "$SERVER_ERR"; do
    assert_not_contains "$f" "$2" "$1 $(basename "$f")"
  done
}

# assert_contains FILE REGEX [WHAT]: FILE has a line matching the extended REGEX.
assert_contains() {
  local file=$1 re=$2 what=${3:-}
  if ! grep -Eq -- "$re" "$file"; then
    echo "----- $(basename "$file") -----" >&2
    tail -n 60 "$file" >&2
    fail "${what:-$(basename "$file")}: no line matches /$re/"
  fi
}

# assert_not_contains FILE REGEX [WHAT]: no line of FILE matches the extended REGEX.
assert_not_contains() {
  local file=$1 re=$2 what=${3:-}
  if grep -Eiq -- "$re" "$file"; then
    echo "----- $(basename "$file") -----" >&2
    grep -Ei -- "$re" "$file" | head -n 20 >&2
    fail "${what:-$(basename "$file")}: unexpected line matching /$re/ (case-insensitive)"
  fi
}

# require_library: the libraries under test exist and the launcher runs (a test that
# needs them fails, never skips, when they are missing).
require_library() {
  [[ -x "$ECA_RUN" ]] || fail "launcher $ECA_RUN missing"
  [[ -e "$ECA_BUILD/lib/libibverbs.so.1" ]] || fail "$ECA_BUILD/lib/libibverbs.so.1 missing"
  [[ -e "$ECA_BUILD/lib/librdmacm.so.1" ]] || fail "$ECA_BUILD/lib/librdmacm.so.1 missing"
}

# require_program NAME...: the Debian program is installed (scripts/install-deps.sh).
require_program() {
  local p
  for p in "$@"; do
    command -v "$p" >/dev/null || fail "$p not installed (run scripts/install-deps.sh)"
  done
}

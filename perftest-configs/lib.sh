# Shared helpers of the benchmark scripts: build location checks, background processes that
# are always reaped, free ports from the kernel, and waiting for a listener.
# Sourced; expects `set -euo pipefail` in the caller.

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${ECA_BUILD:-$bench_root/build}
run="$build/bin/eca-run"
[ -x "$run" ] || { echo "no build at $build (run scripts/build.sh)" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
  local port=$1 i
  for i in $(seq 1 200); do
    ss -ltnH "sport = :$port" | grep -q . && return 0
    sleep 0.05
  done
  echo "nothing listens on port $port" >&2
  return 1
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

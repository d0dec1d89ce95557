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

# parse_opts SPEC... -- "$@": each SPEC names an option; `--bw-iters V` sets bw_iters=V,
# a SPEC ending in '!' is a flag (`check!`: `--check` sets check=1). Anything else prints the
# usage built from the SPECs and exits 2. Defaults are the variables' values before the call.
parse_opts() {
  local -A takes=()
  local usage="" spec
  while [ "$1" != -- ]; do
    spec=$1; shift
    if [ "${spec%!}" != "$spec" ]; then takes[${spec%!}]=0; usage+=" [--${spec%!}]"
    else takes[$spec]=1; usage+=" [--$spec V]"; fi
  done
  shift
  while [ $# -gt 0 ]; do
    local name=${1#--}
    case "${takes[$name]:-}" in
      1) [ $# -ge 2 ] || break; printf -v "${name//-/_}" '%s' "$2"; shift 2 ;;
      0) printf -v "${name//-/_}" 1; shift ;;
      *) break ;;
    esac
  done
  [ $# -eq 0 ] || { echo "usage: $0$usage" >&2; exit 2; }
}

# need_tools TOOL...: exit 2 naming the first one not on PATH.
need_tools() {
  local t
  for t; do command -v "$t" >/dev/null || { echo "$t missing (scripts/install-deps.sh)" >&2; exit 2; }; done
}

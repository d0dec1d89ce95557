#!/usr/bin/env bash
# Shows that check_includes.sh can fail: a scratch tree breaking each rule once must be
# refused with every violation named, and the same tree without them accepted.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

put() { mkdir -p "$(dirname "$tmp/$1")"; printf '%s\n' "${@:2}" >"$tmp/$1"; }
# Allowed in every tree.
put provider/core/ok.cpp '#include "provider/core/llp.hpp"' '#include "runtime/timer.hpp"' '#include <vector>'
put hwmodel/backend/ok.cpp '#include "runtime/progress.hpp"' '#include <boost/asio/ip/tcp.hpp>'
put engine/ok.cpp '#include "provider/core/objects.hpp"'
put connect/ok.cpp '#include "runtime/progress.hpp"'
put transport/ok.cpp '#include "hwmodel/backend/adapter.hpp"'  # no rule for transport/ here

bash "$here/check_includes.sh" "$tmp" >"$tmp/out" || { cat "$tmp/out"; echo "FAIL: clean tree refused"; exit 1; }

# One violation per rule, spelled the ways include lines come.
put provider/core/a.cpp '#include "transport/iwarp_conn.hpp"'
put provider/core/b.hpp '  #  include <boost/asio/steady_timer.hpp>'
put provider/core/c.cpp '#include "hwmodel/backend/hw_conn.hpp"'
put provider/core/d.cpp '#include "connect/mpa_cm.hpp"'
put hwmodel/backend/e.cpp '#include "transport/wire/ddp_rdmap.hpp"'
put engine/f.hpp '#include "hwmodel/backend/adapter.hpp"'
put engine/g.cpp '#include "transport/qp_tx.hpp"'
put runtime/h.cpp '#include "connect/mpa_cm.hpp"'
put connect/i.cpp '#include "transport/crc32c.hpp"'
want=(provider/core/a.cpp:1 provider/core/b.hpp:1 provider/core/c.cpp:1 provider/core/d.cpp:1
      hwmodel/backend/e.cpp:1 engine/f.hpp:1 engine/g.cpp:1 runtime/h.cpp:1 connect/i.cpp:1)

if bash "$here/check_includes.sh" "$tmp" >"$tmp/out"; then
  cat "$tmp/out"
  echo "FAIL: a tree breaking every rule was accepted"
  exit 1
fi
status=0
for w in "${want[@]}"; do
  grep -q "^$w: " "$tmp/out" || { echo "FAIL: $w not reported"; status=1; }
done
n=$(grep -c ': includes ' "$tmp/out" || true)
[[ $n == "${#want[@]}" ]] || { cat "$tmp/out"; echo "FAIL: $n violations reported, ${#want[@]} expected"; status=1; }
((status == 0)) && echo "selftest: every rule refuses its violation, allowed includes pass"
exit $status

#!/usr/bin/env bash
# Configures (Ninja, RelWithDebInfo) and builds into build/ at the repository root.
# Extra arguments are passed to the configure step, e.g. -DECA_SANITIZE=address,undefined
# (sanitizer builds go to their own tree: scripts/sanitize-test.sh).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
generator=(-G Ninja)
# An existing build tree keeps the generator it was configured with.
[[ -f build/CMakeCache.txt ]] && generator=()
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
cmake --build build -j2

#!/usr/bin/env bash
# Installs the dependencies, builds, and runs the whole test suite (unit, ABI and system
# tests). Run as root: the system tests create network namespaces and capture traffic.
# Extra arguments go to ctest, e.g. `scripts/test.sh -L system` or `-R perftest`.
# Exit status: ctest's.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash scripts/install-deps.sh
bash scripts/build.sh

# Unit tests may run two at a time; system tests are RUN_SERIAL (each alone), and each
# carries its own TIMEOUT (600 s for system tests, 120 s for unit tests); --timeout is
# the default for any test without one.
rc=0
ctest --test-dir build --output-on-failure --no-tests=error -j2 --timeout 300 "$@" || rc=$?
exit "$rc"

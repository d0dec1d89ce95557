#!/usr/bin/env bash
# scripts/sanitize-test.sh asan|tsan [CTEST ARGS...]
# Builds the project with sanitizers into its own tree and runs the tests that run under them:
#   asan  build-asan: clang-14, -DECA_SANITIZE=address,undefined -DECA_FUZZ=ON
#         runs the unit tests, the stress tests and the fuzz smoke runs (labels unit, stress,
#         fuzz; ECA_FUZZ_SMOKE_SECONDS per target, default 20)
#   tsan  build-tsan: the default compiler, -DECA_SANITIZE=thread
#         runs the unit tests and the stress tests (labels unit, stress)
# System tests (Debian's programs) are not run here: they would need the runtime preloaded
# into every foreign program (build-*/bin/eca-run does that; see docs/testing.md) and take
# longer than the CI budget allows.
# Tests listed in tests/known_failures.txt with scope "asan"/"tsan" are excluded from that run
# (scope "all" is disabled in every build). Extra arguments go to ctest.
# Set ECA_SANITIZE_CCACHE=1 to compile through ccache. Exit status: ctest's.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
kind=${1:?usage: sanitize-test.sh asan|tsan [ctest args]}
shift

launcher=()
if [[ "${ECA_SANITIZE_CCACHE:-0}" == 1 ]] && command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
case "$kind" in
  asan)
    dir=build-asan
    cfg=(-DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14
         -DECA_SANITIZE=address,undefined -DECA_FUZZ=ON
         -DECA_FUZZ_SMOKE_SECONDS="${ECA_FUZZ_SMOKE_SECONDS:-20}")
    labels='^(unit|stress|fuzz)$'
    # Leaks are not checked: process-wide singletons (progress thread, devices) live until exit.
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    ;;
  tsan)
    dir=build-tsan
    cfg=(-DECA_SANITIZE=thread)
    labels='^(unit|stress)$'
    # A report makes the process exit with status 66 at its end: the test fails.
    export TSAN_OPTIONS=${TSAN_OPTIONS:-second_deadlock_stack=1:history_size=4}
    ;;
  *) echo "sanitize-test.sh: unknown kind '$kind' (asan|tsan)" >&2; exit 2 ;;
esac

generator=(-G Ninja)
[[ -f $dir/CMakeCache.txt ]] && generator=()
cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${cfg[@]}" "${launcher[@]}"
cmake --build "$dir" -j2

# The exclude list for this kind, as a ctest regex of exact names (a parameterised gtest case's
# ctest name goes on with "  # GetParam() = ..."; the listed name is the part before it; no
# groups: CMake's regular expressions allow only a few).
exclude=$(awk -v k="$kind" '!/^#/ && NF >= 2 && $2 == k { gsub(/\./, "\\.", $1); printf "%s^%s$|^%s ", (n++ ? "|" : ""), $1, $1 }' \
  tests/known_failures.txt)
# ECA_SANITIZE_EXCLUDE: a further ctest regex of tests to leave out (CI: the modeled adapter's).
if [[ -n "${ECA_SANITIZE_EXCLUDE:-}" ]]; then exclude="${exclude:+$exclude|}$ECA_SANITIZE_EXCLUDE"; fi
args=(--test-dir "$dir" --output-on-failure --no-tests=error -j2 --timeout 600 -L "$labels")
if [[ -n "$exclude" ]]; then
  echo "sanitize-test.sh: excluded from the $kind run (tests/known_failures.txt): $exclude"
  args+=(-E "$exclude")
fi
ctest "${args[@]}" "$@"

#!/usr/bin/env bash
# tests/fuzz/run.sh TARGET SECONDS [BUILD_DIR]
# Runs the libFuzzer target TARGET (mpa, fpdu_rx, hw_frame) for SECONDS from its committed
# seed corpus. BUILD_DIR (default: build-fuzz at the repository root) must be configured with
#   CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja \
#     -DECA_FUZZ=ON -DECA_SANITIZE=address,undefined && cmake --build build-fuzz
# New inputs go to BUILD_DIR/fuzz-corpus/TARGET (kept between runs), crashes to
# BUILD_DIR/fuzz-artifacts/TARGET/. Copy an input that found a bug into
# tests/fuzz/corpus/TARGET/ once fixed: every build replays that directory (fuzz.*.replay).
# Extra libFuzzer flags: FUZZ_ARGS="-jobs=2 -workers=2" tests/fuzz/run.sh fpdu_rx 900
# Exit status: libFuzzer's (0 when no finding).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${1:?usage: run.sh TARGET SECONDS [BUILD_DIR]}
seconds=${2:?usage: run.sh TARGET SECONDS [BUILD_DIR]}
build=${3:-$root/build-fuzz}
bin="$build/bin/${target}_fuzz"
[[ -x "$bin" ]] || { echo "run.sh: $bin not built (configure with -DECA_FUZZ=ON)" >&2; exit 2; }
work="$build/fuzz-corpus/$target"
art="$build/fuzz-artifacts/$target/"
mkdir -p "$work" "$art"
dict=()
[[ -f "$here/$target.dict" ]] && dict=(-dict="$here/$target.dict")
export ECA_LOG=${ECA_LOG:-error}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# -timeout: one input may take a while on a loaded machine (the fpdu_rx harness bounds its
# own wait at 20 s); -rss_limit_mb: the default 2 GiB is tight with ASan's shadow.
# shellcheck disable=SC2086
exec "$bin" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -print_final_stats=1 \
  -artifact_prefix="$art" "${dict[@]}" ${FUZZ_ARGS:-} "$work" "$here/corpus/$target"

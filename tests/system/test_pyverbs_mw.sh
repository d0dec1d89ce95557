#!/usr/bin/env bash
# Memory windows through rdma-core's own Python suite (Debian's python3-pyverbs ships it in
# /usr/share/doc/rdma-core/tests), run unmodified with /usr/bin/python3 against our library:
#  - test_mr.MWTest.test_reg_mw_wrong_type runs (it is skipped when ibv_alloc_mw says
#    EOPNOTSUPP) and passes: a window of type 3 is refused.
#  - The six traffic cases of MWTest cannot run over iWARP: their set-up (base.py
#    RCResources.pre_run -> to_rts) moves the QPs to RTR/RTS with ibv_modify_qp and
#    InfiniBand/RoCE path attributes, without a connection; an iWARP QP reaches RTS only
#    through rdma_cm (as on Linux siw). This test checks that this, and nothing else, is what
#    stops each of them: every one fails in to_rts with EINVAL. Their cases are covered over
#    rdma_cm by tests/unit/mw_test.cpp on both backends.
# shellcheck source=tests/system/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_library
SUITE=/usr/share/doc/rdma-core/tests
[[ -e "$SUITE/test_mr.py.gz" || -e "$SUITE/test_mr.py" ]] ||
  fail "rdma-core's test suite is missing from $SUITE (python3-pyverbs)"

# The package compresses most files; the suite needs them as plain .py files.
cp -r "$SUITE" "$TEST_TMP/tests"
find "$TEST_TMP/tests" -name '*.gz' -exec gunzip -f {} +

run_suite() {  # NAME TEST...: runs the suite (bounded) through the launcher; sets RC
  local name=$1
  shift
  RC=0
  (cd "$TEST_TMP" && timeout -k 5 120 "$ECA_RUN" "$PYTHON" tests/run_tests.py \
    --dev "${DEV_PREFIX}_lo" -v "$@") </dev/null >"$TEST_TMP/$name.out" 2>&1 || RC=$?
}

run_suite wrong_type test_mr.MWTest.test_reg_mw_wrong_type
[[ $RC == 0 ]] || { tail -n 40 "$TEST_TMP/wrong_type.out" >&2; fail "test_reg_mw_wrong_type exited $RC"; }
assert_contains "$TEST_TMP/wrong_type.out" 'wrong type fails \.\.\. ok$' "test_reg_mw_wrong_type"
assert_not_contains "$TEST_TMP/wrong_type.out" 'skipped' "test_reg_mw_wrong_type"

traffic=(test_mw_type1 test_invalidate_mw_type1 test_mw_type2 test_mw_type2_invalidate_local
         test_mw_type2_invalidate_remote test_mw_type2_invalidate_dealloc)
args=()
for t in "${traffic[@]}"; do args+=("test_mr.MWTest.$t"); done
run_suite traffic "${args[@]}"
out="$TEST_TMP/traffic.out"
[[ $RC != 0 ]] || fail "MWTest's traffic cases passed: this test's premise is outdated"
for t in "${traffic[@]}"; do
  assert_contains "$out" "^$t .*\.\.\. ERROR$" "$t"
done
n_rts=$(grep -c 'Failed to modify QP state to RTS. Errno: 22' "$out" || true)
((n_rts == ${#traffic[@]})) || {
  tail -n 60 "$out" >&2
  fail "expected each of the ${#traffic[@]} cases to stop at ibv_modify_qp(RTS) = EINVAL, saw $n_rts"
}
log "MWTest over iWARP: test_reg_mw_wrong_type ok; ${#traffic[@]} traffic cases stop at the InfiniBand-style RTS transition (covered by unit/mw_test.cpp)"

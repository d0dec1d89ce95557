// RFC 7306 atomics through the verbs API, on every backend (tests/unit/fixture.hpp): results,
// completion opcodes, the extended post API, ordering against READs, more atomics in flight
// than ORD allows at once, a fence behind an atomic, the device attributes, and the errors a
// responder reports.
#include "tests/unit/fixture.hpp"

using namespace ecatest;

namespace {

constexpr int kAtomicAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ |
                              IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC;

class Atomics : public EcaTest {
 protected:
  uint64_t *target_ = nullptr, *results_ = nullptr;
  ibv_mr *tmr_ = nullptr, *rmr_ = nullptr;

  void Setup(int target_access = kAtomicAccess, ConnOpts o = {}) {
    ASSERT_NO_FATAL_FAILURE(Connect(o));
    target_ = reinterpret_cast<uint64_t *>(Alloc(4096));
    results_ = reinterpret_cast<uint64_t *>(Alloc(8 * 1024));
    tmr_ = Reg(srv_.pd, target_, 4096, target_access);
    rmr_ = Reg(cli_.pd, results_, 8 * 1024, IBV_ACCESS_LOCAL_WRITE);
    ASSERT_TRUE(tmr_ && rmr_);
  }
  // Posts one atomic whose original value lands in results_[slot].
  int PostAtomic(ibv_wr_opcode op, uint64_t remote, uint64_t cmp_add, uint64_t swap, size_t slot,
                 uint64_t wr_id, uint32_t rkey = 0) {
    ibv_sge s{(uint64_t)(uintptr_t)&results_[slot], 8, rmr_->lkey};
    ibv_send_wr wr{}, *bad = nullptr;
    wr.wr_id = wr_id;
    wr.opcode = op;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.sg_list = &s;
    wr.num_sge = 1;
    wr.wr.atomic.remote_addr = remote;
    wr.wr.atomic.rkey = rkey ? rkey : tmr_->rkey;
    wr.wr.atomic.compare_add = cmp_add;
    wr.wr.atomic.swap = swap;
    return ibv_post_send(cli_.qp, &wr, &bad);
  }
  uint64_t T(size_t i = 0) { return (uint64_t)(uintptr_t)&target_[i]; }
};

TEST_P(Atomics, DeviceSaysWhatItGuarantees) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  ibv_device_attr a{};
  ASSERT_EQ(0, ibv_query_device(cli_.ctx, &a));
  EXPECT_EQ(a.atomic_cap, IBV_ATOMIC_GLOB) << "CPU atomics on the target's memory";
  EXPECT_EQ(a.max_qp_rd_atom, 128);
  EXPECT_EQ(a.max_qp_init_rd_atom, 128);
}

TEST_P(Atomics, FetchAddAndCompareSwap) {
  ASSERT_NO_FATAL_FAILURE(Setup());
  target_[1] = 100;
  ASSERT_EQ(0, PostAtomic(IBV_WR_ATOMIC_FETCH_AND_ADD, T(1), 5, 0, 0, 1));
  ibv_wc wc{};
  ASSERT_TRUE(poll_one(cli_.scq, &wc));
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  EXPECT_EQ(wc.opcode, IBV_WC_FETCH_ADD);
  EXPECT_EQ(wc.byte_len, 8u);
  EXPECT_EQ(results_[0], 100u);
  EXPECT_EQ(target_[1], 105u);
  // Matching compare: swapped. Not matching: unchanged, the current value returned.
  ASSERT_EQ(0, PostAtomic(IBV_WR_ATOMIC_CMP_AND_SWP, T(1), 105, 0xFEEDFACECAFEBEEFull, 1, 2));
  ASSERT_EQ(0, PostAtomic(IBV_WR_ATOMIC_CMP_AND_SWP, T(1), 105, 1, 2, 3));
  auto wcs = poll_n(cli_.scq, 2);
  ASSERT_EQ(wcs.size(), 2u);
  for (auto &x : wcs) {
    EXPECT_EQ(x.status, IBV_WC_SUCCESS) << wc_status_name(x.status);
    EXPECT_EQ(x.opcode, IBV_WC_COMP_SWAP);
  }
  EXPECT_EQ(results_[1], 105u);
  EXPECT_EQ(results_[2], 0xFEEDFACECAFEBEEFull);
  EXPECT_EQ(target_[1], 0xFEEDFACECAFEBEEFull);
  // Fetch-add wraps around 2^64.
  ASSERT_EQ(0, PostAtomic(IBV_WR_ATOMIC_FETCH_AND_ADD, T(1), 0x0123456789ABCDEFull, 0, 3, 4));
  ASSERT_TRUE(poll_one(cli_.scq, &wc));
  EXPECT_EQ(target_[1], 0xFEEDFACECAFEBEEFull + 0x0123456789ABCDEFull);
  EXPECT_EQ(target_[0], 0u);
  EXPECT_EQ(target_[2], 0u);
}

TEST_P(Atomics, ExtendedPostApi) {
  ConnOpts o;
  o.client_send_ops = IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD | IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP;
  ASSERT_NO_FATAL_FAILURE(Setup(kAtomicAccess, o));
  ibv_qp_ex *qx = ibv_qp_to_qp_ex(cli_.qp);
  ASSERT_NE(qx, nullptr);
  target_[3] = 7;
  ibv_wr_start(qx);
  qx->wr_id = 11;
  qx->wr_flags = IBV_SEND_SIGNALED;
  ibv_wr_atomic_fetch_add(qx, tmr_->rkey, T(3), 3);
  ibv_wr_set_sge(qx, rmr_->lkey, (uint64_t)(uintptr_t)&results_[0], 8);
  qx->wr_id = 12;
  ibv_wr_atomic_cmp_swp(qx, tmr_->rkey, T(3), 10, 99);
  ibv_wr_set_sge(qx, rmr_->lkey, (uint64_t)(uintptr_t)&results_[1], 8);
  ASSERT_EQ(0, ibv_wr_complete(qx));
  auto wcs = poll_n(cli_.scq, 2);
  ASSERT_EQ(wcs.size(), 2u);
  EXPECT_EQ(wcs[0].wr_id, 11u);
  EXPECT_EQ(wcs[0].opcode, IBV_WC_FETCH_ADD);
  EXPECT_EQ(wcs[1].wr_id, 12u);
  EXPECT_EQ(wcs[1].opcode, IBV_WC_COMP_SWAP);
  EXPECT_EQ(results_[0], 7u);
  EXPECT_EQ(results_[1], 10u);
  EXPECT_EQ(target_[3], 99u);
  // The result buffer must be one 8-byte SGE, never inline.
  ibv_wr_start(qx);
  ibv_wr_atomic_fetch_add(qx, tmr_->rkey, T(3), 1);
  ibv_wr_set_sge(qx, rmr_->lkey, (uint64_t)(uintptr_t)&results_[0], 16);
  EXPECT_EQ(EINVAL, ibv_wr_complete(qx));
  ibv_wr_start(qx);
  ibv_wr_atomic_fetch_add(qx, tmr_->rkey, T(3), 1);
  uint64_t v = 0;
  ibv_wr_set_inline_data(qx, &v, 8);
  EXPECT_EQ(EINVAL, ibv_wr_complete(qx));
  EXPECT_EQ(target_[3], 99u);
}

// READs and atomics of one QP act in posting order at the responder.
TEST_P(Atomics, OrderedWithReads) {
  ASSERT_NO_FATAL_FAILURE(Setup());
  target_[4] = 1000;
  SendSpec rd{IBV_WR_RDMA_READ, {sge(rmr_, &results_[10], 8)}, IBV_SEND_SIGNALED, 21, T(4),
              tmr_->rkey};
  ASSERT_EQ(0, post(cli_.qp, rd));
  ASSERT_EQ(0, PostAtomic(IBV_WR_ATOMIC_FETCH_AND_ADD, T(4), 1, 0, 11, 22));
  rd.sges = {sge(rmr_, &results_[12], 8)};
  rd.wr_id = 23;
  ASSERT_EQ(0, post(cli_.qp, rd));
  ASSERT_EQ(0, PostAtomic(IBV_WR_ATOMIC_CMP_AND_SWP, T(4), 1001, 5, 13, 24));
  rd.sges = {sge(rmr_, &results_[14], 8)};
  rd.wr_id = 25;
  ASSERT_EQ(0, post(cli_.qp, rd));
  auto wcs = poll_n(cli_.scq, 5);
  ASSERT_EQ(wcs.size(), 5u);
  for (size_t i = 0; i < 5; i++) {
    EXPECT_EQ(wcs[i].wr_id, 21u + i);
    EXPECT_EQ(wcs[i].status, IBV_WC_SUCCESS) << wc_status_name(wcs[i].status);
  }
  EXPECT_EQ(results_[10], 1000u);
  EXPECT_EQ(results_[11], 1000u);
  EXPECT_EQ(results_[12], 1001u);
  EXPECT_EQ(results_[13], 1001u);
  EXPECT_EQ(results_[14], 5u);
}

// More atomics posted at once than ORD lets out: they wait for room, all complete.
TEST_P(Atomics, ManyBeyondOrd) {
  ConnOpts o;
  o.initiator_depth = o.responder_resources = 4;
  o.srv_initiator_depth = o.srv_responder_resources = 4;
  ASSERT_NO_FATAL_FAILURE(Setup(kAtomicAccess, o));
  constexpr int kN = 400;
  for (int i = 0; i < kN; i++)
    ASSERT_EQ(0, PostAtomic(IBV_WR_ATOMIC_FETCH_AND_ADD, T(5), 1, 0, (size_t)i, (uint64_t)i));
  auto wcs = poll_n(cli_.scq, kN);
  ASSERT_EQ(wcs.size(), (size_t)kN);
  std::vector<bool> seen(kN, false);
  for (auto &x : wcs) {
    EXPECT_EQ(x.status, IBV_WC_SUCCESS) << wc_status_name(x.status);
    const uint64_t v = results_[x.wr_id];
    ASSERT_LT(v, (uint64_t)kN);
    EXPECT_FALSE(seen[v]) << "two increments saw " << v;
    seen[v] = true;
  }
  EXPECT_EQ(target_[5], (uint64_t)kN);
}

// IBV_SEND_FENCE (verbs: a fenced work request starts only once every READ and atomic
// posted before it has completed): a Send fenced behind a Fetch-and-Add whose result sink is
// the Send's source carries the original value, not what the buffer held before. Both Sends
// are small (inline-sized on the modeled adapter, copied when the Send starts).
TEST_P(Atomics, FencedSendCarriesTheAtomicsResult) {
  ASSERT_NO_FATAL_FAILURE(Setup());
  uint64_t *in = reinterpret_cast<uint64_t *>(Alloc(64));
  ibv_mr *inmr = Reg(srv_.pd, in, 64, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_TRUE(inmr);
  constexpr uint64_t kBefore = 0x5e57'1e00'dead'beefull;
  for (int round = 0; round < 20; round++) {
    SCOPED_TRACE(round);
    target_[3] = 4242 + (uint64_t)round;
    results_[40] = kBefore;
    in[0] = 0;
    ASSERT_EQ(0, post_recv(srv_.qp, {sge(inmr, in, 8)}, 90));
    ASSERT_EQ(0, PostAtomic(IBV_WR_ATOMIC_FETCH_AND_ADD, T(3), 1, 0, 40, 91));
    ASSERT_EQ(0, post(cli_.qp, {.opcode = IBV_WR_SEND,
                                .sges = {sge(rmr_, &results_[40], 8)},
                                .flags = IBV_SEND_SIGNALED | IBV_SEND_FENCE,
                                .wr_id = 92}));
    auto wcs = poll_n(cli_.scq, 2);
    ASSERT_EQ(wcs.size(), 2u);
    EXPECT_EQ(wcs[0].wr_id, 91u);
    EXPECT_EQ(wcs[1].wr_id, 92u);
    for (auto &x : wcs) EXPECT_EQ(x.status, IBV_WC_SUCCESS) << wc_status_name(x.status);
    ibv_wc wc{};
    ASSERT_TRUE(poll_one(srv_.rcq, &wc));
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
    EXPECT_EQ(wc.byte_len, 8u);
    EXPECT_EQ(in[0], 4242u + (uint64_t)round) << "the Send left before the atomic's answer";
    EXPECT_EQ(target_[3], 4243u + (uint64_t)round);
  }
}

// The responder's checks, as the requester sees them: the work request fails with the
// status of the TERMINATE, the QP goes to ERR, the target word is untouched.
TEST_P(Atomics, ResponderErrors) {
  struct Case {
    const char *name;
    int access;
    uint64_t offset;  // from target_
    bool bad_rkey;
    ibv_wc_status want;
  } cases[] = {
      {"misaligned", kAtomicAccess, 12, false, IBV_WC_REM_INV_REQ_ERR},
      {"no REMOTE_ATOMIC", kAtomicAccess & ~IBV_ACCESS_REMOTE_ATOMIC, 16, false,
       IBV_WC_REM_ACCESS_ERR},
      {"beyond the MR", kAtomicAccess, 4096, false, IBV_WC_REM_ACCESS_ERR},
      {"invalid rkey", kAtomicAccess, 16, true, IBV_WC_REM_ACCESS_ERR},
  };
  for (const Case &k : cases) {
    SCOPED_TRACE(k.name);
    ASSERT_NO_FATAL_FAILURE(Setup(k.access));
    target_[2] = 77;
    target_[1] = 66;
    const uint32_t rkey = k.bad_rkey ? (tmr_->rkey ^ 0x100) : tmr_->rkey;
    ASSERT_EQ(0, PostAtomic(IBV_WR_ATOMIC_FETCH_AND_ADD, T(0) + k.offset, 1, 0, 0, 31, rkey));
    ASSERT_EQ(0, PostAtomic(IBV_WR_ATOMIC_FETCH_AND_ADD, T(2), 1, 0, 1, 32));  // flushed
    auto wcs = poll_n(cli_.scq, 2);
    ASSERT_EQ(wcs.size(), 2u);
    EXPECT_EQ(wcs[0].wr_id, 31u);
    EXPECT_EQ(wcs[0].status, k.want) << wc_status_name(wcs[0].status);
    EXPECT_EQ(wcs[1].wr_id, 32u);
    EXPECT_EQ(wcs[1].status, IBV_WC_WR_FLUSH_ERR) << wc_status_name(wcs[1].status);
    EXPECT_TRUE(wait_qp_state(cli_.qp, IBV_QPS_ERR));
    EXPECT_EQ(target_[1], 66u);
    EXPECT_EQ(target_[2], 77u);
    TearDown();
  }
}

TEST_P(Atomics, PostTimeChecks) {
  ASSERT_NO_FATAL_FAILURE(Setup());
  ibv_sge s[2] = {{(uint64_t)(uintptr_t)results_, 8, rmr_->lkey},
                  {(uint64_t)(uintptr_t)(results_ + 1), 8, rmr_->lkey}};
  ibv_send_wr wr{}, *bad = nullptr;
  wr.opcode = IBV_WR_ATOMIC_CMP_AND_SWP;
  wr.sg_list = s;
  wr.num_sge = 2;
  wr.wr.atomic.remote_addr = T();
  wr.wr.atomic.rkey = tmr_->rkey;
  EXPECT_EQ(EINVAL, ibv_post_send(cli_.qp, &wr, &bad)) << "two SGEs";
  wr.num_sge = 1;
  s[0].length = 4;
  EXPECT_EQ(EINVAL, ibv_post_send(cli_.qp, &wr, &bad)) << "a 4-byte result buffer";
  EXPECT_EQ(qp_state(cli_.qp), IBV_QPS_RTS);
}

ECA_INSTANTIATE_BACKENDS(Atomics);

}  // namespace

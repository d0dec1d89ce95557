// The data path over a connected loopback pair: SEND/RECV, RDMA WRITE/READ, WRITE with
// immediate, SEND with invalidate, inline data, scatter/gather, unsignaled WRs, the ibv_wr_*
// and ibv_cq_ex APIs, READ depth (ORD) and completion ordering. Every transfer is verified.
#include "tests/unit/fixture.hpp"

#include "provider/core/objects.hpp"

using namespace ecatest;

namespace {

class DataPath : public EcaTest {
 protected:
  // A registered buffer owned by the test.
  struct Mem {
    uint8_t *ptr = nullptr;
    size_t n = 0;
    ibv_mr *mr = nullptr;
    uint8_t *p() { return ptr; }
    uint64_t a(size_t off = 0) { return (uint64_t)(uintptr_t)(ptr + off); }
    uint8_t *begin() { return ptr; }
    uint8_t *end() { return ptr + n; }
  };
  // Owned by the fixture: freed only after TearDown disconnected (a WRITE completes at the
  // requester before the responder has placed it).
  Mem Make(ibv_pd *pd, size_t n, uint8_t fill = 0, int access = kAllAccess) {
    Mem m;
    m.n = std::max<size_t>(n, 1);
    m.ptr = Alloc(m.n, fill);
    m.mr = Reg(pd, m.ptr, m.n, access);
    return m;
  }
};

// ---------------------------------------------------------------------------------------------

TEST_P(DataPath, SendRecvSizes) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  const size_t sizes[] = {0, 1, 4095, 65536, 1u << 20, 8u << 20};
  Mem s = Make(cli_.pd, 8u << 20), r = Make(srv_.pd, (8u << 20) + 64);
  ASSERT_TRUE(s.mr && r.mr);
  uint32_t seed = 1;
  for (size_t n : sizes) {
    SCOPED_TRACE("size " + std::to_string(n));
    fill_pattern(s.p(), n, seed);
    std::memset(r.p(), 0xEE, r.n);
    ASSERT_EQ(0, post_recv(srv_.qp, {sge(r.mr, r.p(), (uint32_t)r.n)}, 500 + seed));
    std::vector<ibv_sge> sg;
    if (n) sg.push_back(sge(s.mr, s.p(), (uint32_t)n));
    ibv_wc wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_SEND, sg, IBV_SEND_SIGNALED, seed});
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
    EXPECT_EQ(wc.opcode, IBV_WC_SEND);
    EXPECT_EQ(wc.wr_id, seed);
    ASSERT_TRUE(poll_one(srv_.rcq, &wc, 30000));
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
    EXPECT_EQ(wc.opcode, IBV_WC_RECV);
    EXPECT_EQ(wc.wr_id, 500 + seed);
    EXPECT_EQ(wc.byte_len, n);
    EXPECT_EQ(wc.qp_num, srv_.qp->qp_num);
    EXPECT_EQ(0, memcmp(r.p(), s.p(), n)) << "payload differs";
    EXPECT_EQ(r.p()[n], 0xEE) << "byte after the message written";
    seed++;
  }
}

TEST_P(DataPath, SendRecvBothDirections) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  Mem a = Make(cli_.pd, 4096), b = Make(srv_.pd, 4096);
  fill_pattern(b.p(), 1000, 3);
  std::vector<uint8_t> expect(b.p(), b.p() + 1000);
  ASSERT_EQ(0, post_recv(cli_.qp, {sge(a.mr, a.p() + 100, 2000)}, 9));
  ibv_wc wc = post_and_wait(srv_.qp, srv_.scq, {IBV_WR_SEND, {sge(b.mr, b.p(), 1000)}});
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  ASSERT_TRUE(poll_one(cli_.rcq, &wc));
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(wc.byte_len, 1000u);
  EXPECT_EQ(0, memcmp(a.p() + 100, expect.data(), 1000));
}

TEST_P(DataPath, MultiSgeScatterGather) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  Mem s1 = Make(cli_.pd, 70000), s2 = Make(cli_.pd, 5000);
  Mem r1 = Make(srv_.pd, 200000, 0xEE), r2 = Make(srv_.pd, 100, 0xEE);
  fill_pattern(s1.p(), s1.n, 11);
  fill_pattern(s2.p(), s2.n, 12);
  // gather: 3 pieces from two MRs (one at an offset), total 1 + 4999 + 70000 - 17 = ...
  std::vector<ibv_sge> out = {sge(s2.mr, s2.p() + 1, 4999), sge(s1.mr, s1.p() + 17, 69983),
                              sge(s2.mr, s2.p(), 1)};
  std::vector<uint8_t> expect;
  for (auto &g : out) {
    auto *b = reinterpret_cast<uint8_t *>(g.addr);
    expect.insert(expect.end(), b, b + g.length);
  }
  // scatter: 5 pieces, uneven, the last larger than needed
  std::vector<ibv_sge> in = {sge(r2.mr, r2.p() + 3, 7), sge(r1.mr, r1.p() + 5, 1000),
                             sge(r2.mr, r2.p() + 20, 50), sge(r1.mr, r1.p() + 2000, 60000),
                             sge(r1.mr, r1.p() + 100000, 90000)};
  ASSERT_EQ(0, post_recv(srv_.qp, in, 77));
  ibv_wc wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_SEND, out});
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  ASSERT_TRUE(poll_one(srv_.rcq, &wc));
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  ASSERT_EQ(wc.byte_len, expect.size());
  std::vector<uint8_t> got;
  size_t left = expect.size();
  for (auto &g : in) {
    size_t take = std::min<size_t>(left, g.length);
    auto *b = reinterpret_cast<uint8_t *>(g.addr);
    got.insert(got.end(), b, b + take);
    left -= take;
  }
  EXPECT_TRUE(got == expect) << "scatter/gather mismatch";
  // nothing outside the SGEs
  EXPECT_EQ(r2.p()[2], 0xEE);
  EXPECT_EQ(r2.p()[10], 0xEE);
  EXPECT_EQ(r2.p()[19], 0xEE);
  EXPECT_EQ(r1.p()[4], 0xEE);
  EXPECT_EQ(r1.p()[1005], 0xEE);
  EXPECT_EQ(r1.p()[1999], 0xEE);
  EXPECT_EQ(r1.p()[62000], 0xEE);
}

TEST_P(DataPath, InlineSendSourceReusableAtOnce) {
  ConnOpts o;
  o.max_inline = 64;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  ibv_qp_attr qa{};
  ibv_qp_init_attr qi{};
  ASSERT_EQ(0, ibv_query_qp(cli_.qp, &qa, IBV_QP_CAP, &qi));
  const uint32_t max_inline = qa.cap.max_inline_data;
  ASSERT_GE(max_inline, 64u);
  Mem r = Make(srv_.pd, 4096, 0xEE);
  for (uint32_t n : {1u, 17u, 80u, max_inline}) {
    if (n > max_inline) continue;
    SCOPED_TRACE("inline size " + std::to_string(n));
    // Not registered at all: inline data is copied at post time, the lkey is not used.
    std::vector<uint8_t> src(n), orig(n);
    fill_pattern(src.data(), n, n);
    orig = src;
    ASSERT_EQ(0, post_recv(srv_.qp, {sge(r.mr, r.p(), 4096)}, n));
    ibv_sge g{(uint64_t)(uintptr_t)src.data(), n, 0xdeadbeef};
    ASSERT_EQ(0, post(cli_.qp, {IBV_WR_SEND, {g}, IBV_SEND_SIGNALED | IBV_SEND_INLINE, n}));
    std::memset(src.data(), 0x5A, n);  // overwrite right after posting
    ibv_wc wc{};
    ASSERT_TRUE(poll_one(cli_.scq, &wc));
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
    ASSERT_TRUE(poll_one(srv_.rcq, &wc));
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
    EXPECT_EQ(wc.byte_len, n);
    EXPECT_EQ(0, memcmp(r.p(), orig.data(), n)) << "inline SEND did not deliver the data as posted";
  }
  // Inline WRITE too
  Mem t = Make(srv_.pd, 256, 0xEE);
  std::vector<uint8_t> src(48);
  fill_pattern(src.data(), src.size(), 99);
  std::vector<uint8_t> orig = src;
  ibv_sge g{(uint64_t)(uintptr_t)src.data(), 48, 0};
  ASSERT_EQ(0, post(cli_.qp, {IBV_WR_RDMA_WRITE, {g}, IBV_SEND_SIGNALED | IBV_SEND_INLINE, 1,
                              t.a(8), t.mr->rkey}));
  std::memset(src.data(), 0, src.size());
  ibv_wc wc{};
  ASSERT_TRUE(poll_one(cli_.scq, &wc));
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  // Make sure it is placed: a READ afterwards (ordered behind the WRITE) sees it.
  Mem back = Make(cli_.pd, 48);
  wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_RDMA_READ, {sge(back.mr, back.p(), 48)},
                                         IBV_SEND_SIGNALED, 2, t.a(8), t.mr->rkey});
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, memcmp(back.p(), orig.data(), 48));
  EXPECT_EQ(0, memcmp(t.p() + 8, orig.data(), 48));
  // More than max_inline is refused at post time.
  std::vector<uint8_t> big(max_inline + 1);
  ibv_sge bg{(uint64_t)(uintptr_t)big.data(), max_inline + 1, 0};
  EXPECT_EQ(EINVAL, post(cli_.qp, {IBV_WR_SEND, {bg}, IBV_SEND_SIGNALED | IBV_SEND_INLINE}));
}

TEST_P(DataPath, RdmaWriteAndReadSizesAndOffsets) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  const size_t kRemote = 5u << 20;
  Mem remote = Make(srv_.pd, kRemote, 0xEE);
  Mem local = Make(cli_.pd, kRemote);
  Mem back = Make(cli_.pd, kRemote);
  const size_t sizes[] = {0, 1, 4096, 65000, 65001, 200001, 4u << 20};
  uint64_t id = 1;
  for (size_t n : sizes) {
    for (size_t off : {(size_t)0, (size_t)13}) {
      SCOPED_TRACE("size " + std::to_string(n) + " offset " + std::to_string(off));
      fill_pattern(local.p(), n, (uint32_t)(n + off));
      std::vector<ibv_sge> sg;
      if (n) sg.push_back(sge(local.mr, local.p(), (uint32_t)n));
      ibv_wc wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_RDMA_WRITE, sg, IBV_SEND_SIGNALED,
                                                    id++, remote.a(off), remote.mr->rkey});
      ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
      EXPECT_EQ(wc.opcode, IBV_WC_RDMA_WRITE);
      std::memset(back.p(), 0x33, n + 1);
      std::vector<ibv_sge> rg;
      if (n) rg.push_back(sge(back.mr, back.p(), (uint32_t)n));
      wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_RDMA_READ, rg, IBV_SEND_SIGNALED, id++,
                                             remote.a(off), remote.mr->rkey});
      ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
      EXPECT_EQ(wc.opcode, IBV_WC_RDMA_READ);
      EXPECT_EQ(0, memcmp(back.p(), local.p(), n)) << "READ returned other data";
      EXPECT_EQ(back.p()[n], 0x33) << "READ wrote past its sink";
      EXPECT_EQ(0, memcmp(remote.p() + off, local.p(), n)) << "WRITE placed other data";
    }
  }
  // Offsets and lengths that end exactly at the end of the MR are in bounds.
  fill_pattern(local.p(), 100, 5);
  ibv_wc wc = post_and_wait(cli_.qp, cli_.scq,
                            {IBV_WR_RDMA_WRITE, {sge(local.mr, local.p(), 100)}, IBV_SEND_SIGNALED,
                             id++, remote.a(kRemote - 100), remote.mr->rkey});
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  wc = post_and_wait(cli_.qp, cli_.scq,
                     {IBV_WR_RDMA_READ, {sge(back.mr, back.p(), 100)}, IBV_SEND_SIGNALED, id++,
                      remote.a(kRemote - 100), remote.mr->rkey});
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, memcmp(back.p(), local.p(), 100));
}

// A responder whose thread busy-polled and then stopped polling, without arming a CQ, still
// takes RDMA WRITEs and answers RDMA READs. While a thread polls, the software backend stops
// the socket from waking the progress thread; its watchdog must give the socket back
// (transport/qp_rx.cpp, "Quiet"), or the READ below is never answered.
TEST_P(DataPath, OneSidedAfterThePollerStops) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  const uint32_t n = 65536;
  Mem remote = Make(srv_.pd, n, 0);
  Mem local = Make(cli_.pd, n);
  Mem back = Make(cli_.pd, n);
  Mem rbuf = Make(srv_.pd, 64);
  // A posted receive gives the poller reason to look at the socket.
  ASSERT_EQ(0, post_recv(srv_.qp, {sge(rbuf.mr, rbuf.p(), 64)}, 7));
  ibv_wc wc{};
  for (int i = 0; i < 1000; i++) ASSERT_EQ(0, ibv_poll_cq(srv_.rcq, 1, &wc));
  // The responder's thread polls no more.
  fill_pattern(local.p(), n, 9);
  wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_RDMA_WRITE, {sge(local.mr, local.p(), n)},
                                         IBV_SEND_SIGNALED, 1, remote.a(), remote.mr->rkey});
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_RDMA_READ, {sge(back.mr, back.p(), n)},
                                         IBV_SEND_SIGNALED, 2, remote.a(), remote.mr->rkey});
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  EXPECT_EQ(0, memcmp(back.p(), local.p(), n)) << "READ returned other data";
  EXPECT_EQ(0, memcmp(remote.p(), local.p(), n)) << "WRITE placed other data";
}

TEST_P(DataPath, RdmaMultiSgeLocalSide) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  Mem remote = Make(srv_.pd, 300000, 0xEE);
  Mem l1 = Make(cli_.pd, 100000), l2 = Make(cli_.pd, 100000);
  fill_pattern(l1.p(), l1.n, 21);
  fill_pattern(l2.p(), l2.n, 22);
  std::vector<ibv_sge> src = {sge(l1.mr, l1.p() + 5, 70000), sge(l2.mr, l2.p(), 3),
                              sge(l1.mr, l1.p() + 80000, 19997), sge(l2.mr, l2.p() + 10, 60000)};
  std::vector<uint8_t> expect;
  for (auto &g : src) {
    auto *b = reinterpret_cast<uint8_t *>(g.addr);
    expect.insert(expect.end(), b, b + g.length);
  }
  ibv_wc wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_RDMA_WRITE, src, IBV_SEND_SIGNALED, 1,
                                                remote.a(1000), remote.mr->rkey});
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS);
  // READ it back into 3 sinks in two MRs
  Mem k1 = Make(cli_.pd, 200000, 0x44), k2 = Make(cli_.pd, 200000, 0x44);
  std::vector<ibv_sge> dst = {sge(k1.mr, k1.p() + 1, 1), sge(k2.mr, k2.p() + 100, 99999),
                              sge(k1.mr, k1.p() + 50, (uint32_t)expect.size() - 100000)};
  wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_RDMA_READ, dst, IBV_SEND_SIGNALED, 2,
                                         remote.a(1000), remote.mr->rkey});
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, memcmp(remote.p() + 1000, expect.data(), expect.size()));
  std::vector<uint8_t> got;
  for (auto &g : dst) {
    auto *b = reinterpret_cast<uint8_t *>(g.addr);
    got.insert(got.end(), b, b + g.length);
  }
  EXPECT_TRUE(got == expect) << "multi-SGE READ sink mismatch";
  EXPECT_EQ(k1.p()[0], 0x44);
  EXPECT_EQ(k1.p()[2], 0x44);
  EXPECT_EQ(k2.p()[99], 0x44);
  EXPECT_EQ(remote.p()[999], 0xEE);
  EXPECT_EQ(remote.p()[1000 + expect.size()], 0xEE);
}

TEST_P(DataPath, WriteWithImmediate) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  Mem remote = Make(srv_.pd, 100000, 0xEE), local = Make(cli_.pd, 100000);
  Mem rq = Make(srv_.pd, 64, 0xEE);
  fill_pattern(local.p(), 70000, 31);
  ASSERT_EQ(0, post_recv(srv_.qp, {sge(rq.mr, rq.p(), 64)}, 4242));
  SendSpec s{IBV_WR_RDMA_WRITE_WITH_IMM, {sge(local.mr, local.p(), 70000)}, IBV_SEND_SIGNALED, 8,
             remote.a(10), remote.mr->rkey};
  s.imm = 0x12345678;
  ibv_wc wc = post_and_wait(cli_.qp, cli_.scq, s);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(wc.opcode, IBV_WC_RDMA_WRITE);
  ASSERT_TRUE(poll_one(srv_.rcq, &wc));
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(wc.wr_id, 4242u);
  EXPECT_EQ(wc.opcode, IBV_WC_RECV_RDMA_WITH_IMM);
  EXPECT_TRUE(wc.wc_flags & IBV_WC_WITH_IMM);
  EXPECT_EQ(ntohl(wc.imm_data), 0x12345678u);
  // The data is placed before the receive completes.
  EXPECT_EQ(0, memcmp(remote.p() + 10, local.p(), 70000));
  EXPECT_EQ(rq.p()[0], 0xEE) << "the receive buffer is not used by WRITE_WITH_IMM";
}

// Only memory windows and fast-registered MRs may be invalidated by a SEND with Invalidate
// (RFC 5040 6.10, verbs; windows: tests/unit/mw_test.cpp). A SEND_INV naming an ordinary MR's STag is
// answered with the TERMINATE "STag cannot be invalidated", the receive completes in error,
// both QPs end in ERR, and the MR stays valid.
TEST_P(DataPath, SendWithInvalidateOfOrdinaryMrTerminates) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  Mem target = Make(srv_.pd, 4096, 0xEE);  // the STag the client tries to invalidate
  Mem rq = Make(srv_.pd, 256, 0), s = Make(cli_.pd, 256);
  fill_pattern(s.p(), 200, 41);
  // It is usable before.
  ibv_wc wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_RDMA_WRITE, {sge(s.mr, s.p(), 16)},
                                                IBV_SEND_SIGNALED, 1, target.a(), target.mr->rkey});
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS);
  ASSERT_EQ(0, post_recv(srv_.qp, {sge(rq.mr, rq.p(), 256)}, 55));
  ASSERT_EQ(0, post_recv(srv_.qp, {sge(rq.mr, rq.p(), 256)}, 56));  // flushed
  SendSpec inv{IBV_WR_SEND_WITH_INV, {sge(s.mr, s.p(), 200)}, IBV_SEND_SIGNALED, 2};
  inv.invalidate = target.mr->rkey;
  ASSERT_EQ(0, post(cli_.qp, inv));
  ASSERT_TRUE(poll_one(srv_.rcq, &wc));
  EXPECT_EQ(wc.wr_id, 55u);
  EXPECT_NE(wc.status, IBV_WC_SUCCESS) << "an ordinary MR was invalidated";
  EXPECT_FALSE(wc.status == IBV_WC_SUCCESS && (wc.wc_flags & IBV_WC_WITH_INV));
  ASSERT_TRUE(poll_one(srv_.rcq, &wc));
  EXPECT_EQ(wc.wr_id, 56u);
  EXPECT_EQ(wc.status, IBV_WC_WR_FLUSH_ERR);
  EXPECT_TRUE(wait_qp_state(srv_.qp, IBV_QPS_ERR));
  EXPECT_TRUE(wait_qp_state(cli_.qp, IBV_QPS_ERR)) << "the TERMINATE did not reach the sender";
  // The MR is still valid: its STag still passes the responder's check.
  eca::MrRef ref;
  EXPECT_EQ(eca::AccessError::None,
            eca::mr_lookup(target.mr->rkey, eca::Pd::from(srv_.pd), target.a(), 16,
                           IBV_ACCESS_REMOTE_WRITE, &ref))
      << "the MR named by the SEND with Invalidate no longer validates";
}

TEST_P(DataPath, UnsignaledThenOneSignaled) {
  ConnOpts o;
  o.sq_sig_all = false;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  Mem remote = Make(srv_.pd, 1 << 16, 0), local = Make(cli_.pd, 1 << 16);
  fill_pattern(local.p(), local.n, 51);
  std::vector<SendSpec> chain;
  for (int i = 0; i < 50; i++)
    chain.push_back({i % 2 ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE,
                     {sge(local.mr, local.p() + i * 1024, 1024)}, 0, (uint64_t)i,
                     remote.a(i * 1024), remote.mr->rkey});
  chain.push_back({IBV_WR_RDMA_WRITE, {sge(local.mr, local.p(), 8)}, IBV_SEND_SIGNALED, 999,
                   remote.a(0), remote.mr->rkey});
  ASSERT_EQ(0, post_chain(cli_.qp, chain));
  auto wcs = poll_n(cli_.scq, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].wr_id, 999u);
  EXPECT_EQ(wcs[0].status, IBV_WC_SUCCESS);
  EXPECT_TRUE(cq_empty(cli_.scq)) << "unsignaled WRs produced completions";
  // The queue slots of the unsignaled WRs were released: the SQ can be filled again.
  std::vector<SendSpec> again;
  for (uint32_t i = 0; i < opts_.max_send_wr; i++)
    again.push_back({IBV_WR_RDMA_WRITE, {sge(local.mr, local.p(), 8)},
                     i + 1 == opts_.max_send_wr ? (unsigned)IBV_SEND_SIGNALED : 0u, 2000 + i,
                     remote.a(0), remote.mr->rkey});
  ASSERT_EQ(0, post_chain(cli_.qp, again));
  wcs = poll_n(cli_.scq, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, IBV_WC_SUCCESS);
  EXPECT_TRUE(cq_empty(cli_.scq));
}

TEST_P(DataPath, SqSigAllSignalsEverything) {
  ConnOpts o;
  o.sq_sig_all = true;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  Mem remote = Make(srv_.pd, 4096), local = Make(cli_.pd, 4096);
  std::vector<SendSpec> chain;
  for (int i = 0; i < 10; i++)
    chain.push_back({IBV_WR_RDMA_WRITE, {sge(local.mr, local.p(), 64)}, 0, (uint64_t)i,
                     remote.a(), remote.mr->rkey});
  ASSERT_EQ(0, post_chain(cli_.qp, chain));
  auto wcs = poll_n(cli_.scq, 10);
  ASSERT_EQ(wcs.size(), 10u);
  for (int i = 0; i < 10; i++) EXPECT_EQ(wcs[i].wr_id, (uint64_t)i);
}

TEST_P(DataPath, WrApiRdmaWrite) {
  ConnOpts o;
  o.client_send_ops = IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_SEND | IBV_QP_EX_WITH_RDMA_READ;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  ibv_qp_ex *qx = ibv_qp_to_qp_ex(cli_.qp);
  ASSERT_NE(qx, nullptr) << "QP created with send_ops_flags has no ibv_qp_ex";
  Mem remote = Make(srv_.pd, 200000, 0xEE), local = Make(cli_.pd, 200000);
  fill_pattern(local.p(), local.n, 61);

  ibv_wr_start(qx);
  qx->wr_id = 71;
  qx->wr_flags = IBV_SEND_SIGNALED;
  ibv_wr_rdma_write(qx, remote.mr->rkey, remote.a(3));
  ibv_wr_set_sge(qx, local.mr->lkey, local.a(), 150000);
  qx->wr_id = 72;
  qx->wr_flags = IBV_SEND_SIGNALED;
  ibv_wr_rdma_write(qx, remote.mr->rkey, remote.a(160000));
  ibv_sge two[2] = {sge(local.mr, local.p() + 7, 10), sge(local.mr, local.p() + 100, 20)};
  ibv_wr_set_sge_list(qx, 2, two);
  ASSERT_EQ(0, ibv_wr_complete(qx));
  auto wcs = poll_n(cli_.scq, 2);
  ASSERT_EQ(wcs.size(), 2u);
  EXPECT_EQ(wcs[0].wr_id, 71u);
  EXPECT_EQ(wcs[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(wcs[0].opcode, IBV_WC_RDMA_WRITE);
  EXPECT_EQ(wcs[1].wr_id, 72u);
  EXPECT_EQ(wcs[1].status, IBV_WC_SUCCESS);

  // READ back through the same API; ordered behind the WRITEs.
  Mem back = Make(cli_.pd, 200000, 0);
  ibv_wr_start(qx);
  qx->wr_id = 73;
  qx->wr_flags = IBV_SEND_SIGNALED;
  ibv_wr_rdma_read(qx, remote.mr->rkey, remote.a(3));
  ibv_wr_set_sge(qx, back.mr->lkey, back.a(), 150000);
  ASSERT_EQ(0, ibv_wr_complete(qx));
  wcs = poll_n(cli_.scq, 1);
  ASSERT_EQ(wcs.size(), 1u);
  EXPECT_EQ(wcs[0].status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, memcmp(back.p(), local.p(), 150000));
  EXPECT_EQ(0, memcmp(remote.p() + 3, local.p(), 150000));
  EXPECT_EQ(0, memcmp(remote.p() + 160000, local.p() + 7, 10));
  EXPECT_EQ(0, memcmp(remote.p() + 160010, local.p() + 100, 20));
  EXPECT_EQ(remote.p()[160030], 0xEE);

  // Inline SEND through the API; an unsupported op latches an error for wr_complete.
  Mem rq = Make(srv_.pd, 64, 0);
  ASSERT_EQ(0, post_recv(srv_.qp, {sge(rq.mr, rq.p(), 64)}, 1));
  char msg[] = "wr api inline";
  ibv_wr_start(qx);
  qx->wr_id = 74;
  qx->wr_flags = IBV_SEND_SIGNALED | IBV_SEND_INLINE;
  ibv_wr_send(qx);
  ibv_wr_set_inline_data(qx, msg, sizeof msg);
  ASSERT_EQ(0, ibv_wr_complete(qx));
  std::memset(msg, 0, sizeof msg);
  ibv_wc wc{};
  ASSERT_TRUE(poll_one(srv_.rcq, &wc));
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_STREQ(reinterpret_cast<char *>(rq.p()), "wr api inline");
  ASSERT_TRUE(poll_one(cli_.scq, &wc));
  EXPECT_EQ(wc.wr_id, 74u);

  ibv_wr_start(qx);
  qx->wr_id = 75;
  ibv_wr_send_imm(qx, htonl(1));
  ibv_wr_set_sge(qx, local.mr->lkey, local.a(), 8);
  EXPECT_NE(0, ibv_wr_complete(qx)) << "SEND with immediate is not supported on iWARP";
}

TEST_P(DataPath, ManyReadsBeyondOrd) {
  ConnOpts o;
  o.initiator_depth = 1;
  o.max_send_wr = 1024;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  ibv_qp_attr qa{};
  ibv_qp_init_attr qi{};
  ASSERT_EQ(0, ibv_query_qp(cli_.qp, &qa, IBV_QP_MAX_QP_RD_ATOMIC, &qi));
  EXPECT_EQ(qa.max_rd_atomic, 1) << "negotiated ORD";
  const int kReads = 512;
  Mem remote = Make(srv_.pd, kReads * 16), local = Make(cli_.pd, kReads * 16, 0);
  fill_pattern(remote.p(), remote.n, 71);
  std::vector<SendSpec> chain;
  for (int i = 0; i < kReads; i++)
    chain.push_back({IBV_WR_RDMA_READ, {sge(local.mr, local.p() + i * 16, 16)}, IBV_SEND_SIGNALED,
                     (uint64_t)i, remote.a(i * 16), remote.mr->rkey});
  ASSERT_EQ(0, post_chain(cli_.qp, chain));
  auto wcs = poll_n(cli_.scq, kReads, 30000);
  ASSERT_EQ(wcs.size(), (size_t)kReads);
  for (int i = 0; i < kReads; i++) {
    EXPECT_EQ(wcs[i].wr_id, (uint64_t)i) << "completion order";
    EXPECT_EQ(wcs[i].status, IBV_WC_SUCCESS);
  }
  EXPECT_EQ(0, memcmp(local.p(), remote.p(), kReads * 16));
}

TEST_P(DataPath, CompletionOrderMixedOps) {
  ConnOpts o;
  o.max_send_wr = 1024;
  o.max_recv_wr = 1024;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  Mem remote = Make(srv_.pd, 1 << 20, 0), local = Make(cli_.pd, 1 << 20);
  Mem rq = Make(srv_.pd, 1 << 20, 0);
  fill_pattern(local.p(), local.n, 81);
  fill_pattern(remote.p(), remote.n, 82);
  std::vector<SendSpec> chain;
  int sends = 0;
  for (int i = 0; i < 300; i++) {
    size_t n = (size_t)((i * 7919) % 3000) + 1;
    if (i % 10 == 0) n = 100000;  // some multi-FPDU messages
    size_t off = (size_t)(i % 8) * 100000;
    switch (i % 3) {
      case 0:
        chain.push_back({IBV_WR_RDMA_READ, {sge(local.mr, local.p() + off, (uint32_t)n)},
                         IBV_SEND_SIGNALED, (uint64_t)i, remote.a(off), remote.mr->rkey});
        break;
      case 1:
        chain.push_back({IBV_WR_RDMA_WRITE, {sge(local.mr, local.p() + off, (uint32_t)n)},
                         IBV_SEND_SIGNALED, (uint64_t)i, remote.a(900000),
                         remote.mr->rkey});
        break;
      default:
        ASSERT_EQ(0, post_recv(srv_.qp, {sge(rq.mr, rq.p(), (uint32_t)rq.n)}, i));
        chain.push_back({IBV_WR_SEND, {sge(local.mr, local.p() + off, (uint32_t)n)},
                         IBV_SEND_SIGNALED, (uint64_t)i});
        sends++;
    }
  }
  ASSERT_EQ(0, post_chain(cli_.qp, chain));
  auto wcs = poll_n(cli_.scq, chain.size(), 30000);
  ASSERT_EQ(wcs.size(), chain.size());
  for (size_t i = 0; i < wcs.size(); i++) {
    EXPECT_EQ(wcs[i].wr_id, i) << "completion " << i << " out of posting order";
    EXPECT_EQ(wcs[i].status, IBV_WC_SUCCESS);
    EXPECT_EQ(wcs[i].opcode, i % 3 == 0 ? IBV_WC_RDMA_READ
                                       : i % 3 == 1 ? IBV_WC_RDMA_WRITE : IBV_WC_SEND);
  }
  auto rwcs = poll_n(srv_.rcq, (size_t)sends);
  ASSERT_EQ(rwcs.size(), (size_t)sends);
  for (size_t i = 0; i < rwcs.size(); i++) EXPECT_EQ(rwcs[i].wr_id, 3 * i + 2);
}

TEST_P(DataPath, CqExPolling) {
  ConnOpts o;
  o.client_send_cq_ex = true;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  ASSERT_NE(cli_.scq_ex, nullptr);
  ibv_cq_ex *cx = cli_.scq_ex;
  ibv_poll_cq_attr pa{};
  EXPECT_EQ(ENOENT, ibv_start_poll(cx, &pa)) << "empty CQ";

  Mem remote = Make(srv_.pd, 8192, 0), local = Make(cli_.pd, 8192);
  fill_pattern(local.p(), 8192, 91);
  std::vector<SendSpec> chain = {
      {IBV_WR_RDMA_WRITE, {sge(local.mr, local.p(), 1000)}, IBV_SEND_SIGNALED, 1, remote.a(),
       remote.mr->rkey},
      {IBV_WR_RDMA_READ, {sge(local.mr, local.p() + 4096, 1000)}, IBV_SEND_SIGNALED, 2,
       remote.a(), remote.mr->rkey},
      {IBV_WR_RDMA_WRITE, {sge(local.mr, local.p(), 333)}, IBV_SEND_SIGNALED, 3, remote.a(),
       remote.mr->rkey}};
  ASSERT_EQ(0, post_chain(cli_.qp, chain));
  struct Got {
    uint64_t id;
    ibv_wc_status st;
    ibv_wc_opcode op;
    uint32_t len, qpn;
  };
  std::vector<Got> got;
  auto deadline = Clock::now() + std::chrono::milliseconds(kTimeoutMs);
  while (got.size() < 3 && Clock::now() < deadline) {
    int r = ibv_start_poll(cx, &pa);
    if (r == ENOENT) {
      std::this_thread::yield();
      continue;
    }
    ASSERT_EQ(r, 0);
    do {
      got.push_back({cx->wr_id, cx->status, ibv_wc_read_opcode(cx), ibv_wc_read_byte_len(cx),
                     ibv_wc_read_qp_num(cx)});
    } while (got.size() < 3 && ibv_next_poll(cx) == 0);
    ibv_end_poll(cx);
  }
  ASSERT_EQ(got.size(), 3u);
  for (int i = 0; i < 3; i++) {
    EXPECT_EQ(got[i].id, (uint64_t)i + 1);
    EXPECT_EQ(got[i].st, IBV_WC_SUCCESS);
    EXPECT_EQ(got[i].qpn, cli_.qp->qp_num);
  }
  EXPECT_EQ(got[0].op, IBV_WC_RDMA_WRITE);
  EXPECT_EQ(got[1].op, IBV_WC_RDMA_READ);
  EXPECT_EQ(got[1].len, 1000u);
  EXPECT_EQ(got[2].op, IBV_WC_RDMA_WRITE);
  EXPECT_EQ(0, memcmp(local.p() + 4096, local.p(), 1000));
  EXPECT_EQ(ENOENT, ibv_start_poll(cx, &pa));
}

ECA_INSTANTIATE_BACKENDS(DataPath);

}  // namespace

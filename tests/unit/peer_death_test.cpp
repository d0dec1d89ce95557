// Peer death: the peer process is SIGKILLed in the middle of a large transfer. The survivor's
// QP must reach ERR, flush what is outstanding and report the end of the connection (rdma_cm
// DISCONNECTED, optionally IBV_EVENT_QP_FATAL) within a few seconds, and nothing crashes.
//
// The peer is a child process: fork() happens first thing in the test, before the parent
// creates any verbs/rdma_cm object, and the child immediately exec()s this binary again in a
// "peer role" (selected by the environment, run from a static initializer before gtest's
// main). So the child is a fresh process even if earlier tests of this process started the
// library's progress thread, which does not survive fork().
#include "tests/unit/child_process.hpp"

using namespace ecatest;

namespace {

constexpr size_t kChunk = 1u << 20;
constexpr size_t kTarget = 16u << 20;

// ---------------------------------------------------------------------------------------------
// Child side (plain code, no gtest): exit codes tell the parent what went wrong.

// Active side: connects to the parent and WRITEs into the parent's MR forever.
int child_writer(int in_fd, int out_fd) {
  uint16_t port = 0;
  if (!read_full(in_fd, &port, sizeof port, kTimeoutMs)) return 10;
  rdma_event_channel *ch = rdma_create_event_channel();
  rdma_cm_id *id = nullptr;
  if (!ch || rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP)) return 11;
  sockaddr_in d = loopback_addr(port);
  if (rdma_resolve_addr(id, nullptr, reinterpret_cast<sockaddr *>(&d), 2000) ||
      !wait_cm_event(ch, RDMA_CM_EVENT_ADDR_RESOLVED) || rdma_resolve_route(id, 2000) ||
      !wait_cm_event(ch, RDMA_CM_EVENT_ROUTE_RESOLVED))
    return 12;
  ibv_pd *pd = ibv_alloc_pd(id->verbs);
  ibv_cq *cq = ibv_create_cq(id->verbs, 256, nullptr, nullptr, 0);
  if (!pd || !cq) return 13;
  ibv_qp_init_attr qa{};
  qa.send_cq = qa.recv_cq = cq;
  qa.qp_type = IBV_QPT_RC;
  qa.cap.max_send_wr = 64;
  qa.cap.max_recv_wr = 4;
  qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
  if (rdma_create_qp(id, pd, &qa)) return 14;
  rdma_conn_param cp{};
  cp.initiator_depth = cp.responder_resources = 16;
  if (rdma_connect(id, &cp)) return 15;
  std::vector<uint8_t> pdata;
  if (!wait_cm_event(ch, RDMA_CM_EVENT_ESTABLISHED, kTimeoutMs, nullptr, &pdata)) return 16;
  if (pdata.size() < sizeof(PeerInfo)) return 17;
  PeerInfo pi;
  std::memcpy(&pi, pdata.data(), sizeof pi);
  auto *buf = static_cast<uint8_t *>(std::malloc(kChunk));
  fill_pattern(buf, kChunk, 1);
  ibv_mr *mr = ibv_reg_mr(pd, buf, kChunk, IBV_ACCESS_LOCAL_WRITE);
  if (!mr) return 18;
  int inflight = 0;
  bool started = false;
  uint64_t k = 0;
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    while (inflight < 16) {
      uint64_t off = (k++ % (pi.len / kChunk)) * kChunk;
      if (post(id->qp, {IBV_WR_RDMA_WRITE, {sge(mr, buf, kChunk)}, IBV_SEND_SIGNALED, k,
                        pi.addr + off, pi.rkey}))
        return 19;
      inflight++;
    }
    ibv_wc wc[16];
    int n = ibv_poll_cq(cq, 16, wc);
    for (int i = 0; i < n; i++) {
      if (wc[i].status != IBV_WC_SUCCESS) return 20;
      inflight--;
      if (!started) {
        started = true;
        char s = 'S';
        if (::write(out_fd, &s, 1) != 1) return 21;
      }
    }
  }
  return 22;  // the parent should have killed us long ago
}

// Passive side: accepts the parent's connection, offers an MR to WRITE into, then idles
// (its progress thread keeps receiving) until killed.
int child_server(int /*in_fd*/, int out_fd) {
  return serve_region_until_killed(out_fd, kTarget,
                                   IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, 0);
}

const int kChildRole = run_child_role({{"writer", child_writer}, {"server", child_server}});

// ---------------------------------------------------------------------------------------------
// Parent side

class PeerDeath : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() != process_backend())
      GTEST_SKIP() << "this process runs backend '" << process_backend() << "'";
  }

  // What the survivor must see after the kill: QP in ERR, receives flushed, DISCONNECTED.
  void CheckSurvivor(ibv_qp *qp, ibv_cq *rcq, int nrecv, rdma_event_channel *ch) {
    auto t0 = Clock::now();
    EXPECT_TRUE(wait_qp_state(qp, IBV_QPS_ERR, 5000)) << "survivor QP not in ERR after 5 s";
    auto wcs = poll_n(rcq, (size_t)nrecv, 5000);
    EXPECT_EQ(wcs.size(), (size_t)nrecv) << "posted receives not flushed";
    for (auto &w : wcs) EXPECT_EQ(w.status, IBV_WC_WR_FLUSH_ERR) << wc_status_name(w.status);
    std::vector<rdma_cm_event_type> others;
    EXPECT_TRUE(wait_cm_event(ch, RDMA_CM_EVENT_DISCONNECTED, 5000, nullptr, nullptr, &others))
        << "no RDMA_CM_EVENT_DISCONNECTED";
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
    EXPECT_LT(ms, 6000);
    // Async events: QP_FATAL is expected when the stream was reset; an orderly FIN from
    // the dying process's kernel is a peer close. Either way nothing else may appear.
    ibv_context *ctx = qp->context;
    while (fd_readable(ctx->async_fd, 0)) {
      ibv_async_event ev;
      if (ibv_get_async_event(ctx, &ev)) break;
      if (ev.element.qp == qp) {
        EXPECT_EQ(ev.event_type, IBV_EVENT_QP_FATAL) << ibv_event_type_str(ev.event_type);
        ibv_ack_async_event(&ev);
      }
    }
  }
};

TEST_P(PeerDeath, WriterKilledPassiveSurvivorFlushes) {
  Child child;
  ASSERT_TRUE(child.start("writer"));  // before any verbs/rdma_cm object of this test
  rdma_event_channel *ch = rdma_create_event_channel();
  ASSERT_NE(ch, nullptr);
  rdma_cm_id *lid = nullptr, *id = nullptr;
  ASSERT_EQ(0, rdma_create_id(ch, &lid, nullptr, RDMA_PS_TCP));
  sockaddr_in a = loopback_addr(0);
  ASSERT_EQ(0, rdma_bind_addr(lid, reinterpret_cast<sockaddr *>(&a)));
  ASSERT_EQ(0, rdma_listen(lid, 4));
  uint16_t port = ntohs(rdma_get_src_port(lid));
  ASSERT_EQ((ssize_t)sizeof port, ::write(child.to_child, &port, sizeof port));
  ASSERT_TRUE(wait_cm_event(ch, RDMA_CM_EVENT_CONNECT_REQUEST, kTimeoutMs, &id))
      << "child did not connect: " << child.describe();
  drain_async(id->verbs);
  ibv_pd *pd = ibv_alloc_pd(id->verbs);
  ibv_cq *scq = ibv_create_cq(id->verbs, 64, nullptr, nullptr, 0);
  ibv_cq *rcq = ibv_create_cq(id->verbs, 64, nullptr, nullptr, 0);
  ASSERT_TRUE(pd && scq && rcq);
  ibv_qp_init_attr qa{};
  qa.send_cq = scq;
  qa.recv_cq = rcq;
  qa.qp_type = IBV_QPT_RC;
  qa.cap.max_send_wr = qa.cap.max_recv_wr = 16;
  qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
  ASSERT_EQ(0, rdma_create_qp(id, pd, &qa));
  std::unique_ptr<uint8_t[]> target(new uint8_t[kTarget]);
  ibv_mr *mr = ibv_reg_mr(pd, target.get(), kTarget, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  ASSERT_NE(mr, nullptr);
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(0, post_recv(id->qp, {sge(mr, target.get() + i * 64, 64)}, 900 + i));
  PeerInfo pi{(uint64_t)(uintptr_t)target.get(), mr->rkey, (uint32_t)kTarget};
  rdma_conn_param cp{};
  cp.initiator_depth = cp.responder_resources = 16;
  cp.private_data = &pi;
  cp.private_data_len = sizeof pi;
  ASSERT_EQ(0, rdma_accept(id, &cp));
  ASSERT_TRUE(wait_cm_event(ch, RDMA_CM_EVENT_ESTABLISHED));
  ASSERT_TRUE(child.wait_byte('S', kTimeoutMs)) << "transfer did not start: " << child.describe();

  child.kill9();
  ASSERT_NO_FATAL_FAILURE(CheckSurvivor(id->qp, rcq, 4, ch));
  EXPECT_TRUE(child.reap());
  EXPECT_TRUE(WIFSIGNALED(child.status) && WTERMSIG(child.status) == SIGKILL) << child.describe();

  // The survivor's library still works: tear down and build a new loopback pair? At least
  // the objects go away cleanly.
  rdma_destroy_qp(id);
  EXPECT_EQ(0, ibv_dereg_mr(mr));
  EXPECT_EQ(0, ibv_destroy_cq(scq));
  EXPECT_EQ(0, ibv_destroy_cq(rcq));
  EXPECT_EQ(0, ibv_dealloc_pd(pd));
  while (rdma_cm_event *ev = next_cm_event(ch, 0)) rdma_ack_cm_event(ev);
  EXPECT_EQ(0, rdma_destroy_id(id));
  EXPECT_EQ(0, rdma_destroy_id(lid));
  rdma_destroy_event_channel(ch);
}

TEST_P(PeerDeath, ServerKilledActiveWriterFlushes) {
  Child child;
  ASSERT_TRUE(child.start("server"));  // before any verbs/rdma_cm object of this test
  uint16_t port = 0;
  ASSERT_TRUE(read_full(child.from_child, &port, sizeof port, kTimeoutMs))
      << "child did not listen: " << child.describe();
  rdma_event_channel *ch = rdma_create_event_channel();
  ASSERT_NE(ch, nullptr);
  rdma_cm_id *id = nullptr;
  ASSERT_EQ(0, rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP));
  sockaddr_in d = loopback_addr(port);
  ASSERT_EQ(0, rdma_resolve_addr(id, nullptr, reinterpret_cast<sockaddr *>(&d), 2000));
  ASSERT_TRUE(wait_cm_event(ch, RDMA_CM_EVENT_ADDR_RESOLVED));
  ASSERT_EQ(0, rdma_resolve_route(id, 2000));
  ASSERT_TRUE(wait_cm_event(ch, RDMA_CM_EVENT_ROUTE_RESOLVED));
  drain_async(id->verbs);
  ibv_pd *pd = ibv_alloc_pd(id->verbs);
  ibv_cq *scq = ibv_create_cq(id->verbs, 256, nullptr, nullptr, 0);
  ibv_cq *rcq = ibv_create_cq(id->verbs, 64, nullptr, nullptr, 0);
  ASSERT_TRUE(pd && scq && rcq);
  ibv_qp_init_attr qa{};
  qa.send_cq = scq;
  qa.recv_cq = rcq;
  qa.qp_type = IBV_QPT_RC;
  qa.cap.max_send_wr = 64;
  qa.cap.max_recv_wr = 16;
  qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
  ASSERT_EQ(0, rdma_create_qp(id, pd, &qa));
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kChunk]);
  fill_pattern(buf.get(), kChunk, 2);
  ibv_mr *mr = ibv_reg_mr(pd, buf.get(), kChunk, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(mr, nullptr);
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(0, post_recv(id->qp, {sge(mr, buf.get() + i * 64, 64)}, 800 + i));
  rdma_conn_param cp{};
  cp.initiator_depth = cp.responder_resources = 16;
  ASSERT_EQ(0, rdma_connect(id, &cp));
  std::vector<uint8_t> pdata;
  ASSERT_TRUE(wait_cm_event(ch, RDMA_CM_EVENT_ESTABLISHED, kTimeoutMs, nullptr, &pdata))
      << child.describe();
  ASSERT_GE(pdata.size(), sizeof(PeerInfo));
  PeerInfo pi;
  std::memcpy(&pi, pdata.data(), sizeof pi);
  ASSERT_TRUE(child.wait_byte('S', kTimeoutMs)) << child.describe();

  const int kWrites = 48;
  std::vector<SendSpec> chain;
  for (int i = 0; i < kWrites; i++)
    chain.push_back({IBV_WR_RDMA_WRITE, {sge(mr, buf.get(), kChunk)}, IBV_SEND_SIGNALED,
                     (uint64_t)i, pi.addr + (i % (pi.len / kChunk)) * kChunk, pi.rkey});
  ASSERT_EQ(0, post_chain(id->qp, chain));
  ibv_wc first{};
  ASSERT_TRUE(poll_one(scq, &first)) << "transfer did not start";
  EXPECT_EQ(first.status, IBV_WC_SUCCESS);

  child.kill9();
  // Every WR completes: the ones handed over before the death successfully, the rest with
  // an error (flushed); in posting order. A fast device may have finished all 48 before the
  // kill: keep writing (one WR in flight at a time) until the death surfaces, bounded.
  auto wcs = poll_n(scq, kWrites - 1, 5000);
  EXPECT_EQ(wcs.size(), (size_t)kWrites - 1) << "outstanding WRs not completed after the kill";
  int errors = 0;
  bool seen_error = false;
  for (size_t i = 0; i < wcs.size(); i++) {
    EXPECT_EQ(wcs[i].wr_id, i + 1) << "completion order";
    if (wcs[i].status != IBV_WC_SUCCESS) {
      errors++;
      seen_error = true;
    } else {
      EXPECT_FALSE(seen_error) << "success after an error completion";
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (uint64_t wr = 1000; !errors && std::chrono::steady_clock::now() < deadline; wr++) {
    ibv_wc more = post_and_wait(id->qp, scq, {IBV_WR_RDMA_WRITE, {sge(mr, buf.get(), kChunk)},
                                              IBV_SEND_SIGNALED, wr, pi.addr, pi.rkey});
    if (more.status != IBV_WC_SUCCESS) errors++;
  }
  EXPECT_GT(errors, 0) << "the peer's death never showed as an error completion within 5 s";
  ASSERT_NO_FATAL_FAILURE(CheckSurvivor(id->qp, rcq, 4, ch));
  // Posting after the death: flushed.
  ibv_wc wc = post_and_wait(id->qp, scq, {IBV_WR_RDMA_WRITE, {sge(mr, buf.get(), 8)},
                                          IBV_SEND_SIGNALED, 99, pi.addr, pi.rkey});
  EXPECT_EQ(wc.status, IBV_WC_WR_FLUSH_ERR);
  EXPECT_TRUE(child.reap());
  EXPECT_TRUE(WIFSIGNALED(child.status) && WTERMSIG(child.status) == SIGKILL) << child.describe();

  rdma_destroy_qp(id);
  EXPECT_EQ(0, ibv_dereg_mr(mr));
  EXPECT_EQ(0, ibv_destroy_cq(scq));
  EXPECT_EQ(0, ibv_destroy_cq(rcq));
  EXPECT_EQ(0, ibv_dealloc_pd(pd));
  while (rdma_cm_event *ev = next_cm_event(ch, 0)) rdma_ack_cm_event(ev);
  EXPECT_EQ(0, rdma_destroy_id(id));
  rdma_destroy_event_channel(ch);
}

INSTANTIATE_TEST_SUITE_P(Backends, PeerDeath, ::testing::ValuesIn(backend_params()), backend_name);

}  // namespace

// Lifetimes under concurrency: QPs that share a CQ are reset and reconnected (the same QP is
// reused through conn_param->qp_num) while other threads poll that CQ, arm it and post to the
// QPs. An engine destroyed under a thread that is still inside it (ibv_poll_cq() ->
// poll_progress, ibv_req_notify_cq() -> cq_armed, ibv_post_send() -> doorbell) is a use after
// free: the test process crashes, or AddressSanitizer reports it.
#include "tests/unit/fixture.hpp"

#include <atomic>
#include <random>

#include "provider/core/objects.hpp"

namespace ecatest {
namespace {

constexpr int kQps = 4;
constexpr int kRounds = 8;

struct Pair {
  rdma_cm_id *cid = nullptr;  // client id (its QP is ours, reused)
  rdma_cm_id *sid = nullptr;  // server id (QP through rdma_create_qp)
};

ibv_qp_init_attr rc_attr(ibv_cq *scq, ibv_cq *rcq, uint32_t depth) {
  ibv_qp_init_attr a{};
  a.send_cq = scq;
  a.recv_cq = rcq;
  a.qp_type = IBV_QPT_RC;
  a.cap.max_send_wr = a.cap.max_recv_wr = depth;
  a.cap.max_send_sge = a.cap.max_recv_sge = 1;
  return a;
}

class Lifetime : public EcaTest {
 protected:
  // Connects our QP `qp` through a new client id to the listener at `da`; the server side gets
  // its own QP on `pd` with CQs `scq`/`rcq`. Fatal failure (ASSERT) if any step does not happen.
  void connect_pair(Pair &p, ibv_qp *qp, const sockaddr_in &da, ibv_pd *pd, ibv_cq *scq,
                    ibv_cq *rcq) {
    sockaddr_in dst = da;
    ASSERT_EQ(0, rdma_create_id(cch_, &p.cid, nullptr, RDMA_PS_TCP));
    ASSERT_EQ(0, rdma_resolve_addr(p.cid, nullptr, reinterpret_cast<sockaddr *>(&dst), 2000));
    ASSERT_TRUE(wait_cm_event(cch_, RDMA_CM_EVENT_ADDR_RESOLVED));
    ASSERT_EQ(0, rdma_resolve_route(p.cid, 2000));
    ASSERT_TRUE(wait_cm_event(cch_, RDMA_CM_EVENT_ROUTE_RESOLVED));
    rdma_conn_param cp{};
    cp.qp_num = qp->qp_num;
    cp.initiator_depth = cp.responder_resources = 4;
    ASSERT_EQ(0, rdma_connect(p.cid, &cp));
    ASSERT_TRUE(wait_cm_event(lch_, RDMA_CM_EVENT_CONNECT_REQUEST, kTimeoutMs, &p.sid));
    ibv_qp_init_attr sa = rc_attr(scq, rcq, 16);
    ASSERT_EQ(0, rdma_create_qp(p.sid, pd, &sa));
    rdma_conn_param ap{};
    ap.initiator_depth = ap.responder_resources = 4;
    ASSERT_EQ(0, rdma_accept(p.sid, &ap));
    ASSERT_TRUE(wait_cm_event(lch_, RDMA_CM_EVENT_ESTABLISHED));
    ASSERT_TRUE(wait_cm_event(cch_, RDMA_CM_EVENT_ESTABLISHED));
    ASSERT_EQ(qp_state(qp), IBV_QPS_RTS);
  }
};

TEST_P(Lifetime, ResetAndReuseQpsWhileOthersPollArmAndPost) {
  lch_ = rdma_create_event_channel();
  cch_ = rdma_create_event_channel();
  ASSERT_NE(lch_, nullptr);
  ASSERT_NE(cch_, nullptr);
  ASSERT_EQ(0, rdma_create_id(lch_, &listen_, nullptr, RDMA_PS_TCP));
  sockaddr_in la = loopback_addr(0);
  ASSERT_EQ(0, rdma_bind_addr(listen_, reinterpret_cast<sockaddr *>(&la)));
  ASSERT_EQ(0, rdma_listen(listen_, 16));
  port_ = ntohs(rdma_get_src_port(listen_));

  // Client resources: one context, one CQ shared by every QP's send and receive queue.
  rdma_cm_id *probe = nullptr;
  ASSERT_EQ(0, rdma_create_id(cch_, &probe, nullptr, RDMA_PS_TCP));
  sockaddr_in da = loopback_addr(port_);
  ASSERT_EQ(0, rdma_resolve_addr(probe, nullptr, reinterpret_cast<sockaddr *>(&da), 2000));
  ASSERT_TRUE(wait_cm_event(cch_, RDMA_CM_EVENT_ADDR_RESOLVED));
  ibv_context *ctx = probe->verbs;
  ASSERT_NE(ctx, nullptr);
  ibv_pd *pd = ibv_alloc_pd(ctx);
  ASSERT_NE(pd, nullptr);
  ibv_cq *cq = ibv_create_cq(ctx, 1 << 16, nullptr, nullptr, 0);
  ASSERT_NE(cq, nullptr);
  ibv_cq *scq_srv = ibv_create_cq(ctx, 1 << 16, nullptr, nullptr, 0);
  ibv_cq *rcq_srv = ibv_create_cq(ctx, 1 << 16, nullptr, nullptr, 0);
  ASSERT_TRUE(scq_srv && rcq_srv);
  std::vector<uint8_t> buf(1 << 16, 0x5a);
  ibv_mr *mr = ibv_reg_mr(pd, buf.data(), buf.size(), kAllAccess);
  ASSERT_NE(mr, nullptr);
  std::vector<ibv_qp *> qps(kQps);
  for (auto &q : qps) {
    ibv_qp_init_attr a = rc_attr(cq, cq, 256);
    q = ibv_create_qp(pd, &a);
    ASSERT_NE(q, nullptr);
  }

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> polls{0}, posts{0}, arms{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; i++)
    threads.emplace_back([&] {
      ibv_wc wc[16];
      while (!stop.load(std::memory_order_relaxed)) {
        if (ibv_poll_cq(cq, 16, wc) < 0) ADD_FAILURE() << "ibv_poll_cq failed";
        polls.fetch_add(1, std::memory_order_relaxed);
      }
    });
  threads.emplace_back([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      ibv_req_notify_cq(cq, 0);
      arms.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::yield();
    }
  });
  threads.emplace_back([&] {
    std::mt19937 rng(7);
    while (!stop.load(std::memory_order_relaxed)) {
      ibv_qp *q = qps[rng() % kQps];
      ibv_sge s = sge(mr, buf.data(), 64);
      ibv_recv_wr rw{}, *rbad = nullptr;
      rw.sg_list = &s;
      rw.num_sge = 1;
      (void)ibv_post_recv(q, &rw, &rbad);  // fails in RESET: fine
      SendSpec sp;
      sp.opcode = IBV_WR_RDMA_WRITE;
      sp.sges = {sge(mr, buf.data(), 64)};
      sp.remote_addr = (uint64_t)(uintptr_t)buf.data() + 4096;
      sp.rkey = mr->rkey;
      sp.flags = (rng() & 1) ? IBV_SEND_SIGNALED : 0;
      (void)post(q, sp);  // EINVAL in RESET, ENOMEM when full: fine
      posts.fetch_add(1, std::memory_order_relaxed);
    }
  });

  std::mt19937 rng(11);
  for (int round = 0; round < kRounds && !HasFatalFailure(); round++) {
    std::vector<Pair> pairs(kQps);
    for (int i = 0; i < kQps; i++) {
      connect_pair(pairs[i], qps[i], da, pd, scq_srv, rcq_srv);
      if (HasFatalFailure()) break;  // the threads are stopped and joined below
    }
    if (HasFatalFailure()) break;
    // Each QP's engine hooks into the shared CQ exactly once, however often it reconnected.
    eca::Cq *ecq = eca::Cq::from(cq);
    pthread_rwlock_rdlock(&ecq->hooks_rw.rw);
    const size_t nhooks = ecq->hooks.size();
    pthread_rwlock_unlock(&ecq->hooks_rw.rw);
    EXPECT_EQ(nhooks, (size_t)kQps) << "round " << round;
    // Let the others run against the live engines, then reset the QPs one by one.
    const uint64_t p0 = polls.load();
    auto deadline = Clock::now() + std::chrono::milliseconds(kTimeoutMs);
    while (polls.load() < p0 + 200 && Clock::now() < deadline) std::this_thread::yield();
    for (int i = 0; i < kQps; i++) {
      for (unsigned spin = rng() % 20000; spin; spin--) asm volatile("" ::: "memory");
      ibv_qp_attr at{};
      at.qp_state = IBV_QPS_RESET;
      EXPECT_EQ(0, ibv_modify_qp(qps[i], &at, IBV_QP_STATE));
      EXPECT_EQ(qp_state(qps[i]), IBV_QPS_RESET);
    }
    for (Pair &p : pairs) {
      rdma_destroy_qp(p.sid);
      rdma_destroy_id(p.sid);
      rdma_destroy_id(p.cid);
    }
    drain_async(ctx);
  }
  stop = true;
  for (auto &t : threads) t.join();
  EXPECT_GT(polls.load(), 0u);
  EXPECT_GT(posts.load(), 0u);
  EXPECT_GT(arms.load(), 0u);
  for (auto q : qps) EXPECT_EQ(0, ibv_destroy_qp(q));
  EXPECT_EQ(0, ibv_dereg_mr(mr));
  EXPECT_EQ(0, ibv_destroy_cq(cq));
  EXPECT_EQ(0, ibv_destroy_cq(scq_srv));
  EXPECT_EQ(0, ibv_destroy_cq(rcq_srv));
  EXPECT_EQ(0, ibv_dealloc_pd(pd));
  rdma_destroy_id(probe);
}

// A QP the application resets and connects again through a new id belongs to the new
// connection: destroying (or disconnecting) the id of its earlier connection must leave it alone
// (no ERR, no flushes, and the new id still hears when its connection ends).
TEST_P(Lifetime, EarlierIdOfAResetQpDoesNotTouchItsNewConnection) {
  lch_ = rdma_create_event_channel();
  cch_ = rdma_create_event_channel();
  ASSERT_TRUE(lch_ && cch_);
  ASSERT_EQ(0, rdma_create_id(lch_, &listen_, nullptr, RDMA_PS_TCP));
  sockaddr_in la = loopback_addr(0);
  ASSERT_EQ(0, rdma_bind_addr(listen_, reinterpret_cast<sockaddr *>(&la)));
  ASSERT_EQ(0, rdma_listen(listen_, 4));
  sockaddr_in da = loopback_addr(ntohs(rdma_get_src_port(listen_)));

  rdma_cm_id *probe = nullptr;
  ASSERT_EQ(0, rdma_create_id(cch_, &probe, nullptr, RDMA_PS_TCP));
  ASSERT_EQ(0, rdma_resolve_addr(probe, nullptr, reinterpret_cast<sockaddr *>(&da), 2000));
  ASSERT_TRUE(wait_cm_event(cch_, RDMA_CM_EVENT_ADDR_RESOLVED));
  ibv_context *ctx = probe->verbs;
  ibv_pd *pd = ibv_alloc_pd(ctx);
  ibv_cq *cq = ibv_create_cq(ctx, 64, nullptr, nullptr, 0);
  ibv_cq *scq = ibv_create_cq(ctx, 64, nullptr, nullptr, 0);
  ASSERT_TRUE(pd && cq && scq);
  std::vector<uint8_t> buf(8192, 0x11);
  ibv_mr *mr = ibv_reg_mr(pd, buf.data(), buf.size(), kAllAccess);
  ASSERT_NE(mr, nullptr);
  ibv_qp_init_attr qa = rc_attr(cq, cq, 16);
  ibv_qp *qp = ibv_create_qp(pd, &qa);
  ASSERT_NE(qp, nullptr);

  auto write_completes = [&](uint64_t id) {
    SendSpec sp;
    sp.opcode = IBV_WR_RDMA_WRITE;
    sp.sges = {sge(mr, buf.data(), 64)};
    sp.remote_addr = (uint64_t)(uintptr_t)buf.data() + 4096;
    sp.rkey = mr->rkey;
    sp.flags = IBV_SEND_SIGNALED;
    sp.wr_id = id;
    ASSERT_EQ(0, post(qp, sp));
    ibv_wc wc{};
    ASSERT_TRUE(poll_one(cq, &wc));
    EXPECT_EQ(wc.wr_id, id);
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << ibv_wc_status_str(wc.status);
  };

  Pair first, second;
  connect_pair(first, qp, da, pd, scq, scq);
  ASSERT_FALSE(HasFatalFailure());
  write_completes(1);
  ibv_qp_attr at{};
  at.qp_state = IBV_QPS_RESET;
  ASSERT_EQ(0, ibv_modify_qp(qp, &at, IBV_QP_STATE));
  connect_pair(second, qp, da, pd, scq, scq);
  ASSERT_FALSE(HasFatalFailure());

  // The earlier connection's ids go: the client's first (it named the QP), then the server's.
  // rdma_disconnect on the earlier id ends that (already gone) connection only.
  EXPECT_EQ(0, rdma_disconnect(first.cid));
  rdma_cm_id *who = nullptr;
  EXPECT_TRUE(wait_cm_event(cch_, RDMA_CM_EVENT_DISCONNECTED, kTimeoutMs, &who));
  EXPECT_EQ(who, first.cid);
  EXPECT_EQ(qp_state(qp), IBV_QPS_RTS);
  rdma_destroy_id(first.cid);
  rdma_destroy_qp(first.sid);
  rdma_destroy_id(first.sid);
  EXPECT_EQ(qp_state(qp), IBV_QPS_RTS);
  EXPECT_TRUE(cq_empty(cq)) << "nothing flushed";
  write_completes(2);

  // The new connection still ends as one: the server disconnects, the client's new id hears it.
  ASSERT_EQ(0, rdma_disconnect(second.sid));
  who = nullptr;
  EXPECT_TRUE(wait_cm_event(cch_, RDMA_CM_EVENT_DISCONNECTED, kTimeoutMs, &who));
  EXPECT_EQ(who, second.cid);
  EXPECT_TRUE(wait_qp_state(qp, IBV_QPS_ERR));

  rdma_destroy_id(second.cid);
  rdma_destroy_qp(second.sid);
  rdma_destroy_id(second.sid);
  drain_async(ctx);
  EXPECT_EQ(0, ibv_destroy_qp(qp));
  EXPECT_EQ(0, ibv_dereg_mr(mr));
  EXPECT_EQ(0, ibv_destroy_cq(cq));
  EXPECT_EQ(0, ibv_destroy_cq(scq));
  EXPECT_EQ(0, ibv_dealloc_pd(pd));
  rdma_destroy_id(probe);
}

INSTANTIATE_TEST_SUITE_P(Backends, Lifetime, ::testing::ValuesIn(backend_params()),
                         backend_name);

}  // namespace
}  // namespace ecatest

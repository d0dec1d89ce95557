// rdma_cm under many connections: the listen backlog bounds pending connection requests
// (MPA reject beyond it), and thousands of ids get their local ports without the kernel's
// bind(port 0) scan (which made 16384 QPs between two processes never finish connecting).
// Every wait is bounded; a resource limit shows as an error event or errno, never a hang.
#include "tests/unit/fixture.hpp"

#include <sys/resource.h>

#include <set>

using namespace ecatest;

namespace {

class CmLimits : public EcaTest {
 protected:
  // Raises the descriptor limit to at least `n` (root may raise the hard limit too).
  static bool EnsureFds(rlim_t n) {
    rlimit r{};
    if (getrlimit(RLIMIT_NOFILE, &r)) return false;
    if (r.rlim_cur >= n) return true;
    r.rlim_cur = n;
    if (r.rlim_max < n) r.rlim_max = n;
    return setrlimit(RLIMIT_NOFILE, &r) == 0;
  }

  // A listener on 127.0.0.1 (any port) on its own channel *lch, and a channel *cch for clients.
  static void Listen(int backlog, rdma_event_channel **lch, rdma_event_channel **cch,
                     rdma_cm_id **lid) {
    *lch = rdma_create_event_channel();
    *cch = rdma_create_event_channel();
    ASSERT_TRUE(*lch && *cch);
    ASSERT_EQ(0, rdma_create_id(*lch, lid, nullptr, RDMA_PS_TCP));
    sockaddr_in a = loopback_addr(0);
    ASSERT_EQ(0, rdma_bind_addr(*lid, reinterpret_cast<sockaddr *>(&a)));
    ASSERT_EQ(0, rdma_listen(*lid, backlog));
  }

  // An id on `ch` resolved (address and route) to 127.0.0.1:port; null on failure.
  static rdma_cm_id *Resolved(rdma_event_channel *ch, uint16_t port) {
    rdma_cm_id *id = nullptr;
    if (rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP)) return nullptr;
    sockaddr_in d = loopback_addr(port);
    if (rdma_resolve_addr(id, nullptr, reinterpret_cast<sockaddr *>(&d), 2000) ||
        !wait_cm_event(ch, RDMA_CM_EVENT_ADDR_RESOLVED) || rdma_resolve_route(id, 2000) ||
        !wait_cm_event(ch, RDMA_CM_EVENT_ROUTE_RESOLVED)) {
      rdma_destroy_id(id);
      return nullptr;
    }
    return id;
  }
};

// Requests beyond the backlog that the application has not taken yet are refused with an
// MPA reject: the active side sees REJECTED at once instead of waiting. Once the
// application takes the queued requests, new ones are queued again.
TEST_P(CmLimits, BacklogRejectsBeyondPendingRequests) {
  constexpr int kBacklog = 3, kTries = 8;
  rdma_event_channel *lch = nullptr, *cch = nullptr;
  rdma_cm_id *lid = nullptr;
  ASSERT_NO_FATAL_FAILURE(Listen(kBacklog, &lch, &cch, &lid));
  const uint16_t port = ntohs(rdma_get_src_port(lid));
  std::vector<rdma_cm_id *> ids;
  for (int i = 0; i < kTries; i++) {  // all resolved first: waiting discards other events
    rdma_cm_id *id = Resolved(cch, port);
    ASSERT_NE(id, nullptr);
    ids.push_back(id);
  }
  for (rdma_cm_id *id : ids) {
    rdma_conn_param cp{};
    ASSERT_EQ(0, rdma_connect(id, &cp)) << strerror(errno);
  }
  // Nobody reads lch: exactly kBacklog requests wait there, the rest are rejected.
  int rejected = 0;
  auto deadline = Clock::now() + std::chrono::milliseconds(kTimeoutMs);
  while (rejected < kTries - kBacklog) {
    rdma_cm_event *ev = next_cm_event(cch, ms_left(deadline));
    ASSERT_NE(ev, nullptr) << "only " << rejected << " of " << kTries - kBacklog
                           << " requests beyond the backlog were rejected";
    EXPECT_EQ(ev->event, RDMA_CM_EVENT_REJECTED) << rdma_event_str(ev->event);
    if (ev->event == RDMA_CM_EVENT_REJECTED) {
      EXPECT_EQ(ev->status, -ECONNREFUSED);
      rejected++;
    }
    rdma_ack_cm_event(ev);
  }
  std::vector<rdma_cm_id *> reqs;
  for (int i = 0; i < kBacklog; i++) {
    rdma_cm_id *r = nullptr;
    ASSERT_TRUE(wait_cm_event(lch, RDMA_CM_EVENT_CONNECT_REQUEST, kTimeoutMs, &r)) << i;
    reqs.push_back(r);
  }
  EXPECT_EQ(nullptr, next_cm_event(lch, 0)) << "more requests queued than the backlog";
  // Taken by the application: the backlog has room again.
  rdma_cm_id *late = Resolved(cch, port);
  ASSERT_NE(late, nullptr);
  rdma_conn_param cp{};
  ASSERT_EQ(0, rdma_connect(late, &cp));
  rdma_cm_id *r = nullptr;
  EXPECT_TRUE(wait_cm_event(lch, RDMA_CM_EVENT_CONNECT_REQUEST, kTimeoutMs, &r))
      << "a request within the backlog was not delivered";
  if (r) reqs.push_back(r);
  for (rdma_cm_id *q : reqs) {
    EXPECT_EQ(0, rdma_reject(q, nullptr, 0));
    EXPECT_EQ(0, rdma_destroy_id(q));
  }
  for (int i = 0; i < kBacklog + 1; i++)
    EXPECT_TRUE(wait_cm_event(cch, RDMA_CM_EVENT_REJECTED)) << "reject " << i << " not seen";
  ids.push_back(late);
  for (rdma_cm_id *id : ids) EXPECT_EQ(0, rdma_destroy_id(id));
  EXPECT_EQ(0, rdma_destroy_id(lid));
  rdma_destroy_event_channel(cch);
  rdma_destroy_event_channel(lch);
}

// 16384 ids each get a local port at rdma_resolve_addr, quickly and all distinct. With the
// kernel choosing (bind to port 0), every bind past ~14000 scanned the whole range: the
// last few thousand took minutes, and 16384 QPs between two processes never connected.
TEST_P(CmLimits, SixteenThousandIdsResolveWithinBound) {
  constexpr int kIds = 16384;
  ASSERT_TRUE(EnsureFds(kIds + 1024)) << "cannot raise RLIMIT_NOFILE: " << strerror(errno);
  rdma_event_channel *ch = rdma_create_event_channel();
  ASSERT_NE(ch, nullptr);
  // Any port: the ids only resolve; nothing connects.
  sockaddr_in d = loopback_addr(9);
  std::vector<rdma_cm_id *> ids(kIds, nullptr);
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  int made = 0, failed = 0, resolved = 0;
  std::set<uint16_t> ports;
  for (; made < kIds && Clock::now() < deadline; made++) {
    ASSERT_EQ(0, rdma_create_id(ch, &ids[made], nullptr, RDMA_PS_TCP));
    if (rdma_resolve_addr(ids[made], nullptr, reinterpret_cast<sockaddr *>(&d), 2000)) failed++;
    // Drain as we go, so the channel never holds thousands of events.
    while (rdma_cm_event *ev = next_cm_event(ch, 0)) {
      if (ev->event == RDMA_CM_EVENT_ADDR_RESOLVED) {
        resolved++;
        ports.insert(ntohs(rdma_get_src_port(ev->id)));
      }
      rdma_ack_cm_event(ev);
    }
  }
  while (resolved + failed < made) {
    rdma_cm_event *ev = next_cm_event(ch, ms_left(deadline));
    if (!ev) break;
    if (ev->event == RDMA_CM_EVENT_ADDR_RESOLVED) {
      resolved++;
      ports.insert(ntohs(rdma_get_src_port(ev->id)));
    }
    rdma_ack_cm_event(ev);
  }
  EXPECT_EQ(made, kIds) << "only " << made << " ids resolved within 30 s";
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(resolved, made);
  EXPECT_EQ(ports.size(), (size_t)resolved) << "two ids share a local port";
  EXPECT_EQ(ports.count(0), 0u);
  for (int i = 0; i < made; i++) EXPECT_EQ(0, rdma_destroy_id(ids[i]));
  rdma_destroy_event_channel(ch);
}

// Many connections in one go, the application keeping up: none is refused, all establish.
TEST_P(CmLimits, ThousandConnectionsEstablish) {
  constexpr int kConns = 1000;
  ASSERT_TRUE(EnsureFds(4 * kConns + 1024));
  rdma_event_channel *lch = nullptr, *cch = nullptr;
  rdma_cm_id *lid = nullptr;
  ASSERT_NO_FATAL_FAILURE(Listen(0, &lch, &cch, &lid));  // 0: the maximum (1024)
  sockaddr_in d = loopback_addr(ntohs(rdma_get_src_port(lid)));
  std::vector<rdma_cm_id *> ids(kConns, nullptr), srv;
  for (auto &id : ids) {
    ASSERT_EQ(0, rdma_create_id(cch, &id, nullptr, RDMA_PS_TCP));
    ASSERT_EQ(0, rdma_resolve_addr(id, nullptr, reinterpret_cast<sockaddr *>(&d), 2000));
  }
  const auto deadline = Clock::now() + std::chrono::seconds(90);
  int cli_est = 0, srv_est = 0, errors = 0;
  ibv_pd *pd = nullptr;
  ibv_cq *cq = nullptr;
  auto make_qp = [&](rdma_cm_id *id) {
    if (!pd) {
      pd = ibv_alloc_pd(id->verbs);
      cq = ibv_create_cq(id->verbs, 64, nullptr, nullptr, 0);
    }
    ibv_qp_init_attr qa{};
    qa.send_cq = qa.recv_cq = cq;
    qa.qp_type = IBV_QPT_RC;
    qa.cap.max_send_wr = qa.cap.max_recv_wr = 1;
    qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
    return pd && cq && rdma_create_qp(id, pd, &qa) == 0;
  };
  while ((cli_est + errors < kConns || srv_est < cli_est) && Clock::now() < deadline) {
    for (rdma_event_channel *ch : {cch, lch}) {
      while (rdma_cm_event *ev = next_cm_event(ch, 0)) {
        rdma_cm_id *id = ev->id;
        const rdma_cm_event_type t = ev->event;
        rdma_ack_cm_event(ev);
        rdma_conn_param cp{};
        switch (t) {
          case RDMA_CM_EVENT_ADDR_RESOLVED:
            if (rdma_resolve_route(id, 2000)) {
              ADD_FAILURE() << "rdma_resolve_route: " << strerror(errno);
              errors++;
            }
            break;
          case RDMA_CM_EVENT_ROUTE_RESOLVED:
            if (!make_qp(id) || rdma_connect(id, &cp)) {
              ADD_FAILURE() << "rdma_connect: " << strerror(errno);
              errors++;
            }
            break;
          case RDMA_CM_EVENT_CONNECT_REQUEST:
            srv.push_back(id);
            if (!make_qp(id) || rdma_accept(id, &cp)) {
              ADD_FAILURE() << "rdma_accept: " << strerror(errno);
              errors++;
            }
            break;
          case RDMA_CM_EVENT_CONNECT_RESPONSE:  // no QP on the active side
            if (rdma_establish(id)) errors++;
            else cli_est++;
            break;
          case RDMA_CM_EVENT_ESTABLISHED:
            (ch == cch ? cli_est : srv_est)++;
            break;
          default:
            ADD_FAILURE() << rdma_event_str(t);
            errors++;
        }
      }
    }
    fd_readable(cch->fd, 5);
  }
  EXPECT_EQ(errors, 0);
  EXPECT_EQ(cli_est, kConns) << "connections established within 90 s (active side)";
  EXPECT_EQ(srv_est, kConns) << "passive side";
  for (rdma_cm_id *id : srv) {
    rdma_destroy_qp(id);
    rdma_destroy_id(id);
  }
  for (rdma_cm_id *id : ids) {
    if (id->qp) rdma_destroy_qp(id);
    rdma_destroy_id(id);
  }
  if (cq) {
    EXPECT_EQ(0, ibv_destroy_cq(cq));
  }
  if (pd) {
    EXPECT_EQ(0, ibv_dealloc_pd(pd));
  }
  EXPECT_EQ(0, rdma_destroy_id(lid));
  rdma_destroy_event_channel(cch);
  rdma_destroy_event_channel(lch);
}

}  // namespace

ECA_INSTANTIATE_BACKENDS(CmLimits);

// ibv_dereg_mr while the software transport still has to place into the memory: an RDMA READ
// whose response arrives after its sink was deregistered. Nothing may land in the sink after
// ibv_dereg_mr returned; the READ completes with IBV_WC_LOC_PROT_ERR (the local SGE is no
// longer valid), what was posted behind it flushes, and the QP ends in ERR.
//
// The responder is a child process (tests/unit/child_process.hpp) stopped with SIGSTOP while
// the READ Request is on its way, so the response cannot start before the deregistration: the
// order is made by the test, not by timing. That the request arrived is read from the
// kernel's receive queue of the responder's socket (/proc/net/tcp).
#include <signal.h>

#include <fstream>

#include "tests/unit/child_process.hpp"

using namespace ecatest;

namespace {

constexpr size_t kSrcLen = 8u << 20;

// Child: offers kSrcLen bytes of pattern for RDMA READ and idles until killed.
int child_read_source(int /*in_fd*/, int out_fd) {
  return serve_region_until_killed(out_fd, kSrcLen, IBV_ACCESS_REMOTE_READ, 7);
}

const int kChildRole = run_child_role({{"read_source", child_read_source}});

// Bytes waiting in the receive queue of the established IPv4 socket whose local port is
// `port` (the responder's side of the connection); -1 if there is none.
long rx_queue_of(uint16_t port) {
  std::ifstream f("/proc/net/tcp");
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    unsigned sl, lport, rport, st;
    unsigned long laddr, raddr, txq, rxq;
    if (std::sscanf(line.c_str(), " %u: %lx:%x %lx:%x %x %lx:%lx", &sl, &laddr, &lport, &raddr,
                    &rport, &st, &txq, &rxq) != 8)
      continue;
    if (lport == port && st == 0x01) return (long)rxq;
  }
  return -1;
}

// Bounded wait for the child to be stopped (SIGSTOP) or continued (SIGCONT).
bool wait_stopped(pid_t pid) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(kTimeoutMs);
  while (Clock::now() < deadline) {
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG | WUNTRACED) == pid && WIFSTOPPED(st)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

class DeregInflight : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() != process_backend())
      GTEST_SKIP() << "this process runs backend '" << process_backend() << "'";
    if (GetParam() != "software")
      GTEST_SKIP() << "the modeled adapter has no TCP stream to hold a READ Request in";
  }
};

TEST_P(DeregInflight, ReadSinkDeregisteredBeforeResponse) {
  Child child;
  ASSERT_TRUE(child.start("read_source"));  // before any verbs/rdma_cm object of this test
  uint16_t port = 0;
  ASSERT_TRUE(read_full(child.from_child, &port, sizeof port, kTimeoutMs))
      << "child did not listen: " << child.describe();
  rdma_event_channel *ch = nullptr;
  rdma_cm_id *id = nullptr;
  ASSERT_TRUE(resolve_loopback(port, &ch, &id));
  ibv_pd *pd = nullptr;
  ibv_cq *cq = nullptr;
  ASSERT_TRUE(make_rc_qp(id, 16, &pd, &cq));
  rdma_conn_param cp{};
  cp.initiator_depth = cp.responder_resources = 16;
  ASSERT_EQ(0, rdma_connect(id, &cp));
  std::vector<uint8_t> pdata;
  ASSERT_TRUE(wait_cm_event(ch, RDMA_CM_EVENT_ESTABLISHED, kTimeoutMs, nullptr, &pdata));
  ASSERT_GE(pdata.size(), sizeof(PeerInfo));
  PeerInfo pi;
  std::memcpy(&pi, pdata.data(), sizeof pi);
  ASSERT_TRUE(child.wait_byte('S', kTimeoutMs)) << "child not ready: " << child.describe();

  // The sink, and a second READ's sink that stays registered (it must flush).
  void *m = ::mmap(nullptr, kSrcLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  auto *sink = static_cast<uint8_t *>(m);
  ibv_mr *smr = ibv_reg_mr(pd, sink, kSrcLen, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(smr, nullptr);
  std::vector<uint8_t> other(4096);
  ibv_mr *omr = ibv_reg_mr(pd, other.data(), other.size(), IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(omr, nullptr);

  ASSERT_EQ(0, ::kill(child.pid, SIGSTOP));
  ASSERT_TRUE(wait_stopped(child.pid));
  const long q0 = rx_queue_of(port);
  ASSERT_GE(q0, 0) << "the responder's socket is not in /proc/net/tcp";
  ASSERT_EQ(0, post(id->qp, {IBV_WR_RDMA_READ, {sge(smr, sink, kSrcLen)}, IBV_SEND_SIGNALED, 1,
                             pi.addr, pi.rkey}));
  ASSERT_EQ(0, post(id->qp, {IBV_WR_RDMA_READ, {sge(omr, other.data(), 4096)}, IBV_SEND_SIGNALED,
                             2, pi.addr, pi.rkey}));
  // The READ Request reached the stopped responder: its response is still to come.
  const auto deadline = Clock::now() + std::chrono::milliseconds(kTimeoutMs);
  while (rx_queue_of(port) <= q0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_GT(rx_queue_of(port), q0) << "the READ Request never reached the responder";

  ASSERT_EQ(0, ibv_dereg_mr(smr));
  std::memset(sink, 0xdd, kSrcLen);
  ASSERT_EQ(0, ::kill(child.pid, SIGCONT));

  auto wcs = poll_n(cq, 2);
  ASSERT_EQ(wcs.size(), 2u) << "the READs did not complete";
  EXPECT_EQ(wcs[0].wr_id, 1u);
  EXPECT_EQ(wcs[0].status, IBV_WC_LOC_PROT_ERR) << wc_status_name(wcs[0].status);
  EXPECT_EQ(wcs[1].wr_id, 2u);
  EXPECT_EQ(wcs[1].status, IBV_WC_WR_FLUSH_ERR) << wc_status_name(wcs[1].status);
  EXPECT_TRUE(wait_qp_state(id->qp, IBV_QPS_ERR));
  size_t changed = 0;
  for (size_t i = 0; i < kSrcLen; i++) changed += sink[i] != 0xdd;
  EXPECT_EQ(changed, 0u) << "bytes placed after ibv_dereg_mr returned";

  child.kill9();
  EXPECT_TRUE(child.reap());
  rdma_destroy_qp(id);
  EXPECT_EQ(0, ibv_dereg_mr(omr));
  EXPECT_EQ(0, ibv_destroy_cq(cq));
  EXPECT_EQ(0, ibv_dealloc_pd(pd));
  while (rdma_cm_event *ev = next_cm_event(ch, 0)) rdma_ack_cm_event(ev);
  EXPECT_EQ(0, rdma_destroy_id(id));
  rdma_destroy_event_channel(ch);
  ::munmap(sink, kSrcLen);
}

INSTANTIATE_TEST_SUITE_P(Backends, DeregInflight, ::testing::ValuesIn(backend_params()),
                         backend_name);

}  // namespace

// Adapter-level behaviour over both backends: interrupt moderation of completion events, and
// the privacy and life cycle of the memory the modeled adapter shares between processes.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "tests/unit/fixture.hpp"

namespace {

using namespace ecatest;

class Adapter : public EcaTest {};

// With IBV_CQ_ATTR_MODERATE {count 4, period 0}, an armed CQ raises its completion event on
// the fourth completion, not on the first three.
TEST_P(Adapter, CompletionEventModeratedByCount) {
  ConnOpts o;
  o.comp_channel = true;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  ibv_modify_cq_attr bad{};
  bad.attr_mask = 1u << 7;  // unknown attribute
  EXPECT_EQ(EINVAL, ibv_modify_cq(srv_.rcq, &bad));
  ibv_modify_cq_attr mod{};
  mod.attr_mask = IBV_CQ_ATTR_MODERATE;
  mod.moderate.cq_count = 4;
  mod.moderate.cq_period = 0;
  ASSERT_EQ(0, ibv_modify_cq(srv_.rcq, &mod));

  uint8_t *src = Alloc(64, 0x3c);
  uint8_t *dst = Alloc(4 * 64, 0);
  ibv_mr *smr = Reg(cli_.pd, src, 64, IBV_ACCESS_LOCAL_WRITE);
  ibv_mr *dmr = Reg(srv_.pd, dst, 4 * 64, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_TRUE(smr && dmr);
  for (uint64_t i = 0; i < 4; i++)
    ASSERT_EQ(0, post_recv(srv_.qp, {sge(dmr, dst + i * 64, 64)}, 10 + i));
  ASSERT_EQ(0, ibv_req_notify_cq(srv_.rcq, 0));

  // Three completions: consumed by polling, yet no event.
  ibv_wc wc{};
  for (uint64_t i = 0; i < 3; i++) {
    ASSERT_EQ(0, post(cli_.qp, {IBV_WR_SEND, {sge(smr, src, 64)}, IBV_SEND_SIGNALED, i}));
    ASSERT_TRUE(poll_one(srv_.rcq, &wc)) << "receive " << i;
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
    ASSERT_TRUE(poll_one(cli_.scq, &wc)) << "send " << i;
  }
  EXPECT_FALSE(fd_readable(srv_.cc->fd, 100)) << "event before the moderation count was reached";

  // The fourth raises it.
  ASSERT_EQ(0, post(cli_.qp, {IBV_WR_SEND, {sge(smr, src, 64)}, IBV_SEND_SIGNALED, 3}));
  ASSERT_TRUE(fd_readable(srv_.cc->fd, kTimeoutMs)) << "no event after four completions";
  ibv_cq *ev_cq = nullptr;
  void *ev_ctx = nullptr;
  ASSERT_EQ(0, ibv_get_cq_event(srv_.cc, &ev_cq, &ev_ctx));
  EXPECT_EQ(ev_cq, srv_.rcq);
  ibv_ack_cq_events(ev_cq, 1);
  ASSERT_TRUE(poll_one(srv_.rcq, &wc));
  EXPECT_EQ(wc.wr_id, 13u);
  ASSERT_TRUE(poll_one(cli_.scq, &wc));
}

// Memory shared between processes is private to the user and leaves nothing behind: the
// modeled adapter uses memfds (mode 0600, gone with the last mapping), never /dev/shm files;
// the software backend shares no memory at all.
TEST_P(Adapter, SharedMemoryIsPrivateAndAnonymous) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  uint8_t *buf = Alloc(1 << 16, 0x5a);
  uint8_t *dst = Alloc(1 << 16, 0);
  ibv_mr *smr = Reg(cli_.pd, buf, 1 << 16, IBV_ACCESS_LOCAL_WRITE);
  ibv_mr *dmr = Reg(srv_.pd, dst, 1 << 16,
                    IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
  ASSERT_TRUE(smr && dmr);
  ibv_wc wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_RDMA_WRITE, {sge(smr, buf, 1 << 16)},
                                                IBV_SEND_SIGNALED, 1,
                                                (uint64_t)(uintptr_t)dst, dmr->rkey});
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  // A WRITE's completion need not mean it is placed (the software backend completes it when
  // handed to TCP); a READ behind it is answered only after the WRITE is placed.
  uint8_t *back = Alloc(64, 0);
  ibv_mr *bmr = Reg(cli_.pd, back, 64, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(bmr, nullptr);
  wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_RDMA_READ, {sge(bmr, back, 64)}, IBV_SEND_SIGNALED,
                                         2, (uint64_t)(uintptr_t)(dst + (1 << 16) - 64),
                                         dmr->rkey});
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  EXPECT_EQ(0, memcmp(buf, dst, 1 << 16));
  EXPECT_EQ(0, memcmp(back, buf + (1 << 16) - 64, 64));

  int eca_memfds = 0;
  DIR *d = opendir("/proc/self/fd");
  ASSERT_NE(d, nullptr);
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char path[300], target[256] = {};
    std::snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0 || std::strncmp(target, "/memfd:eca-", 11) != 0) continue;
    struct stat st {};
    ASSERT_EQ(0, fstat(std::atoi(e->d_name), &st)) << target;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << target << " is not private to the user";
    eca_memfds++;
  }
  closedir(d);
  if (GetParam() == "hwmodel")
    EXPECT_GE(eca_memfds, 2) << "adapter memory and link memory expected";
  else
    EXPECT_EQ(eca_memfds, 0) << "the software backend shares no memory";

  DIR *shm = opendir("/dev/shm");
  if (shm) {  // a named segment would outlive a crashed process: there must be none
    while (dirent *e = readdir(shm))
      EXPECT_NE(std::strncmp(e->d_name, "eca", 3), 0) << "/dev/shm/" << e->d_name;
    closedir(shm);
  }
}

// A connection whose ORD is 0 (initiator depth 0) allows no RDMA READ: the READ fails with a
// local QP operation error, the work behind it flushes and the QP goes to ERROR.
TEST_P(Adapter, ReadWithOrdZeroIsALocalError) {
  ConnOpts o;
  o.initiator_depth = 0;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  uint8_t *local = Alloc(4096, 0);
  uint8_t *remote = Alloc(4096, 0x77);
  ibv_mr *lmr = Reg(cli_.pd, local, 4096, IBV_ACCESS_LOCAL_WRITE);
  ibv_mr *rmr = Reg(srv_.pd, remote, 4096, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ |
                                               IBV_ACCESS_REMOTE_WRITE);
  ASSERT_TRUE(lmr && rmr);
  std::vector<SendSpec> chain = {
      {IBV_WR_RDMA_READ, {sge(lmr, local, 64)}, IBV_SEND_SIGNALED, 1,
       (uint64_t)(uintptr_t)remote, rmr->rkey},
      {IBV_WR_RDMA_WRITE, {sge(lmr, local, 64)}, IBV_SEND_SIGNALED, 2,
       (uint64_t)(uintptr_t)remote, rmr->rkey}};
  ASSERT_EQ(0, post_chain(cli_.qp, chain));
  auto wcs = poll_n(cli_.scq, 2);
  ASSERT_EQ(wcs.size(), 2u);
  EXPECT_EQ(wcs[0].wr_id, 1u);
  EXPECT_EQ(wcs[0].status, IBV_WC_LOC_QP_OP_ERR) << wc_status_name(wcs[0].status);
  EXPECT_EQ(wcs[1].wr_id, 2u);
  EXPECT_EQ(wcs[1].status, IBV_WC_WR_FLUSH_ERR) << wc_status_name(wcs[1].status);
  EXPECT_TRUE(wait_qp_state(cli_.qp, IBV_QPS_ERR));
  EXPECT_EQ(local[0], 0) << "data was read despite ORD 0";
  EXPECT_EQ(remote[0], 0x77) << "the WRITE behind the failed READ was executed";
}

ECA_INSTANTIATE_BACKENDS(Adapter);

}  // namespace

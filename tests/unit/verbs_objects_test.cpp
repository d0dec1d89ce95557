// Verbs objects through the public libibverbs API: devices, contexts, PDs, MRs, CQs,
// completion channels, QPs (creation checks, state machine, posting in wrong states) and SRQs.
#include "tests/unit/fixture.hpp"

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <set>

using namespace ecatest;

namespace {

// An opened context of the loopback device of this backend (no rdma_cm involved).
struct OpenDev {
  ibv_device **list = nullptr;
  ibv_context *ctx = nullptr;
  std::string name;
  explicit OpenDev(const std::string &backend) {
    int n = 0;
    list = ibv_get_device_list(&n);
    if (!list) return;
    std::string want = std::string(device_prefix(backend)) + "_lo";
    for (int i = 0; i < n; i++)
      if (want == ibv_get_device_name(list[i])) {
        ctx = ibv_open_device(list[i]);
        name = want;
      }
  }
  ~OpenDev() {
    if (ctx) ibv_close_device(ctx);
    if (list) ibv_free_device_list(list);
  }
};

class VerbsObjects : public EcaTest {};

ibv_qp_init_attr rc_attr(ibv_cq *cq) {
  ibv_qp_init_attr a{};
  a.send_cq = cq;
  a.recv_cq = cq;
  a.qp_type = IBV_QPT_RC;
  a.cap.max_send_wr = 16;
  a.cap.max_recv_wr = 16;
  a.cap.max_send_sge = 1;
  a.cap.max_recv_sge = 1;
  return a;
}

// ---------------------------------------------------------------------------------------------

TEST_P(VerbsObjects, DeviceListHasLoopbackDevice) {
  int n = -1;
  ibv_device **list = ibv_get_device_list(&n);
  ASSERT_NE(list, nullptr);
  ASSERT_GT(n, 0);
  EXPECT_EQ(list[n], nullptr) << "list is NULL terminated";
  const std::string prefix = device_prefix(GetParam());
  bool have_lo = false;
  std::set<std::string> names;
  for (int i = 0; i < n; i++) {
    std::string nm = ibv_get_device_name(list[i]);
    EXPECT_EQ(nm.rfind(prefix + "_", 0), 0u) << nm << " lacks the backend prefix " << prefix;
    EXPECT_TRUE(names.insert(nm).second) << "duplicate device " << nm;
    EXPECT_EQ(list[i]->transport_type, IBV_TRANSPORT_IWARP);
    EXPECT_EQ(list[i]->node_type, IBV_NODE_RNIC);
    if (nm == prefix + "_lo") have_lo = true;
  }
  EXPECT_TRUE(have_lo) << prefix << "_lo missing";
  ibv_free_device_list(list);
}

TEST_P(VerbsObjects, QueryDevicePortGid) {
  OpenDev d(GetParam());
  ASSERT_NE(d.ctx, nullptr) << "cannot open the loopback device";
  ibv_device_attr da{};
  ASSERT_EQ(0, ibv_query_device(d.ctx, &da));
  EXPECT_GE(da.max_sge, 6);
  EXPECT_GE(da.max_qp_rd_atom, 128);
  EXPECT_GE(da.max_qp_init_rd_atom, 128);
  EXPECT_GE(da.max_qp_wr, 1024);
  EXPECT_GE(da.max_cqe, 1024);
  EXPECT_EQ(da.phys_port_cnt, 1);
  EXPECT_GT(da.max_mr, 0);
  EXPECT_GT(da.max_pd, 0);
  EXPECT_GT(da.max_srq, 0);

  ibv_device_attr_ex dx{};
  ASSERT_EQ(0, ibv_query_device_ex(d.ctx, nullptr, &dx));
  EXPECT_EQ(dx.orig_attr.max_sge, da.max_sge);
  EXPECT_EQ(dx.phys_port_cnt_ex, 1u) << "the extended port count must match phys_port_cnt";

  ibv_port_attr pa{};
  ASSERT_EQ(0, ibv_query_port(d.ctx, 1, &pa));
  EXPECT_EQ(pa.state, IBV_PORT_ACTIVE);
  EXPECT_EQ(pa.link_layer, IBV_LINK_LAYER_ETHERNET);
  EXPECT_GE(pa.max_msg_sz, 1u << 30);
  EXPECT_GE(pa.gid_tbl_len, 1);
  EXPECT_NE(0, ibv_query_port(d.ctx, 2, &pa)) << "port 2 does not exist";

  ibv_gid gid{};
  ASSERT_EQ(0, ibv_query_gid(d.ctx, 1, 0, &gid));
  bool nonzero = false;
  for (auto b : gid.raw) nonzero = nonzero || b;
  EXPECT_TRUE(nonzero) << "GID 0 is all zeros";
  EXPECT_NE(0, ibv_query_gid(d.ctx, 1, pa.gid_tbl_len, &gid)) << "beyond gid_tbl_len";
  EXPECT_EQ(d.ctx->device->transport_type, IBV_TRANSPORT_IWARP);
}

// The GID table: gid_tbl_len entries, the same through ibv_query_gid, ibv_query_gid_ex and
// ibv_query_gid_table, and one GID for every IPv4 (IPv4-mapped) and IPv6 address of lo.
TEST_P(VerbsObjects, GidTableListsEveryAddress) {
  OpenDev d(GetParam());
  ASSERT_NE(d.ctx, nullptr);
  ibv_port_attr pa{};
  ASSERT_EQ(0, ibv_query_port(d.ctx, 1, &pa));
  ASSERT_GE(pa.gid_tbl_len, 1);
  std::vector<ibv_gid_entry> table(pa.gid_tbl_len + 1);
  ASSERT_EQ(pa.gid_tbl_len, ibv_query_gid_table(d.ctx, table.data(), table.size(), 0));
  std::vector<std::array<uint8_t, 16>> gids;
  for (int i = 0; i < pa.gid_tbl_len; i++) {
    ibv_gid g{};
    ASSERT_EQ(0, ibv_query_gid(d.ctx, 1, i, &g));
    ibv_gid_entry e{};
    ASSERT_EQ(0, ibv_query_gid_ex(d.ctx, 1, i, &e, 0));
    EXPECT_EQ(0, std::memcmp(g.raw, e.gid.raw, 16)) << "index " << i;
    EXPECT_EQ(0, std::memcmp(g.raw, table[i].gid.raw, 16)) << "index " << i;
    EXPECT_EQ(e.gid_index, (uint32_t)i);
    EXPECT_EQ(e.ndev_ifindex, if_nametoindex("lo"));
    std::array<uint8_t, 16> a;
    std::memcpy(a.data(), g.raw, 16);
    gids.push_back(a);
  }
  ibv_gid_entry e{};
  EXPECT_EQ(ENODATA, ibv_query_gid_ex(d.ctx, 1, pa.gid_tbl_len, &e, 0));
  ifaddrs *ifa = nullptr;
  ASSERT_EQ(0, getifaddrs(&ifa));
  int checked = 0;
  for (ifaddrs *p = ifa; p; p = p->ifa_next) {
    if (!p->ifa_addr || std::string(p->ifa_name) != "lo") continue;
    std::array<uint8_t, 16> want{};
    if (p->ifa_addr->sa_family == AF_INET) {
      want[10] = want[11] = 0xff;
      std::memcpy(&want[12], &reinterpret_cast<sockaddr_in *>(p->ifa_addr)->sin_addr, 4);
    } else if (p->ifa_addr->sa_family == AF_INET6) {
      std::memcpy(want.data(), &reinterpret_cast<sockaddr_in6 *>(p->ifa_addr)->sin6_addr, 16);
    } else {
      continue;
    }
    EXPECT_NE(std::find(gids.begin(), gids.end(), want), gids.end()) << "an address of lo has no GID";
    checked++;
  }
  freeifaddrs(ifa);
  EXPECT_GE(checked, 1);
}

TEST_P(VerbsObjects, CreatedQpCapsAndQuery) {
  OpenDev d(GetParam());
  ASSERT_NE(d.ctx, nullptr);
  ibv_pd *pd = ibv_alloc_pd(d.ctx);
  ASSERT_NE(pd, nullptr);
  ibv_cq *cq = ibv_create_cq(d.ctx, 64, nullptr, nullptr, 0);
  ASSERT_NE(cq, nullptr);
  ibv_qp_init_attr a = rc_attr(cq);
  a.cap.max_inline_data = 80;
  a.cap.max_send_sge = 6;
  a.cap.max_recv_sge = 6;
  ibv_qp *qp = ibv_create_qp(pd, &a);
  ASSERT_NE(qp, nullptr) << strerror(errno);
  EXPECT_GE(a.cap.max_inline_data, 80u);
  EXPECT_GE(a.cap.max_send_sge, 6u);
  EXPECT_GE(a.cap.max_recv_sge, 6u);
  EXPECT_GE(a.cap.max_send_wr, 16u);
  EXPECT_EQ(qp->qp_type, IBV_QPT_RC);
  EXPECT_EQ(qp->state, IBV_QPS_RESET);

  ibv_qp_attr qa{};
  ibv_qp_init_attr qi{};
  ASSERT_EQ(0, ibv_query_qp(qp, &qa, IBV_QP_STATE | IBV_QP_CAP, &qi));
  EXPECT_EQ(qa.qp_state, IBV_QPS_INIT) << "siw and cxgb4 report a new QP as INIT";
  EXPECT_EQ(qp->state, IBV_QPS_INIT) << "ibv_query_qp refreshes ibv_qp::state";
  EXPECT_GE(qa.cap.max_inline_data, 80u);
  EXPECT_EQ(qi.qp_type, IBV_QPT_RC);
  EXPECT_EQ(qi.send_cq, cq);
  EXPECT_EQ(qi.recv_cq, cq);
  EXPECT_GE(qi.cap.max_send_wr, 16u);

  EXPECT_EQ(0, ibv_destroy_qp(qp));
  EXPECT_EQ(0, ibv_destroy_cq(cq));
  EXPECT_EQ(0, ibv_dealloc_pd(pd));
}

TEST_P(VerbsObjects, MrAccessChecksAndKeys) {
  OpenDev d(GetParam());
  ASSERT_NE(d.ctx, nullptr);
  ibv_pd *pd = ibv_alloc_pd(d.ctx);
  ASSERT_NE(pd, nullptr);
  std::vector<uint8_t> buf(1 << 16);

  errno = 0;
  EXPECT_EQ(nullptr, ibv_reg_mr(pd, buf.data(), buf.size(), IBV_ACCESS_REMOTE_WRITE));
  EXPECT_EQ(errno, EINVAL) << "REMOTE_WRITE without LOCAL_WRITE";
  errno = 0;
  EXPECT_EQ(nullptr, ibv_reg_mr(pd, buf.data(), buf.size(), IBV_ACCESS_REMOTE_ATOMIC));
  EXPECT_EQ(errno, EINVAL) << "REMOTE_ATOMIC without LOCAL_WRITE";

  ibv_mr *at = ibv_reg_mr(pd, buf.data(), buf.size(),
                          IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_ATOMIC);
  ASSERT_NE(at, nullptr) << "REMOTE_ATOMIC with LOCAL_WRITE must be accepted: " << strerror(errno);
  EXPECT_EQ(0, ibv_dereg_mr(at));

  std::vector<ibv_mr *> mrs;
  std::set<uint32_t> keys;
  std::set<uint8_t> low;
  for (int i = 0; i < 64; i++) {
    ibv_mr *mr = ibv_reg_mr(pd, buf.data() + i * 16, 1024,
                            IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                IBV_ACCESS_REMOTE_READ);
    ASSERT_NE(mr, nullptr) << strerror(errno);
    EXPECT_EQ(mr->lkey, mr->rkey) << "iWARP: one STag per region";
    EXPECT_EQ(mr->addr, buf.data() + i * 16);
    EXPECT_EQ(mr->length, 1024u);
    EXPECT_EQ(mr->pd, pd);
    EXPECT_TRUE(keys.insert(mr->rkey).second) << "duplicate key 0x" << std::hex << mr->rkey;
    low.insert((uint8_t)(mr->rkey & 0xff));
    mrs.push_back(mr);
  }
  EXPECT_GT(low.size(), 1u) << "the low 8 key bits never vary: STags are predictable";

  // A PD with registrations cannot go away.
  EXPECT_EQ(EBUSY, ibv_dealloc_pd(pd));
  // Deregister and re-register the same range: the key must not repeat (consumer key bits).
  uint32_t old = mrs[0]->rkey;
  EXPECT_EQ(0, ibv_dereg_mr(mrs[0]));
  int same = 0;
  for (int i = 0; i < 8; i++) {
    ibv_mr *mr = ibv_reg_mr(pd, buf.data(), 1024, IBV_ACCESS_LOCAL_WRITE);
    ASSERT_NE(mr, nullptr);
    if (mr->rkey == old) same++;
    EXPECT_EQ(0, ibv_dereg_mr(mr));
  }
  EXPECT_LT(same, 8) << "a re-registration always gets the same STag back";
  for (size_t i = 1; i < mrs.size(); i++) EXPECT_EQ(0, ibv_dereg_mr(mrs[i]));
  EXPECT_EQ(0, ibv_dealloc_pd(pd));
}

TEST_P(VerbsObjects, CqBusyWhileQpUsesIt) {
  OpenDev d(GetParam());
  ASSERT_NE(d.ctx, nullptr);
  ibv_pd *pd = ibv_alloc_pd(d.ctx);
  ibv_cq *cq = ibv_create_cq(d.ctx, 16, nullptr, nullptr, 0);
  ASSERT_NE(cq, nullptr);
  EXPECT_GE(cq->cqe, 16);
  ibv_qp_init_attr a = rc_attr(cq);
  ibv_qp *qp = ibv_create_qp(pd, &a);
  ASSERT_NE(qp, nullptr);
  EXPECT_EQ(EBUSY, ibv_destroy_cq(cq));
  EXPECT_EQ(EBUSY, ibv_dealloc_pd(pd));
  EXPECT_EQ(0, ibv_destroy_qp(qp));
  EXPECT_EQ(0, ibv_destroy_cq(cq));
  EXPECT_EQ(0, ibv_dealloc_pd(pd));
  // Bad CQ sizes
  errno = 0;
  EXPECT_EQ(nullptr, ibv_create_cq(d.ctx, 0, nullptr, nullptr, 0));
  EXPECT_EQ(errno, EINVAL);
}

// ibv_destroy_comp_channel(3): 0 or the errno value; EBUSY while a CQ uses the channel.
TEST_P(VerbsObjects, DestroyCompChannelInUseIsEbusy) {
  OpenDev d(GetParam());
  ASSERT_NE(d.ctx, nullptr);
  ibv_comp_channel *cc = ibv_create_comp_channel(d.ctx);
  ASSERT_NE(cc, nullptr);
  ibv_cq *cq = ibv_create_cq(d.ctx, 16, nullptr, cc, 0);
  ASSERT_NE(cq, nullptr);
  EXPECT_EQ(EBUSY, ibv_destroy_comp_channel(cc)) << "as rdma-core: EBUSY itself, not -1";
  EXPECT_EQ(0, ibv_destroy_cq(cq));
  EXPECT_EQ(0, ibv_destroy_comp_channel(cc));
}

TEST_P(VerbsObjects, CreateQpRejectsWrongTypeAndCaps) {
  OpenDev d(GetParam());
  ASSERT_NE(d.ctx, nullptr);
  ibv_pd *pd = ibv_alloc_pd(d.ctx);
  ibv_cq *cq = ibv_create_cq(d.ctx, 16, nullptr, nullptr, 0);
  ASSERT_NE(cq, nullptr);
  ibv_device_attr da{};
  ASSERT_EQ(0, ibv_query_device(d.ctx, &da));

  ibv_qp_init_attr a = rc_attr(cq);
  a.qp_type = IBV_QPT_UD;
  errno = 0;
  EXPECT_EQ(nullptr, ibv_create_qp(pd, &a));
  EXPECT_EQ(errno, EOPNOTSUPP) << "UD QP on iWARP";
  a.qp_type = IBV_QPT_UC;
  errno = 0;
  EXPECT_EQ(nullptr, ibv_create_qp(pd, &a));
  EXPECT_EQ(errno, EOPNOTSUPP) << "UC QP on iWARP";

  struct Case {
    const char *what;
    std::function<void(ibv_qp_init_attr &)> f;
  } cases[] = {
      {"max_send_wr", [&](ibv_qp_init_attr &x) { x.cap.max_send_wr = (uint32_t)da.max_qp_wr + 1; }},
      {"max_recv_wr", [&](ibv_qp_init_attr &x) { x.cap.max_recv_wr = (uint32_t)da.max_qp_wr + 1; }},
      {"max_send_sge", [&](ibv_qp_init_attr &x) { x.cap.max_send_sge = (uint32_t)da.max_sge + 1; }},
      {"max_recv_sge", [&](ibv_qp_init_attr &x) { x.cap.max_recv_sge = (uint32_t)da.max_sge + 1; }},
      {"max_inline_data", [&](ibv_qp_init_attr &x) { x.cap.max_inline_data = 1u << 20; }},
  };
  for (auto &c : cases) {
    ibv_qp_init_attr x = rc_attr(cq);
    c.f(x);
    errno = 0;
    ibv_qp *qp = ibv_create_qp(pd, &x);
    EXPECT_EQ(qp, nullptr) << c.what << " beyond the device limit was accepted";
    if (qp) ibv_destroy_qp(qp);
    else EXPECT_EQ(errno, EINVAL) << c.what;
  }
  EXPECT_EQ(0, ibv_destroy_cq(cq));
  EXPECT_EQ(0, ibv_dealloc_pd(pd));
}

TEST_P(VerbsObjects, PostingInWrongStateAndIllegalTransitions) {
  OpenDev d(GetParam());
  ASSERT_NE(d.ctx, nullptr);
  ibv_pd *pd = ibv_alloc_pd(d.ctx);
  ibv_cq *cq = ibv_create_cq(d.ctx, 16, nullptr, nullptr, 0);
  ibv_qp_init_attr a = rc_attr(cq);
  ibv_qp *qp = ibv_create_qp(pd, &a);
  ASSERT_NE(qp, nullptr);
  std::vector<uint8_t> buf(64);
  ibv_mr *mr = ibv_reg_mr(pd, buf.data(), buf.size(), IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(mr, nullptr);
  ibv_sge s = sge(mr, buf.data(), 8);

  auto try_send = [&](const char *state) {
    ibv_send_wr w2{}, w1{}, *bad = nullptr;
    w1.wr_id = 1;
    w1.opcode = IBV_WR_SEND;
    w1.sg_list = &s;
    w1.num_sge = 1;
    w1.send_flags = IBV_SEND_SIGNALED;
    w1.next = &w2;
    w2 = w1;
    w2.wr_id = 2;
    w2.next = nullptr;
    int r = ibv_post_send(qp, &w1, &bad);
    EXPECT_EQ(r, EINVAL) << "ibv_post_send in " << state << " (positive errno expected)";
    EXPECT_EQ(bad, &w1) << "bad_wr must point at the first WR not posted, in " << state;
  };

  EXPECT_EQ(qp_state(qp), IBV_QPS_INIT);  // new QPs start as siw's do
  {
    ibv_qp_attr r{};
    r.qp_state = IBV_QPS_RESET;
    ASSERT_EQ(0, ibv_modify_qp(qp, &r, IBV_QP_STATE)) << "INIT -> RESET";
  }
  EXPECT_EQ(qp_state(qp), IBV_QPS_RESET);
  try_send("RESET");
  {
    ibv_recv_wr rw{}, *bad = nullptr;
    rw.sg_list = &s;
    rw.num_sge = 1;
    EXPECT_EQ(EINVAL, ibv_post_recv(qp, &rw, &bad)) << "ibv_post_recv in RESET";
    EXPECT_EQ(bad, &rw);
  }
  ibv_qp_attr at{};
  at.qp_state = IBV_QPS_RTS;
  EXPECT_EQ(EINVAL, ibv_modify_qp(qp, &at, IBV_QP_STATE)) << "RESET -> RTS";
  at.qp_state = IBV_QPS_RTR;
  EXPECT_EQ(EINVAL, ibv_modify_qp(qp, &at, IBV_QP_STATE)) << "RESET -> RTR";
  EXPECT_EQ(qp_state(qp), IBV_QPS_RESET);

  at.qp_state = IBV_QPS_INIT;
  at.port_num = 1;
  at.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
  ASSERT_EQ(0, ibv_modify_qp(qp, &at, IBV_QP_STATE | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS));
  EXPECT_EQ(qp_state(qp), IBV_QPS_INIT);
  try_send("INIT");
  at.qp_state = IBV_QPS_RTS;
  EXPECT_EQ(EINVAL, ibv_modify_qp(qp, &at, IBV_QP_STATE)) << "INIT -> RTS";
  at.qp_state = IBV_QPS_SQD;
  EXPECT_EQ(EINVAL, ibv_modify_qp(qp, &at, IBV_QP_STATE)) << "INIT -> SQD";
  // A receive may be posted in INIT; ERR flushes it.
  {
    ibv_recv_wr rw{}, *bad = nullptr;
    rw.wr_id = 77;
    rw.sg_list = &s;
    rw.num_sge = 1;
    EXPECT_EQ(0, ibv_post_recv(qp, &rw, &bad)) << "ibv_post_recv in INIT";
  }
  // Wrong current state given
  at.qp_state = IBV_QPS_INIT;
  at.cur_qp_state = IBV_QPS_RTS;
  EXPECT_EQ(EINVAL, ibv_modify_qp(qp, &at, IBV_QP_STATE | IBV_QP_CUR_STATE));
  at.qp_state = IBV_QPS_ERR;
  ASSERT_EQ(0, ibv_modify_qp(qp, &at, IBV_QP_STATE));
  EXPECT_EQ(qp_state(qp), IBV_QPS_ERR);
  ibv_wc wc{};
  ASSERT_TRUE(poll_one(cq, &wc, 2000)) << "receive posted in INIT not flushed by ERR";
  EXPECT_EQ(wc.wr_id, 77u);
  EXPECT_EQ(wc.status, IBV_WC_WR_FLUSH_ERR);
  at.qp_state = IBV_QPS_RTS;
  EXPECT_EQ(EINVAL, ibv_modify_qp(qp, &at, IBV_QP_STATE)) << "ERR -> RTS";
  at.qp_state = IBV_QPS_RESET;
  EXPECT_EQ(0, ibv_modify_qp(qp, &at, IBV_QP_STATE)) << "ERR -> RESET";
  EXPECT_EQ(qp_state(qp), IBV_QPS_RESET);
  try_send("RESET again");

  EXPECT_EQ(0, ibv_dereg_mr(mr));
  EXPECT_EQ(0, ibv_destroy_qp(qp));
  EXPECT_EQ(0, ibv_destroy_cq(cq));
  EXPECT_EQ(0, ibv_dealloc_pd(pd));
}

// ibv_destroy_qp takes the QP's unpolled completions out of its CQs (as rdma-core's hardware
// providers do): a completion polled later would name a QP, and a wr_id, the application has
// already released. Another QP's completions on the same CQ stay.
TEST_P(VerbsObjects, DestroyedQpLeavesNoCompletionsBehind) {
  OpenDev d(GetParam());
  ASSERT_NE(d.ctx, nullptr);
  ibv_pd *pd = ibv_alloc_pd(d.ctx);
  ibv_cq *cq = ibv_create_cq(d.ctx, 16, nullptr, nullptr, 0);
  ASSERT_TRUE(pd && cq);
  ibv_qp_init_attr a = rc_attr(cq);
  ibv_qp *gone = ibv_create_qp(pd, &a), *kept = ibv_create_qp(pd, &a);
  ASSERT_TRUE(gone && kept);
  std::vector<uint8_t> buf(64);
  ibv_mr *mr = ibv_reg_mr(pd, buf.data(), buf.size(), IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(mr, nullptr);
  ibv_sge s = sge(mr, buf.data(), 8);
  // Receives posted in INIT are flushed into the CQ by ERR, unpolled.
  for (ibv_qp *qp : {gone, kept}) {
    for (uint64_t id = 1; id <= 3; id++) {
      ibv_recv_wr rw{}, *bad = nullptr;
      rw.wr_id = id + (qp == kept ? 100 : 0);
      rw.sg_list = &s;
      rw.num_sge = 1;
      ASSERT_EQ(0, ibv_post_recv(qp, &rw, &bad));
    }
    ibv_qp_attr at{};
    at.qp_state = IBV_QPS_ERR;
    ASSERT_EQ(0, ibv_modify_qp(qp, &at, IBV_QP_STATE));
  }
  const uint32_t gone_qpn = gone->qp_num, kept_qpn = kept->qp_num;
  ASSERT_EQ(0, ibv_destroy_qp(gone));
  std::vector<ibv_wc> got;
  ibv_wc wc{};
  while (got.size() < 6 && poll_one(cq, &wc, 500)) got.push_back(wc);
  ASSERT_EQ(got.size(), 3u) << "the surviving QP's three flushes, nothing of the destroyed QP";
  for (const ibv_wc &w : got) {
    EXPECT_NE(w.qp_num, gone_qpn);
    EXPECT_EQ(w.qp_num, kept_qpn);
    EXPECT_GT(w.wr_id, 100u);
    EXPECT_EQ(w.status, IBV_WC_WR_FLUSH_ERR);
  }
  EXPECT_EQ(0, ibv_destroy_qp(kept));
  EXPECT_EQ(0, ibv_dereg_mr(mr));
  EXPECT_EQ(0, ibv_destroy_cq(cq));
  EXPECT_EQ(0, ibv_dealloc_pd(pd));
}

// ---------------------------------------------------------------------------------------------
// Completion channels (connected pair)

TEST_P(VerbsObjects, CompChannelReadinessAndNonblocking) {
  ConnOpts o;
  o.comp_channel = true;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  std::vector<uint8_t> sbuf(256, 0x11), rbuf(256);
  ibv_mr *smr = Reg(cli_.pd, sbuf.data(), sbuf.size(), kAllAccess);
  ibv_mr *rmr = Reg(srv_.pd, rbuf.data(), rbuf.size(), kAllAccess);
  ASSERT_TRUE(smr && rmr);
  const int fd = srv_.cc->fd;
  EXPECT_FALSE(fd_readable(fd, 0)) << "channel readable with nothing armed";

  ASSERT_EQ(0, ibv_req_notify_cq(srv_.rcq, 0));
  ASSERT_EQ(0, post_recv(srv_.qp, {sge(rmr, rbuf.data(), 256)}, 5));
  ibv_wc wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_SEND, {sge(smr, sbuf.data(), 100)}});
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  ASSERT_TRUE(fd_readable(fd, kTimeoutMs)) << "no completion event after req_notify + RECV";
  ibv_cq *ev_cq = nullptr;
  void *ev_ctx = nullptr;
  ASSERT_EQ(0, ibv_get_cq_event(srv_.cc, &ev_cq, &ev_ctx));
  EXPECT_EQ(ev_cq, srv_.rcq);
  EXPECT_EQ(ev_ctx, &srv_) << "cq_context given at ibv_create_cq";
  unsigned before = srv_.rcq->comp_events_completed;
  ibv_ack_cq_events(ev_cq, 1);
  EXPECT_EQ(srv_.rcq->comp_events_completed, before + 1);
  ASSERT_TRUE(poll_one(srv_.rcq, &wc));
  EXPECT_EQ(wc.wr_id, 5u);
  EXPECT_EQ(wc.byte_len, 100u);
  EXPECT_FALSE(fd_readable(fd, 0)) << "one event per arming";

  // Not re-armed: another completion raises no event.
  ASSERT_EQ(0, post_recv(srv_.qp, {sge(rmr, rbuf.data(), 256)}, 6));
  wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_SEND, {sge(smr, sbuf.data(), 10)}});
  ASSERT_TRUE(poll_one(srv_.rcq, &wc));
  EXPECT_FALSE(fd_readable(fd, 100)) << "event without req_notify";

  // O_NONBLOCK: empty channel -> -1/EAGAIN
  int fl = fcntl(fd, F_GETFL);
  ASSERT_EQ(0, fcntl(fd, F_SETFL, fl | O_NONBLOCK));
  errno = 0;
  EXPECT_EQ(-1, ibv_get_cq_event(srv_.cc, &ev_cq, &ev_ctx));
  EXPECT_EQ(errno, EAGAIN);
  ASSERT_EQ(0, fcntl(fd, F_SETFL, fl));
}

TEST_P(VerbsObjects, SolicitedOnlyArming) {
  ConnOpts o;
  o.comp_channel = true;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  std::vector<uint8_t> sbuf(64, 0x22), rbuf(256);
  ibv_mr *smr = Reg(cli_.pd, sbuf.data(), sbuf.size(), kAllAccess);
  ibv_mr *rmr = Reg(srv_.pd, rbuf.data(), rbuf.size(), kAllAccess);
  ASSERT_TRUE(smr && rmr);
  const int fd = srv_.cc->fd;
  for (int i = 0; i < 2; i++)
    ASSERT_EQ(0, post_recv(srv_.qp, {sge(rmr, rbuf.data() + i * 64, 64)}, 100 + i));
  ASSERT_EQ(0, ibv_req_notify_cq(srv_.rcq, 1));

  ibv_wc wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_SEND, {sge(smr, sbuf.data(), 8)}});
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  ASSERT_TRUE(poll_one(srv_.rcq, &wc));
  EXPECT_EQ(wc.wr_id, 100u);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_FALSE(fd_readable(fd, 200)) << "an unsolicited SEND woke a solicited-only CQ";

  wc = post_and_wait(cli_.qp, cli_.scq,
                     {IBV_WR_SEND, {sge(smr, sbuf.data(), 8)}, IBV_SEND_SIGNALED | IBV_SEND_SOLICITED});
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  ASSERT_TRUE(fd_readable(fd, kTimeoutMs)) << "a solicited SEND did not wake the CQ";
  ibv_cq *ev_cq = nullptr;
  void *ev_ctx = nullptr;
  ASSERT_EQ(0, ibv_get_cq_event(srv_.cc, &ev_cq, &ev_ctx));
  EXPECT_EQ(ev_cq, srv_.rcq);
  ibv_ack_cq_events(ev_cq, 1);
  ASSERT_TRUE(poll_one(srv_.rcq, &wc));
  EXPECT_EQ(wc.wr_id, 101u);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
}

// ---------------------------------------------------------------------------------------------
// SRQ

TEST_P(VerbsObjects, SrqReceivesAndLimitEvent) {
  ConnOpts o;
  o.server_srq = true;
  o.srq_max_wr = 16;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  ASSERT_NE(srv_.srq, nullptr);
  std::vector<uint8_t> sbuf(64), rbuf(16 * 64, 0);
  fill_pattern(sbuf.data(), sbuf.size(), 7);
  ibv_mr *smr = Reg(cli_.pd, sbuf.data(), sbuf.size(), kAllAccess);
  ibv_mr *rmr = Reg(srv_.pd, rbuf.data(), rbuf.size(), kAllAccess);
  ASSERT_TRUE(smr && rmr);

  // Receives go to the SRQ, not to the QP.
  {
    ibv_sge s = sge(rmr, rbuf.data(), 64);
    ibv_recv_wr rw{}, *bad = nullptr;
    rw.sg_list = &s;
    rw.num_sge = 1;
    EXPECT_NE(0, ibv_post_recv(srv_.qp, &rw, &bad)) << "ibv_post_recv on a QP with an SRQ";
  }
  for (int i = 0; i < 8; i++)
    ASSERT_EQ(0, post_srq_recv(srv_.srq, {sge(rmr, rbuf.data() + i * 64, 64)}, 1000 + i));

  ibv_srq_attr sa{};
  sa.srq_limit = 4;
  ASSERT_EQ(0, ibv_modify_srq(srv_.srq, &sa, IBV_SRQ_LIMIT));
  ibv_srq_attr q{};
  ASSERT_EQ(0, ibv_query_srq(srv_.srq, &q));
  EXPECT_EQ(q.srq_limit, 4u);
  EXPECT_GE(q.max_wr, 16u);

  // 4 SENDs leave 4 receives: not below the limit yet.
  for (int i = 0; i < 4; i++) {
    ibv_wc wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_SEND, {sge(smr, sbuf.data(), 64)}});
    ASSERT_EQ(wc.status, IBV_WC_SUCCESS);
    ASSERT_TRUE(poll_one(srv_.rcq, &wc));
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
    EXPECT_EQ(wc.wr_id, 1000u + i) << "SRQ receives are consumed in posting order";
    EXPECT_EQ(wc.byte_len, 64u);
    EXPECT_EQ(wc.qp_num, srv_.qp->qp_num);
    EXPECT_EQ(0, memcmp(rbuf.data() + i * 64, sbuf.data(), 64));
  }
  EXPECT_FALSE(fd_readable(srv_.ctx->async_fd, 0)) << "SRQ limit event before the limit";

  ibv_wc wc = post_and_wait(cli_.qp, cli_.scq, {IBV_WR_SEND, {sge(smr, sbuf.data(), 64)}});
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS);
  ASSERT_TRUE(poll_one(srv_.rcq, &wc));
  EXPECT_EQ(wc.wr_id, 1004u);
  std::vector<AsyncEv> seen;
  EXPECT_TRUE(wait_async(srv_.ctx, IBV_EVENT_SRQ_LIMIT_REACHED, srv_.srq, kTimeoutMs, &seen))
      << "no IBV_EVENT_SRQ_LIMIT_REACHED";
  ASSERT_EQ(0, ibv_query_srq(srv_.srq, &q));
  EXPECT_EQ(q.srq_limit, 0u) << "the limit disarms after firing";
  EXPECT_EQ(EBUSY, ibv_destroy_srq(srv_.srq)) << "SRQ in use by a QP";
}

ECA_INSTANTIATE_BACKENDS(VerbsObjects);

}  // namespace

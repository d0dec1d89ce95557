// Memory windows over a connected loopback pair, on both backends: type 1 (ibv_alloc_mw,
// ibv_bind_mw) and type 2 (IBV_WR_BIND_MW, IBV_WR_LOCAL_INV, ibv_wr_bind_mw, ibv_wr_local_inv),
// remote access checked through the window (bounds, rights, PD, the QP of a type 2 window),
// remote invalidation by SEND with Invalidate, and every bind error. The cases of rdma-core's
// tests/test_mr.py MWTest (which needs InfiniBand/RoCE-style QP set-up and cannot run over
// iWARP, see docs/architecture.md) are here as WindowType1Traffic, Type1ZeroLengthBindInvalidates,
// Type2BindWriteAndLocalInvalidate, Type2RemoteInvalidate, Type2DeallocInvalidates,
// AllocTypes.
//
// The window is on the responder (server) unless a test says otherwise; guard pages and canary
// bytes around the MR show that no byte outside the window is ever written.
#include "tests/unit/fixture.hpp"

#include "provider/core/objects.hpp"

using namespace ecatest;

namespace {

constexpr int kMwMr = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND;
constexpr int kRw = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;

class MemoryWindow : public EcaTest {
 protected:
  std::vector<ibv_mw *> mws_;

  void TearDown() override {
    FreeWindows();
    EcaTest::TearDown();
  }
  void FreeWindows() {
    for (ibv_mw *mw : mws_) EXPECT_EQ(0, ibv_dealloc_mw(mw));
    mws_.clear();
  }
  void Reconnect(const ConnOpts &o = ConnOpts()) {
    FreeWindows();
    Disconnect();
    Connect(o);
  }
  ibv_mw *AllocMw(ibv_pd *pd, ibv_mw_type type) {
    ibv_mw *mw = ibv_alloc_mw(pd, type);
    EXPECT_NE(mw, nullptr) << "ibv_alloc_mw: " << strerror(errno);
    if (mw) mws_.push_back(mw);
    return mw;
  }
  uint8_t *Buf(size_t n, uint8_t fill = 0) { return EcaTest::Alloc(n, fill); }
  void Dealloc(ibv_mw *mw) {
    mws_.erase(std::find(mws_.begin(), mws_.end(), mw));
    EXPECT_EQ(0, ibv_dealloc_mw(mw));
  }

  // Type 1 bind through ibv_bind_mw on `qp`; returns its completion.
  ibv_wc Bind1(ibv_qp *qp, ibv_cq *cq, ibv_mw *mw, ibv_mr *mr, const void *addr, uint64_t len,
               unsigned access, uint64_t wr_id = 77) {
    ibv_mw_bind b{};
    b.wr_id = wr_id;
    b.send_flags = IBV_SEND_SIGNALED;
    b.bind_info = {mr, (uint64_t)(uintptr_t)addr, len, access};
    ibv_wc wc{};
    wc.status = IBV_WC_GENERAL_ERR;
    int rc = ibv_bind_mw(qp, mw, &b);
    EXPECT_EQ(rc, 0) << "ibv_bind_mw: " << strerror(rc);
    if (rc) return wc;
    EXPECT_TRUE(poll_one(cq, &wc)) << "no completion for the bind";
    return wc;
  }
  // Type 2 bind through ibv_post_send (new STag: the next key byte).
  ibv_wc Bind2(ibv_qp *qp, ibv_cq *cq, ibv_mw *mw, ibv_mr *mr, const void *addr, uint64_t len,
               unsigned access, uint32_t *rkey_out = nullptr) {
    ibv_send_wr wr{}, *bad = nullptr;
    wr.wr_id = 78;
    wr.opcode = IBV_WR_BIND_MW;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.bind_mw.mw = mw;
    wr.bind_mw.rkey = ibv_inc_rkey(mw->rkey);
    wr.bind_mw.bind_info = {mr, (uint64_t)(uintptr_t)addr, len, access};
    if (rkey_out) *rkey_out = wr.bind_mw.rkey;
    ibv_wc wc{};
    wc.status = IBV_WC_GENERAL_ERR;
    int rc = ibv_post_send(qp, &wr, &bad);
    EXPECT_EQ(rc, 0) << "ibv_post_send(BIND_MW): " << strerror(rc);
    if (rc) return wc;
    EXPECT_TRUE(poll_one(cq, &wc)) << "no completion for the bind";
    return wc;
  }

  // A window of the server bound over [win, win+len) of an MR over [mem, mem+mem_len).
  struct Win {
    ibv_mr *mr = nullptr;
    ibv_mw *mw = nullptr;
    uint32_t rkey = 0;
    bool ok = false;
  };
  Win Bound(ibv_mw_type type, uint8_t *mem, size_t mem_len, uint8_t *win, uint64_t len,
            unsigned access, int mr_access = kMwMr) {
    Win w;
    w.mr = Reg(srv_.pd, mem, mem_len, mr_access);
    w.mw = AllocMw(srv_.pd, type);
    if (!w.mr || !w.mw) return w;
    ibv_wc wc = type == IBV_MW_TYPE_1 ? Bind1(srv_.qp, srv_.scq, w.mw, w.mr, win, len, access)
                                      : Bind2(srv_.qp, srv_.scq, w.mw, w.mr, win, len, access,
                                              &w.rkey);
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << "bind: " << wc_status_name(wc.status);
    EXPECT_EQ(wc.opcode, IBV_WC_BIND_MW);
    if (type == IBV_MW_TYPE_1) w.rkey = w.mw->rkey;
    w.ok = wc.status == IBV_WC_SUCCESS;
    return w;
  }

  struct Local {
    uint8_t *d = nullptr;
    ibv_mr *mr = nullptr;
  };
  Local MakeLocal(ibv_pd *pd, size_t n, uint8_t fill = 0x11) {
    Local l;
    l.d = Buf(n, fill);
    l.mr = Reg(pd, l.d, n, kAllAccess);
    return l;
  }

  // The client WRITEs `len` bytes to (rkey, addr) and then READs 8 bytes of a valid region:
  // one of the two reports IBV_WC_REM_ACCESS_ERR (the modeled adapter fails the WRITE itself,
  // the software backend completes the WRITE when handed to TCP and fails the next WR), and
  // both QPs end in ERR.
  void ExpectWriteRejected(uint32_t rkey, const void *addr, uint32_t len) {
    Local src = MakeLocal(cli_.pd, 4096, 0x42), sink = MakeLocal(cli_.pd, 64);
    static std::vector<uint8_t> ok(64, 0x77);
    ibv_mr *okmr = Reg(srv_.pd, ok.data(), ok.size(), kAllAccess);
    ASSERT_TRUE(src.mr && sink.mr && okmr);
    std::vector<SendSpec> chain = {
        {IBV_WR_RDMA_WRITE, {sge(src.mr, src.d, len)}, IBV_SEND_SIGNALED, 1,
         (uint64_t)(uintptr_t)addr, rkey},
        {IBV_WR_RDMA_READ, {sge(sink.mr, sink.d, 8)}, IBV_SEND_SIGNALED, 2,
         (uint64_t)(uintptr_t)ok.data(), okmr->rkey}};
    ASSERT_EQ(0, post_chain(cli_.qp, chain));
    auto wcs = poll_n(cli_.scq, 2);
    ASSERT_EQ(wcs.size(), 2u);
    EXPECT_TRUE(wcs[0].status == IBV_WC_REM_ACCESS_ERR || wcs[1].status == IBV_WC_REM_ACCESS_ERR)
        << wc_status_name(wcs[0].status) << " / " << wc_status_name(wcs[1].status);
    EXPECT_NE(wcs[1].status, IBV_WC_SUCCESS);
    EXPECT_TRUE(wait_qp_state(cli_.qp, IBV_QPS_ERR));
    EXPECT_TRUE(wait_qp_state(srv_.qp, IBV_QPS_ERR));
  }
  ibv_wc Write(uint32_t rkey, const void *addr, Local &src, uint32_t len) {
    return post_and_wait(cli_.qp, cli_.scq, {IBV_WR_RDMA_WRITE, {sge(src.mr, src.d, len)},
                                             IBV_SEND_SIGNALED, 5, (uint64_t)(uintptr_t)addr, rkey});
  }
  // The software transport completes an RDMA WRITE once the socket has it, before the peer
  // placed it (an RDMA WRITE's completion says nothing about placement). A READ behind it on
  // the same QP completes only after the responder processed the WRITE: after this the server
  // may unbind, invalidate or deallocate the window without racing the WRITE.
  ibv_wc WritePlaced(uint32_t rkey, const void *addr, Local &src, uint32_t len) {
    ibv_wc wc = Write(rkey, addr, src, len);
    if (wc.status != IBV_WC_SUCCESS) return wc;
    static std::vector<uint8_t> ok(64, 0x77);
    ibv_mr *okmr = Reg(srv_.pd, ok.data(), ok.size(), kAllAccess);
    Local sink = MakeLocal(cli_.pd, 8);
    if (!okmr || !sink.mr) return wc;
    return Read(okmr->rkey, ok.data(), sink, 8);
  }
  ibv_wc Read(uint32_t rkey, const void *addr, Local &dst, uint32_t len) {
    return post_and_wait(cli_.qp, cli_.scq, {IBV_WR_RDMA_READ, {sge(dst.mr, dst.d, len)},
                                             IBV_SEND_SIGNALED, 6, (uint64_t)(uintptr_t)addr, rkey});
  }
};

TEST_P(MemoryWindow, DeviceAttributes) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  ibv_device_attr a{};
  ASSERT_EQ(0, ibv_query_device(srv_.ctx, &a));
  EXPECT_GT(a.max_mw, 0);
  EXPECT_TRUE(a.device_cap_flags & IBV_DEVICE_MEM_WINDOW);
  EXPECT_TRUE(a.device_cap_flags & IBV_DEVICE_MEM_WINDOW_TYPE_2B);
  EXPECT_FALSE(a.device_cap_flags & IBV_DEVICE_MEM_WINDOW_TYPE_2A);
}

TEST_P(MemoryWindow, AllocTypes) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  ibv_mw *m1 = AllocMw(srv_.pd, IBV_MW_TYPE_1), *m2 = AllocMw(srv_.pd, IBV_MW_TYPE_2);
  ASSERT_TRUE(m1 && m2);
  EXPECT_EQ(m1->type, IBV_MW_TYPE_1);
  EXPECT_EQ(m2->type, IBV_MW_TYPE_2);
  EXPECT_EQ(m1->pd, srv_.pd);
  EXPECT_NE(m1->rkey >> 8, 0u);
  EXPECT_NE(m1->rkey >> 8, m2->rkey >> 8) << "two windows share an STag index";
  errno = 0;
  EXPECT_EQ(ibv_alloc_mw(srv_.pd, (ibv_mw_type)3), nullptr);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(EBUSY, ibv_dealloc_pd(srv_.pd)) << "a PD with windows was freed";
  // An unbound window's STag admits nothing.
  eca::MrRef ref;
  uint8_t b[8];
  EXPECT_EQ(eca::AccessError::InvalidStag,
            eca::mr_lookup(m1->rkey, eca::Pd::from(srv_.pd), (uint64_t)(uintptr_t)b, 1,
                           IBV_ACCESS_REMOTE_READ, &ref, srv_.qp->qp_num));
}

TEST_P(MemoryWindow, WindowType1Traffic) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  Guarded &g = NewGuarded(8192);
  ibv_mr *mr = Reg(srv_.pd, g.region, g.len, kMwMr);  // no remote rights of its own
  ibv_mw *mw = AllocMw(srv_.pd, IBV_MW_TYPE_1);
  ASSERT_TRUE(mr && mw);
  const uint32_t before = mw->rkey;
  uint8_t *win = g.region + 1024;
  ibv_wc wc = Bind1(srv_.qp, srv_.scq, mw, mr, win, 2048, kRw);
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  EXPECT_EQ(wc.opcode, IBV_WC_BIND_MW);
  EXPECT_EQ(wc.wr_id, 77u);
  EXPECT_EQ(mw->rkey, ibv_inc_rkey(before)) << "ibv_bind_mw(3): the new R_Key is in mw->rkey";
  Local src = MakeLocal(cli_.pd, 4096), dst = MakeLocal(cli_.pd, 4096, 0);
  fill_pattern(src.d, 2048, 7);
  wc = Write(mw->rkey, win, src, 2048);
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  wc = Read(mw->rkey, win, dst, 2048);
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  EXPECT_EQ(0, memcmp(win, src.d, 2048)) << "WRITE through the window misplaced";
  EXPECT_EQ(0, memcmp(dst.d, src.d, 2048)) << "READ through the window returned other bytes";
  for (size_t i = 0; i < g.len; i++)
    if (g.region + i < win || g.region + i >= win + 2048)
      ASSERT_EQ(g.region[i], 0xA5) << "MR byte " << i << " outside the window changed";
  EXPECT_TRUE(g.canary_intact());
  // The old STag (key byte of the allocation) names nothing.
  ExpectWriteRejected(before, win, 16);
}

TEST_P(MemoryWindow, Type1ZeroLengthBindInvalidates) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  Guarded &g = NewGuarded(4096);
  Win w = Bound(IBV_MW_TYPE_1, g.region, g.len, g.region, 4096, kRw);
  ASSERT_TRUE(w.ok);
  Local src = MakeLocal(cli_.pd, 4096, 0x3C);
  ASSERT_EQ(WritePlaced(w.rkey, g.region, src, 64).status, IBV_WC_SUCCESS);
  ibv_wc wc = Bind1(srv_.qp, srv_.scq, w.mw, w.mr, g.region, 0, 0);
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  EXPECT_EQ(wc.opcode, IBV_WC_BIND_MW);
  std::memset(g.region, 0xA5, g.len);
  ExpectWriteRejected(w.rkey, g.region, 64);
  EXPECT_TRUE(g.region_is(0xA5)) << "data placed through an unbound window";
}

TEST_P(MemoryWindow, BoundsCheckedAgainstTheWindow) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  Guarded &g = NewGuarded(8192);
  uint8_t *win = g.region + 4096;
  Win w = Bound(IBV_MW_TYPE_1, g.region, g.len, win, 1024, kRw);
  ASSERT_TRUE(w.ok);
  // One byte past the window's end, inside the MR.
  ExpectWriteRejected(w.rkey, win + 1, 1024);
  EXPECT_TRUE(g.region_is(0xA5)) << "a WRITE beyond the window placed data";
  EXPECT_TRUE(g.canary_intact());
  // One byte before its start.
  ASSERT_NO_FATAL_FAILURE(Reconnect());
  Guarded &g2 = NewGuarded(8192);
  win = g2.region + 4096;
  w = Bound(IBV_MW_TYPE_1, g2.region, g2.len, win, 1024, kRw);
  ASSERT_TRUE(w.ok);
  ExpectWriteRejected(w.rkey, win - 1, 16);
  EXPECT_TRUE(g2.region_is(0xA5)) << "a WRITE below the window placed data";
}

TEST_P(MemoryWindow, AccessCheckedAgainstTheWindow) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  Guarded &g = NewGuarded(4096);
  // A read-only window over a remotely writable MR: the window's rights decide.
  Win w = Bound(IBV_MW_TYPE_1, g.region, g.len, g.region, 4096, IBV_ACCESS_REMOTE_READ,
                kMwMr | IBV_ACCESS_REMOTE_WRITE);
  ASSERT_TRUE(w.ok);
  Local dst = MakeLocal(cli_.pd, 4096, 0);
  ASSERT_EQ(Read(w.rkey, g.region, dst, 128).status, IBV_WC_SUCCESS);
  ExpectWriteRejected(w.rkey, g.region, 64);
  EXPECT_TRUE(g.region_is(0xA5)) << "WRITE through a read-only window";

  // A write-only window: READ through it fails on the READ itself.
  ASSERT_NO_FATAL_FAILURE(Reconnect());
  Guarded &g2 = NewGuarded(4096);
  w = Bound(IBV_MW_TYPE_1, g2.region, g2.len, g2.region, 4096, IBV_ACCESS_REMOTE_WRITE);
  ASSERT_TRUE(w.ok);
  Local dst2 = MakeLocal(cli_.pd, 4096, 0);
  ibv_wc wc = Read(w.rkey, g2.region, dst2, 128);
  EXPECT_EQ(wc.status, IBV_WC_REM_ACCESS_ERR) << wc_status_name(wc.status);
  EXPECT_TRUE(wait_qp_state(srv_.qp, IBV_QPS_ERR));
}

// A window of another PD than the QP the access arrives on: rejected like an MR of another PD
// (RFC 5040 "STag not associated with RDMAP Stream").
TEST_P(MemoryWindow, WindowOfAnotherPdRejected) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  ibv_pd *other = ExtraPd(srv_.ctx);
  Guarded &g = NewGuarded(4096);
  ibv_mr *mr = Reg(other, g.region, g.len, kMwMr);
  ibv_mw *mw = AllocMw(other, IBV_MW_TYPE_1);
  ASSERT_TRUE(other && mr && mw);
  ASSERT_EQ(Bind1(srv_.qp, srv_.scq, mw, mr, g.region, 4096, kRw).status, IBV_WC_SUCCESS);
  ExpectWriteRejected(mw->rkey, g.region, 64);
  EXPECT_TRUE(g.region_is(0xA5)) << "data placed through a window of another PD";
}

// Every bind rule, each on a fresh connection (a failed bind is a local error that ends it).
TEST_P(MemoryWindow, BindErrors) {
  struct Case {
    const char *what;
    int mr_access;
    ibv_mw_type type;
    size_t off, len;
    unsigned access;
    bool other_pd_qp;  // type 2: window and MR in a PD that is not the QP's
    bool twice;        // type 2: bound again without invalidation
  };
  const Case cases[] = {
      {"MR without MW_BIND", IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, IBV_MW_TYPE_1, 0,
       4096, kRw, false, false},
      {"window beyond the MR", kMwMr, IBV_MW_TYPE_1, 2048, 4096, kRw, false, false},
      {"remote write on an MR without local write", IBV_ACCESS_MW_BIND, IBV_MW_TYPE_1, 0, 4096,
       IBV_ACCESS_REMOTE_WRITE, false, false},
      {"type 1 zero-based", kMwMr, IBV_MW_TYPE_1, 0, 4096, kRw | IBV_ACCESS_ZERO_BASED, false,
       false},
      {"unknown access bit", kMwMr, IBV_MW_TYPE_1, 0, 4096, kRw | IBV_ACCESS_MW_BIND, false, false},
      {"type 2 zero length", kMwMr, IBV_MW_TYPE_2, 0, 0, kRw, false, false},
      {"type 2 through a QP of another PD", kMwMr, IBV_MW_TYPE_2, 0, 4096, kRw, true, false},
      {"type 2 bound twice", kMwMr, IBV_MW_TYPE_2, 0, 4096, kRw, false, true},
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(c.what);
    if (srv_.qp) {
      ASSERT_NO_FATAL_FAILURE(Reconnect());
    } else {
      ASSERT_NO_FATAL_FAILURE(Connect());
    }
    ibv_pd *pd = c.other_pd_qp ? ExtraPd(srv_.ctx) : srv_.pd;
    uint8_t *buf = Buf(4096, 0x5A);
    ibv_mr *mr = Reg(pd, buf, 4096, c.mr_access);
    ibv_mw *mw = AllocMw(pd, c.type);
    ASSERT_TRUE(mr && mw);
    const uint32_t rkey_before = mw->rkey;
    ibv_wc wc;
    if (c.type == IBV_MW_TYPE_1) {
      wc = Bind1(srv_.qp, srv_.scq, mw, mr, buf + c.off, c.len, c.access);
    } else {
      if (c.twice) {
        ASSERT_EQ(Bind2(srv_.qp, srv_.scq, mw, mr, buf, 4096, kRw).status, IBV_WC_SUCCESS);
      }
      wc = Bind2(srv_.qp, srv_.scq, mw, mr, buf + c.off, c.len, c.access);
    }
    EXPECT_EQ(wc.status, IBV_WC_MW_BIND_ERR) << wc_status_name(wc.status);
    EXPECT_TRUE(wait_qp_state(srv_.qp, IBV_QPS_ERR)) << "a failed bind left the QP running";
    // Whatever STag the failed bind announced admits nothing.
    eca::MrRef ref;
    EXPECT_NE(eca::AccessError::None,
              eca::mr_lookup(mw->rkey, eca::Pd::from(pd), (uint64_t)(uintptr_t)buf, 1,
                             IBV_ACCESS_REMOTE_READ, &ref, srv_.qp->qp_num));
    (void)rkey_before;
  }
}

// Requests refused when posted: type 1 through ibv_post_send, type 2 through ibv_bind_mw, a
// new STag with another index, a length without an MR.
TEST_P(MemoryWindow, BindRefusedAtPostTime) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  uint8_t *buf = Buf(4096);
  ibv_mr *mr = Reg(srv_.pd, buf, 4096, kMwMr);
  ibv_mw *m1 = AllocMw(srv_.pd, IBV_MW_TYPE_1), *m2 = AllocMw(srv_.pd, IBV_MW_TYPE_2);
  ASSERT_TRUE(mr && m1 && m2);
  ibv_send_wr wr{}, *bad = nullptr;
  wr.opcode = IBV_WR_BIND_MW;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.bind_mw.mw = m1;
  wr.bind_mw.rkey = ibv_inc_rkey(m1->rkey);
  wr.bind_mw.bind_info = {mr, (uint64_t)(uintptr_t)buf, 4096, kRw};
  EXPECT_EQ(EINVAL, ibv_post_send(srv_.qp, &wr, &bad)) << "type 1 bound by a work request";
  wr.bind_mw.mw = m2;
  wr.bind_mw.rkey = m1->rkey;  // another window's index
  EXPECT_EQ(EINVAL, ibv_post_send(srv_.qp, &wr, &bad)) << "new STag of another index";
  wr.bind_mw.rkey = ibv_inc_rkey(m2->rkey);
  wr.bind_mw.bind_info.mr = nullptr;
  EXPECT_EQ(EINVAL, ibv_post_send(srv_.qp, &wr, &bad)) << "a length without an MR";
  ibv_mw_bind b{};
  b.send_flags = IBV_SEND_SIGNALED;
  b.bind_info = {mr, (uint64_t)(uintptr_t)buf, 4096, kRw};
  EXPECT_EQ(EINVAL, ibv_bind_mw(srv_.qp, m2, &b)) << "type 2 bound by ibv_bind_mw";
  EXPECT_TRUE(cq_empty(srv_.scq));
  EXPECT_EQ(qp_state(srv_.qp), IBV_QPS_RTS);
}

TEST_P(MemoryWindow, Type2BindWriteAndLocalInvalidate) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  Guarded &g = NewGuarded(4096);
  Win w = Bound(IBV_MW_TYPE_2, g.region, g.len, g.region + 512, 1024, kRw);
  ASSERT_TRUE(w.ok);
  const uint32_t rkey = w.rkey;
  ibv_wc wc;
  Local src = MakeLocal(cli_.pd, 4096);
  fill_pattern(src.d, 1024, 9);
  ASSERT_EQ(Write(rkey, g.region + 512, src, 1024).status, IBV_WC_SUCCESS);
  Local dst = MakeLocal(cli_.pd, 1024, 0);
  ASSERT_EQ(Read(rkey, g.region + 512, dst, 1024).status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, memcmp(dst.d, src.d, 1024));
  // Local invalidation.
  SendSpec inv{IBV_WR_LOCAL_INV, {}, IBV_SEND_SIGNALED, 88};
  ibv_send_wr iwr = make_wr(inv), *bad = nullptr;
  iwr.invalidate_rkey = rkey;
  ASSERT_EQ(0, ibv_post_send(srv_.qp, &iwr, &bad));
  ASSERT_TRUE(poll_one(srv_.scq, &wc));
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  EXPECT_EQ(wc.opcode, IBV_WC_LOCAL_INV);
  EXPECT_EQ(wc.wr_id, 88u);
  std::memset(g.region, 0xA5, g.len);
  ExpectWriteRejected(rkey, g.region + 512, 64);
  EXPECT_TRUE(g.region_is(0xA5)) << "data placed through an invalidated window";
}

TEST_P(MemoryWindow, Type2RemoteInvalidate) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  Guarded &g = NewGuarded(4096);
  Win w = Bound(IBV_MW_TYPE_2, g.region, g.len, g.region, 4096, kRw);
  Local rq = MakeLocal(srv_.pd, 256, 0), src = MakeLocal(cli_.pd, 256, 0x21);
  ASSERT_TRUE(w.ok);
  const uint32_t rkey = w.rkey;
  ASSERT_EQ(Write(rkey, g.region, src, 32).status, IBV_WC_SUCCESS);
  ASSERT_EQ(0, post_recv(srv_.qp, {sge(rq.mr, rq.d, 256)}, 61));
  SendSpec s{IBV_WR_SEND_WITH_INV, {sge(src.mr, src.d, 100)}, IBV_SEND_SIGNALED, 3};
  s.invalidate = rkey;
  ibv_wc wc = post_and_wait(cli_.qp, cli_.scq, s);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  ASSERT_TRUE(poll_one(srv_.rcq, &wc));
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  EXPECT_EQ(wc.wr_id, 61u);
  EXPECT_EQ(wc.byte_len, 100u);
  EXPECT_TRUE(wc.wc_flags & IBV_WC_WITH_INV);
  EXPECT_EQ(wc.invalidated_rkey, rkey);
  EXPECT_EQ(qp_state(srv_.qp), IBV_QPS_RTS);
  std::memset(g.region, 0xA5, g.len);
  ExpectWriteRejected(rkey, g.region, 64);
  EXPECT_TRUE(g.region_is(0xA5)) << "data placed through a remotely invalidated window";
}

// Type 1 windows cannot be invalidated remotely: the TERMINATE "STag cannot be invalidated"
// (as for an ordinary MR) and the window stays bound.
TEST_P(MemoryWindow, Type1RemoteInvalidateRefused) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  uint8_t *buf = Buf(4096, 0);
  Win w = Bound(IBV_MW_TYPE_1, buf, 4096, buf, 4096, kRw);
  Local rq = MakeLocal(srv_.pd, 256, 0), src = MakeLocal(cli_.pd, 256, 0x21);
  ASSERT_TRUE(w.ok);
  ASSERT_EQ(0, post_recv(srv_.qp, {sge(rq.mr, rq.d, 256)}, 62));
  SendSpec s{IBV_WR_SEND_WITH_INV, {sge(src.mr, src.d, 100)}, IBV_SEND_SIGNALED, 4};
  s.invalidate = w.rkey;
  ASSERT_EQ(0, post(cli_.qp, s));
  ibv_wc wc;
  ASSERT_TRUE(poll_one(srv_.rcq, &wc));
  EXPECT_EQ(wc.wr_id, 62u);
  EXPECT_NE(wc.status, IBV_WC_SUCCESS) << "a type 1 window was invalidated remotely";
  EXPECT_TRUE(wait_qp_state(srv_.qp, IBV_QPS_ERR));
  EXPECT_TRUE(wait_qp_state(cli_.qp, IBV_QPS_ERR)) << "the TERMINATE did not reach the sender";
  eca::MrRef ref;
  EXPECT_EQ(eca::AccessError::None,
            eca::mr_lookup(w.rkey, eca::Pd::from(srv_.pd), (uint64_t)(uintptr_t)buf, 16,
                           IBV_ACCESS_REMOTE_WRITE, &ref, srv_.qp->qp_num))
      << "the window no longer validates";
}

TEST_P(MemoryWindow, Type2DeallocInvalidates) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  Guarded &g = NewGuarded(4096);
  Win w = Bound(IBV_MW_TYPE_2, g.region, g.len, g.region, 4096, kRw);
  Local src = MakeLocal(cli_.pd, 256, 0x21);
  ASSERT_TRUE(w.ok);
  ASSERT_EQ(WritePlaced(w.rkey, g.region, src, 32).status, IBV_WC_SUCCESS);
  Dealloc(w.mw);
  std::memset(g.region, 0xA5, g.len);
  ExpectWriteRejected(w.rkey, g.region, 64);
  EXPECT_TRUE(g.region_is(0xA5)) << "data placed through a deallocated window";
}

// A type 2 window serves the QP it was bound through (type 2B); its STag is no lkey.
TEST_P(MemoryWindow, Type2WindowServesItsQpOnly) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  uint8_t *buf = Buf(4096, 0);
  Win w = Bound(IBV_MW_TYPE_2, buf, 4096, buf, 4096, kRw);
  ASSERT_TRUE(w.ok);
  const uint32_t rkey = w.rkey;
  eca::Pd *pd = eca::Pd::from(srv_.pd);
  const uint64_t a = (uint64_t)(uintptr_t)buf;
  eca::MrRef ref;
  EXPECT_EQ(eca::AccessError::None,
            eca::mr_lookup(rkey, pd, a, 16, IBV_ACCESS_REMOTE_WRITE, &ref, srv_.qp->qp_num));
  EXPECT_EQ(eca::AccessError::ProtDomain,
            eca::mr_lookup(rkey, pd, a, 16, IBV_ACCESS_REMOTE_WRITE, &ref, cli_.qp->qp_num))
      << "a type 2 window served another QP";
  // Not usable as an lkey: a SEND from it is a local protection error.
  ibv_wc wc = post_and_wait(srv_.qp, srv_.scq,
                            {IBV_WR_SEND, {ibv_sge{a, 16, rkey}}, IBV_SEND_SIGNALED, 9});
  EXPECT_EQ(wc.status, IBV_WC_LOC_PROT_ERR) << wc_status_name(wc.status);
}

// The same on the wire: a second connection to the server, whose QP is in the window's PD,
// cannot use a type 2 window bound through the first one (type 2B); a type 1 window serves
// both.
TEST_P(MemoryWindow, Type2WindowRefusedOnAnotherQpOfItsPd) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  // Second pair: client (own channel, PD, CQ, QP) -> server QP in srv_.pd.
  struct Pair2 {
    rdma_event_channel *ch = nullptr;
    rdma_cm_id *cid = nullptr, *sid = nullptr;
    ibv_pd *cpd = nullptr;
    ibv_cq *ccq = nullptr, *scq = nullptr;
    ~Pair2() {
      if (cid && cid->qp) rdma_disconnect(cid);
      if (sid && sid->qp) rdma_destroy_qp(sid);
      if (cid && cid->qp) rdma_destroy_qp(cid);
      if (ch)
        while (rdma_cm_event *ev = next_cm_event(ch, 0)) rdma_ack_cm_event(ev);
      if (sid) rdma_destroy_id(sid);
      if (cid) rdma_destroy_id(cid);
      if (scq) ibv_destroy_cq(scq);
      if (ccq) ibv_destroy_cq(ccq);
      if (cpd) ibv_dealloc_pd(cpd);
      if (ch) rdma_destroy_event_channel(ch);
    }
  };
  auto p2 = std::make_unique<Pair2>();
  p2->ch = rdma_create_event_channel();
  ASSERT_NE(p2->ch, nullptr);
  ASSERT_EQ(0, rdma_create_id(p2->ch, &p2->cid, nullptr, RDMA_PS_TCP));
  sockaddr_in da = loopback_addr(port_);
  ASSERT_EQ(0, rdma_resolve_addr(p2->cid, nullptr, reinterpret_cast<sockaddr *>(&da), 2000));
  ASSERT_TRUE(wait_cm_event(p2->ch, RDMA_CM_EVENT_ADDR_RESOLVED));
  ASSERT_EQ(0, rdma_resolve_route(p2->cid, 2000));
  ASSERT_TRUE(wait_cm_event(p2->ch, RDMA_CM_EVENT_ROUTE_RESOLVED));
  ASSERT_TRUE(make_rc_qp(p2->cid, 16, &p2->cpd, &p2->ccq));
  rdma_conn_param cp{};
  cp.initiator_depth = cp.responder_resources = 16;
  ASSERT_EQ(0, rdma_connect(p2->cid, &cp));
  ASSERT_TRUE(wait_cm_event(lch_, RDMA_CM_EVENT_CONNECT_REQUEST, kTimeoutMs, &p2->sid));
  p2->scq = ibv_create_cq(p2->sid->verbs, 64, nullptr, nullptr, 0);
  ASSERT_NE(p2->scq, nullptr);
  ibv_qp_init_attr qa{};
  qa.send_cq = qa.recv_cq = p2->scq;
  qa.qp_type = IBV_QPT_RC;
  qa.cap.max_send_wr = qa.cap.max_recv_wr = 16;
  qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
  ASSERT_EQ(p2->sid->verbs, srv_.ctx);
  ASSERT_EQ(0, rdma_create_qp(p2->sid, srv_.pd, &qa));  // the window's PD
  ASSERT_EQ(0, rdma_accept(p2->sid, &cp));
  ASSERT_TRUE(wait_cm_event(lch_, RDMA_CM_EVENT_ESTABLISHED));
  ASSERT_TRUE(wait_cm_event(p2->ch, RDMA_CM_EVENT_ESTABLISHED));

  Guarded &g = NewGuarded(4096);
  ibv_mr *mr = Reg(srv_.pd, g.region, g.len, kMwMr);
  ibv_mw *m1 = AllocMw(srv_.pd, IBV_MW_TYPE_1), *m2 = AllocMw(srv_.pd, IBV_MW_TYPE_2);
  ASSERT_TRUE(mr && m1 && m2);
  ASSERT_EQ(Bind1(srv_.qp, srv_.scq, m1, mr, g.region, 2048, kRw).status, IBV_WC_SUCCESS);
  uint32_t rkey2 = 0;
  ASSERT_EQ(Bind2(srv_.qp, srv_.scq, m2, mr, g.region + 2048, 2048, kRw, &rkey2).status,
            IBV_WC_SUCCESS);
  std::vector<uint8_t> src(256, 0x61);
  ibv_mr *smr = ibv_reg_mr(p2->cpd, src.data(), src.size(), kAllAccess);
  ASSERT_NE(smr, nullptr);
  // Type 1: any QP of the window's PD.
  ibv_wc wc = post_and_wait(p2->cid->qp, p2->ccq,
                            {IBV_WR_RDMA_READ, {sge(smr, src.data(), 64)}, IBV_SEND_SIGNALED, 1,
                             (uint64_t)(uintptr_t)g.region, m1->rkey});
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << "type 1 window over the second QP: "
                                       << wc_status_name(wc.status);
  // Type 2: not through this QP. A WRITE then a READ: one of them reports the error.
  std::vector<SendSpec> chain = {
      {IBV_WR_RDMA_WRITE, {sge(smr, src.data(), 64)}, IBV_SEND_SIGNALED, 2,
       (uint64_t)(uintptr_t)(g.region + 2048), rkey2},
      {IBV_WR_RDMA_READ, {sge(smr, src.data() + 64, 8)}, IBV_SEND_SIGNALED, 3,
       (uint64_t)(uintptr_t)g.region, m1->rkey}};
  ASSERT_EQ(0, post_chain(p2->cid->qp, chain));
  auto wcs = poll_n(p2->ccq, 2);
  ASSERT_EQ(wcs.size(), 2u);
  EXPECT_TRUE(wcs[0].status == IBV_WC_REM_ACCESS_ERR || wcs[1].status == IBV_WC_REM_ACCESS_ERR)
      << wc_status_name(wcs[0].status) << " / " << wc_status_name(wcs[1].status);
  EXPECT_TRUE(std::all_of(g.region + 2048, g.region + 4096, [](uint8_t b) { return b == 0xA5; }))
      << "a type 2 window served another QP";
  // Through its own QP it still works.
  Local lsrc = MakeLocal(cli_.pd, 64, 0x62);
  EXPECT_EQ(WritePlaced(rkey2, g.region + 2048, lsrc, 64).status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, ibv_dereg_mr(smr));
  p2.reset();
}

// RFC 7306 atomics through a window: the window's REMOTE_ATOMIC right is what counts (the MR
// itself grants no remote access), and a window without it refuses the atomic.
TEST_P(MemoryWindow, AtomicsThroughAWindow) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  uint8_t *mem = Buf(4096, 0);
  Win atomic = Bound(IBV_MW_TYPE_2, mem, 4096, mem, 64, IBV_ACCESS_REMOTE_ATOMIC);
  Win rw = Bound(IBV_MW_TYPE_2, mem, 4096, mem + 64, 64, kRw);
  ASSERT_TRUE(atomic.ok && rw.ok);
  Local res = MakeLocal(cli_.pd, 8, 0xEE);
  auto fetch_add = [&](uint32_t rkey, uint8_t *addr, uint64_t add) {
    ibv_sge s = sge(res.mr, res.d, 8);
    ibv_send_wr wr{}, *bad = nullptr;
    wr.wr_id = 9;
    wr.opcode = IBV_WR_ATOMIC_FETCH_AND_ADD;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.sg_list = &s;
    wr.num_sge = 1;
    wr.wr.atomic.remote_addr = (uint64_t)(uintptr_t)addr;
    wr.wr.atomic.compare_add = add;
    wr.wr.atomic.rkey = rkey;
    ibv_wc wc{};
    wc.status = IBV_WC_GENERAL_ERR;
    EXPECT_EQ(0, ibv_post_send(cli_.qp, &wr, &bad));
    EXPECT_TRUE(poll_one(cli_.scq, &wc)) << "no completion for the atomic";
    return wc;
  };
  uint64_t word = 40;
  std::memcpy(mem + 8, &word, 8);
  ibv_wc wc = fetch_add(atomic.rkey, mem + 8, 2);
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  std::memcpy(&word, res.d, 8);
  EXPECT_EQ(word, 40u) << "original value returned";
  std::memcpy(&word, mem + 8, 8);
  EXPECT_EQ(word, 42u);
  // Through the window without REMOTE_ATOMIC: refused, the word stays.
  wc = fetch_add(rw.rkey, mem + 64, 1);
  EXPECT_EQ(wc.status, IBV_WC_REM_ACCESS_ERR) << wc_status_name(wc.status);
  EXPECT_TRUE(std::all_of(mem + 64, mem + 128, [](uint8_t b) { return b == 0; }));
}

// ibv_dereg_mr(3) fails while a window is bound to the MR (EINVAL, as rxe; IBA 10.6.7.2.6);
// the window keeps working; once unbound, the MR deregisters.
TEST_P(MemoryWindow, DeregisterMrWithBoundWindowFails) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  uint8_t *buf = Buf(4096, 0);
  Win w = Bound(IBV_MW_TYPE_1, buf, 4096, buf, 4096, kRw);
  Local src = MakeLocal(cli_.pd, 256, 0x6B);
  ASSERT_TRUE(w.ok);
  EXPECT_EQ(EINVAL, ibv_dereg_mr(w.mr));
  ASSERT_EQ(Write(w.rkey, buf + 100, src, 64).status, IBV_WC_SUCCESS);
  Local dst = MakeLocal(cli_.pd, 64, 0);
  ASSERT_EQ(Read(w.rkey, buf + 100, dst, 64).status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, memcmp(buf + 100, src.d, 64));
  ASSERT_EQ(Bind1(srv_.qp, srv_.scq, w.mw, w.mr, buf, 0, 0).status, IBV_WC_SUCCESS);
  Dereg(w.mr);
}

// The ibv_wr_* builders: bind and local invalidation of a type 2 window on the requester.
TEST_P(MemoryWindow, WrApiBindAndLocalInvalidate) {
  ConnOpts o;
  o.client_send_ops = IBV_QP_EX_WITH_SEND | IBV_QP_EX_WITH_BIND_MW | IBV_QP_EX_WITH_LOCAL_INV;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  ibv_qp_ex *qpx = ibv_qp_to_qp_ex(cli_.qp);
  ASSERT_NE(qpx, nullptr);
  uint8_t *buf = Buf(4096, 0);
  ibv_mr *mr = Reg(cli_.pd, buf, 4096, kMwMr);
  ibv_mw *mw = AllocMw(cli_.pd, IBV_MW_TYPE_2);
  ASSERT_TRUE(mr && mw);
  const uint32_t rkey = ibv_inc_rkey(mw->rkey);
  ibv_mw_bind_info info{mr, (uint64_t)(uintptr_t)buf, 4096, kRw};
  ibv_wr_start(qpx);
  qpx->wr_id = 31;
  qpx->wr_flags = IBV_SEND_SIGNALED;
  ibv_wr_bind_mw(qpx, mw, rkey, &info);
  ASSERT_EQ(0, ibv_wr_complete(qpx));
  ibv_wc wc;
  ASSERT_TRUE(poll_one(cli_.scq, &wc));
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  EXPECT_EQ(wc.opcode, IBV_WC_BIND_MW);
  EXPECT_EQ(wc.wr_id, 31u);
  // The server WRITEs into the client's window.
  Local src = MakeLocal(srv_.pd, 256, 0x4D);
  wc = post_and_wait(srv_.qp, srv_.scq, {IBV_WR_RDMA_WRITE, {sge(src.mr, src.d, 128)},
                                         IBV_SEND_SIGNALED, 32, (uint64_t)(uintptr_t)buf, rkey});
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  Local dst = MakeLocal(srv_.pd, 128, 0);
  wc = post_and_wait(srv_.qp, srv_.scq, {IBV_WR_RDMA_READ, {sge(dst.mr, dst.d, 128)},
                                         IBV_SEND_SIGNALED, 33, (uint64_t)(uintptr_t)buf, rkey});
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  EXPECT_EQ(0, memcmp(buf, src.d, 128));
  ibv_wr_start(qpx);
  qpx->wr_id = 34;
  qpx->wr_flags = IBV_SEND_SIGNALED;
  ibv_wr_local_inv(qpx, rkey);
  ASSERT_EQ(0, ibv_wr_complete(qpx));
  ASSERT_TRUE(poll_one(cli_.scq, &wc));
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  EXPECT_EQ(wc.opcode, IBV_WC_LOCAL_INV);
  eca::MrRef ref;
  EXPECT_EQ(eca::AccessError::InvalidStag,
            eca::mr_lookup(rkey, eca::Pd::from(cli_.pd), (uint64_t)(uintptr_t)buf, 16,
                           IBV_ACCESS_REMOTE_WRITE, &ref, cli_.qp->qp_num));
  // A second local invalidation of the same STag fails (nothing bound under it).
  ibv_wr_start(qpx);
  qpx->wr_id = 35;
  ibv_wr_local_inv(qpx, rkey);
  ASSERT_EQ(0, ibv_wr_complete(qpx));
  ASSERT_TRUE(poll_one(cli_.scq, &wc));
  EXPECT_EQ(wc.status, IBV_WC_LOC_QP_OP_ERR) << wc_status_name(wc.status);
  EXPECT_EQ(wc.wr_id, 35u);
}

ECA_INSTANTIATE_BACKENDS(MemoryWindow);

}  // namespace

// Memory registration as strict as the kernel's pinning (ib_umem_get), on both backends, and
// what the data path may rely on afterwards: a peer can only reach memory that really is
// registered, and ibv_dereg_mr returns only when nothing touches the memory any more.
//
// A failed registration gives the peer nothing to aim at; the tests then run a peer's WRITE
// and READ against what is registered (between guard pages) and check the target process is
// still here and unchanged outside the region. Before registration checked the mapping, the
// bad ranges were accepted and a peer's WRITE into them ended this process with SIGSEGV.
#include "tests/unit/fixture.hpp"

#include <sys/mman.h>
#include <sys/stat.h>

#include <atomic>
#include <future>
#include <thread>

#include "provider/core/mem_pin.hpp"
#include "provider/core/objects.hpp"

using namespace ecatest;

namespace {

const size_t kPg = (size_t)sysconf(_SC_PAGESIZE);
constexpr int kWr = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;

class Registration : public EcaTest {
 protected:
  // ibv_reg_mr that must fail: returns errno (0 if it unexpectedly succeeded; then dereg'd).
  static int RegFails(ibv_pd *pd, void *addr, size_t len, int access) {
    errno = 0;
    ibv_mr *mr = ibv_reg_mr(pd, addr, len, access);
    if (mr) {
      ibv_dereg_mr(mr);
      return 0;
    }
    return errno;
  }
};

struct Map {
  uint8_t *p = nullptr;
  size_t len = 0;
  Map(size_t n, int prot, int flags = MAP_PRIVATE | MAP_ANONYMOUS, int fd = -1) : len(n) {
    void *m = ::mmap(nullptr, n, prot, flags, fd, 0);
    p = m == MAP_FAILED ? nullptr : static_cast<uint8_t *>(m);
  }
  ~Map() {
    if (p) ::munmap(p, len);
  }
};

TEST_P(Registration, BadRangesFailLikeThePinningKernel) {
  Connect();
  ibv_pd *pd = srv_.pd;
  // Five pages, the fifth an inaccessible guard (PROT_NONE) that nothing else can be mapped
  // into while the test runs (the modeled adapter maps memory from its own threads).
  Map m(5 * kPg, PROT_READ | PROT_WRITE);
  ASSERT_NE(m.p, nullptr);
  ASSERT_EQ(0, ::mprotect(m.p + 4 * kPg, kPg, PROT_NONE));

  EXPECT_EQ(EINVAL, RegFails(pd, m.p, 0, kWr)) << "zero-length MR";
  // Lengths far beyond the mapping.
  EXPECT_EQ(EFAULT, RegFails(pd, m.p, 1ull << 50, kWr)) << "2^50 bytes";
  EXPECT_EQ(EFAULT, RegFails(pd, m.p, 1ull << 40, kWr)) << "1 TiB";
  EXPECT_EQ(EFAULT, RegFails(pd, m.p, 1ull << 40, 0)) << "1 TiB, read-only";
  EXPECT_EQ(EFAULT, RegFails(pd, m.p + kPg, 4 * kPg, kWr)) << "runs into the inaccessible guard page";
  // A hole in the middle. Other threads of this process (the adapter's) map memory too, and
  // a page of theirs may land in the hole meanwhile: the case is then inconclusive and is
  // repeated with a new hole (bounded); what fills the hole is never unmapped by us.
  for (int attempt = 0;; attempt++) {
    void *v = ::mmap(nullptr, 4 * kPg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(v, MAP_FAILED);
    auto *h = static_cast<uint8_t *>(v);
    ASSERT_EQ(0, ::munmap(h + kPg, kPg));
    const int rw = RegFails(pd, h, 4 * kPg, kWr), ro = RegFails(pd, h, 4 * kPg, IBV_ACCESS_REMOTE_READ),
              in = RegFails(pd, h + kPg + 8, 16, kWr);
    const bool still_hole = ::msync(h + kPg, kPg, MS_ASYNC) != 0 && errno == ENOMEM;
    ::munmap(h, kPg);
    ::munmap(h + 2 * kPg, 2 * kPg);
    if (!still_hole && attempt < 5) continue;
    EXPECT_TRUE(still_hole) << "another thread kept mapping pages into the hole";
    EXPECT_EQ(EFAULT, rw) << "range with an unmapped hole";
    EXPECT_EQ(EFAULT, ro) << "hole, read-only MR";
    EXPECT_EQ(EFAULT, in) << "wholly unmapped";
    break;
  }
  // Read-only memory: writable access fails, read-only registration works.
  ASSERT_EQ(0, ::mprotect(m.p + 2 * kPg, kPg, PROT_READ));
  EXPECT_EQ(EFAULT, RegFails(pd, m.p + 2 * kPg, kPg, kWr)) << "PROT_READ + REMOTE_WRITE";
  EXPECT_EQ(EFAULT, RegFails(pd, m.p + 2 * kPg, kPg, IBV_ACCESS_LOCAL_WRITE))
      << "PROT_READ + LOCAL_WRITE";
  EXPECT_EQ(EFAULT, RegFails(pd, m.p + 2 * kPg, 2 * kPg, kWr)) << "partly read-only";
  ibv_mr *ro = ibv_reg_mr(pd, m.p + 2 * kPg, kPg, IBV_ACCESS_REMOTE_READ);
  EXPECT_NE(ro, nullptr) << "read-only MR on PROT_READ memory: " << strerror(errno);
  if (ro) {
    EXPECT_EQ(0, ibv_dereg_mr(ro));
  }
  // No access at all.
  ASSERT_EQ(0, ::mprotect(m.p + 3 * kPg, kPg, PROT_NONE));
  EXPECT_EQ(EFAULT, RegFails(pd, m.p + 3 * kPg, kPg, 0)) << "PROT_NONE";
  // What remains valid still registers.
  ibv_mr *ok = ibv_reg_mr(pd, m.p, kPg, kWr);
  EXPECT_NE(ok, nullptr) << strerror(errno);
  if (ok) {
    EXPECT_EQ(0, ibv_dereg_mr(ok));
  }
}

// A shared file mapping that runs past the end of its file: the pages beyond EOF would raise
// SIGBUS when touched, so pinning (and registration) fails. The part inside the file works,
// and registering it for write changes neither the memory nor the file.
TEST_P(Registration, FileMappingBeyondEofAndContentsKept) {
  Connect();
  ibv_pd *pd = srv_.pd;
  char path[] = "/tmp/eca-reg-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::unlink(path);
  std::vector<uint8_t> pat(kPg);
  fill_pattern(pat.data(), pat.size(), 7);
  ASSERT_EQ((ssize_t)kPg, ::pwrite(fd, pat.data(), kPg, 0));
  Map m(2 * kPg, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
  ASSERT_NE(m.p, nullptr);
  EXPECT_EQ(EFAULT, RegFails(pd, m.p, 2 * kPg, kWr)) << "second page lies beyond EOF";
  EXPECT_EQ(EFAULT, RegFails(pd, m.p + kPg, 64, 0)) << "read-only MR beyond EOF";
  ibv_mr *mr = ibv_reg_mr(pd, m.p, kPg, kWr);
  ASSERT_NE(mr, nullptr) << strerror(errno);
  EXPECT_EQ(0, std::memcmp(m.p, pat.data(), kPg)) << "registration changed the memory";
  std::vector<uint8_t> back(kPg);
  ASSERT_EQ((ssize_t)kPg, ::pread(fd, back.data(), kPg, 0));
  EXPECT_EQ(0, std::memcmp(back.data(), pat.data(), kPg)) << "registration changed the file";
  EXPECT_EQ(0, ibv_dereg_mr(mr));
  ::close(fd);
}

// After the failed registrations the target is alive and a peer's WRITE and READ reach
// exactly what is registered, between guard pages.
TEST_P(Registration, PeerWriteAndReadReachOnlyTheRegisteredRange) {
  Connect();
  Map bad(2 * kPg, PROT_READ);
  ASSERT_NE(bad.p, nullptr);
  EXPECT_EQ(EFAULT, RegFails(srv_.pd, bad.p, kPg, kWr));
  EXPECT_EQ(EFAULT, RegFails(srv_.pd, bad.p, 1ull << 50, kWr));

  Guarded &g = NewGuarded(3 * kPg + 100);
  ibv_mr *tmr = Reg(srv_.pd, g.region, g.len, kAllAccess);
  ASSERT_NE(tmr, nullptr);
  const size_t n = g.len;
  uint8_t *src = Alloc(n);
  fill_pattern(src, n, 3);
  ibv_mr *smr = Reg(cli_.pd, src, n, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(smr, nullptr);
  ibv_wc wc = post_and_wait(cli_.qp, cli_.scq,
                            {IBV_WR_RDMA_WRITE, {sge(smr, src, (uint32_t)n)}, IBV_SEND_SIGNALED,
                             1, (uint64_t)(uintptr_t)g.region, tmr->rkey});
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  uint8_t *back = Alloc(n);
  ibv_mr *bmr = Reg(cli_.pd, back, n, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(bmr, nullptr);
  wc = post_and_wait(cli_.qp, cli_.scq,
                     {IBV_WR_RDMA_READ, {sge(bmr, back, (uint32_t)n)}, IBV_SEND_SIGNALED, 2,
                      (uint64_t)(uintptr_t)g.region, tmr->rkey});
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  EXPECT_EQ(0, std::memcmp(back, src, n));
  EXPECT_EQ(0, std::memcmp(g.region, src, n));
  EXPECT_TRUE(g.canary_intact());
}

// ibv_dereg_mr waits for accesses in flight (MrUse) and none start afterwards.
TEST_P(Registration, DeregWaitsForAccessInFlight) {
  Connect();
  uint8_t *buf = Alloc(kPg);
  ibv_mr *mr = ibv_reg_mr(srv_.pd, buf, kPg, kWr);
  ASSERT_NE(mr, nullptr);
  const uint32_t key = mr->rkey;
  const eca::Pd *pd = eca::Pd::from(srv_.pd);
  eca::MrRef r;  // what a placement site holds: keeps the object, not the registration
  ASSERT_EQ(eca::AccessError::None,
            eca::mr_lookup(key, pd, (uint64_t)(uintptr_t)buf, 8, IBV_ACCESS_REMOTE_WRITE, &r));
  auto use = std::make_unique<eca::MrUse>();
  ASSERT_TRUE(use->enter(r));
  std::atomic<bool> returned{false};
  auto f = std::async(std::launch::async, [&] {
    int rc = ibv_dereg_mr(mr);
    returned = true;
    return rc;
  });
  // Bounded: deregistration must still be waiting while the access is held.
  EXPECT_EQ(std::future_status::timeout, f.wait_for(std::chrono::milliseconds(200)))
      << "ibv_dereg_mr returned while an access was in flight";
  EXPECT_FALSE(returned.load());
  use.reset();  // the access ends
  ASSERT_EQ(std::future_status::ready, f.wait_for(std::chrono::milliseconds(kTimeoutMs)));
  EXPECT_EQ(0, f.get());
  // The object is gone for new lookups; no access can start on what was deregistered.
  eca::MrRef r2;
  EXPECT_EQ(eca::AccessError::InvalidStag,
            eca::mr_lookup(key, pd, (uint64_t)(uintptr_t)buf, 8, IBV_ACCESS_REMOTE_WRITE, &r2));
  eca::MrUse late;
  EXPECT_FALSE(late.enter(r)) << "an access started on a deregistered MR";
}

// A peer keeps WRITing into an MR while the target deregisters it and at once puts other
// memory at the same address: nothing of the peer may land there after ibv_dereg_mr returned
// (the target must neither fault nor see its new memory change). A stress check: the window
// it probes is narrow; DeregWaitsForAccessInFlight checks the mechanism deterministically.
TEST_P(Registration, NoPlacementAfterDeregUnderTraffic) {
  Connect();
  constexpr size_t kLen = 1u << 20, kMsg = 64u << 10;
  void *m = ::mmap(nullptr, kLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(m, MAP_FAILED);
  auto *tgt = static_cast<uint8_t *>(m);
  ibv_mr *tmr = ibv_reg_mr(srv_.pd, tgt, kLen, kWr);
  ASSERT_NE(tmr, nullptr);
  uint8_t *src = Alloc(kMsg, 0xC3);
  ibv_mr *smr = Reg(cli_.pd, src, kMsg, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(smr, nullptr);
  std::atomic<int> done{0};
  std::atomic<bool> stop{false};
  const uint32_t rkey = tmr->rkey;  // the writer keeps using it after tmr is deregistered
  std::thread writer([&] {
    int inflight = 0;
    uint64_t k = 0;
    const auto end = Clock::now() + std::chrono::milliseconds(kTimeoutMs);
    while (!stop && Clock::now() < end) {
      while (inflight < 16 &&
             post(cli_.qp, {IBV_WR_RDMA_WRITE, {sge(smr, src, kMsg)}, IBV_SEND_SIGNALED, k,
                            (uint64_t)(uintptr_t)tgt + (k % (kLen / kMsg)) * kMsg, rkey}) == 0) {
        k++;
        inflight++;
      }
      ibv_wc wc[16];
      int n = ibv_poll_cq(cli_.scq, 16, wc);
      for (int i = 0; i < n; i++) {
        inflight--;
        if (wc[i].status != IBV_WC_SUCCESS) return;  // the target refused the stale STag
        done++;
      }
    }
  });
  const auto deadline = Clock::now() + std::chrono::milliseconds(kTimeoutMs);
  while (done < 32 && Clock::now() < deadline) std::this_thread::yield();
  EXPECT_GE(done.load(), 32) << "the peer's WRITEs did not get going";
  ASSERT_EQ(0, ibv_dereg_mr(tmr));
  // Other memory at the same address, right away.
  void *again = ::mmap(tgt, kLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                       -1, 0);
  ASSERT_EQ(again, static_cast<void *>(tgt));
  std::memset(tgt, 0x5A, kLen);
  // The peer's WRITEs after the deregistration fail (TERMINATE) or flush; give stragglers
  // the time they would need to land, bounded by the writer's own end.
  EXPECT_TRUE(wait_qp_state(srv_.qp, IBV_QPS_ERR)) << "WRITEs to a deregistered STag accepted";
  stop = true;
  writer.join();
  size_t changed = 0;
  for (size_t i = 0; i < kLen; i++) changed += tgt[i] != 0x5A;
  EXPECT_EQ(changed, 0u) << "bytes placed after ibv_dereg_mr returned";
  ::munmap(tgt, kLen);
}

// The fallback used where MADV_POPULATE_* does not exist: /proc/self/maps alone.
TEST(MemMaps, CoverageAndPermissions) {
  const char maps[] =
      "1000-3000 rw-p 00000000 00:00 0\n"
      "3000-4000 r--p 00000000 00:00 0 /x\n"
      "5000-6000 rw-s 00000000 00:00 0\n"
      "6000-7000 ---p 00000000 00:00 0\n";
  const size_t n = sizeof maps - 1;
  EXPECT_EQ(0, eca::mem_maps_check(maps, n, 0x1000, 0x3000, true));
  EXPECT_EQ(0, eca::mem_maps_check(maps, n, 0x2000, 0x4000, false));
  EXPECT_EQ(EFAULT, eca::mem_maps_check(maps, n, 0x2000, 0x4000, true)) << "read-only part";
  EXPECT_EQ(EFAULT, eca::mem_maps_check(maps, n, 0x3000, 0x6000, false)) << "hole at 0x4000";
  EXPECT_EQ(EFAULT, eca::mem_maps_check(maps, n, 0x6000, 0x7000, false)) << "PROT_NONE";
  EXPECT_EQ(EFAULT, eca::mem_maps_check(maps, n, 0x5000, 0x8000, false)) << "past the end";
  EXPECT_EQ(EFAULT, eca::mem_maps_check(maps, n, 0x0, 0x1000, false)) << "before the first";
}

TEST(MemMaps, PopulateIsAvailableOnThisKernel) {
  // Linux 5.14+: the test machines run newer kernels; the fallback is tested above.
  EXPECT_TRUE(eca::mem_populate_supported());
}

}  // namespace

ECA_INSTANTIATE_BACKENDS(Registration);

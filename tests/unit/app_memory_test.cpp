// Application memory under registration, and what a peer's operations may do to it, with a
// real peer process: the device must leave the application's memory semantics as they are
// without it (file-backed and shared mappings, read-only pages, concurrent writers, fork()),
// change no byte outside an MR, and complete a Send once the peer placed it, whatever the
// peer does next. Careless and hostile cases: the target always survives.
//
// Peers are child processes (tests/unit/child_process.hpp): fork+exec first thing in a test.
#include "tests/unit/child_process.hpp"

#include <sys/stat.h>

#include <atomic>
#include <fstream>

using namespace ecatest;

namespace {

// What the parent offers the peer, in the accept's private data.
struct Offer {
  uint64_t addr;
  uint32_t rkey;
  uint32_t len;
  uint32_t seed;  // the pattern a WRITE places
  uint32_t ops;   // kOp* bits, done in this order: READ, WRITE
};
constexpr uint32_t kOpRead = 1, kOpWrite = 2;

// ---------------------------------------------------------------------------------------------
// Child side (plain code, no gtest): exit codes tell the parent what went wrong.

struct Client {
  rdma_event_channel *ch = nullptr;
  rdma_cm_id *id = nullptr;
  ibv_pd *pd = nullptr;
  ibv_cq *cq = nullptr;
};

// Connects to the parent's listener (port from the pipe); the QP's receive is posted into
// `recv_buf` before connecting when given. 0 or an exit code.
int connect_parent(int in_fd, Client &c, std::vector<uint8_t> *pdata, uint8_t *recv_buf = nullptr,
                   size_t recv_len = 0, ibv_mr **recv_mr = nullptr) {
  uint16_t port = 0;
  if (!read_full(in_fd, &port, sizeof port, kTimeoutMs)) return 10;
  c.ch = rdma_create_event_channel();
  if (!c.ch || rdma_create_id(c.ch, &c.id, nullptr, RDMA_PS_TCP)) return 11;
  sockaddr_in d = loopback_addr(port);
  if (rdma_resolve_addr(c.id, nullptr, reinterpret_cast<sockaddr *>(&d), 2000) ||
      !wait_cm_event(c.ch, RDMA_CM_EVENT_ADDR_RESOLVED) || rdma_resolve_route(c.id, 2000) ||
      !wait_cm_event(c.ch, RDMA_CM_EVENT_ROUTE_RESOLVED))
    return 12;
  if (!make_rc_qp(c.id, 16, &c.pd, &c.cq)) return 13;
  if (recv_buf) {
    *recv_mr = ibv_reg_mr(c.pd, recv_buf, recv_len, IBV_ACCESS_LOCAL_WRITE);
    if (!*recv_mr || post_recv(c.id->qp, {sge(*recv_mr, recv_buf, (uint32_t)recv_len)}, 1))
      return 15;
  }
  rdma_conn_param cp{};
  cp.initiator_depth = cp.responder_resources = 4;
  if (rdma_connect(c.id, &cp)) return 16;
  if (!wait_cm_event(c.ch, RDMA_CM_EVENT_ESTABLISHED, kTimeoutMs, nullptr, pdata)) return 17;
  return 0;
}

// connect_parent, then the parent's Offer from the accept's private data. 0 or an exit code.
int connect_for_offer(int in_fd, Client &c, Offer *o) {
  std::vector<uint8_t> pdata;
  if (int rc = connect_parent(in_fd, c, &pdata)) return rc;
  if (pdata.size() < sizeof(Offer)) return 20;
  std::memcpy(o, pdata.data(), sizeof *o);
  return 0;
}

// Does what the offer asks (READ, then WRITE) and reports each completion status on the
// pipe (one byte each; a READ's bytes follow its status). Stays connected until the parent
// says 'Q'.
int child_accessor(int in_fd, int out_fd) {
  Client c;
  Offer o;
  if (int rc = connect_for_offer(in_fd, c, &o)) return rc;
  std::vector<uint8_t> buf(o.len);
  ibv_mr *mr = ibv_reg_mr(c.pd, buf.data(), buf.size(), IBV_ACCESS_LOCAL_WRITE);
  if (!mr) return 21;
  for (uint32_t op : {kOpRead, kOpWrite}) {
    if (!(o.ops & op)) continue;
    if (op == kOpWrite) fill_pattern(buf.data(), buf.size(), o.seed);
    ibv_wc wc = {};
    if (post(c.id->qp, {op == kOpRead ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE,
                        {sge(mr, buf.data(), o.len)}, IBV_SEND_SIGNALED, op, o.addr, o.rkey}))
      return 22;
    if (!poll_one(c.cq, &wc)) return 23;
    const uint8_t st = (uint8_t)wc.status;
    if (!write_full(out_fd, &st, 1)) return 24;
    if (op == kOpRead && wc.status == IBV_WC_SUCCESS && !write_full(out_fd, buf.data(), o.len))
      return 25;
  }
  char q = 0;
  read_full(in_fd, &q, 1, kTimeoutMs);
  return 0;
}

// Receives one Send and exits at once, without disconnecting: the sender's Send must still
// complete successfully (it was placed).
int child_receive_and_exit(int in_fd, int out_fd) {
  Client c;
  static uint8_t rbuf[64];
  ibv_mr *rmr = nullptr;
  if (int rc = connect_parent(in_fd, c, nullptr, rbuf, sizeof rbuf, &rmr)) return rc;
  const char ready = 'R';
  if (!write_full(out_fd, &ready, 1)) return 30;
  ibv_wc wc{};
  if (!poll_one(c.cq, &wc)) return 31;
  if (wc.status != IBV_WC_SUCCESS || rbuf[0] != 0x5a) return 32;
  ::_exit(0);  // no disconnect, no teardown
}

// A hostile peer of the modeled adapter: WRITEs 64 bytes into the offered MR (so its adapter
// maps the region), reports the status, waits for 'D' (the parent deregistered the MR), then
// writes 0xEE through every writable mapping of a registration memfd it has (its own MR is
// smaller than a page, so these are the parent's), reports how many, and waits for 'Q'.
int child_stale_writer(int in_fd, int out_fd) {
  Client c;
  Offer o;
  if (int rc = connect_for_offer(in_fd, c, &o)) return rc;
  alignas(64) static uint8_t buf[64];
  ibv_mr *mr = ibv_reg_mr(c.pd, buf, sizeof buf, IBV_ACCESS_LOCAL_WRITE);
  if (!mr) return 21;
  fill_pattern(buf, sizeof buf, o.seed);
  ibv_wc wc = {};
  if (post(c.id->qp, {IBV_WR_RDMA_WRITE, {sge(mr, buf, sizeof buf)}, IBV_SEND_SIGNALED, 1,
                      o.addr, o.rkey}) ||
      !poll_one(c.cq, &wc))
    return 22;
  const uint8_t st = (uint8_t)wc.status;
  if (!write_full(out_fd, &st, 1)) return 23;
  char d = 0;
  if (!read_full(in_fd, &d, 1, kTimeoutMs) || d != 'D') return 24;
  uint8_t mapped = 0;
  std::ifstream f("/proc/self/maps");
  std::string line;
  while (std::getline(f, line)) {
    unsigned long long a = 0, e = 0;
    char perms[8] = {};
    if (std::sscanf(line.c_str(), "%llx-%llx %7s", &a, &e, perms) != 3) continue;
    if (line.find("/memfd:eca-hw-mr") == std::string::npos || std::string(perms) != "rw-s")
      continue;
    std::memset(reinterpret_cast<void *>(a), 0xEE, e - a);
    mapped++;
  }
  if (!write_full(out_fd, &mapped, 1)) return 25;
  char q = 0;
  read_full(in_fd, &q, 1, kTimeoutMs);
  return 0;
}

int child_fork_safe(int in_fd, int out_fd);  // below, with the fork() tests

const int kChildRole =
    run_child_role({{"accessor", child_accessor}, {"receive_and_exit", child_receive_and_exit},
                    {"fork_safe", child_fork_safe}, {"stale_writer", child_stale_writer}});

// ---------------------------------------------------------------------------------------------
// Parent side

// The permission string ("rw-p") of the mapping holding `p`, from /proc/self/maps.
std::string perms_of(const void *p) {
  std::ifstream f("/proc/self/maps");
  std::string line;
  const auto a = (unsigned long long)(uintptr_t)p;
  while (std::getline(f, line)) {
    unsigned long long s = 0, e = 0;
    char perms[8] = {};
    if (std::sscanf(line.c_str(), "%llx-%llx %7s", &s, &e, perms) == 3 && s <= a && a < e)
      return perms;
  }
  return "unmapped";
}

size_t page() { return (size_t)sysconf(_SC_PAGESIZE); }

class AppMemory : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() != process_backend())
      GTEST_SKIP() << "this process runs backend '" << process_backend() << "'";
  }
  void TearDown() override { teardown_passive(ch_, lid_, id_, pd_, cq_, mr_); }

  // Listens, tells the child the port, accepts its connection with `mem` registered
  // (`access`) and offered for `ops`.
  void Serve(Child &child, uint8_t *mem, size_t len, int access, uint32_t ops, uint32_t seed,
             size_t op_len = 0) {
    ch_ = rdma_create_event_channel();
    ASSERT_NE(ch_, nullptr);
    ASSERT_EQ(0, rdma_create_id(ch_, &lid_, nullptr, RDMA_PS_TCP));
    sockaddr_in a = loopback_addr(0);
    ASSERT_EQ(0, rdma_bind_addr(lid_, reinterpret_cast<sockaddr *>(&a)));
    ASSERT_EQ(0, rdma_listen(lid_, 4));
    uint16_t port = ntohs(rdma_get_src_port(lid_));
    ASSERT_TRUE(write_full(child.to_child, &port, sizeof port));
    ASSERT_TRUE(wait_cm_event(ch_, RDMA_CM_EVENT_CONNECT_REQUEST, kTimeoutMs, &id_))
        << "child did not connect: " << child.describe();
    ASSERT_TRUE(make_rc_qp(id_, 16, &pd_, &cq_));
    if (mem) {
      mr_ = ibv_reg_mr(pd_, mem, len, access);
      ASSERT_NE(mr_, nullptr) << "ibv_reg_mr: " << strerror(errno);
    }
    Offer o{(uint64_t)(uintptr_t)mem, mr_ ? mr_->rkey : 0, (uint32_t)(op_len ? op_len : len), seed,
            ops};
    rdma_conn_param cp{};
    cp.initiator_depth = cp.responder_resources = 4;
    cp.private_data = &o;
    cp.private_data_len = sizeof o;
    ASSERT_EQ(0, rdma_accept(id_, &cp));
    ASSERT_TRUE(wait_cm_event(ch_, RDMA_CM_EVENT_ESTABLISHED)) << child.describe();
  }

  // A peer's bad access: the target ends the connection; on the modeled adapter (which
  // completes a WRITE once placed) the WRITE itself reports the error. The software backend
  // completes it when handed to TCP, as siw does.
  void ExpectRejected(int status, const char *what) {
    if (GetParam() == "hwmodel") EXPECT_NE(status, IBV_WC_SUCCESS) << what << " succeeded";
    EXPECT_TRUE(wait_qp_state(id_->qp, IBV_QPS_ERR, 5000)) << what << ": the connection lives on";
  }

  // The status the child reported for its next operation.
  int ChildStatus(Child &child) {
    uint8_t st = 0xff;
    if (!read_full(child.from_child, &st, 1, kTimeoutMs)) return -1;
    return st;
  }

  rdma_event_channel *ch_ = nullptr;
  rdma_cm_id *lid_ = nullptr, *id_ = nullptr;
  ibv_pd *pd_ = nullptr;
  ibv_cq *cq_ = nullptr;
  ibv_mr *mr_ = nullptr;
};

// Waits (bounded) until [p, p+n) holds the pattern of `seed`: a WRITE's completion at the
// initiator does not promise placement at the target on every device.
// An RDMA WRITE's target is told nothing when the data lands, so these reads are not ordered
// after the placing thread's writes; ThreadSanitizer is told to ignore them (a device's DMA
// would be invisible to it anyway).
#if defined(__SANITIZE_THREAD__)
extern "C" void AnnotateIgnoreReadsBegin(const char *file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char *file, int line);
bool same_bytes(const uint8_t *p, const uint8_t *q, size_t n) {
  AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
  const bool same = std::memcmp(p, q, n) == 0;
  AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  return same;
}
#else
bool same_bytes(const uint8_t *p, const uint8_t *q, size_t n) { return std::memcmp(p, q, n) == 0; }
#endif

bool wait_pattern(const uint8_t *p, size_t n, uint32_t seed) {
  std::vector<uint8_t> want(n);
  fill_pattern(want.data(), n, seed);
  auto deadline = Clock::now() + std::chrono::milliseconds(kTimeoutMs);
  while (!same_bytes(p, want.data(), n)) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // polling, not synchronization
  }
  return true;
}

TEST_P(AppMemory, SendCompletesWhenReceiverExitsAtOnce) {
  for (int round = 0; round < 8; round++) {
    SCOPED_TRACE("round " + std::to_string(round));
    Child child;
    ASSERT_TRUE(child.start("receive_and_exit"));
    static uint8_t msg[64];
    std::memset(msg, 0x5a, sizeof msg);
    ASSERT_NO_FATAL_FAILURE(Serve(child, msg, sizeof msg, IBV_ACCESS_LOCAL_WRITE, 0, 0));
    ASSERT_TRUE(child.wait_byte('R', kTimeoutMs)) << child.describe();
    ibv_wc wc = post_and_wait(id_->qp, cq_, {IBV_WR_SEND, {sge(mr_, msg, sizeof msg)}});
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << "a Send the peer received completed with "
                                         << wc_status_name(wc.status);
    EXPECT_TRUE(child.exited_ok()) << child.describe();
    TearDown();
  }
}

// A MAP_SHARED file mapping stays the file's: what a peer WRITEs reaches the file, and no
// byte outside the MR changes.
TEST_P(AppMemory, PeerWriteIntoSharedFileMappingReachesTheFile) {
  Child child;
  ASSERT_TRUE(child.start("accessor"));
  const size_t pg = page(), flen = 4 * pg;
  char path[] = "/tmp/eca-app-memory-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::unlink(path);
  ASSERT_EQ(0, ::ftruncate(fd, (off_t)flen));
  auto *m = static_cast<uint8_t *>(::mmap(nullptr, flen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(m, MAP_FAILED);
  std::memset(m, 0xA5, flen);
  uint8_t *region = m + 100;
  const size_t len = 2 * pg + 200;  // partial first and last pages, two whole pages inside
  ASSERT_NO_FATAL_FAILURE(Serve(child, region, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
                                kOpWrite, 7));
  EXPECT_EQ(ChildStatus(child), IBV_WC_SUCCESS);
  EXPECT_TRUE(wait_pattern(region, len, 7)) << "the WRITE did not arrive in the mapping";
  std::vector<uint8_t> file(flen), want(len);
  ASSERT_EQ((ssize_t)flen, ::pread(fd, file.data(), flen, 0));
  fill_pattern(want.data(), len, 7);
  EXPECT_EQ(0, std::memcmp(file.data() + 100, want.data(), len)) << "the file misses the WRITE";
  for (size_t i = 0; i < flen; i++)
    if (i < 100 || i >= 100 + len) ASSERT_EQ(file[i], 0xA5) << "file byte " << i << " changed";
  EXPECT_EQ(perms_of(region + pg).substr(3), "s") << "the mapping is no longer the shared file";
  EXPECT_TRUE(write_full(child.to_child, "Q", 1));
  EXPECT_TRUE(child.exited_ok()) << child.describe();
  ::munmap(m, flen);
  ::close(fd);
}

// Read-only pages registered for REMOTE_READ stay read-only: a peer can READ them, its WRITE
// fails, and the pages are unchanged and still not writable.
TEST_P(AppMemory, ReadOnlyMrStaysUnwritable) {
  Child child;
  ASSERT_TRUE(child.start("accessor"));
  const size_t pg = page(), mlen = 5 * pg;
  auto *m = static_cast<uint8_t *>(
      ::mmap(nullptr, mlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(m, MAP_FAILED);
  fill_pattern(m, mlen, 3);
  std::vector<uint8_t> before(m, m + mlen);
  ASSERT_EQ(0, ::mprotect(m + pg, 3 * pg, PROT_READ));
  uint8_t *region = m + pg;
  const size_t len = 3 * pg;
  ASSERT_NO_FATAL_FAILURE(Serve(child, region, len, IBV_ACCESS_REMOTE_READ, kOpRead | kOpWrite, 9));
  EXPECT_EQ(ChildStatus(child), IBV_WC_SUCCESS) << "READ of the read-only MR";
  std::vector<uint8_t> got(len);
  ASSERT_TRUE(read_full(child.from_child, got.data(), len, kTimeoutMs));
  EXPECT_EQ(0, std::memcmp(got.data(), region, len)) << "READ returned other bytes";
  ExpectRejected(ChildStatus(child), "a WRITE into a read-only MR");
  EXPECT_EQ(0, std::memcmp(m, before.data(), mlen)) << "read-only memory changed";
  EXPECT_EQ(perms_of(region), "r--p");
  EXPECT_EQ(perms_of(region + 2 * pg), "r--p");
  EXPECT_TRUE(write_full(child.to_child, "Q", 1));
  EXPECT_TRUE(child.exited_ok()) << child.describe();
  ::munmap(m, mlen);
}

// Private anonymous memory (the fast path on the modeled adapter): a peer's WRITE lands in
// the MR and nowhere else (guard pages around, canary bytes on the partial pages).
TEST_P(AppMemory, PeerWriteChangesNoByteOutsideTheMr) {
  Child child;
  ASSERT_TRUE(child.start("accessor"));
  Guarded g;
  g.init(3 * page() + 300, 700, 900);
  ASSERT_NO_FATAL_FAILURE(
      Serve(child, g.region, g.len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, kOpWrite, 5));
  EXPECT_EQ(ChildStatus(child), IBV_WC_SUCCESS);
  EXPECT_TRUE(wait_pattern(g.region, g.len, 5));
  EXPECT_TRUE(g.canary_intact());
  EXPECT_TRUE(write_full(child.to_child, "Q", 1));
  EXPECT_TRUE(child.exited_ok()) << child.describe();
}

// Modeled adapter: a peer that mapped a region while it was granted (a WRITE into the MR)
// keeps that mapping after ibv_dereg_mr, but it no longer reaches the application's pages:
// deregistration moved them off the memfd. The peer writes through its stale mapping; not a
// byte of ours changes.
class AppMemoryHw : public AppMemory {};  // only the modeled adapter shares pages with a peer

TEST_P(AppMemoryHw, DeregisteredRegionIsOutOfAPeersReach) {
  Child child;
  ASSERT_TRUE(child.start("stale_writer"));
  const size_t len = 16 * page();
  auto *m = static_cast<uint8_t *>(
      ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(m, MAP_FAILED);
  std::memset(m, 'A', len);
  ASSERT_NO_FATAL_FAILURE(
      Serve(child, m, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, kOpWrite, 9, 64));
  ASSERT_EQ(ChildStatus(child), IBV_WC_SUCCESS);
  ASSERT_TRUE(wait_pattern(m, 64, 9));
  ASSERT_EQ(0, ibv_dereg_mr(mr_));
  mr_ = nullptr;
  ASSERT_TRUE(write_full(child.to_child, "D", 1));
  const int mapped = ChildStatus(child);
  EXPECT_GE(mapped, 1) << "the peer had no mapping of the region: nothing was tried";
  std::vector<uint8_t> want(len, 'A');
  fill_pattern(want.data(), 64, 9);
  size_t changed = 0;
  for (size_t i = 0; i < len; i++) changed += m[i] != want[i];
  EXPECT_EQ(changed, 0u) << "the peer's stale mapping still reaches deregistered memory";
  m[0] = 'P';  // still the application's own, writable memory
  EXPECT_EQ(m[0], 'P');
  EXPECT_TRUE(write_full(child.to_child, "Q", 1));
  EXPECT_TRUE(child.exited_ok()) << child.describe();
  ::munmap(m, len);
}

// A peer asking for more than the MR (or another key) gets an error; nothing changes.
TEST_P(AppMemory, WriteBeyondTheMrFailsAndChangesNothing) {
  Child child;
  ASSERT_TRUE(child.start("accessor"));
  Guarded g;
  g.init(2 * page(), 64, 64);
  // The child is told to WRITE 64 bytes more than the MR holds.
  ASSERT_NO_FATAL_FAILURE(Serve(child, g.region, g.len,
                                IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, kOpWrite, 4,
                                g.len + 64));
  ExpectRejected(ChildStatus(child), "a WRITE beyond the MR");
  EXPECT_TRUE(write_full(child.to_child, "Q", 1));
  EXPECT_TRUE(child.exited_ok()) << child.describe();
  EXPECT_TRUE(g.canary_intact());
  EXPECT_TRUE(g.region_is(g.canary));
}

// ---------------------------------------------------------------------------------------------
// Registration itself (one process): never a crash, never a changed byte.

struct Device {
  ibv_context *ctx = nullptr;
  ibv_pd *pd = nullptr;
  bool open(const std::string &backend) {
    int n = 0;
    ibv_device **l = ibv_get_device_list(&n);
    for (int i = 0; l && i < n; i++)
      if (std::string(ibv_get_device_name(l[i])).rfind(device_prefix(backend), 0) == 0) {
        ctx = ibv_open_device(l[i]);
        break;
      }
    if (l) ibv_free_device_list(l);
    pd = ctx ? ibv_alloc_pd(ctx) : nullptr;
    return pd != nullptr;
  }
  ~Device() {
    if (pd) ibv_dealloc_pd(pd);
    if (ctx) ibv_close_device(ctx);
  }
};

TEST_P(AppMemory, RegisteringAHoleOrAHugeRangeFailsCleanly) {
  Device d;
  ASSERT_TRUE(d.open(GetParam()));
  const size_t pg = page();
  auto *m = static_cast<uint8_t *>(
      ::mmap(nullptr, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(m, MAP_FAILED);
  std::memset(m, 1, 4 * pg);
  ASSERT_EQ(0, ::munmap(m + pg, pg));  // a hole
  errno = 0;
  ibv_mr *mr = ibv_reg_mr(d.pd, m, 4 * pg, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  EXPECT_EQ(mr, nullptr) << "a range with a hole was registered";
  EXPECT_EQ(errno, EFAULT);
  if (mr) ibv_dereg_mr(mr);
  errno = 0;
  mr = ibv_reg_mr(d.pd, m + 2 * pg, 1ull << 40, IBV_ACCESS_LOCAL_WRITE);
  EXPECT_EQ(mr, nullptr) << "a 1 TiB range was registered";
  EXPECT_TRUE(errno == EFAULT || errno == ENOMEM) << strerror(errno);
  if (mr) ibv_dereg_mr(mr);
  // The mapped pages are untouched and still private.
  EXPECT_EQ(m[0], 1);
  EXPECT_EQ(m[3 * pg], 1);
  EXPECT_EQ(perms_of(m + 2 * pg), "rw-p");
  ::munmap(m, pg);
  ::munmap(m + 2 * pg, 2 * pg);
}

// Another thread keeps writing while the memory is registered (and re-registered), then
// deregistered: every write survives.
TEST_P(AppMemory, RegistrationLosesNoConcurrentWrite) {
  Device d;
  ASSERT_TRUE(d.open(GetParam()));
  const size_t len = 16u << 20, slots = len / sizeof(uint64_t);
  auto *m = static_cast<uint64_t *>(
      ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(m, MAP_FAILED);
  std::vector<uint64_t> shadow(slots, 0);  // what the writer last stored in each slot
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> passes{0};
  size_t reverted = 0;  // slots found holding an older value than the writer last stored
  std::thread writer([&] {
    uint64_t v = 1;
    volatile uint64_t *vm = m;
    while (!stop.load(std::memory_order_relaxed)) {
      for (size_t i = 0; i < slots; i += 61, v++) {  // strided: every page, all the time
        if (vm[i] != shadow[i]) reverted++;
        vm[i] = v;
        shadow[i] = v;
      }
      passes.fetch_add(1, std::memory_order_relaxed);
    }
  });
  while (passes.load() == 0) std::this_thread::yield();
  std::vector<ibv_mr *> mrs;
  for (size_t k = 0; k < 3; k++) {
    const size_t off = k * 4096 * 3 + 123;
    ibv_mr *mr = ibv_reg_mr(d.pd, reinterpret_cast<uint8_t *>(m) + off, len - off - 77,
                            IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    EXPECT_NE(mr, nullptr) << strerror(errno);
    if (mr) mrs.push_back(mr);
  }
  uint64_t p0 = passes.load();
  while (passes.load() < p0 + 2) std::this_thread::yield();  // the writer ran on afterwards
  // Deregistration too (the modeled adapter moves the pages off its memfd again).
  for (ibv_mr *mr : mrs) EXPECT_EQ(0, ibv_dereg_mr(mr));
  p0 = passes.load();
  while (passes.load() < p0 + 2) std::this_thread::yield();
  stop = true;
  writer.join();
  size_t lost = reverted;
  for (size_t i = 0; i < slots; i += 61)
    if (m[i] != shadow[i]) lost++;
  EXPECT_EQ(lost, 0u) << "writes lost while registering or deregistering";
  ::munmap(m, len);
}

// fork() without ibv_fork_init(): the child gets its own copy of registered memory (a modern
// kernel's copy-on-fork for pinned pages), so ibv_is_fork_initialized() says
// IBV_FORK_UNNEEDED. As in rdma-core, ibv_fork_init() after a registration is refused: the
// memory registered before it would not be protected.
TEST_P(AppMemory, ForkChildGetsItsOwnCopyOfRegisteredMemory) {
  Device d;
  ASSERT_TRUE(d.open(GetParam()));
  EXPECT_EQ(ibv_is_fork_initialized(), IBV_FORK_UNNEEDED);
  const size_t len = 8 * page();
  auto *m = static_cast<uint8_t *>(
      ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(m, MAP_FAILED);
  std::memset(m, 'A', len);
  ibv_mr *mr = ibv_reg_mr(d.pd, m, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  ASSERT_NE(mr, nullptr);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // child: memory only, no library calls
    int rc = 0;
    for (size_t i = 0; i < len; i++)
      if (m[i] != 'A') rc = 2;
    std::memset(m, 'C', len);
    ::_exit(rc);
  }
  int st = 0;
  ASSERT_EQ(pid, ::waitpid(pid, &st, 0));
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "the child did not see the parent's data";
  size_t changed = 0;
  for (size_t i = 0; i < len; i++) changed += m[i] != 'A';
  EXPECT_EQ(changed, 0u) << "the child's writes reached the parent";
  m[0] = 'P';  // and the parent's memory is still its own
  EXPECT_EQ(m[0], 'P');
  EXPECT_EQ(EINVAL, ibv_fork_init()) << "ibv_fork_init accepted after a registration";
  EXPECT_EQ(ibv_is_fork_initialized(), IBV_FORK_UNNEEDED);
  EXPECT_EQ(0, ibv_dereg_mr(mr));
  ::munmap(m, len);
}

// Forks; the child checks which of the 10 pages at `m` it has: page p must be missing exactly
// when bit p of `gone` is set, and present pages hold 'A'. 0 when all is as expected.
int fork_and_probe(const uint8_t *m, unsigned gone) {
  const pid_t pid = ::fork();
  if (pid < 0) return 60;
  if (pid == 0) {  // memory and /proc only
    const size_t pg = page();
    for (unsigned p = 0; p < 10; p++) {
      const bool missing = perms_of(m + p * pg) == "unmapped";
      if (missing != ((gone >> p) & 1)) ::_exit(61 + (int)missing);
      if (!missing && m[p * pg] != 'A') ::_exit(63);
    }
    ::_exit(0);
  }
  int st = 0;
  if (::waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) return 64;
  return WEXITSTATUS(st);
}

// Child role (a fresh process, so that no memory was registered before): with ibv_fork_init()
// called first, or RDMAV_FORK_SAFE set, registered pages are MADV_DONTFORK, as rdma-core makes
// them. A fork() child of ours does not have them; the pages around them, and the MR's own
// pages once the last MR over them is deregistered, it inherits as usual. Exit codes say what
// failed.
int child_fork_safe(int, int) {
  if (!std::getenv("RDMAV_FORK_SAFE") && ibv_fork_init() != 0) return 40;
  if (ibv_is_fork_initialized() != IBV_FORK_ENABLED) return 41;
  Device d;
  if (!d.open(process_backend())) return 42;
  const size_t pg = page();
  auto *m = static_cast<uint8_t *>(
      ::mmap(nullptr, 10 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (m == MAP_FAILED) return 43;
  std::memset(m, 'A', 10 * pg);
  constexpr int kAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
  // MR a: pages 1..7 (it begins and ends mid-page); MR b: pages 5..9.
  ibv_mr *a = ibv_reg_mr(d.pd, m + pg + pg / 2, 6 * pg, kAccess);
  ibv_mr *b = ibv_reg_mr(d.pd, m + 5 * pg, 5 * pg, kAccess);
  if (!a || !b) return 44;
  if (ibv_fork_init() != 0) return 45;  // again: nothing changes
  if (int rc = fork_and_probe(m, 0x3fe)) return rc;  // pages 1..9 not inherited
  if (ibv_dereg_mr(a)) return 46;
  if (int rc = fork_and_probe(m, 0x3e0)) return rc;  // b still covers 5..9
  if (ibv_dereg_mr(b)) return 47;
  if (int rc = fork_and_probe(m, 0)) return rc;  // all back
  m[0] = 'P';  // the parent's memory is still its own
  return m[0] == 'P' ? 0 : 48;
}

TEST_P(AppMemory, ForkInitChildDoesNotInheritRegisteredPages) {
  for (const char *how : {"ibv_fork_init", "RDMAV_FORK_SAFE"}) {
    SCOPED_TRACE(how);
    Child child;
    std::vector<std::string> env;
    if (std::string(how) == "RDMAV_FORK_SAFE") env.push_back("RDMAV_FORK_SAFE=1");
    ASSERT_TRUE(child.start("fork_safe", env));
    EXPECT_TRUE(child.exited_ok(kTimeoutMs)) << child.describe();
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, AppMemory, ::testing::ValuesIn(backend_params()), backend_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(AppMemoryHw);
INSTANTIATE_TEST_SUITE_P(Backends, AppMemoryHw, ::testing::ValuesIn(hwmodel_only_params()),
                         backend_name);

}  // namespace

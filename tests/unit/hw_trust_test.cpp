// The modeled adapter's connection set-up trusts nothing a peer writes. A raw TCP peer
// speaks MPA and then the adapter hello by hand (hwmodel/backend/hw_conn.cpp, ctl_wire.hpp):
// it names a control socket of its choosing and serves it itself, handing over memory that
// is not sealed, has the wrong size or is truncated afterwards; or it presents a wrong nonce
// at the adapter's real socket, asks for regions without proving itself, and tries to resize
// or write what it was given. The adapter must refuse, end the connection and survive.
#include "tests/unit/fixture.hpp"

#include <netinet/tcp.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "hwmodel/backend/ctl_wire.hpp"
#include "hwmodel/backend/shm_layout.hpp"

using namespace ecatest;
namespace hw = eca::hw;

namespace {

// The adapter hello (hw_conn.cpp HelloBuf).
struct Hello {
  uint64_t magic;
  uint32_t qpn;
  uint32_t pd;
  uint8_t nonce[hw::ctl::kNonceBytes];
  char path[104];
};
static_assert(sizeof(Hello) == 136);

bool io_exact(int fd, void *p, size_t n, bool write) {
  auto *b = static_cast<uint8_t *>(p);
  while (n) {
    if (!write && !fd_readable(fd, kTimeoutMs)) return false;
    ssize_t r = write ? ::send(fd, b, n, MSG_NOSIGNAL) : ::recv(fd, b, n, 0);
    if (r <= 0) return false;
    b += r;
    n -= (size_t)r;
  }
  return true;
}

// One request on the control socket at `path`; the reply's fds go to `fds`.
bool ctl_call(const std::string &path, const hw::ctl::Request &rq, hw::ctl::Reply *rp,
              std::vector<int> *fds) {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  bool ok = ::connect(s, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0 &&
            io_exact(s, const_cast<hw::ctl::Request *>(&rq), sizeof rq, true) &&
            fd_readable(s, kTimeoutMs);
  if (ok) {
    msghdr m{};
    iovec iov{rp, sizeof *rp};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * 4)] = {};
    m.msg_control = ctrl;
    m.msg_controllen = sizeof ctrl;
    ok = ::recvmsg(s, &m, MSG_WAITALL | MSG_CMSG_CLOEXEC) == (ssize_t)sizeof *rp;
    for (cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
      for (size_t i = 0; i < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
        int f;
        std::memcpy(&f, CMSG_DATA(h) + i * sizeof(int), sizeof f);
        fds->push_back(f);
      }
  }
  ::close(s);
  return ok;
}

// A control socket served by the test: answers one Hello with the given memfds.
struct FakeAdapter {
  std::string dir, path;
  int lfd = -1;
  std::thread th;
  ~FakeAdapter() {
    if (th.joinable()) th.join();
    if (lfd >= 0) ::close(lfd);
    if (!path.empty()) ::unlink(path.c_str());
    if (!dir.empty()) ::rmdir(dir.c_str());
  }
  bool start() {
    char tmpl[] = "/tmp/eca-fake-adapter-XXXXXX";
    if (!::mkdtemp(tmpl)) return false;
    dir = tmpl;
    path = dir + "/ctl.sock";
    lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    return ::bind(lfd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0 && ::listen(lfd, 4) == 0;
  }
  // Serves one Hello (bounded) with `fds` and `sizes`; closes our copies afterwards.
  void serve(std::vector<int> fds, std::vector<uint64_t> sizes) {
    th = std::thread([this, fds, sizes] {
      if (!fd_readable(lfd, kTimeoutMs)) return;
      int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      hw::ctl::Request rq{};
      hw::ctl::Reply rp{};
      if (io_exact(c, &rq, sizeof rq, false)) {
        rp.magic = hw::ctl::kCtlMagic;
        rp.nfds = (uint32_t)fds.size();
        for (size_t i = 0; i < sizes.size(); i++) rp.size[i] = sizes[i];
        msghdr m{};
        iovec iov{&rp, sizeof rp};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * 4)] = {};
        m.msg_control = ctrl;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr *h = CMSG_FIRSTHDR(&m);
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(h), fds.data(), sizeof(int) * fds.size());
        ::sendmsg(c, &m, MSG_NOSIGNAL);
      }
      ::close(c);
    });
  }
};

int memfd_of(uint64_t size, bool sealed) {
  int fd = ::memfd_create("eca-fake", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ::ftruncate(fd, (off_t)size) != 0) return -1;
  if (sealed) ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
  return fd;
}

class HwTrust : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() != process_backend())
      GTEST_SKIP() << "the modeled adapter's set-up (this process runs " << process_backend() << ")";
    ch_ = rdma_create_event_channel();
    ASSERT_NE(ch_, nullptr);
    ASSERT_EQ(0, rdma_create_id(ch_, &lid_, nullptr, RDMA_PS_TCP));
    sockaddr_in a = loopback_addr(0);
    ASSERT_EQ(0, rdma_bind_addr(lid_, reinterpret_cast<sockaddr *>(&a)));
    ASSERT_EQ(0, rdma_listen(lid_, 4));
    port_ = ntohs(rdma_get_src_port(lid_));
  }
  void TearDown() override {
    if (fd_ >= 0) ::close(fd_);
    teardown_passive(ch_, lid_, id_, pd_, cq_, mr_);
  }

  // Raw TCP connect and MPA request; the library accepts with a QP and an MR granting
  // REMOTE_WRITE; returns the adapter hello the library sends next.
  void Open(Hello *theirs) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd_, 0);
    sockaddr_in a = loopback_addr(port_);
    ASSERT_EQ(0, ::connect(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a)) << strerror(errno);
    std::vector<uint8_t> req(24, 0);
    std::memcpy(req.data(), "MPA ID Req Frame", 16);
    req[16] = 0x50;  // C, and the enhanced-connection bit of revision 2
    req[17] = 2;
    req[19] = 4;     // private data: IRD 16, ORD 16
    req[21] = 16;
    req[23] = 16;
    ASSERT_TRUE(io_exact(fd_, req.data(), req.size(), true));
    ASSERT_TRUE(wait_cm_event(ch_, RDMA_CM_EVENT_CONNECT_REQUEST, kTimeoutMs, &id_));
    ASSERT_TRUE(make_rc_qp(id_, 4, &pd_, &cq_));
    buf_.assign(64 * 1024, 0x11);
    mr_ = ibv_reg_mr(pd_, buf_.data(), buf_.size(),
                     IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
    ASSERT_NE(mr_, nullptr);
    rdma_conn_param cp{};
    ASSERT_EQ(0, rdma_accept(id_, &cp));
    uint8_t rep[20];
    ASSERT_TRUE(io_exact(fd_, rep, sizeof rep, false)) << "no MPA reply";
    ASSERT_EQ(0, std::memcmp(rep, "MPA ID Rep Frame", 16));
    std::vector<uint8_t> pdata((size_t)(rep[18] << 8 | rep[19]));
    ASSERT_TRUE(io_exact(fd_, pdata.data(), pdata.size(), false));
    ASSERT_TRUE(io_exact(fd_, theirs, sizeof *theirs, false)) << "no adapter hello";
    ASSERT_EQ(theirs->magic, hw::kLinkMagic);
    ASSERT_NE(std::memchr(theirs->path, 0, sizeof theirs->path), nullptr);
  }

  // Sends our hello naming `path`; the library must then end the connection (QP in ERR).
  void HelloAndExpectRefusal(const std::string &path) {
    Hello mine{};
    mine.magic = hw::kLinkMagic;
    std::snprintf(mine.path, sizeof mine.path, "%s", path.c_str());
    for (size_t i = 0; i < sizeof mine.nonce; i++) mine.nonce[i] = (uint8_t)(i * 37 + 1);
    ASSERT_TRUE(io_exact(fd_, &mine, sizeof mine, true));
    EXPECT_TRUE(wait_qp_state(id_->qp, IBV_QPS_ERR)) << "the adapter accepted a lying peer";
    EXPECT_TRUE(std::all_of(buf_.begin(), buf_.end(), [](uint8_t b) { return b == 0x11; }));
  }

  rdma_event_channel *ch_ = nullptr;
  rdma_cm_id *lid_ = nullptr, *id_ = nullptr;
  ibv_pd *pd_ = nullptr;
  ibv_cq *cq_ = nullptr;
  ibv_mr *mr_ = nullptr;
  std::vector<uint8_t> buf_;
  uint16_t port_ = 0;
  int fd_ = -1;
};

// The peer's "adapter" hands over memory that is not sealed against resizing: a peer that
// truncated it later would kill us with SIGBUS. Refused; truncating it afterwards is harmless.
TEST_P(HwTrust, UnsealedPeerMemoryIsRefused) {
  Hello theirs{};
  ASSERT_NO_FATAL_FAILURE(Open(&theirs));
  FakeAdapter fake;
  ASSERT_TRUE(fake.start());
  const int t = memfd_of(sizeof(hw::AdapterShm), false), b = memfd_of(hw::kBellBytes, false),
            l = memfd_of(sizeof(hw::LinkShm), false);
  ASSERT_TRUE(t >= 0 && b >= 0 && l >= 0);
  fake.serve({t, b, l}, {sizeof(hw::AdapterShm), hw::kBellBytes, sizeof(hw::LinkShm)});
  ASSERT_NO_FATAL_FAILURE(HelloAndExpectRefusal(fake.path));
  // Had the adapter mapped them, this would end it with SIGBUS on its next access.
  EXPECT_EQ(0, ::ftruncate(t, 0));
  EXPECT_EQ(0, ::ftruncate(b, 0));
  EXPECT_EQ(0, ::ftruncate(l, 0));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // give a wrong mapping its chance
  ::close(t), ::close(b), ::close(l);
}

// Sealed, but smaller than it claims: refused (fstat before mmap).
TEST_P(HwTrust, WronglySizedPeerMemoryIsRefused) {
  Hello theirs{};
  ASSERT_NO_FATAL_FAILURE(Open(&theirs));
  FakeAdapter fake;
  ASSERT_TRUE(fake.start());
  const int t = memfd_of(4096, true), b = memfd_of(hw::kBellBytes, true),
            l = memfd_of(4096, true);
  ASSERT_TRUE(t >= 0 && b >= 0 && l >= 0);
  fake.serve({t, b, l}, {sizeof(hw::AdapterShm), hw::kBellBytes, sizeof(hw::LinkShm)});
  ASSERT_NO_FATAL_FAILURE(HelloAndExpectRefusal(fake.path));
  ::close(t), ::close(b), ::close(l);
}

// A peer that names somebody else's socket (or none) gets nowhere.
TEST_P(HwTrust, HelloNamingAMissingSocketIsRefused) {
  Hello theirs{};
  ASSERT_NO_FATAL_FAILURE(Open(&theirs));
  ASSERT_NO_FATAL_FAILURE(HelloAndExpectRefusal("/tmp/eca-no-such-adapter/ctl.sock"));
}

// A peer whose control socket accepts connections and never answers: the library gives up
// after the control channel's timeout (2 s) and refuses the peer, and meanwhile the
// process-wide progress thread (every rdma_cm call of the process runs there) stays free.
TEST_P(HwTrust, SilentControlSocketDoesNotStallTheProgressThread) {
  Hello theirs{};
  ASSERT_NO_FATAL_FAILURE(Open(&theirs));
  char dir[] = "/tmp/eca-silent-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/ctl.sock";
  const int ls = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(ls, 0);
  sockaddr_un ua{};
  ua.sun_family = AF_UNIX;
  std::snprintf(ua.sun_path, sizeof ua.sun_path, "%s", path.c_str());
  ASSERT_EQ(0, ::bind(ls, reinterpret_cast<sockaddr *>(&ua), sizeof ua));
  ASSERT_EQ(0, ::listen(ls, 4));  // never accepted: the asker waits for its timeout
  Hello mine{};
  mine.magic = hw::kLinkMagic;
  std::snprintf(mine.path, sizeof mine.path, "%s", path.c_str());
  ASSERT_TRUE(io_exact(fd_, &mine, sizeof mine, true));
  // The library is asking now: its connection waits in our backlog.
  pollfd pf{ls, POLLIN, 0};
  ASSERT_EQ(1, ::poll(&pf, 1, kTimeoutMs)) << "the library never asked our control socket";
  // An rdma_cm call (it runs on the progress thread) returns while the peer stays silent.
  const auto t0 = std::chrono::steady_clock::now();
  rdma_cm_id *probe = nullptr;
  ASSERT_EQ(0, rdma_create_id(ch_, &probe, nullptr, RDMA_PS_TCP));
  sockaddr_in a = loopback_addr(0);
  EXPECT_EQ(0, rdma_bind_addr(probe, reinterpret_cast<sockaddr *>(&a)));
  const auto took = std::chrono::steady_clock::now() - t0;
  rdma_destroy_id(probe);
  EXPECT_LT(took, std::chrono::milliseconds(1000))
      << "rdma_bind_addr waited "
      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
      << " ms for the progress thread (the control channel's timeout is 2000 ms)";
  EXPECT_TRUE(wait_qp_state(id_->qp, IBV_QPS_ERR)) << "the adapter accepted a silent peer";
  ::close(ls);
  ::unlink(path.c_str());
  ::rmdir(dir);
}

// At the adapter's real control socket: a wrong nonce and an unproven region request are
// refused; the right nonce yields the adapter table read-only and sealed, so it can be
// neither written nor resized.
TEST_P(HwTrust, ControlSocketChecksIdentityAndGrantsReadOnlyTables) {
  Hello theirs{};
  ASSERT_NO_FATAL_FAILURE(Open(&theirs));
  hw::ctl::Request rq{};
  hw::ctl::Reply rp{};
  std::vector<int> fds;
  rq.magic = hw::ctl::kCtlMagic;
  rq.kind = (uint32_t)hw::ctl::Kind::Region;
  rq.idx = 0;
  rq.gen = 1;
  ASSERT_TRUE(ctl_call(theirs.path, rq, &rp, &fds));
  EXPECT_EQ(rp.status, (uint32_t)EACCES) << "a region for a process that proved nothing";
  EXPECT_TRUE(fds.empty());
  rq.kind = (uint32_t)hw::ctl::Kind::Hello;
  std::memcpy(rq.nonce, theirs.nonce, sizeof rq.nonce);
  rq.nonce[0] ^= 1;
  ASSERT_TRUE(ctl_call(theirs.path, rq, &rp, &fds));
  EXPECT_EQ(rp.status, (uint32_t)EACCES) << "a wrong nonce was accepted";
  EXPECT_TRUE(fds.empty());
  rq.nonce[0] ^= 1;
  ASSERT_TRUE(ctl_call(theirs.path, rq, &rp, &fds));
  ASSERT_EQ(rp.status, 0u);
  ASSERT_GE(fds.size(), 2u);
  EXPECT_EQ(::fcntl(fds[0], F_GETFL) & O_ACCMODE, O_RDONLY) << "adapter table handed out writable";
  EXPECT_EQ(::mmap(nullptr, sizeof(hw::AdapterShm), PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0),
            MAP_FAILED);
  for (int f : fds) {
    EXPECT_NE(0, ::ftruncate(f, 0)) << "shared memory can be resized by a peer";
    EXPECT_EQ((::fcntl(f, F_GET_SEALS) & (F_SEAL_SHRINK | F_SEAL_GROW)), F_SEAL_SHRINK | F_SEAL_GROW);
  }
  // The nonce is spent.
  std::vector<int> again;
  ASSERT_TRUE(ctl_call(theirs.path, rq, &rp, &again));
  EXPECT_EQ(rp.status, (uint32_t)EACCES) << "a nonce was accepted twice";
  for (int f : fds) ::close(f);
  for (int f : again) ::close(f);
}

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(HwTrust);
INSTANTIATE_TEST_SUITE_P(Backends, HwTrust, ::testing::ValuesIn(hwmodel_only_params()), backend_name);

}  // namespace

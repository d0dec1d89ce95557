#include "hwmodel/backend/ctl.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include "provider/core/log.hpp"

namespace eca::hw::ctl {
namespace {

constexpr int kTimeoutMs = 2000;
constexpr unsigned kSeals = F_SEAL_SHRINK | F_SEAL_GROW;

void set_timeouts(int fd) {
  timeval tv{kTimeoutMs / 1000, (kTimeoutMs % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

bool peer_cred(int fd, ucred *c) {
  socklen_t n = sizeof *c;
  return ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, c, &n) == 0 && n == sizeof *c;
}

// The private directory for our sockets: created 0700 if missing; used only if it is a
// directory owned by us that nobody else may write to.
int socket_dir(std::string *out) {
  const char *base = std::getenv("XDG_RUNTIME_DIR");
  std::string dir = std::string(base && *base ? base : "/tmp") + "/eca-hw-" + std::to_string(::getuid());
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return errno;
  struct stat st{};
  if (::lstat(dir.c_str(), &st) != 0) return errno;
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::getuid() || (st.st_mode & 077)) return EPERM;
  *out = dir;
  return 0;
}

}  // namespace

int sealed_memfd(const char *name, uint64_t size) {
  int fd = ::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  if (::fchmod(fd, 0600) != 0 || ::ftruncate(fd, (off_t)size) != 0 ||
      ::fcntl(fd, F_ADD_SEALS, kSeals | F_SEAL_SEAL) != 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

int check_memfd(int fd, uint64_t size) {
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != size)
    return EPROTO;
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & kSeals) != kSeals) return EPROTO;
  return 0;
}

// ---------------------------------------------------------------------------------------------
int Server::start(Handler handle) {
  std::string dir;
  if (int rc = socket_dir(&dir)) return rc;
  std::random_device rd;
  char name[160];
  std::snprintf(name, sizeof name, "%s/%d-%08x%08x.sock", dir.c_str(), (int)::getpid(), rd(), rd());
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (std::strlen(name) >= sizeof a.sun_path) return ENAMETOOLONG;
  std::strcpy(a.sun_path, name);
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return errno;
  if (::bind(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 || ::listen(fd_, 64) != 0) {
    int e = errno;
    ::close(fd_);
    fd_ = -1;
    return e;
  }
  ::chmod(name, 0600);
  path_ = name;
  handle_ = std::move(handle);
  th_ = std::thread([this] { loop(); });
  th_.detach();
  return 0;
}

Server::~Server() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

void Server::loop() {
  pthread_setname_np(pthread_self(), "eca-hw-ctl");
  for (;;) {
    int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) continue;
      ECA_LOG(Error, "hwmodel: control socket: %s", strerror(errno));
      return;
    }
    set_timeouts(c);
    ucred cr{};
    Request rq{};
    Reply rp{};
    std::vector<int> fds;
    if (!peer_cred(c, &cr) || ::recv(c, &rq, sizeof rq, MSG_WAITALL) != (ssize_t)sizeof rq ||
        rq.magic != kCtlMagic) {
      ::close(c);
      continue;
    }
    if (cr.uid != ::getuid() && cr.uid != 0) {
      rp.status = EACCES;
    } else {
      rp = handle_(rq, Caller{cr.pid, cr.uid}, &fds);
    }
    rp.magic = kCtlMagic;
    rp.nfds = rp.status ? 0 : (uint32_t)std::min<size_t>(fds.size(), kMaxFds);
    msghdr m{};
    iovec iov{&rp, sizeof rp};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
    if (rp.nfds) {
      m.msg_control = ctrl;
      m.msg_controllen = CMSG_SPACE(sizeof(int) * rp.nfds);
      cmsghdr *h = CMSG_FIRSTHDR(&m);
      h->cmsg_level = SOL_SOCKET;
      h->cmsg_type = SCM_RIGHTS;
      h->cmsg_len = CMSG_LEN(sizeof(int) * rp.nfds);
      std::memcpy(CMSG_DATA(h), fds.data(), sizeof(int) * rp.nfds);
    }
    ::sendmsg(c, &m, MSG_NOSIGNAL);
    for (int f : fds) ::close(f);  // the handler's descriptors were made for this reply
    ::close(c);
  }
}

// ---------------------------------------------------------------------------------------------
int call(const std::string &path, const Request &rq, Reply *rp, std::vector<int> *fds,
         pid_t *server_pid) {
  fds->clear();
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path || path[0] != '/') return EINVAL;
  std::memcpy(a.sun_path, path.data(), path.size());
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  set_timeouts(s);
  int rc = 0;
  ucred cr{};
  if (::connect(s, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 || !peer_cred(s, &cr)) {
    rc = errno ? errno : EPROTO;
  } else if (cr.uid != ::getuid() && cr.uid != 0) {
    rc = EACCES;  // a socket in our directory served by somebody else
  } else if (::send(s, &rq, sizeof rq, MSG_NOSIGNAL) != (ssize_t)sizeof rq) {
    rc = errno ? errno : EPROTO;
  } else {
    msghdr m{};
    iovec iov{rp, sizeof *rp};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
    m.msg_control = ctrl;
    m.msg_controllen = sizeof ctrl;
    ssize_t n = ::recvmsg(s, &m, MSG_WAITALL | MSG_CMSG_CLOEXEC);
    for (cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
      if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
      const size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k; i++) {
        int f;
        std::memcpy(&f, CMSG_DATA(h) + i * sizeof(int), sizeof f);
        fds->push_back(f);
      }
    }
    if (n != (ssize_t)sizeof *rp || rp->magic != kCtlMagic || (m.msg_flags & MSG_CTRUNC) ||
        fds->size() != (rp->status ? 0 : rp->nfds) || rp->nfds > kMaxFds)
      rc = EPROTO;
    else if (rp->status)
      rc = (int)rp->status;
  }
  ::close(s);
  if (rc) {
    for (int f : *fds) ::close(f);
    fds->clear();
    return rc;
  }
  *server_pid = cr.pid;
  return 0;
}

}  // namespace eca::hw::ctl

// rsocket.cpp - rsockets (rdma-core's rsocket(7) API) over the public rdma_* / ibv_* API.
//
// Exported from librdmacm.so.1 (RDMACM_1.0, see provider/abi/librdmacm.map). The code uses
// only what any verbs application could, so it runs on both backends unchanged. The wire
// protocol and its credit rules are in wire.h.
//
// Socket ids are the fds of each rsocket's own rdma_cm event channel (as in rdma-core), so
// they never collide with each other and are < FD_SETSIZE for rselect as long as fds are.
// SOCK_STREAM only: SOCK_DGRAM rsockets fail with EOPNOTSUPP.
//
// Locking: g_mu guards the id -> socket table only. Each Sock's `mu` guards all of its
// state; it is held while running its state machine and released while sleeping in poll()
// on its event channel and completion channel fds. Internal functions return 0 or a
// positive errno; the extern "C" entry points translate to -1/errno.

#include "provider/rsocket/wire.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <rdma/rdma_cma.h>
#include <rdma/rsocket.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdarg>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace eca::rsock {
namespace {

using namespace wire;

enum class St { Idle, Bound, Listening, Resolving, Routing, Connecting, Connected, Error, Closed };

struct RxSeg {
  uint32_t slot, off, len;
};

struct LocalMap {
  void *buf;
  size_t len;
  off_t offset;
  ibv_mr *mr;
};

struct Sock {
  std::mutex mu;
  int id = -1;
  St st = St::Idle;
  bool nonblock = false;
  int domain = AF_INET;  // AF_INET or AF_INET6 (accepted sockets: the listener's)
  rdma_event_channel *ch = nullptr;
  rdma_cm_id *cm = nullptr;
  // verbs resources (connected sockets)
  ibv_pd *pd = nullptr;
  ibv_comp_channel *cc = nullptr;
  ibv_cq *cq = nullptr;
  ibv_mr *mr = nullptr;
  uint8_t *mem = nullptr;
  // receive side
  std::deque<RxSeg> rxq;
  uint32_t ret = 0;           // reposted slots whose credits the peer has not been given
  bool peer_short = false;    // peer sent kWant or kLast
  bool fin_rcvd = false, rd_shut = false;
  // send side
  uint32_t credits = kRecvSlots;
  uint32_t sq_next = 0, sq_busy = 0;
  bool want_sent = false, fin_sent = false, wr_shut = false;
  // errors and options
  int so_error = 0;           // pending error for SO_ERROR
  int conn_err = 0;           // connection broken: sends fail with this
  bool disconnected = false;
  bool draining = false;      // rclose waits for all send completions
  int backlog = 0;
  std::deque<std::shared_ptr<Sock>> accept_q;
  int v6only = 0;  // IPV6_V6ONLY (AF_INET6 sockets): RDMA_OPTION_ID_AFONLY
  int reuseaddr = 0, keepalive = 0, nodelay = 0, keepidle = 0, maxseg = 1460, rdma_iomap = 0;
  linger lng{};
  std::vector<LocalMap> lmaps;
  std::vector<IoMap> rmaps;
  std::deque<std::pair<uint8_t, IoMap>> ctrl_q;  // IOMAP/IOUNMAP not yet sent
};

std::mutex g_mu;
std::unordered_map<int, std::shared_ptr<Sock>> g_socks;

std::shared_ptr<Sock> lookup(int id) {
  std::lock_guard<std::mutex> g(g_mu);
  auto it = g_socks.find(id);
  return it == g_socks.end() ? nullptr : it->second;
}

inline int err(int e) {
  errno = e;
  return -1;
}

socklen_t addr_len(int family) {
  return family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

// An address given to rbind/rconnect: of the socket's family (an AF_INET6 socket reaches
// IPv4 through IPv4-mapped addresses) and long enough.
int check_addr(const Sock &s, const sockaddr *addr, socklen_t len) {
  if (!addr || len < sizeof(sa_family_t)) return EINVAL;
  if (addr->sa_family != s.domain) return EAFNOSUPPORT;
  return len < addr_len(s.domain) ? EINVAL : 0;
}

// Copies rdma_cm's address `a` out as a socket of s's family reports it: an AF_INET6
// socket sees an IPv4 peer (rdma_cm reports it as AF_INET) as IPv4-mapped.
void put_addr(const Sock &s, const sockaddr *a, sockaddr *out, socklen_t *len) {
  sockaddr_storage v{};
  if (a && a->sa_family == AF_INET6) {
    std::memcpy(&v, a, sizeof(sockaddr_in6));
  } else if (a && a->sa_family == AF_INET && s.domain == AF_INET6) {
    sockaddr_in in;
    std::memcpy(&in, a, sizeof in);
    auto *m = reinterpret_cast<sockaddr_in6 *>(&v);
    m->sin6_family = AF_INET6;
    m->sin6_port = in.sin_port;
    m->sin6_addr.s6_addr[10] = m->sin6_addr.s6_addr[11] = 0xff;
    std::memcpy(&m->sin6_addr.s6_addr[12], &in.sin_addr, 4);
  } else if (a && a->sa_family == AF_INET) {
    std::memcpy(&v, a, sizeof(sockaddr_in));
  } else {
    v.ss_family = (sa_family_t)s.domain;  // not bound yet: the wildcard
  }
  const socklen_t n = addr_len(v.ss_family);
  std::memcpy(out, &v, std::min(*len, n));
  *len = n;
}

void set_nonblock_fd(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

// Creates a socket with its own event channel (id = channel fd) and cm id.
int sock_new(std::shared_ptr<Sock> *out, rdma_cm_id *adopt) {
  auto s = std::make_shared<Sock>();
  s->ch = rdma_create_event_channel();
  if (!s->ch) return errno ? errno : ENOMEM;
  set_nonblock_fd(s->ch->fd);
  if (adopt) {
    if (rdma_migrate_id(adopt, s->ch)) {
      int e = errno;
      rdma_destroy_event_channel(s->ch);
      return e ? e : EINVAL;
    }
    s->cm = adopt;
  } else if (rdma_create_id(s->ch, &s->cm, nullptr, RDMA_PS_TCP)) {
    int e = errno;
    rdma_destroy_event_channel(s->ch);
    return e ? e : ENOMEM;
  }
  s->cm->context = s.get();
  s->id = s->ch->fd;
  {
    std::lock_guard<std::mutex> g(g_mu);
    g_socks[s->id] = s;
  }
  *out = std::move(s);
  return 0;
}

constexpr uint64_t kSendTag = uint64_t(1) << 32;  // wr_id of sends: kSendTag | send slot

uint8_t *recv_slot(Sock &s, uint32_t i) { return s.mem + size_t(i) * kSlotSize; }
uint8_t *send_slot(Sock &s, uint32_t i) { return s.mem + size_t(kRecvSlots + i) * kSlotSize; }

int post_recv(Sock &s, uint32_t slot) {
  ibv_sge sge{reinterpret_cast<uintptr_t>(recv_slot(s, slot)), kSlotSize, s.mr->lkey};
  ibv_recv_wr wr{}, *bad = nullptr;
  wr.wr_id = slot;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  return ibv_post_recv(s.cm->qp, &wr, &bad);
}

// Verbs resources of a connecting or accepted socket; caller holds s.mu.
int setup_qp(Sock &s) {
  ibv_context *ctx = s.cm->verbs;
  if (!ctx) return ENODEV;
  size_t bytes = size_t(kRecvSlots + kSendSlots) * kSlotSize;
  s.mem = static_cast<uint8_t *>(std::aligned_alloc(4096, bytes));
  if (!s.mem) return ENOMEM;
  if (!(s.pd = ibv_alloc_pd(ctx))) return errno ? errno : ENOMEM;
  if (!(s.cc = ibv_create_comp_channel(ctx))) return errno ? errno : ENOMEM;
  set_nonblock_fd(s.cc->fd);
  if (!(s.cq = ibv_create_cq(ctx, int(2 * (kRecvSlots + kSendSlots)), &s, s.cc, 0)))
    return errno ? errno : ENOMEM;
  if (!(s.mr = ibv_reg_mr(s.pd, s.mem, bytes, IBV_ACCESS_LOCAL_WRITE)))
    return errno ? errno : ENOMEM;
  ibv_qp_init_attr qa{};
  qa.send_cq = s.cq;
  qa.recv_cq = s.cq;
  qa.qp_type = IBV_QPT_RC;
  qa.cap.max_send_wr = kSendSlots;
  qa.cap.max_recv_wr = kRecvSlots;
  qa.cap.max_send_sge = 1;
  qa.cap.max_recv_sge = 1;
  if (rdma_create_qp(s.cm, s.pd, &qa)) return errno ? errno : ENOMEM;
  for (uint32_t i = 0; i < kRecvSlots; ++i)
    if (int r = post_recv(s, i)) return r;
  ibv_req_notify_cq(s.cq, 0);
  return 0;
}

void teardown_qp(Sock &s) {
  if (s.cm && s.cm->qp) rdma_destroy_qp(s.cm);
  for (auto &m : s.lmaps) ibv_dereg_mr(m.mr);
  s.lmaps.clear();
  if (s.mr) ibv_dereg_mr(s.mr);
  if (s.cq) ibv_destroy_cq(s.cq);
  if (s.cc) ibv_destroy_comp_channel(s.cc);
  if (s.pd) ibv_dealloc_pd(s.pd);
  std::free(s.mem);
  s.mr = nullptr, s.cq = nullptr, s.cc = nullptr, s.pd = nullptr, s.mem = nullptr;
}

void broken(Sock &s, int e) {
  if (!s.conn_err) s.conn_err = e;
  if (s.st == St::Connected) s.st = St::Error;
}

// Posts one message from send slot `slot` (already filled past the header). Caller holds
// s.mu and checked the credit rule.
int post_msg(Sock &s, uint8_t type, uint32_t len, uint8_t extra_flags = 0) {
  uint32_t slot = s.sq_next;
  Hdr h;
  h.type = type;
  h.len = len;
  h.credits = static_cast<uint16_t>(s.ret);
  h.flags = extra_flags;
  if (s.credits == 1) h.flags |= kLast;
  put(send_slot(s, slot), h);
  ibv_sge sge{reinterpret_cast<uintptr_t>(send_slot(s, slot)), kHdrSize + len, s.mr->lkey};
  ibv_send_wr wr{}, *bad = nullptr;
  wr.wr_id = kSendTag | slot;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_SEND;
  // Solicited: a peer sleeping for messages arms its CQ for solicited completions only and
  // is not woken by its own send completions.
  wr.send_flags = IBV_SEND_SIGNALED | IBV_SEND_SOLICITED;
  if (int r = ibv_post_send(s.cm->qp, &wr, &bad)) return r;
  s.sq_next = (s.sq_next + 1) % kSendSlots;
  ++s.sq_busy;
  --s.credits;
  s.ret = 0;
  s.peer_short = false;
  return 0;
}

bool sq_free(const Sock &s) { return s.sq_busy < kSendSlots; }

// Sends a CREDIT when the rules of wire.h ask for one. Caller holds s.mu.
void maybe_credit(Sock &s) {
  if (s.st != St::Connected || !sq_free(s) || s.credits == 0) return;
  if (s.ret >= kCreditBatch || (s.peer_short && s.ret >= 2)) {
    if (post_msg(s, kCredit, 0)) broken(s, EIO);
  }
}

// Sends queued IOMAP/IOUNMAP announcements while the credit rule allows. Caller holds s.mu.
void flush_ctrl(Sock &s) {
  while (!s.ctrl_q.empty() && s.st == St::Connected && s.credits >= 2 && sq_free(s)) {
    auto &[type, m] = s.ctrl_q.front();
    put(send_slot(s, s.sq_next) + kHdrSize, m);
    if (post_msg(s, type, kIoMapSize)) return broken(s, EIO);
    s.ctrl_q.pop_front();
  }
}

void handle_recv(Sock &s, const ibv_wc &wc) {
  uint32_t slot = static_cast<uint32_t>(wc.wr_id);
  if (slot >= kRecvSlots || wc.byte_len < kHdrSize) return broken(s, EPROTO);
  const uint8_t *p = recv_slot(s, slot);
  Hdr h = get(p);
  if (h.len > wc.byte_len - kHdrSize || h.credits > kRecvSlots) return broken(s, EPROTO);
  s.credits += h.credits;
  if (h.credits) s.want_sent = false;
  if (s.credits > kRecvSlots) return broken(s, EPROTO);
  if (h.flags & (kWant | kLast)) s.peer_short = true;
  bool repost = true;
  switch (h.type) {
    case kData:
      if (h.len) {
        s.rxq.push_back({slot, kHdrSize, h.len});
        repost = false;
      }
      break;
    case kCredit: break;
    case kFin: s.fin_rcvd = true; break;
    case kIoMap:
      if (h.len >= kIoMapSize) s.rmaps.push_back(get_iomap(p + kHdrSize));
      break;
    case kIoUnmap:
      if (h.len >= kIoMapSize) {
        uint64_t off = get_iomap(p + kHdrSize).offset;
        std::erase_if(s.rmaps, [off](const IoMap &m) { return m.offset == off; });
      }
      break;
    default: return broken(s, EPROTO);
  }
  if (repost) {
    if (post_recv(s, slot)) return broken(s, EIO);
    ++s.ret;
  }
}

// Consumes completions. Caller holds s.mu.
void drain_cq(Sock &s) {
  if (!s.cq) return;
  if (s.cc) {
    ibv_cq *ecq;
    void *ectx;
    while (ibv_get_cq_event(s.cc, &ecq, &ectx) == 0) ibv_ack_cq_events(ecq, 1);
  }
  ibv_wc wc[16];
  int n;
  while ((n = ibv_poll_cq(s.cq, 16, wc)) > 0) {
    for (int i = 0; i < n; ++i) {
      // wr_id, not opcode, tells sends from receives: opcode is undefined in error WCs.
      bool is_send = wc[i].wr_id & kSendTag;
      if (is_send && s.sq_busy) --s.sq_busy;
      if (wc[i].status != IBV_WC_SUCCESS) {
        broken(s, s.fin_rcvd || s.disconnected ? EPIPE : ECONNRESET);
        continue;
      }
      if (!is_send) handle_recv(s, wc[i]);
    }
  }
  maybe_credit(s);
}

int cm_status_err(const rdma_cm_event &e, int dflt) {
  return e.status < 0 ? -e.status : (e.status > 0 && e.event != RDMA_CM_EVENT_REJECTED ? e.status : dflt);
}

void conn_failed(Sock &s, int e) {
  s.so_error = e;
  s.conn_err = e;
  s.st = St::Error;
}

// Connection parameters of both sides: our Hello as private data; rsockets need no READs.
rdma_conn_param conn_param(const Hello &h) {
  rdma_conn_param p{};
  p.private_data = &h;
  p.private_data_len = sizeof h;
  p.responder_resources = 1;
  p.initiator_depth = 1;
  p.retry_count = 7;
  return p;
}

void handle_connect_request(Sock &l, rdma_cm_id *nid, const rdma_cm_event &ev) {
  bool ok = ev.param.conn.private_data_len >= sizeof(Hello);
  if (ok) {
    Hello h;
    std::memcpy(&h, ev.param.conn.private_data, sizeof h);
    ok = ntohl(h.magic) == kMagic && h.version == kVersion;
  }
  if (!ok || int(l.accept_q.size()) >= std::max(l.backlog, 1)) {
    rdma_reject(nid, nullptr, 0);
    rdma_destroy_id(nid);
    return;
  }
  std::shared_ptr<Sock> c;
  if (sock_new(&c, nid)) {
    rdma_reject(nid, nullptr, 0);
    rdma_destroy_id(nid);
    return;
  }
  std::lock_guard<std::mutex> g(c->mu);
  c->domain = l.domain;
  c->st = St::Connecting;
  c->nodelay = l.nodelay, c->keepalive = l.keepalive, c->keepidle = l.keepidle;
  Hello h{htonl(kMagic), kVersion, {}};
  rdma_conn_param p = conn_param(h);
  if (setup_qp(*c) || rdma_accept(c->cm, &p)) {
    rdma_reject(c->cm, nullptr, 0);
    conn_failed(*c, ECONNABORTED);
  }
  l.accept_q.push_back(c);
}

// Consumes rdma_cm events of s's channel and moves the connection state machine. Caller
// holds s.mu.
void drain_cm(Sock &s) {
  rdma_cm_event *ev;
  while (s.ch && rdma_get_cm_event(s.ch, &ev) == 0) {
    rdma_cm_event e = *ev;
    if (e.event == RDMA_CM_EVENT_CONNECT_REQUEST && s.st == St::Listening) {
      handle_connect_request(s, e.id, e);  // reads the event's private data: ack after
      rdma_ack_cm_event(ev);
      continue;
    }
    rdma_ack_cm_event(ev);
    switch (e.event) {
      case RDMA_CM_EVENT_ADDR_RESOLVED:
        if (s.st == St::Resolving) {
          s.st = St::Routing;
          if (rdma_resolve_route(s.cm, 2000)) conn_failed(s, errno ? errno : EHOSTUNREACH);
        }
        break;
      case RDMA_CM_EVENT_ROUTE_RESOLVED:
        if (s.st == St::Routing) {
          s.st = St::Connecting;
          Hello h{htonl(kMagic), kVersion, {}};
          rdma_conn_param p = conn_param(h);
          if (int r = setup_qp(s)) conn_failed(s, r);
          else if (rdma_connect(s.cm, &p)) conn_failed(s, errno ? errno : ECONNREFUSED);
        }
        break;
      case RDMA_CM_EVENT_ESTABLISHED:
        if (s.st == St::Connecting) s.st = St::Connected;
        break;
      case RDMA_CM_EVENT_ADDR_ERROR:
      case RDMA_CM_EVENT_ROUTE_ERROR:
        conn_failed(s, cm_status_err(e, EHOSTUNREACH));
        break;
      case RDMA_CM_EVENT_UNREACHABLE:
      case RDMA_CM_EVENT_CONNECT_ERROR:
        conn_failed(s, cm_status_err(e, ETIMEDOUT));
        break;
      case RDMA_CM_EVENT_REJECTED: conn_failed(s, ECONNREFUSED); break;
      case RDMA_CM_EVENT_DISCONNECTED:
      case RDMA_CM_EVENT_DEVICE_REMOVAL:
        s.disconnected = true;
        if (s.st == St::Connecting) conn_failed(s, ECONNRESET);
        else broken(s, EPIPE);
        break;
      default: break;
    }
  }
}

void progress(Sock &s) {
  drain_cm(s);
  drain_cq(s);
  flush_ctrl(s);
}

// --- readiness
bool readable(const Sock &s) {
  if (s.st == St::Listening) return !s.accept_q.empty();
  return !s.rxq.empty() || s.fin_rcvd || s.rd_shut || s.disconnected || s.st == St::Error;
}
bool connecting(const Sock &s) {
  return s.st == St::Resolving || s.st == St::Routing || s.st == St::Connecting;
}
bool can_send_data(const Sock &s) { return s.credits >= 2 && sq_free(s) && s.ctrl_q.empty(); }
bool writable(const Sock &s) {
  if (s.st == St::Connected) return can_send_data(s) || s.wr_shut;
  return s.st == St::Error;
}

short revents_of(const Sock &s, short events) {
  short r = 0;
  if ((events & POLLIN) && readable(s)) r |= POLLIN;
  if ((events & POLLOUT) && writable(s)) r |= POLLOUT;
  if (s.st == St::Error && s.so_error) r |= POLLERR;
  if (r & POLLERR) return r;
  // Hang-up only once the stream's data is consumed, as for TCP.
  if (s.rxq.empty() && (s.disconnected || (s.st == St::Error && s.conn_err))) r |= POLLHUP;
  return r;
}

// Arms notification, then looks once more, so nothing that completed before arming is missed.
// Send completions matter only while they hold back a send (the queue is full); peer
// messages and errors always wake.
void arm(Sock &s) {
  if (s.cq) ibv_req_notify_cq(s.cq, sq_free(s) && !s.draining ? 1 : 0);
  progress(s);
}

void add_fds(const Sock &s, std::vector<pollfd> &v) {
  if (s.ch) v.push_back({s.ch->fd, POLLIN, 0});
  if (s.cc) v.push_back({s.cc->fd, POLLIN, 0});
}

// Upper bound of one sleep: a second thread may consume the wakeup meant for this one.
constexpr int kSliceMs = 100;

// Waits until ready(s) with s.mu held through `lk`. Returns 0 or EAGAIN (nonblocking).
template <class Ready>
int wait_for(Sock &s, std::unique_lock<std::mutex> &lk, bool nonblock, Ready ready,
             int timeout_ms = -1) {
  auto start = std::chrono::steady_clock::now();
  for (;;) {
    progress(s);
    if (ready()) return 0;
    if (nonblock) return EAGAIN;
    arm(s);
    if (ready()) return 0;
    int slice = kSliceMs;
    if (timeout_ms >= 0) {
      auto el = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - start).count();
      if (el >= timeout_ms) return ETIMEDOUT;
      slice = std::min<int>(slice, int(timeout_ms - el));
    }
    std::vector<pollfd> fds;
    add_fds(s, fds);
    lk.unlock();
    int n = ::poll(fds.data(), fds.size(), slice);
    int pe = errno;
    lk.lock();
    if (n < 0 && pe == EINTR) return EINTR;
  }
}

// Ensures at least two credits (or the connection broke); a blocked sender with one credit
// asks for more. Caller holds s.mu.
int wait_send(Sock &s, std::unique_lock<std::mutex> &lk, bool nonblock) {
  return wait_for(s, lk, nonblock, [&] {
    if (s.st != St::Connected) return true;
    if (can_send_data(s)) return true;
    if (s.credits == 1 && !s.want_sent && sq_free(s)) {
      if (post_msg(s, kCredit, 0, kWant)) broken(s, EIO);
      s.want_sent = true;
    }
    return false;
  });
}

int send_check(Sock &s) {
  if (s.wr_shut) return EPIPE;
  if (s.st == St::Connected) return 0;
  if (s.st == St::Connecting || s.st == St::Resolving || s.st == St::Routing) return 0;
  if (s.st == St::Error) return s.conn_err ? s.conn_err : EPIPE;
  return ENOTCONN;
}

// Stream send of an iovec; returns bytes or -errno.
ssize_t do_send(int id, const iovec *iov, int iovcnt, int flags) {
  auto sp = lookup(id);
  if (!sp) return -EBADF;
  Sock &s = *sp;
  std::unique_lock<std::mutex> lk(s.mu);
  bool nb = s.nonblock || (flags & MSG_DONTWAIT);
  if (int r = send_check(s)) return -r;
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i) total += iov[i].iov_len;
  size_t done = 0;
  int vi = 0;
  size_t voff = 0;
  while (done < total) {
    int r = wait_for(s, lk, nb || done > 0 ? nb : false, [&] {
      return s.st == St::Error || s.st == St::Closed ||
             (s.st == St::Connected && (can_send_data(s) || s.credits == 1));
    });
    if (r == 0 && s.st == St::Connected && !can_send_data(s)) r = wait_send(s, lk, nb);
    if (r) return done ? ssize_t(done) : -r;
    if (s.st != St::Connected) {
      if (done) return ssize_t(done);
      return -(s.conn_err ? s.conn_err : EPIPE);
    }
    uint8_t *dst = send_slot(s, s.sq_next) + kHdrSize;
    uint32_t len = 0;
    while (len < kMaxPayload && vi < iovcnt) {
      size_t n = std::min<size_t>(kMaxPayload - len, iov[vi].iov_len - voff);
      std::memcpy(dst + len, static_cast<const uint8_t *>(iov[vi].iov_base) + voff, n);
      len += uint32_t(n);
      voff += n;
      if (voff == iov[vi].iov_len) ++vi, voff = 0;
    }
    if (int e = post_msg(s, kData, len)) return done ? ssize_t(done) : -e;
    done += len;
  }
  return ssize_t(done);
}

// Stream receive into an iovec; returns bytes (0 = end of stream) or -errno.
ssize_t do_recv(int id, const iovec *iov, int iovcnt, int flags) {
  auto sp = lookup(id);
  if (!sp) return -EBADF;
  Sock &s = *sp;
  std::unique_lock<std::mutex> lk(s.mu);
  if (s.st == St::Idle || s.st == St::Bound || s.st == St::Listening) return -ENOTCONN;
  bool nb = s.nonblock || (flags & MSG_DONTWAIT);
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i) total += iov[i].iov_len;
  if (!total) return 0;
  size_t done = 0;
  for (;;) {
    int r = wait_for(s, lk, nb, [&] { return readable(s); });
    if (r) return done ? ssize_t(done) : -r;
    if (s.rxq.empty()) {
      if (done) return ssize_t(done);
      if (s.fin_rcvd || s.rd_shut || s.disconnected) return 0;
      if (s.conn_err == EPIPE) return 0;
      return -(s.conn_err ? s.conn_err : ECONNRESET);
    }
    int vi = 0;
    size_t voff = 0, skip = done;
    while (skip && vi < iovcnt) {  // resume position inside the iovec
      size_t n = std::min(skip, iov[vi].iov_len);
      skip -= n;
      voff = n;
      if (voff == iov[vi].iov_len) ++vi, voff = 0;
    }
    auto it = s.rxq.begin();
    uint32_t peek_off = 0;
    while (done < total && it != s.rxq.end()) {
      RxSeg &g = *it;
      uint32_t avail = g.len - peek_off;
      size_t n = std::min<size_t>(avail, iov[vi].iov_len - voff);
      std::memcpy(static_cast<uint8_t *>(iov[vi].iov_base) + voff,
                  recv_slot(s, g.slot) + g.off + peek_off, n);
      done += n;
      voff += n;
      if (voff == iov[vi].iov_len) ++vi, voff = 0;
      if (flags & MSG_PEEK) {
        peek_off += uint32_t(n);
        if (peek_off == g.len) ++it, peek_off = 0;
        continue;
      }
      g.off += uint32_t(n);
      g.len -= uint32_t(n);
      if (g.len == 0) {
        if (post_recv(s, g.slot)) broken(s, EIO);
        ++s.ret;
        s.rxq.pop_front();
        it = s.rxq.begin();
      }
    }
    maybe_credit(s);
    if (done == total || !(flags & MSG_WAITALL) || (flags & MSG_PEEK)) return ssize_t(done);
  }
}

int do_connect(Sock &s, std::unique_lock<std::mutex> &lk, const sockaddr *addr, socklen_t len) {
  if (int r = check_addr(s, addr, len)) return r;
  switch (s.st) {
    case St::Connected: return EISCONN;
    case St::Resolving:
    case St::Routing:
    case St::Connecting: return EALREADY;
    case St::Listening: return EINVAL;
    case St::Error: return s.so_error ? std::exchange(s.so_error, 0) : EISCONN;
    default: break;
  }
  s.st = St::Resolving;
  if (rdma_resolve_addr(s.cm, nullptr, const_cast<sockaddr *>(addr), 2000)) {
    int e = errno ? errno : EHOSTUNREACH;
    s.st = St::Idle;
    return e;
  }
  if (s.nonblock) {
    progress(s);
    if (s.st == St::Connected) return 0;
    return EINPROGRESS;
  }
  wait_for(s, lk, false, [&] { return s.st == St::Connected || s.st == St::Error; });
  if (s.st == St::Connected) return 0;
  return std::exchange(s.so_error, 0);
}

void send_fin(Sock &s, std::unique_lock<std::mutex> &lk, bool block) {
  if (s.fin_sent || s.st != St::Connected) return;
  if (!block && !can_send_data(s)) progress(s);
  if (block && !can_send_data(s)) {
    wait_send(s, lk, false);
  }
  if (s.st == St::Connected && can_send_data(s)) {
    if (post_msg(s, kFin, 0) == 0) s.fin_sent = true;
  }
}

void destroy(std::shared_ptr<Sock> sp) {
  Sock &s = *sp;
  {
    std::lock_guard<std::mutex> g(g_mu);
    g_socks.erase(s.id);
  }
  std::unique_lock<std::mutex> lk(s.mu);
  for (auto &c : s.accept_q) destroy(c);
  s.accept_q.clear();
  if (s.st == St::Connected) {
    send_fin(s, lk, false);
    // Let queued sends reach the peer before the QP is torn down (bounded).
    s.draining = true;
    wait_for(s, lk, false, [&] { return s.sq_busy == 0 || s.st != St::Connected; }, 2000);
  }
  if (s.cm && (s.st == St::Connected || s.st == St::Error || s.st == St::Connecting)) {
    rdma_disconnect(s.cm);
  }
  s.st = St::Closed;
  teardown_qp(s);
  if (s.cm) rdma_destroy_id(s.cm);
  s.cm = nullptr;
  if (s.ch) rdma_destroy_event_channel(s.ch);
  s.ch = nullptr;
}

int get_int_opt(const void *v, socklen_t len, int *out) {
  if (!v || len < sizeof(int)) return EINVAL;
  int x;
  std::memcpy(&x, v, sizeof x);
  *out = x;
  return 0;
}

int put_int_opt(void *v, socklen_t *len, int x) {
  if (!v || !len || *len < sizeof(int)) return EINVAL;
  std::memcpy(v, &x, sizeof x);
  *len = sizeof x;
  return 0;
}

// Integer socket options: the field that keeps a set value, or the fixed value reported
// (buffers and queue sizes are fixed by wire.h). SO_LINGER and SO_ERROR are special cases.
struct IntOpt {
  int level, name;
  int Sock::*field;
  int fixed;
  bool settable;
};
constexpr IntOpt kIntOpts[] = {
    {SOL_SOCKET, SO_REUSEADDR, &Sock::reuseaddr, 0, true},
    {SOL_SOCKET, SO_KEEPALIVE, &Sock::keepalive, 0, true},
    {SOL_SOCKET, SO_RCVBUF, nullptr, int(kRecvSlots * kMaxPayload), true},
    {SOL_SOCKET, SO_SNDBUF, nullptr, int(kSendSlots * kMaxPayload), true},
    {SOL_SOCKET, SO_OOBINLINE, nullptr, 1, true},
    {SOL_SOCKET, SO_TYPE, nullptr, SOCK_STREAM, false},
    {IPPROTO_TCP, TCP_NODELAY, &Sock::nodelay, 0, true},
    {IPPROTO_IPV6, IPV6_V6ONLY, &Sock::v6only, 0, true},
    {IPPROTO_TCP, TCP_MAXSEG, &Sock::maxseg, 0, true},
    {IPPROTO_TCP, TCP_KEEPIDLE, &Sock::keepidle, 0, true},
    {SOL_RDMA, RDMA_SQSIZE, nullptr, int(kSendSlots), true},
    {SOL_RDMA, RDMA_RQSIZE, nullptr, int(kRecvSlots), true},
    {SOL_RDMA, RDMA_INLINE, nullptr, 0, true},
    {SOL_RDMA, RDMA_IOMAPSIZE, &Sock::rdma_iomap, 0, true},
    {SOL_RDMA, RDMA_ROUTE, nullptr, 0, true},  // routes are resolved by rconnect
};

const IntOpt *find_opt(int level, int name) {
  for (const IntOpt &o : kIntOpts)
    if (o.level == level && o.name == name) return &o;
  return nullptr;
}

int poll_impl(pollfd *fds, nfds_t nfds, int timeout) {
  auto start = std::chrono::steady_clock::now();
  std::vector<std::shared_ptr<Sock>> socks(nfds);
  for (nfds_t i = 0; i < nfds; ++i) socks[i] = fds[i].fd >= 0 ? lookup(fds[i].fd) : nullptr;
  for (int round = 0;; ++round) {
    int ready = 0;
    std::vector<pollfd> real;
    std::vector<std::pair<nfds_t, size_t>> map;  // real-fd entries for non-rsocket fds
    for (nfds_t i = 0; i < nfds; ++i) {
      fds[i].revents = 0;
      if (!socks[i]) {
        if (fds[i].fd >= 0) {
          map.push_back({i, real.size()});
          real.push_back({fds[i].fd, fds[i].events, 0});
        }
        continue;
      }
      std::lock_guard<std::mutex> g(socks[i]->mu);
      if (round > 0) {
        progress(*socks[i]);
      } else {
        progress(*socks[i]);
      }
      fds[i].revents = revents_of(*socks[i], fds[i].events);
      if (!fds[i].revents) {
        arm(*socks[i]);
        fds[i].revents = revents_of(*socks[i], fds[i].events);
      }
      if (fds[i].revents) ++ready;
      add_fds(*socks[i], real);
    }
    // Non-rsocket fds: ask the kernel without sleeping first.
    if (!map.empty()) {
      std::vector<pollfd> only;
      for (auto &m : map) only.push_back(real[m.second]);
      int n = ::poll(only.data(), only.size(), 0);
      if (n > 0)
        for (size_t k = 0; k < map.size(); ++k)
          if ((fds[map[k].first].revents = only[k].revents)) ++ready;
    }
    if (ready || timeout == 0) return ready;
    int slice = kSliceMs;
    if (timeout > 0) {
      auto el = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - start).count();
      if (el >= timeout) return 0;
      slice = std::min<int>(slice, int(timeout - el));
    }
    for (auto &p : real) p.revents = 0;
    int n = ::poll(real.data(), real.size(), slice);
    if (n < 0 && errno == EINTR) return -EINTR;
  }
}

}  // namespace
}  // namespace eca::rsock

using namespace eca::rsock;

namespace {
// Depth of rsocket calls on this thread. librspreload intercepts every socket() of the
// process, including those our rdma_cm makes for its own TCP connections while serving an
// rsocket call; those must stay kernel sockets, so rsocket() refuses while one runs and
// librspreload falls back to the real socket(). The same holds on the library's own
// threads (named "eca-..."), which run rdma_cm work for the application's threads.
thread_local int t_inside = 0;

bool internal_thread() {
  char name[16] = {};
  return pthread_getname_np(pthread_self(), name, sizeof name) == 0 &&
         std::strncmp(name, "eca-", 4) == 0;
}

struct Inside {
  Inside() { ++t_inside; }
  ~Inside() { --t_inside; }
};

// What a call on one rsocket starts with: the thread is marked inside the library, and the
// socket is looked up and locked for the rest of the call. sp is empty (the caller returns
// EBADF) for a descriptor that is not an rsocket. Members are released in reverse order:
// the lock before the last reference to the socket that holds the mutex.
struct SockCall {
  Inside in;
  std::shared_ptr<Sock> sp;
  std::unique_lock<std::mutex> lk;
  explicit SockCall(int id) : sp(lookup(id)) {
    if (sp) lk = std::unique_lock<std::mutex>(sp->mu);
  }
};

inline ssize_t sret(ssize_t r) { return r < 0 ? err(int(-r)) : r; }
inline int iret(int r) { return r ? err(r) : 0; }
}  // namespace

extern "C" {

int rsocket(int domain, int type, int protocol) {
  if (t_inside || internal_thread()) return err(EOPNOTSUPP);
  Inside in;
  if (domain != AF_INET && domain != AF_INET6) return err(EAFNOSUPPORT);
  int base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (base == SOCK_DGRAM) return err(EOPNOTSUPP);
  if (base != SOCK_STREAM) return err(EPROTOTYPE);
  if (protocol && protocol != IPPROTO_TCP) return err(EPROTONOSUPPORT);
  std::shared_ptr<Sock> s;
  if (int r = sock_new(&s, nullptr)) return err(r);
  s->nonblock = type & SOCK_NONBLOCK;
  s->domain = domain;
  return s->id;
}

int rbind(int socket, const struct sockaddr *addr, socklen_t addrlen) {
  SockCall call(socket);
  if (!call.sp) return err(EBADF);
  if (int r = check_addr(*call.sp, addr, addrlen)) return err(r);
  if (call.sp->st != St::Idle) return err(EINVAL);
  if (rdma_bind_addr(call.sp->cm, const_cast<sockaddr *>(addr))) return -1;
  call.sp->st = St::Bound;
  return 0;
}

int rlisten(int socket, int backlog) {
  SockCall call(socket);
  if (!call.sp) return err(EBADF);
  if (call.sp->st == St::Listening) {
    call.sp->backlog = backlog;
    return 0;
  }
  if (call.sp->st != St::Idle && call.sp->st != St::Bound) return err(EINVAL);
  if (call.sp->st == St::Idle) {
    sockaddr_storage any{};  // the wildcard of the socket's family
    any.ss_family = (sa_family_t)call.sp->domain;
    if (rdma_bind_addr(call.sp->cm, reinterpret_cast<sockaddr *>(&any))) return -1;
  }
  if (rdma_listen(call.sp->cm, backlog > 0 ? backlog : 1)) return -1;
  call.sp->backlog = backlog > 0 ? backlog : 1;
  call.sp->st = St::Listening;
  return 0;
}

int raccept(int socket, struct sockaddr *addr, socklen_t *addrlen) {
  SockCall call(socket);
  if (!call.sp) return err(EBADF);
  if (call.sp->st != St::Listening) return err(EINVAL);
  Sock &s = *call.sp;
  if (int r = wait_for(s, call.lk, s.nonblock, [&] { return !s.accept_q.empty(); })) return err(r);
  auto c = call.sp->accept_q.front();
  call.sp->accept_q.pop_front();
  if (addr && addrlen) put_addr(*c, rdma_get_peer_addr(c->cm), addr, addrlen);
  return c->id;
}

int rconnect(int socket, const struct sockaddr *addr, socklen_t addrlen) {
  SockCall call(socket);
  if (!call.sp) return err(EBADF);
  return iret(do_connect(*call.sp, call.lk, addr, addrlen));
}

int rshutdown(int socket, int how) {
  Inside in;
  auto sp = lookup(socket);
  if (!sp) return err(EBADF);
  if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) return err(EINVAL);
  std::unique_lock<std::mutex> lk(sp->mu);
  Sock &s = *sp;
  progress(s);
  if (s.st != St::Connected && s.st != St::Error) return err(ENOTCONN);
  if (how != SHUT_WR) s.rd_shut = true;
  if (how != SHUT_RD) {
    send_fin(s, lk, !s.nonblock);
    s.wr_shut = true;
  }
  return 0;
}

int rclose(int socket) {
  Inside in;
  auto sp = lookup(socket);
  if (!sp) return err(EBADF);
  destroy(sp);
  return 0;
}

ssize_t rrecv(int socket, void *buf, size_t len, int flags) {
  Inside in;
  iovec v{buf, len};
  return sret(do_recv(socket, &v, 1, flags));
}

ssize_t rrecvfrom(int socket, void *buf, size_t len, int flags, struct sockaddr *src_addr,
                  socklen_t *addrlen) {
  ssize_t r = rrecv(socket, buf, len, flags);
  if (r >= 0 && src_addr && addrlen) rgetpeername(socket, src_addr, addrlen);
  return r;
}

ssize_t rrecvmsg(int socket, struct msghdr *msg, int flags) {
  Inside in;
  if (!msg) return err(EINVAL);
  msg->msg_controllen = 0;
  msg->msg_flags = 0;
  return sret(do_recv(socket, msg->msg_iov, int(msg->msg_iovlen), flags));
}

ssize_t rsend(int socket, const void *buf, size_t len, int flags) {
  Inside in;
  iovec v{const_cast<void *>(buf), len};
  return sret(do_send(socket, &v, 1, flags));
}

ssize_t rsendto(int socket, const void *buf, size_t len, int flags,
                const struct sockaddr *dest_addr, socklen_t /*addrlen*/) {
  if (dest_addr) return err(EISCONN);
  return rsend(socket, buf, len, flags);
}

ssize_t rsendmsg(int socket, const struct msghdr *msg, int flags) {
  Inside in;
  if (!msg) return err(EINVAL);
  return sret(do_send(socket, msg->msg_iov, int(msg->msg_iovlen), flags));
}

ssize_t rread(int socket, void *buf, size_t count) { return rrecv(socket, buf, count, 0); }

ssize_t rreadv(int socket, const struct iovec *iov, int iovcnt) {
  Inside in;
  return sret(do_recv(socket, iov, iovcnt, 0));
}

ssize_t rwrite(int socket, const void *buf, size_t count) { return rsend(socket, buf, count, 0); }

ssize_t rwritev(int socket, const struct iovec *iov, int iovcnt) {
  Inside in;
  return sret(do_send(socket, iov, iovcnt, 0));
}

int rpoll(struct pollfd *fds, nfds_t nfds, int timeout) {
  Inside in;
  int r = poll_impl(fds, nfds, timeout);
  return r < 0 ? err(-r) : r;
}

int rselect(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds,
            struct timeval *timeout) {
  Inside in;
  std::vector<pollfd> p;
  for (int fd = 0; fd < nfds; ++fd) {
    short ev = 0;
    if (readfds && FD_ISSET(fd, readfds)) ev |= POLLIN;
    if (writefds && FD_ISSET(fd, writefds)) ev |= POLLOUT;
    if (exceptfds && FD_ISSET(fd, exceptfds)) ev |= POLLPRI;
    if (ev) p.push_back({fd, ev, 0});
  }
  int to = timeout ? int(timeout->tv_sec * 1000 + timeout->tv_usec / 1000) : -1;
  int r = poll_impl(p.data(), p.size(), to);
  if (r < 0) return err(-r);
  if (readfds) FD_ZERO(readfds);
  if (writefds) FD_ZERO(writefds);
  if (exceptfds) FD_ZERO(exceptfds);
  int cnt = 0;
  for (auto &e : p) {
    if (readfds && (e.revents & (POLLIN | POLLHUP | POLLERR)) && (e.events & POLLIN))
      FD_SET(e.fd, readfds), ++cnt;
    if (writefds && (e.revents & (POLLOUT | POLLERR)) && (e.events & POLLOUT))
      FD_SET(e.fd, writefds), ++cnt;
    if (exceptfds && (e.revents & POLLPRI) && (e.events & POLLPRI)) FD_SET(e.fd, exceptfds), ++cnt;
  }
  return cnt;
}

int rgetpeername(int socket, struct sockaddr *addr, socklen_t *addrlen) {
  auto sp = lookup(socket);
  if (!sp) return err(EBADF);
  if (!addr || !addrlen) return err(EFAULT);
  std::lock_guard<std::mutex> g(sp->mu);
  if (sp->st != St::Connected && sp->st != St::Error) return err(ENOTCONN);
  put_addr(*sp, rdma_get_peer_addr(sp->cm), addr, addrlen);
  return 0;
}

int rgetsockname(int socket, struct sockaddr *addr, socklen_t *addrlen) {
  auto sp = lookup(socket);
  if (!sp) return err(EBADF);
  if (!addr || !addrlen) return err(EFAULT);
  std::lock_guard<std::mutex> g(sp->mu);
  put_addr(*sp, rdma_get_local_addr(sp->cm), addr, addrlen);
  return 0;
}

int rsetsockopt(int socket, int level, int optname, const void *optval, socklen_t optlen) {
  SockCall call(socket);
  if (!call.sp) return err(EBADF);
  Sock &s = *call.sp;
  if (level == SOL_SOCKET && optname == SO_LINGER) {
    if (!optval || optlen < sizeof(linger)) return err(EINVAL);
    std::memcpy(&s.lng, optval, sizeof(linger));
    return 0;
  }
  const IntOpt *o = find_opt(level, optname);
  if (!o || !o->settable || (level == IPPROTO_IPV6 && s.domain != AF_INET6))
    return err(ENOPROTOOPT);
  int v;
  if (int r = get_int_opt(optval, optlen, &v)) return err(r);
  if (level == IPPROTO_IPV6 && optname == IPV6_V6ONLY) {
    int on = v ? 1 : 0;  // as a kernel socket: only before it is bound
    if (s.st != St::Idle ||
        rdma_set_option(s.cm, RDMA_OPTION_ID, RDMA_OPTION_ID_AFONLY, &on, sizeof on))
      return err(EINVAL);
  }
  if (o->field) s.*(o->field) = v;
  if (level == SOL_SOCKET && optname == SO_REUSEADDR && s.cm) {
    int one = v ? 1 : 0;
    rdma_set_option(s.cm, RDMA_OPTION_ID, RDMA_OPTION_ID_REUSEADDR, &one, sizeof one);
  }
  return 0;
}

int rgetsockopt(int socket, int level, int optname, void *optval, socklen_t *optlen) {
  SockCall call(socket);
  if (!call.sp) return err(EBADF);
  Sock &s = *call.sp;
  if (level == SOL_SOCKET && optname == SO_LINGER) {
    if (!optval || !optlen || *optlen < sizeof(linger)) return err(EINVAL);
    std::memcpy(optval, &s.lng, sizeof(linger));
    *optlen = sizeof(linger);
    return 0;
  }
  if (level == SOL_SOCKET && optname == SO_ERROR) {
    progress(s);
    return iret(put_int_opt(optval, optlen, std::exchange(s.so_error, 0)));
  }
  const IntOpt *o = find_opt(level, optname);
  if (!o || (level == IPPROTO_IPV6 && s.domain != AF_INET6)) return err(ENOPROTOOPT);
  return iret(put_int_opt(optval, optlen, o->field ? s.*(o->field) : o->fixed));
}

int rfcntl(int socket, int cmd, ...) {
  SockCall call(socket);
  if (!call.sp) return err(EBADF);
  switch (cmd) {
    case F_GETFL: return O_RDWR | (call.sp->nonblock ? O_NONBLOCK : 0);
    case F_SETFL: {
      va_list ap;
      va_start(ap, cmd);
      int fl = va_arg(ap, int);
      va_end(ap);
      call.sp->nonblock = fl & O_NONBLOCK;
      return 0;
    }
    default: return err(EINVAL);
  }
}

off_t riomap(int socket, void *buf, size_t len, int prot, int /*flags*/, off_t offset) {
  Inside in;
  auto sp = lookup(socket);
  if (!sp) return err(EBADF);
  if (!buf || !len || !(prot & PROT_WRITE)) return err(EINVAL);
  std::lock_guard<std::mutex> g(sp->mu);
  Sock &s = *sp;
  if (!s.pd) return err(EINVAL);  // no connection (being) set up yet
  if (offset == -1) offset = static_cast<off_t>(reinterpret_cast<uintptr_t>(buf));
  for (auto &m : s.lmaps)
    if (offset < m.offset + off_t(m.len) && m.offset < offset + off_t(len)) return err(EEXIST);
  ibv_mr *mr = ibv_reg_mr(s.pd, buf, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  if (!mr) return -1;
  s.lmaps.push_back({buf, len, offset, mr});
  // Announced in stream order, before any later data (flush_ctrl).
  s.ctrl_q.push_back({kIoMap, IoMap{uint64_t(offset), reinterpret_cast<uintptr_t>(buf), len, mr->rkey}});
  flush_ctrl(s);
  return offset;
}

int riounmap(int socket, void *buf, size_t len) {
  SockCall call(socket);
  if (!call.sp) return err(EBADF);
  Sock &s = *call.sp;
  auto it = std::find_if(s.lmaps.begin(), s.lmaps.end(),
                         [&](const LocalMap &m) { return m.buf == buf && m.len == len; });
  if (it == s.lmaps.end()) return err(EINVAL);
  s.ctrl_q.push_back({kIoUnmap, IoMap{uint64_t(it->offset), 0, 0, 0}});
  ibv_dereg_mr(it->mr);
  s.lmaps.erase(it);
  flush_ctrl(s);
  return 0;
}

size_t riowrite(int socket, const void *buf, size_t count, off_t offset, int flags) {
  Inside in;
  auto sp = lookup(socket);
  if (!sp) return size_t(err(EBADF));
  std::unique_lock<std::mutex> lk(sp->mu);
  Sock &s = *sp;
  bool nb = s.nonblock || (flags & MSG_DONTWAIT);
  size_t done = 0;
  while (done < count) {
    int r = wait_for(s, lk, nb || done > 0 ? nb : false,
                     [&] { return s.st != St::Connected || sq_free(s); });
    if (r) return done ? done : size_t(err(r));
    if (s.st != St::Connected) return done ? done : size_t(err(s.conn_err ? s.conn_err : EPIPE));
    uint64_t off = uint64_t(offset) + done;
    auto m = std::find_if(s.rmaps.begin(), s.rmaps.end(), [&](const IoMap &x) {
      return off >= x.offset && off < x.offset + x.len;
    });
    if (m == s.rmaps.end()) return done ? done : size_t(err(EINVAL));
    size_t n = std::min<size_t>({count - done, kSlotSize, m->offset + m->len - off});
    uint32_t slot = s.sq_next;
    std::memcpy(send_slot(s, slot), static_cast<const uint8_t *>(buf) + done, n);
    ibv_sge sge{reinterpret_cast<uintptr_t>(send_slot(s, slot)), uint32_t(n), s.mr->lkey};
    ibv_send_wr wr{}, *bad = nullptr;
    wr.wr_id = kSendTag | slot;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_RDMA_WRITE;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.wr.rdma.remote_addr = m->addr + (off - m->offset);
    wr.wr.rdma.rkey = m->rkey;
    if (int e = ibv_post_send(s.cm->qp, &wr, &bad)) return done ? done : size_t(err(e));
    s.sq_next = (s.sq_next + 1) % kSendSlots;
    ++s.sq_busy;
    done += n;
  }
  return done;
}

}  // extern "C"

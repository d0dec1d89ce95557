// rdma_cm core: see cm.hpp for the model.
//
// Objects:
//   Channel - an rdma_event_channel: a FIFO of events plus a pipe whose read end is the
//             channel fd. The pipe holds one byte exactly while the FIFO is non-empty (both
//             changed under Channel::mu), so poll() on the fd is truthful and a non-blocking
//             fd makes rdma_get_cm_event fail with EAGAIN.
//   Id      - an rdma_cm_id (first member) plus what application threads touch: the channel,
//             delivered/acked event counts (rdma_destroy_id waits for the acks of delivered
//             events, like librdmacm), rdma_create_ep state.
//   Core    - the connection state of one id, owned by the progress thread (every access is
//             on it). Asynchronous handlers hold a shared_ptr<Core>; Core::owner becomes null
//             when the id is destroyed, and handlers then do nothing.
//   Event   - an rdma_cm_event (first member) with storage for its private data. Events are
//             accounted to their owner id: the id itself, or the listening id for a
//             CONNECT_REQUEST (as in librdmacm).
#include "provider/cm/cm.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <unordered_set>
#include <vector>

#include "connect/mpa_cm.hpp"
#include "provider/core/backend.hpp"
#include "provider/core/llp.hpp"
#include "provider/core/log.hpp"
#include "provider/core/objects.hpp"
#include "runtime/progress.hpp"

namespace eca::cm {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
namespace mpa = eca::wire::mpa;
using connect::MpaOutcome;
using connect::MpaParams;
using connect::MpaSession;
using connect::MpaStatus;
using runtime::Progress;

struct Id;
struct Core;

struct Event {
  rdma_cm_event ev{};  // first
  Id *owner = nullptr;
  Id *child = nullptr;  // CONNECT_REQUEST: the new id (destroyed with the event if undelivered)
  uint8_t pdata[mpa::kMaxPrivateData]{};
};

struct Channel {
  rdma_event_channel ch{};  // first; ch.fd = read end of the pipe
  int wfd = -1;
  std::mutex mu;
  std::deque<Event *> q;
};

enum class St : uint8_t {
  Idle,
  Bound,
  AddrResolved,
  RouteResolved,
  Connecting,    // TCP connect + MPA request/reply
  ConnResponse,  // active, MPA done, no QP yet: waiting for rdma_establish
  Listen,
  ConnReq,       // passive, MPA request received, waiting for accept/reject
  Accepting,     // passive, reply being written
  Established,
  Disconnecting,
  Disconnected,
  Failed,        // connection attempt over (rejected, error); only destroy is useful
};

const char *st_name(St s) {
  static const char *const n[] = {"idle",        "bound",        "addr-resolved", "route-resolved",
                                  "connecting",  "conn-response", "listen",       "conn-request",
                                  "accepting",   "established",  "disconnecting", "disconnected",
                                  "failed"};
  return n[static_cast<int>(s)];
}

struct Core : std::enable_shared_from_this<Core> {
  Id *owner = nullptr;  // null once the id is destroyed
  St st = St::Idle;
  int bfd = -1;  // bound (port-reserving) TCP socket, until it connects or listens
  std::optional<tcp::socket> sock;  // connecting socket
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<asio::steady_timer> timer;
  bool timed_out = false;
  std::shared_ptr<MpaSession> mpa;
  std::set<std::shared_ptr<MpaSession>> inflight;  // listener: handshakes before an id exists
  std::optional<LlpConnection> llp;                // ConnResponse: stream awaiting a QP
  Qp *qp = nullptr;          // the QP the connection is for (application-owned)
  Context *qp_ctx = nullptr;  // ... and how to find it again (liveness check, see qp_alive)
  uint32_t qp_qpn = 0;
  uint64_t qp_gen = 0;        // the QP's connection number once attached (Qp::conn_gen)
  uint32_t qp_num = 0;  // conn_param->qp_num given to rdma_connect
  uint16_t ird = 0, ord = 0;  // negotiated
  uint16_t def_ird = kMaxIrdOrd, def_ord = kMaxIrdOrd;  // passive defaults (from the request)
  bool disc_delivered = false;
  int tos = -1;
  bool reuseaddr = false;
  bool afonly = false;
  bool reserved = false;
  int backlog = 0;  // listener: pending connection requests allowed (rdma_listen)
  asio::ip::address resv_addr;  // address of the reservation (and of bfd's family)
  uint16_t resv_port = 0;
};

struct Id {
  rdma_cm_id id{};  // first
  Channel *chan = nullptr;
  bool sync = false;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t delivered = 0, acked = 0;
  // Listener: CONNECT_REQUEST events queued but not yet taken by rdma_get_cm_event (the
  // requests the backlog bounds, as the kernel's ucma counts them).
  std::atomic<int> reqs_queued{0};
  std::shared_ptr<Core> core;
  std::optional<ibv_qp_init_attr> ep_attr;
  std::vector<uint8_t> connect_data;
  static Id *from(rdma_cm_id *i) { return reinterpret_cast<Id *>(i); }
  // The Id behind `i` if the application holds it (created and not yet destroyed), else
  // null. Every rdma_* call on an id goes through this, so a call on an id the application
  // already destroyed gets EINVAL instead of touching freed memory; memory reused for a new
  // id is that new id, as with rdma-core.
  static Id *live(rdma_cm_id *i);
  static Id *make();
  static void free(Id *id);
};

std::mutex g_ids_mu;
std::unordered_set<const rdma_cm_id *> g_ids;  // ids the application may hold (g_ids_mu)

Id *Id::live(rdma_cm_id *i) {
  if (!i) return nullptr;
  std::lock_guard g(g_ids_mu);
  return g_ids.count(i) ? from(i) : nullptr;
}

Id *Id::make() {
  Id *id = new Id;
  std::lock_guard g(g_ids_mu);
  g_ids.insert(&id->id);
  return id;
}

void Id::free(Id *id) {
  {
    std::lock_guard g(g_ids_mu);
    g_ids.erase(&id->id);
  }
  delete id;
}

Channel *chan_of(rdma_event_channel *c) { return reinterpret_cast<Channel *>(c); }

// Runs f on the progress thread and returns its result; a system error thrown by Boost.Asio
// (out of descriptors: EMFILE) becomes its errno, other exceptions EIO.
template <typename F>
int run(F &&f) {
  int r = 0;
  Progress::instance().run_sync([&] {
    try {
      r = f();
    } catch (const boost::system::system_error &e) {
      ECA_LOG(Warn, "rdma_cm: %s", e.what());
      r = e.code().value() > 0 ? e.code().value() : EIO;
    } catch (const std::exception &e) {
      ECA_LOG(Error, "rdma_cm: unexpected exception: %s", e.what());
      r = EIO;
    } catch (...) {
      r = EIO;
    }
  });
  return r;
}

asio::io_context &io() { return Progress::instance().io(); }

// ---------------------------------------------------------------------------------------------
// Devices and their CM contexts

struct DevEntry {
  Device *dev = nullptr;
  Context *ctx = nullptr;
  ibv_pd *pd = nullptr;
};

std::mutex g_dev_mu;
std::vector<std::unique_ptr<DevEntry>> g_devs;
ibv_pd *(*g_pd_alloc)(ibv_context *) = nullptr;

DevEntry *dev_entry(Device *d) {
  if (!d) return nullptr;
  std::lock_guard g(g_dev_mu);
  DevEntry *e = nullptr;
  for (auto &p : g_devs)
    if (p->dev == d) e = p.get();
  if (!e) {
    Context *ctx = nullptr;
    int r = context_open(d, &ctx);
    if (r || !ctx) {
      ECA_LOG(Error, "rdma_cm: cannot open device %s: %s", d->ifname.c_str(), strerror(r));
      return nullptr;
    }
    g_devs.push_back(std::make_unique<DevEntry>());
    e = g_devs.back().get();
    e->dev = d;
    e->ctx = ctx;
  }
  if (!e->pd && g_pd_alloc) e->pd = g_pd_alloc(e->ctx->ibv());
  return e;
}

void set_device(Id *id, DevEntry *e) {
  if (!e || id->id.verbs) return;
  id->id.verbs = e->ctx->ibv();
  id->id.port_num = 1;
  if (!id->id.pd) id->id.pd = e->pd;
}

// ---------------------------------------------------------------------------------------------
// Addresses

// An id's addresses are tcp::endpoints: IPv4, or IPv6 with its scope id. An IPv4-mapped IPv6
// address is taken as the IPv4 address it maps, on the way in (rdma_bind_addr,
// rdma_resolve_addr) and on the way out (an IPv4 connection accepted by a dual-stack IPv6
// listener), as the kernel's rdma_cm reports an IPv4 request to an IPv6 listener.

tcp::endpoint unmapped(const tcp::endpoint &e) {
  if (e.address().is_v6() && e.address().to_v6().is_v4_mapped())
    return {asio::ip::make_address_v4(asio::ip::v4_mapped, e.address().to_v6()), e.port()};
  return e;
}

// `a` as an endpoint: EINVAL for null, EAFNOSUPPORT for families other than IPv4 and IPv6.
int to_ep(const sockaddr *a, tcp::endpoint *out) {
  if (!a) return EINVAL;
  if (a->sa_family != AF_INET && a->sa_family != AF_INET6) return EAFNOSUPPORT;
  const size_t n = a->sa_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  tcp::endpoint e;
  std::memcpy(e.data(), a, n);
  e.resize(n);
  *out = unmapped(e);
  return 0;
}

// The id's source address, if it has one (false: none set yet).
bool src_ep(const Id *id, tcp::endpoint *out) {
  return to_ep(reinterpret_cast<const sockaddr *>(&id->id.route.addr.src_storage), out) == 0;
}

void store(sockaddr_storage *dst, const tcp::endpoint &e) {
  std::memset(dst, 0, sizeof *dst);
  std::memcpy(dst, e.data(), e.size());
}
void set_src(Id *id, const tcp::endpoint &e) { store(&id->id.route.addr.src_storage, e); }
void set_dst(Id *id, const tcp::endpoint &e) { store(&id->id.route.addr.dst_storage, e); }

tcp protocol_of(const asio::ip::address &a) { return a.is_v6() ? tcp::v6() : tcp::v4(); }

// IP_TOS for IPv4, the traffic class for IPv6 (RDMA_OPTION_ID_TOS); tos < 0: leave it.
void set_tos(int fd, const tcp &proto, int tos) {
  if (tos < 0) return;
  if (proto == tcp::v6())
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof tos);
  else
    ::setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof tos);
}

// The device whose interface holds the address of `e` (none: null).
Device *device_of(const tcp::endpoint &e) {
  in6_addr a;
  uint32_t scope;
  return ip_of(e.data(), &a, &scope) ? device_for_ip(a, scope) : nullptr;
}

// The device rdma_cm gives a local address. Loopback addresses (127/8, ::1) are served by
// the first non-loopback device, and by the loopback device only when it is the only one: the
// kernel binds a loopback connection to the first device with an active port, and libfabric's
// verbs provider ignores devices of loopback interfaces for connected endpoints, so a look-up
// of "localhost" must lead to a device it offers. Every device carries any TCP connection.
Device *serving_device(const tcp::endpoint &e) {
  if (!e.address().is_loopback()) return device_of(e);
  Device *lo = nullptr;
  for (Device *d : devices()) {
    if (!d->loopback) return d;
    if (!lo) lo = d;
  }
  return lo;
}

// The source address the routing table picks for `dst` (a link-local IPv6 destination needs
// its scope id, as with connect()).
int route_source(const tcp::endpoint &dst, asio::ip::address *src) {
  int fd = ::socket(dst.data()->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  tcp::endpoint d = dst;
  d.port(9);
  int r = 0;
  tcp::endpoint s;
  socklen_t l = (socklen_t)s.capacity();
  if (::connect(fd, d.data(), (socklen_t)d.size()) < 0)
    r = errno;
  else if (::getsockname(fd, s.data(), &l) < 0)
    r = errno;
  else {
    s.resize(l);
    *src = s.address();
  }
  ::close(fd);
  return r;
}

// In-process port reservations (progress thread only): rdma_cm ports are exclusive unless
// both ids set RDMA_OPTION_ID_REUSEADDR, even though our TCP sockets use SO_REUSEADDR so
// that a restarted server can bind next to TIME_WAIT connections.
struct Resv {
  asio::ip::address addr;
  bool reuse;
  Core *core;
};
std::multimap<uint16_t, Resv> g_resv;

bool resv_conflict(const asio::ip::address &a, uint16_t port, bool reuse) {
  auto [b, e] = g_resv.equal_range(port);
  for (auto it = b; it != e; ++it) {
    const Resv &r = it->second;
    if ((r.addr == a || r.addr.is_unspecified() || a.is_unspecified()) && !(r.reuse && reuse))
      return true;
  }
  return false;
}

void resv_release(Core &c) {
  if (!c.reserved) return;
  auto [b, e] = g_resv.equal_range(c.resv_port);
  for (auto it = b; it != e; ++it)
    if (it->second.core == &c) {
      g_resv.erase(it);
      break;
    }
  c.reserved = false;
}

// The ephemeral range (ip_local_port_range) less ip_local_reserved_ports, read once.
struct PortRange {
  uint16_t lo = 32768, hi = 60999;
  std::vector<std::pair<uint16_t, uint16_t>> reserved;
  bool is_reserved(uint16_t p) const {
    for (auto [a, b] : reserved)
      if (p >= a && p <= b) return true;
    return false;
  }
};

const PortRange &port_range() {
  static const PortRange r = [] {
    PortRange pr;
    if (FILE *f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
      unsigned a = 0, b = 0;
      if (std::fscanf(f, "%u %u", &a, &b) == 2 && a > 0 && a <= b && b <= 65535) {
        pr.lo = (uint16_t)a;
        pr.hi = (uint16_t)b;
      }
      std::fclose(f);
    }
    if (FILE *f = std::fopen("/proc/sys/net/ipv4/ip_local_reserved_ports", "r")) {
      unsigned a = 0, b = 0;
      char sep = 0;
      while (std::fscanf(f, "%u", &a) == 1) {
        b = a;
        if (std::fscanf(f, "%c", &sep) == 1 && sep == '-' && std::fscanf(f, "%u", &b) == 1)
          sep = 0;
        pr.reserved.emplace_back((uint16_t)a, (uint16_t)b);
        if (sep != ',' && std::fscanf(f, "%c", &sep) != 1) break;
      }
      std::fclose(f);
    }
    return pr;
  }();
  return r;
}

// Binds `fd` to want's address and a free port of the ephemeral range, chosen here rather
// than by bind() to port 0: the kernel gives bind(0) only half the range and then scans
// every busy port on each call, so beyond ~14000 bound ids each rdma_resolve_addr took tens
// of milliseconds of kernel time and 16384 connections never finished setting up. Here a
// cursor moves through the range and an explicit bind either succeeds or says EADDRINUSE
// at once. EADDRNOTAVAIL when every port is taken. Progress thread.
int bind_any_port(int fd, tcp::endpoint want) {
  const PortRange &r = port_range();
  static uint32_t cursor = (uint32_t)std::random_device{}();
  const uint32_t span = (uint32_t)(r.hi - r.lo) + 1;
  for (uint32_t tried = 0; tried < span; tried++) {
    const uint16_t port = (uint16_t)(r.lo + cursor++ % span);
    if (r.is_reserved(port) || g_resv.count(port)) continue;
    want.port(port);
    if (::bind(fd, want.data(), (socklen_t)want.size()) == 0) return 0;
    if (errno != EADDRINUSE && errno != EACCES) return errno;
  }
  return EADDRNOTAVAIL;
}

// Opens a TCP socket of want's family bound to `want` (port 0: a free ephemeral port) and
// records the reservation. An IPv6 socket accepts IPv4 too unless RDMA_OPTION_ID_AFONLY. *got receives the bound address. Running out of descriptors (EMFILE,
// ENFILE) or ports (EADDRNOTAVAIL) is returned as such: rdma_bind_addr / rdma_resolve_addr
// fail with that errno.
int bind_socket(Core &c, const tcp::endpoint &want, tcp::endpoint *got) {
  uint16_t port = want.port();
  if (port && resv_conflict(want.address(), port, c.reuseaddr)) return EADDRINUSE;
  int fd = ::socket(want.data()->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int one = 1;
  if (port) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (c.afonly && want.address().is_v6())
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  const int be = port ? (::bind(fd, want.data(), (socklen_t)want.size()) < 0
                              ? errno
                              : 0)
                       : bind_any_port(fd, want);
  if (be) {
    ::close(fd);
    if (be == EADDRNOTAVAIL) ECA_LOG(Warn, "rdma_cm: no free local port left");
    return be;
  }
  tcp::endpoint s = want;
  socklen_t l = (socklen_t)s.capacity();
  if (::getsockname(fd, s.data(), &l) == 0) s.resize(l);
  resv_release(c);
  if (c.bfd >= 0) ::close(c.bfd);
  c.bfd = fd;
  c.reserved = true;
  c.resv_addr = s.address();
  c.resv_port = s.port();
  g_resv.emplace(c.resv_port, Resv{c.resv_addr, c.reuseaddr, &c});
  *got = s;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Events

void chan_drain_locked(Channel *c) {
  char b;
  (void)!::read(c->ch.fd, &b, 1);
}

// Queues an event on its owner's channel (progress thread).
void push(Event *e) {
  Channel *c = e->owner->chan;
  std::lock_guard g(c->mu);
  bool was_empty = c->q.empty();
  c->q.push_back(e);
  if (was_empty) {
    char b = 1;
    (void)!::write(c->wfd, &b, 1);
  }
}

Event *make_event(Id *owner, Id *id, rdma_cm_event_type t, int status) {
  auto *e = new Event;
  e->owner = owner;
  e->ev.id = &id->id;
  e->ev.event = t;
  e->ev.status = status;
  return e;
}

void set_conn(Event *e, const std::vector<uint8_t> &pd, uint16_t resp_res, uint16_t init_depth) {
  size_t n = std::min<size_t>(pd.size(), 255);  // private_data_len is 8 bits in the ABI
  if (pd.size() > 255)
    ECA_LOG(Info, "rdma_cm: peer private data of %zu bytes truncated to 255 for the event",
            pd.size());
  if (n) {
    std::memcpy(e->pdata, pd.data(), n);
    e->ev.param.conn.private_data = e->pdata;
  }
  e->ev.param.conn.private_data_len = uint8_t(n);
  e->ev.param.conn.responder_resources = uint8_t(std::min<uint16_t>(resp_res, 255));
  e->ev.param.conn.initiator_depth = uint8_t(std::min<uint16_t>(init_depth, 255));
}

void push_simple(Core &c, rdma_cm_event_type t, int status) {
  push(make_event(c.owner, c.owner, t, status));
}

void push_conn(Core &c, rdma_cm_event_type t, int status, const std::vector<uint8_t> &pd) {
  Event *e = make_event(c.owner, c.owner, t, status);
  set_conn(e, pd, c.ird, c.ord);
  push(e);
}

int channel_new(Channel **out) {
  auto *c = new Channel;
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) {
    int e = errno;
    delete c;
    return e;
  }
  ::fcntl(p[1], F_SETFL, ::fcntl(p[1], F_GETFL) | O_NONBLOCK);
  c->ch.fd = p[0];
  c->wfd = p[1];
  *out = c;
  return 0;
}

void channel_free(Channel *c) {
  {
    std::lock_guard g(c->mu);
    for (Event *e : c->q) delete e;
    c->q.clear();
  }
  ::close(c->ch.fd);
  ::close(c->wfd);
  delete c;
}

// librdmacm's ucma_complete: a synchronous id waits for the event its call produces.
int complete(Id *id) {
  if (!id->sync) return 0;
  if (id->id.event) {
    ack_cm_event(id->id.event);
    id->id.event = nullptr;
  }
  rdma_cm_event *ev = nullptr;
  for (;;) {
    int r = get_cm_event(&id->chan->ch, &ev);
    if (r == EINTR) continue;
    if (r) return r;
    break;
  }
  id->id.event = ev;
  if (ev->status) {
    if (ev->event == RDMA_CM_EVENT_REJECTED) return ECONNREFUSED;
    return ev->status < 0 ? -ev->status : ev->status;
  }
  return 0;
}

// Events of `id` still queued (not delivered) on its channel.
bool has_queued(Id *id) {
  std::lock_guard g(id->chan->mu);
  for (Event *e : id->chan->q)
    if (e->owner == id) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------
// Connection plumbing (progress thread)

// The connection is down: the id's DISCONNECTED is queued, exactly once. Returns whether it
// was queued now.
bool mark_disconnected(Core &c) {
  c.st = St::Disconnected;
  if (c.disc_delivered) return false;
  c.disc_delivered = true;
  push_simple(c, RDMA_CM_EVENT_DISCONNECTED, 0);
  return true;
}

void llp_ended(Core &c, LlpEnd why) {
  if (!c.owner) return;
  ECA_LOG(Debug, "rdma_cm: connection ended (reason %d) in state %s", int(why), st_name(c.st));
  if (c.st == St::Established || c.st == St::Disconnecting) mark_disconnected(c);
}

// Qp::on_llp_end is guarded by Qp::engine_mu (provider/core/qp.cpp takes it to fire the hook).
void set_hook(Qp *qp, std::function<void(LlpEnd)> f) {
  std::lock_guard g(qp->engine_mu);
  qp->on_llp_end = std::move(f);
}

// Hands the stream to the QP's backend; the QP goes to RTS.
bool attach(Core &c, LlpConnection &&llp) {
  Qp *qp = c.qp;
  if (!qp || !qp->ctx || !qp->ctx->dev || !qp->ctx->dev->backend) {
    ECA_LOG(Error, "rdma_cm: no QP/device to attach the connection to");
    return false;
  }
  c.ird = llp.ird;
  c.ord = llp.ord;
  qp->ird = llp.ird;
  qp->ord = llp.ord;
  std::weak_ptr<Core> w = c.weak_from_this();
  set_hook(qp, [w](LlpEnd why) {
    // May run inside the QP's own teardown: only hand the news to the progress queue.
    Progress::instance().post([w, why] {
      if (auto p = w.lock()) llp_ended(*p, why);
    });
  });
  ECA_QP_LOG(Info, qp->qpn, "connected: mpa rev %u, crc %d, %s, ird %u ord %u, rtr %d/%d",
             unsigned(llp.mpa_rev), int(llp.crc), llp.initiator ? "initiator" : "responder",
             unsigned(llp.ird), unsigned(llp.ord), int(llp.rtr_send), int(llp.rtr_recv));
  try {
    auto eng = qp->ctx->dev->backend->attach(*qp, std::move(llp));
    if (!eng) {
      set_hook(qp, nullptr);
      return false;
    }
    c.qp_gen = qp->attach_engine(std::move(eng));
  } catch (const std::exception &e) {
    ECA_QP_LOG(Error, qp->qpn, "attaching the connection failed: %s", e.what());
    set_hook(qp, nullptr);
    return false;
  }
  return true;
}

void fail_conn(Core &c, rdma_cm_event_type t, int err, const std::vector<uint8_t> &pd = {}) {
  c.st = St::Failed;
  c.qp = nullptr;
  push_conn(c, t, -err, pd);
}

void on_initiator_done(const std::shared_ptr<Core> &cp, MpaOutcome o) {
  Core &c = *cp;
  if (!c.owner || !c.mpa) return;
  std::shared_ptr<MpaSession> s = std::move(c.mpa);
  const std::vector<uint8_t> &pd = s->peer().pdata;
  switch (o.status) {
    case MpaStatus::Ok: {
      LlpConnection llp = s->take_llp();
      c.ird = llp.ird;
      c.ord = llp.ord;
      if (c.qp) {
        if (!attach(c, std::move(llp))) return fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, EIO);
        c.st = St::Established;
        c.disc_delivered = false;
        push_conn(c, RDMA_CM_EVENT_ESTABLISHED, 0, pd);
      } else {
        c.llp.emplace(std::move(llp));
        c.st = St::ConnResponse;
        push_conn(c, RDMA_CM_EVENT_CONNECT_RESPONSE, 0, pd);
      }
      return;
    }
    case MpaStatus::Rejected:
      return fail_conn(c, RDMA_CM_EVENT_REJECTED, ECONNREFUSED, pd);
    case MpaStatus::Closed:
      // The responder closed without replying: a refusal (the kernel reports the same).
      return fail_conn(c, RDMA_CM_EVENT_REJECTED, ECONNRESET);
    default:
      ECA_LOG(Warn, "rdma_cm: connection setup failed: %s", connect::mpa_status_str(o.status));
      return fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, o.err ? o.err : EPROTO);
  }
}

void connect_attempt(const std::shared_ptr<Core> &cp, const tcp::endpoint &dst, MpaParams p,
                     std::chrono::steady_clock::time_point first, unsigned attempt);

void start_connect(const std::shared_ptr<Core> &cp, const tcp::endpoint &dst, MpaParams p) {
  Core &c = *cp;
  boost::system::error_code ec;
  c.sock.emplace(io());
  if (c.bfd >= 0) {
    c.sock->assign(protocol_of(c.resv_addr), c.bfd, ec);
    c.bfd = -1;
  } else {
    c.sock->open(dst.protocol(), ec);
  }
  if (ec) return fail_conn(c, RDMA_CM_EVENT_UNREACHABLE, ec.value() > 0 ? ec.value() : EIO);
  set_tos(c.sock->native_handle(), dst.protocol(), c.tos);
  c.timed_out = false;
  c.timer = std::make_unique<asio::steady_timer>(io());
  c.timer->expires_after(connect::mpa_timeout());
  c.timer->async_wait([cp](const boost::system::error_code &e) {
    if (e || !cp->owner || cp->st != St::Connecting || !cp->sock) return;
    cp->timed_out = true;
    boost::system::error_code ignored;
    cp->sock->close(ignored);
  });
  connect_attempt(cp, dst, std::move(p), std::chrono::steady_clock::now(), 0);
}

// A refused connection is retried for a short while: some programs (qperf's server) tell the
// client their port between rdma_bind_addr() and rdma_listen(), so a SYN can arrive while the
// port is bound but not yet listening. No fixed delay: the first retry is immediate, then the
// pause doubles from 1 ms, so a listener that appears within the window is found about as
// soon again as it took to appear. The retry window stays inside the connect timeout.
constexpr auto kRefusedRetryWindow = std::chrono::milliseconds(500);

std::chrono::milliseconds refused_backoff(unsigned attempt) {
  return attempt == 0 ? std::chrono::milliseconds(0)
                      : std::chrono::milliseconds(1u << std::min(attempt - 1, 8u));
}

void connect_attempt(const std::shared_ptr<Core> &cp, const tcp::endpoint &dst, MpaParams p,
                     std::chrono::steady_clock::time_point first, unsigned attempt) {
  Core &c = *cp;
  c.sock->async_connect(dst, [cp, dst, p = std::move(p), first, attempt](
                                        const boost::system::error_code &e) mutable {
    Core &c = *cp;
    if (!c.owner || c.st != St::Connecting || !c.sock) return;
    if (e == asio::error::connection_refused && !c.timed_out &&
        std::chrono::steady_clock::now() - first < kRefusedRetryWindow) {
      // A socket cannot connect again after a refusal: take a fresh one on the same local
      // address (and port, when the application bound one).
      boost::system::error_code ig;
      const tcp::endpoint local = c.sock->local_endpoint(ig);
      c.sock.emplace(io());
      c.sock->open(dst.protocol(), ig);
      c.sock->set_option(asio::socket_base::reuse_address(true), ig);
      if (!ig) {
        c.sock->bind(local, ig);
        if (ig) c.sock->bind(tcp::endpoint(local.address(), 0), ig);
      }
      set_tos(c.sock->native_handle(), dst.protocol(), c.tos);
      auto t = std::make_shared<asio::steady_timer>(io(), refused_backoff(attempt));
      t->async_wait([cp, dst, p = std::move(p), first, attempt,
                     t](const boost::system::error_code &) mutable {
        Core &c2 = *cp;
        if (!c2.owner || c2.st != St::Connecting || !c2.sock || c2.timed_out) return;
        connect_attempt(cp, dst, std::move(p), first, attempt + 1);
      });
      return;
    }
    if (c.timer) c.timer->cancel();
    if (e) {
      int err = c.timed_out || e == asio::error::operation_aborted ? ETIMEDOUT
                                                                   : (e.value() > 0 ? e.value()
                                                                                    : EIO);
      ECA_LOG(Info, "rdma_cm: TCP connect failed: %s", strerror(err));
      c.sock.reset();
      return fail_conn(c, RDMA_CM_EVENT_UNREACHABLE, err);
    }
    boost::system::error_code ig;
    auto le = c.sock->local_endpoint(ig);
    if (!ig) set_src(c.owner, unmapped(le));
    c.mpa = MpaSession::create(std::move(*c.sock));
    c.sock.reset();
    c.mpa->start_initiator(p, [cp](MpaOutcome o) { on_initiator_done(cp, o); });
  });
}

void on_responder_done(const std::shared_ptr<Core> &cp, MpaOutcome o) {
  Core &c = *cp;
  if (!c.owner || !c.mpa) return;
  std::shared_ptr<MpaSession> s = std::move(c.mpa);
  if (o.status != MpaStatus::Ok) {
    ECA_LOG(Info, "rdma_cm: accept failed: %s", connect::mpa_status_str(o.status));
    return fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, o.err ? o.err : EIO);
  }
  // Attach right after the reply is written: from now on the peer may send FPDUs.
  LlpConnection llp = s->take_llp();
  if (!attach(c, std::move(llp))) return fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, EIO);
  c.st = St::Established;
  c.disc_delivered = false;
  push_conn(c, RDMA_CM_EVENT_ESTABLISHED, 0, {});
}

// A usable MPA request arrived on listener L: create the new id and tell the application.
void new_request(const std::shared_ptr<Core> &L, const std::shared_ptr<MpaSession> &s) {
  Id *lid = L->owner;
  auto *cid = Id::make();
  if (lid->sync) {
    Channel *ch = nullptr;
    if (channel_new(&ch)) {
      Id::free(cid);
      s->cancel();
      return;
    }
    cid->chan = ch;
    cid->sync = true;
  } else {
    cid->chan = lid->chan;
  }
  cid->id.channel = &cid->chan->ch;
  cid->id.context = lid->id.context;
  cid->id.ps = lid->id.ps;
  cid->id.qp_type = IBV_QPT_RC;
  cid->core = std::make_shared<Core>();
  Core &c = *cid->core;
  c.owner = cid;
  c.st = St::ConnReq;
  c.mpa = s;
  c.tos = L->tos;
  boost::system::error_code ec;
  auto le = s->socket().local_endpoint(ec);
  auto re = s->socket().remote_endpoint(ec);
  const tcp::endpoint ls = unmapped(le), rs = unmapped(re);
  set_src(cid, ls);
  set_dst(cid, rs);
  Device *d = serving_device(ls);
  if (!d)
    ECA_LOG(Warn, "rdma_cm: no device for local address %s", ls.address().to_string().c_str());
  set_device(cid, dev_entry(d));
  const mpa::Frame &req = s->peer();
  if (req.rev == 2) {
    c.def_ord = std::min<uint16_t>(req.ird, kMaxIrdOrd);  // we may not exceed their IRD
    c.def_ird = std::min<uint16_t>(req.ord, kMaxIrdOrd);  // they want this many READs
  }
  Event *e = make_event(lid, cid, RDMA_CM_EVENT_CONNECT_REQUEST, 0);
  e->ev.listen_id = &lid->id;
  e->child = cid;
  set_conn(e, req.pdata, c.def_ird, c.def_ord);
  lid->reqs_queued++;
  push(e);
}

void accept_next(const std::shared_ptr<Core> &L);

void accept_retry(const std::shared_ptr<Core> &L) {
  L->timer = std::make_unique<asio::steady_timer>(io());
  L->timer->expires_after(std::chrono::milliseconds(100));
  L->timer->async_wait([L](const boost::system::error_code &e) {
    if (!e && L->owner && L->acceptor) accept_next(L);
  });
}

constexpr size_t kMaxInflight = 1024;
constexpr int kMaxBacklog = 1024;   // /proc/sys/net/rdma_ucm/max_backlog's default
constexpr int kTcpBacklog = 4096;   // TCP accept queue: requests are bounded at MPA level

void accept_next(const std::shared_ptr<Core> &L) {
  L->acceptor->async_accept(io(), [L](const boost::system::error_code &ec, tcp::socket s) {
    if (!L->owner || !L->acceptor) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      ECA_LOG(Warn, "rdma_cm: accept: %s", ec.message().c_str());
      return accept_retry(L);
    }
    if (L->inflight.size() >= kMaxInflight) {
      ECA_LOG(Warn, "rdma_cm: too many connections in MPA setup; dropping one");
      boost::system::error_code ig;
      s.close(ig);
      return accept_next(L);
    }
    auto sess = MpaSession::create(std::move(s));
    L->inflight.insert(sess);
    std::weak_ptr<MpaSession> ws = sess;
    sess->start_responder([L, ws](MpaOutcome o) {
      auto s2 = ws.lock();
      if (!s2) return;
      L->inflight.erase(s2);
      if (!L->owner) return s2->cancel();
      if (o.status == MpaStatus::Ok && L->owner->reqs_queued.load() >= L->backlog) {
        // Beyond the backlog: an MPA reject (the peer sees REJECTED), written in the
        // background under the session's timer.
        ECA_LOG(Info, "rdma_cm: listen backlog %d full; connection request rejected",
                L->backlog);
        return s2->reject({});
      }
      if (o.status != MpaStatus::Ok) {
        ECA_LOG(Info, "rdma_cm: incoming connection dropped: %s",
                connect::mpa_status_str(o.status));
        return;
      }
      new_request(L, s2);
    });
    accept_next(L);
  });
}

void set_qp(Core &c, Qp *qp) {
  c.qp = qp;
  c.qp_ctx = qp ? qp->ctx : nullptr;
  c.qp_qpn = qp ? qp->qpn : 0;
}

// The application may have destroyed the QP with ibv_destroy_qp (not rdma_destroy_qp) before
// rdma_destroy_id; touch c.qp only if the verbs layer still knows it.
bool qp_alive(const Core &c) {
  if (!c.qp) return false;
  return eca::qp_lookup(c.qp_ctx, c.qp_qpn) == c.qp;
}

// A connection to take down, named by its QP and the QP's connection number.
struct ToDisconnect {
  Qp *qp = nullptr;
  uint64_t gen = 0;
  void operator()() const {
    if (qp) qp->disconnect(gen);
  }
};

// Stops everything of a core (progress thread). Returns the connection to take down, if any.
ToDisconnect teardown(Core &c) {
  c.owner = nullptr;
  boost::system::error_code ig;
  if (c.mpa) {
    c.mpa->cancel();
    c.mpa.reset();
  }
  for (auto &s : c.inflight) s->cancel();
  c.inflight.clear();
  if (c.acceptor) {
    c.acceptor->close(ig);
    c.acceptor.reset();
  }
  if (c.timer) c.timer->cancel();
  if (c.sock) {
    c.sock->close(ig);
    c.sock.reset();
  }
  if (c.bfd >= 0) {
    ::close(c.bfd);
    c.bfd = -1;
  }
  c.llp.reset();  // closes its stream
  resv_release(c);
  // The QP's hook holds only a weak reference to this core, so leaving it set is harmless;
  // it is cleared (and a live connection taken down) only when the QP is known to exist.
  ToDisconnect out;
  if (qp_alive(c)) {
    {
      // Only this core's own connection: the QP may be on another id's connection by now.
      std::lock_guard g(c.qp->engine_mu);
      if (c.qp_gen && c.qp->conn_gen.load() == c.qp_gen) c.qp->on_llp_end = nullptr;
    }
    if (c.st == St::Established || c.st == St::Disconnecting) out = {c.qp, c.qp_gen};
  }
  c.qp = nullptr;
  return out;
}

// Removes the undelivered events owned by `id`; returns the new ids of purged requests.
std::vector<Id *> purge(Id *id) {
  std::vector<Id *> children;
  Channel *c = id->chan;
  std::lock_guard g(c->mu);
  bool had = !c->q.empty();
  for (auto it = c->q.begin(); it != c->q.end();) {
    if ((*it)->owner == id) {
      if ((*it)->child) children.push_back((*it)->child);
      delete *it;
      it = c->q.erase(it);
    } else {
      ++it;
    }
  }
  if (had && c->q.empty()) chan_drain_locked(c);
  return children;
}

Qp *lookup_qp(ibv_context *verbs, uint32_t qpn) {
  if (!verbs || !qpn) return nullptr;
  return eca::qp_lookup(Context::from(verbs), qpn);
}

uint16_t clamp_res(uint8_t v, uint16_t dflt) {
  if (v == RDMA_MAX_RESP_RES) return std::min<uint16_t>(dflt, kMaxIrdOrd);
  return std::min<uint16_t>(v, kMaxIrdOrd);
}

}  // namespace

// =============================================================================================
// Channels

int channel_create(rdma_event_channel **out) {
  if (!out) return EINVAL;
  Channel *c = nullptr;
  int r = channel_new(&c);
  if (r) return r;
  *out = &c->ch;
  return 0;
}

int channel_destroy(rdma_event_channel *ch) {
  if (!ch) return EINVAL;
  channel_free(chan_of(ch));
  return 0;
}

int get_cm_event(rdma_event_channel *ech, rdma_cm_event **out) {
  if (!ech || !out) return EINVAL;
  Channel *c = chan_of(ech);
  for (;;) {
    {
      std::lock_guard g(c->mu);
      if (!c->q.empty()) {
        Event *e = c->q.front();
        c->q.pop_front();
        if (c->q.empty()) chan_drain_locked(c);
        {
          std::lock_guard g2(e->owner->mu);
          e->owner->delivered++;
        }
        if (e->ev.event == RDMA_CM_EVENT_CONNECT_REQUEST) e->owner->reqs_queued--;
        *out = &e->ev;
        return 0;
      }
    }
    int fl = ::fcntl(c->ch.fd, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK)) return EAGAIN;
    pollfd p{c->ch.fd, POLLIN, 0};
    if (::poll(&p, 1, -1) < 0 && errno == EINTR) return EINTR;
  }
}

int ack_cm_event(rdma_cm_event *ev) {
  if (!ev) return EINVAL;
  Event *e = reinterpret_cast<Event *>(ev);
  Id *o = e->owner;
  {
    std::lock_guard g(o->mu);
    o->acked++;
    o->cv.notify_all();
  }
  delete e;
  return 0;
}

const char *event_str(rdma_cm_event_type t) {
  switch (t) {
    case RDMA_CM_EVENT_ADDR_RESOLVED: return "RDMA_CM_EVENT_ADDR_RESOLVED";
    case RDMA_CM_EVENT_ADDR_ERROR: return "RDMA_CM_EVENT_ADDR_ERROR";
    case RDMA_CM_EVENT_ROUTE_RESOLVED: return "RDMA_CM_EVENT_ROUTE_RESOLVED";
    case RDMA_CM_EVENT_ROUTE_ERROR: return "RDMA_CM_EVENT_ROUTE_ERROR";
    case RDMA_CM_EVENT_CONNECT_REQUEST: return "RDMA_CM_EVENT_CONNECT_REQUEST";
    case RDMA_CM_EVENT_CONNECT_RESPONSE: return "RDMA_CM_EVENT_CONNECT_RESPONSE";
    case RDMA_CM_EVENT_CONNECT_ERROR: return "RDMA_CM_EVENT_CONNECT_ERROR";
    case RDMA_CM_EVENT_UNREACHABLE: return "RDMA_CM_EVENT_UNREACHABLE";
    case RDMA_CM_EVENT_REJECTED: return "RDMA_CM_EVENT_REJECTED";
    case RDMA_CM_EVENT_ESTABLISHED: return "RDMA_CM_EVENT_ESTABLISHED";
    case RDMA_CM_EVENT_DISCONNECTED: return "RDMA_CM_EVENT_DISCONNECTED";
    case RDMA_CM_EVENT_DEVICE_REMOVAL: return "RDMA_CM_EVENT_DEVICE_REMOVAL";
    case RDMA_CM_EVENT_MULTICAST_JOIN: return "RDMA_CM_EVENT_MULTICAST_JOIN";
    case RDMA_CM_EVENT_MULTICAST_ERROR: return "RDMA_CM_EVENT_MULTICAST_ERROR";
    case RDMA_CM_EVENT_ADDR_CHANGE: return "RDMA_CM_EVENT_ADDR_CHANGE";
    case RDMA_CM_EVENT_TIMEWAIT_EXIT: return "RDMA_CM_EVENT_TIMEWAIT_EXIT";
  }
  return "UNKNOWN EVENT";
}

// =============================================================================================
// Ids

int create_id(rdma_event_channel *ch, rdma_cm_id **out, void *context, rdma_port_space ps) {
  if (!out) return EINVAL;
  if (ps != RDMA_PS_TCP) {
    if (ps == RDMA_PS_UDP || ps == RDMA_PS_IPOIB || ps == RDMA_PS_IB) {
      ECA_LOG(Info, "rdma_create_id: port space 0x%x is not supported by iWARP (RDMA_PS_TCP only)",
              unsigned(ps));
      return ENOSYS;
    }
    return EINVAL;
  }
  auto *id = Id::make();
  if (!ch) {
    Channel *c = nullptr;
    if (int r = channel_new(&c)) {
      Id::free(id);
      return r;
    }
    id->chan = c;
    id->sync = true;
  } else {
    id->chan = chan_of(ch);
  }
  id->id.channel = &id->chan->ch;
  id->id.context = context;
  id->id.ps = ps;
  id->id.qp_type = IBV_QPT_RC;
  id->core = std::make_shared<Core>();
  id->core->owner = id;
  *out = &id->id;
  return 0;
}

bool is_sync(rdma_cm_id *cid) {
  Id *id = Id::live(cid);
  return id && id->sync;
}

bool id_live(rdma_cm_id *cid) { return Id::live(cid) != nullptr; }

int destroy_id(rdma_cm_id *cid) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  if (id->sync && id->id.event) {
    ack_cm_event(id->id.event);
    id->id.event = nullptr;
  }
  ToDisconnect to_disconnect;
  std::vector<Id *> orphans;
  run([&] {
    to_disconnect = teardown(*id->core);
    orphans = purge(id);
    for (Id *o : orphans) {
      (void)teardown(*o->core);
      purge(o);
    }
    return 0;
  });
  // A connected id going away takes its connection down (the peer sees DISCONNECTED).
  to_disconnect();
  for (Id *o : orphans) {
    if (o->sync) channel_free(o->chan);
    Id::free(o);
  }
  {
    std::unique_lock g(id->mu);
    bool warned = false;
    while (id->acked < id->delivered) {
      if (!id->cv.wait_for(g, std::chrono::seconds(5), [&] { return id->acked >= id->delivered; }) &&
          !warned) {
        ECA_LOG(Warn, "rdma_destroy_id: waiting for %llu unacknowledged event(s) of this id",
                (unsigned long long)(id->delivered - id->acked));
        warned = true;
      }
    }
  }
  if (id->sync) channel_free(id->chan);
  Id::free(id);
  return 0;
}

int migrate_id(rdma_cm_id *cid, rdma_event_channel *ch) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  if (id->sync && !ch) return EINVAL;
  Channel *nc = nullptr;
  bool new_sync = !ch;
  if (new_sync) {
    if (int r = channel_new(&nc)) return r;
  } else {
    nc = chan_of(ch);
  }
  if (id->sync && id->id.event) {
    ack_cm_event(id->id.event);
    id->id.event = nullptr;
  }
  Channel *old = id->chan;
  if (old != nc) {
    run([&] {
      // Undelivered events follow the id to its new channel, in order.
      std::scoped_lock g(old->mu, nc->mu);
      bool had_old = !old->q.empty(), was_new_empty = nc->q.empty();
      for (auto it = old->q.begin(); it != old->q.end();) {
        if ((*it)->owner == id) {
          nc->q.push_back(*it);
          it = old->q.erase(it);
        } else {
          ++it;
        }
      }
      if (had_old && old->q.empty()) chan_drain_locked(old);
      if (was_new_empty && !nc->q.empty()) {
        char b = 1;
        (void)!::write(nc->wfd, &b, 1);
      }
      id->chan = nc;
      id->id.channel = &nc->ch;
      return 0;
    });
  }
  bool old_sync = id->sync;
  {
    std::unique_lock g(id->mu);
    id->sync = new_sync;
    id->cv.wait(g, [&] { return id->acked >= id->delivered; });
  }
  if (old_sync && old != nc) channel_free(old);
  return 0;
}

int bind_addr(rdma_cm_id *cid, const sockaddr *addr) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  tcp::endpoint ep;
  if (int r = to_ep(addr, &ep)) return r;
  // As the kernel (cma_any_addr): the wildcard and loopback addresses bind no device; a
  // connection made or accepted on the id later takes one.
  DevEntry *de = nullptr;
  if (!ep.address().is_unspecified() && !ep.address().is_loopback()) {
    Device *d = device_of(ep);
    if (!d) {
      ECA_LOG(Info, "rdma_bind_addr: no device has the address %s",
              ep.address().to_string().c_str());
      return EADDRNOTAVAIL;
    }
    de = dev_entry(d);
    if (!de) return ENODEV;
  }
  return run([&] {
    Core &c = *id->core;
    if (c.st != St::Idle) return EINVAL;
    tcp::endpoint got;
    if (int r = bind_socket(c, ep, &got)) return r;
    set_src(id, got);
    set_device(id, de);
    c.st = St::Bound;
    return 0;
  });
}

int resolve_addr(rdma_cm_id *cid, const sockaddr *src, const sockaddr *dst, int /*timeout_ms*/) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  tcp::endpoint dep, sep;
  if (int r = to_ep(dst, &dep)) return r;
  bool have_src = false;
  if (src && src->sa_family != AF_UNSPEC) {
    if (int r = to_ep(src, &sep)) return r;
    have_src = true;
  }
  // As the kernel: the source (given or bound) must be of the destination's family; a
  // link-local destination without a scope id takes the given source's.
  tcp::endpoint bound;
  const bool is_bound = src_ep(id, &bound);
  if ((have_src && sep.protocol() != dep.protocol()) ||
      (is_bound && bound.protocol() != dep.protocol()))
    return EINVAL;
  if (have_src && dep.address().is_v6() && sep.address().is_v6()) {
    auto d6 = dep.address().to_v6();
    if (d6.is_link_local() && !d6.scope_id()) {
      d6.scope_id(sep.address().to_v6().scope_id());
      dep.address(d6);
    }
  }
  // Choose the source address (and so the device) the way the kernel routes.
  asio::ip::address srcip = dep.address().is_v6() ? asio::ip::address(asio::ip::address_v6())
                                                  : asio::ip::address(asio::ip::address_v4());
  int aerr = 0;
  if (have_src && !sep.address().is_unspecified())
    srcip = sep.address();
  else if (is_bound && !bound.address().is_unspecified())
    srcip = bound.address();
  else
    aerr = route_source(dep, &srcip);
  DevEntry *de = nullptr;
  if (!aerr) {
    Device *d = serving_device(tcp::endpoint(srcip, 0));
    de = d ? dev_entry(d) : nullptr;
    if (!de) aerr = have_src ? EADDRNOTAVAIL : ENODEV;
  }
  int r = run([&] {
    Core &c = *id->core;
    if (c.st != St::Idle && c.st != St::Bound && c.st != St::AddrResolved) return EINVAL;
    set_dst(id, dep);
    if (aerr) {
      ECA_LOG(Info, "rdma_resolve_addr: %s unreachable: %s",
              dep.address().to_string().c_str(), strerror(aerr));
      push_simple(c, RDMA_CM_EVENT_ADDR_ERROR, -aerr);
      return 0;
    }
    tcp::endpoint s;
    if (c.st == St::Idle) {
      if (int e = bind_socket(c, tcp::endpoint(srcip, have_src ? sep.port() : 0), &s)) return e;
    } else {
      src_ep(id, &s);
      s.address(srcip);
    }
    set_src(id, s);
    set_device(id, de);
    c.st = St::AddrResolved;
    push_simple(c, RDMA_CM_EVENT_ADDR_RESOLVED, 0);
    return 0;
  });
  if (!r) r = complete(id);
  return r;
}

int resolve_route(rdma_cm_id *cid, int /*timeout_ms*/) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  int r = run([&] {
    Core &c = *id->core;
    if (c.st != St::AddrResolved && c.st != St::RouteResolved) return EINVAL;
    c.st = St::RouteResolved;
    push_simple(c, RDMA_CM_EVENT_ROUTE_RESOLVED, 0);
    return 0;
  });
  if (!r) r = complete(id);
  return r;
}

int listen(rdma_cm_id *cid, int backlog) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  // Open every device's context now, so requests arriving on a wildcard listener find them.
  tcp::endpoint b;
  if (!src_ep(id, &b) || b.address().is_unspecified())
    for (Device *d : devices()) dev_entry(d);
  return run([&] {
    Core &c = *id->core;
    if (c.st == St::Listen) return 0;
    if (c.st == St::Idle) {
      tcp::endpoint got;  // as the kernel: an unbound id listens on the IPv4 wildcard
      if (int r = bind_socket(c, tcp::endpoint(tcp::v4(), 0), &got)) return r;
      set_src(id, got);
      c.st = St::Bound;
    }
    if (c.st != St::Bound || c.bfd < 0) return EINVAL;
    auto acc = std::make_unique<tcp::acceptor>(io());
    boost::system::error_code ec;
    acc->assign(protocol_of(c.resv_addr), c.bfd, ec);
    if (ec) return ec.value() > 0 ? ec.value() : EIO;
    c.bfd = -1;
    // As the kernel's rdma_ucm: 0 or less, or more than max_backlog (1024), means 1024.
    c.backlog = backlog > 0 && backlog < kMaxBacklog ? backlog : kMaxBacklog;
    acc->listen(std::max(c.backlog, kTcpBacklog), ec);
    if (ec) {
      // Give the socket back so the id stays bound.
      c.bfd = acc->release(ec);
      return EADDRINUSE;
    }
    c.acceptor = std::move(acc);
    c.st = St::Listen;
    accept_next(id->core);
    return 0;
  });
}

int get_request(rdma_cm_id *lcid, rdma_cm_id **out) {
  Id *l = Id::live(lcid);
  if (!l || !out) return EINVAL;
  if (!l->sync) return EINVAL;
  if (l->id.event) {
    ack_cm_event(l->id.event);
    l->id.event = nullptr;
  }
  rdma_cm_event *ev = nullptr;
  int r;
  while ((r = get_cm_event(&l->chan->ch, &ev)) == EINTR) {
  }
  if (r) return r;
  if (ev->status) {
    l->id.event = ev;
    return ev->status < 0 ? -ev->status : ev->status;
  }
  if (ev->event != RDMA_CM_EVENT_CONNECT_REQUEST) {
    l->id.event = ev;
    return EINVAL;
  }
  *out = ev->id;
  ev->id->event = ev;
  return 0;
}

int connect(rdma_cm_id *cid, const rdma_conn_param *param) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  if (!param && !id->id.qp) return EINVAL;
  MpaParams p;
  p.pdata = id->connect_data;
  if (param && param->private_data && param->private_data_len) {
    auto *b = static_cast<const uint8_t *>(param->private_data);
    p.pdata.insert(p.pdata.end(), b, b + param->private_data_len);
  }
  if (p.pdata.size() > mpa::kMaxUserPrivateData) return EINVAL;
  Qp *qp = id->id.qp ? Qp::from(id->id.qp) : lookup_qp(id->id.verbs, param ? param->qp_num : 0);
  p.ord = param ? clamp_res(param->initiator_depth, kMaxIrdOrd) : kMaxIrdOrd;
  p.ird = param ? clamp_res(param->responder_resources, kMaxIrdOrd) : kMaxIrdOrd;
  int r = run([&] {
    Core &c = *id->core;
    if (c.st != St::RouteResolved) return EINVAL;
    set_qp(c, qp);
    c.qp_num = param ? param->qp_num : 0;
    c.st = St::Connecting;
    c.disc_delivered = false;
    tcp::endpoint dst;
    to_ep(&id->id.route.addr.dst_addr, &dst);
    start_connect(id->core, dst, std::move(p));
    return 0;
  });
  if (r) return r;
  id->connect_data.clear();
  return complete(id);
}

int accept(rdma_cm_id *cid, const rdma_conn_param *param) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  Qp *qp = id->id.qp ? Qp::from(id->id.qp) : lookup_qp(id->id.verbs, param ? param->qp_num : 0);
  if (!qp) {
    ECA_LOG(Info, "rdma_accept: iWARP needs a QP (id->qp or conn_param->qp_num)");
    return EINVAL;
  }
  MpaParams p;
  if (param && param->private_data && param->private_data_len) {
    auto *b = static_cast<const uint8_t *>(param->private_data);
    p.pdata.assign(b, b + param->private_data_len);
  }
  int r = run([&] {
    Core &c = *id->core;
    if (c.st != St::ConnReq || !c.mpa) return EINVAL;
    p.ird = param ? clamp_res(param->responder_resources, c.def_ird)
                  : std::min<uint16_t>(c.def_ird, kMaxIrdOrd);
    p.ord = param ? clamp_res(param->initiator_depth, c.def_ord)
                  : std::min<uint16_t>(c.def_ord, kMaxIrdOrd);
    set_qp(c, qp);
    c.st = St::Accepting;
    auto cp = id->core;
    c.mpa->accept(p, [cp](MpaOutcome o) { on_responder_done(cp, o); });
    return 0;
  });
  if (r) return r;
  return complete(id);
}

int reject(rdma_cm_id *cid, const void *pdata, uint8_t len) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  std::vector<uint8_t> pd;
  if (pdata && len) pd.assign(static_cast<const uint8_t *>(pdata),
                              static_cast<const uint8_t *>(pdata) + len);
  return run([&] {
    Core &c = *id->core;
    if (c.st != St::ConnReq || !c.mpa) return EINVAL;
    c.mpa->reject(pd);
    c.mpa.reset();
    c.st = St::Failed;
    return 0;
  });
}

int establish(rdma_cm_id *cid) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  Qp *qp = id->id.qp ? Qp::from(id->id.qp) : nullptr;
  ibv_context *verbs = id->id.verbs;
  int r = run([&] {
    Core &c = *id->core;
    if (c.st != St::ConnResponse || !c.llp) return EINVAL;
    if (!qp) qp = lookup_qp(verbs, c.qp_num);
    if (!qp) return EINVAL;
    set_qp(c, qp);
    LlpConnection llp = std::move(*c.llp);
    c.llp.reset();
    if (!attach(c, std::move(llp))) {
      fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, EIO);
      return 0;
    }
    c.st = St::Established;
    push_conn(c, RDMA_CM_EVENT_ESTABLISHED, 0, {});
    return 0;
  });
  if (r) return r;
  return complete(id);
}

int disconnect(rdma_cm_id *cid) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  Qp *qp = nullptr;
  uint64_t gen = 0;
  bool queued_now = false;
  int r = run([&] {
    Core &c = *id->core;
    switch (c.st) {
      case St::Established:
        if (!c.qp) {
          // The QP (and with it the stream) is already gone: rdma_disconnect completes at
          // once. As with the kernel, destroying the QP itself raises no event.
          queued_now = mark_disconnected(c);
          return 0;
        }
        c.st = St::Disconnecting;
        qp = c.qp;
        gen = c.qp_gen;
        return 0;
      case St::ConnResponse: {
        c.llp.reset();  // closes its stream
        queued_now = mark_disconnected(c);
        return 0;
      }
      case St::Disconnecting:
      case St::Disconnected:
      case St::Failed:
        return 0;  // already down (the peer closed first, or the attempt failed)
      default:
        return EINVAL;
    }
  });
  if (r) return r;
  ECA_LOG(Debug, "rdma_disconnect: %s", qp ? "closing the connection" : "nothing to close");
  if (qp) {
    qp->disconnect(gen);  // graceful: flush, close; the peer sees its LLP end
    run([&] {
      Core &c = *id->core;
      if (c.owner) queued_now = mark_disconnected(c);
      return 0;
    });
  }
  if (id->sync && (queued_now || has_queued(id))) return complete(id);
  return 0;
}

int set_option(rdma_cm_id *cid, int level, int optname, const void *optval, size_t optlen) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  if (level != RDMA_OPTION_ID) return ENOSYS;
  if (!optval) return EINVAL;
  return run([&] {
    Core &c = *id->core;
    switch (optname) {
      case RDMA_OPTION_ID_TOS:
        if (optlen != sizeof(uint8_t)) return EINVAL;
        c.tos = *static_cast<const uint8_t *>(optval);
        return 0;
      case RDMA_OPTION_ID_REUSEADDR:
        if (optlen != sizeof(int)) return EINVAL;
        if (c.st != St::Idle) return EINVAL;
        c.reuseaddr = *static_cast<const int *>(optval) != 0;
        return 0;
      case RDMA_OPTION_ID_AFONLY:
        if (optlen != sizeof(int)) return EINVAL;
        if (c.st != St::Idle) return EINVAL;
        c.afonly = *static_cast<const int *>(optval) != 0;
        return 0;
      case RDMA_OPTION_ID_ACK_TIMEOUT:
        // Accepted for compatibility: TCP's retransmission timer governs iWARP.
        if (optlen != sizeof(uint8_t)) return EINVAL;
        return 0;
      default:
        return ENOSYS;
    }
  });
}

int init_qp_attr(rdma_cm_id *cid, ibv_qp_attr *attr, int *mask) {
  if (!cid || !attr || !mask) return EINVAL;
  switch (attr->qp_state) {
    case IBV_QPS_INIT:
      attr->pkey_index = 0;
      attr->port_num = cid->port_num ? cid->port_num : 1;
      attr->qp_access_flags =
          IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
      *mask = IBV_QP_STATE | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX | IBV_QP_PORT;
      return 0;
    case IBV_QPS_RTR:
    case IBV_QPS_RTS:
      *mask = IBV_QP_STATE;
      return 0;
    default:
      return EINVAL;
  }
}

void qp_release(rdma_cm_id *cid) {
  Id *id = Id::live(cid);
  if (!id || !cid->qp) return;
  Qp *q = Qp::from(cid->qp);
  run([&] {
    set_hook(q, nullptr);
    if (id->core->qp == q) id->core->qp = nullptr;
    return 0;
  });
}

void set_ep_qp_init_attr(rdma_cm_id *cid, const ibv_qp_init_attr *attr) {
  Id *id = Id::from(cid);
  if (attr)
    id->ep_attr = *attr;
  else
    id->ep_attr.reset();
}

bool ep_qp_init_attr(rdma_cm_id *cid, ibv_qp_init_attr *out) {
  Id *id = Id::from(cid);
  if (!id->ep_attr) return false;
  *out = *id->ep_attr;
  return true;
}

int set_connect_data(rdma_cm_id *cid, const void *data, size_t len) {
  Id *id = Id::from(cid);
  if (len > mpa::kMaxUserPrivateData) return EINVAL;
  auto *b = static_cast<const uint8_t *>(data);
  id->connect_data.assign(b, b + (data ? len : 0));
  return 0;
}

// =============================================================================================
// Devices

ibv_context **get_devices(int *num) {
  std::vector<ibv_context *> v;
  for (Device *d : devices())
    if (DevEntry *e = dev_entry(d)) v.push_back(e->ctx->ibv());
  auto **arr = static_cast<ibv_context **>(std::calloc(v.size() + 1, sizeof(ibv_context *)));
  if (!arr) {
    if (num) *num = 0;
    errno = ENOMEM;
    return nullptr;
  }
  std::copy(v.begin(), v.end(), arr);
  if (num) *num = int(v.size());
  return arr;
}

void free_devices(ibv_context **list) { std::free(list); }

void set_pd_allocator(ibv_pd *(*alloc)(ibv_context *)) {
  std::lock_guard g(g_dev_mu);
  g_pd_alloc = alloc;
}

// =============================================================================================
// rdma_getaddrinfo (rdma-core 44, librdmacm/addrinfo.c, for the facts):
//  - node or service given: getaddrinfo() with hints translated (RAI_PASSIVE -> AI_PASSIVE,
//    RAI_NUMERICHOST -> AI_NUMERICHOST, family unless AF_IB, qp type -> socket type, port
//    space -> protocol); the first result becomes ai_src_addr (passive) or ai_dst_addr; qp type
//    and port space come from the hints or else from the result's socket type and protocol;
//    ai_flags is RAI_PASSIVE or 0.
//  - neither given: flags, family, qp type and port space are the hints'; ai_dst_addr is a
//    copy of the hints' (libfabric's verbs provider builds its look-ups this way).
//  - either way, a result without a source address takes the hints' ai_src_addr.
//  - no node, no service and no hints: EINVAL.
// Deviations: with no family required, the first IPv4 result is preferred over an earlier
// IPv6 one (a name like "localhost" keeps meaning what it meant before the devices served
// IPv6; ask for AF_INET6 or pass an IPv6 literal for IPv6); AF_IB addresses (RAI_FAMILY + AF_IB +
// RAI_NUMERICHOST) are refused with EAI_FAMILY. Route resolution through ibacm does not exist.

namespace {
int copy_addr(sockaddr **dst, socklen_t *dst_len, const void *src, socklen_t len) {
  *dst = static_cast<sockaddr *>(std::calloc(1, std::max<size_t>(len, sizeof(sockaddr_storage))));
  if (!*dst) return ENOMEM;
  std::memcpy(*dst, src, len);
  *dst_len = len;
  return 0;
}

// The getaddrinfo() hints for rdma_addrinfo hints (ucma_convert_to_ai's rules).
addrinfo to_ai_hints(const rdma_addrinfo &h) {
  addrinfo a{};
  if (h.ai_flags & RAI_PASSIVE) a.ai_flags |= AI_PASSIVE;
  if (h.ai_flags & RAI_NUMERICHOST) a.ai_flags |= AI_NUMERICHOST;
  if (h.ai_family != AF_IB) a.ai_family = h.ai_family;
  switch (h.ai_qp_type) {
    case IBV_QPT_RC: case IBV_QPT_UC: case IBV_QPT_XRC_SEND: case IBV_QPT_XRC_RECV:
      a.ai_socktype = SOCK_STREAM;
      break;
    case IBV_QPT_UD:
      a.ai_socktype = SOCK_DGRAM;
      break;
    default:
      break;
  }
  switch (h.ai_port_space) {
    case RDMA_PS_TCP: a.ai_protocol = IPPROTO_TCP; break;
    case RDMA_PS_UDP: case RDMA_PS_IPOIB: a.ai_protocol = IPPROTO_UDP; break;
    case RDMA_PS_IB:
      if (a.ai_socktype == SOCK_STREAM) a.ai_protocol = IPPROTO_TCP;
      if (a.ai_socktype == SOCK_DGRAM) a.ai_protocol = IPPROTO_UDP;
      break;
    default: break;
  }
  return a;
}

// Name resolution proper: fills rai from the first usable getaddrinfo() result.
int resolve_name(const char *node, const char *service, const rdma_addrinfo *hints,
                 rdma_addrinfo *rai, int *gai) {
  addrinfo ah{}, *ai = nullptr;
  if (hints) ah = to_ai_hints(*hints);
  *gai = ::getaddrinfo(node, service, hints ? &ah : nullptr, &ai);
  if (*gai) return 0;
  const addrinfo *pick = ai;
  if (ah.ai_family == AF_UNSPEC)
    for (const addrinfo *a = ai; a; a = a->ai_next)
      if (a->ai_family == AF_INET) {
        pick = a;
        break;
      }
  const rdma_addrinfo none{};
  const rdma_addrinfo &h = hints ? *hints : none;
  rai->ai_qp_type = h.ai_qp_type;
  if (!rai->ai_qp_type) {
    if (pick->ai_socktype == SOCK_STREAM) rai->ai_qp_type = IBV_QPT_RC;
    if (pick->ai_socktype == SOCK_DGRAM) rai->ai_qp_type = IBV_QPT_UD;
  }
  rai->ai_port_space = h.ai_port_space;
  if (!rai->ai_port_space) {
    if (pick->ai_protocol == IPPROTO_TCP) rai->ai_port_space = RDMA_PS_TCP;
    if (pick->ai_protocol == IPPROTO_UDP) rai->ai_port_space = RDMA_PS_UDP;
  }
  rai->ai_family = pick->ai_family;
  int r = 0;
  if ((h.ai_flags & RAI_FAMILY) && h.ai_family == AF_IB && (h.ai_flags & RAI_NUMERICHOST)) {
    ECA_LOG(Info, "rdma_getaddrinfo: AF_IB addresses are InfiniBand's; iWARP devices use IP");
    *gai = EAI_FAMILY;
  } else if (ah.ai_flags & AI_PASSIVE) {
    rai->ai_flags = RAI_PASSIVE;
    r = copy_addr(&rai->ai_src_addr, &rai->ai_src_len, pick->ai_addr, pick->ai_addrlen);
  } else {
    r = copy_addr(&rai->ai_dst_addr, &rai->ai_dst_len, pick->ai_addr, pick->ai_addrlen);
  }
  ::freeaddrinfo(ai);
  return r;
}
}  // namespace

int getaddrinfo(const char *node, const char *service, const rdma_addrinfo *hints,
                rdma_addrinfo **res, int *gai) {
  *gai = 0;
  if (!res || (!node && !service && !hints)) return EINVAL;
  if (devices().empty()) return ENODEV;  // as librdmacm without RDMA devices
  auto *rai = static_cast<rdma_addrinfo *>(std::calloc(1, sizeof(rdma_addrinfo)));
  if (!rai) return ENOMEM;
  int r = 0;
  if (node || service) {
    r = resolve_name(node, service, hints, rai, gai);
  } else {
    rai->ai_flags = hints->ai_flags;
    rai->ai_family = hints->ai_family;
    rai->ai_qp_type = hints->ai_qp_type;
    rai->ai_port_space = hints->ai_port_space;
    if (hints->ai_dst_len && hints->ai_dst_addr)
      r = copy_addr(&rai->ai_dst_addr, &rai->ai_dst_len, hints->ai_dst_addr, hints->ai_dst_len);
  }
  if (!r && !*gai && !rai->ai_src_len && hints && hints->ai_src_len && hints->ai_src_addr)
    r = copy_addr(&rai->ai_src_addr, &rai->ai_src_len, hints->ai_src_addr, hints->ai_src_len);
  if (r || *gai) {
    freeaddrinfo(rai);
    return r;
  }
  *res = rai;
  return 0;
}

void freeaddrinfo(rdma_addrinfo *res) {
  while (res) {
    rdma_addrinfo *next = res->ai_next;
    std::free(res->ai_src_addr);
    std::free(res->ai_dst_addr);
    std::free(res->ai_src_canonname);
    std::free(res->ai_dst_canonname);
    std::free(res->ai_route);
    std::free(res->ai_connect);
    std::free(res);
    res = next;
  }
}

}  // namespace eca::cm

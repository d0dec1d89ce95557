// rdma_cm addresses: the CM's device contexts, endpoints of ids, the device that serves an
// address, in-process port reservations and binding, rdma_bind_addr, rdma_resolve_addr and
// rdma_resolve_route.
#include <netinet/in.h>
#include <netinet/ip.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>

#include "provider/cm/cm_internal.hpp"

namespace eca::cm {
namespace {
std::mutex g_dev_mu;
std::vector<std::unique_ptr<DevEntry>> g_devs;
ibv_pd *(*g_pd_alloc)(ibv_context *) = nullptr;
}  // namespace

// ---------------------------------------------------------------------------------------------
// Devices and their CM contexts

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

static void store(sockaddr_storage *dst, const tcp::endpoint &e) {
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

namespace {
// The device whose interface holds the address of `e` (none: null).
Device *device_of(const tcp::endpoint &e) {
  in6_addr a;
  uint32_t scope;
  return ip_of(e.data(), &a, &scope) ? device_for_ip(a, scope) : nullptr;
}

}  // namespace

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

namespace {
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

}  // namespace

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

namespace {
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

}  // namespace

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
    if (!transition(c, St::Bound)) return EINVAL;
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
    if (!transition(c, St::AddrResolved)) return EINVAL;
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
    if (!transition(c, St::RouteResolved)) return EINVAL;
    push_simple(c, RDMA_CM_EVENT_ROUTE_RESOLVED, 0);
    return 0;
  });
  if (!r) r = complete(id);
  return r;
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

}  // namespace eca::cm

// rdma_cm through the public rdma_* API (librdmacm.so.1 + libibverbs.so.1 of this build):
// event channels, addressing, connection requests with private data, rejects, errors,
// a full connection with QPs, and the synchronous (rdma_create_ep) style.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <rdma/rdma_cma.h>
#include <rdma/rdma_verbs.h>

#include <chrono>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "connect/wire/mpa.hpp"
#include "provider/core/config.hpp"
#include "provider/core/objects.hpp"

using namespace std::chrono_literals;

namespace {

sockaddr_in loopback(uint16_t port = 0) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

// Waits (bounded) for the next event on `ch`; returns it (or null on timeout).
rdma_cm_event *next_event(rdma_event_channel *ch, int timeout_ms = 10000) {
  pollfd p{ch->fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return nullptr;
  rdma_cm_event *ev = nullptr;
  if (rdma_get_cm_event(ch, &ev)) return nullptr;
  return ev;
}

// Expects an event of type t; returns it (caller acks).
rdma_cm_event *expect_event(rdma_event_channel *ch, rdma_cm_event_type t) {
  rdma_cm_event *ev = next_event(ch);
  EXPECT_NE(ev, nullptr) << "no " << rdma_event_str(t);
  if (ev) {
    EXPECT_EQ(ev->event, t) << rdma_event_str(ev->event) << " status " << ev->status;
  }
  return ev;
}

sockaddr_in6 loopback6(uint16_t port = 0) {
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  a.sin6_port = htons(port);
  return a;
}

// Whether lo has ::1 (IPv6 may be disabled on the test machine).
bool have_ipv6_loopback() {
  int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in6 a = loopback6();
  bool ok = ::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

struct Listener {
  rdma_event_channel *ch = nullptr;
  rdma_cm_id *id = nullptr;
  uint16_t port = 0;
  // Listens on `bind_to` (port 0), by default 127.0.0.1.
  explicit Listener(const sockaddr *bind_to = nullptr) {
    ch = rdma_create_event_channel();
    EXPECT_NE(ch, nullptr);
    EXPECT_EQ(0, rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP));
    sockaddr_in a = loopback();
    if (!bind_to) bind_to = reinterpret_cast<sockaddr *>(&a);
    EXPECT_EQ(0, rdma_bind_addr(id, const_cast<sockaddr *>(bind_to)));
    EXPECT_EQ(0, rdma_listen(id, 8));
    port = ntohs(rdma_get_src_port(id));
    EXPECT_NE(port, 0);
  }
  ~Listener() {
    if (id) rdma_destroy_id(id);
    rdma_destroy_event_channel(ch);
  }
};

// An active id resolved (addr + route) towards 127.0.0.1:port, or ::1:port when `v6`.
struct Client {
  rdma_event_channel *ch = nullptr;
  rdma_cm_id *id = nullptr;
  explicit Client(uint16_t port, bool v6 = false) {
    ch = rdma_create_event_channel();
    EXPECT_NE(ch, nullptr);
    EXPECT_EQ(0, rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP));
    sockaddr_in d = loopback(port);
    sockaddr_in6 d6 = loopback6(port);
    sockaddr *dst = v6 ? reinterpret_cast<sockaddr *>(&d6) : reinterpret_cast<sockaddr *>(&d);
    EXPECT_EQ(0, rdma_resolve_addr(id, nullptr, dst, 2000));
    if (auto *ev = expect_event(ch, RDMA_CM_EVENT_ADDR_RESOLVED)) rdma_ack_cm_event(ev);
    EXPECT_EQ(0, rdma_resolve_route(id, 2000));
    if (auto *ev = expect_event(ch, RDMA_CM_EVENT_ROUTE_RESOLVED)) rdma_ack_cm_event(ev);
  }
  ~Client() {
    if (id) {
      if (id->qp) rdma_destroy_qp(id);
      rdma_destroy_id(id);
    }
    rdma_destroy_event_channel(ch);
  }
};

// ------------------------------------------------------------------------------------------

TEST(RdmaCm, EventChannelPollAndNonblock) {
  rdma_event_channel *ch = rdma_create_event_channel();
  ASSERT_NE(ch, nullptr);
  rdma_cm_id *id = nullptr;
  ASSERT_EQ(0, rdma_create_id(ch, &id, this, RDMA_PS_TCP));
  EXPECT_EQ(id->context, this);
  EXPECT_EQ(id->channel, ch);
  EXPECT_EQ(id->ps, RDMA_PS_TCP);
  EXPECT_EQ(id->qp_type, IBV_QPT_RC);
  ASSERT_EQ(0, fcntl(ch->fd, F_SETFL, fcntl(ch->fd, F_GETFL) | O_NONBLOCK));
  rdma_cm_event *ev = nullptr;
  errno = 0;
  EXPECT_EQ(-1, rdma_get_cm_event(ch, &ev));
  EXPECT_EQ(errno, EAGAIN);
  pollfd p{ch->fd, POLLIN, 0};
  EXPECT_EQ(0, poll(&p, 1, 0));

  sockaddr_in d = loopback(4791);
  ASSERT_EQ(0, rdma_resolve_addr(id, nullptr, reinterpret_cast<sockaddr *>(&d), 2000));
  ASSERT_EQ(1, poll(&p, 1, 10000));
  ASSERT_EQ(0, rdma_get_cm_event(ch, &ev));
  EXPECT_EQ(ev->event, RDMA_CM_EVENT_ADDR_RESOLVED);
  EXPECT_EQ(ev->status, 0);
  EXPECT_EQ(ev->id, id);
  EXPECT_NE(id->verbs, nullptr);
  EXPECT_EQ(id->port_num, 1);
  EXPECT_NE(id->pd, nullptr);  // librdmacm gives every id its device's PD
  auto *src = reinterpret_cast<sockaddr_in *>(rdma_get_local_addr(id));
  auto *dst = reinterpret_cast<sockaddr_in *>(rdma_get_peer_addr(id));
  EXPECT_EQ(src->sin_family, AF_INET);
  EXPECT_EQ(ntohl(src->sin_addr.s_addr), INADDR_LOOPBACK);
  EXPECT_NE(rdma_get_src_port(id), 0);
  EXPECT_EQ(dst->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
  EXPECT_EQ(rdma_get_dst_port(id), htons(4791));
  EXPECT_EQ(0, rdma_ack_cm_event(ev));
  // Drained: not readable, EAGAIN again.
  EXPECT_EQ(0, poll(&p, 1, 0));
  EXPECT_EQ(-1, rdma_get_cm_event(ch, &ev));
  EXPECT_EQ(errno, EAGAIN);
  // Two events queue in order and the fd stays readable until both are taken.
  ASSERT_EQ(0, rdma_resolve_route(id, 2000));
  ASSERT_EQ(0, rdma_resolve_route(id, 2000));
  ASSERT_EQ(1, poll(&p, 1, 10000));
  ASSERT_EQ(0, rdma_get_cm_event(ch, &ev));
  EXPECT_EQ(ev->event, RDMA_CM_EVENT_ROUTE_RESOLVED);
  rdma_ack_cm_event(ev);
  EXPECT_EQ(1, poll(&p, 1, 0));
  ASSERT_EQ(0, rdma_get_cm_event(ch, &ev));
  rdma_ack_cm_event(ev);
  EXPECT_EQ(0, poll(&p, 1, 0));
  EXPECT_EQ(0, rdma_destroy_id(id));
  rdma_destroy_event_channel(ch);
}

// rdma_getaddrinfo, one test per combination of node, service and hints, against the rules of
// rdma-core 44's librdmacm (addrinfo.c); see provider/cm/getaddrinfo.cpp.
struct Rai {
  rdma_addrinfo *p = nullptr;
  ~Rai() { rdma_freeaddrinfo(p); }
  const sockaddr_in *src() const { return reinterpret_cast<const sockaddr_in *>(p->ai_src_addr); }
  const sockaddr_in *dst() const { return reinterpret_cast<const sockaddr_in *>(p->ai_dst_addr); }
};

TEST(RdmaCmGetAddrInfo, NothingAtAllIsEinval) {
  rdma_addrinfo *res = nullptr;
  errno = 0;
  EXPECT_EQ(-1, rdma_getaddrinfo(nullptr, nullptr, nullptr, &res));
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(res, nullptr);
}

TEST(RdmaCmGetAddrInfo, PassiveServiceOnlyIsWildcardSource) {
  rdma_addrinfo hints{};
  hints.ai_flags = RAI_PASSIVE;
  Rai r;
  ASSERT_EQ(0, rdma_getaddrinfo(nullptr, "7471", &hints, &r.p));
  EXPECT_EQ(r.p->ai_flags, RAI_PASSIVE);
  EXPECT_EQ(r.p->ai_family, AF_INET);
  EXPECT_EQ(r.p->ai_port_space, RDMA_PS_TCP);
  EXPECT_EQ(r.p->ai_qp_type, IBV_QPT_RC);
  ASSERT_NE(r.src(), nullptr);
  EXPECT_EQ(r.p->ai_src_len, sizeof(sockaddr_in));
  EXPECT_EQ(r.src()->sin_addr.s_addr, htonl(INADDR_ANY));
  EXPECT_EQ(r.src()->sin_port, htons(7471));
  EXPECT_EQ(r.p->ai_dst_addr, nullptr);
}

TEST(RdmaCmGetAddrInfo, ActiveServiceOnlyIsLoopbackDestination) {
  Rai r;
  ASSERT_EQ(0, rdma_getaddrinfo(nullptr, "7472", nullptr, &r.p));  // no hints at all
  EXPECT_EQ(r.p->ai_flags, 0);
  ASSERT_NE(r.dst(), nullptr);
  EXPECT_EQ(r.dst()->sin_family, AF_INET);
  EXPECT_EQ(r.dst()->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
  EXPECT_EQ(r.dst()->sin_port, htons(7472));
  EXPECT_EQ(r.p->ai_src_addr, nullptr);
  EXPECT_EQ(r.p->ai_qp_type, IBV_QPT_RC);  // from the first result: a stream socket
  EXPECT_EQ(r.p->ai_port_space, RDMA_PS_TCP);
}

TEST(RdmaCmGetAddrInfo, NumericNodeAndServiceIsDestination) {
  rdma_addrinfo hints{};
  hints.ai_flags = RAI_NUMERICHOST;
  Rai r;
  ASSERT_EQ(0, rdma_getaddrinfo("127.0.0.1", "1234", &hints, &r.p));
  EXPECT_EQ(r.p->ai_flags, 0);  // librdmacm keeps only RAI_PASSIVE
  ASSERT_NE(r.dst(), nullptr);
  EXPECT_EQ(r.dst()->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
  EXPECT_EQ(r.dst()->sin_port, htons(1234));
  EXPECT_EQ(r.p->ai_src_addr, nullptr);
}

TEST(RdmaCmGetAddrInfo, PassiveNumericNodeWithoutService) {
  // libfabric's verbs provider, once per interface address.
  rdma_addrinfo hints{};
  hints.ai_flags = RAI_PASSIVE | RAI_NUMERICHOST;
  Rai r;
  ASSERT_EQ(0, rdma_getaddrinfo("127.0.0.1", nullptr, &hints, &r.p));
  EXPECT_EQ(r.p->ai_flags, RAI_PASSIVE);
  ASSERT_NE(r.src(), nullptr);
  EXPECT_EQ(r.src()->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
  EXPECT_EQ(r.src()->sin_port, 0);
  EXPECT_EQ(r.p->ai_dst_addr, nullptr);
}

TEST(RdmaCmGetAddrInfo, PassiveLocalhostPrefersIpv4) {
  // libfabric's verbs provider with no node name looks up "localhost".
  rdma_addrinfo hints{};
  hints.ai_flags = RAI_PASSIVE;
  Rai r;
  ASSERT_EQ(0, rdma_getaddrinfo("localhost", nullptr, &hints, &r.p));
  ASSERT_NE(r.src(), nullptr);
  EXPECT_EQ(r.p->ai_family, AF_INET);
  EXPECT_EQ(r.src()->sin_family, AF_INET);
  EXPECT_EQ(ntohl(r.src()->sin_addr.s_addr) >> 24, 127u);
}

TEST(RdmaCmGetAddrInfo, NoNodeNoServiceCopiesHintAddresses) {
  sockaddr_in src = loopback(0), dst = loopback(4791);
  src.sin_addr.s_addr = inet_addr("127.0.0.2");
  rdma_addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_qp_type = IBV_QPT_RC;
  hints.ai_port_space = RDMA_PS_TCP;
  hints.ai_dst_addr = reinterpret_cast<sockaddr *>(&dst);
  hints.ai_dst_len = sizeof dst;
  {
    Rai r;  // destination only (libfabric's endpoint and client look-ups)
    ASSERT_EQ(0, rdma_getaddrinfo(nullptr, nullptr, &hints, &r.p));
    EXPECT_EQ(r.p->ai_flags, 0);
    EXPECT_EQ(r.p->ai_family, AF_INET);
    EXPECT_EQ(r.p->ai_qp_type, IBV_QPT_RC);
    EXPECT_EQ(r.p->ai_port_space, RDMA_PS_TCP);
    ASSERT_NE(r.dst(), nullptr);
    EXPECT_NE(r.p->ai_dst_addr, hints.ai_dst_addr);  // a copy
    EXPECT_EQ(r.p->ai_dst_len, sizeof dst);
    EXPECT_EQ(0, std::memcmp(r.dst(), &dst, sizeof dst));
    EXPECT_EQ(r.p->ai_src_addr, nullptr);
  }
  hints.ai_src_addr = reinterpret_cast<sockaddr *>(&src);
  hints.ai_src_len = sizeof src;
  {
    Rai r;  // both
    ASSERT_EQ(0, rdma_getaddrinfo(nullptr, nullptr, &hints, &r.p));
    ASSERT_NE(r.dst(), nullptr);
    ASSERT_NE(r.src(), nullptr);
    EXPECT_EQ(0, std::memcmp(r.src(), &src, sizeof src));
    EXPECT_EQ(0, std::memcmp(r.dst(), &dst, sizeof dst));
  }
  hints.ai_dst_addr = nullptr;
  hints.ai_dst_len = 0;
  hints.ai_flags = RAI_PASSIVE;
  {
    Rai r;  // source only, passive (libfabric's domain look-up)
    ASSERT_EQ(0, rdma_getaddrinfo(nullptr, nullptr, &hints, &r.p));
    EXPECT_EQ(r.p->ai_flags, RAI_PASSIVE);
    ASSERT_NE(r.src(), nullptr);
    EXPECT_EQ(0, std::memcmp(r.src(), &src, sizeof src));
    EXPECT_EQ(r.p->ai_dst_addr, nullptr);
  }
  hints.ai_src_addr = nullptr;
  hints.ai_src_len = 0;
  {
    Rai r;  // hints without addresses: an answer without addresses
    ASSERT_EQ(0, rdma_getaddrinfo(nullptr, nullptr, &hints, &r.p));
    EXPECT_EQ(r.p->ai_src_addr, nullptr);
    EXPECT_EQ(r.p->ai_dst_addr, nullptr);
  }
}

TEST(RdmaCmGetAddrInfo, HintSourceJoinsAnActiveResultOnly) {
  sockaddr_in src = loopback(0);
  src.sin_addr.s_addr = inet_addr("127.0.0.3");
  rdma_addrinfo hints{};
  hints.ai_src_addr = reinterpret_cast<sockaddr *>(&src);
  hints.ai_src_len = sizeof src;
  {
    Rai r;
    ASSERT_EQ(0, rdma_getaddrinfo("127.0.0.1", "1", &hints, &r.p));
    ASSERT_NE(r.dst(), nullptr);
    ASSERT_NE(r.src(), nullptr);
    EXPECT_EQ(r.src()->sin_addr.s_addr, inet_addr("127.0.0.3"));
  }
  hints.ai_flags = RAI_PASSIVE;
  {
    Rai r;  // a passive result has its own source: the hint's is not used
    ASSERT_EQ(0, rdma_getaddrinfo("127.0.0.1", "2", &hints, &r.p));
    ASSERT_NE(r.src(), nullptr);
    EXPECT_EQ(r.src()->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    EXPECT_EQ(r.src()->sin_port, htons(2));
  }
}

TEST(RdmaCmGetAddrInfo, ResolverErrorsAreGetaddrinfoCodes) {
  rdma_addrinfo hints{}, *res = nullptr;
  hints.ai_flags = RAI_NUMERICHOST;
  int r = rdma_getaddrinfo("not-a-number.invalid", "1", &hints, &res);
  EXPECT_EQ(r, EAI_NONAME) << gai_strerror(r);
  EXPECT_EQ(res, nullptr);
  hints = {};
  r = rdma_getaddrinfo("127.0.0.1", "no-such-service-name", &hints, &res);
  EXPECT_EQ(r, EAI_SERVICE) << gai_strerror(r);
  EXPECT_EQ(res, nullptr);
}

TEST(RdmaCmGetAddrInfo, Families) {
  rdma_addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_flags = RAI_FAMILY;
  {
    Rai r;
    ASSERT_EQ(0, rdma_getaddrinfo("localhost", "9", &hints, &r.p));
    EXPECT_EQ(r.p->ai_family, AF_INET);
  }
  // IPv6 literals resolve to AF_INET6 addresses an id binds to.
  hints = {};
  hints.ai_family = AF_INET6;
  hints.ai_flags = RAI_NUMERICHOST;
  {
    Rai r;
    ASSERT_EQ(0, rdma_getaddrinfo("::1", "9", &hints, &r.p));
    EXPECT_EQ(r.p->ai_family, AF_INET6);
    ASSERT_NE(r.p->ai_dst_addr, nullptr);
    EXPECT_EQ(r.p->ai_dst_len, sizeof(sockaddr_in6));
    ASSERT_TRUE(have_ipv6_loopback()) << "lo has no ::1";
    rdma_cm_id *id = nullptr;
    ASSERT_EQ(0, rdma_create_id(nullptr, &id, nullptr, RDMA_PS_TCP));
    EXPECT_EQ(0, rdma_bind_addr(id, r.p->ai_dst_addr)) << strerror(errno);
    EXPECT_EQ(rdma_get_local_addr(id)->sa_family, AF_INET6);
    rdma_destroy_id(id);
  }
  // A link-local address keeps its "%scope" as the scope id; a passive look-up without a
  // node in the IPv6 family is the IPv6 wildcard.
  {
    Rai r;
    ASSERT_EQ(0, rdma_getaddrinfo("fe80::1%lo", "9", &hints, &r.p));
    ASSERT_EQ(r.p->ai_dst_len, sizeof(sockaddr_in6));
    auto *a = reinterpret_cast<const sockaddr_in6 *>(r.p->ai_dst_addr);
    EXPECT_EQ(a->sin6_scope_id, if_nametoindex("lo"));
    EXPECT_EQ(a->sin6_port, htons(9));
  }
  hints.ai_flags = RAI_PASSIVE | RAI_FAMILY;
  {
    Rai r;
    ASSERT_EQ(0, rdma_getaddrinfo(nullptr, "9", &hints, &r.p));
    ASSERT_NE(r.p->ai_src_addr, nullptr);
    ASSERT_EQ(r.p->ai_src_addr->sa_family, AF_INET6);
    auto *a = reinterpret_cast<const sockaddr_in6 *>(r.p->ai_src_addr);
    EXPECT_TRUE(IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr));
  }
  hints.ai_flags = RAI_NUMERICHOST;
  rdma_addrinfo *res = nullptr;
  EXPECT_NE(0, rdma_getaddrinfo("127.0.0.1", "9", &hints, &res));  // not an IPv6 literal
  // AF_IB: without RAI_FAMILY it only means "any IP family" to the resolver...
  hints = {};
  hints.ai_family = AF_IB;
  {
    Rai r;
    ASSERT_EQ(0, rdma_getaddrinfo("127.0.0.1", "9", &hints, &r.p));
    EXPECT_EQ(r.p->ai_family, AF_INET);
  }
  // ... and InfiniBand addresses proper do not exist on iWARP.
  hints.ai_flags = RAI_FAMILY | RAI_NUMERICHOST;
  EXPECT_EQ(EAI_FAMILY, rdma_getaddrinfo("::1", "9", &hints, &res));
  EXPECT_EQ(res, nullptr);
}

TEST(RdmaCmGetAddrInfo, PortSpacesAndQpTypes) {
  rdma_addrinfo hints{};
  hints.ai_port_space = RDMA_PS_UDP;
  {
    Rai r;  // a datagram port space: resolved as UDP, UD from the socket type
    ASSERT_EQ(0, rdma_getaddrinfo("127.0.0.1", "9", &hints, &r.p));
    EXPECT_EQ(r.p->ai_port_space, RDMA_PS_UDP);
    EXPECT_EQ(r.p->ai_qp_type, IBV_QPT_UD);
    // ... which rdma_create_ep cannot serve on iWARP.
    rdma_cm_id *id = nullptr;
    errno = 0;
    EXPECT_EQ(-1, rdma_create_ep(&id, r.p, nullptr, nullptr));
    EXPECT_EQ(errno, ENOSYS);
  }
  hints = {};
  hints.ai_qp_type = IBV_QPT_UD;
  {
    Rai r;
    ASSERT_EQ(0, rdma_getaddrinfo("127.0.0.1", "9", &hints, &r.p));
    EXPECT_EQ(r.p->ai_qp_type, IBV_QPT_UD);
    EXPECT_EQ(r.p->ai_port_space, RDMA_PS_UDP);
  }
  hints = {};
  hints.ai_port_space = RDMA_PS_IB;
  hints.ai_qp_type = IBV_QPT_RC;
  {
    Rai r;  // the hints' values are kept
    ASSERT_EQ(0, rdma_getaddrinfo("127.0.0.1", "9", &hints, &r.p));
    EXPECT_EQ(r.p->ai_port_space, RDMA_PS_IB);
    EXPECT_EQ(r.p->ai_qp_type, IBV_QPT_RC);
  }
  hints = {};
  hints.ai_port_space = RDMA_PS_TCP;
  {
    Rai r;
    ASSERT_EQ(0, rdma_getaddrinfo("127.0.0.1", "9", &hints, &r.p));
    EXPECT_EQ(r.p->ai_port_space, RDMA_PS_TCP);
    EXPECT_EQ(r.p->ai_qp_type, IBV_QPT_RC);
  }
}

// Whether an interface other than loopback is up (then it serves loopback addresses).
bool have_non_loopback_device() {
  int n = 0;
  ibv_device **l = ibv_get_device_list(&n);
  bool found = false;
  for (int i = 0; i < n; ++i) {
    std::string nm = ibv_get_device_name(l[i]);
    if (nm.size() < 3 || nm.compare(nm.size() - 3, 3, "_lo") != 0) found = true;
  }
  ibv_free_device_list(l);
  return found;
}

TEST(RdmaCm, LoopbackBindsNoDeviceAndResolvesToAServingDevice) {
  rdma_event_channel *ch = rdma_create_event_channel();
  rdma_cm_id *id = nullptr;
  ASSERT_EQ(0, rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP));
  // As the kernel: a loopback address binds like the wildcard, without a device.
  sockaddr_in a = loopback(0);
  ASSERT_EQ(0, rdma_bind_addr(id, reinterpret_cast<sockaddr *>(&a)));
  EXPECT_EQ(id->verbs, nullptr);
  EXPECT_NE(rdma_get_src_port(id), 0);
  EXPECT_EQ(id->route.addr.src_sin.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
  rdma_destroy_id(id);
  // Resolving a loopback destination picks a device; a non-loopback one when there is one
  // (libfabric's verbs provider offers no domain for a loopback interface).
  ASSERT_EQ(0, rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP));
  sockaddr_in d = loopback(9);
  ASSERT_EQ(0, rdma_resolve_addr(id, nullptr, reinterpret_cast<sockaddr *>(&d), 2000));
  rdma_cm_event *ev = expect_event(ch, RDMA_CM_EVENT_ADDR_RESOLVED);
  ASSERT_NE(ev, nullptr);
  rdma_ack_cm_event(ev);
  ASSERT_NE(id->verbs, nullptr);
  std::string nm = ibv_get_device_name(id->verbs->device);
  bool is_lo = nm.size() >= 3 && nm.compare(nm.size() - 3, 3, "_lo") == 0;
  EXPECT_EQ(is_lo, !have_non_loopback_device()) << nm;
  rdma_destroy_id(id);
  rdma_destroy_event_channel(ch);
}

TEST(RdmaCm, UnsupportedThingsFailCleanly) {
  rdma_event_channel *ch = rdma_create_event_channel();
  rdma_cm_id *id = nullptr;
  errno = 0;
  EXPECT_EQ(-1, rdma_create_id(ch, &id, nullptr, RDMA_PS_UDP));
  EXPECT_EQ(errno, ENOSYS);
  EXPECT_EQ(-1, rdma_create_id(ch, &id, nullptr, rdma_port_space(0x4242)));
  EXPECT_EQ(errno, EINVAL);
  ASSERT_EQ(0, rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP));
  sockaddr_in m = loopback();
  m.sin_addr.s_addr = inet_addr("239.1.1.1");
  EXPECT_EQ(-1, rdma_join_multicast(id, reinterpret_cast<sockaddr *>(&m), nullptr));
  EXPECT_EQ(errno, ENOSYS);
  EXPECT_EQ(-1, rdma_leave_multicast(id, reinterpret_cast<sockaddr *>(&m)));
  EXPECT_EQ(errno, ENOSYS);
  ibv_ece ece{};
  EXPECT_EQ(-1, rdma_set_local_ece(id, &ece));
  EXPECT_EQ(errno, EOPNOTSUPP);
  EXPECT_EQ(-1, rdma_get_remote_ece(id, &ece));
  EXPECT_EQ(errno, EOPNOTSUPP);
  uint8_t tos = 16;
  EXPECT_EQ(0, rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_TOS, &tos, sizeof tos));
  int one = 1;
  EXPECT_EQ(0, rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_REUSEADDR, &one, sizeof one));
  EXPECT_EQ(-1, rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_TOS, &one, sizeof one));
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(-1, rdma_set_option(id, RDMA_OPTION_IB, RDMA_OPTION_IB_PATH, &one, sizeof one));
  EXPECT_EQ(errno, ENOSYS);
  // Out of order calls.
  EXPECT_EQ(-1, rdma_resolve_route(id, 100));
  EXPECT_EQ(errno, EINVAL);
  rdma_conn_param cp{};
  EXPECT_EQ(-1, rdma_connect(id, &cp));
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(-1, rdma_accept(id, &cp));
  EXPECT_EQ(errno, EINVAL);
  ibv_qp_attr qa{};
  int mask = 0;
  qa.qp_state = IBV_QPS_INIT;
  EXPECT_EQ(0, rdma_init_qp_attr(id, &qa, &mask));
  EXPECT_EQ(mask, IBV_QP_STATE | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX | IBV_QP_PORT);
  EXPECT_EQ(qa.pkey_index, 0);
  qa.qp_state = IBV_QPS_RTS;
  EXPECT_EQ(0, rdma_init_qp_attr(id, &qa, &mask));
  EXPECT_EQ(mask, IBV_QP_STATE);
  EXPECT_STREQ(rdma_event_str(RDMA_CM_EVENT_ESTABLISHED), "RDMA_CM_EVENT_ESTABLISHED");
  EXPECT_STREQ(rdma_event_str(rdma_cm_event_type(99)), "UNKNOWN EVENT");
  EXPECT_EQ(0, rdma_destroy_id(id));
  rdma_destroy_event_channel(ch);
}

TEST(RdmaCm, GetDevices) {
  int n = -1;
  ibv_context **list = rdma_get_devices(&n);
  ASSERT_NE(list, nullptr);
  ASSERT_GE(n, 1);
  for (int i = 0; i < n; ++i) EXPECT_NE(list[i], nullptr);
  EXPECT_EQ(list[n], nullptr);
  // The same contexts every time: ids point at them.
  int n2 = 0;
  ibv_context **again = rdma_get_devices(&n2);
  ASSERT_EQ(n, n2);
  for (int i = 0; i < n; ++i) EXPECT_EQ(list[i], again[i]);
  rdma_free_devices(again);
  rdma_free_devices(list);
}

TEST(RdmaCm, BindPortZeroAndConflict) {
  rdma_event_channel *ch = rdma_create_event_channel();
  rdma_cm_id *a = nullptr, *b = nullptr;
  ASSERT_EQ(0, rdma_create_id(ch, &a, nullptr, RDMA_PS_TCP));
  ASSERT_EQ(0, rdma_create_id(ch, &b, nullptr, RDMA_PS_TCP));
  sockaddr_in s = loopback(0);
  ASSERT_EQ(0, rdma_bind_addr(a, reinterpret_cast<sockaddr *>(&s)));
  uint16_t port = ntohs(rdma_get_src_port(a));
  EXPECT_NE(port, 0);
  s.sin_port = htons(port);
  errno = 0;
  EXPECT_EQ(-1, rdma_bind_addr(b, reinterpret_cast<sockaddr *>(&s)));
  EXPECT_EQ(errno, EADDRINUSE);
  // Binding twice is invalid; a non-local address is refused.
  EXPECT_EQ(-1, rdma_bind_addr(a, reinterpret_cast<sockaddr *>(&s)));
  EXPECT_EQ(errno, EINVAL);
  sockaddr_in far = loopback(0);
  far.sin_addr.s_addr = inet_addr("192.0.2.77");
  EXPECT_EQ(-1, rdma_bind_addr(b, reinterpret_cast<sockaddr *>(&far)));
  EXPECT_EQ(errno, EADDRNOTAVAIL);
  // Wildcard: no device until a connection arrives.
  sockaddr_in any{};
  any.sin_family = AF_INET;
  ASSERT_EQ(0, rdma_bind_addr(b, reinterpret_cast<sockaddr *>(&any)));
  EXPECT_EQ(b->verbs, nullptr);
  EXPECT_NE(rdma_get_src_port(b), 0);
  rdma_destroy_id(a);
  rdma_destroy_id(b);
  rdma_destroy_event_channel(ch);
}

TEST(RdmaCm, ConnectRequestPrivateDataAndReject) {
  Listener l;
  Client c(l.port);
  rdma_conn_param cp{};
  const char hello[] = "hello, iwarp";
  cp.private_data = hello;
  cp.private_data_len = sizeof hello;
  cp.responder_resources = 5;
  cp.initiator_depth = 3;
  ASSERT_EQ(0, rdma_connect(c.id, &cp));  // no QP: allowed with conn_param

  rdma_cm_event *ev = expect_event(l.ch, RDMA_CM_EVENT_CONNECT_REQUEST);
  ASSERT_NE(ev, nullptr);
  EXPECT_EQ(ev->listen_id, l.id);
  ASSERT_NE(ev->id, nullptr);
  EXPECT_NE(ev->id, l.id);
  EXPECT_EQ(ev->status, 0);
  rdma_cm_id *child = ev->id;
  EXPECT_NE(child->verbs, nullptr);
  EXPECT_EQ(child->port_num, 1);
  EXPECT_EQ(child->channel, l.ch);
  ASSERT_EQ(ev->param.conn.private_data_len, sizeof hello);
  EXPECT_EQ(0, std::memcmp(ev->param.conn.private_data, hello, sizeof hello));
  if (eca::config().mpa_rev == 2) {
    // From the receiver's point of view: it may issue up to the peer's IRD, and should
    // accept as many READs as the peer wants to issue.
    EXPECT_EQ(ev->param.conn.initiator_depth, 5);
    EXPECT_EQ(ev->param.conn.responder_resources, 3);
  }
  // Addresses of the new id: local = the listener's port, peer = the client's.
  EXPECT_EQ(rdma_get_src_port(child), htons(l.port));
  EXPECT_EQ(rdma_get_dst_port(child), rdma_get_src_port(c.id));
  const char nope[] = "go away";
  EXPECT_EQ(0, rdma_reject(child, nope, sizeof nope));
  EXPECT_EQ(0, rdma_ack_cm_event(ev));

  rdma_cm_event *rej = expect_event(c.ch, RDMA_CM_EVENT_REJECTED);
  ASSERT_NE(rej, nullptr);
  EXPECT_EQ(rej->status, -ECONNREFUSED);
  ASSERT_EQ(rej->param.conn.private_data_len, sizeof nope);
  EXPECT_EQ(0, std::memcmp(rej->param.conn.private_data, nope, sizeof nope));
  rdma_ack_cm_event(rej);
  EXPECT_EQ(0, rdma_destroy_id(child));
}

TEST(RdmaCm, ConnectionRefusedIsUnreachable) {
  // A port nobody listens on: bind a plain TCP socket and never listen.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback();
  ASSERT_EQ(0, ::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a));
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
  Client c(ntohs(a.sin_port));
  rdma_conn_param cp{};
  ASSERT_EQ(0, rdma_connect(c.id, &cp));
  rdma_cm_event *ev = expect_event(c.ch, RDMA_CM_EVENT_UNREACHABLE);
  ASSERT_NE(ev, nullptr);
  EXPECT_EQ(ev->status, -ECONNREFUSED);
  rdma_ack_cm_event(ev);
  ::close(fd);
}

TEST(RdmaCm, GarbageReplyIsConnectError) {
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback();
  ASSERT_EQ(0, ::bind(lfd, reinterpret_cast<sockaddr *>(&a), sizeof a));
  ASSERT_EQ(0, ::listen(lfd, 4));
  socklen_t len = sizeof a;
  ::getsockname(lfd, reinterpret_cast<sockaddr *>(&a), &len);
  Client c(ntohs(a.sin_port));
  rdma_conn_param cp{};
  ASSERT_EQ(0, rdma_connect(c.id, &cp));
  pollfd p{lfd, POLLIN, 0};
  ASSERT_EQ(1, ::poll(&p, 1, 5000));
  int s = ::accept(lfd, nullptr, nullptr);
  ASSERT_GE(s, 0);
  std::vector<uint8_t> junk(64, 0x5a);
  ASSERT_EQ(::send(s, junk.data(), junk.size(), MSG_NOSIGNAL), ssize_t(junk.size()));
  rdma_cm_event *ev = expect_event(c.ch, RDMA_CM_EVENT_CONNECT_ERROR);
  ASSERT_NE(ev, nullptr);
  EXPECT_LT(ev->status, 0);
  rdma_ack_cm_event(ev);
  ::close(s);
  ::close(lfd);
}

TEST(RdmaCm, MarkersRequestRejectedByOurResponder) {
  // A raw initiator asking for markers gets R=1 and a closed stream; the listener sees nothing.
  Listener l;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = loopback(l.port);
  ASSERT_EQ(0, ::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a));
  eca::wire::mpa::Frame req;
  req.rev = 2;
  req.markers = true;
  auto b = eca::wire::mpa::build(req);
  ASSERT_EQ(::send(fd, b.data(), b.size(), MSG_NOSIGNAL), ssize_t(b.size()));
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  uint8_t rep[64];
  size_t got = 0;
  for (;;) {
    ssize_t r = ::recv(fd, rep + got, sizeof rep - got, 0);
    if (r <= 0) break;
    got += size_t(r);
  }
  ASSERT_GE(got, eca::wire::mpa::kHeaderLen);
  EXPECT_EQ(0, std::memcmp(rep, "MPA ID Rep Frame", 16));
  EXPECT_TRUE(rep[16] & eca::wire::mpa::kFlagReject);
  ::close(fd);
  EXPECT_EQ(nullptr, next_event(l.ch, 200));
}

TEST(RdmaCm, DestroyListenerWithPendingRequest) {
  auto *l = new Listener;
  Client c(l->port);
  rdma_conn_param cp{};
  ASSERT_EQ(0, rdma_connect(c.id, &cp));
  pollfd p{l->ch->fd, POLLIN, 0};
  ASSERT_EQ(1, ::poll(&p, 1, 10000));  // the request is queued, never taken
  delete l;                            // must not hang; the request's connection closes
  rdma_cm_event *ev = next_event(c.ch);
  ASSERT_NE(ev, nullptr);
  EXPECT_EQ(ev->event, RDMA_CM_EVENT_REJECTED);
  rdma_ack_cm_event(ev);
}

// Creates send/recv CQs and a QP on `id` through rdma_create_qp (CQs made by rdma_cm).
void make_qp(rdma_cm_id *id) {
  ibv_qp_init_attr a{};
  a.qp_type = IBV_QPT_RC;
  a.cap.max_send_wr = 16;
  a.cap.max_recv_wr = 16;
  a.cap.max_send_sge = 1;
  a.cap.max_recv_sge = 1;
  ASSERT_EQ(0, rdma_create_qp(id, nullptr, &a)) << strerror(errno);
  ASSERT_NE(id->qp, nullptr);
  EXPECT_NE(id->send_cq, nullptr);
  EXPECT_NE(id->recv_cq, nullptr);
  EXPECT_NE(id->send_cq_channel, nullptr);
  EXPECT_EQ(id->qp->pd, id->pd);
}

TEST(RdmaCm, EstablishAndDisconnectBothSides) {
  Listener l;
  Client c(l.port);
  make_qp(c.id);
  rdma_conn_param cp{};
  cp.responder_resources = 2;
  cp.initiator_depth = 2;
  ASSERT_EQ(0, rdma_connect(c.id, &cp));
  rdma_cm_event *ev = expect_event(l.ch, RDMA_CM_EVENT_CONNECT_REQUEST);
  ASSERT_NE(ev, nullptr);
  rdma_cm_id *child = ev->id;
  rdma_ack_cm_event(ev);
  make_qp(child);
  rdma_conn_param ap{};
  const char welcome[] = "welcome";
  ap.private_data = welcome;
  ap.private_data_len = sizeof welcome;
  ap.responder_resources = 200;  // clamped to the device maximum, never refused
  ap.initiator_depth = 1;
  ASSERT_EQ(0, rdma_accept(child, &ap));
  ev = expect_event(l.ch, RDMA_CM_EVENT_ESTABLISHED);
  ASSERT_NE(ev, nullptr);
  EXPECT_EQ(ev->id, child);
  rdma_ack_cm_event(ev);
  ev = expect_event(c.ch, RDMA_CM_EVENT_ESTABLISHED);
  ASSERT_NE(ev, nullptr);
  ASSERT_EQ(ev->param.conn.private_data_len, sizeof welcome);
  EXPECT_EQ(0, std::memcmp(ev->param.conn.private_data, welcome, sizeof welcome));
  rdma_ack_cm_event(ev);
  EXPECT_EQ(c.id->qp->state, IBV_QPS_RTS);
  EXPECT_EQ(child->qp->state, IBV_QPS_RTS);
  auto *cq = eca::Qp::from(c.id->qp);
  auto *sq = eca::Qp::from(child->qp);
  if (eca::config().mpa_rev == 2) {
    EXPECT_EQ(cq->ord, 2u);  // min(2, server IRD clamped to kMaxIrdOrd)
    EXPECT_EQ(sq->ird, eca::kMaxIrdOrd);
    EXPECT_EQ(sq->ord, 1u);
  }

  // A SEND crosses the connection.
  std::vector<char> rbuf(64), sbuf(64, 'x');
  ibv_mr *rmr = ibv_reg_mr(child->pd, rbuf.data(), rbuf.size(), IBV_ACCESS_LOCAL_WRITE);
  ibv_mr *smr = ibv_reg_mr(c.id->pd, sbuf.data(), sbuf.size(), 0);
  ASSERT_NE(rmr, nullptr);
  ASSERT_NE(smr, nullptr);
  ASSERT_EQ(0, rdma_post_recv(child, nullptr, rbuf.data(), rbuf.size(), rmr));
  ASSERT_EQ(0, rdma_post_send(c.id, nullptr, sbuf.data(), 16, smr, IBV_SEND_SIGNALED));
  ibv_wc wc{};
  auto deadline = std::chrono::steady_clock::now() + 10s;
  int n = 0;
  while ((n = ibv_poll_cq(child->recv_cq, 1, &wc)) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  ASSERT_EQ(n, 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(wc.byte_len, 16u);

  ASSERT_EQ(0, rdma_disconnect(c.id));
  ev = expect_event(c.ch, RDMA_CM_EVENT_DISCONNECTED);
  if (ev) rdma_ack_cm_event(ev);
  ev = expect_event(l.ch, RDMA_CM_EVENT_DISCONNECTED);
  ASSERT_NE(ev, nullptr);
  EXPECT_EQ(ev->id, child);
  rdma_ack_cm_event(ev);
  // Disconnecting the already-disconnected side is fine and raises nothing new.
  EXPECT_EQ(0, rdma_disconnect(child));
  EXPECT_EQ(nullptr, next_event(l.ch, 200));
  EXPECT_EQ(nullptr, next_event(c.ch, 200));
  ibv_dereg_mr(rmr);
  ibv_dereg_mr(smr);
  rdma_destroy_qp(child);
  EXPECT_EQ(0, rdma_destroy_id(child));
}

// Connects c to l with a QP on each end; returns the accepted id, ESTABLISHED acked on both.
rdma_cm_id *connect_pair(Listener &l, Client &c) {
  make_qp(c.id);
  rdma_conn_param cp{};
  EXPECT_EQ(0, rdma_connect(c.id, &cp));
  rdma_cm_event *ev = expect_event(l.ch, RDMA_CM_EVENT_CONNECT_REQUEST);
  if (!ev) return nullptr;
  rdma_cm_id *child = ev->id;
  rdma_ack_cm_event(ev);
  make_qp(child);
  EXPECT_EQ(0, rdma_accept(child, nullptr));
  if ((ev = expect_event(l.ch, RDMA_CM_EVENT_ESTABLISHED))) rdma_ack_cm_event(ev);
  if ((ev = expect_event(c.ch, RDMA_CM_EVENT_ESTABLISHED))) rdma_ack_cm_event(ev);
  return child;
}

// ---- IPv6 ----------------------------------------------------------------------------------

bool is_v6_loopback(const sockaddr *a) {
  return a->sa_family == AF_INET6 &&
         IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6 *>(a)->sin6_addr);
}
bool is_v4_loopback(const sockaddr *a) {
  return a->sa_family == AF_INET &&
         reinterpret_cast<const sockaddr_in *>(a)->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
}

TEST(RdmaCmIpv6, ConnectOverIpv6Loopback) {
  ASSERT_TRUE(have_ipv6_loopback()) << "lo has no ::1";
  sockaddr_in6 a = loopback6();
  Listener l(reinterpret_cast<sockaddr *>(&a));
  ASSERT_TRUE(is_v6_loopback(rdma_get_local_addr(l.id)));
  EXPECT_EQ(l.id->verbs, nullptr) << "::1 binds no device, like 127.0.0.1";
  Client c(l.port, true);
  ASSERT_NE(c.id->verbs, nullptr) << "resolving ::1 picks a serving device";
  EXPECT_TRUE(is_v6_loopback(rdma_get_local_addr(c.id)));
  EXPECT_TRUE(is_v6_loopback(rdma_get_peer_addr(c.id)));
  rdma_cm_id *child = connect_pair(l, c);
  ASSERT_NE(child, nullptr);
  EXPECT_EQ(c.id->qp->state, IBV_QPS_RTS);
  EXPECT_EQ(child->qp->state, IBV_QPS_RTS);
  EXPECT_NE(child->verbs, nullptr);
  EXPECT_TRUE(is_v6_loopback(rdma_get_local_addr(child)));
  EXPECT_TRUE(is_v6_loopback(rdma_get_peer_addr(child)));
  EXPECT_EQ(rdma_get_src_port(child), htons(l.port));
  EXPECT_EQ(rdma_get_dst_port(c.id), htons(l.port));
  EXPECT_EQ(rdma_get_dst_port(child), rdma_get_src_port(c.id));
  ASSERT_EQ(0, rdma_disconnect(c.id));
  if (auto *ev = expect_event(c.ch, RDMA_CM_EVENT_DISCONNECTED)) rdma_ack_cm_event(ev);
  if (auto *ev = expect_event(l.ch, RDMA_CM_EVENT_DISCONNECTED)) rdma_ack_cm_event(ev);
  rdma_destroy_qp(child);
  rdma_destroy_id(child);
}

// A listener on the IPv6 wildcard takes IPv4 connections too (as a dual-stack socket); the
// IPv4 one reports IPv4 addresses, not IPv4-mapped ones (as the kernel's rdma_cm).
TEST(RdmaCmIpv6, WildcardListenerTakesBothFamilies) {
  ASSERT_TRUE(have_ipv6_loopback()) << "lo has no ::1";
  sockaddr_in6 any = loopback6();
  any.sin6_addr = in6addr_any;
  Listener l(reinterpret_cast<sockaddr *>(&any));
  ASSERT_EQ(rdma_get_local_addr(l.id)->sa_family, AF_INET6);
  for (bool v6 : {false, true}) {
    Client c(l.port, v6);
    rdma_cm_id *child = connect_pair(l, c);
    ASSERT_NE(child, nullptr);
    if (v6) {
      EXPECT_TRUE(is_v6_loopback(rdma_get_local_addr(child)));
      EXPECT_TRUE(is_v6_loopback(rdma_get_peer_addr(child)));
    } else {
      EXPECT_TRUE(is_v4_loopback(rdma_get_local_addr(child)));
      EXPECT_TRUE(is_v4_loopback(rdma_get_peer_addr(child)));
    }
    rdma_destroy_qp(child);
    rdma_destroy_id(child);
  }
}

TEST(RdmaCmIpv6, BindRules) {
  ASSERT_TRUE(have_ipv6_loopback()) << "lo has no ::1";
  rdma_event_channel *ch = rdma_create_event_channel();
  rdma_cm_id *id = nullptr;
  // An IPv4-mapped address is the IPv4 address it maps.
  ASSERT_EQ(0, rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP));
  sockaddr_in6 m = loopback6();
  ASSERT_EQ(1, inet_pton(AF_INET6, "::ffff:127.0.0.1", &m.sin6_addr));
  ASSERT_EQ(0, rdma_bind_addr(id, reinterpret_cast<sockaddr *>(&m))) << strerror(errno);
  EXPECT_TRUE(is_v4_loopback(rdma_get_local_addr(id)));
  EXPECT_NE(rdma_get_src_port(id), 0);
  rdma_destroy_id(id);
  // An IPv6 address no interface holds: no device, EADDRNOTAVAIL (2001:db8::/32 is for
  // documentation and never assigned).
  ASSERT_EQ(0, rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP));
  sockaddr_in6 far = loopback6();
  ASSERT_EQ(1, inet_pton(AF_INET6, "2001:db8::77", &far.sin6_addr));
  errno = 0;
  EXPECT_EQ(-1, rdma_bind_addr(id, reinterpret_cast<sockaddr *>(&far)));
  EXPECT_EQ(errno, EADDRNOTAVAIL);
  EXPECT_EQ(id->verbs, nullptr);
  // ... and as the source of rdma_resolve_addr: an ADDR_ERROR event with that error.
  sockaddr_in6 dst = loopback6(9);
  ASSERT_EQ(0, rdma_resolve_addr(id, reinterpret_cast<sockaddr *>(&far),
                                 reinterpret_cast<sockaddr *>(&dst), 2000));
  rdma_cm_event *ev = expect_event(ch, RDMA_CM_EVENT_ADDR_ERROR);
  ASSERT_NE(ev, nullptr);
  EXPECT_EQ(ev->status, -EADDRNOTAVAIL);
  rdma_ack_cm_event(ev);
  rdma_destroy_id(id);
  // As the kernel: source and destination of one family.
  ASSERT_EQ(0, rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP));
  sockaddr_in6 lo6 = loopback6();
  ASSERT_EQ(0, rdma_bind_addr(id, reinterpret_cast<sockaddr *>(&lo6)));
  sockaddr_in d4 = loopback(9);
  errno = 0;
  EXPECT_EQ(-1, rdma_resolve_addr(id, nullptr, reinterpret_cast<sockaddr *>(&d4), 2000));
  EXPECT_EQ(errno, EINVAL);
  rdma_destroy_id(id);
  // An address family rdma_cm does not serve.
  ASSERT_EQ(0, rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP));
  sockaddr un{};
  un.sa_family = AF_UNIX;
  errno = 0;
  EXPECT_EQ(-1, rdma_bind_addr(id, &un));
  EXPECT_EQ(errno, EAFNOSUPPORT);
  rdma_destroy_id(id);
  rdma_destroy_event_channel(ch);
}

// RDMA_OPTION_ID_AFONLY: an IPv6 wildcard listener that does not take IPv4.
TEST(RdmaCmIpv6, AfOnlyListenerRefusesIpv4) {
  ASSERT_TRUE(have_ipv6_loopback()) << "lo has no ::1";
  rdma_event_channel *ch = rdma_create_event_channel();
  rdma_cm_id *l = nullptr;
  ASSERT_EQ(0, rdma_create_id(ch, &l, nullptr, RDMA_PS_TCP));
  int one = 1;
  ASSERT_EQ(0, rdma_set_option(l, RDMA_OPTION_ID, RDMA_OPTION_ID_AFONLY, &one, sizeof one));
  sockaddr_in6 any = loopback6();
  any.sin6_addr = in6addr_any;
  ASSERT_EQ(0, rdma_bind_addr(l, reinterpret_cast<sockaddr *>(&any)));
  ASSERT_EQ(0, rdma_listen(l, 4));
  const uint16_t port = ntohs(rdma_get_src_port(l));
  Client c(port, false);
  make_qp(c.id);
  rdma_conn_param cp{};
  ASSERT_EQ(0, rdma_connect(c.id, &cp));
  rdma_cm_event *ev = expect_event(c.ch, RDMA_CM_EVENT_UNREACHABLE);
  ASSERT_NE(ev, nullptr);
  EXPECT_EQ(ev->status, -ECONNREFUSED);
  rdma_ack_cm_event(ev);
  rdma_destroy_id(l);
  rdma_destroy_event_channel(ch);
}

TEST(RdmaCm, DisconnectAfterDestroyingTheQpStillDeliversDisconnected) {
  // The application destroys a connected QP before rdma_disconnect: destroying the QP raises
  // nothing (as with the kernel), rdma_disconnect then delivers DISCONNECTED (never lost), the
  // peer gets its own, each exactly once.
  Listener l;
  Client c(l.port);
  rdma_cm_id *child = connect_pair(l, c);
  ASSERT_NE(child, nullptr);
  rdma_destroy_qp(c.id);
  ASSERT_EQ(0, rdma_disconnect(c.id));
  rdma_cm_event *ev = expect_event(c.ch, RDMA_CM_EVENT_DISCONNECTED);
  ASSERT_NE(ev, nullptr);
  EXPECT_EQ(ev->id, c.id);
  rdma_ack_cm_event(ev);
  ev = expect_event(l.ch, RDMA_CM_EVENT_DISCONNECTED);
  ASSERT_NE(ev, nullptr);
  EXPECT_EQ(ev->id, child);
  rdma_ack_cm_event(ev);
  EXPECT_EQ(0, rdma_disconnect(c.id));
  EXPECT_EQ(0, rdma_disconnect(child));
  EXPECT_EQ(nullptr, next_event(c.ch, 200));
  EXPECT_EQ(nullptr, next_event(l.ch, 200));
  rdma_destroy_qp(child);
  EXPECT_EQ(0, rdma_destroy_id(child));
}

TEST(RdmaCm, PeerDestroyGivesDisconnected) {
  // The passive side goes away without rdma_disconnect: the active side still learns.
  Listener l;
  Client c(l.port);
  rdma_cm_id *child = connect_pair(l, c);
  ASSERT_NE(child, nullptr);
  rdma_destroy_qp(child);  // QP first, then the id: either order must be safe
  EXPECT_EQ(0, rdma_destroy_id(child));
  rdma_cm_event *ev = expect_event(c.ch, RDMA_CM_EVENT_DISCONNECTED);
  if (ev) rdma_ack_cm_event(ev);
}

TEST(RdmaCm, ConnectResponseWithoutQpThenEstablish) {
  Listener l;
  Client c(l.port);
  rdma_conn_param cp{};
  ASSERT_EQ(0, rdma_connect(c.id, &cp));
  rdma_cm_event *ev = expect_event(l.ch, RDMA_CM_EVENT_CONNECT_REQUEST);
  ASSERT_NE(ev, nullptr);
  rdma_cm_id *child = ev->id;
  rdma_ack_cm_event(ev);
  make_qp(child);
  ASSERT_EQ(0, rdma_accept(child, nullptr));
  if ((ev = expect_event(l.ch, RDMA_CM_EVENT_ESTABLISHED))) rdma_ack_cm_event(ev);
  ev = expect_event(c.ch, RDMA_CM_EVENT_CONNECT_RESPONSE);
  if (ev) rdma_ack_cm_event(ev);
  EXPECT_EQ(-1, rdma_establish(c.id));  // still no QP
  EXPECT_EQ(errno, EINVAL);
  make_qp(c.id);
  ASSERT_EQ(0, rdma_establish(c.id));
  ev = expect_event(c.ch, RDMA_CM_EVENT_ESTABLISHED);
  if (ev) rdma_ack_cm_event(ev);
  EXPECT_EQ(c.id->qp->state, IBV_QPS_RTS);
  ASSERT_EQ(0, rdma_disconnect(child));
  if ((ev = expect_event(l.ch, RDMA_CM_EVENT_DISCONNECTED))) rdma_ack_cm_event(ev);
  if ((ev = expect_event(c.ch, RDMA_CM_EVENT_DISCONNECTED))) rdma_ack_cm_event(ev);
  rdma_destroy_qp(child);
  rdma_destroy_id(child);
}

TEST(RdmaCm, SynchronousEndpoints) {
  // rdma_client/rdma_server style: rdma_create_ep, blocking calls, no event channel.
  rdma_addrinfo hints{}, *res = nullptr;
  hints.ai_flags = RAI_PASSIVE;
  hints.ai_port_space = RDMA_PS_TCP;
  ASSERT_EQ(0, rdma_getaddrinfo("127.0.0.1", "0", &hints, &res));
  ibv_qp_init_attr attr{};
  attr.cap.max_send_wr = attr.cap.max_recv_wr = 4;
  attr.cap.max_send_sge = attr.cap.max_recv_sge = 1;
  attr.sq_sig_all = 1;
  rdma_cm_id *listen_id = nullptr;
  ASSERT_EQ(0, rdma_create_ep(&listen_id, res, nullptr, &attr)) << strerror(errno);
  rdma_freeaddrinfo(res);
  ASSERT_EQ(0, rdma_listen(listen_id, 1));
  std::string port = std::to_string(ntohs(rdma_get_src_port(listen_id)));

  auto server = std::async(std::launch::async, [&] {
    rdma_cm_id *id = nullptr;
    int r = rdma_get_request(listen_id, &id);
    if (r) return std::string("get_request: ") + strerror(errno);
    if (!id->qp) return std::string("no QP from rdma_create_ep attributes");
    r = rdma_accept(id, nullptr);
    if (r) return std::string("accept: ") + strerror(errno);
    // Wait for the client's disconnect (blocking, on the id's own channel).
    rdma_cm_event *ev = nullptr;
    r = rdma_get_cm_event(id->channel, &ev);
    if (r) return std::string("get_cm_event: ") + strerror(errno);
    std::string what = rdma_event_str(ev->event);
    rdma_ack_cm_event(ev);
    rdma_disconnect(id);
    rdma_destroy_ep(id);
    return what;
  });

  hints = {};
  hints.ai_port_space = RDMA_PS_TCP;
  ASSERT_EQ(0, rdma_getaddrinfo("127.0.0.1", port.c_str(), &hints, &res));
  rdma_cm_id *id = nullptr;
  ASSERT_EQ(0, rdma_create_ep(&id, res, nullptr, &attr)) << strerror(errno);
  rdma_freeaddrinfo(res);
  ASSERT_NE(id->qp, nullptr);
  ASSERT_EQ(0, rdma_connect(id, nullptr)) << strerror(errno);
  EXPECT_EQ(id->qp->state, IBV_QPS_RTS);
  ASSERT_EQ(0, rdma_disconnect(id));
  ASSERT_EQ(server.wait_for(15s), std::future_status::ready);
  EXPECT_EQ(server.get(), "RDMA_CM_EVENT_DISCONNECTED");
  rdma_destroy_ep(id);
  rdma_destroy_ep(listen_id);
}

// An application that calls rdma_* on an id it already destroyed gets EINVAL, never a crash
// inside the library (perftest has done this in its error paths). The check does not read
// the freed id, so this also runs clean under AddressSanitizer.
TEST(RdmaCm, CallsOnADestroyedIdFailCleanly) {
  rdma_event_channel *ch = rdma_create_event_channel();
  ASSERT_NE(ch, nullptr);
  for (bool with_channel : {true, false}) {
    rdma_cm_id *id = nullptr;
    ASSERT_EQ(0, rdma_create_id(with_channel ? ch : nullptr, &id, nullptr, RDMA_PS_TCP));
    ASSERT_EQ(0, rdma_destroy_id(id));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(1);
    auto *sa = reinterpret_cast<sockaddr *>(&a);
    auto einval = [](int r) { return r == -1 && errno == EINVAL; };
    errno = 0;
    EXPECT_TRUE(einval(rdma_resolve_addr(id, nullptr, sa, 100)));
    EXPECT_TRUE(einval(rdma_bind_addr(id, sa)));
    EXPECT_TRUE(einval(rdma_resolve_route(id, 100)));
    EXPECT_TRUE(einval(rdma_listen(id, 1)));
    EXPECT_TRUE(einval(rdma_connect(id, nullptr)));
    EXPECT_TRUE(einval(rdma_accept(id, nullptr)));
    EXPECT_TRUE(einval(rdma_reject(id, nullptr, 0)));
    EXPECT_TRUE(einval(rdma_disconnect(id)));
    EXPECT_TRUE(einval(rdma_migrate_id(id, ch)));
    int one = 1;
    EXPECT_TRUE(einval(rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_REUSEADDR, &one, sizeof one)));
    ibv_qp_init_attr qa{};
    qa.qp_type = IBV_QPT_RC;
    EXPECT_TRUE(einval(rdma_create_qp(id, nullptr, &qa)));
    rdma_destroy_qp(id);  // no effect, no crash
    rdma_destroy_ep(id);
    EXPECT_TRUE(einval(rdma_destroy_id(id)));
  }
  rdma_destroy_event_channel(ch);
}

}  // namespace

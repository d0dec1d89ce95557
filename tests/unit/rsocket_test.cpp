// rsocket_test.cpp - rsockets edge cases: EAGAIN, end of stream, readiness of a listener,
// refused connects, unsupported socket types. Data transfer itself is checked by Debian's
// rstream/riostream in tests/system/test_rsockets.sh.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <rdma/rsocket.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <thread>

namespace {

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

// A listening rsocket on an ephemeral loopback port.
int listen_any(uint16_t *port) {
  int l = rsocket(AF_INET, SOCK_STREAM, 0);
  if (l < 0) return -1;
  sockaddr_in a = loopback(0);
  if (rbind(l, reinterpret_cast<sockaddr *>(&a), sizeof a) || rlisten(l, 4)) return -1;
  socklen_t n = sizeof a;
  if (rgetsockname(l, reinterpret_cast<sockaddr *>(&a), &n)) return -1;
  *port = ntohs(a.sin_port);
  return l;
}

// Connects a client to listener l; returns {client, accepted}.
std::pair<int, int> connect_pair(int l, uint16_t port) {
  int c = rsocket(AF_INET, SOCK_STREAM, 0);
  int rc = -1;
  std::thread t([&] {
    sockaddr_in a = loopback(port);
    rc = rconnect(c, reinterpret_cast<sockaddr *>(&a), sizeof a);
  });
  int s = raccept(l, nullptr, nullptr);
  t.join();
  EXPECT_EQ(0, rc) << strerror(errno);
  return {c, s};
}

// Receives until n bytes arrived, end of stream or an error; returns the bytes received.
size_t recv_exactly(int s, char *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = rrecv(s, buf + got, n - got, 0);
    if (r <= 0) break;
    got += size_t(r);
  }
  return got;
}

TEST(Rsocket, DatagramIsNotSupported) {
  errno = 0;
  EXPECT_EQ(-1, rsocket(AF_INET, SOCK_DGRAM, 0));
  EXPECT_EQ(EOPNOTSUPP, errno);
}

TEST(Rsocket, ListenerPollsReadableOnlyWithPendingConnection) {
  uint16_t port = 0;
  int l = listen_any(&port);
  ASSERT_GE(l, 0) << strerror(errno);
  pollfd p{l, POLLIN, 0};
  EXPECT_EQ(0, rpoll(&p, 1, 0));
  int c = rsocket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(0, rfcntl(c, F_SETFL, O_NONBLOCK));
  EXPECT_EQ(O_NONBLOCK, rfcntl(c, F_GETFL) & O_NONBLOCK);
  sockaddr_in a = loopback(port);
  int rc = rconnect(c, reinterpret_cast<sockaddr *>(&a), sizeof a);
  if (rc) EXPECT_EQ(EINPROGRESS, errno);
  p = {l, POLLIN, 0};
  ASSERT_EQ(1, rpoll(&p, 1, 20000));
  EXPECT_TRUE(p.revents & POLLIN);
  int s = raccept(l, nullptr, nullptr);
  ASSERT_GE(s, 0) << strerror(errno);
  // The connect in progress completes: writable, no error.
  pollfd q{c, POLLOUT, 0};
  ASSERT_EQ(1, rpoll(&q, 1, 20000));
  EXPECT_TRUE(q.revents & POLLOUT);
  int e = -1;
  socklen_t n = sizeof e;
  ASSERT_EQ(0, rgetsockopt(c, SOL_SOCKET, SO_ERROR, &e, &n));
  EXPECT_EQ(0, e);
  rclose(c);
  rclose(s);
  rclose(l);
}

TEST(Rsocket, NonblockingRecvWithoutDataIsEagainThenPeerCloseIsEof) {
  uint16_t port = 0;
  int l = listen_any(&port);
  ASSERT_GE(l, 0);
  auto [c, s] = connect_pair(l, port);
  ASSERT_GE(s, 0);
  char buf[64];
  errno = 0;
  EXPECT_EQ(-1, rrecv(s, buf, sizeof buf, MSG_DONTWAIT));
  EXPECT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK);
  const char msg[] = "hello rsocket";
  ASSERT_EQ(ssize_t(sizeof msg), rsend(c, msg, sizeof msg, 0));
  ASSERT_EQ(0, rclose(c));
  // Data sent before the close is delivered, then end of stream.
  ASSERT_EQ(sizeof msg, recv_exactly(s, buf, sizeof msg)) << strerror(errno);
  EXPECT_EQ(0, memcmp(buf, msg, sizeof msg));
  EXPECT_EQ(0, rrecv(s, buf, sizeof buf, 0));
  rclose(s);
  rclose(l);
}

// A sender facing a peer that does not read runs out of credits (EAGAIN, not an error);
// once the peer reads everything, all bytes arrived in order and sending resumes.
TEST(Rsocket, BackpressureIsEagainAndLosesNothing) {
  uint16_t port = 0;
  int l = listen_any(&port);
  ASSERT_GE(l, 0);
  auto [c, s] = connect_pair(l, port);
  ASSERT_GE(s, 0);
  static unsigned char out[50000], in[65536];
  size_t sent = 0;
  ssize_t r = 0;
  for (int i = 0; i < 10000; ++i) {  // bounded: the receive ring is far smaller
    for (size_t k = 0; k < sizeof out; ++k) out[k] = static_cast<unsigned char>((sent + k) * 13);
    r = rsend(c, out, sizeof out, MSG_DONTWAIT);
    if (r < 0) break;
    sent += size_t(r);
  }
  ASSERT_EQ(-1, r) << "sending never blocked";
  ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK) << strerror(errno);
  ASSERT_GT(sent, 0u);
  pollfd p{c, POLLOUT, 0};
  EXPECT_EQ(0, rpoll(&p, 1, 0));
  size_t got = 0;
  while (got < sent) {
    ssize_t n = rrecv(s, in, std::min(sizeof in, sent - got), 0);
    ASSERT_GT(n, 0) << strerror(errno);
    for (ssize_t k = 0; k < n; ++k)
      ASSERT_EQ(static_cast<unsigned char>((got + size_t(k)) * 13), in[k]) << "byte " << got + k;
    got += size_t(n);
  }
  p = {c, POLLOUT, 0};
  ASSERT_EQ(1, rpoll(&p, 1, 20000));
  EXPECT_TRUE(p.revents & POLLOUT);
  EXPECT_EQ(1, rsend(c, out, 1, MSG_DONTWAIT));
  rclose(c);
  rclose(s);
  rclose(l);
}

TEST(Rsocket, ConnectWithoutListenerIsRefused) {
  uint16_t port = 0;
  int l = listen_any(&port);  // take a free port, then release it
  ASSERT_GE(l, 0);
  rclose(l);
  int c = rsocket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = loopback(port);
  errno = 0;
  EXPECT_EQ(-1, rconnect(c, reinterpret_cast<sockaddr *>(&a), sizeof a));
  EXPECT_EQ(ECONNREFUSED, errno);
  rclose(c);
}

TEST(Rsocket, BadDescriptorsAndOptions) {
  char b;
  errno = 0;
  EXPECT_EQ(-1, rrecv(-5, &b, 1, 0));
  EXPECT_EQ(EBADF, errno);
  int s = rsocket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  EXPECT_EQ(0, rsetsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
  int v = 0;
  socklen_t n = sizeof v;
  EXPECT_EQ(0, rgetsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &n));
  EXPECT_EQ(1, v);
  EXPECT_EQ(-1, rsetsockopt(s, SOL_SOCKET, 0x7777, &one, sizeof one));
  EXPECT_EQ(ENOPROTOOPT, errno);
  EXPECT_EQ(-1, rsend(s, &b, 1, 0));
  EXPECT_EQ(ENOTCONN, errno);
  rclose(s);
}

}  // namespace

namespace {

sockaddr_in6 loopback6(uint16_t port) {
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  a.sin6_port = htons(port);
  return a;
}

// Accepts one connection on l while `c` connects to `to`; returns the accepted rsocket and
// fills `peer` with what raccept reports.
int accept_from(int l, int c, const sockaddr *to, socklen_t to_len, sockaddr_in6 *peer,
                socklen_t *peer_len) {
  int rc = -1;
  std::thread t([&] { rc = rconnect(c, to, to_len); });
  *peer_len = sizeof *peer;
  int s = raccept(l, reinterpret_cast<sockaddr *>(peer), peer_len);
  t.join();
  EXPECT_EQ(0, rc) << strerror(errno);
  return s;
}

}  // namespace

// AF_INET6 rsockets: over ::1 with IPv6 names, and an IPv6 wildcard listener that reports
// an IPv4 client as IPv4-mapped (as a kernel socket) unless IPV6_V6ONLY.
TEST(Rsocket, Ipv6StreamsAndDualStackListener) {
  int l = rsocket(AF_INET6, SOCK_STREAM, 0);
  ASSERT_GE(l, 0) << strerror(errno);
  sockaddr_in v4 = loopback(0);
  errno = 0;
  EXPECT_EQ(-1, rbind(l, reinterpret_cast<sockaddr *>(&v4), sizeof v4));
  EXPECT_EQ(EAFNOSUPPORT, errno) << "an AF_INET address on an AF_INET6 rsocket";
  sockaddr_in6 any = loopback6(0);
  any.sin6_addr = in6addr_any;
  ASSERT_EQ(0, rbind(l, reinterpret_cast<sockaddr *>(&any), sizeof any)) << strerror(errno);
  ASSERT_EQ(0, rlisten(l, 4));
  sockaddr_in6 name{};
  socklen_t n = sizeof name;
  ASSERT_EQ(0, rgetsockname(l, reinterpret_cast<sockaddr *>(&name), &n));
  ASSERT_EQ(n, sizeof(sockaddr_in6));
  ASSERT_EQ(name.sin6_family, AF_INET6);
  const uint16_t port = ntohs(name.sin6_port);
  ASSERT_NE(port, 0);

  // An IPv6 client over ::1: data both ways, IPv6 names on both ends.
  int c6 = rsocket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 to6 = loopback6(port);
  sockaddr_in6 peer{};
  socklen_t plen = 0;
  int s6 = accept_from(l, c6, reinterpret_cast<sockaddr *>(&to6), sizeof to6, &peer, &plen);
  ASSERT_GE(s6, 0) << strerror(errno);
  EXPECT_EQ(plen, sizeof(sockaddr_in6));
  EXPECT_EQ(peer.sin6_family, AF_INET6);
  EXPECT_TRUE(IN6_IS_ADDR_LOOPBACK(&peer.sin6_addr));
  const char msg[] = "over ::1";
  ASSERT_EQ(ssize_t(sizeof msg), rsend(c6, msg, sizeof msg, 0));
  char buf[64]{};
  ASSERT_EQ(sizeof msg, recv_exactly(s6, buf, sizeof msg)) << strerror(errno);
  EXPECT_EQ(0, memcmp(buf, msg, sizeof msg));
  n = sizeof name;
  ASSERT_EQ(0, rgetpeername(c6, reinterpret_cast<sockaddr *>(&name), &n));
  EXPECT_EQ(name.sin6_family, AF_INET6);
  EXPECT_EQ(ntohs(name.sin6_port), port);

  // An IPv4 client reaches the IPv6 wildcard listener and is reported IPv4-mapped.
  int c4 = rsocket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in to4 = loopback(port);
  int s4 = accept_from(l, c4, reinterpret_cast<sockaddr *>(&to4), sizeof to4, &peer, &plen);
  ASSERT_GE(s4, 0) << strerror(errno);
  EXPECT_EQ(plen, sizeof(sockaddr_in6));
  EXPECT_EQ(peer.sin6_family, AF_INET6);
  EXPECT_TRUE(IN6_IS_ADDR_V4MAPPED(&peer.sin6_addr));

  // IPV6_V6ONLY: an AF_INET6 option only, set before binding.
  int one = 1;
  errno = 0;
  EXPECT_EQ(-1, rsetsockopt(c4, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
  EXPECT_EQ(ENOPROTOOPT, errno);
  errno = 0;
  EXPECT_EQ(-1, rsetsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
  EXPECT_EQ(EINVAL, errno) << "already bound";
  int l6 = rsocket(AF_INET6, SOCK_STREAM, 0);
  ASSERT_EQ(0, rsetsockopt(l6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
  int v = 0;
  n = sizeof v;
  ASSERT_EQ(0, rgetsockopt(l6, IPPROTO_IPV6, IPV6_V6ONLY, &v, &n));
  EXPECT_EQ(1, v);
  for (int fd : {s4, c4, s6, c6, l, l6}) rclose(fd);
}

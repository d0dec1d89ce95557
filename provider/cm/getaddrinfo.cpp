// rdma_getaddrinfo / rdma_freeaddrinfo (rules below).
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "provider/cm/cm.hpp"
#include "provider/core/objects.hpp"
#include "provider/core/log.hpp"

namespace eca::cm {

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

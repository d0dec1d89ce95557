// Device enumeration: one device of the configured backend per interface that is up and has
// an IPv4 or IPv6 address, named "<backend prefix>_<interface>" the way siw names its devices
// ("siw_lo", "siw_eth0").
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>

#include "provider/core/backend.hpp"
#include "provider/core/log.hpp"
#include "provider/core/objects.hpp"

namespace eca {
namespace {

// Recognised by nobody: devices carry a non-null ops pointer so that other providers' checks
// (libefa, libmlx5: verbs_get_device(dev)->ops == &their_ops) fail cleanly.
const struct {
  const char *name;
} kDeviceOps = {"eca"};

uint32_t if_mtu(const char *ifname) {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 1500;
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
  uint32_t mtu = 1500;
  if (::ioctl(fd, SIOCGIFMTU, &ifr) == 0) mtu = (uint32_t)ifr.ifr_mtu;
  ::close(fd);
  return mtu;
}

bool zero_mac(const std::array<uint8_t, 6> &mac) {
  for (auto b : mac)
    if (b) return false;
  return true;
}

uint64_t make_guid(const std::array<uint8_t, 6> &mac, const in6_addr &ip) {
  uint8_t g[8];
  if (!zero_mac(mac)) {  // EUI-64 from the MAC
    g[0] = mac[0] ^ 0x02; g[1] = mac[1]; g[2] = mac[2]; g[3] = 0xff;
    g[4] = 0xfe; g[5] = mac[3]; g[6] = mac[4]; g[7] = mac[5];
  } else {  // no MAC (loopback): locally administered, from the low 4 address bytes
    std::memcpy(g + 4, ip.s6_addr + 12, 4);
    g[0] = 0x02; g[1] = 'E'; g[2] = 'C'; g[3] = 'A';
  }
  uint64_t v;
  std::memcpy(&v, g, 8);
  return v;  // byte order as on the wire = network order
}

bool is_loopback(const in6_addr &a) {
  return IN6_IS_ADDR_LOOPBACK(&a) || (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
}

// getifaddrs() walked over its IP addresses: f(entry, address) for each AF_INET/AF_INET6 one.
template <typename F>
void for_each_ip(ifaddrs *ifa, F &&f) {
  for (ifaddrs *p = ifa; p; p = p->ifa_next) {
    in6_addr a;
    uint32_t scope;
    if (p->ifa_addr && ip_of(p->ifa_addr, &a, &scope)) f(p, a);
  }
}

std::vector<Device *> enumerate() {
  std::vector<Device *> out;
  ifaddrs *ifa = nullptr;
  if (::getifaddrs(&ifa) != 0) {
    ECA_LOG(Error, "getifaddrs failed: %s", strerror(errno));
    return out;
  }
  std::map<std::string, std::array<uint8_t, 6>> macs;
  for (ifaddrs *p = ifa; p; p = p->ifa_next) {
    if (p->ifa_addr && p->ifa_addr->sa_family == AF_PACKET) {
      auto *ll = reinterpret_cast<sockaddr_ll *>(p->ifa_addr);
      std::array<uint8_t, 6> m{};
      if (ll->sll_halen == 6) std::memcpy(m.data(), ll->sll_addr, 6);
      macs[p->ifa_name] = m;
    }
  }
  Backend &be = backend(config().backend);
  for_each_ip(ifa, [&](ifaddrs *p, const in6_addr &addr) {
    if (!(p->ifa_flags & IFF_UP)) return;
    for (auto *d : out)  // one device per interface, with all its addresses
      if (d->ifname == p->ifa_name) {
        d->addrs.push_back(addr);
        return;
      }
    auto *d = new Device();
    std::memset(&d->vdev, 0, sizeof(d->vdev));
    d->ifname = p->ifa_name;
    d->ifindex = if_nametoindex(p->ifa_name);
    d->addrs.push_back(addr);
    d->loopback = (p->ifa_flags & IFF_LOOPBACK) != 0;
    if (auto it = macs.find(d->ifname); it != macs.end()) d->mac = it->second;
    d->netdev_mtu = if_mtu(p->ifa_name);
    d->guid = make_guid(d->mac, addr);
    d->backend = &be;
    ibv_device &dev = d->vdev.device;
    dev.node_type = IBV_NODE_RNIC;
    dev.transport_type = IBV_TRANSPORT_IWARP;
    std::snprintf(dev.name, sizeof(dev.name), "%s_%s", be.device_prefix(), p->ifa_name);
    std::snprintf(dev.dev_name, sizeof(dev.dev_name), "%s", dev.name);
    // No sysfs exists for these devices; the paths name where it would be and reads fail.
    std::snprintf(dev.dev_path, sizeof(dev.dev_path), "/sys/class/infiniband_verbs/%s", dev.name);
    std::snprintf(dev.ibdev_path, sizeof(dev.ibdev_path), "/sys/class/infiniband/%s", dev.name);
    d->vdev.ops = &kDeviceOps;
    d->vdev.refcount = 1;
    out.push_back(d);
    ECA_LOG(Info, "device %s on %s", dev.name, p->ifa_name);
  });
  ::freeifaddrs(ifa);
  return out;
}

}  // namespace

// GIDs do not address anything on iWARP (rdma_cm connects by IP address); siw reports one,
// the MAC zero-padded. Index 0 is that GID, so programs reading GID 0 see what they see on
// siw; the IP addresses follow as GIDs, the way RoCE lists them, so that the table names every
// address the device serves.
std::vector<ibv_gid> Device::gids() const {
  std::vector<ibv_gid> t;
  if (!zero_mac(mac)) {
    ibv_gid g{};
    std::memcpy(g.raw, mac.data(), 6);
    t.push_back(g);
  }
  for (const in6_addr &a : addrs) {
    ibv_gid g{};
    std::memcpy(g.raw, a.s6_addr, 16);
    t.push_back(g);
  }
  return t;
}

bool ip_of(const sockaddr *a, in6_addr *out, uint32_t *scope) {
  *scope = 0;
  if (a->sa_family == AF_INET) {
    sockaddr_in s;
    std::memcpy(&s, a, sizeof s);
    std::memset(out, 0, sizeof *out);
    out->s6_addr[10] = out->s6_addr[11] = 0xff;
    std::memcpy(out->s6_addr + 12, &s.sin_addr, 4);
    return true;
  }
  if (a->sa_family == AF_INET6) {
    sockaddr_in6 s;
    std::memcpy(&s, a, sizeof s);
    *out = s.sin6_addr;
    *scope = s.sin6_scope_id;
    return true;
  }
  return false;
}

const std::vector<Device *> &devices() {
  static const std::vector<Device *> list = enumerate();
  return list;
}

Device *device_for_ip(const in6_addr &addr, uint32_t scope) {
  const auto &list = devices();
  const bool link_local = IN6_IS_ADDR_LINKLOCAL(&addr);
  auto on = [&](const Device *d) { return !link_local || !scope || d->ifindex == scope; };
  for (auto *d : list)
    for (const in6_addr &a : d->addrs)
      if (IN6_ARE_ADDR_EQUAL(&a, &addr) && on(d)) return d;
  // Any 127/8 address (and ::1) is served by the loopback interface.
  if (is_loopback(addr))
    for (auto *d : list)
      if (d->loopback) return d;
  // An address added since enumeration: ask the kernel which interface holds it.
  ifaddrs *ifa = nullptr;
  Device *found = nullptr;
  if (::getifaddrs(&ifa) == 0) {
    for_each_ip(ifa, [&](ifaddrs *p, const in6_addr &a) {
      if (found || !IN6_ARE_ADDR_EQUAL(&a, &addr)) return;
      for (auto *d : list)
        if (d->ifname == p->ifa_name && on(d)) found = d;
    });
    ::freeifaddrs(ifa);
  }
  return found;
}

}  // namespace eca

namespace eca {
Backend &backend(BackendKind kind) {
  switch (kind) {
    case BackendKind::HwModel:
      return hwmodel_backend();
    case BackendKind::Software:
    default:
      return software_backend();
  }
}
}  // namespace eca

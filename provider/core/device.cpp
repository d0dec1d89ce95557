// Device enumeration: one device of the configured backend per IPv4 interface that is up,
// named "<backend prefix>_<interface>" the way siw names its devices ("siw_lo", "siw_eth0").
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

uint64_t make_guid(const std::array<uint8_t, 6> &mac, in_addr_t ip) {
  uint8_t g[8];
  bool zero_mac = true;
  for (auto b : mac) zero_mac = zero_mac && b == 0;
  if (!zero_mac) {  // EUI-64 from the MAC
    g[0] = mac[0] ^ 0x02; g[1] = mac[1]; g[2] = mac[2]; g[3] = 0xff;
    g[4] = 0xfe; g[5] = mac[3]; g[6] = mac[4]; g[7] = mac[5];
  } else {  // no MAC (loopback): locally administered, from the address
    std::memcpy(g + 4, &ip, 4);
    g[0] = 0x02; g[1] = 'E'; g[2] = 'C'; g[3] = 'A';
  }
  uint64_t v;
  std::memcpy(&v, g, 8);
  return v;  // byte order as on the wire = network order
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
  for (ifaddrs *p = ifa; p; p = p->ifa_next) {
    if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET) continue;
    if (!(p->ifa_flags & IFF_UP)) continue;
    bool dup = false;  // one device per interface, even with several addresses
    for (auto *d : out) dup = dup || d->ifname == p->ifa_name;
    if (dup) continue;
    auto *d = new Device();
    std::memset(&d->vdev, 0, sizeof(d->vdev));
    d->ifname = p->ifa_name;
    d->ifindex = if_nametoindex(p->ifa_name);
    d->ipv4 = reinterpret_cast<sockaddr_in *>(p->ifa_addr)->sin_addr.s_addr;
    d->loopback = (p->ifa_flags & IFF_LOOPBACK) != 0;
    if (auto it = macs.find(d->ifname); it != macs.end()) d->mac = it->second;
    d->netdev_mtu = if_mtu(p->ifa_name);
    d->guid = make_guid(d->mac, d->ipv4);
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
  }
  ::freeifaddrs(ifa);
  return out;
}

}  // namespace

ibv_gid Device::gid() const {
  ibv_gid g{};
  bool zero_mac = true;
  for (auto b : mac) zero_mac = zero_mac && b == 0;
  if (!zero_mac) {
    std::memcpy(g.raw, mac.data(), 6);  // iWARP GID: the MAC, zero padded (as siw)
  } else {
    g.raw[10] = 0xff; g.raw[11] = 0xff;  // IPv4-mapped address for interfaces without a MAC
    std::memcpy(g.raw + 12, &ipv4, 4);
  }
  return g;
}

const std::vector<Device *> &devices() {
  static const std::vector<Device *> list = enumerate();
  return list;
}

Device *device_for_ipv4(in_addr_t addr) {
  const auto &list = devices();
  for (auto *d : list)
    if (d->ipv4 == addr) return d;
  // Any 127/8 address is served by the loopback interface.
  if ((ntohl(addr) >> 24) == 127)
    for (auto *d : list)
      if (d->loopback) return d;
  // A secondary address of an interface: ask the kernel which interface holds it.
  ifaddrs *ifa = nullptr;
  Device *found = nullptr;
  if (::getifaddrs(&ifa) == 0) {
    for (ifaddrs *p = ifa; p && !found; p = p->ifa_next) {
      if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET) continue;
      if (reinterpret_cast<sockaddr_in *>(p->ifa_addr)->sin_addr.s_addr != addr) continue;
      for (auto *d : list)
        if (d->ifname == p->ifa_name) found = d;
    }
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

// The software backend: iWARP (MPA/DDP/RDMAP) over the host's TCP stack.
#include <cstdio>
#include <cstring>

#include "provider/core/backend.hpp"
#include "provider/core/log.hpp"
#include "provider/core/objects.hpp"
#include "transport/iwarp_conn.hpp"

namespace eca {
namespace {

constexpr uint32_t kPartSoftware = 1;  // vendor part id of the software iWARP device

class SoftwareBackend final : public Backend {
 public:
  BackendKind kind() const override { return BackendKind::Software; }
  const char *device_prefix() const override { return "ecasw"; }

  void device_attr(const Device &dev, ibv_device_attr *a) const override {
    base_device_attr(dev, a);
    std::snprintf(a->fw_ver, sizeof(a->fw_ver), "eca-sw 0.1");
    a->vendor_part_id = kPartSoftware;
    // RFC 7306 atomics run as CPU atomics on the target's memory (engine/atomic.hpp):
    // atomic against every other atomic on this host and against the CPU's own.
    a->atomic_cap = IBV_ATOMIC_GLOB;
  }

  void port_attr(const Device &dev, ibv_port_attr *p) const override {
    base_port_attr(dev, p);  // active MTU from the interface's MTU
    p->active_width = 2;     // 4X
    p->active_speed = 32;    // EDR: a software link has no fixed signalling rate
  }

  std::unique_ptr<QpEngine> attach(Qp &qp, LlpConnection &&llp) override {
    auto conn = std::make_shared<transport::IwarpConn>(qp, std::move(llp));
    ECA_QP_LOG(Info, qp.qpn, "connected: crc %d ird %u ord %u", (int)conn->crc_on(),
               conn->ird(), conn->ord());
    conn->start();
    return std::make_unique<transport::IwarpEngine>(std::move(conn));
  }
};

}  // namespace

Backend &software_backend() {
  static SoftwareBackend b;
  return b;
}

}  // namespace eca

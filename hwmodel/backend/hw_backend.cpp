// The modeled-hardware backend: devices "ecahw_<ifname>", an adapter per process
// (hwmodel/backend/adapter.*), connections in shared memory (hw_conn.*).
#include <cstdio>

#include "hwmodel/backend/adapter.hpp"
#include "hwmodel/backend/hw_conn.hpp"
#include "provider/core/backend.hpp"
#include "provider/core/log.hpp"
#include "provider/core/objects.hpp"

namespace eca {
namespace {

constexpr uint32_t kPartHwModel = 2;  // vendor part id of the modeled adapter

class HwModelBackend final : public Backend {
 public:
  BackendKind kind() const override { return BackendKind::HwModel; }
  const char *device_prefix() const override { return "ecahw"; }

  void device_attr(const Device &dev, ibv_device_attr *a) const override {
    // The verbs-visible limits are those of the shared verbs layer; the adapter adds its own:
    // at most hw::kMaxStags registered regions.
    base_device_attr(dev, a);
    std::snprintf(a->fw_ver, sizeof(a->fw_ver), "eca-hw 0.1 model");
    a->vendor_part_id = kPartHwModel;
    a->max_mr = hw::kMaxStags;
    a->max_mw = hw::kMaxStags;  // windows and MRs share the STag table
    // Atomics: executed by the target's adapter with CPU atomics on the target process's
    // memory (hw_atomic.cpp), so the same guarantee as the software transport.
    a->atomic_cap = IBV_ATOMIC_GLOB;
  }

  void port_attr(const Device &dev, ibv_port_attr *p) const override {
    base_port_attr(dev, p);
    p->active_mtu = IBV_MTU_1024;  // standard 1500-byte Ethernet frames
    p->active_width = 1;           // 1X
    p->active_speed = 1;           // SDR: the modeled link is gigabit Ethernet
  }

  std::unique_ptr<QpEngine> attach(Qp &qp, LlpConnection &&llp) override {
    auto conn = std::make_shared<hw::HwConn>(qp, std::move(llp));
    conn->start();
    return std::make_unique<hw::HwEngine>(std::move(conn));
  }

  int mr_registered(const Mr &mr) override {
    return hw::Adapter::instance().register_mr(mr.ibmr.rkey, mr.pd->ibpd.handle, mr.access,
                                               mr.iova, mr.addr, mr.length, mr.window_qpn);
  }
  void mr_deregistered(const Mr &mr) override {
    hw::Adapter::instance().unregister_mr(mr.ibmr.rkey);
  }
  void mr_invalidated(const Mr &mr) override {
    hw::Adapter::instance().invalidate_mr(mr.ibmr.rkey);
  }
};

}  // namespace

Backend &hwmodel_backend() {
  static HwModelBackend b;
  return b;
}

}  // namespace eca

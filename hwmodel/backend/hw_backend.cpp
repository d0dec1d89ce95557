// The modeled-hardware backend: devices "ecahw_<ifname>", an adapter per process
// (hwmodel/backend/adapter.*), connections in shared memory (hw_conn.*).

#include "hwmodel/backend/adapter.hpp"
#include "hwmodel/backend/hw_conn.hpp"
#include "provider/core/backend.hpp"
#include "provider/core/log.hpp"
#include "provider/core/objects.hpp"

namespace eca {
namespace {

// Atomics: executed by the target's adapter with CPU atomics on the target process's memory
// (hw_atomic.cpp), so the same guarantee as the software transport. Registered regions and
// windows share the adapter's STag table. The modeled link is gigabit Ethernet with standard
// 1500-byte frames: MTU 1024, 1X SDR.
const DeviceProfile kProfile{.kind = BackendKind::HwModel, .prefix = "ecahw",
                             .fw_ver = "eca-hw 0.1 model", .vendor_part_id = 2,
                             .atomic_cap = IBV_ATOMIC_GLOB, .max_mr = hw::kMaxStags,
                             .active_mtu = IBV_MTU_1024, .active_width = 1, .active_speed = 1};

class HwModelBackend final : public Backend {
 public:
  HwModelBackend() : Backend(kProfile) {}

  std::unique_ptr<QpEngine> attach(Qp &qp, LlpConnection &&llp) override {
    return hw::HwEngine::attach(qp, std::move(llp));
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

// The software backend: iWARP (MPA/DDP/RDMAP) over the host's TCP stack.
#include <cstring>

#include "provider/core/backend.hpp"
#include "provider/core/log.hpp"
#include "provider/core/objects.hpp"
#include "transport/iwarp_conn.hpp"

namespace eca {
namespace {

// Atomics (RFC 7306) run as CPU atomics on the target's memory (engine/atomic.hpp): atomic
// against every other atomic on this host and against the CPU's own. A software link has no
// fixed signalling rate; the port reports 4X EDR.
const DeviceProfile kProfile{.kind = BackendKind::Software, .prefix = "ecasw",
                             .fw_ver = "eca-sw 0.1", .vendor_part_id = 1,
                             .atomic_cap = IBV_ATOMIC_GLOB, .active_width = 2, .active_speed = 32};

class SoftwareBackend final : public Backend {
 public:
  SoftwareBackend() : Backend(kProfile) {}

  std::unique_ptr<QpEngine> attach(Qp &qp, LlpConnection &&llp) override {
    auto e = transport::IwarpEngine::attach(qp, std::move(llp));
    ECA_QP_LOG(Info, qp.qpn, "connected: crc %d ird %u ord %u", (int)e->conn()->crc_on(),
               e->conn()->ird(), e->conn()->ord());
    return e;
  }
};

}  // namespace

Backend &software_backend() {
  static SoftwareBackend b;
  return b;
}

}  // namespace eca

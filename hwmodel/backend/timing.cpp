#include "hwmodel/backend/timing.hpp"

#include <algorithm>
#include <mutex>
#include <string>
#include <unordered_map>

#include "hwmodel/model/host_model.hpp"
#include "provider/core/config.hpp"
#include "provider/core/log.hpp"

namespace eca::hw {
namespace {

// The calibrated host-to-host model (hwmodel/model) answers "how long does a message of N
// bytes take, and how long does it occupy the path": an event simulation per message size,
// so the answers are cached. Parameters: ECA_HWMODEL_PRESET and ECA_HWMODEL (docs/hwmodel.md).
struct ModelCache {
  std::mutex mu;
  hwmodel::Params params;
  bool ok = false;
  std::unordered_map<uint64_t, std::pair<uint64_t, uint64_t>> by_size;  // latency, occupancy

  ModelCache() {
    std::string err;
    ok = hwmodel::params_from_env(params, err);
    if (!ok) ECA_LOG(Error, "hwmodel parameters: %s (using the defaults)", err.c_str());
    if (!ok) {
      params = hwmodel::Params{};
      ok = true;
    }
  }

  std::pair<uint64_t, uint64_t> get(uint64_t bytes) {
    bytes = std::max<uint64_t>(bytes, 1);
    std::lock_guard lk(mu);
    if (auto it = by_size.find(bytes); it != by_size.end()) return it->second;
    const hwmodel::Mode mode = hwmodel::Mode::from(params);
    uint64_t lat, occ;
    {
      hwmodel::HostToHostModel m(params, mode);
      hwmodel::MessageDone d = m.send((int64_t)bytes);
      lat = (uint64_t)std::max<int64_t>(0, d.t_recv_done - d.t_submit);
    }
    {
      hwmodel::HostToHostModel m(params, mode);
      hwmodel::StreamResult r = m.stream((int64_t)bytes, 8);
      // steady-state period of one message at the modeled throughput
      occ = r.mbps > 0 ? (uint64_t)((double)bytes * 8.0 * 1e6 / r.mbps) : lat;
    }
    auto v = std::make_pair(lat, std::min(occ, lat));
    by_size.emplace(bytes, v);
    return v;
  }
};

ModelCache &cache() {
  static ModelCache *c = new ModelCache();
  return *c;
}

}  // namespace

Timing::Timing() : mode_(config().hwmodel_paced ? Mode::Paced : Mode::Fast) {}

void Timing::refresh(uint64_t bytes) const {
  if (bytes == last_bytes_) return;
  auto v = cache().get(bytes);
  last_bytes_ = bytes;
  last_ps_ = v.first;
  last_occ_ = v.second;
}

uint64_t Timing::message_ps(uint64_t bytes) const {
  refresh(bytes);
  return last_ps_;
}

uint64_t Timing::occupancy_ps(uint64_t bytes) const {
  refresh(bytes);
  return last_occ_;
}

}  // namespace eca::hw

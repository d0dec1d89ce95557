// Modeled time for the adapter's data path.
//
// Fast mode: operations complete as fast as the host allows; modeled time is only counted
// (Stats). Paced mode: an operation completes (and a frame becomes visible to the peer) no
// earlier than its modeled completion time, so benchmarks observe the modeled bandwidth and
// latency. Times are integer picoseconds.
#pragma once

#include <atomic>
#include <cstdint>

namespace eca::hw {

enum class Mode : uint8_t { Fast, Paced };

struct Stats {  // guarded by the connection's data-path lock
  uint64_t ops = 0;
  uint64_t bytes = 0;
  uint64_t modeled_ps = 0;  // sum of modeled message times
  // Transfers that took the adapter path (process_vm_readv/writev: memory that is not
  // private anonymous, or an MR's partial edge pages): the adapter's own system calls.
  uint64_t adapter_path_copies = 0;
};

class Timing {
 public:
  Timing();
  Mode mode() const { return mode_; }
  // Modeled time to move one message of `bytes` from host memory to the peer's host memory
  // (host->NIC DMA, firmware, Ethernet frames, NIC->host DMA, pipelined).
  uint64_t message_ps(uint64_t bytes) const;
  // Modeled time until the adapter can start the next message (the pipeline's bottleneck).
  uint64_t occupancy_ps(uint64_t bytes) const;

 private:
  Mode mode_ = Mode::Fast;
  // The last size asked for: benchmarks repeat one size, so the shared cache (a mutex and a
  // hash map) is skipped on the hot path. Used under the connection's lock only.
  mutable uint64_t last_bytes_ = UINT64_MAX, last_ps_ = 0, last_occ_ = 0;
  void refresh(uint64_t bytes) const;
};

}  // namespace eca::hw

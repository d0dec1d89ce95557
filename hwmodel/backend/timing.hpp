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

struct Stats {
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> modeled_ps{0};  // sum of modeled message times
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
};

}  // namespace eca::hw

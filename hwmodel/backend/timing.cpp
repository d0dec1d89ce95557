#include "hwmodel/backend/timing.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <strings.h>

#include "provider/core/log.hpp"

namespace eca::hw {
namespace {

// Store-and-forward pipeline of one message through the modeled path, per Ethernet frame:
//   host->NIC DMA (PCI) -> transmit firmware -> MAC/wire -> receive firmware -> NIC->host DMA
// Defaults: an Alteon Tigon class NIC on 33 MHz / 32-bit PCI with gigabit Ethernet.
struct PathParams {
  uint64_t frame_payload = 1460;      // ULP bytes per 1500-byte frame
  uint64_t frame_overhead = 78;       // Ethernet hdr 14 + FCS 4 + preamble 8 + IFG 12 + IP/TCP/MPA 40
  uint64_t line_ps_per_byte = 8000;   // 1 Gb/s
  uint64_t pci_ps_per_byte = 7576;    // 33 MHz x 4 bytes = 132 MB/s
  uint64_t pci_setup_ps = 1000000;    // arbitration + address phase + target latency per DMA
  uint64_t fw_frame_ps = 2000000;     // firmware work per frame, each direction
};

const PathParams &params() {
  static const PathParams p;
  return p;
}

struct Stage {
  uint64_t first;  // time for one frame through the stage
  uint64_t max;    // the slowest stage (the pipeline's period)
  uint64_t frames;
};

Stage stages(uint64_t bytes) {
  const PathParams &p = params();
  const uint64_t frames = std::max<uint64_t>(1, (bytes + p.frame_payload - 1) / p.frame_payload);
  const uint64_t per = std::min<uint64_t>(bytes, p.frame_payload);
  const uint64_t dma = p.pci_setup_ps + per * p.pci_ps_per_byte;
  const uint64_t wire = (per + p.frame_overhead) * p.line_ps_per_byte;
  const uint64_t fw = p.fw_frame_ps;
  return {dma + fw + wire + fw + dma, std::max({dma, wire, fw}), frames};
}

}  // namespace

Timing::Timing() {
  if (const char *m = std::getenv("ECA_HWMODEL_MODE")) {
    if (!strcasecmp(m, "paced"))
      mode_ = Mode::Paced;
    else if (strcasecmp(m, "fast"))
      ECA_LOG(Warn, "ECA_HWMODEL_MODE=%s unknown; using fast", m);
  }
}

uint64_t Timing::message_ps(uint64_t bytes) const {
  Stage s = stages(bytes);
  return s.first + (s.frames - 1) * s.max;
}

uint64_t Timing::occupancy_ps(uint64_t bytes) const {
  Stage s = stages(bytes);
  return s.frames * s.max;
}

}  // namespace eca::hw

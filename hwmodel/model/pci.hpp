// The host bus. A transaction of B bytes is cut into bursts of at most max_burst_bytes;
// each burst is one bus tenure costing (burst_setup + ceil(burst / width)) cycles, where
// burst_setup covers arbitration, the address phase, target initial latency and
// turnaround. Host->NIC transactions (memory reads) may add a per-transaction read latency.
//
// On a shared bus (PCI) both DMA engines of a NIC compete for the same tenures and the
// arbiter grants them burst by burst, round-robin. On split links (PCI Express) each
// direction has its own link and only requests of the same direction compete.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>

#include "hwmodel/model/params.hpp"
#include "hwmodel/model/sim.hpp"

namespace eca::hwmodel {

enum class Dir : uint8_t { HostToNic = 0, NicToHost = 1 };
inline const char *dir_name(Dir d) { return d == Dir::HostToNic ? "host->NIC" : "NIC->host"; }

struct PciTiming {
  ps_t cycle = 0;
  int64_t width = 4;
  int64_t burst_setup = 0;      // cycles per tenure besides data phases
  int64_t max_burst = 0;        // bytes per tenure (latency timer and hard cap applied)
  int64_t read_latency = 0;     // cycles, once per host->NIC transaction

  static PciTiming from(const Params &p);
  // Bus time of one burst of `bytes` (1 .. max_burst).
  ps_t burst_ps(int64_t bytes) const { return (burst_setup + ceil_div(bytes, width)) * cycle; }
  int64_t bursts(int64_t bytes) const { return ceil_div(bytes, max_burst); }
  // Uncontended bus time of one transaction.
  ps_t transfer_ps(int64_t bytes, Dir dir) const;
  // Sustained rate of long transfers in bytes per second (for reports).
  double peak_bytes_per_s() const;
};

class PciBus {
 public:
  static constexpr int kMaxRequesters = 4;

  PciBus(Sim &sim, const PciTiming &t, bool shared, std::string name);

  // Starts a transaction for `requester` (one outstanding per requester); `done` runs when
  // its last data phase ends.
  void transfer(int requester, Dir dir, int64_t bytes, std::function<void()> done);

  const PciTiming &timing() const { return t_; }
  const std::string &name() const { return name_; }
  bool shared() const { return shared_; }
  // Busy time of the bus (shared) or of one direction's link (split).
  ps_t busy_ps(Dir d) const;
  uint64_t transactions() const { return transactions_; }
  uint64_t bursts() const { return bursts_; }
  int64_t bytes() const { return bytes_; }

 private:
  struct Xfer {
    bool active = false;
    bool ready = false;  // read latency elapsed (split links)
    bool first = true;
    Dir dir = Dir::HostToNic;
    int64_t left = 0;
    std::function<void()> done;
  };
  struct Channel {
    bool busy = false;
    int next = 0;  // round-robin pointer
    BusyMeter meter;
  };
  int channel_of(Dir d) const { return shared_ ? 0 : static_cast<int>(d); }
  void arbitrate(int ch);

  Sim &sim_;
  PciTiming t_;
  bool shared_;
  std::string name_;
  std::array<Xfer, kMaxRequesters> req_{};
  std::array<Channel, 2> ch_{};
  uint64_t transactions_ = 0;
  uint64_t bursts_ = 0;
  int64_t bytes_ = 0;
};

}  // namespace eca::hwmodel

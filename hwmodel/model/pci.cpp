#include "hwmodel/model/pci.hpp"

#include <algorithm>
#include <cassert>

namespace eca::hwmodel {

PciTiming PciTiming::from(const Params &p) {
  PciTiming t;
  t.cycle = period_from_khz(p.pci_clock_khz);
  t.width = p.pci_width_bytes;
  t.burst_setup = p.pci_burst_setup_cycles;
  t.max_burst = p.pci_max_burst_bytes;
  if (p.pci_latency_timer_cycles > 0)
    t.max_burst = std::min(t.max_burst,
                           (p.pci_latency_timer_cycles - p.pci_burst_setup_cycles) * t.width);
  t.read_latency = p.pci_read_latency_cycles;
  assert(t.max_burst > 0);
  return t;
}

ps_t PciTiming::transfer_ps(int64_t bytes, Dir dir) const {
  assert(bytes > 0);
  const int64_t full = bytes / max_burst, rest = bytes % max_burst;
  ps_t t = full * burst_ps(max_burst) + (rest ? burst_ps(rest) : 0);
  if (dir == Dir::HostToNic) t += read_latency * cycle;
  return t;
}

double PciTiming::peak_bytes_per_s() const {
  return static_cast<double>(max_burst) * 1e12 / static_cast<double>(burst_ps(max_burst));
}

PciBus::PciBus(Sim &sim, const PciTiming &t, bool shared, std::string name)
    : sim_(sim), t_(t), shared_(shared), name_(std::move(name)) {}

void PciBus::transfer(int requester, Dir dir, int64_t bytes, std::function<void()> done) {
  assert(requester >= 0 && requester < kMaxRequesters);
  assert(bytes > 0);
  Xfer &x = req_[requester];
  assert(!x.active && "one outstanding transaction per requester");
  x = Xfer{true, true, true, dir, bytes, std::move(done)};
  ++transactions_;
  bytes_ += bytes;
  const int ch = channel_of(dir);
  if (dir == Dir::HostToNic && t_.read_latency > 0 && !shared_) {
    // A split link is free for others while the read request travels to memory and back.
    x.ready = false;
    sim_.after(t_.read_latency * t_.cycle, Prio::Issue, [this, requester, ch] {
      req_[requester].ready = true;
      arbitrate(ch);
    });
    return;
  }
  arbitrate(ch);
}

void PciBus::arbitrate(int ch) {
  Channel &c = ch_[ch];
  if (c.busy) return;
  for (int k = 0; k < kMaxRequesters; ++k) {
    const int r = (c.next + k) % kMaxRequesters;
    Xfer &x = req_[r];
    if (!x.active || !x.ready || channel_of(x.dir) != ch) continue;
    const int64_t b = std::min(x.left, t_.max_burst);
    ps_t cost = t_.burst_ps(b);
    if (x.first && x.dir == Dir::HostToNic && shared_) cost += t_.read_latency * t_.cycle;
    x.first = false;
    c.busy = true;
    c.next = (r + 1) % kMaxRequesters;
    c.meter.start(sim_.now());
    ++bursts_;
    sim_.after(cost, Prio::Complete, [this, ch, r, b] {
      Channel &cc = ch_[ch];
      Xfer &xx = req_[r];
      cc.busy = false;
      cc.meter.stop(sim_.now());
      xx.left -= b;
      if (xx.left == 0) {
        xx.active = false;
        auto done = std::move(xx.done);
        xx.done = nullptr;
        if (done) done();
      }
      arbitrate(ch);
    });
    return;
  }
}

ps_t PciBus::busy_ps(Dir d) const { return ch_[channel_of(d)].meter.total(sim_.now()); }

}  // namespace eca::hwmodel

#include "hwmodel/model/dma.hpp"

#include <cassert>

namespace eca::hwmodel {

DmaEngine::DmaEngine(Sim &sim, PciBus &bus, int requester, ps_t overhead, std::string name)
    : sim_(sim), bus_(bus), requester_(requester), overhead_(overhead), name_(std::move(name)) {}

void DmaEngine::submit(Dir dir, DmaKind kind, int64_t bytes, std::function<void()> done) {
  assert(bytes > 0);
  q_.push_back(Req{dir, kind, bytes, std::move(done)});
  if (!busy_) start_next();
}

void DmaEngine::start_next() {
  if (busy_ || q_.empty()) return;
  busy_ = true;
  meter_.start(sim_.now());
  Req r = std::move(q_.front());
  q_.pop_front();
  const size_t d = static_cast<size_t>(r.dir);
  ++c_.txns[d];
  c_.bytes[d] += r.bytes;
  ++c_.by_kind[static_cast<size_t>(r.kind)];
  auto on_bus_done = [this, done = std::move(r.done)] {
    busy_ = false;
    meter_.stop(sim_.now());
    if (done) done();
    start_next();
  };
  const Dir dir = r.dir;
  const int64_t bytes = r.bytes;
  sim_.after(overhead_, Prio::Issue, [this, dir, bytes, cb = std::move(on_bus_done)]() mutable {
    bus_.transfer(requester_, dir, bytes, std::move(cb));
  });
}

}  // namespace eca::hwmodel

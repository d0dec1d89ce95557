#include "hwmodel/model/dma.hpp"

#include <cassert>

namespace eca::hwmodel {

DmaEngine::DmaEngine(Sim &sim, PciBus &bus, int requester, ps_t overhead, std::string name)
    : FifoServer(sim), bus_(bus), requester_(requester), overhead_(overhead),
      name_(std::move(name)) {}

void DmaEngine::submit(Dir dir, DmaKind kind, int64_t bytes, std::function<void()> done) {
  assert(bytes > 0);
  enqueue(DmaReq{dir, kind, bytes}, std::move(done));
}

// A transaction: the fixed overhead, then its bus time on the shared PCI bus.
void DmaEngine::begin(const DmaReq &r, std::function<void()> end) {
  const size_t d = static_cast<size_t>(r.dir);
  ++c_.txns[d];
  c_.bytes[d] += r.bytes;
  ++c_.by_kind[static_cast<size_t>(r.kind)];
  sim_.after(overhead_, Prio::Issue, [this, dir = r.dir, bytes = r.bytes, end = std::move(end)]() mutable {
    bus_.transfer(requester_, dir, bytes, std::move(end));
  });
}

}  // namespace eca::hwmodel

// DMA engines. The Tigon has two independent engines, one moving host memory to NIC
// memory and one moving NIC memory to the host. Each serves its queue one transaction at a
// time: a fixed overhead (firmware programs the engine, the engine starts, completion is
// noticed) followed by the transaction's bus time on the PCI bus, which the two engines
// share. With dma_engines=1 a single engine serves both directions in turn.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "hwmodel/model/pci.hpp"

namespace eca::hwmodel {

enum class DmaKind : uint8_t { Data = 0, DescFetch, WriteBack, Test, kCount };
inline constexpr const char *kDmaKindNames[] = {"data", "desc-fetch", "write-back", "test"};
static_assert(std::size(kDmaKindNames) == static_cast<size_t>(DmaKind::kCount));

struct DmaReq {
  Dir dir;
  DmaKind kind;
  int64_t bytes;
};

class DmaEngine final : public FifoServer<DmaReq> {
 public:
  DmaEngine(Sim &sim, PciBus &bus, int requester, ps_t overhead, std::string name);

  // Queues a transaction; `done` runs when its last byte has crossed the bus.
  void submit(Dir dir, DmaKind kind, int64_t bytes, std::function<void()> done);

  const std::string &name() const { return name_; }

  struct Counters {
    uint64_t txns[2] = {0, 0};  // by Dir
    int64_t bytes[2] = {0, 0};
    uint64_t by_kind[static_cast<size_t>(DmaKind::kCount)] = {};
  };
  const Counters &counters() const { return c_; }

 private:
  void begin(const DmaReq &r, std::function<void()> end) override;

  PciBus &bus_;
  int requester_;
  ps_t overhead_;
  std::string name_;
  Counters c_;
};

}  // namespace eca::hwmodel

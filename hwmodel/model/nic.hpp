// One modeled NIC: two DMA engines on the host's PCI bus, two firmware processors, NIC
// memory for transmit and receive frames, and a MAC on an Ethernet segment.
//
// The device interface is narrow, as a driver sees it:
//   post_send / post_recv  put a descriptor in the host ring and ring the doorbell;
//   on_tx_complete / on_rx_complete  fire when the completion is visible in host memory.
// Test modes stand in for the dissertation's modified firmware: a frame generator (send
// frames made by the NIC itself), a sink (receive and drop), and a DMA loop.
//
// Descriptor life cycle (asserted transitions):
//   send:    Posted -> Fetched -> Processing -> OnWire -> WrittenBack
//   receive: Posted -> Fetched -> Processing -> Placed -> WrittenBack
// Posted: in the host ring; Fetched: copied to NIC memory by a descriptor-fetch DMA;
// Processing: firmware is moving its data; OnWire: its last frame has left the MAC;
// Placed: its last byte is in host memory; WrittenBack: its completion is visible to the
// host (a return-ring write-back DMA, or the in-chunk status of a coalesced chunk).
#pragma once
#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "hwmodel/model/dma.hpp"
#include "hwmodel/model/ethernet.hpp"
#include "hwmodel/model/firmware.hpp"
#include "hwmodel/model/mac.hpp"
#include "hwmodel/model/params.hpp"
#include "hwmodel/model/pci.hpp"

namespace eca::hwmodel {

enum class DescState : uint8_t { Posted, Fetched, Processing, OnWire, Placed, WrittenBack, kCount };
inline constexpr const char *kDescStateNames[] = {"posted",  "fetched", "processing",
                                                  "on-wire", "placed",  "written-back"};
static_assert(std::size(kDescStateNames) == static_cast<size_t>(DescState::kCount));
bool desc_transition_allowed(DescState from, DescState to);

// Descriptor flags (the "special flag in the message descriptor" of the dissertation).
enum DescFlags : uint32_t {
  kDescFragment = 1u << 0,  // send: the buffer is a chunk of frames to cut
  kDescCoalesce = 1u << 1,  // receive: gather several frames into this buffer
};

struct TxCompletion {
  uint64_t id = 0;
  int64_t payload = 0;
  int64_t frames = 0;
  ps_t t_posted = 0, t_on_wire = 0, t_done = 0;
};
struct RxCompletion {
  uint64_t id = 0;
  int64_t payload = 0;  // payload bytes placed (headers excluded)
  int64_t frames = 0;
  bool by_timer = false;  // a coalesced chunk flushed by the timer
  ps_t t_posted = 0, t_first_frame = 0, t_placed = 0, t_done = 0;
};

struct NicCounters {
  uint64_t tx_frames = 0, rx_frames = 0, sink_frames = 0, rx_dropped = 0;
  int64_t tx_payload = 0, rx_payload = 0;
  uint64_t desc_fetches = 0, write_backs = 0;
  uint64_t coalesce_full = 0, coalesce_timer = 0;
  uint64_t dma_txns[2] = {0, 0};  // by Dir
  int64_t dma_bytes[2] = {0, 0};
  ps_t dma_busy[2] = {0, 0};      // by engine (0 = host->NIC, 1 = NIC->host)
  ps_t cpu_busy[2] = {0, 0};
  ps_t mac_tx_busy = 0;
  ps_t bus_busy[2] = {0, 0};      // by direction (equal when the bus is shared)
};

class Nic {
 public:
  // `bus` is the host's PCI bus; requesters 2*slot and 2*slot+1 on it are this NIC's.
  Nic(Sim &sim, const Params &p, PciBus &bus, int slot, std::string name);
  Nic(const Nic &) = delete;
  Nic &operator=(const Nic &) = delete;

  Mac &mac() { return mac_; }
  const Params &params() const { return p_; }
  const FrameFormat &format() const { return fmt_; }

  // --- host (driver) interface
  // A send of `payload` bytes cut into frames of `frame_payload`. Without kDescFragment it
  // must fit one frame; with it the chunk (headers included) must fit frag_max_chunk.
  uint64_t post_send(int64_t payload, int64_t frame_payload, uint32_t flags);
  // A receive buffer of `capacity` bytes; kDescCoalesce gathers several frames into it.
  uint64_t post_recv(int64_t capacity, uint32_t flags);
  std::function<void(const TxCompletion &)> on_tx_complete;
  std::function<void(const RxCompletion &)> on_rx_complete;

  // --- test firmware (the dissertation's modified firmware)
  // Sends `frames` frames of `payload` made by the NIC itself.
  void generate(int64_t frames, int64_t payload);
  // Received frames are counted and dropped by the firmware (no DMA).
  void set_rx_sink(bool on) { sink_ = on; }
  std::function<void(const Frame &)> on_sink_frame;
  // Issues `count` DMAs of `bytes` in direction `d` back to back; `done(t_end)` at the end.
  void dma_loop(Dir d, int64_t bytes, int64_t count, std::function<void(ps_t)> done);

  NicCounters counters() const;
  DmaEngine &engine(Dir d) { return *eng_[engines_ == 1 ? 0 : static_cast<int>(d)]; }

 private:
  struct TxDesc {
    uint64_t id;
    int64_t payload, frame_payload;
    uint32_t flags;
    DescState st;
    int64_t frames, frames_left, host_bytes;
    ps_t t_posted, t_on_wire;
  };
  struct RxDesc {
    uint64_t id;
    int64_t capacity;
    uint32_t flags;
    DescState st;
    int64_t used, payload, frames;
    bool by_timer;
    ps_t t_posted, t_first_frame, t_placed;
    std::vector<int64_t> sram;  // NIC memory held by its frames until the DMA ends
  };
  struct WbItem {
    bool tx;
    uint64_t id;
  };
  static constexpr uint64_t kGeneratorTag = ~uint64_t{0};

  template <class D>
  static void advance(D &d, DescState to);
  TxDesc &tx(uint64_t id) { return tx_[id - tx_base_]; }
  RxDesc &rx(uint64_t id) { return rx_[id - rx_base_]; }
  Processor &tx_cpu() { return *cpu_[0]; }
  Processor &rx_cpu() { return *cpu_[cpus_ - 1]; }
  void submit(Dir d, DmaKind k, int64_t bytes, std::function<void()> done);

  // Where the NIC stands in fetching one host descriptor ring.
  struct DescFetch {
    uint64_t next = 1;  // first descriptor not yet fetched
    bool busy = false;  // a fetch DMA is under way
  };
  void fetch_descs(DescFetch &f, uint64_t posted, int64_t waiting,
                   std::function<void(uint64_t id)> fetched, void (Nic::*again)());
  void maybe_fetch_tx();
  void pump_tx_dma();
  void tx_frame_done(const Frame &f);
  void maybe_fetch_rx();
  bool rx_reserve(int64_t bytes);
  void rx_release(int64_t bytes);
  void rx_frame(const Frame &f);
  void pump_rx();
  void flush_coalesced(uint64_t id, bool by_timer);
  void pump_wb();
  void retire();
  void gen_next();

  Sim &sim_;
  Params p_;
  FrameFormat fmt_;
  PciBus &bus_;
  std::string name_;
  int engines_, cpus_;
  std::array<std::unique_ptr<DmaEngine>, 2> eng_;
  std::array<std::unique_ptr<Processor>, 2> cpu_;
  Mac mac_;

  // transmit
  std::deque<TxDesc> tx_;
  uint64_t tx_base_ = 1, tx_next_id_ = 1;
  DescFetch tx_fetch_;
  int64_t tx_fetched_waiting_ = 0;    // fetched, data DMA not yet issued
  std::deque<uint64_t> tx_dma_wait_;  // ready for their data DMA, waiting for NIC memory
  int64_t tx_buf_used_ = 0;
  // receive
  std::deque<RxDesc> rx_;
  uint64_t rx_base_ = 1, rx_next_id_ = 1;
  DescFetch rx_fetch_;
  std::deque<uint64_t> rx_avail_;     // fetched, not yet filled
  std::deque<Frame> rx_ready_;        // received, firmware done, waiting for a buffer
  uint64_t rx_open_ = 0;              // coalesced chunk being filled (0 = none)
  int64_t rx_buf_used_ = 0;
  bool sink_ = false;
  // write-back
  std::deque<WbItem> wb_;
  bool wb_busy_ = false;
  // generator
  int64_t gen_left_ = 0, gen_payload_ = 0, gen_queued_ = 0;

  NicCounters c_;
};

}  // namespace eca::hwmodel

// The driver-facing model: two hosts, each with its own PCI bus and NIC, joined by one
// Ethernet segment. A message of N bytes posted on host A is sent by NIC A and placed in
// host B's memory by NIC B; the model reports when the last byte is placed, when host B
// sees the completion, when host A gets its send completion, and how busy every component
// was. Messages can be submitted one at a time (latency) or as a stream (throughput), and
// the incremental interface (submit / run_until / take_done) lets a device backend advance
// modeled time in step with its own doorbells.
//
// Endpoints can be swapped for the dissertation's test firmware: the sender may be a frame
// generator (NIC-made frames, no host) and the receiver a sink (frames dropped on the NIC).
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "hwmodel/model/ethernet.hpp"
#include "hwmodel/model/nic.hpp"
#include "hwmodel/model/params.hpp"
#include "hwmodel/model/pci.hpp"
#include "hwmodel/model/sim.hpp"

namespace eca::hwmodel {

struct Mode {
  bool fragment = false;      // transmit fragmentation on host A
  bool coalesce = false;      // receive coalescing on host B
  int64_t frame_payload = 0;  // payload bytes per frame; 0 = std_payload
  int64_t chunk_frames = 0;   // frames per transmit chunk; 0 = as many as fit
  int64_t coal_frames = 0;    // frames per coalesced receive buffer; 0 = as many as fit
  enum class Source { Host, Generator } source = Source::Host;
  enum class Dest { Host, Sink } dest = Dest::Host;

  // frag, frag_frames, coal, coal_frames and std_payload of the parameter set.
  static Mode from(const Params &p);
};

// Busy time per component during some interval, in ps.
struct Busy {
  ps_t bus_a = 0, bus_b = 0;          // PCI bus of host A / B (sum of directions if split)
  ps_t dma_a[2] = {0, 0}, dma_b[2] = {0, 0};  // by engine: host->NIC, NIC->host
  ps_t cpu_a[2] = {0, 0}, cpu_b[2] = {0, 0};
  ps_t wire = 0;                      // A's MAC transmitting (frames, preamble, gaps)
  Busy operator-(const Busy &o) const;
};

struct MessageDone {
  uint64_t id = 0;
  int64_t bytes = 0;
  ps_t t_submit = 0;
  ps_t t_send_done = 0;   // host A sees its last send completion (-1: not yet / none)
  ps_t t_placed = 0;      // last byte in host B's memory (sink: last frame received)
  ps_t t_recv_done = 0;   // host B sees the completion covering the last byte
  int64_t frames = 0;
};

struct StreamResult {
  int64_t messages = 0, frames = 0;
  int64_t payload = 0;          // bytes delivered
  double mbps = 0;              // steady-state payload throughput (Mbit/s)
  ps_t t_first = 0, t_last = 0; // first and last delivery
  double mean_latency_us = 0;   // submit -> receive completion, mean over messages
  Busy busy;
  uint64_t dma_txns_a = 0, dma_txns_b = 0, dropped = 0, timer_flushes = 0;
};

class HostToHostModel {
 public:
  HostToHostModel(const Params &p, const Mode &m);
  HostToHostModel(const HostToHostModel &) = delete;
  HostToHostModel &operator=(const HostToHostModel &) = delete;

  // --- incremental interface
  // Posts a message of `bytes` on host A at the current modeled time; returns its id.
  uint64_t submit(int64_t bytes);
  void run_until(ps_t t) { sim_.run_until(t); }
  void run() { sim_.run(); }
  ps_t now() const { return sim_.now(); }
  // Messages fully delivered since the last call, in order.
  std::vector<MessageDone> take_done();

  // --- convenience
  // One message on the current (normally idle) system; runs until it is delivered.
  MessageDone send(int64_t bytes);
  // `count` messages of `bytes` posted at once; throughput measured in steady state between
  // deliveries that are a whole number of periods apart (see docs/hwmodel.md).
  StreamResult stream(int64_t bytes, int64_t count);

  Busy busy() const;
  const Mode &mode() const { return mode_; }
  const Params &params() const { return p_; }
  Sim &sim() { return sim_; }
  Nic &nic_a() { return *a_; }
  Nic &nic_b() { return *b_; }
  PciBus &bus_a() { return *bus_a_; }
  PciBus &bus_b() { return *bus_b_; }
  Link &link() { return *link_; }
  int64_t frame_payload() const { return frame_payload_; }
  int64_t chunk_frames() const { return chunk_frames_; }
  int64_t coal_frames() const { return coal_frames_; }
  // Frame delivery times at B (placement or sink arrival), one entry per frame.
  const std::vector<ps_t> &deliveries() const { return deliveries_; }

 private:
  struct Msg {
    uint64_t id = 0;
    int64_t bytes = 0, frames = 0;
    int64_t end = 0;         // cumulative payload offset after this message
    uint64_t last_desc = 0;  // its last send descriptor on NIC A
    bool sent = false, delivered = false;
    ps_t t_submit = 0, t_send_done = -1, t_placed = 0, t_recv_done = 0;
  };
  void post_rx();
  void on_delivered(int64_t payload, int64_t frames, ps_t t_placed, ps_t t_done);
  void on_send_done(uint64_t desc_id);
  void finish();

  Params p_;
  Mode mode_;
  Sim sim_;
  std::unique_ptr<PciBus> bus_a_, bus_b_;
  std::unique_ptr<Nic> a_, b_;
  std::unique_ptr<Link> link_;
  int64_t frame_payload_ = 0, chunk_frames_ = 0, coal_frames_ = 0, rx_capacity_ = 0;
  uint32_t rx_flags_ = 0;

  std::deque<Msg> msgs_;  // not yet fully delivered
  uint64_t next_msg_ = 1;
  int64_t submitted_ = 0, delivered_ = 0;
  std::vector<MessageDone> done_;
  std::vector<ps_t> deliveries_;
};

}  // namespace eca::hwmodel

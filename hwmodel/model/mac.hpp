// The Ethernet MAC. A frame of P payload bytes is header + P + FCS bytes on the medium
// (padded to the 64 B minimum), preceded by preamble + SFD and followed by the inter-frame
// gap; its "true size" (the dissertation's term) is all of these. Only header + payload
// cross the PCI bus: the MAC appends the FCS on transmit and strips it on receive.
#pragma once
#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>

#include "hwmodel/model/params.hpp"
#include "hwmodel/model/sim.hpp"

namespace eca::hwmodel {

struct FrameFormat {
  int64_t preamble = 8, ifg = 12, header = 14, fcs = 4, min_frame = 64, max_frame = 65536;
  int64_t rate_mbps = 1000;

  static FrameFormat from(const Params &p);
  int64_t frame_bytes(int64_t payload) const { return std::max(header + payload + fcs, min_frame); }
  int64_t wire_bytes(int64_t payload) const { return frame_bytes(payload) + preamble + ifg; }
  int64_t host_bytes(int64_t payload) const { return header + payload; }
  // Ethernet line efficiency: payload / true frame size.
  double efficiency(int64_t payload) const {
    return static_cast<double>(payload) / static_cast<double>(wire_bytes(payload));
  }
  // Best possible payload throughput in Mbit/s (efficiency x line rate).
  double max_mbps(int64_t payload) const { return efficiency(payload) * static_cast<double>(rate_mbps); }
  // Time the line is occupied by one frame, gap included.
  ps_t wire_ps(int64_t payload) const { return bytes_at_mbps(wire_bytes(payload), rate_mbps); }
};

// One frame in flight. `tag` names the descriptor (or generator) it belongs to.
struct Frame {
  int64_t payload = 0;
  uint64_t seq = 0;
  uint64_t tag = 0;
  ps_t t_tx_start = 0;  // first preamble bit on the wire
  ps_t t_rx_end = 0;    // last bit received
};

class Link;

class Mac {
 public:
  Mac(Sim &sim, const FrameFormat &f, std::string name);

  void attach(Link *link, int side) { link_ = link, side_ = side; }
  // Queues a frame for transmission.
  void enqueue(Frame f);
  size_t tx_queued() const { return q_.size() + (sending_ ? 1 : 0); }
  // The peer freed receive buffer space: try again to start a frame.
  void kick() { try_start(); }
  // This MAC's receive side freed buffer space: wake the sender facing it.
  void space_freed();

  // Last bit of the frame has left the MAC (its buffer may be released).
  std::function<void(const Frame &)> on_tx_done;
  // Flow control / admission: reserve room for a frame of `host_bytes` in the receiver.
  std::function<bool(int64_t host_bytes)> rx_admit;
  // A whole frame has been received (FCS checked and stripped).
  std::function<void(const Frame &)> on_rx;

  void deliver(const Frame &f) { ++rx_frames_, rx_payload_ += f.payload; if (on_rx) on_rx(f); }

  const FrameFormat &format() const { return fmt_; }
  uint64_t tx_frames() const { return tx_frames_; }
  uint64_t rx_frames() const { return rx_frames_; }
  int64_t tx_payload() const { return tx_payload_; }
  int64_t rx_payload() const { return rx_payload_; }
  ps_t busy_ps() const { return meter_.total(sim_.now()); }
  const std::string &name() const { return name_; }

 private:
  void try_start();

  Sim &sim_;
  FrameFormat fmt_;
  std::string name_;
  Link *link_ = nullptr;
  int side_ = 0;
  std::deque<Frame> q_;
  bool sending_ = false;  // preamble, frame or gap on the line
  uint64_t seq_ = 0;
  uint64_t tx_frames_ = 0, rx_frames_ = 0;
  int64_t tx_payload_ = 0, rx_payload_ = 0;
  BusyMeter meter_;
};

}  // namespace eca::hwmodel

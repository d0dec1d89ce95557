// An Ethernet segment: a full-duplex point-to-point link joining two MACs. Serialization
// happens in the sending MAC at line rate; the link adds the propagation delay and, with
// flow control on, lets a sender start a frame only when the receiver has room for it
// (an idealised 802.3x PAUSE: no frame is ever dropped for lack of buffer).
#pragma once
#include <array>

#include "hwmodel/model/mac.hpp"

namespace eca::hwmodel {

class Link {
 public:
  Link(Sim &sim, ps_t propagation, bool flow_control);
  void attach(Mac &a, Mac &b);

  // Asked by the MAC on `from_side` before it starts a frame.
  bool admit(int from_side, int64_t host_bytes);
  // The frame's last bit leaves `from_side` now; it arrives after the propagation delay.
  void carry(int from_side, Frame f);
  // The receiver on `rx_side` freed buffer space: wake the sender facing it.
  void space_freed(int rx_side);

  ps_t propagation() const { return prop_; }
  bool flow_control() const { return fc_; }
  uint64_t dropped() const { return dropped_; }

 private:
  Sim &sim_;
  ps_t prop_;
  bool fc_;
  std::array<Mac *, 2> mac_{nullptr, nullptr};
  uint64_t dropped_ = 0;
};

}  // namespace eca::hwmodel

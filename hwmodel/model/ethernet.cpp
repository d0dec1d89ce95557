#include "hwmodel/model/ethernet.hpp"

#include <cassert>

namespace eca::hwmodel {

Link::Link(Sim &sim, ps_t propagation, bool flow_control)
    : sim_(sim), prop_(propagation), fc_(flow_control) {}

void Link::attach(Mac &a, Mac &b) {
  mac_ = {&a, &b};
  a.attach(this, 0);
  b.attach(this, 1);
}

bool Link::admit(int from_side, int64_t host_bytes) {
  if (!fc_) return true;
  Mac *rx = mac_[1 - from_side];
  return !rx->rx_admit || rx->rx_admit(host_bytes);
}

void Link::carry(int from_side, Frame f) {
  Mac *rx = mac_[1 - from_side];
  sim_.after(prop_, Prio::Wire, [this, rx, f]() mutable {
    f.t_rx_end = sim_.now();
    if (!fc_ && rx->rx_admit && !rx->rx_admit(rx->format().host_bytes(f.payload))) {
      ++dropped_;
      return;
    }
    rx->deliver(f);
  });
}

void Link::space_freed(int rx_side) { mac_[1 - rx_side]->kick(); }

}  // namespace eca::hwmodel

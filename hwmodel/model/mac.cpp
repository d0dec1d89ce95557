#include "hwmodel/model/mac.hpp"

#include <cassert>

#include "hwmodel/model/ethernet.hpp"

namespace eca::hwmodel {

FrameFormat FrameFormat::from(const Params &p) {
  FrameFormat f;
  f.preamble = p.eth_preamble_bytes;
  f.ifg = p.eth_ifg_bytes;
  f.header = p.eth_header_bytes;
  f.fcs = p.eth_fcs_bytes;
  f.min_frame = p.eth_min_frame_bytes;
  f.max_frame = p.eth_max_frame_bytes;
  f.rate_mbps = p.mac_rate_mbps;
  return f;
}

Mac::Mac(Sim &sim, const FrameFormat &f, std::string name)
    : sim_(sim), fmt_(f), name_(std::move(name)) {}

void Mac::enqueue(Frame f) {
  assert(fmt_.frame_bytes(f.payload) <= fmt_.max_frame);
  q_.push_back(f);
  try_start();
}

void Mac::space_freed() {
  if (link_) link_->space_freed(side_);
}

void Mac::try_start() {
  if (sending_ || q_.empty() || !link_) return;
  Frame f = q_.front();
  if (!link_->admit(side_, fmt_.host_bytes(f.payload))) return;  // kicked when room appears
  q_.pop_front();
  sending_ = true;
  meter_.start(sim_.now());
  f.seq = seq_++;
  f.t_tx_start = sim_.now();
  const ps_t bits = bytes_at_mbps(fmt_.preamble + fmt_.frame_bytes(f.payload), fmt_.rate_mbps);
  const ps_t whole = fmt_.wire_ps(f.payload);  // rounded once, so frames tile exactly
  sim_.after(bits, Prio::Wire, [this, f] {
    ++tx_frames_;
    tx_payload_ += f.payload;
    link_->carry(side_, f);
    if (on_tx_done) on_tx_done(f);
  });
  sim_.after(whole, Prio::Complete, [this] {
    sending_ = false;
    meter_.stop(sim_.now());
    try_start();
  });
}

}  // namespace eca::hwmodel

#include "hwmodel/model/host_model.hpp"

#include <algorithm>
#include <cassert>
#include <numeric>

namespace eca::hwmodel {

Mode Mode::from(const Params &p) {
  Mode m;
  m.fragment = p.frag != 0;
  m.coalesce = p.coal != 0;
  m.frame_payload = p.std_payload;
  m.chunk_frames = p.frag_frames;
  m.coal_frames = p.coal_frames;
  return m;
}

Busy Busy::operator-(const Busy &o) const {
  Busy r = *this;
  r.bus_a -= o.bus_a;
  r.bus_b -= o.bus_b;
  for (int i = 0; i < 2; ++i) {
    r.dma_a[i] -= o.dma_a[i], r.dma_b[i] -= o.dma_b[i];
    r.cpu_a[i] -= o.cpu_a[i], r.cpu_b[i] -= o.cpu_b[i];
  }
  r.wire -= o.wire;
  return r;
}

HostToHostModel::HostToHostModel(const Params &p, const Mode &m) : p_(p), mode_(m) {
  const FrameFormat fmt = FrameFormat::from(p);
  frame_payload_ = m.frame_payload > 0 ? m.frame_payload : p.std_payload;
  const int64_t fit_tx = std::max<int64_t>(1, max_frames_per_chunk(fmt, p.frag_max_chunk, frame_payload_));
  chunk_frames_ = m.chunk_frames > 0 ? std::min(m.chunk_frames, fit_tx) : fit_tx;
  const int64_t fit_rx = std::max<int64_t>(
      1, max_frames_per_coalesce(fmt, p.coal_max_chunk, p.coal_hdr_bytes, frame_payload_));
  coal_frames_ = m.coal_frames > 0 ? std::min(m.coal_frames, fit_rx) : fit_rx;
  if (m.coalesce) {
    rx_capacity_ = coal_frames_ * coalesced_slot(fmt, p.coal_hdr_bytes, frame_payload_);
    rx_flags_ = kDescCoalesce;
  } else {
    rx_capacity_ = fmt.host_bytes(frame_payload_);
  }

  const PciTiming t = PciTiming::from(p);
  bus_a_ = std::make_unique<PciBus>(sim_, t, p.pci_shared != 0, "hostA.pci");
  bus_b_ = std::make_unique<PciBus>(sim_, t, p.pci_shared != 0, "hostB.pci");
  a_ = std::make_unique<Nic>(sim_, p, *bus_a_, 0, "nicA");
  b_ = std::make_unique<Nic>(sim_, p, *bus_b_, 0, "nicB");
  link_ = std::make_unique<Link>(sim_, from_ns(p.link_prop_ns), p.flow_control != 0);
  link_->attach(a_->mac(), b_->mac());

  a_->on_tx_complete = [this](const TxCompletion &c) { on_send_done(c.id); };
  if (m.dest == Mode::Dest::Sink) {
    b_->set_rx_sink(true);
    b_->on_sink_frame = [this](const Frame &f) { on_delivered(f.payload, 1, f.t_rx_end, f.t_rx_end); };
  } else {
    b_->on_rx_complete = [this](const RxCompletion &c) {
      on_delivered(c.payload, c.frames, c.t_placed, c.t_done);
      post_rx();  // the driver returns the buffer to the ring at once
    };
    for (int64_t i = 0; i < p.rx_ring; ++i) post_rx();
  }
}

void HostToHostModel::post_rx() {
  [[maybe_unused]] const uint64_t id = b_->post_recv(rx_capacity_, rx_flags_);
  assert(id != 0);
}

uint64_t HostToHostModel::submit(int64_t bytes) {
  assert(bytes > 0);
  Msg m;
  m.id = next_msg_++;
  m.t_submit = sim_.now();
  m.frames = ceil_div(bytes, frame_payload_);
  if (mode_.source == Mode::Source::Generator) {
    bytes = m.frames * frame_payload_;  // the generator makes whole frames only
    a_->generate(m.frames, frame_payload_);
    m.sent = true;
  } else {
    const int64_t step = mode_.fragment ? chunk_frames_ * frame_payload_ : frame_payload_;
    const uint32_t flags = mode_.fragment ? uint32_t{kDescFragment} : 0u;
    for (int64_t off = 0; off < bytes; off += step) {
      m.last_desc = a_->post_send(std::min(step, bytes - off), frame_payload_, flags);
      assert(m.last_desc != 0);
    }
  }
  m.bytes = bytes;
  submitted_ += bytes;
  m.end = submitted_;
  msgs_.push_back(m);
  return m.id;
}

void HostToHostModel::on_send_done(uint64_t desc_id) {
  for (Msg &m : msgs_) {
    if (m.sent) continue;
    if (m.last_desc == desc_id) {
      m.sent = true;
      m.t_send_done = sim_.now();
    }
    break;  // completions arrive in order: only the oldest unsent message can match
  }
  finish();
}

void HostToHostModel::on_delivered(int64_t payload, int64_t frames, ps_t t_placed, ps_t t_done) {
  delivered_ += payload;
  for (int64_t i = 0; i < frames; ++i) deliveries_.push_back(t_placed);
  for (Msg &m : msgs_) {
    if (m.delivered) continue;
    if (m.end > delivered_) break;
    m.delivered = true;
    m.t_placed = t_placed;
    m.t_recv_done = t_done;
  }
  finish();
}

void HostToHostModel::finish() {
  while (!msgs_.empty() && msgs_.front().sent && msgs_.front().delivered) {
    const Msg &m = msgs_.front();
    done_.push_back(MessageDone{m.id, m.bytes, m.t_submit, m.t_send_done, m.t_placed,
                                m.t_recv_done, m.frames});
    msgs_.pop_front();
  }
}

std::vector<MessageDone> HostToHostModel::take_done() {
  std::vector<MessageDone> v;
  v.swap(done_);
  return v;
}

MessageDone HostToHostModel::send(int64_t bytes) {
  const uint64_t id = submit(bytes);
  const size_t seen = done_.size();
  while (sim_.step()) {
    for (size_t i = seen; i < done_.size(); ++i)
      if (done_[i].id == id) return done_[i];
  }
  assert(!"message was never delivered");
  return MessageDone{};
}

Busy HostToHostModel::busy() const {
  Busy b;
  const NicCounters ca = a_->counters(), cb = b_->counters();
  auto bus = [](const NicCounters &c, const PciBus &pb) {
    return pb.shared() ? c.bus_busy[0] : c.bus_busy[0] + c.bus_busy[1];
  };
  b.bus_a = bus(ca, *bus_a_);
  b.bus_b = bus(cb, *bus_b_);
  for (int i = 0; i < 2; ++i) {
    b.dma_a[i] = ca.dma_busy[i], b.dma_b[i] = cb.dma_busy[i];
    b.cpu_a[i] = ca.cpu_busy[i], b.cpu_b[i] = cb.cpu_busy[i];
  }
  b.wire = ca.mac_tx_busy;
  return b;
}

StreamResult HostToHostModel::stream(int64_t bytes, int64_t count) {
  StreamResult r;
  const Busy b0 = busy();
  const size_t d0 = deliveries_.size();
  const uint64_t txn_a0 = a_->counters().dma_txns[0] + a_->counters().dma_txns[1];
  const uint64_t txn_b0 = b_->counters().dma_txns[0] + b_->counters().dma_txns[1];
  const uint64_t drop0 = link_->dropped(), timer0 = b_->counters().coalesce_timer;
  const int64_t del0 = delivered_;
  for (int64_t i = 0; i < count; ++i) submit(bytes);
  sim_.run();
  std::vector<MessageDone> done = take_done();

  r.messages = static_cast<int64_t>(done.size());
  r.payload = delivered_ - del0;
  r.frames = static_cast<int64_t>(deliveries_.size() - d0);
  r.busy = busy() - b0;
  r.dma_txns_a = a_->counters().dma_txns[0] + a_->counters().dma_txns[1] - txn_a0;
  r.dma_txns_b = b_->counters().dma_txns[0] + b_->counters().dma_txns[1] - txn_b0;
  r.dropped = link_->dropped() - drop0;
  r.timer_flushes = b_->counters().coalesce_timer - timer0;
  double lat = 0;
  for (const MessageDone &m : done) lat += to_us(m.t_recv_done - m.t_submit);
  r.mean_latency_us = done.empty() ? 0 : lat / static_cast<double>(done.size());
  if (r.frames == 0) return r;
  r.t_first = deliveries_[d0];
  r.t_last = deliveries_.back();

  // Steady state: the pattern of deliveries repeats every P frames, P the least common
  // multiple of frames per transmit chunk, per coalesced buffer and per message. Skip about
  // a quarter of the run as warm-up, then compare the mean delivery time of two blocks of
  // whole periods (at least 32 frames each), k blocks apart: exact for a periodic pattern,
  // and averaging smooths the jitter of batched write-backs and descriptor fetches.
  const int64_t per_msg = ceil_div(bytes, frame_payload_);
  int64_t period = 1;
  if (mode_.source == Mode::Source::Host && mode_.fragment) period = std::lcm(period, chunk_frames_);
  if (mode_.dest == Mode::Dest::Host && mode_.coalesce) period = std::lcm(period, coal_frames_);
  if (mode_.source == Mode::Source::Host && mode_.fragment && bytes % (chunk_frames_ * frame_payload_))
    period = std::lcm(period, per_msg);
  const int64_t block = period * ceil_div(32, period);
  const int64_t start = block * std::max<int64_t>(1, r.frames / block / 4);
  const int64_t k = (r.frames - start) / block - 1;
  if (k >= 1 && bytes % frame_payload_ == 0) {
    auto mean = [&](int64_t from) {
      __int128 sum = 0;
      for (int64_t i = from; i < from + block; ++i) sum += deliveries_[d0 + static_cast<size_t>(i)];
      return static_cast<double>(sum) / static_cast<double>(block);
    };
    const double dt = mean(start + k * block) - mean(start);
    r.mbps = dt > 0 ? static_cast<double>(k * block * frame_payload_) * 8.0 * 1e6 / dt : 0;
  } else {
    r.mbps = mbit_per_s(r.payload, r.t_last - r.t_first);
  }
  return r;
}

}  // namespace eca::hwmodel

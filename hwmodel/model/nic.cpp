#include "hwmodel/model/nic.hpp"

#include <algorithm>
#include <cassert>
#include <cstdio>
#include <cstdlib>

namespace eca::hwmodel {
namespace {

using S = DescState;
constexpr size_t kStates = static_cast<size_t>(S::kCount);

// kAllowed[from][to]: the only legal moves of a descriptor.
constexpr auto kAllowed = [] {
  std::array<std::array<bool, kStates>, kStates> a{};
  auto allow = [&](S f, S t) { a[static_cast<size_t>(f)][static_cast<size_t>(t)] = true; };
  allow(S::Posted, S::Fetched);
  allow(S::Fetched, S::Processing);
  allow(S::Processing, S::OnWire);       // send: last frame left the MAC
  allow(S::Processing, S::Placed);       // receive: last byte in host memory
  allow(S::OnWire, S::WrittenBack);
  allow(S::Placed, S::WrittenBack);
  return a;
}();

}  // namespace

bool desc_transition_allowed(DescState from, DescState to) {
  return kAllowed[static_cast<size_t>(from)][static_cast<size_t>(to)];
}

template <class D>
void Nic::advance(D &d, DescState to) {
  // Checked in every build type: a bad transition means the model itself is wrong.
  if (!desc_transition_allowed(d.st, to)) {
    std::fprintf(stderr, "hwmodel: descriptor %llu: illegal transition %s -> %s\n",
                 static_cast<unsigned long long>(d.id), kDescStateNames[static_cast<size_t>(d.st)],
                 kDescStateNames[static_cast<size_t>(to)]);
    std::abort();
  }
  d.st = to;
}

Nic::Nic(Sim &sim, const Params &p, PciBus &bus, int slot, std::string name)
    : sim_(sim),
      p_(p),
      fmt_(FrameFormat::from(p)),
      bus_(bus),
      name_(std::move(name)),
      engines_(static_cast<int>(p.dma_engines)),
      cpus_(static_cast<int>(p.fw_cpus)),
      mac_(sim, fmt_, name_ + ".mac") {
  const ps_t ovh = from_ns(p.dma_overhead_ns);
  eng_[0] = std::make_unique<DmaEngine>(sim, bus, 2 * slot, ovh,
                                        name_ + (engines_ == 1 ? ".dma" : ".dma-h2n"));
  if (engines_ == 2)
    eng_[1] = std::make_unique<DmaEngine>(sim, bus, 2 * slot + 1, ovh, name_ + ".dma-n2h");
  const ps_t cyc = period_from_mhz(p.fw_clock_mhz);
  for (int i = 0; i < cpus_; ++i)
    cpu_[i] = std::make_unique<Processor>(sim, cyc, name_ + ".cpu" + std::to_string(i));
  mac_.on_tx_done = [this](const Frame &f) { tx_frame_done(f); };
  mac_.rx_admit = [this](int64_t b) { return rx_reserve(b); };
  mac_.on_rx = [this](const Frame &f) { rx_frame(f); };
}

void Nic::submit(Dir d, DmaKind k, int64_t bytes, std::function<void()> done) {
  engine(d).submit(d, k, bytes, [this, done = std::move(done)] {
    if (done) done();
    pump_wb();  // the NIC->host engine may have gone idle: flush pending completions
  });
}

// ---------------------------------------------------------------- transmit

uint64_t Nic::post_send(int64_t payload, int64_t frame_payload, uint32_t flags) {
  if (payload <= 0 || frame_payload <= 0 || fmt_.frame_bytes(frame_payload) > fmt_.max_frame)
    return 0;
  const ChunkPlan c = plan_chunk(fmt_, payload, frame_payload);
  if (!(flags & kDescFragment) && c.frames != 1) return 0;
  if ((flags & kDescFragment) && c.host_bytes > p_.frag_max_chunk) return 0;
  const uint64_t id = tx_next_id_++;
  tx_.push_back(TxDesc{id, payload, frame_payload, flags, S::Posted, c.frames, c.frames,
                       c.host_bytes, sim_.now(), 0});
  sim_.after(from_ns(p_.doorbell_ns), Prio::Host, [this] { maybe_fetch_tx(); });
  return id;
}

// Starts one descriptor-fetch DMA on a ring (descriptors [f.next, posted)) unless one is under
// way, none is unfetched, or more than half a batch (desc_fetch_batch) still waits on the NIC.
// When the DMA completes, `fetched` runs for each descriptor in order, then `again` looks for
// the next batch.
void Nic::fetch_descs(DescFetch &f, uint64_t posted, int64_t waiting,
                      std::function<void(uint64_t id)> fetched, void (Nic::*again)()) {
  if (f.busy) return;
  const int64_t unfetched = static_cast<int64_t>(posted - f.next);
  if (unfetched <= 0 || waiting > p_.desc_fetch_batch / 2) return;
  const int64_t n = std::min(unfetched, p_.desc_fetch_batch);
  const uint64_t first = f.next;
  f.next += n;
  f.busy = true;
  ++c_.desc_fetches;
  submit(Dir::HostToNic, DmaKind::DescFetch, n * p_.desc_bytes,
         [this, &f, first, n, fetched = std::move(fetched), again] {
           f.busy = false;
           for (uint64_t id = first; id < first + n; ++id) fetched(id);
           (this->*again)();
         });
}

void Nic::maybe_fetch_tx() {
  fetch_descs(tx_fetch_, tx_next_id_, tx_fetched_waiting_, [this](uint64_t id) {
    advance(tx(id), S::Fetched);
    ++tx_fetched_waiting_;
    tx_cpu().run(p_.fw_desc_cycles, [this, id] {
      advance(tx(id), S::Processing);
      tx_dma_wait_.push_back(id);
      pump_tx_dma();
    });
  }, &Nic::maybe_fetch_tx);
}

void Nic::pump_tx_dma() {
  while (!tx_dma_wait_.empty()) {
    const uint64_t id = tx_dma_wait_.front();
    const TxDesc &d = tx(id);
    if (tx_buf_used_ > 0 && tx_buf_used_ + d.host_bytes > p_.tx_buf_bytes) break;
    tx_buf_used_ += d.host_bytes;
    tx_dma_wait_.pop_front();
    --tx_fetched_waiting_;
    submit(Dir::HostToNic, DmaKind::Data, d.host_bytes, [this, id] {
      // The whole buffer (one frame, or a chunk of frames) is in NIC memory: the firmware
      // hands its frames to the MAC one by one.
      const TxDesc &t = tx(id);
      for (int64_t k = 0; k < t.frames; ++k) {
        const int64_t pl = k + 1 < t.frames ? t.frame_payload
                                            : t.payload - (t.frames - 1) * t.frame_payload;
        tx_cpu().run(p_.fw_tx_frame_cycles, [this, id, pl] {
          Frame f;
          f.payload = pl;
          f.tag = id;
          mac_.enqueue(f);
        });
      }
    });
    maybe_fetch_tx();
  }
}

void Nic::tx_frame_done(const Frame &f) {
  ++c_.tx_frames;
  c_.tx_payload += f.payload;
  if (f.tag == kGeneratorTag) {
    --gen_queued_;
    gen_next();
    return;
  }
  TxDesc &d = tx(f.tag);
  tx_buf_used_ -= fmt_.host_bytes(f.payload);
  if (--d.frames_left == 0) {
    advance(d, S::OnWire);
    d.t_on_wire = sim_.now();
    wb_.push_back(WbItem{true, d.id});
    pump_wb();
  }
  pump_tx_dma();
}

// ---------------------------------------------------------------- receive

uint64_t Nic::post_recv(int64_t capacity, uint32_t flags) {
  if (capacity < fmt_.host_bytes(1) + ((flags & kDescCoalesce) ? p_.coal_hdr_bytes : 0))
    return 0;
  const uint64_t id = rx_next_id_++;
  RxDesc d{};
  d.id = id;
  d.capacity = capacity;
  d.flags = flags;
  d.st = S::Posted;
  d.t_posted = sim_.now();
  rx_.push_back(std::move(d));
  sim_.after(from_ns(p_.doorbell_ns), Prio::Host, [this] { maybe_fetch_rx(); });
  return id;
}

void Nic::maybe_fetch_rx() {
  fetch_descs(rx_fetch_, rx_next_id_, static_cast<int64_t>(rx_avail_.size()), [this](uint64_t id) {
    advance(rx(id), S::Fetched);
    rx_cpu().run(p_.fw_desc_cycles, [this, id] {
      rx_avail_.push_back(id);
      pump_rx();
    });
  }, &Nic::maybe_fetch_rx);
}

bool Nic::rx_reserve(int64_t bytes) {
  if (rx_buf_used_ > 0 && rx_buf_used_ + bytes > p_.rx_buf_bytes) return false;
  rx_buf_used_ += bytes;
  return true;
}

void Nic::rx_release(int64_t bytes) {
  rx_buf_used_ -= bytes;
  assert(rx_buf_used_ >= 0);
  mac_.space_freed();
}

void Nic::rx_frame(const Frame &f) {
  ++c_.rx_frames;
  c_.rx_payload += f.payload;
  rx_cpu().run(p_.fw_rx_frame_cycles, [this, f] {
    if (sink_) {
      ++c_.sink_frames;
      rx_release(fmt_.host_bytes(f.payload));
      if (on_sink_frame) on_sink_frame(f);
      return;
    }
    rx_ready_.push_back(f);
    pump_rx();
  });
}

void Nic::pump_rx() {
  while (!rx_ready_.empty()) {
    const Frame f = rx_ready_.front();
    const int64_t hb = fmt_.host_bytes(f.payload);
    if (rx_open_ != 0) {  // a coalesced chunk is being filled
      RxDesc &d = rx(rx_open_);
      const int64_t slot = coalesced_slot(fmt_, p_.coal_hdr_bytes, f.payload);
      const bool room = d.used + slot <= d.capacity &&
                        (p_.coal_frames == 0 || d.frames < p_.coal_frames);
      if (!room) {  // cannot take this frame: send what we have, open the next buffer
        flush_coalesced(rx_open_, false);
        continue;
      }
      d.used += slot;
      d.payload += f.payload;
      ++d.frames;
      d.sram.push_back(hb);
      rx_ready_.pop_front();
      const bool full = d.used + slot > d.capacity ||
                        (p_.coal_frames != 0 && d.frames >= p_.coal_frames);
      if (full) flush_coalesced(rx_open_, false);
      continue;
    }
    if (rx_avail_.empty()) {  // no host buffer yet: the frame waits in NIC memory
      maybe_fetch_rx();
      return;
    }
    const uint64_t id = rx_avail_.front();
    rx_avail_.pop_front();
    maybe_fetch_rx();
    RxDesc &d = rx(id);
    advance(d, S::Processing);
    d.t_first_frame = f.t_rx_end;
    if (d.flags & kDescCoalesce) {
      rx_open_ = id;
      sim_.after(from_us(p_.coal_timer_us), Prio::Timer, [this, id] {
        if (rx_open_ == id) flush_coalesced(id, true);
      });
      continue;  // the loop appends the frame
    }
    // Standard firmware: one frame, one buffer, one DMA of the frame's size.
    rx_ready_.pop_front();
    d.used = std::min(hb, d.capacity);  // a too-small buffer truncates
    d.payload = f.payload;
    d.frames = 1;
    submit(Dir::NicToHost, DmaKind::Data, d.used, [this, id, hb] {
      rx_release(hb);
      RxDesc &r = rx(id);
      r.t_placed = sim_.now();
      advance(r, S::Placed);
      wb_.push_back(WbItem{false, id});
    });
  }
}

void Nic::flush_coalesced(uint64_t id, bool by_timer) {
  RxDesc &d = rx(id);
  assert(rx_open_ == id && d.frames > 0);
  rx_open_ = 0;
  d.by_timer = by_timer;
  ++(by_timer ? c_.coalesce_timer : c_.coalesce_full);
  int64_t held = 0;
  for (int64_t b : d.sram) held += b;
  d.sram.clear();
  submit(Dir::NicToHost, DmaKind::Data, d.used, [this, id, held] {
    rx_release(held);
    RxDesc &r = rx(id);
    r.t_placed = sim_.now();
    advance(r, S::Placed);
    // The per-frame status travels inside the chunk, so the completion is visible as soon
    // as the data is: no separate write-back.
    advance(r, S::WrittenBack);
    if (on_rx_complete)
      on_rx_complete(RxCompletion{r.id, r.payload, r.frames, r.by_timer, r.t_posted,
                                  r.t_first_frame, r.t_placed, sim_.now()});
    retire();
  });
  pump_rx();
}

// ---------------------------------------------------------------- completions

void Nic::pump_wb() {
  if (wb_busy_ || wb_.empty()) return;
  // Batch under load; when the NIC->host engine has nothing else to do, write at once.
  if (static_cast<int64_t>(wb_.size()) < p_.wb_batch && !engine(Dir::NicToHost).idle()) return;
  const size_t n = std::min(wb_.size(), static_cast<size_t>(p_.wb_batch));
  std::vector<WbItem> items(wb_.begin(), wb_.begin() + static_cast<ptrdiff_t>(n));
  wb_.erase(wb_.begin(), wb_.begin() + static_cast<ptrdiff_t>(n));
  wb_busy_ = true;
  ++c_.write_backs;
  submit(Dir::NicToHost, DmaKind::WriteBack, static_cast<int64_t>(n) * p_.wb_bytes,
         [this, items = std::move(items)] {
           wb_busy_ = false;
           for (const WbItem &w : items) {
             if (w.tx) {
               TxDesc &d = tx(w.id);
               advance(d, S::WrittenBack);
               if (on_tx_complete)
                 on_tx_complete(
                     TxCompletion{d.id, d.payload, d.frames, d.t_posted, d.t_on_wire, sim_.now()});
             } else {
               RxDesc &r = rx(w.id);
               advance(r, S::WrittenBack);
               if (on_rx_complete)
                 on_rx_complete(RxCompletion{r.id, r.payload, r.frames, false, r.t_posted,
                                             r.t_first_frame, r.t_placed, sim_.now()});
             }
           }
           retire();
         });
}

void Nic::retire() {
  while (!tx_.empty() && tx_.front().st == S::WrittenBack) tx_.pop_front(), ++tx_base_;
  while (!rx_.empty() && rx_.front().st == S::WrittenBack) rx_.pop_front(), ++rx_base_;
}

// ---------------------------------------------------------------- test firmware

void Nic::generate(int64_t frames, int64_t payload) {
  gen_left_ += frames;
  gen_payload_ = payload;
  gen_next();
}

void Nic::gen_next() {
  while (gen_left_ > 0 && gen_queued_ < 4) {
    --gen_left_;
    ++gen_queued_;
    tx_cpu().run(p_.fw_tx_frame_cycles, [this] {
      Frame f;
      f.payload = gen_payload_;
      f.tag = kGeneratorTag;
      mac_.enqueue(f);
    });
  }
}

void Nic::dma_loop(Dir d, int64_t bytes, int64_t count, std::function<void(ps_t)> done) {
  for (int64_t i = 0; i < count; ++i) {
    std::function<void()> cb;
    if (i + 1 == count) cb = [this, done] { if (done) done(sim_.now()); };
    engine(d).submit(d, DmaKind::Test, bytes, std::move(cb));
  }
}

NicCounters Nic::counters() const {
  NicCounters c = c_;
  for (int e = 0; e < engines_; ++e) {
    const auto &ec = eng_[e]->counters();
    for (int d = 0; d < 2; ++d) c.dma_txns[d] += ec.txns[d], c.dma_bytes[d] += ec.bytes[d];
    c.dma_busy[e] = eng_[e]->busy_ps();
  }
  for (int i = 0; i < cpus_; ++i) c.cpu_busy[i] = cpu_[i]->busy_ps();
  c.mac_tx_busy = mac_.busy_ps();
  c.bus_busy[0] = bus_.busy_ps(Dir::HostToNic);
  c.bus_busy[1] = bus_.busy_ps(Dir::NicToHost);
  return c;
}

}  // namespace eca::hwmodel

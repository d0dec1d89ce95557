#include "hwmodel/model/firmware.hpp"

#include <cassert>

namespace eca::hwmodel {

Processor::Processor(Sim &sim, ps_t cycle, std::string name)
    : sim_(sim), cycle_(cycle), name_(std::move(name)) {}

void Processor::run(int64_t n, std::function<void()> then) {
  assert(n >= 0);
  q_.push_back(Task{n, std::move(then)});
  if (!busy_) start_next();
}

void Processor::start_next() {
  if (busy_ || q_.empty()) return;
  busy_ = true;
  meter_.start(sim_.now());
  Task t = std::move(q_.front());
  q_.pop_front();
  ++tasks_;
  sim_.after(t.cycles * cycle_, Prio::Complete, [this, then = std::move(t.then)] {
    busy_ = false;
    meter_.stop(sim_.now());
    if (then) then();
    start_next();
  });
}

ChunkPlan plan_chunk(const FrameFormat &f, int64_t payload, int64_t frame_payload) {
  assert(payload > 0 && frame_payload > 0);
  ChunkPlan c;
  c.frames = ceil_div(payload, frame_payload);
  c.last_payload = payload - (c.frames - 1) * frame_payload;
  c.host_bytes = c.frames * f.header + payload;
  return c;
}

int64_t max_frames_per_chunk(const FrameFormat &f, int64_t max_chunk, int64_t frame_payload) {
  return max_chunk / f.host_bytes(frame_payload);
}

int64_t max_frames_per_coalesce(const FrameFormat &f, int64_t max_chunk, int64_t hdr,
                                int64_t frame_payload) {
  return max_chunk / coalesced_slot(f, hdr, frame_payload);
}

}  // namespace eca::hwmodel

#include "hwmodel/model/firmware.hpp"

#include <cassert>

namespace eca::hwmodel {

Processor::Processor(Sim &sim, ps_t cycle, std::string name)
    : FifoServer(sim), cycle_(cycle), name_(std::move(name)) {}

void Processor::run(int64_t n, std::function<void()> then) {
  assert(n >= 0);
  enqueue(n, std::move(then));
}

void Processor::begin(const int64_t &cycles, std::function<void()> end) {
  ++tasks_;
  sim_.after(cycles * cycle_, Prio::Complete, std::move(end));
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

// The firmware side of the NIC: embedded processors that run work items one after another
// (cost in processor cycles), and the arithmetic of the two proposed techniques:
//
//  * transmit fragmentation: the host builds one chunk (at most frag_max_chunk bytes) of
//    back-to-back frames (header + payload each); it is DMAed to the NIC once and the
//    firmware cuts it into frames for the MAC;
//  * receive coalescing: the firmware gathers received frames, each preceded by a small
//    status header, into one host chunk and DMAs them in a single transaction, when the
//    chunk is full or when the coalescing timer (started by the chunk's first frame)
//    expires.
//
// The state machines that use these live in nic.cpp.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <string>

#include "hwmodel/model/mac.hpp"
#include "hwmodel/model/sim.hpp"

namespace eca::hwmodel {

class Processor final : public FifoServer<int64_t> {
 public:
  Processor(Sim &sim, ps_t cycle, std::string name);

  // Runs `n` cycles of work after all work queued earlier; `then` runs when it ends.
  void run(int64_t n, std::function<void()> then);

  uint64_t tasks() const { return tasks_; }
  ps_t cycle() const { return cycle_; }
  const std::string &name() const { return name_; }

 private:
  void begin(const int64_t &cycles, std::function<void()> end) override;
  ps_t cycle_;
  std::string name_;
  uint64_t tasks_ = 0;
};

// Transmit fragmentation: how a chunk of `payload` bytes is cut with `frame_payload`
// bytes per frame (the last frame may be shorter).
struct ChunkPlan {
  int64_t frames = 0;
  int64_t last_payload = 0;
  int64_t host_bytes = 0;  // bytes DMAed: every frame's header + payload
};
ChunkPlan plan_chunk(const FrameFormat &f, int64_t payload, int64_t frame_payload);

// Most full frames of `frame_payload` that one transmit chunk of max_chunk bytes holds
// (64 KiB / 1512 B = 43 for 1498 B payloads).
int64_t max_frames_per_chunk(const FrameFormat &f, int64_t max_chunk, int64_t frame_payload);

// Bytes a received frame takes in a coalesced chunk: status header + MAC header + payload.
inline int64_t coalesced_slot(const FrameFormat &f, int64_t hdr, int64_t payload) {
  return hdr + f.host_bytes(payload);
}
// Most frames one coalesced chunk holds (64 KiB / (16 + 1512) = 42).
int64_t max_frames_per_coalesce(const FrameFormat &f, int64_t max_chunk, int64_t hdr,
                                int64_t frame_payload);

}  // namespace eca::hwmodel

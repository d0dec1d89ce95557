// The discrete-event core. Events are ordered by (time, priority, sequence number): two
// events at the same picosecond run in priority order, and two of equal priority in the
// order they were scheduled, so a run is a pure function of its inputs and repeats exactly.
// Components never sleep: a cost is modeled by scheduling the follow-up event later.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <utility>
#include <vector>

#include "hwmodel/model/time.hpp"

namespace eca::hwmodel {

// Lower runs first among events of the same instant. Completions free resources before
// new work is started at the same instant, so that ties never depend on scheduling order
// across components.
enum class Prio : int {
  Complete = 0,  // a resource (bus burst, DMA, processor task) finishes
  Wire = 1,      // a frame's last bit leaves or arrives
  Firmware = 2,  // firmware decisions
  Issue = 3,     // start work on a freed resource
  Host = 4,      // host/driver actions (posts, doorbells)
  Timer = 5,     // coalescing timers
};

class Sim {
 public:
  using Action = std::function<void()>;

  ps_t now() const { return now_; }
  // Schedules `a` at absolute time t (t >= now()).
  void at(ps_t t, Prio p, Action a);
  void after(ps_t dt, Prio p, Action a) { at(now_ + dt, p, std::move(a)); }

  // Runs the earliest event; false if there is none.
  bool step();
  // Runs events until none is left.
  void run();
  // Runs every event with time <= limit, then sets now() to limit.
  void run_until(ps_t limit);
  bool idle() const { return heap_.empty(); }
  // Time of the next event, or -1.
  ps_t next_time() const { return heap_.empty() ? -1 : heap_.front().t; }
  uint64_t events_run() const { return events_run_; }

 private:
  struct Ev {
    ps_t t;
    int prio;
    uint64_t seq;
    Action a;
  };
  static bool later(const Ev &x, const Ev &y);

  std::vector<Ev> heap_;
  ps_t now_ = 0;
  uint64_t seq_ = 0;
  uint64_t events_run_ = 0;
};

// Accumulates busy time of a resource that is either busy or idle.
class BusyMeter {
 public:
  void start(ps_t t) {
    if (depth_++ == 0) since_ = t;
  }
  void stop(ps_t t) {
    if (--depth_ == 0) total_ += t - since_;
  }
  ps_t total(ps_t now) const { return total_ + (depth_ > 0 ? now - since_ : 0); }

 private:
  int depth_ = 0;
  ps_t since_ = 0;
  ps_t total_ = 0;
};

// A resource that serves one job at a time in arrival order (a DMA engine, a firmware
// processor). It queues jobs, keeps the busy meter and starts the next job when one ends;
// the resource says only how a job is served: begin(job, end) models the job and calls `end`
// exactly once when it is over. `end` frees the resource, runs the job's `done` and starts
// the next job, in that order.
template <class Job>
class FifoServer {
 public:
  explicit FifoServer(Sim &sim) : sim_(sim) {}
  virtual ~FifoServer() = default;

  bool idle() const { return !busy_ && q_.empty(); }
  size_t queued() const { return q_.size(); }
  ps_t busy_ps() const { return meter_.total(sim_.now()); }

 protected:
  void enqueue(Job job, std::function<void()> done) {
    q_.push_back({std::move(job), std::move(done)});
    if (!busy_) start_next();
  }
  virtual void begin(const Job &job, std::function<void()> end) = 0;
  Sim &sim_;

 private:
  void start_next() {
    if (busy_ || q_.empty()) return;
    busy_ = true;
    meter_.start(sim_.now());
    auto [job, done] = std::move(q_.front());
    q_.pop_front();
    begin(job, [this, done = std::move(done)] {
      busy_ = false;
      meter_.stop(sim_.now());
      if (done) done();
      start_next();
    });
  }
  std::deque<std::pair<Job, std::function<void()>>> q_;
  bool busy_ = false;
  BusyMeter meter_;
};

}  // namespace eca::hwmodel

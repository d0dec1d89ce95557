#include "hwmodel/model/sim.hpp"

#include <algorithm>
#include <cassert>
#include <tuple>

namespace eca::hwmodel {

bool Sim::later(const Ev &x, const Ev &y) {
  return std::tie(x.t, x.prio, x.seq) > std::tie(y.t, y.prio, y.seq);
}

void Sim::at(ps_t t, Prio p, Action a) {
  assert(t >= now_ && "an event cannot be scheduled in the past");
  heap_.push_back(Ev{t, static_cast<int>(p), seq_++, std::move(a)});
  std::push_heap(heap_.begin(), heap_.end(), later);
}

bool Sim::step() {
  if (heap_.empty()) return false;
  std::pop_heap(heap_.begin(), heap_.end(), later);
  Ev ev = std::move(heap_.back());
  heap_.pop_back();
  now_ = ev.t;
  ++events_run_;
  ev.a();
  return true;
}

void Sim::run() {
  while (step()) {
  }
}

void Sim::run_until(ps_t limit) {
  while (!heap_.empty() && heap_.front().t <= limit) step();
  if (limit > now_) now_ = limit;
}

}  // namespace eca::hwmodel

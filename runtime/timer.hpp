// A one-shot timer whose callback runs on the process's progress thread (runtime/progress.hpp).
// For layers that must not see the event library (provider/core: CQ interrupt moderation).
#pragma once

#include <chrono>
#include <functional>
#include <memory>

namespace eca::runtime {

class Timer {
 public:
  Timer();
  ~Timer();  // cancels a pending wait; its callback does not run
  Timer(const Timer &) = delete;
  Timer &operator=(const Timer &) = delete;

  // Runs `fn` on the progress thread once `after` has passed, unless cancel() or another
  // arm() comes first (that replaces the pending wait; its callback does not run).
  // Locking rule: calls on one Timer are serialised by the caller, as for any asio timer.
  void arm(std::chrono::microseconds after, std::function<void()> fn);
  void cancel();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace eca::runtime

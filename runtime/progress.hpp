// The progress engine: one Boost.Asio io_context per process, run by one thread, on which all
// socket readiness, connection management and one-sided work (placing WRITEs, answering READs)
// happens without the application calling into the library.
#pragma once

#include <boost/asio/io_context.hpp>

#include <functional>

namespace eca::runtime {

class Progress {
 public:
  static Progress &instance();
  boost::asio::io_context &io() { return io_; }
  bool on_progress_thread() const;
  // Runs fn on the progress thread and waits for it (runs inline when already there).
  void run_sync(const std::function<void()> &fn);
  void post(std::function<void()> fn);

 private:
  Progress();
  ~Progress();
  boost::asio::io_context io_;
  struct Impl;
  Impl *impl_;
};

}  // namespace eca::runtime

// The progress engine: one Boost.Asio io_context per process, run by one thread, on which all
// socket readiness, connection management and one-sided work (placing WRITEs, answering READs)
// happens without the application calling into the library.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

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

// Takes ownership of `fd`, a connected TCP socket (IPv4 or IPv6), as a socket of the progress
// io_context: how a backend turns the connection rdma_cm hands it (provider/core/llp.hpp)
// into its stream. On failure `fd` is closed, the error logged, and the socket returned is
// not open (the backend's first I/O then ends the connection).
boost::asio::ip::tcp::socket adopt_tcp_socket(int fd);

}  // namespace eca::runtime

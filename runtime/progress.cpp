#include "runtime/progress.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <future>
#include <optional>
#include <thread>

#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "provider/core/log.hpp"

namespace eca::runtime {

struct Progress::Impl {
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guard;
  std::thread thread;
  std::thread::id id;
};

Progress &Progress::instance() {
  // Never destroyed: the thread keeps running until the process exits, so that objects the
  // application leaks (QPs not destroyed before exit) cannot race a destructor.
  static Progress *p = new Progress();
  return *p;
}

Progress::Progress() : impl_(new Impl) {
  impl_->guard.emplace(io_.get_executor());
  std::promise<std::thread::id> started;
  auto fut = started.get_future();
  impl_->thread = std::thread([this, &started] {
    pthread_setname_np(pthread_self(), "eca-progress");
    started.set_value(std::this_thread::get_id());
    for (;;) {
      try {
        io_.run();
        break;
      } catch (...) {
        // A handler must not take the engine down; keep serving the others.
      }
    }
  });
  impl_->id = fut.get();
  impl_->thread.detach();
}

Progress::~Progress() = default;

bool Progress::on_progress_thread() const { return std::this_thread::get_id() == impl_->id; }

void Progress::post(std::function<void()> fn) { boost::asio::post(io_, std::move(fn)); }

void Progress::run_sync(const std::function<void()> &fn) {
  if (on_progress_thread()) {
    fn();
    return;
  }
  std::promise<void> done;
  auto fut = done.get_future();
  boost::asio::post(io_, [&] {
    fn();
    done.set_value();
  });
  fut.get();
}

boost::asio::ip::tcp::socket adopt_tcp_socket(int fd) {
  boost::asio::ip::tcp::socket s(Progress::instance().io());
  if (fd < 0) return s;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  const bool v6 = ::getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) == 0 &&
                  ss.ss_family == AF_INET6;
  boost::system::error_code ec;
  s.assign(v6 ? boost::asio::ip::tcp::v6() : boost::asio::ip::tcp::v4(), fd, ec);
  if (ec) {
    ECA_LOG(Error, "adopting connection fd %d failed: %s", fd, ec.message().c_str());
    ::close(fd);
  }
  return s;
}

}  // namespace eca::runtime

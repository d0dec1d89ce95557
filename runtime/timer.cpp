#include "runtime/timer.hpp"

#include <boost/asio/steady_timer.hpp>

#include "runtime/progress.hpp"

namespace eca::runtime {

struct Timer::Impl {
  boost::asio::steady_timer timer{Progress::instance().io()};
};

Timer::Timer() : impl_(std::make_unique<Impl>()) {}

Timer::~Timer() { cancel(); }

void Timer::arm(std::chrono::microseconds after, std::function<void()> fn) {
  impl_->timer.expires_after(after);  // cancels a pending wait
  impl_->timer.async_wait([fn = std::move(fn)](const boost::system::error_code &ec) {
    if (!ec) fn();
  });
}

void Timer::cancel() { impl_->timer.cancel(); }

}  // namespace eca::runtime

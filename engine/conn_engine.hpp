// The QpEngine the core holds for a connection of either backend (transport::IwarpConn,
// hw::HwConn): forwards the core's calls to the connection object, which it keeps alive;
// destroying it aborts the connection. Threads and locks: those of the connection's calls.
#pragma once

#include <memory>

#include "provider/core/backend.hpp"

namespace eca::engine {

template <class Conn>
class ConnEngine final : public QpEngine {
 public:
  explicit ConnEngine(std::shared_ptr<Conn> c) : c_(std::move(c)) {}
  // Backend::attach of either backend: the backend's connection object over the negotiated
  // connection, started, inside the engine the core keeps for the QP.
  static std::unique_ptr<ConnEngine> attach(Qp &qp, LlpConnection &&llp) {
    auto conn = std::make_shared<Conn>(qp, std::move(llp));
    conn->start();
    return std::make_unique<ConnEngine>(std::move(conn));
  }
  ~ConnEngine() override { c_->close(false); }
  void sq_doorbell() override { c_->sq_doorbell(); }
  void rq_doorbell() override { c_->rq_doorbell(); }
  void poll_progress() override { c_->poll_progress(); }
  void cq_armed() override {
    if constexpr (requires(Conn &c) { c.cq_armed(); }) c_->cq_armed();
  }
  void close(bool graceful) override { c_->close(graceful); }
  Conn *conn() const { return c_.get(); }

 private:
  std::shared_ptr<Conn> c_;
};

}  // namespace eca::engine

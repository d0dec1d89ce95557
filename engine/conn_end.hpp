// The end of a connection, in the order both engines follow (the software transport,
// transport/qp_rx.cpp "Ending the connection"; the modeled adapter, hw_conn.cpp "Ending").
// The backend supplies only what differs: how the peer is told (FIN after a TERMINATE, a
// Disconnect frame), what it lets go of, and where the socket is closed.
//
// close(), called by the core (ibv_modify_qp to ERROR or RESET, rdma_disconnect, destroy, and
// Qp::llp_ended below):
//   1. stop accepting work: closed_ is set, once (close_begin_locked), under the backend's
//      cb_mu_, so no handler calls into the Qp after close() returned;
//   2. detach, under the backend's data lock (IwarpConn::tx_mu_, HwConn::mu_): the receive the
//      engine took from the RQ and holds for a message in progress completes flushed (the Qp's
//      own flush does not see it), then the backend signals the peer and leaves the Qp alone
//      (close_detach);
//   3. release: the socket and timers are closed on the progress thread (finish_on_progress).
//   A close() that comes while an end is being reported (from Qp::llp_ended) finds every step
//   done but the last two: nothing is owed twice.
// The end found by the engine (the peer's TERMINATE, EOF or reset, a local error):
//   1. found once (end_begin_locked), under cb_mu_, and only while not closed;
//   2. under the data lock, what the engine owes the application: the work request the end
//      is blamed on completes with its status (anything but a flush: Qp::sq_fail_oldest), the
//      held receive completes flushed, the engine drops what it still holds (report_end);
//   3. Qp::llp_ended: QP to ERROR, both queues flushed, IBV_EVENT_QP_FATAL for a reset or a
//      TERMINATE, rdma_cm's DISCONNECTED; it calls close() (the backend's `upcall` says how
//      that call finds cb_mu_).
// Lock order: docs/architecture.md, "Lock order" (cb_mu_ before the data lock before the Qp's).
#pragma once

#include <atomic>
#include <mutex>
#include <utility>

#include "provider/core/llp.hpp"
#include "provider/core/mutex.hpp"
#include "provider/core/objects.hpp"
#include "runtime/progress.hpp"

namespace eca::engine {

// The receive work request an engine holds outside the RQ (a Send being placed).
struct HeldRecv {
  RecvWqe &rqe;
  bool &have;
};

// Completes the held receive (if any) with IBV_WC_WR_FLUSH_ERR. The caller holds the lock
// that guards it.
inline void flush_held(Qp &qp, HeldRecv held) {
  if (!held.have) return;
  qp.rq_done(held.rqe, IBV_WC_WR_FLUSH_ERR, 0, false, 0);
  held.have = false;
}

// True if the end is blamed on the oldest outstanding work request, which then completes with
// `sq_status` before the rest of the send queue flushes.
constexpr bool blames_oldest(ibv_wc_status sq_status) {
  return sq_status != IBV_WC_WR_FLUSH_ERR && sq_status != IBV_WC_SUCCESS;
}

// The flags of the sequence. A backend inherits it; closed_ and ended_ are its own members.
class ConnEnd {
 protected:
  std::atomic<bool> closed_{false};  // close() began: nothing calls into the Qp any more
  bool ended_ = false;               // the end was found; reported or about to be (cb_mu)

  // Step 1 of close(): true for the one call that closes.
  bool close_begin_locked(const Mutex &cb_mu) {
    ECA_ASSERT_HELD(cb_mu);
    (void)cb_mu;
    return !closed_.exchange(true);
  }
  // Step 1 of an end: true once, and never after close().
  bool end_begin_locked(const Mutex &cb_mu) {
    ECA_ASSERT_HELD(cb_mu);
    (void)cb_mu;
    if (ended_ || closed_) return false;
    ended_ = true;
    return true;
  }

  // Step 2 of close(): under `data_mu`, the held receive flushes, then `detach_locked()` (the
  // backend signals the peer and stops using the Qp); returns what that returns.
  template <class Detach>
  static auto close_detach(Qp &qp, Mutex &data_mu, HeldRecv held, Detach &&detach_locked) {
    std::lock_guard lk(data_mu);
    flush_held(qp, held);
    return detach_locked();
  }

  // Step 3 of close(): `finish` runs on the progress thread, now if this is it (the caller
  // then holds `cb_mu` already, if any), else posted there, where it runs under `cb_mu` (null:
  // under no lock). The posted call keeps what `finish` holds (the connection) alive.
  template <class F>
  static void finish_on_progress(Mutex *cb_mu, F &&finish) {
    runtime::Progress &p = runtime::Progress::instance();
    if (p.on_progress_thread()) return finish();
    p.post([cb_mu, f = std::forward<F>(finish)]() mutable {
      if (!cb_mu) return f();
      std::lock_guard cb(*cb_mu);
      f();
    });
  }

  // Steps 2 and 3 of an end (after end_begin_locked said yes). `drop_locked()` lets go of what
  // the engine holds (under `data_mu`); `upcall(report)` calls report(), which is
  // Qp::llp_ended(why), the way the backend lets close() through cb_mu_.
  template <class Drop, class Upcall>
  static void report_end(Qp &qp, LlpEnd why, ibv_wc_status sq_status, Mutex &data_mu,
                         HeldRecv held, Drop &&drop_locked, Upcall &&upcall) {
    {
      // Held while the oldest is blamed: a thread that handed a work request to the peer in
      // full retires it under this lock before, so it is not mistaken for the oldest.
      std::lock_guard lk(data_mu);
      if (blames_oldest(sq_status)) qp.sq_fail_oldest(sq_status);
      flush_held(qp, held);
      drop_locked();
    }
    upcall([&qp, why] { qp.llp_ended(why); });
  }
};

}  // namespace eca::engine

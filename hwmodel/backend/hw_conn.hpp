// One connected QP of the modeled adapter.
//
// Connection set-up uses the host's TCP (rdma_cm and MPA, as for the software backend); the
// two adapters then exchange their identities over that socket and share a LinkShm. From
// then on the data path is memory only:
//  - RDMA WRITE / READ: the initiator's adapter validates the STag in the peer's published
//    table and moves the data directly between the two processes' registered memory.
//  - SEND / Immediate Data: frames on the link ring; the receiving adapter places them into
//    posted receives (large payloads copied straight from the sender's registered memory) and
//    acknowledges, which completes the sender's work request.
// The adapter's work runs in whichever thread gets there first: the application's own
// ibv_post_send()/ibv_poll_cq() calls (poll mode: no system calls), or the firmware thread
// (interrupt mode, paced completions, deadlines). The TCP socket stays open only to notice a
// peer process that dies.
#pragma once

#include <sys/uio.h>

#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "engine/conn_end.hpp"
#include "engine/conn_engine.hpp"
#include "engine/ord_ird.hpp"
#include "hwmodel/backend/adapter.hpp"
#include "hwmodel/backend/timing.hpp"
#include "provider/core/backend.hpp"
#include "provider/core/llp.hpp"
#include "provider/core/objects.hpp"

namespace eca::hw {

// The outcome of handling one work request or one frame: done (it is consumed), retry later
// (it stays first in line: no ring room, no receive posted, not yet due, ORD full), or failed
// (the link is ending; what the item owed is completed or flushed by the failure path).
enum class Step : uint8_t { Done, Retry, Failed };

// The order of close() and of the end of a connection, and the flags closed_ and ended_:
// engine/conn_end.hpp.
class HwConn : public std::enable_shared_from_this<HwConn>, private engine::ConnEnd {
  friend struct HwConnProbe;  // test-only access: tests/fuzz/hw_frame_fuzz.cpp

 public:
  using Seg = iovec;  // a piece of memory in our address space
  HwConn(Qp &qp, LlpConnection &&llp);
  ~HwConn();
  void start();  // handshake on the progress thread
  void doorbell();
  void app_doorbell();  // doorbell rung by an application thread (post_send, post_recv)
  void sq_doorbell() { app_doorbell(); }
  void rq_doorbell() { app_doorbell(); }
  void cq_armed();
  void poll_progress();  // application thread inside ibv_poll_cq (never blocks)
  struct FwResult {
    bool did_work;
    bool needs_tick;
  };
  FwResult firmware_poll();  // firmware thread
  void close(bool graceful);
  // Our MR `key` is being deregistered (its STag entry is already cleared), or (key 0) our side
  // closed the link: returns once the peer's adapter is not inside an access to that MR (to
  // any of our memory). Any thread; no mu_ held (the peer's access may need our control
  // socket, never our locks). Bounded: a dead peer is not waited for; one that keeps an access
  // open for 2 s loses the connection.
  void await_peer_untouched(uint32_t key);
  const Stats &stats() const { return stats_; }

 private:
  void handshake();
  void on_peer_hello();
  void on_peer_proven(std::shared_ptr<PeerAdapter> peer, int link_fd);
  void become_ready();
  void watch_socket();

  bool work_locked();   // mu_ held: transmit then receive; true if anything moved
  bool tx_locked();
  bool rx_locked();
  Step exec_wqe_locked(SendWqe *w);
  Step handle_frame_locked(const Frame &f);
  // RFC 7306 atomics (hw_atomic.cpp), mu_ held
  Step exec_atomic_locked(SendWqe *w);
  Step handle_atomic_request_locked(const Frame &f);
  Step handle_atomic_response_locked(const Frame &f);
  void ack_placed_locked();     // publishes one more placed message to the peer
  bool harvest_acks_locked();   // completes our Sends the peer has placed; true if any
  bool acks_pending() const;    // a hint, read without mu_
  int remote_copy(uint32_t rkey, uint64_t addr, uint64_t len, uint32_t need, bool write,
                   std::span<const Seg> local);
  uint8_t *peer_region(uint32_t idx, uint32_t gen, uint64_t off, uint64_t len, bool write);
  Frame *ring_slot_locked();         // free slot in the outgoing ring, or null
  void ring_publish_locked();
  void send_terminate_locked(WireError why);
  // The failure tails (mu_ held): Terminate `why` to the peer and end the link; the same after
  // completing work request `w`, or the receive we hold, with `st`. All return Step::Failed.
  Step terminate_locked(WireError why);
  Step fail_wqe_locked(SendWqe *w, ibv_wc_status st);
  Step fail_rqe_locked(ibv_wc_status st, uint32_t byte_len, WireError why);
  void fail(LlpEnd why, ibv_wc_status st);  // defers to the progress thread
  void do_fail(LlpEnd why, ibv_wc_status st);
  uint64_t now_ps() const;

  Qp &qp_;
  boost::asio::ip::tcp::socket sock_;
  bool initiator_;
  // Held by progress/firmware handlers for their work and by close(), never across a call
  // that can come back into close() (do_fail's Qp::llp_ended: see upcall_).
  Mutex cb_mu_;
  // do_fail is inside Qp::llp_ended, on the progress thread, without cb_mu_ (set under it).
  // A close() on any other thread waits for it to clear before it returns: the caller may
  // free the Qp next. A close() on the progress thread that sees it set is nested inside that
  // very call (progress handlers run one at a time) and does not wait.
  std::atomic<bool> upcall_{false};
  Mutex mu_;                    // data path state; only try_lock from application threads
  std::atomic<bool> ready_{false};
  std::atomic<bool> failing_{false};
  std::atomic<bool> work_pending_{false};
  // Visits by application threads (post, poll). While they keep coming, the application
  // drives the adapter (poll mode) and the firmware thread stays out of its way.
  std::atomic<uint64_t> app_visits_{0};
  uint64_t fw_seen_visits_ = 0;

  int side_ = 0;
  LinkShm *link_ = nullptr;
  int link_fd_ = -1;
  uint8_t nonce_[ctl::kNonceBytes] = {};     // ours, sent over TCP; proves the peer on our socket
  std::atomic<uint32_t> asker_pid_{0};       // the peer as proven on our control socket
  std::shared_ptr<PeerAdapter> peer_;
  uint32_t peer_pd_ = 0;
  uint32_t peer_qpn_ = 0;
  Ring *out_ = nullptr;
  Ring *in_ = nullptr;
  uint64_t out_tail_ = 0;  // producer's private copy of out_->tail
  void *tsan_key_ = nullptr;  // the rings' hand-off as ThreadSanitizer sees it (tsan.hpp)

  // Work requests taken from the SQ and not yet executed, with their modeled completion
  // times (paced mode: the adapter pipelines them; fast mode: due 0).
  struct Inflight {
    SendWqe *w;
    uint64_t due_ps;
  };
  std::deque<Inflight> inflight_;
  // Hints read without mu_ by the application's cheap "anything to do?" tests (poll_progress,
  // cq_armed); written only under mu_. A stale hint costs one doorbell() or one later pass.
  std::atomic<bool> tx_queued_{false};  // inflight_ is not empty
  uint64_t pending_due_ = 0;  // due time of the work request being executed
  std::deque<SendWqe *> await_ack_;  // Sends and Immediate Data the peer has not yet placed
  struct AtomicWait {                // an atomic sent, awaiting its AtomicResponse
    SendWqe *w;
    MrRef result;                    // the 8-byte local buffer for the original value
  };
  std::deque<AtomicWait> await_atomic_;
  // ORD/IRD (engine/ord_ird.hpp), mu_: its outstanding count is await_atomic_'s size. The
  // responder answers each Atomic Request before it takes the next frame, so it never holds
  // more than one and IRD cannot be exceeded here.
  engine::OrdIrd rd_;
  std::atomic<uint64_t> acked_seen_{0};  // the peer's `placed` count completed here (hint, as above)
  uint64_t placed_ = 0;              // our `placed` count (the peer's messages we placed)
  bool have_rqe_ = false;
  RecvWqe rqe_;
  uint64_t rqe_deadline_ns_ = 0;

  struct RegionCache {  // the peer region used last (mu_)
    uint32_t idx = UINT32_MAX, gen = 0;
    uint8_t *base = nullptr;
    uint64_t len = 0;
    bool writable = false;
  } last_region_;
  Timing timing_;
  uint64_t start_ns_ = 0;
  uint64_t busy_until_ps_ = 0;  // modeled: when the adapter's transmit path is free
  Stats stats_;
};

using HwEngine = engine::ConnEngine<HwConn>;

}  // namespace eca::hw

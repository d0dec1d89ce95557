// One connected iWARP QP of the software backend: the RDMAP/DDP/MPA state of both directions
// over its TCP socket. qp_tx.cpp holds the transmit direction, qp_rx.cpp the receive one.
//
// Concurrency:
//  - cb_mu is held by every progress-thread handler that may call into the Qp; close()
//    takes it, so once close() returns no handler runs against the Qp any more. It is not
//    recursive: the one path that comes back into close() with it held (report_end() ->
//    Qp::llp_ended() -> close()) is marked by in_report_, and close() then does not lock.
//  - rx state is touched only under cb_mu: by the progress thread, or by an application
//    thread polling one of the QP's CQs, which only try-locks it (poll_progress()). When the
//    progress thread finds it held, it hands the receive work to the holder (rx_pending_,
//    qp_rx.cpp "Hand-back"). The end of a connection found by a polling thread is reported
//    from the progress thread.
//  - tx_mu guards the transmit state, the ORQ and the IRQ. The thread that owns the
//    transmitter (tx_state_ kTxRunning: a poster, a poller or the progress thread) holds it
//    while it pumps; the receive side takes it briefly for the ORQ/IRQ.
//    Order: docs/architecture.md, "Lock order" (cb_mu before tx_mu before the Qp's locks).
//  - The progress thread never blocks on the network: TERMINATE goes out through the
//    ordinary transmitter, and a closed connection lingers for it at most kTermLinger.
#pragma once

#include <sys/uio.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/conn_end.hpp"
#include "engine/conn_engine.hpp"
#include "engine/ord_ird.hpp"
#include "provider/core/backend.hpp"
#include "provider/core/llp.hpp"
#include "provider/core/objects.hpp"
#include "runtime/progress.hpp"
#include "transport/wire/atomic.hpp"
#include "transport/wire/ddp_rdmap.hpp"

namespace eca::transport {

using runtime::Progress;  // the process's progress thread (runtime/)

// An RDMA READ or RFC 7306 atomic we issued and await the response to (outbound read queue).
struct OrqEntry {
  SendWqe *wqe = nullptr;
  bool atomic = false;   // an Atomic Request: answered by an Atomic Response with req_id
  uint32_t req_id = 0;
  uint32_t sink_stag = 0;
  uint64_t sink_to = 0;
  uint64_t length = 0;
  uint64_t received = 0;
  std::vector<MrRef> sinks;    // validated local SGEs (keep them registered)
  std::vector<iovec> sink_iov; // where response payload goes, in order
};

// An RDMA READ or Atomic Request the peer issued that we answer (inbound read queue).
struct IrqEntry {
  bool atomic = false;
  wire::AtomicRequest areq;  // atomic: executed when the entry reaches the head
  uint32_t sink_stag = 0;
  uint64_t sink_to = 0;
  uint64_t length = 0;
  uint64_t sent = 0;
  MrRef src;  // validated source region (empty for zero length) / the atomic's target word
};

// A message being transmitted, one FPDU at a time.
struct TxMsg {
  enum class Kind : uint8_t { None, Wqe, ReadResponse, AtomicResponse, Terminate } kind = Kind::None;
  SendWqe *wqe = nullptr;
  wire::Opcode op = wire::Opcode::Send;
  uint64_t length = 0;   // payload bytes of the whole message
  uint64_t offset = 0;   // payload bytes already framed
  std::vector<iovec> src;  // the payload, as host memory segments
  std::vector<MrRef> refs;  // keeps source regions registered while sending
  bool imm_pending = false;  // WRITE_WITH_IMM: an Immediate Data message follows the WRITE
  uint32_t msn = 0;          // untagged messages: the MSN of this message
  wire::AtomicRequest areq;    // Atomic Request body
  wire::AtomicResponse aresp;  // Atomic Response body
  size_t seg = 0, seg_off = 0;  // cursor into src for the next FPDU
};

// The FPDU currently on its way into the socket.
struct TxFrame {
  std::array<uint8_t, wire::kMaxHdr> hdr{};
  std::array<uint8_t, 8> trailer{};  // pad + CRC
  std::array<iovec, kMaxSge + 4> iov{};
  int iovcnt = 0;
  size_t total = 0, sent = 0;
  bool active = false;
  bool last_of_msg = false;
};

// Receive state machine (resumable at any byte).
struct RxState {
  enum class Phase : uint8_t { Header, Payload, Trailer } phase = Phase::Header;
  std::array<uint8_t, wire::kMaxHdr> hdr{};
  size_t hdr_have = 0, hdr_need = 4;
  const wire::OpInfo *op = nullptr;
  wire::Opcode opcode = wire::Opcode::Send;
  size_t payload_len = 0, payload_done = 0;
  size_t trailer_len = 0, trailer_have = 0;
  std::array<uint8_t, 8> trailer{};
  uint32_t crc = 0;
  bool last = false;
  // placement target of the current segment: payload byte i goes to target offset base + i
  std::vector<iovec> target;
  uint64_t target_base = 0;
  MrRef tagged_ref;
  OrqEntry *orq = nullptr;     // READ response being placed
  wire::TermInfo peer_term;          // TERMINATE being received
  // untagged SEND message in progress
  bool have_rqe = false;
  RecvWqe rqe;
  std::vector<MrRef> rqe_refs;
  std::vector<iovec> rqe_iov;
  uint64_t rqe_capacity = 0;
  uint64_t msg_offset = 0;  // MO of the current segment
  // expected MSNs per untagged queue
  uint32_t msn_send = 1, msn_rreq = 1, msn_term = 1, msn_aresp = 1;
  // staging buffer for headers and small frames
  std::vector<uint8_t> buf;
  size_t buf_pos = 0, buf_end = 0;
  bool large_mode = false;  // the last payload was large: read headers exactly
  // waiting for a receive buffer (written under cb_mu; rq_doorbell() peeks without it)
  std::atomic<bool> parked{false};
  std::chrono::steady_clock::time_point park_deadline;
};

// The order of close() and of the end of a connection, and the flags closed_ and ended_:
// engine/conn_end.hpp.
class IwarpConn : public std::enable_shared_from_this<IwarpConn>, private engine::ConnEnd {
 public:
  IwarpConn(Qp &qp, LlpConnection &&llp);
  void start();                 // begin receiving (progress thread)
  void doorbell();              // SQ has work (any thread)
  void sq_doorbell() { doorbell(); }
  void rq_doorbell();           // RQ has buffers (any thread)
  void poll_progress();         // an application thread polls one of our CQs (never blocks)
  void cq_armed();              // one of our CQs was armed: its poller is about to sleep
  void close(bool graceful);    // any thread; idempotent
  bool crc_on() const { return crc_; }
  uint16_t ird() const { return (uint16_t)rd_.ird(); }  // the negotiated depths (constant)
  uint16_t ord() const { return (uint16_t)rd_.ord(); }

 private:
  // ---- tx (qp_tx.cpp)
  void pump_locked();                   // tx_mu held
  bool next_message_locked();           // picks the next message to send
  bool build_frame_locked();            // frames the next FPDU of the current message
  void frame_sent_locked();
  void wait_writable_locked();
  bool start_wqe_locked(SendWqe *w);
  void tx_run();              // becomes the transmitter if work is pending and nobody is
  void tx_unblock_and_run();  // the socket may have room again
  bool tx_stopped_locked() const {
    ECA_ASSERT_HELD(tx_mu_);
    return (closed_ && !lingering_) || term_sent_;
  }
  void term_sent_locked();    // the TERMINATE left: FIN, and end a lingering close
  void end_linger();          // cb_mu held: close the socket for good
  ssize_t send_frame_rest();  // one sendmsg() of the rest of frame_ (tx_mu held)
  // A local error: end the stream from the progress thread with the TERMINATE `t`.
  void fail_local_async(const wire::TermInfo &t = {wire::TermLayer::Rdmap,
                                                   wire::kRdmapLocalCatastrophic,
                                                   wire::kRdmapUnspecified});
  bool source_deregistered_locked();  // send_frame_rest() found a source MR deregistered
  // ---- rx (qp_rx.cpp)
  void arm_read();    // cb_mu held, any thread: the read wait, unless one is armed
  void rx_handler();  // progress thread: on_readable() under a try-lock of cb_mu, or hand back
  void rx_unlock(std::unique_lock<Mutex> &cb, bool more);  // a poller lets go of cb_mu
  void on_readable();
  bool rx_process(size_t budget);       // false: stop (closed, parked, or would block)
  bool rx_would_block();                // the socket is empty: false, the read wait armed
  bool rx_header_complete();
  bool rx_begin_payload();
  void rx_place(const uint8_t *src, size_t n);
  bool rx_enter_target(MrUse &use);
  ssize_t rx_direct_recv();
  bool rx_segment_done();
  void rx_unpark_check();
  // ---- RFC 7306 atomics (atomic.cpp)
  bool rx_atomic_request();   // responder: validate, queue on the IRQ (false: stream ended)
  bool rx_atomic_response();  // requester: place the original value, complete the WQE
  bool start_atomic_response_locked(IrqEntry &e);  // tx_mu held: execute, frame the answer
  bool rx_expected() const;  // a polling thread has reason to look at the socket
  // ---- quiet socket while an application thread polls (qp_rx.cpp, "Quiet")
  void quiet_enter();   // a poller, cb_mu held
  void quiet_watch();   // progress thread: the watchdog's next look
  void quiet_check();   // progress thread, no lock held: the watchdog
  void quiet_leave();   // cb_mu held
  // ---- errors (qp_rx.cpp)
  // A protocol/access error detected locally: send TERMINATE, end the connection.
  void fail_terminate(const wire::TermInfo &t, ibv_wc_status sq_status);
  // The connection died or closed: end it, report to the Qp (cb_mu held; from a polling
  // thread the report is deferred to the progress thread).
  void fail_llp(LlpEnd why, ibv_wc_status sq_status);
  void report_end(LlpEnd why, ibv_wc_status sq_status);  // progress thread, cb_mu held
  void close_locked(bool graceful);  // cb_mu held
  void close_finish_locked(bool linger);  // progress thread, cb_mu held
  void fail_from_tx(int err);  // tx path error from any thread: deferred to the progress thread

  Qp &qp_;
  boost::asio::ip::tcp::socket sock_;
  int fd_;
  bool crc_;               // negotiated MPA CRC32c
  Rtr rtr_recv_;           // RFC 6581 RTR still to be consumed (responder, p2p mode)
  uint32_t fpdu_payload_;
  const uint32_t qpn_;     // for log lines after close (the Qp may be gone by then)
  Mutex cb_mu_;
  bool in_report_ = false;  // report_end() is calling into the Qp (progress thread only)
  std::atomic<bool> lingering_{false};  // closed, but a queued TERMINATE is still going out
  bool qp_detached_ = false;  // close() took tx_mu: the transmitter leaves the Qp alone (tx_mu)

  // tx. The hand-off between threads that want transmission is one atomic word
  // (qp_tx.cpp, "Doorbell", has the protocol and its proof).
  static constexpr uint32_t kTxPending = 1;  // work may be queued that no transmitter has seen
  static constexpr uint32_t kTxRunning = 2;  // a thread owns the transmitter
  static constexpr uint32_t kTxBlocked = 4;  // the socket was full with work queued
  static constexpr uint32_t kTxArmed = 8;    // a writability wait is armed or being armed
  std::atomic<uint32_t> tx_state_{0};
  Mutex tx_mu_;
  TxMsg msg_;
  TxFrame frame_;
  std::deque<OrqEntry> orq_;
  std::deque<IrqEntry> irq_;
  engine::OrdIrd rd_;  // ORD/IRD: the counts of orq_ and irq_ and the rules (engine/ord_ird.hpp)
  bool term_queued_ = false;  // the stream is ending: take no more work
  bool term_want_ = false;    // term_ goes out after the FPDU in flight
  bool term_sent_ = false;
  wire::TermInfo term_;
  std::atomic<uint32_t> orq_size_{0};  // orq_.size(), for polling threads (rx_expected)
  uint32_t msn_send_ = 1, msn_rreq_ = 1, msn_aresp_ = 1;
  uint32_t atomic_req_id_ = 0;      // Request Identifier of our last Atomic Request
  SendWqe *blocked_wqe_ = nullptr;  // taken from the SQ but waiting for ORD room or a fence
  bool irq_active_ = false;         // msg_ is the response to irq_.front()

  // rx
  RxState rx_;
  boost::asio::steady_timer park_timer_;
  boost::asio::steady_timer term_timer_;  // bounds a close that lingers for its TERMINATE
  // The receive hand-off (qp_rx.cpp, "Hand-back", has the protocol).
  std::atomic<bool> rx_pending_{false};  // readable, but cb_mu was held: the holder takes over
  std::atomic<bool> rx_armed_{false};    // a read wait is armed (set under cb_mu by arm_read())
  // Quiet: a poller receives; data arrival does not wake the progress thread (SO_RCVLOWAT).
  std::atomic<bool> quiet_{false};        // written under cb_mu; cq_armed() peeks without it
  std::atomic<uint32_t> poll_looks_{0};   // pollers' receive runs (quiet_check() compares)
  uint32_t loud_looks_ = 0;   // poller receive runs while not quiet (cb_mu)
  uint32_t quiet_seen_ = 0;   // poll_looks_ at the watchdog's last run (progress thread)
  boost::asio::steady_timer quiet_timer_;
};

using IwarpEngine = engine::ConnEngine<IwarpConn>;

// Maps an access-check failure to the TERMINATE the RFCs prescribe.
wire::TermInfo term_for_tagged(AccessError e);
wire::TermInfo term_for_read_source(AccessError e);
ibv_wc_status wc_status_for_term(const wire::TermInfo &t);

}  // namespace eca::transport

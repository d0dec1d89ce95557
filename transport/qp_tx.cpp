// Transmit direction of a software iWARP QP: RDMAP messages -> DDP segments -> MPA FPDUs on
// the TCP socket. Payloads go from registered memory to the socket with sendmsg() gather
// lists (no staging copy). Posting threads transmit inline while the socket accepts data;
// when it is full, the progress thread continues on writability.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/post.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "engine/ord_ird.hpp"
#include "engine/sge.hpp"
#include "provider/core/log.hpp"
#include "provider/core/mw.hpp"
#include "runtime/progress.hpp"
#include "transport/crc32c.hpp"
#include "transport/iwarp_conn.hpp"

namespace eca::transport {

using namespace eca::wire;

IwarpConn::IwarpConn(Qp &qp, LlpConnection &&llp)
    : qp_(qp),
      sock_(runtime::adopt_tcp_socket(llp.fd.release())),
      fd_(sock_.native_handle()),
      fpdu_payload_(config().fpdu_payload),
      qpn_(qp.qpn),
      park_timer_(Progress::instance().io()),
      term_timer_(Progress::instance().io()),
      quiet_timer_(Progress::instance().io()) {
  crc_ = llp.crc;
  rd_ = engine::OrdIrd(llp.ord, llp.ird);
  rtr_recv_ = llp.rtr_recv;
  boost::system::error_code ec;
  sock_.non_blocking(true, ec);
  sock_.set_option(boost::asio::ip::tcp::no_delay(true), ec);
  if (uint32_t idle = config().keepalive_s) {
    // Detects a peer host that vanished without a FIN or RST (a dead process is seen anyway).
    int one = 1, secs = (int)idle, probes = 3;
    ::setsockopt(fd_, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    ::setsockopt(fd_, IPPROTO_TCP, TCP_KEEPIDLE, &secs, sizeof secs);
    ::setsockopt(fd_, IPPROTO_TCP, TCP_KEEPINTVL, &secs, sizeof secs);
    ::setsockopt(fd_, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
  }
  rx_.buf.resize(config().rx_batch);
  // A header plus its body never exceeds the largest FPDU we accept.
  fpdu_payload_ = std::min<uint32_t>(fpdu_payload_, kMaxUlpdu - (uint32_t)kMaxHdr);
}

// ---------------------------------------------------------------------------------------------
// Doorbell: the thread that rings it transmits inline, unless another thread owns the
// transmitter; then that one transmits the new work before it lets go.
//
// The hand-off is the word tx_state_. Every access to it is a read-modify-write (the relaxed
// loads only seed compare-exchange loops), so all of them lie in one modification order and
// each reads the value the one before it wrote:
//  - doorbell(): publishes the work (the SQ tail under sq_mu, or the IRQ/ORQ under tx_mu),
//    then fetch_or(kTxPending), acq_rel.
//  - a transmitter claims with a CAS that clears kTxPending and sets kTxRunning, and leaves
//    with a CAS that clears kTxRunning, but only from a value without kTxPending (or with
//    kTxBlocked); from a value with kTxPending it clears that bit and pumps again.
// No lost wake-up: if a doorbell's fetch_or precedes the transmitter's leaving CAS, that CAS
// reads kTxPending and the transmitter pumps again; if it follows, the fetch_or reads a
// value without kTxRunning and the doorbell's thread claims the transmitter itself. The
// claim or re-pump CAS is an acquire RMW reading from the doorbell's release RMW (or from
// its release sequence, made only of RMWs), so the work published before the doorbell
// happens before the transmitter looks for it (Qp::sq_take's lock-free emptiness check
// included). At most one thread owns the transmitter: kTxRunning is set only by a CAS from
// a value without it. kTxBlocked (socket full) holds doorbells off until writability or a
// polling thread clears it and sets kTxPending in one CAS (tx_unblock_and_run()).

void IwarpConn::doorbell() {
  const uint32_t s = tx_state_.fetch_or(kTxPending, std::memory_order_acq_rel);
  if (s & (kTxRunning | kTxBlocked)) return;  // the owner, or writability, takes it from here
  if (!config().tx_inline && !Progress::instance().on_progress_thread()) {
    auto self = shared_from_this();
    Progress::instance().post([self] {
      if (!self->closed_ || self->lingering_) self->tx_run();
    });
    return;
  }
  tx_run();
}

void IwarpConn::tx_run() {
  uint32_t s = tx_state_.load(std::memory_order_relaxed);
  do {
    if ((s & (kTxRunning | kTxBlocked)) || !(s & kTxPending)) return;
  } while (!tx_state_.compare_exchange_weak(s, (s & ~kTxPending) | kTxRunning,
                                            std::memory_order_acq_rel,
                                            std::memory_order_relaxed));
  for (;;) {
    {
      std::lock_guard lk(tx_mu_);
      if (!tx_stopped_locked()) pump_locked();
    }
    s = tx_state_.load(std::memory_order_relaxed);
    for (;;) {
      if ((s & kTxPending) && !(s & kTxBlocked)) {
        if (tx_state_.compare_exchange_weak(s, s & ~kTxPending, std::memory_order_acq_rel,
                                            std::memory_order_relaxed))
          break;  // new work was announced while we pumped: pump again
      } else if (tx_state_.compare_exchange_weak(s, s & ~kTxRunning, std::memory_order_acq_rel,
                                                 std::memory_order_relaxed)) {
        return;
      }
    }
  }
}

void IwarpConn::tx_unblock_and_run() {
  uint32_t s = tx_state_.load(std::memory_order_relaxed);
  while (!tx_state_.compare_exchange_weak(s, (s & ~kTxBlocked) | kTxPending,
                                          std::memory_order_acq_rel, std::memory_order_relaxed)) {
  }
  tx_run();
}

// ---------------------------------------------------------------------------------------------

// One non-blocking sendmsg() of what is left of the current frame.
ssize_t IwarpConn::send_frame_rest() {
  ECA_ASSERT_HELD(tx_mu_);
  MrUse use;  // the source MRs stay registered for this sendmsg(); a deregistered one ends it
  if (!use.enter(msg_.refs)) {
    errno = EFAULT;
    return -1;
  }
  iovec iov[kMaxSge + 4];
  int n = 0;
  size_t skip = frame_.sent;
  for (int i = 0; i < frame_.iovcnt; i++) {
    const iovec &v = frame_.iov[i];
    if (skip >= v.iov_len) {
      skip -= v.iov_len;
      continue;
    }
    iov[n++] = {static_cast<uint8_t *>(v.iov_base) + skip, v.iov_len - skip};
    skip = 0;
  }
  msghdr mh{};
  mh.msg_iov = iov;
  mh.msg_iovlen = (size_t)n;
  ssize_t r = ::sendmsg(fd_, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (r > 0) frame_.sent += (size_t)r;
  return r;
}

// Transmits until there is nothing to send or the socket is full. tx_mu held, by the owner
// of the transmitter (kTxRunning).
void IwarpConn::pump_locked() {
  ECA_ASSERT_HELD(tx_mu_);
  while (!tx_stopped_locked()) {
    if (!frame_.active) {
      if (term_want_ && msg_.kind != TxMsg::Kind::Terminate) {
        // FPDUs cannot interleave: the TERMINATE follows the frame that was in flight, and
        // the rest of that message is dropped (its work request is flushed).
        msg_ = TxMsg{};
        msg_.kind = TxMsg::Kind::Terminate;
        msg_.op = Opcode::Terminate;
      }
      if (!build_frame_locked()) return;
    }
    // Send what is left of the current frame.
    const ssize_t r = send_frame_rest();
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        wait_writable_locked();
        return;
      }
      if (errno == ENOBUFS || errno == ENOMEM) {
        wait_writable_locked();
        return;
      }
      const int err = errno;
      if (err == EFAULT && source_deregistered_locked()) return;
      fail_from_tx(err);
      // Stop here: the failure handler on the progress thread ends the connection.
      term_sent_ = true;  // nothing more goes out on this stream
      return;
    }
    if (frame_.sent == frame_.total) frame_sent_locked();
  }
}

// The socket is full. Writability is awaited on the progress thread with an Asio wait; the
// epoll reactor reports it edge-triggered, so an edge between our EAGAIN and the arming could
// go unseen: after arming, a zero-timeout poll() catches that case.
void IwarpConn::wait_writable_locked() {
  ECA_ASSERT_HELD(tx_mu_);
  if (tx_state_.fetch_or(kTxBlocked | kTxArmed, std::memory_order_acq_rel) & kTxArmed) return;
  auto self = shared_from_this();
  auto arm = [self] {
    if (self->closed_ && !self->lingering_) return;
    // No cb_mu: the transmitter checks closed_ under tx_mu (close() takes it after setting
    // closed_), and the progress thread must not wait for a polling thread that holds cb_mu.
    auto on_writable = [self](const boost::system::error_code &ec) {
      self->tx_state_.fetch_and(~kTxArmed, std::memory_order_acq_rel);
      if ((self->closed_ && !self->lingering_) || ec) return;  // rx reports a dead connection
      self->tx_unblock_and_run();
    };
    self->sock_.async_wait(boost::asio::ip::tcp::socket::wait_write, on_writable);
    pollfd p{self->fd_, POLLOUT, 0};
    if (::poll(&p, 1, 0) == 1) {
      // Writable already: transmit now. The wait stays armed (kTxArmed stays set) and fires
      // harmlessly on a later writability edge. It must not be cancelled:
      // socket::cancel() also cancels the receive wait of arm_read(), whose handler then
      // returns without re-arming and the receive side stalls for good.
      Progress::instance().post([self] {
        if (!self->closed_ || self->lingering_) self->tx_unblock_and_run();
      });
    }
  };
  if (Progress::instance().on_progress_thread())
    arm();
  else
    Progress::instance().post(arm);
}

// ---------------------------------------------------------------------------------------------
// Message selection: TERMINATE first, then READ responses (the peer waits on them), then the
// send queue in order, honouring ORD and fences.

bool IwarpConn::next_message_locked() {
  ECA_ASSERT_HELD(tx_mu_);
  if (term_queued_ || closed_) return false;  // the stream is ending: take no more work
  if (!irq_.empty() && !irq_active_) {
    IrqEntry &e = irq_.front();
    if (e.atomic) return start_atomic_response_locked(e);
    msg_ = TxMsg{};
    msg_.kind = TxMsg::Kind::ReadResponse;
    msg_.op = Opcode::ReadResponse;
    msg_.length = e.length;
    if (e.length) msg_.src.push_back({e.src.host, (size_t)e.length});
    msg_.refs.push_back(e.src);  // held (MrUse) around every access, like a WQE's sources
    irq_active_ = true;
    return true;
  }
  SendWqe *w = blocked_wqe_ ? blocked_wqe_ : qp_.sq_take();
  // Memory-window binds and invalidations: executed here, in order, with no wire traffic.
  while (w && mw_is_local_op(w->opcode) && !rd_.fence_blocks(w->flags)) {
    blocked_wqe_ = nullptr;
    if (!mw_execute_wqe(qp_, w)) {
      fail_local_async();
      return false;
    }
    w = qp_.sq_take();
  }
  if (!w) return false;
  const engine::SqGate gate = rd_.sq_gate(w->opcode, w->flags);
  if (gate == engine::SqGate::WaitOrd || gate == engine::SqGate::WaitFence) {
    blocked_wqe_ = w;  // resumes when a READ or atomic response completes
    return false;
  }
  blocked_wqe_ = nullptr;
  if (gate == engine::SqGate::RefuseOrd0) {
    // The peer accepts no READs or atomics (IRD 0): a local QP operation error, which ends
    // the stream like any local error, so nothing posted behind it is transmitted.
    engine::refuse_ord0(qp_, w);
    fail_local_async();
    return false;
  }
  return start_wqe_locked(w);
}

namespace {

Opcode send_opcode(const SendWqe &w) {
  bool se = (w.flags & IBV_SEND_SOLICITED) != 0;
  if (w.opcode == IBV_WR_SEND_WITH_INV) return se ? Opcode::SendSolicitedInvalidate : Opcode::SendInvalidate;
  return se ? Opcode::SendSolicited : Opcode::Send;
}

}  // namespace

// A local error ends the stream (by default with an RDMAP local catastrophic error). Work
// posted behind it is flushed, not transmitted (term_queued_), even before the progress
// thread has moved the QP to ERROR; the transition runs there, never on the posting thread.
// tx_mu held.
void IwarpConn::fail_local_async(const TermInfo &t) {
  term_queued_ = true;
  auto self = shared_from_this();
  Progress::instance().post([self, t] {
    std::lock_guard cb(self->cb_mu_);
    if (self->closed_) return;
    self->fail_terminate(t, IBV_WC_WR_FLUSH_ERR);
  });
}

// send_frame_rest() found a source MR of the current message deregistered (kMrDead is final,
// so nothing of it is read again). Its work request fails with a local protection error; a
// READ response whose source STag went away answers the peer's READ with the TERMINATE for
// an invalid STag (RFC 5040 remote protection error). Between FPDUs the frame is dropped and
// the TERMINATE goes out next; returns false in the middle of an FPDU, where the stream can
// only be reset (the caller does that). tx_mu held.
bool IwarpConn::source_deregistered_locked() {
  ECA_ASSERT_HELD(tx_mu_);
  ECA_QP_LOG(Info, qp_.qpn, "%s source deregistered under the message",
             msg_.kind == TxMsg::Kind::ReadResponse ? "RDMA Read" : "work request");
  if (msg_.kind == TxMsg::Kind::Wqe && !qp_detached_) qp_.sq_done(msg_.wqe, IBV_WC_LOC_PROT_ERR);
  const bool read_response = msg_.kind == TxMsg::Kind::ReadResponse;
  msg_ = TxMsg{};  // nothing more of it is framed
  if (frame_.sent) return false;
  frame_.active = false;
  fail_local_async(read_response
                       ? term_for_read_source(AccessError::InvalidStag)
                       : TermInfo{TermLayer::Rdmap, kRdmapLocalCatastrophic, kRdmapUnspecified});
  return true;
}

bool IwarpConn::start_wqe_locked(SendWqe *w) {
  ECA_ASSERT_HELD(tx_mu_);
  msg_ = TxMsg{};
  msg_.kind = TxMsg::Kind::Wqe;
  msg_.wqe = w;
  msg_.length = w->total_len;
  // READ and atomics: the local SGEs are the sink of the response (local write access).
  const bool is_read = engine::uses_ord(w->opcode);  // sq_gate() refused these with ORD 0
  // Validate and map the local SGEs (READ: the sink, needing local write access).
  engine::SgeMap map;
  uint32_t bad = 0;
  if (const ibv_wc_status st =
          engine::map_send_sges(qp_.pd, *w, is_read ? IBV_ACCESS_LOCAL_WRITE : 0, &map, &bad)) {
    ECA_QP_LOG(Info, qp_.qpn, "local protection error on wr_id %llu (sge %u, lkey 0x%x)",
               (unsigned long long)w->wr_id, bad, w->sge[bad].lkey);
    qp_.sq_done(w, st);
    msg_.kind = TxMsg::Kind::None;
    fail_local_async();
    return false;
  }
  msg_.src.assign(map.iov.begin(), map.iov.begin() + map.n);
  std::vector<MrRef> refs;
  if (!(w->flags & IBV_SEND_INLINE))
    refs.assign(std::make_move_iterator(map.refs.begin()),
                std::make_move_iterator(map.refs.begin() + map.n));
  // READ and atomics: the mapped SGEs are the sink of the response; the request waits on the
  // ORQ, counted against ORD.
  auto to_orq = [&](OrqEntry o) {
    o.wqe = w;
    o.sinks = std::move(refs);
    o.sink_iov = std::move(msg_.src);
    msg_.src.clear();
    orq_.push_back(std::move(o));
    rd_.request_sent();
    orq_size_.store((uint32_t)orq_.size(), std::memory_order_release);
  };
  switch (w->opcode) {
    case IBV_WR_RDMA_READ: {
      OrqEntry o;
      o.sink_stag = w->num_sge ? w->sge[0].lkey : 0;
      o.sink_to = w->num_sge ? w->sge[0].addr : 0;
      o.length = w->total_len;
      to_orq(std::move(o));
      msg_.op = Opcode::ReadRequest;
      msg_.length = 0;  // the request carries no payload
      msg_.msn = msn_rreq_++;
      break;
    }
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
    case IBV_WR_ATOMIC_CMP_AND_SWP: {
      OrqEntry o;
      o.atomic = true;
      o.req_id = ++atomic_req_id_;
      o.length = kAtomicLen;
      to_orq(std::move(o));
      msg_.areq = w->opcode == IBV_WR_ATOMIC_FETCH_AND_ADD
                      ? verbs_fetch_add(w->rkey, w->remote_addr, w->compare_add)
                      : verbs_compare_swap(w->rkey, w->remote_addr, w->compare_add, w->swap);
      msg_.areq.req_id = atomic_req_id_;
      msg_.op = Opcode::AtomicRequest;
      msg_.length = 0;
      msg_.msn = msn_rreq_++;  // RFC 7306: the same untagged queue as RDMA Read Requests
      break;
    }
    case IBV_WR_RDMA_WRITE:
      msg_.op = Opcode::Write;
      break;
    case IBV_WR_RDMA_WRITE_WITH_IMM:
      msg_.op = Opcode::Write;
      msg_.imm_pending = true;
      break;
    default:
      msg_.op = send_opcode(*w);
      msg_.msn = msn_send_++;
      break;
  }
  if (!is_read) msg_.refs = std::move(refs);
  return true;
}

// Frames the next FPDU of the current message into frame_.
bool IwarpConn::build_frame_locked() {
  ECA_ASSERT_HELD(tx_mu_);
  if (msg_.kind == TxMsg::Kind::None && !next_message_locked()) return false;
  const OpInfo &oi = kOps[static_cast<size_t>(msg_.op)];
  uint8_t *h = frame_.hdr.data();
  std::memset(h, 0, oi.hdr_len);
  // Equal-sized FPDUs: a 64 KiB message becomes 2 x 32 KiB rather than 65000 + 536 bytes.
  const uint64_t rest = msg_.length - msg_.offset;
  const uint64_t nframes = (rest + fpdu_payload_ - 1) / fpdu_payload_;
  const uint64_t chunk = nframes ? (rest + nframes - 1) / nframes : 0;
  const bool last = msg_.offset + chunk == msg_.length;
  put_ctrl(h, msg_.op, last);
  const SendWqe *w = msg_.wqe;
  switch (msg_.op) {
    case Opcode::Write:
      st32(h + off::kStag, w->rkey);
      st64(h + off::kTo, w->remote_addr + msg_.offset);
      break;
    case Opcode::ReadResponse: {
      const IrqEntry &e = irq_.front();
      st32(h + off::kStag, e.sink_stag);
      st64(h + off::kTo, e.sink_to + msg_.offset);
      break;
    }
    case Opcode::ReadRequest: {
      const OrqEntry &o = orq_.back();
      st32(h + off::kQn, (uint32_t)Queue::ReadRequest);
      st32(h + off::kMsn, msg_.msn);
      st32(h + off::kSinkStag, o.sink_stag);
      st64(h + off::kSinkTo, o.sink_to);
      st32(h + off::kReadSize, (uint32_t)o.length);
      st32(h + off::kSrcStag, w->rkey);
      st64(h + off::kSrcTo, w->remote_addr);
      break;
    }
    case Opcode::AtomicRequest:
      st32(h + off::kQn, (uint32_t)Queue::ReadRequest);
      st32(h + off::kMsn, msg_.msn);
      put_atomic_request(h, msg_.areq);
      break;
    case Opcode::AtomicResponse:
      st32(h + off::kQn, (uint32_t)Queue::AtomicResponse);
      st32(h + off::kMsn, msg_.msn);
      put_atomic_response(h, msg_.aresp);
      break;
    case Opcode::Terminate:
      st32(h + off::kQn, (uint32_t)Queue::Terminate);
      st32(h + off::kMsn, 1);
      st32(h + off::kTermCtrl, term_word(term_));
      break;
    case Opcode::ImmediateData:
    case Opcode::ImmediateDataSolicited:
      st32(h + off::kQn, (uint32_t)Queue::Send);
      st32(h + off::kMsn, msg_.msn);
      std::memcpy(h + off::kImmData, &w->imm_data, sizeof(w->imm_data));
      break;
    default:  // the SEND family
      st32(h + off::kRsvdUlp, w->invalidate_rkey);
      st32(h + off::kQn, (uint32_t)Queue::Send);
      st32(h + off::kMsn, msg_.msn);
      st32(h + off::kMo, (uint32_t)msg_.offset);
      break;
  }
  const size_t ulpdu = oi.hdr_len - kMpaLenBytes + chunk;
  st16(h, (uint16_t)ulpdu);
  const size_t pad = mpa_pad(ulpdu);

  int n = 0;
  frame_.iov[n++] = {h, oi.hdr_len};
  uint32_t crc = crc_ ? crc32c_update(kCrcInit, h, oi.hdr_len) : 0;
  uint64_t left = chunk;
  // The CRC reads the payload: only while its MRs are held. If one is being deregistered,
  // send_frame_rest() fails the same way (kMrDead is final) and the stream ends.
  MrUse use;
  const bool crc_ok = crc_ && chunk && use.enter(msg_.refs);
  while (left) {
    const iovec &s = msg_.src[msg_.seg];
    size_t take = std::min<uint64_t>(left, s.iov_len - msg_.seg_off);
    void *p = static_cast<uint8_t *>(s.iov_base) + msg_.seg_off;
    frame_.iov[n++] = {p, take};
    if (crc_ok) crc = crc32c_update(crc, p, take);
    left -= take;
    msg_.seg_off += take;
    if (msg_.seg_off == s.iov_len) {
      msg_.seg++;
      msg_.seg_off = 0;
    }
  }
  // Trailer: pad, then the MPA CRC field, which RFC 5044 keeps in every FPDU; it carries
  // zero when CRC was not negotiated (and the receiver does not check it).
  const size_t tl = pad + kMpaCrcBytes;
  std::memset(frame_.trailer.data(), 0, 8);
  if (crc_) {
    if (pad) crc = crc32c_update(crc, frame_.trailer.data(), pad);
    uint32_t le = htole32(crc32c_final(crc));
    std::memcpy(frame_.trailer.data() + pad, &le, 4);
  }
  frame_.iov[n++] = {frame_.trailer.data(), tl};
  frame_.iovcnt = n;
  frame_.total = oi.hdr_len + chunk + tl;
  frame_.sent = 0;
  frame_.active = true;
  frame_.last_of_msg = last;
  msg_.offset += chunk;
  return true;
}

void IwarpConn::frame_sent_locked() {
  ECA_ASSERT_HELD(tx_mu_);
  frame_.active = false;
  if (!frame_.last_of_msg) return;
  switch (msg_.kind) {
    case TxMsg::Kind::Wqe:
      if (msg_.op == Opcode::ReadRequest || msg_.op == Opcode::AtomicRequest)
        break;  // completes when the response arrives
      if (msg_.imm_pending) {
        // WRITE_WITH_IMM: the RFC 7306 Immediate Data message follows the WRITE.
        SendWqe *w = msg_.wqe;
        msg_ = TxMsg{};
        msg_.kind = TxMsg::Kind::Wqe;
        msg_.wqe = w;
        msg_.op = (w->flags & IBV_SEND_SOLICITED) ? Opcode::ImmediateDataSolicited
                                                  : Opcode::ImmediateData;
        msg_.msn = msn_send_++;
        return;
      }
      // Handed to the socket in full: a success, even if close() began meanwhile (closed_ is
      // set before close() waits for tx_mu, and the flush that follows must not claim this
      // WQE). Only once close() holds tx_mu may the Qp be gone: then it was flushed.
      if (!qp_detached_) qp_.sq_done(msg_.wqe, IBV_WC_SUCCESS);
      break;
    case TxMsg::Kind::ReadResponse:
    case TxMsg::Kind::AtomicResponse:
      irq_.pop_front();
      rd_.inbound_done();
      irq_active_ = false;
      break;
    case TxMsg::Kind::Terminate:
      term_sent_locked();
      break;
    case TxMsg::Kind::None:
      break;
  }
  msg_ = TxMsg{};
}

// ---------------------------------------------------------------------------------------------
// TERMINATE: queued by fail_terminate() and sent by the ordinary transmitter after the FPDU in
// flight; nobody waits for the socket. A close() that comes before it left lingers for it,
// bounded by term_timer_.

void IwarpConn::term_sent_locked() {
  ECA_ASSERT_HELD(tx_mu_);
  term_sent_ = true;
  ::shutdown(fd_, SHUT_WR);  // FIN after the TERMINATE: the peer reads it, then sees EOF
  if (lingering_) {
    auto self = shared_from_this();
    Progress::instance().post([self] {
      std::lock_guard cb(self->cb_mu_);
      self->end_linger();
    });
  }
}

void IwarpConn::fail_from_tx(int err) {
  ECA_QP_LOG(Info, qpn_, "transmit failed: %s", strerror(err));
  auto self = shared_from_this();
  Progress::instance().post([self] {
    std::lock_guard cb(self->cb_mu_);
    if (self->closed_) return;
    self->fail_llp(LlpEnd::Reset, IBV_WC_WR_FLUSH_ERR);
  });
}

}  // namespace eca::transport

// Receive direction of a software iWARP QP: MPA FPDUs -> DDP segments -> RDMAP messages.
//
// A resumable state machine (Header -> Payload -> Trailer) that can stop at any byte. Headers
// and small frames are read in batches into a staging buffer; the rest of a large payload is
// received straight into its registered destination (readv into the target segments). Every
// field that comes off the wire is validated before it is used: opcode, versions, lengths,
// queue numbers, MSN/MO, STags and bounds. Errors end the stream with a TERMINATE.
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>

#include "engine/sge.hpp"
#include "provider/core/log.hpp"
#include "runtime/progress.hpp"
#include "transport/crc32c.hpp"
#include "transport/iwarp_conn.hpp"

namespace eca::transport {

using namespace eca::wire;

namespace {

// Adds staged bytes to a fixed-size part of an FPDU (its header or its CRC trailer) until the
// part holds `need` bytes; returns how many of the `avail` bytes at `p` it took.
size_t fill_part(uint8_t *part, size_t &have, size_t need, const uint8_t *p, size_t avail) {
  const size_t take = std::min(avail, need - have);
  std::memcpy(part + have, p, take);
  have += take;
  return take;
}

constexpr size_t kRxBudget = 4u << 20;       // bytes per handler run before yielding
constexpr size_t kPollBudget = 256u << 10;   // bytes per ibv_poll_cq() call that receives
constexpr size_t kDirectMin = 2048;          // payload left that is worth a direct recv
constexpr auto kParkTick = std::chrono::milliseconds(1);
constexpr auto kTermLinger = std::chrono::seconds(1);  // a closed QP waits this long for its TERMINATE
// Quiet (see "Quiet"): after this many receive runs by pollers the socket stops waking the
// progress thread; the watchdog gives it back when no poller looked for a whole period.
constexpr uint32_t kQuietAfterLooks = 32;
constexpr auto kQuietCheck = std::chrono::milliseconds(2);
// SO_RCVLOWAT while quiet: the kernel caps it at half the largest receive buffer; a backlog
// this large (or memory pressure) still wakes the progress thread to help.
constexpr int kQuietLowat = 16 << 20;


}  // namespace

// ---------------------------------------------------------------------------------------------
// Error mapping tables

// The TERMINATE a failed access check earns, by AccessError: as the target of a tagged
// message (DDP tagged buffer errors, RFC 5041) and as the source of an RDMA READ or the target
// of an atomic (RDMAP remote protection errors, RFC 5040).
constexpr struct {
  AccessError e;
  TermInfo tagged, read_source;
} kTermForAccess[] = {
    {AccessError::None, {TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapUnspecified},
     {TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapUnspecified}},
    {AccessError::InvalidStag, {TermLayer::Ddp, kDdpTaggedError, kDdpTInvalidStag},
     {TermLayer::Rdmap, kRdmapRemoteProtection, kRdmapInvalidStag}},
    {AccessError::ProtDomain, {TermLayer::Ddp, kDdpTaggedError, kDdpTStagNotAssoc},
     {TermLayer::Rdmap, kRdmapRemoteProtection, kRdmapStagNotAssoc}},
    {AccessError::Access, {TermLayer::Rdmap, kRdmapRemoteProtection, kRdmapAccessRights},
     {TermLayer::Rdmap, kRdmapRemoteProtection, kRdmapAccessRights}},
    {AccessError::Bounds, {TermLayer::Ddp, kDdpTaggedError, kDdpTBaseBounds},
     {TermLayer::Rdmap, kRdmapRemoteProtection, kRdmapBaseBounds}},
};
static_assert(std::size(kTermForAccess) == (size_t)AccessError::Bounds + 1);
static_assert([] {
  for (size_t i = 0; i < std::size(kTermForAccess); i++)
    if ((size_t)kTermForAccess[i].e != i) return false;
  return true;
}());

TermInfo term_for_tagged(AccessError e) { return kTermForAccess[(size_t)e].tagged; }
TermInfo term_for_read_source(AccessError e) { return kTermForAccess[(size_t)e].read_source; }

// How a TERMINATE from the peer is reported on our oldest outstanding work request.
ibv_wc_status wc_status_for_term(const TermInfo &t) {
  switch (t.layer) {
    case TermLayer::Rdmap:
      if (t.etype == kRdmapRemoteProtection) return IBV_WC_REM_ACCESS_ERR;
      // RFC 7306: a malformed Atomic Request (misaligned, reserved AOpCode)
      if (t.etype == kRdmapRemoteOperation && t.code == kRdmapInvalidAtomicRequest)
        return IBV_WC_REM_INV_REQ_ERR;
      return IBV_WC_REM_OP_ERR;
    case TermLayer::Ddp:
      if (t.etype == kDdpTaggedError) return IBV_WC_REM_ACCESS_ERR;
      if (t.etype == kDdpUntaggedError) return IBV_WC_REM_INV_REQ_ERR;
      return IBV_WC_REM_OP_ERR;
    default:
      return IBV_WC_REM_OP_ERR;
  }
}

// ---------------------------------------------------------------------------------------------

void IwarpConn::start() {
  auto self = shared_from_this();
  Progress::instance().post([self] {
    std::lock_guard cb(self->cb_mu_);
    if (self->closed_) return;
    // Bytes may already be waiting (the peer sends right after the MPA reply).
    self->on_readable();
  });
}

// ---------------------------------------------------------------------------------------------
// Hand-back: who receives.
//
// The receive side belongs to whoever holds cb_mu: the progress thread, woken by the read wait
// (arm_read()) or by a posted rx_handler(), or an application thread in ibv_poll_cq()
// (poll_progress()), which only try-locks it. The progress thread never waits for a poller
// (that would stall every other connection) and never retries on a timer: when its try-lock
// fails it hands the work to the holder through rx_pending_.
//  - Setter, the progress thread only (rx_handler()): rx_pending_.store(true), a seq_cst
//    fence, one more try-lock of cb_mu. Got it: it clears rx_pending_ and receives itself.
//    Else it returns; the holder has the work.
//  - Holder, a polling thread (rx_unlock()): before it unlocks, exchange(false) of
//    rx_pending_; if it was set, it drains the socket itself (rx_process()), which leaves the
//    read wait armed when it finds the socket empty (rx_would_block()); only when it stops on
//    its budget with bytes left does it post rx_handler() to the progress thread. Then it
//    unlocks, a seq_cst fence, and loads rx_pending_: still clear, done; set, it try-locks
//    cb_mu again and repeats (a failed try-lock means a new holder, which runs the same check
//    before it lets go).
// No lost wake-up: the two fences are totally ordered. If the setter's comes first, the
// holder's load after its unlock sees rx_pending_ set (or already cleared by a thread that
// took the work over); if the holder's comes first, the setter's second try-lock sees cb_mu
// released. A flag left set by a race costs one redundant receive run, nothing else.
// close() holds cb_mu from an application thread too but takes no hand-back: after it,
// nothing receives. Progress-thread holders (timers, posted handlers) never meet a setter:
// the setter is that same thread.
//
// The read wait (rx_armed_): whichever thread finds the socket empty, the progress thread or
// a poller, makes sure one wait is armed (rx_would_block(), under cb_mu); rx_armed_ keeps it
// to one, so a hand-back or a posted run costs no second wait and no second handler. Arming
// from a poller is safe against a lost edge: Asio arms a wait with epoll_ctl(EPOLL_CTL_MOD),
// which looks at the socket again and reports data that came after the poller's recv(). A
// poller that took a hand-back therefore re-arms with one epoll_ctl instead of waking the
// progress thread (which then found the socket empty, re-armed, and met the poller again on
// its next run: a wake-up and three system calls per round, for as long as it polled).
//
// A busy poller still calls recv() once per poll while it waits (a poller that skipped the
// socket until the read wait reported readiness made the progress thread pace the receive:
// on a loaded machine, where it is not scheduled promptly, 4 MiB ib_send_bw fell to a
// quarter). What it no longer does is end each receive run with an EAGAIN: a short recv()
// already says the socket is empty (rx_would_block()).

// cb_mu held (any thread): at most one read wait at a time.
void IwarpConn::arm_read() {
  ECA_ASSERT_HELD(cb_mu_);
  if (rx_armed_.exchange(true, std::memory_order_acq_rel)) return;
  auto self = shared_from_this();
  sock_.async_wait(boost::asio::ip::tcp::socket::wait_read,
                   [self](const boost::system::error_code &ec) {
                     if (ec == boost::asio::error::operation_aborted) return;
                     self->rx_armed_.store(false, std::memory_order_release);
                     self->rx_handler();
                   });
}

// Progress thread: receives, or hands the work to the polling thread that holds cb_mu.
void IwarpConn::rx_handler() {
  std::unique_lock cb(cb_mu_, std::try_to_lock);
  if (!cb.owns_lock()) {
    rx_pending_.store(true, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!cb.try_lock()) return;  // the holder takes over (rx_unlock())
    rx_pending_.store(false, std::memory_order_relaxed);
  }
  if (closed_ || ended_ || rx_.parked) return;
  on_readable();
}

// A polling thread lets go of cb_mu, taking over what the progress thread handed back
// meanwhile. `more`: its rx_process() stopped on the budget with bytes left.
void IwarpConn::rx_unlock(std::unique_lock<Mutex> &cb, bool more) {
  for (;;) {
    if (rx_pending_.exchange(false, std::memory_order_acq_rel)) {
      // Drained: rx_process() left the read wait armed. Budget used up: the progress thread
      // continues.
      if (!closed_ && !ended_ && !rx_.parked && rx_process(kPollBudget)) more = true;
    }
    cb.unlock();
    if (more) {
      auto self = shared_from_this();
      Progress::instance().post([self] { self->rx_handler(); });
      more = false;
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!rx_pending_.load(std::memory_order_relaxed) || !cb.try_lock()) return;
  }
}

// Progress thread, cb_mu held.
void IwarpConn::on_readable() {
  if (rx_process(kRxBudget)) {
    if (closed_ || ended_ || rx_.parked) return;
    // Budget used up: let other connections run, then continue.
    auto self = shared_from_this();
    Progress::instance().post([self] { self->rx_handler(); });
  }
}

// An application thread found one of our CQs empty (ibv_poll_cq): it transmits what waits
// for socket room, and receives and places what has arrived, itself, instead of waiting for
// the progress thread to be scheduled. Never blocks: cb_mu is only tried (when the progress
// thread or another poller is receiving, they do it). System calls: none for transmission
// unless the socket was full; one recv() when data may be due (rx_expected()).
void IwarpConn::poll_progress() {
  if (tx_state_.load(std::memory_order_relaxed) & kTxBlocked) {
    if (closed_) return;
    tx_unblock_and_run();
  }
  if (closed_.load(std::memory_order_relaxed) || rx_.parked.load(std::memory_order_relaxed) ||
      !rx_expected())
    return;
  std::unique_lock cb(cb_mu_, std::try_to_lock);
  if (!cb.owns_lock()) return;
  // Budget used up with more to come: the progress thread continues (its read wait only
  // fires for new data).
  const bool more = !closed_ && !ended_ && !rx_.parked && rx_process(kPollBudget);
  poll_looks_.fetch_add(1, std::memory_order_relaxed);
  if (!quiet_.load(std::memory_order_relaxed) && ++loud_looks_ >= kQuietAfterLooks &&
      !closed_ && !ended_)
    quiet_enter();
  rx_unlock(cb, more);
}

// ---------------------------------------------------------------------------------------------
// Quiet: while an application thread polls, arriving data does not wake the progress thread.
//
// The socket is registered with the progress thread's epoll edge-triggered for as long as it
// is open (Asio), so every arrival woke the progress thread, even with no read wait armed,
// and a busy poller that had already taken the data lost its CPU to it (on two loaded cores,
// thousands of wake-ups a second, each a context switch on the critical path). After
// kQuietAfterLooks receive runs by pollers, quiet_enter() raises SO_RCVLOWAT: the kernel
// reports the socket readable (and wakes the epoll) only once kQuietLowat bytes wait, on
// memory pressure, at the end of the stream or on an error; a poller's non-blocking recv()
// still returns whatever is there. Two ways back, both through quiet_leave(), which sets
// SO_RCVLOWAT to 1 (the kernel then reports readiness at once if data waits, so nothing
// that arrived while quiet is left unseen) and makes sure the read wait is armed:
//  - the watchdog (quiet_check(), every kQuietCheck on the progress thread) finds that no
//    poller looked at the socket for a whole period: one-sided work the application does not
//    poll for is placed by the progress thread again within two periods;
//  - the application arms one of our CQs (cq_armed()): it is about to wait for an event, so
//    the progress thread must receive. Posted, so that it runs at once.
// quiet_ is written under cb_mu only; costs: two setsockopt() calls per quiet spell and a
// timer tick per kQuietCheck while it lasts, instead of a wake-up per arrival. The watchdog
// takes no lock unless it leaves, and then only tries cb_mu (a holder is a poller).

void IwarpConn::quiet_enter() {
  ECA_ASSERT_HELD(cb_mu_);
  int lowat = kQuietLowat;
  if (::setsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat) != 0) {
    loud_looks_ = 0;  // stays loud; tried again after another kQuietAfterLooks
    return;
  }
  quiet_.store(true, std::memory_order_relaxed);
  auto self = shared_from_this();
  Progress::instance().post([self] {
    if (!self->quiet_.load(std::memory_order_relaxed) || self->closed_) return;
    self->quiet_seen_ = self->poll_looks_.load(std::memory_order_relaxed);
    self->quiet_watch();
  });
}

// Progress thread: the watchdog looks again after kQuietCheck. Re-arming the timer cancels a
// wait still pending, so there is one watchdog however often quiet begins.
void IwarpConn::quiet_watch() {
  auto self = shared_from_this();
  quiet_timer_.expires_after(kQuietCheck);
  quiet_timer_.async_wait([self](const boost::system::error_code &ec) {
    if (!ec) self->quiet_check();
  });
}

// Progress thread, no lock: it never waits for a poller. A poller that looked since the last
// run, or holds cb_mu now, is still polling.
void IwarpConn::quiet_check() {
  if (!quiet_.load(std::memory_order_relaxed) || closed_) return;
  const uint32_t looks = poll_looks_.load(std::memory_order_relaxed);
  if (looks == quiet_seen_) {
    std::unique_lock cb(cb_mu_, std::try_to_lock);
    if (cb.owns_lock()) return quiet_leave();
  }
  quiet_seen_ = looks;
  quiet_watch();
}

void IwarpConn::quiet_leave() {
  ECA_ASSERT_HELD(cb_mu_);
  if (!quiet_.exchange(false, std::memory_order_relaxed)) return;
  loud_looks_ = 0;
  int lowat = 1;
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat);
  if (!closed_ && !ended_ && !rx_.parked) arm_read();
}

// Any thread (ibv_req_notify_cq); never blocks.
void IwarpConn::cq_armed() {
  if (!quiet_.load(std::memory_order_relaxed)) return;
  auto self = shared_from_this();
  Progress::instance().post([self] {
    std::lock_guard cb(self->cb_mu_);
    if (!self->closed_) self->quiet_leave();
  });
}

// Whether the peer may have sent something the application waits for: a receive is posted
// (a SEND, or an RDMA WRITE with immediate data, can arrive), one of our RDMA READs awaits
// its response, or a frame is half received. Otherwise an empty poll makes no system call:
// an RDMA WRITE that completes nothing here is placed by the progress thread.
bool IwarpConn::rx_expected() const {
  return qp_.rq_maybe_posted() || orq_size_.load(std::memory_order_relaxed) != 0;
}

// Returns true when the budget ran out with more to do; false when it stopped (would block:
// then a read wait is armed; closed; or parked).
bool IwarpConn::rx_process(size_t budget) {
  size_t done = 0;
  bool empty = false;  // the last recv() was short: the socket had no more
  while (done < budget) {
    if (closed_ || ended_ || rx_.parked) return false;
    // 1. Run the state machine over staged bytes.
    while (rx_.buf_pos < rx_.buf_end) {
      if (closed_ || ended_ || rx_.parked) return false;
      const uint8_t *p = rx_.buf.data() + rx_.buf_pos;
      size_t avail = rx_.buf_end - rx_.buf_pos;
      switch (rx_.phase) {
        case RxState::Phase::Header:
          rx_.buf_pos += fill_part(rx_.hdr.data(), rx_.hdr_have, rx_.hdr_need, p, avail);
          if (rx_.hdr_have == rx_.hdr_need && !rx_header_complete()) return false;
          break;
        case RxState::Phase::Payload: {
          size_t take = std::min<uint64_t>(avail, rx_.payload_len - rx_.payload_done);
          rx_place(p, take);
          rx_.buf_pos += take;
          break;
        }
        case RxState::Phase::Trailer:
          rx_.buf_pos += fill_part(rx_.trailer.data(), rx_.trailer_have, rx_.trailer_len, p, avail);
          if (rx_.trailer_have == rx_.trailer_len && !rx_segment_done()) return false;
          break;
      }
    }
    // 2. Read more from the socket (the staging buffer is empty here).
    rx_.buf_pos = rx_.buf_end = 0;
    if (empty) return rx_would_block();
    ssize_t n;
    if (rx_.phase == RxState::Phase::Payload && rx_.payload_len - rx_.payload_done >= kDirectMin) {
      n = rx_direct_recv();
      if (closed_ || ended_) return false;
      if (n > 0) {
        done += (size_t)n;
        continue;
      }
    } else {
      size_t want = rx_.buf.size();
      if (rx_.large_mode) want = std::min<size_t>(want, kMaxHdr + 8);  // the next header only
      n = ::recv(fd_, rx_.buf.data(), want, MSG_DONTWAIT);
      if (n > 0) {
        rx_.buf_end = (size_t)n;
        done += (size_t)n;
        empty = (size_t)n < want;
        continue;
      }
    }
    if (n == 0) {
      ECA_QP_LOG(Info, qp_.qpn, "peer closed the connection");
      fail_llp(LlpEnd::PeerClosed, IBV_WC_WR_FLUSH_ERR);
      return false;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return rx_would_block();
    ECA_QP_LOG(Info, qp_.qpn, "receive failed: %s", strerror(errno));
    fail_llp(LlpEnd::Reset, IBV_WC_WR_FLUSH_ERR);
    return false;
  }
  return true;
}

// The socket has nothing more (EAGAIN, or a recv() that came back short: TCP hands over all
// it holds, and what arrives later raises a new readiness edge): the read wait is armed, by
// this thread if it is not already (see "Hand-back"). cb_mu held.
bool IwarpConn::rx_would_block() {
  arm_read();
  return false;
}

// Receives payload straight into the target memory; the same readv also takes the trailer
// and whatever follows (the next header) into the staging buffer, so a large FPDU costs one
// system call. readv semantics: bytes, 0 on EOF, -1 with errno.
ssize_t IwarpConn::rx_direct_recv() {
  MrUse use;
  if (!rx_enter_target(use)) return -1;
  iovec iov[kMaxSge + 3];
  const size_t want = rx_.payload_len - rx_.payload_done;
  const uint64_t at = rx_.target_base + rx_.payload_done;
  const int k = (int)engine::slice(rx_.target, at, at + want, iov, kMaxSge + 1);
  size_t direct = 0;
  for (int i = 0; i < k; i++) direct += iov[i].iov_len;
  const size_t tl = rx_.trailer_len;
  int n_iov = k;
  if (direct == want) {  // the whole rest of the payload fits: append trailer and staging
    if (tl) iov[n_iov++] = {rx_.trailer.data(), tl};
    iov[n_iov++] = {rx_.buf.data(), rx_.buf.size()};
  }
  ssize_t n = ::readv(fd_, iov, n_iov);
  if (n <= 0) return n;
  size_t left = (size_t)n;
  for (int i = 0; i < k && left; i++) {
    size_t c = std::min(left, iov[i].iov_len);
    if (crc_) rx_.crc = crc32c_update(rx_.crc, iov[i].iov_base, c);
    rx_.payload_done += c;
    left -= c;
  }
  if (rx_.payload_done < rx_.payload_len) return n;
  rx_.phase = RxState::Phase::Trailer;
  if (n_iov > k) {
    size_t t = std::min(left, tl);
    rx_.trailer_have = t;
    left -= t;
    rx_.buf_pos = 0;
    rx_.buf_end = left;  // bytes of the next FPDU(s), consumed by the state machine
  }
  if (rx_.trailer_have == rx_.trailer_len) rx_segment_done();
  return n;
}

// The MRs behind rx_.target, held for one access (see MrUse). False: one was deregistered
// under the message, and nothing more is placed; the stream ends. Our STag named by the peer
// (RDMA WRITE): the TERMINATE for an invalid STag. A local SGE (READ response sink, receive
// buffer): the work request fails with a local protection error and the TERMINATE reports a
// local catastrophic error, as for a receive SGE that fails its lookup (siw does the same).
bool IwarpConn::rx_enter_target(MrUse &use) {
  if (rx_.target.empty()) return true;
  if (rx_.opcode == Opcode::Write) {
    if (use.enter(rx_.tagged_ref)) return true;
    ECA_QP_LOG(Info, qp_.qpn, "RDMA Write target deregistered under the message");
    fail_terminate(term_for_tagged(AccessError::InvalidStag), IBV_WC_WR_FLUSH_ERR);
    return false;
  }
  const bool read = rx_.opcode == Opcode::ReadResponse;
  if (use.enter(read ? rx_.orq->sinks : rx_.rqe_refs)) return true;
  ECA_QP_LOG(Info, qp_.qpn, "%s deregistered under the message",
             read ? "RDMA Read sink" : "receive buffer");
  ibv_wc_status sq_status = IBV_WC_WR_FLUSH_ERR;
  if (read) {
    sq_status = IBV_WC_LOC_PROT_ERR;  // the READ is the oldest outstanding send WQE
  } else {
    qp_.rq_done(rx_.rqe, IBV_WC_LOC_PROT_ERR, 0, false, 0);
    rx_.have_rqe = false;
    rx_.rqe_refs.clear();
  }
  fail_terminate({TermLayer::Rdmap, kRdmapLocalCatastrophic, kRdmapUnspecified}, sq_status);
  return false;
}

void IwarpConn::rx_place(const uint8_t *src, size_t n) {
  if (n) {
    MrUse use;
    if (!rx_enter_target(use)) return;
    const uint64_t at = rx_.target_base + rx_.payload_done;
    engine::scatter_copy(src, rx_.target, at, at + n);
    if (crc_) rx_.crc = crc32c_update(rx_.crc, src, n);
    rx_.payload_done += n;
  }
  if (rx_.payload_done == rx_.payload_len) {
    rx_.phase = RxState::Phase::Trailer;
  }
}

// A complete header is in rx_.hdr. Validates it and sets up the placement of its payload.
// Returns false when processing must stop (error, or parked waiting for a receive buffer).
bool IwarpConn::rx_header_complete() {
  const uint8_t *h = rx_.hdr.data();
  if (rx_.hdr_need == 4) {
    // Length and control word: find out how long the header is.
    const uint8_t c0 = h[off::kCtrl], c1 = h[off::kCtrl + 1];
    const uint8_t opc = c1 & 0x0f;
    const OpInfo &oi = kOps[opc];
    const bool tagged = (c0 & kDdpTagged) != 0;
    if ((c0 & 0x03) != kDdpVersion) {
      fail_terminate({TermLayer::Ddp, tagged ? kDdpTaggedError : kDdpUntaggedError,
                      tagged ? kDdpTInvalidVersion : kDdpUInvalidVersion},
                     IBV_WC_WR_FLUSH_ERR);
      return false;
    }
    if ((c1 & 0xc0) != kRdmapVersion) {
      fail_terminate({TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapInvalidVersion},
                     IBV_WC_WR_FLUSH_ERR);
      return false;
    }
    if (!oi.valid || oi.tagged != tagged) {
      ECA_QP_LOG(Info, qp_.qpn, "unexpected opcode %u (tagged %d)", opc, tagged);
      fail_terminate({TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapUnexpectedOpcode},
                     IBV_WC_WR_FLUSH_ERR);
      return false;
    }
    const size_t ulpdu = ld16(h);
    if (ulpdu + kMpaLenBytes < oi.hdr_len) {
      ECA_QP_LOG(Info, qp_.qpn, "FPDU of %zu bytes too short for %s", ulpdu, oi.name);
      fail_terminate({TermLayer::Llp, 0, kMpaInvalidFpdu}, IBV_WC_WR_FLUSH_ERR);
      return false;
    }
    rx_.op = &oi;
    rx_.opcode = static_cast<Opcode>(opc);
    rx_.last = (c0 & kDdpLast) != 0;
    rx_.payload_len = ulpdu + kMpaLenBytes - oi.hdr_len;
    rx_.trailer_len = mpa_pad(ulpdu) + kMpaCrcBytes;  // the CRC field is always there
    rx_.hdr_need = oi.hdr_len;
    if (rx_.hdr_have < rx_.hdr_need) return true;  // read the rest of the header
  }
  if (!rx_begin_payload()) return false;
  if (crc_) rx_.crc = crc32c_update(kCrcInit, h, rx_.hdr_need);
  rx_.payload_done = 0;
  rx_.trailer_have = 0;
  rx_.phase = RxState::Phase::Payload;
  if (rx_.payload_len == 0) rx_place(nullptr, 0);
  return !(closed_ || ended_);
}

// Opcode-specific validation and placement set-up. Idempotent until it returns true (a parked
// header is run again when a receive buffer arrives).
bool IwarpConn::rx_begin_payload() {
  const uint8_t *h = rx_.hdr.data();
  const OpInfo &oi = *rx_.op;
  rx_.target.clear();
  rx_.target_base = 0;
  rx_.orq = nullptr;
  if (!oi.tagged) {
    const uint32_t qn = ld32(h + off::kQn), msn = ld32(h + off::kMsn), mo = ld32(h + off::kMo);
    const uint32_t expect = oi.queue == Queue::Send          ? rx_.msn_send
                            : oi.queue == Queue::ReadRequest ? rx_.msn_rreq
                            : oi.queue == Queue::Terminate   ? rx_.msn_term
                                                             : rx_.msn_aresp;
    if (qn != (uint32_t)oi.queue) {
      fail_terminate({TermLayer::Ddp, kDdpUntaggedError, kDdpUInvalidQn}, IBV_WC_WR_FLUSH_ERR);
      return false;
    }
    if (msn != expect) {
      ECA_QP_LOG(Info, qp_.qpn, "MSN %u on queue %u, expected %u", msn, qn, expect);
      fail_terminate({TermLayer::Ddp, kDdpUntaggedError, kDdpUInvalidMsn}, IBV_WC_WR_FLUSH_ERR);
      return false;
    }
    const uint32_t expect_mo = oi.queue == Queue::Send ? (uint32_t)rx_.msg_offset : 0;
    if (mo != expect_mo) {
      fail_terminate({TermLayer::Ddp, kDdpUntaggedError, kDdpUInvalidMo}, IBV_WC_WR_FLUSH_ERR);
      return false;
    }
  }
  switch (rx_.opcode) {
    case Opcode::Write: {
      if (rx_.payload_len == 0) return true;  // zero length: nothing placed, nothing checked
      MrRef ref;
      AccessError e = mr_lookup(ld32(h + off::kStag), qp_.pd, ld64(h + off::kTo),
                                rx_.payload_len, IBV_ACCESS_REMOTE_WRITE, &ref, qp_.qpn);
      if (e != AccessError::None) {
        ECA_QP_LOG(Info, qp_.qpn, "RDMA Write to STag 0x%x TO 0x%llx len %zu rejected (%d)",
                   ld32(h + off::kStag), (unsigned long long)ld64(h + off::kTo), rx_.payload_len,
                   (int)e);
        fail_terminate(term_for_tagged(e), IBV_WC_WR_FLUSH_ERR);
        return false;
      }
      rx_.target.push_back({ref.host, rx_.payload_len});
      rx_.tagged_ref = std::move(ref);
      return true;
    }
    case Opcode::ReadResponse: {
      {
        std::lock_guard lk(tx_mu_);
        if (!orq_.empty()) rx_.orq = &orq_.front();  // references survive push_back
      }
      OrqEntry *o = rx_.orq;
      const uint32_t stag = ld32(h + off::kStag);
      const uint64_t to = ld64(h + off::kTo);
      if (!o || o->atomic || stag != o->sink_stag || to != o->sink_to + o->received ||
          rx_.payload_len > o->length - o->received) {
        ECA_QP_LOG(Info, qp_.qpn, "unexpected RDMA Read Response (STag 0x%x)", stag);
        fail_terminate({TermLayer::Ddp, kDdpTaggedError,
                        o && stag == o->sink_stag ? kDdpTBaseBounds : kDdpTInvalidStag},
                       IBV_WC_WR_FLUSH_ERR);
        return false;
      }
      rx_.target = o->sink_iov;
      rx_.target_base = o->received;
      return true;
    }
    case Opcode::Send:
    case Opcode::SendInvalidate:
    case Opcode::SendSolicited:
    case Opcode::SendSolicitedInvalidate:
    case Opcode::ImmediateData:
    case Opcode::ImmediateDataSolicited: {
      const bool imm = rx_.opcode == Opcode::ImmediateData ||
                       rx_.opcode == Opcode::ImmediateDataSolicited;
      if (imm && (rx_.payload_len || !rx_.last)) {
        fail_terminate({TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapUnspecified},
                       IBV_WC_WR_FLUSH_ERR);
        return false;
      }
      if (rtr_recv_ == Rtr::ZeroLengthSend && !imm) {
        return true;  // the RFC 6581 ready-to-receive SEND: consumes no receive buffer
      }
      if (!rx_.have_rqe) {
        if (!qp_.rq_take(&rx_.rqe)) {
          // No receive posted: hold the stream (TCP flow control pushes back on the sender)
          // for a bounded time, then take the iWARP error path.
          if (!rx_.parked) {
            rx_.parked = true;
            rx_.park_deadline = std::chrono::steady_clock::now() +
                                std::chrono::milliseconds(config().recv_wait_ms);
            if (Progress::instance().on_progress_thread()) {
              rx_unpark_check();
            } else {  // a polling thread: the park timer belongs to the progress thread
              auto self = shared_from_this();
              Progress::instance().post([self] {
                std::lock_guard cb(self->cb_mu_);
                self->rx_unpark_check();
              });
            }
          }
          return false;
        }
        rx_.have_rqe = true;
        rx_.rqe_refs.clear();
        rx_.rqe_iov.clear();
        engine::SgeMap map;
        uint32_t bad = 0;
        if (const ibv_wc_status st = engine::map_sges(
                qp_.pd, {rx_.rqe.sge.data(), rx_.rqe.num_sge}, IBV_ACCESS_LOCAL_WRITE, &map, &bad)) {
          qp_.rq_done(rx_.rqe, st, 0, false, 0);
          rx_.have_rqe = false;
          fail_terminate({TermLayer::Rdmap, kRdmapLocalCatastrophic, kRdmapUnspecified},
                         IBV_WC_WR_FLUSH_ERR);
          return false;
        }
        rx_.rqe_iov.assign(map.iov.begin(), map.iov.begin() + map.n);
        rx_.rqe_refs.assign(std::make_move_iterator(map.refs.begin()),
                            std::make_move_iterator(map.refs.begin() + map.n));
        rx_.rqe_capacity = map.bytes;
      }
      if (rx_.msg_offset + rx_.payload_len > rx_.rqe_capacity) {
        qp_.rq_done(rx_.rqe, IBV_WC_LOC_LEN_ERR, 0, false, 0);
        rx_.have_rqe = false;
        fail_terminate({TermLayer::Ddp, kDdpUntaggedError, kDdpUTooLong}, IBV_WC_WR_FLUSH_ERR);
        return false;
      }
      rx_.target = rx_.rqe_iov;
      rx_.target_base = rx_.msg_offset;
      return true;
    }
    case Opcode::ReadRequest: {
      if (rx_.payload_len) {
        fail_terminate({TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapUnspecified},
                       IBV_WC_WR_FLUSH_ERR);
        return false;
      }
      IrqEntry e;
      e.sink_stag = ld32(h + off::kSinkStag);
      e.sink_to = ld64(h + off::kSinkTo);
      e.length = ld32(h + off::kReadSize);
      const uint32_t src_stag = ld32(h + off::kSrcStag);
      const uint64_t src_to = ld64(h + off::kSrcTo);
      if (e.length) {
        AccessError err = mr_lookup(src_stag, qp_.pd, src_to, e.length, IBV_ACCESS_REMOTE_READ,
                                    &e.src, qp_.qpn);
        if (err != AccessError::None) {
          ECA_QP_LOG(Info, qp_.qpn, "RDMA Read of STag 0x%x TO 0x%llx len %llu rejected (%d)",
                     src_stag, (unsigned long long)src_to, (unsigned long long)e.length, (int)err);
          fail_terminate(term_for_read_source(err), IBV_WC_WR_FLUSH_ERR);
          return false;
        }
      }
      std::lock_guard lk(tx_mu_);
      if (!rd_.inbound_accept()) {
        ECA_QP_LOG(Info, qp_.qpn, "peer exceeded IRD %u", rd_.ird());
        // handled below, outside tx_mu
      } else {
        irq_.push_back(std::move(e));  // answered when the request is complete
        return true;
      }
      break;
    }
    case Opcode::AtomicRequest:
    case Opcode::AtomicResponse:
      // The body is the header; acted on once the CRC has passed (rx_segment_done).
      if (rx_.payload_len || !rx_.last) {
        fail_terminate({TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapUnspecified},
                       IBV_WC_WR_FLUSH_ERR);
        return false;
      }
      return true;
    case Opcode::Terminate:
      rx_.peer_term = term_parse(ld32(h + off::kTermCtrl));
      rx_.target.clear();  // optional copied headers: checked for length only, discarded
      return true;
  }
  // only the IRD overflow reaches here
  fail_terminate({TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapCatastrophicStream},
                 IBV_WC_WR_FLUSH_ERR);
  return false;
}

// The trailer of a segment is complete: check the CRC, finish the segment.
bool IwarpConn::rx_segment_done() {
  if (crc_) {  // without negotiated CRC the field is present but not checked (RFC 5044)
    const size_t pad = rx_.trailer_len - kMpaCrcBytes;
    uint32_t c = rx_.crc;
    if (pad) c = crc32c_update(c, rx_.trailer.data(), pad);
    uint32_t got;
    std::memcpy(&got, rx_.trailer.data() + pad, 4);
    if (le32toh(got) != crc32c_final(c)) {
      ECA_QP_LOG(Warn, qp_.qpn, "MPA CRC error (got 0x%08x, computed 0x%08x)", le32toh(got),
                 crc32c_final(c));
      fail_terminate({TermLayer::Llp, 0, kMpaCrcError}, IBV_WC_WR_FLUSH_ERR);
      return false;
    }
  }
  const size_t len = rx_.payload_len;
  const bool last = rx_.last;
  rx_.phase = RxState::Phase::Header;
  rx_.hdr_have = 0;
  rx_.hdr_need = 4;
  rx_.large_mode = len >= kDirectMin;
  rx_.target.clear();
  rx_.tagged_ref = MrRef{};
  switch (rx_.opcode) {
    case Opcode::Write:
      break;
    case Opcode::ReadResponse: {
      OrqEntry *o = rx_.orq;
      o->received += len;
      if (last) {
        if (o->received != o->length) {
          fail_terminate({TermLayer::Ddp, kDdpTaggedError, kDdpTBaseBounds}, IBV_WC_WR_FLUSH_ERR);
          return false;
        }
        SendWqe *w = o->wqe;
        {
          std::lock_guard lk(tx_mu_);
          orq_.pop_front();
          rd_.response_done();
          orq_size_.store((uint32_t)orq_.size(), std::memory_order_release);
        }
        rx_.orq = nullptr;
        qp_.sq_done(w, IBV_WC_SUCCESS);
        doorbell();  // ORD room or a fence may let the send queue move on
      }
      break;
    }
    case Opcode::ReadRequest:
      rx_.msn_rreq++;
      doorbell();  // answer it now
      break;
    case Opcode::AtomicRequest:
      rx_.msn_rreq++;
      if (!rx_atomic_request()) return false;
      doorbell();  // answer it now
      break;
    case Opcode::AtomicResponse:
      rx_.msn_aresp++;
      if (!rx_atomic_response()) return false;
      break;
    case Opcode::Terminate: {
      rx_.msn_term++;
      const TermInfo t = rx_.peer_term;
      ECA_QP_LOG(Info, qp_.qpn, "TERMINATE received: layer %u etype %u code 0x%02x",
                 (unsigned)t.layer, t.etype, t.code);
      fail_llp(LlpEnd::TerminateRecvd, wc_status_for_term(t));
      return false;
    }
    case Opcode::ImmediateData:
    case Opcode::ImmediateDataSolicited: {
      __be32 imm;
      std::memcpy(&imm, rx_.hdr.data() + off::kImmData, sizeof(imm));
      rx_.have_rqe = false;
      rx_.msn_send++;
      rx_.msg_offset = 0;
      qp_.rq_done(rx_.rqe, IBV_WC_SUCCESS, 0, rx_.op->solicited, 0, &imm);
      break;
    }
    default: {  // the SEND family
      if (rtr_recv_ == Rtr::ZeroLengthSend) {
        rtr_recv_ = Rtr::None;
        rx_.msn_send++;
        break;
      }
      rx_.msg_offset += len;
      if (!last) break;
      const uint32_t byte_len = (uint32_t)rx_.msg_offset;
      uint32_t inv = 0;
      rx_.msn_send++;
      rx_.msg_offset = 0;
      rx_.have_rqe = false;
      if (rx_.op->invalidate) {
        inv = ld32(rx_.hdr.data() + off::kRsvdUlp);
        if (!mr_invalidate(inv, qp_.pd, qp_.qpn)) {
          qp_.rq_done(rx_.rqe, IBV_WC_REM_INV_REQ_ERR, byte_len, false, 0);
          fail_terminate({TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapCannotInvalidate},
                         IBV_WC_WR_FLUSH_ERR);
          return false;
        }
      }
      rx_.rqe_refs.clear();
      qp_.rq_done(rx_.rqe, IBV_WC_SUCCESS, byte_len, rx_.op->solicited, inv);
      break;
    }
  }
  if (rtr_recv_ != Rtr::None && rx_.opcode != Opcode::Terminate) rtr_recv_ = Rtr::None;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Waiting for a receive buffer (progress thread, cb_mu held)

void IwarpConn::rx_unpark_check() {
  if (!rx_.parked || closed_ || ended_) return;
  if (rx_begin_payload()) {
    rx_.parked = false;
    if (crc_) rx_.crc = crc32c_update(kCrcInit, rx_.hdr.data(), rx_.hdr_need);
    rx_.payload_done = 0;
    rx_.trailer_have = 0;
    rx_.phase = RxState::Phase::Payload;
    if (rx_.payload_len == 0) rx_place(nullptr, 0);
    on_readable();
    return;
  }
  if (!rx_.parked) return;  // failed for another reason
  if (std::chrono::steady_clock::now() >= rx_.park_deadline) {
    rx_.parked = false;
    ECA_QP_LOG(Info, qp_.qpn, "SEND arrived with no receive posted");
    fail_terminate({TermLayer::Ddp, kDdpUntaggedError, kDdpUNoBuffer}, IBV_WC_WR_FLUSH_ERR);
    return;
  }
  auto self = shared_from_this();
  park_timer_.expires_after(kParkTick);
  park_timer_.async_wait([self](const boost::system::error_code &ec) {
    if (ec) return;
    std::lock_guard cb(self->cb_mu_);
    self->rx_unpark_check();
  });
}

void IwarpConn::rq_doorbell() {
  // A stale "not parked" is harmless: parking arms a timer that looks for receives.
  if (!rx_.parked.load(std::memory_order_relaxed)) return;
  auto self = shared_from_this();
  Progress::instance().post([self] {
    std::lock_guard cb(self->cb_mu_);
    if (self->rx_.parked) {
      self->park_timer_.cancel();
      self->rx_unpark_check();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Ending the connection

// cb_mu held (progress thread or a polling thread). The TERMINATE is queued behind the FPDU in
// flight and sent by the transmitter without waiting for socket room; close() lingers for it.
void IwarpConn::fail_terminate(const TermInfo &t, ibv_wc_status sq_status) {
  if (ended_ || closed_) return;
  ECA_QP_LOG(Info, qp_.qpn, "sending TERMINATE: layer %u etype %u code 0x%02x",
             (unsigned)t.layer, t.etype, t.code);
  {
    std::lock_guard lk(tx_mu_);
    if (!term_sent_) {
      term_ = t;
      term_queued_ = true;
      term_want_ = true;
    }
  }
  doorbell();
  fail_llp(LlpEnd::TerminateSent, sq_status);
}

void IwarpConn::fail_llp(LlpEnd why, ibv_wc_status sq_status) {
  if (!end_begin_locked(cb_mu_)) return;
  if (Progress::instance().on_progress_thread()) return report_end(why, sq_status);
  // Found by a polling thread: the QP's teardown (and rdma_cm) run on the progress thread,
  // never inside the application's ibv_poll_cq().
  auto self = shared_from_this();
  Progress::instance().post([self, why, sq_status] {
    std::lock_guard cb(self->cb_mu_);
    if (!self->closed_) self->report_end(why, sq_status);
  });
}

void IwarpConn::report_end(LlpEnd why, ibv_wc_status sq_status) {
  ECA_ASSERT_HELD(cb_mu_);
  // Under tx_mu: a posting thread may be between handing a message's last byte to the socket
  // and retiring its WQE (pump_locked holds tx_mu for both), and a WQE that was completely
  // handed to the transport must not be mistaken for the oldest outstanding one.
  ConnEnd::report_end(qp_, why, sq_status, tx_mu_, {rx_.rqe, rx_.have_rqe}, [] {},
                      [this](auto &&report) {
                        // Qp::llp_ended calls close(), which must not lock cb_mu again (it is
                        // not recursive): in_report_ tells it that this call chain holds it.
                        struct InReport {
                          bool &flag;
                          explicit InReport(bool &f) : flag(f) { flag = true; }
                          ~InReport() { flag = false; }
                        } in_report(in_report_);
                        report();
                      });
}

// After close() returns, nothing calls into the Qp. A TERMINATE that has not left yet (the
// socket was full) is still sent, from memory the transmitter holds references to, and the
// socket closes when it is out or after kTermLinger, whichever comes first.
// Any thread; cb_mu not held, except by report_end() on the progress thread (in_report_ is
// read on the progress thread only, where it is written).
void IwarpConn::close(bool graceful) {
  if (Progress::instance().on_progress_thread() && in_report_) return close_locked(graceful);
  std::lock_guard cb(cb_mu_);
  close_locked(graceful);
}

void IwarpConn::close_locked(bool graceful) {
  ECA_ASSERT_HELD(cb_mu_);
  if (!close_begin_locked(cb_mu_)) return;
  // tx_mu waits for a transmitter that may still call into the Qp.
  const bool linger = close_detach(qp_, tx_mu_, {rx_.rqe, rx_.have_rqe}, [&] {
    qp_detached_ = true;
    const bool linger = term_want_ && !term_sent_;
    if (linger) lingering_ = true;
    else if (graceful && !term_sent_) ::shutdown(fd_, SHUT_WR);
    else ::shutdown(fd_, SHUT_RDWR);
    return linger;
  });
  finish_on_progress(&cb_mu_, [self = shared_from_this(), linger] {
    self->close_finish_locked(linger);
  });
}

// The socket and the timers belong to the progress thread: close() ends there.
void IwarpConn::close_finish_locked(bool linger) {
  ECA_ASSERT_HELD(cb_mu_);
  if (!linger) {
    boost::system::error_code ec;
    park_timer_.cancel();
    sock_.close(ec);
    return;
  }
  if (!lingering_) return;  // the TERMINATE left meanwhile
  auto self = shared_from_this();
  term_timer_.expires_after(kTermLinger);
  term_timer_.async_wait([self](const boost::system::error_code &ec) {
    if (ec) return;
    std::lock_guard cb(self->cb_mu_);
    if (self->lingering_) ECA_QP_LOG(Info, self->qpn_, "TERMINATE could not be sent");
    self->end_linger();
  });
}

void IwarpConn::end_linger() {
  if (!lingering_.exchange(false)) return;
  {
    std::lock_guard lk(tx_mu_);  // a transmitter still sending sees lingering_ cleared
    ::shutdown(fd_, SHUT_RDWR);
  }
  boost::system::error_code ec;
  term_timer_.cancel();
  park_timer_.cancel();
  sock_.close(ec);
}

}  // namespace eca::transport

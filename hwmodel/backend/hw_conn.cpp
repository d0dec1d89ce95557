#include "hwmodel/backend/hw_conn.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <thread>

#include "engine/sge.hpp"
#include "hwmodel/backend/tsan.hpp"
#include "provider/core/config.hpp"
#include "provider/core/log.hpp"
#include "provider/core/mw.hpp"
#include "provider/core/objects.hpp"
#include "runtime/progress.hpp"

namespace eca::hw {
static_assert(kFrameInline >= kMaxInline, "inline sends must fit in one frame");
namespace {

using runtime::Progress;
constexpr uint64_t kRingMask = kRingSlots - 1;
constexpr size_t kMaxInflight = 4096;  // work requests the adapter holds at once

// The process exited or was killed (it may still be a zombie). Control path: system calls.
bool process_gone(uint32_t pid) {
  if (::kill((pid_t)pid, 0) != 0) return errno == ESRCH;
  char path[64], buf[256];
  std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
  FILE *f = std::fopen(path, "re");
  if (!f) return true;
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char *paren = std::strrchr(buf, ')');  // "pid (comm) S ...": comm may hold anything
  return paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);  // vDSO: no system call
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

using Seg = HwConn::Seg;

// What a peer's Terminate means for our oldest outstanding work request (the rest flush).
// Anything else a peer writes there is a protocol error.
constexpr struct {
  WireError why;
  ibv_wc_status st;
} kTerminateStatus[] = {
    {WireError::Ended, IBV_WC_WR_FLUSH_ERR},
    {WireError::Access, IBV_WC_REM_ACCESS_ERR},
    {WireError::InvalidRequest, IBV_WC_REM_INV_REQ_ERR},
    {WireError::Protocol, IBV_WC_REM_OP_ERR},
};

ibv_wc_status terminate_status(uint32_t why) {
  for (const auto &e : kTerminateStatus)
    if ((uint32_t)e.why == why) return e.st;
  return IBV_WC_REM_OP_ERR;
}

}  // namespace

HwConn::HwConn(Qp &qp, LlpConnection &&llp)
    : qp_(qp),
      sock_(runtime::adopt_tcp_socket(llp.fd.release())),
      initiator_(llp.initiator),
      rd_(llp.ord, llp.ird) {
  start_ns_ = mono_ns();
  side_ = initiator_ ? 0 : 1;
}

HwConn::~HwConn() {
  if (link_) ::munmap(link_, sizeof(LinkShm));
  if (link_fd_ >= 0) ::close(link_fd_);
}

uint64_t HwConn::now_ps() const { return (mono_ns() - start_ns_) * 1000; }

// ---------------------------------------------------------------------------------------------
// Set-up: the initiator creates the link memory and offers it; the responder maps it.

void HwConn::start() {
  auto self = shared_from_this();
  Progress::instance().post([self] {
    std::lock_guard cb(self->cb_mu_);
    if (self->closed_) return;
    if (!Adapter::instance().shm()) {
      self->fail(LlpEnd::Reset, IBV_WC_WR_FLUSH_ERR);
      return;
    }
    self->handshake();
  });
}

namespace {
// What each side sends over the set-up TCP connection. Nothing in it is trusted: the path is
// only where to present the nonce, and the peer's adapter proves itself there.
struct HelloBuf {
  uint64_t magic;
  uint32_t qpn;
  uint32_t pd;
  uint8_t nonce[ctl::kNonceBytes];
  char path[104];  // NUL-terminated control socket path
};
static_assert(sizeof(HelloBuf) == 136);
}  // namespace

// Both sides: send our hello (the link's creator, the initiator, makes the link memory
// first), read the peer's, then present the peer's nonce at its control socket: that returns
// the peer's adapter table and doorbell, and the joiner also gets the link memory there.
void HwConn::handshake() {
  Adapter &ad = Adapter::instance();
  int link_offer = -1;
  if (initiator_) {
    link_fd_ = ctl::sealed_memfd("eca-hw-link", sizeof(LinkShm));
    void *p = link_fd_ < 0 ? MAP_FAILED
                           : ::mmap(nullptr, sizeof(LinkShm), PROT_READ | PROT_WRITE, MAP_SHARED,
                                    link_fd_, 0);
    if (p == MAP_FAILED) {
      fail(LlpEnd::Reset, IBV_WC_WR_FLUSH_ERR);
      return;
    }
    link_ = static_cast<LinkShm *>(p);
    link_->magic = kLinkMagic;
    link_->version = kLayoutVersion;
    link_->side[0].pid.store(ad.pid());
    link_->side[0].qpn.store(qp_.qpn);
    link_->side[0].pd.store(qp_.pd->ibpd.handle);
    link_offer = link_fd_;
  }
  std::random_device rd;
  for (size_t i = 0; i < sizeof nonce_; i += 4) {
    const uint32_t r = rd();
    std::memcpy(nonce_ + i, &r, 4);
  }
  std::weak_ptr<HwConn> weak = weak_from_this();
  ad.expect_hello(nonce_, link_offer, [weak](uint32_t pid) {
    if (auto s = weak.lock()) s->asker_pid_.store(pid);
  });
  auto out = std::make_shared<HelloBuf>();
  out->magic = kLinkMagic;
  out->qpn = qp_.qpn;
  out->pd = qp_.pd->ibpd.handle;
  std::memcpy(out->nonce, nonce_, sizeof nonce_);
  std::snprintf(out->path, sizeof out->path, "%s", ad.ctl_path().c_str());
  auto in = std::make_shared<HelloBuf>();
  auto self = shared_from_this();
  boost::asio::async_write(
      sock_, boost::asio::buffer(out.get(), sizeof(HelloBuf)),
      [self, out, in](const boost::system::error_code &ec, size_t) {
        std::lock_guard cb(self->cb_mu_);
        if (self->closed_) return;
        if (ec) return self->fail(LlpEnd::Reset, IBV_WC_WR_FLUSH_ERR);
        boost::asio::async_read(
            self->sock_, boost::asio::buffer(in.get(), sizeof(HelloBuf)),
            [self, in](const boost::system::error_code &ec2, size_t) {
              std::lock_guard cb2(self->cb_mu_);
              if (self->closed_) return;
              if (ec2 || in->magic != kLinkMagic ||
                  ::memchr(in->path, 0, sizeof in->path) == nullptr)
                return self->fail(LlpEnd::Reset, IBV_WC_WR_FLUSH_ERR);
              self->peer_pd_ = in->pd;
              self->peer_qpn_ = in->qpn;
              // The peer's control socket may take up to its timeout to answer: asked from a
              // thread of its own, never from the process-wide progress thread.
              std::thread([self, in] {
                int link_fd = -1;
                auto peer = Adapter::instance().connect_peer(in->path, in->nonce, &link_fd);
                Progress::instance().post([self, peer = std::move(peer), link_fd] {
                  std::lock_guard cb3(self->cb_mu_);
                  if (self->closed_) {
                    if (link_fd >= 0) ::close(link_fd);
                    return;
                  }
                  self->on_peer_proven(peer, link_fd);
                });
              }).detach();
            });
      });
}

// The peer's adapter answered on its control socket (peer null: it did not, or offered no
// valid memory). Progress thread, cb_mu_ held.
void HwConn::on_peer_proven(std::shared_ptr<PeerAdapter> peer, int link_fd) {
  peer_ = std::move(peer);
  if (!peer_) {
    if (link_fd >= 0) ::close(link_fd);
    return fail(LlpEnd::Reset, IBV_WC_WR_FLUSH_ERR);
  }
  if (initiator_) {
    if (link_fd >= 0) ::close(link_fd);  // we made the link; keep ours
  } else {
    void *p = link_fd < 0 ? MAP_FAILED
                          : ::mmap(nullptr, sizeof(LinkShm), PROT_READ | PROT_WRITE,
                                   MAP_SHARED, link_fd, 0);
    if (link_fd >= 0) ::close(link_fd);
    if (p == MAP_FAILED) return fail(LlpEnd::Reset, IBV_WC_WR_FLUSH_ERR);
    link_ = static_cast<LinkShm *>(p);
    if (link_->magic != kLinkMagic || link_->version != kLayoutVersion)
      return fail(LlpEnd::Reset, IBV_WC_WR_FLUSH_ERR);
    LinkSide &me = link_->side[1];
    me.pid.store(Adapter::instance().pid());
    me.qpn.store(qp_.qpn);
    me.pd.store(qp_.pd->ibpd.handle);
  }
  become_ready();
}

void HwConn::become_ready() {
  {
    std::lock_guard lk(mu_);
    out_ = &link_->ring[side_];
    in_ = &link_->ring[1 - side_];
    out_tail_ = out_->tail.load(std::memory_order_acquire);
    tsan_key_ = initiator_ ? tsan::link_key(qp_.qpn, peer_qpn_)
                           : tsan::link_key(peer_qpn_, qp_.qpn);
  }
  // Attached first: from the moment we can publish a frame naming our memory, a
  // deregistration must find this link (Adapter::unregister_mr).
  Adapter::instance().attach(shared_from_this());
  ready_.store(true, std::memory_order_release);
  ECA_QP_LOG(Info, qp_.qpn, "modeled adapter link up (peer process %u)", peer_->pid());
  watch_socket();
  doorbell();  // work posted while the link came up
}

// The socket carries no data any more; it ends when the peer process closes or dies.
void HwConn::watch_socket() {
  auto self = shared_from_this();
  sock_.async_wait(boost::asio::ip::tcp::socket::wait_read,
                   [self](const boost::system::error_code &ec) {
                     std::lock_guard cb(self->cb_mu_);
                     if (self->closed_ || ec == boost::asio::error::operation_aborted) return;
                     char buf[64];
                     ssize_t n = ::recv(self->sock_.native_handle(), buf, sizeof buf, MSG_DONTWAIT);
                     if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR))) {
                       self->watch_socket();
                       return;
                     }
                     // Give frames already on the ring (a Disconnect, say) their turn first.
                     {
                       std::lock_guard lk(self->mu_);
                       self->work_locked();
                     }
                     const bool orderly = self->link_ &&
                                          self->link_->side[1 - self->side_].closed.load();
                     self->fail(orderly ? LlpEnd::PeerClosed : LlpEnd::Reset, IBV_WC_WR_FLUSH_ERR);
                   });
}

// ---------------------------------------------------------------------------------------------
// Running the adapter's work from whichever thread is there.

void HwConn::doorbell() {
  if (!ready_.load(std::memory_order_acquire) || closed_) return;
  work_pending_.store(true, std::memory_order_seq_cst);  // pairs with the fence in Qp::sq_take
  for (;;) {
    {
      std::unique_lock lk(mu_, std::try_to_lock);
      if (!lk.owns_lock()) return;  // the holder re-checks work_pending_ after it lets go
      if (closed_) return;
      work_pending_.store(false, std::memory_order_relaxed);
      work_locked();
    }
    if (!work_pending_.load(std::memory_order_acquire)) return;
  }
}

void HwConn::app_doorbell() {
  app_visits_.fetch_add(1, std::memory_order_relaxed);
  doorbell();
}

// A CQ of this QP was armed: from now on the peer rings our firmware's doorbell with each
// frame, so completions reach the channel without anyone polling. A store, no system call.
//
// Arm, then check: frames that arrived before the request are processed now, so their
// completions raise the event the application is about to wait for.
void HwConn::cq_armed() {
  if (!ready_.load(std::memory_order_acquire) || closed_ || !link_) return;
  link_->side[side_].want_intr.store(1, std::memory_order_seq_cst);
  if (in_->tail.load(std::memory_order_seq_cst) != in_->head.load(std::memory_order_relaxed) ||
      tx_queued_.load(std::memory_order_relaxed) || acks_pending())
    doorbell();
}

void HwConn::poll_progress() {
  if (!ready_.load(std::memory_order_acquire) || closed_) return;
  app_visits_.fetch_add(1, std::memory_order_relaxed);
  // Cheap test first: anything arrived, or anything waiting to go out?
  if (in_->tail.load(std::memory_order_acquire) == in_->head.load(std::memory_order_relaxed) &&
      !tx_queued_.load(std::memory_order_relaxed) && !acks_pending() &&
      !work_pending_.load(std::memory_order_relaxed))
    return;
  doorbell();
}

HwConn::FwResult HwConn::firmware_poll() {
  std::lock_guard cb(cb_mu_);
  if (closed_ || !ready_) return {false, false};
  // Poll mode: the application visited since our last look, and no CQ waits for an
  // interrupt. Its own calls move the data; taking the locks here would only make its
  // threads contend (and sleep in the kernel).
  const uint64_t visits = app_visits_.load(std::memory_order_relaxed);
  const bool app_driven = visits != fw_seen_visits_;
  fw_seen_visits_ = visits;
  if (app_driven && !qp_.scq->is_armed() && !qp_.rcq->is_armed()) return {false, false};
  bool did, tick;
  {
    std::lock_guard lk(mu_);
    did = work_locked();
    tick = !inflight_.empty() || rqe_deadline_ns_ != 0;
  }
  // Interrupt mode: ask the peer to wake our firmware when one of our CQs is armed.
  const bool armed = qp_.scq->is_armed() || qp_.rcq->is_armed();
  link_->side[side_].want_intr.store(armed ? 1 : 0, std::memory_order_release);
  return {did, tick};
}

bool HwConn::work_locked() {
  ECA_ASSERT_HELD(mu_);
  if (closed_ || failing_) return false;
  bool did = tx_locked();
  did |= rx_locked();
  return did;
}

// ---------------------------------------------------------------------------------------------
// Transmit

Frame *HwConn::ring_slot_locked() {
  ECA_ASSERT_HELD(mu_);
  const uint64_t head = out_->head.load(std::memory_order_acquire);
  if (out_tail_ - head >= kRingSlots) return nullptr;
  Frame *f = &out_->slots[out_tail_ & kRingMask];
  std::memset(static_cast<void *>(f), 0, offsetof(Frame, data));
  return f;
}

void HwConn::ring_publish_locked() {
  ECA_ASSERT_HELD(mu_);
  // seq_cst pairs with cq_armed(): either we see the peer's interrupt request, or the peer
  // sees this frame when it checks after arming.
  tsan::release(tsan_key_);
  out_->tail.store(++out_tail_, std::memory_order_seq_cst);
  // Ring the peer's doorbell only when it asked to be woken (interrupt mode).
  if (link_->side[1 - side_].want_intr.load(std::memory_order_seq_cst))
    Adapter::kick_peer(peer_->bell());
}

void HwConn::send_terminate_locked(WireError why) {
  ECA_ASSERT_HELD(mu_);
  if (Frame *f = ring_slot_locked()) {
    f->type = (uint32_t)FrameType::Terminate;
    f->status = (uint32_t)why;
    f->model_ps = now_ps();
    ring_publish_locked();
  }
  link_->side[side_].closed.store(1, std::memory_order_release);
}

Step HwConn::terminate_locked(WireError why) {
  ECA_ASSERT_HELD(mu_);
  send_terminate_locked(why);
  fail(LlpEnd::TerminateSent, IBV_WC_WR_FLUSH_ERR);
  return Step::Failed;
}

Step HwConn::fail_wqe_locked(SendWqe *w, ibv_wc_status st) {
  ECA_ASSERT_HELD(mu_);
  qp_.sq_done(w, st);
  return terminate_locked(WireError::Ended);
}

Step HwConn::fail_rqe_locked(ibv_wc_status st, uint32_t byte_len, WireError why) {
  ECA_ASSERT_HELD(mu_);
  qp_.rq_done(rqe_, st, byte_len, false, 0);
  have_rqe_ = false;
  return terminate_locked(why);
}

bool HwConn::tx_locked() {
  ECA_ASSERT_HELD(mu_);
  bool did = false;
  // Take what was posted; in paced mode each message enters the modeled pipeline now: it
  // starts when the path is free and completes one message latency later.
  while (!failing_ && inflight_.size() < kMaxInflight) {
    SendWqe *w = qp_.sq_take();
    if (!w) break;
    uint64_t due = 0;
    if (timing_.mode() == Mode::Paced) {
      const uint64_t start = std::max(now_ps(), busy_until_ps_);
      due = start + timing_.message_ps(w->total_len);
      busy_until_ps_ = start + timing_.occupancy_ps(w->total_len);
    }
    inflight_.push_back({w, due});
  }
  while (!failing_ && !inflight_.empty()) {
    const Inflight &f = inflight_.front();
    if (f.due_ps && now_ps() < f.due_ps) break;  // not yet: its modeled time is ahead
    pending_due_ = f.due_ps;
    const Step step = exec_wqe_locked(f.w);
    if (step == Step::Retry) break;  // waits for ring room, ORD, an answer ahead of it
    inflight_.pop_front();
    did = true;
    if (step == Step::Failed) break;
  }
  pending_due_ = 0;
  tx_queued_.store(!inflight_.empty(), std::memory_order_relaxed);
  return did;
}

// Moves `len` bytes between the peer's MR (rkey, addr) and our local segments, validating
// the access against the peer adapter's published STag table first (the peer NIC's check).
// 0, EACCES (the access fails the owner's checks or the kernel's), or EPIPE (the peer closed
// the link).
// The MR's interior pages are shared memory (plain copies); its partial edge pages are
// reached with cross-memory reads/writes. A WRITE's last bytes are placed last.
uint8_t *HwConn::peer_region(uint32_t idx, uint32_t gen, uint64_t off, uint64_t len,
                             bool write) {
  RegionCache &c = last_region_;
  if (c.idx != idx || c.gen != gen || (write && !c.writable)) {
    // Map (or find) the whole region once; later accesses to it are pointer arithmetic.
    const uint64_t rlen = peer_->shm()->regions[idx].length;
    uint8_t *p = peer_->region_ptr(idx, gen, 0, rlen, write);
    if (!p) return nullptr;
    c = {idx, gen, p, rlen, write};
  }
  if (off > c.len || len > c.len - off) return nullptr;
  return c.base + off;
}

int HwConn::remote_copy(uint32_t rkey, uint64_t addr, uint64_t len, uint32_t need,
                         bool write, std::span<const Seg> local) {
  const uint32_t idx = (rkey >> 8) - 1;
  if ((rkey >> 8) == 0 || idx >= kMaxStags) return EACCES;
  // Announce the access first, then validate (see LinkSide::touching): the owner's
  // ibv_dereg_mr either makes the check below fail or waits until the guard clears the word.
  std::atomic<uint32_t> &touching = link_->side[side_].touching;
  touching.store(rkey, std::memory_order_seq_cst);
  struct Leave {
    std::atomic<uint32_t> &w;
    ~Leave() { w.store(0, std::memory_order_release); }
  } leave{touching};
  // The peer closed the link: what it still had outstanding is flushed on its side, so none
  // of its memory may be touched any more (its close() waits for an access already running).
  if (link_->side[1 - side_].closed.load(std::memory_order_seq_cst)) return EPIPE;
  const StagEntry &e = peer_->shm()->stags[idx];
  if (e.key.load(std::memory_order_seq_cst) != rkey) return EACCES;
  const uint32_t pd = e.pd, access = e.access, region = e.region, qpn = e.qpn;
  const uint64_t iova = e.iova, length = e.length, host0 = e.host;
  std::atomic_thread_fence(std::memory_order_acquire);
  if (e.key.load(std::memory_order_relaxed) != rkey) return EACCES;  // changed under us
  if (pd != peer_pd_ || (access & need) != need) return EACCES;
  if (qpn && qpn != peer_qpn_) return EACCES;  // a type 2 window serves its own QP only
  if (addr < iova || len > length || addr - iova > length - len) return EACCES;
  const uint64_t host = host0 + (addr - iova);
  // The shared interior, if any.
  uint64_t rb = 0, re = 0;
  uint32_t gen = 0;
  if (region < kMaxRegions) {
    const RegionEntry &r = peer_->shm()->regions[region];
    gen = r.gen.load(std::memory_order_acquire);
    rb = r.base;
    re = rb + r.length;
  }
  struct Piece {
    uint64_t from, to;  // offsets in the message
    uint8_t *mapped;    // null: cross-memory
  };
  Piece pieces[3];
  int np = 0;
  const uint64_t h_end = host + len;
  const uint64_t m_from = std::clamp(rb, host, h_end), m_to = std::clamp(re, host, h_end);
  if (gen && m_from < m_to) {
    if (host < m_from) pieces[np++] = {0, m_from - host, nullptr};
    uint8_t *p = peer_region(region, gen, m_from - rb, m_to - m_from, write);
    if (!p) return EACCES;
    pieces[np++] = {m_from - host, m_to - host, p};
    if (m_to < h_end) pieces[np++] = {m_to - host, len, nullptr};
  } else {
    pieces[np++] = {0, len, nullptr};
  }
  std::vector<uint8_t> tmp;
  for (int i = 0; i < np; i++) {
    const Piece &pc = pieces[i];
    const uint64_t n = pc.to - pc.from;
    const bool last = i == np - 1;
    if (pc.mapped) {
      if (write) {
        const uint64_t tail = last ? std::min<uint64_t>(n, 8) : 0;
        engine::gather_copy(local, pc.from, pc.to - tail, pc.mapped);
        std::atomic_thread_fence(std::memory_order_release);
        engine::gather_copy(local, pc.to - tail, pc.to, pc.mapped + (n - tail));
      } else {
        engine::scatter_copy(pc.mapped, local, pc.from, pc.to);
      }
    } else {
      tmp.resize(n);
      stats_.adapter_path_copies++;
      if (write) {
        engine::gather_copy(local, pc.from, pc.to, tmp.data());
        if (!cross_memory_write(peer_->pid(), host + pc.from, tmp.data(), n)) return EACCES;
      } else {
        if (!cross_memory_read(peer_->pid(), host + pc.from, tmp.data(), n)) return EACCES;
        engine::scatter_copy(tmp.data(), local, pc.from, pc.to);
      }
    }
  }
  return 0;
}

Step HwConn::exec_wqe_locked(SendWqe *w) {
  ECA_ASSERT_HELD(mu_);
  if (mw_is_local_op(w->opcode)) {  // memory-window bind / invalidation: no frame
    if (rd_.fence_blocks(w->flags)) return Step::Retry;
    if (mw_execute_wqe(qp_, w)) return Step::Done;
    return terminate_locked(WireError::Ended);
  }
  const uint64_t len = w->total_len;
  const bool is_read = w->opcode == IBV_WR_RDMA_READ;
  const bool is_send = w->opcode == IBV_WR_SEND || w->opcode == IBV_WR_SEND_WITH_INV;
  const bool is_atomic =
      w->opcode == IBV_WR_ATOMIC_FETCH_AND_ADD || w->opcode == IBV_WR_ATOMIC_CMP_AND_SWP;
  const bool needs_frame = is_send || w->opcode == IBV_WR_RDMA_WRITE_WITH_IMM;
  // Ordering: the responder handles messages in order, so a WRITE or READ must not overtake
  // a Send, Immediate Data or atomic frame the peer has not handled yet. (Atomics travel as
  // frames behind whatever is in the ring: they keep their place by themselves.)
  if (!is_send && !is_atomic && (!await_ack_.empty() || !await_atomic_.empty()))
    return Step::Retry;
  // ORD and fences (engine/ord_ird.hpp). Our READs are executed here and complete before the
  // next work request starts, so only atomics are ever outstanding.
  switch (rd_.sq_gate(w->opcode, w->flags)) {
    case engine::SqGate::Go:
      break;
    case engine::SqGate::WaitOrd:
    case engine::SqGate::WaitFence:
      return Step::Retry;
    case engine::SqGate::RefuseOrd0:  // the peer accepts no READs or atomics (IRD 0)
      engine::refuse_ord0(qp_, w);
      return terminate_locked(WireError::Ended);
  }
  if (is_atomic) return exec_atomic_locked(w);
  Frame *f = nullptr;
  if (needs_frame && !(f = ring_slot_locked())) return Step::Retry;  // peer ring full

  // Local buffers (validated like a NIC validates the lkeys of a descriptor), held registered
  // (MrUse) while this function reads or writes them: ibv_dereg_mr waits for that.
  engine::SgeMap map;
  uint32_t bad = 0;
  MrUse use;
  auto local_error = [&](uint32_t lkey) {
    ECA_QP_LOG(Info, qp_.qpn, "local protection error (lkey 0x%x)", lkey);
    return fail_wqe_locked(w, IBV_WC_LOC_PROT_ERR);
  };
  if (engine::map_send_sges(qp_.pd, *w, is_read ? IBV_ACCESS_LOCAL_WRITE : 0, &map, &bad))
    return local_error(w->sge[bad].lkey);
  const bool inline_data = w->flags & IBV_SEND_INLINE;
  if (!inline_data && !use.enter(map.refs.data(), map.n))
    return local_error(w->sge[0].lkey);  // being deregistered
  const size_t nseg = map.n;
  const std::span<const Seg> local = map.spans();
  stats_.ops++;
  stats_.bytes += len;
  stats_.modeled_ps += timing_.message_ps(len);

  switch (w->opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
    case IBV_WR_RDMA_READ: {
      const int rc = len ? remote_copy(w->rkey, w->remote_addr, len,
                                       is_read ? IBV_ACCESS_REMOTE_READ : IBV_ACCESS_REMOTE_WRITE,
                                       !is_read, local)
                         : 0;
      if (rc == EPIPE) {  // stays outstanding: flushed with the connection
        fail(LlpEnd::PeerClosed, IBV_WC_WR_FLUSH_ERR);
        return Step::Failed;
      }
      if (rc) {
        ECA_QP_LOG(Info, qp_.qpn, "remote access error (rkey 0x%x addr 0x%llx len %llu)",
                   w->rkey, (unsigned long long)w->remote_addr, (unsigned long long)len);
        return fail_wqe_locked(w, IBV_WC_REM_ACCESS_ERR);
      }
      if (w->opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
        f->type = (uint32_t)FrameType::Immediate;
        f->flags = (w->flags & IBV_SEND_SOLICITED) ? kFrameSendSolicited : 0;
        std::memcpy(&f->imm, &w->imm_data, sizeof(f->imm));
        f->model_ps = pending_due_ ? pending_due_ : now_ps();
        ring_publish_locked();
        await_ack_.push_back(w);  // completes when the peer has consumed a receive for it
        return Step::Done;
      }
      qp_.sq_done(w, IBV_WC_SUCCESS);
      return Step::Done;
    }
    default:
      break;
  }
  // SEND family
  f->type = (uint32_t)FrameType::Send;
  f->flags = ((w->flags & IBV_SEND_SOLICITED) ? kFrameSendSolicited : 0) |
             (w->opcode == IBV_WR_SEND_WITH_INV ? kFrameSendInvalidate : 0);
  f->imm = w->invalidate_rkey;
  f->len = (uint32_t)len;
  f->model_ps = pending_due_ ? pending_due_ : now_ps();
  if (len <= kFrameInline) {
    engine::gather_copy(local, 0, len, f->data);  // small payloads travel in the frame
    f->nsge = 0;
    ring_publish_locked();
    await_ack_.push_back(w);  // a Send completes when the peer has placed it
    return Step::Done;
  }
  // Larger payloads are fetched by the receiving adapter from our registered memory: the
  // frame names each piece by our MR (lkey) and its address there, which the peer validates
  // against our STag table as it would an RDMA READ. The region behind each MR is granted to
  // the peer read-only (the owner's decision: it was named in a Send to that peer).
  if (nseg > kFrameSges) return local_error(w->sge[0].lkey);
  for (uint32_t n = 0; n < nseg; n++) {
    const Sge &s = *map.sge[n];
    f->sge[n] = {s.lkey, s.length, s.addr};
    Adapter::instance().name_for(s.lkey, peer_->pid());
  }
  f->nsge = (uint32_t)nseg;
  ring_publish_locked();
  await_ack_.push_back(w);
  return Step::Done;
}

// ---------------------------------------------------------------------------------------------
// Receive

// Acknowledgement (mu_ held). Publishing the count before the receive completion is made
// visible means: once our application can see the message, the peer's adapter can see that
// it was placed, whatever we do next (close, disconnect, exit).
void HwConn::ack_placed_locked() {
  ECA_ASSERT_HELD(mu_);
  link_->side[side_].placed.store(++placed_, std::memory_order_seq_cst);
  if (link_->side[1 - side_].want_intr.load(std::memory_order_seq_cst))
    Adapter::kick_peer(peer_->bell());
}

bool HwConn::harvest_acks_locked() {
  ECA_ASSERT_HELD(mu_);
  const uint64_t placed = link_->side[1 - side_].placed.load(std::memory_order_acquire);
  uint64_t seen = acked_seen_.load(std::memory_order_relaxed);
  if (placed == seen) return false;
  if (placed - seen > await_ack_.size()) {  // acknowledges what we never sent
    if (!failing_) {
      ECA_QP_LOG(Warn, qp_.qpn, "peer acknowledged %llu messages, %zu were outstanding",
                 (unsigned long long)(placed - seen), await_ack_.size());
      terminate_locked(WireError::Protocol);
    }
    acked_seen_.store(placed, std::memory_order_relaxed);  // report it once
    return false;
  }
  while (seen != placed) {
    SendWqe *w = await_ack_.front();
    await_ack_.pop_front();
    seen++;
    qp_.sq_done(w, IBV_WC_SUCCESS);
  }
  acked_seen_.store(seen, std::memory_order_relaxed);
  return true;
}

bool HwConn::acks_pending() const {
  return link_ && link_->side[1 - side_].placed.load(std::memory_order_relaxed) !=
                       acked_seen_.load(std::memory_order_relaxed);
}

bool HwConn::rx_locked() {
  ECA_ASSERT_HELD(mu_);
  bool did = harvest_acks_locked();
  uint64_t head = in_->head.load(std::memory_order_relaxed);
  while (!failing_) {
    const uint64_t tail = in_->tail.load(std::memory_order_acquire);
    if (head == tail) break;
    tsan::acquire(tsan_key_);
    if (tail - head > kRingSlots) {  // a peer that corrupts the ring indices
      terminate_locked(WireError::Protocol);
      break;
    }
    Frame f;  // a private snapshot: the peer cannot change what we validate
    std::memcpy(static_cast<void *>(&f), &in_->slots[head & kRingMask], sizeof(Frame));
    if (timing_.mode() == Mode::Paced && f.model_ps > now_ps()) break;
    const Step step = handle_frame_locked(f);
    if (step == Step::Retry) break;  // waiting for a receive buffer or ring room
    in_->head.store(++head, std::memory_order_release);
    did = true;
    if (step == Step::Failed) break;
  }
  return did;
}

Step HwConn::handle_frame_locked(const Frame &f) {
  ECA_ASSERT_HELD(mu_);
  switch (static_cast<FrameType>(f.type)) {
    case FrameType::Send:
    case FrameType::Immediate: {
      const bool solicited = (f.flags & kFrameSendSolicited) != 0;
      if (!have_rqe_) {
        if (!qp_.rq_take(&rqe_)) {
          const uint64_t now = mono_ns();
          if (!rqe_deadline_ns_) rqe_deadline_ns_ = now + (uint64_t)config().recv_wait_ms * 1000000;
          if (now < rqe_deadline_ns_) return Step::Retry;
          ECA_QP_LOG(Info, qp_.qpn, "Send arrived with no receive posted");
          rqe_deadline_ns_ = 0;
          return terminate_locked(WireError::InvalidRequest);
        }
        have_rqe_ = true;
        rqe_deadline_ns_ = 0;
      }
      if (static_cast<FrameType>(f.type) == FrameType::Immediate) {
        have_rqe_ = false;
        __be32 imm;
        std::memcpy(&imm, &f.imm, sizeof imm);
        ack_placed_locked();
        qp_.rq_done(rqe_, IBV_WC_SUCCESS, 0, solicited, 0, &imm);
        return Step::Done;
      }
      // Validate the frame before touching memory.
      bool ok = f.nsge <= kFrameSges && (f.nsge > 0 || f.len <= kFrameInline);
      uint64_t sum = 0;
      for (uint32_t i = 0; ok && i < f.nsge; i++) sum += f.sge[i].len;
      ok = ok && (f.nsge == 0 || sum == f.len);
      if (!ok) {
        ECA_QP_LOG(Warn, qp_.qpn, "malformed Send frame from the peer");
        return terminate_locked(WireError::Protocol);
      }
      engine::SgeMap map;
      uint32_t bad = 0;
      MrUse use;  // the receive buffers stay registered while we place into them
      if (const ibv_wc_status st = engine::map_sges(qp_.pd, {rqe_.sge.data(), rqe_.num_sge},
                                                    IBV_ACCESS_LOCAL_WRITE, &map, &bad))
        return fail_rqe_locked(st, 0, WireError::Protocol);
      if (!use.enter(map.refs.data(), map.n))
        return fail_rqe_locked(IBV_WC_LOC_PROT_ERR, 0, WireError::Protocol);
      const std::span<const Seg> dst = map.spans();
      if (f.len > map.bytes) return fail_rqe_locked(IBV_WC_LOC_LEN_ERR, 0, WireError::InvalidRequest);
      if (f.nsge == 0) {
        engine::scatter_copy(f.data, dst, 0, f.len);
      } else {
        // Each piece is fetched like an RDMA READ of the sender's MR: only memory the sender's
        // adapter still has registered, in the sender's PD, within bounds (remote_copy).
        uint64_t pos = 0;
        for (uint32_t i = 0; i < f.nsge; i++) {
          const FrameSge &g = f.sge[i];
          if (!g.len) continue;
          std::array<Seg, kMaxSge> part;
          const size_t np = engine::slice(dst, pos, pos + g.len, part.data(), part.size());
          const int rc = remote_copy(g.stag, g.addr, g.len, 0, false, {part.data(), np});
          if (rc == EPIPE) {  // the sender flushes this Send: it must not arrive either
            fail(LlpEnd::PeerClosed, IBV_WC_WR_FLUSH_ERR);
            return Step::Failed;
          }
          if (rc) {
            ECA_QP_LOG(Warn, qp_.qpn,
                       "Send frame names memory the peer has not registered (lkey 0x%x)", g.stag);
            return terminate_locked(WireError::Protocol);
          }
          pos += g.len;
        }
      }
      uint32_t inv = 0;
      if (f.flags & kFrameSendInvalidate) {
        inv = f.imm;
        if (!mr_invalidate(inv, qp_.pd, qp_.qpn))
          return fail_rqe_locked(IBV_WC_REM_INV_REQ_ERR, f.len, WireError::Protocol);
      }
      have_rqe_ = false;
      ack_placed_locked();  // every Send is acknowledged once placed, before it is visible
      qp_.rq_done(rqe_, IBV_WC_SUCCESS, f.len, solicited, inv);
      return Step::Done;
    }
    case FrameType::AtomicRequest:
      return handle_atomic_request_locked(f);
    case FrameType::AtomicResponse:
      return handle_atomic_response_locked(f);
    case FrameType::Terminate:
      ECA_QP_LOG(Info, qp_.qpn, "peer adapter terminated the connection (status %u)", f.status);
      fail(LlpEnd::TerminateRecvd, terminate_status(f.status));
      return Step::Failed;
    case FrameType::Disconnect:
      fail(LlpEnd::PeerClosed, IBV_WC_WR_FLUSH_ERR);
      return Step::Failed;
  }
  ECA_QP_LOG(Warn, qp_.qpn, "unknown frame type %u from the peer", f.type);
  return terminate_locked(WireError::Protocol);
}

// ---------------------------------------------------------------------------------------------
// Deregistration: the peer's accesses to our memory (see LinkSide::touching)

void HwConn::await_peer_untouched(uint32_t key) {
  if (!ready_.load(std::memory_order_acquire)) return;  // never attached: no peer access
  const std::atomic<uint32_t> &w = link_->side[1 - side_].touching;
  auto busy = [&] {
    const uint32_t v = w.load(std::memory_order_seq_cst);
    return key ? v == key : v != 0;
  };
  if (!busy()) return;
  constexpr uint64_t kGone = 10'000'000, kHostile = 2'000'000'000;  // ns
  const uint64_t t0 = mono_ns();
  while (busy()) {
    const uint64_t waited = mono_ns() - t0;
    // The peer process is gone: an access it still announces will never finish. (A live
    // peer may be descheduled for a while in the middle of a copy on a loaded machine.)
    if (waited > kGone && process_gone(peer_->pid())) return;
    if (waited > kHostile) {
      ECA_QP_LOG(Warn, qp_.qpn, "peer adapter held an access to STag 0x%x for 2 s: link ends",
                 w.load());
      fail(LlpEnd::Reset, IBV_WC_WR_FLUSH_ERR);
      return;
    }
    std::this_thread::yield();
  }
}

// ---------------------------------------------------------------------------------------------
// Ending

void HwConn::fail(LlpEnd why, ibv_wc_status st) {
  if (failing_.exchange(true)) return;
  auto self = shared_from_this();
  // QP transitions and rdma_cm notification run on the progress thread, never under mu_.
  Progress::instance().post([self, why, st] { self->do_fail(why, st); });
}

// Progress thread. The adapter's part runs under cb_mu_; Qp::llp_ended, which closes this
// connection (close() takes cb_mu_), runs after it, announced by upcall_.
void HwConn::do_fail(LlpEnd why, ibv_wc_status st) {
  std::unique_lock cb(cb_mu_);
  if (!end_begin_locked(cb_mu_)) return;
  {
    // Sends the peer placed before it went away completed successfully: their count is
    // published before the peer's Disconnect, Terminate or exit.
    std::lock_guard lk(mu_);
    if (link_ && ready_) harvest_acks_locked();
  }
  report_end(
      qp_, why, st, mu_, {rqe_, have_rqe_},
      [this] {
        inflight_.clear();  // still unfinished in the SQ: flushed by enter_error()
        tx_queued_.store(false, std::memory_order_relaxed);
        await_ack_.clear();
        await_atomic_.clear();
      },
      [&](auto &&report) {
        upcall_.store(true, std::memory_order_relaxed);  // under cb_mu_: a close() after us sees it
        cb.unlock();
        report();  // calls close()
        upcall_.store(false, std::memory_order_release);
        upcall_.notify_all();
      });
}

void HwConn::close(bool graceful) {
  // Always through cb_mu_, even when closed already: a close() or handler still running on
  // another thread uses the Qp, which the caller may free next. Then, with cb_mu_ released
  // (`cb` goes first), the same for do_fail inside Qp::llp_ended (upcall_), unless that call
  // is what brought us here.
  struct AwaitUpcall {
    HwConn &c;
    ~AwaitUpcall() {
      if (Progress::instance().on_progress_thread()) return;  // nested in do_fail, or none
      while (c.upcall_.load(std::memory_order_acquire)) c.upcall_.wait(true);
    }
  } await_upcall{*this};
  std::lock_guard cb(cb_mu_);
  if (!close_begin_locked(cb_mu_)) return;
  close_detach(qp_, mu_, {rqe_, have_rqe_}, [&] {
    if (stats_.ops)
      ECA_QP_LOG(Info, qp_.qpn, "modeled adapter: %llu operations, %llu bytes, %llu adapter-path copies",
                 (unsigned long long)stats_.ops, (unsigned long long)stats_.bytes,
                 (unsigned long long)stats_.adapter_path_copies);
    if (!ready_ || !link_) return;
    if (graceful)
      if (Frame *f = ring_slot_locked()) {
        f->type = (uint32_t)FrameType::Disconnect;
        f->model_ps = now_ps();
        ring_publish_locked();
      }
    // seq_cst: pairs with the peer's LinkSide::touching store in remote_copy. From here the
    // peer's adapter starts no access to our memory; one already running is awaited, as
    // our outstanding work requests are flushed (and their buffers reused) after this.
    link_->side[side_].closed.store(1, std::memory_order_seq_cst);
  });
  await_peer_untouched(0);
  Adapter::instance().detach(this);
  Adapter::instance().forget(nonce_, asker_pid_.exchange(0));
  finish_on_progress(nullptr, [self = shared_from_this()] {
    boost::system::error_code ec;
    self->sock_.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
    self->sock_.close(ec);
  });
}

}  // namespace eca::hw

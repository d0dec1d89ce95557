// RC queue pairs: the verbs state machine, send/receive queues, in-order retirement with
// completions, and flushing. The device layer (QpEngine) moves the data.
#include <cerrno>
#include <cstring>
#include <unordered_map>

#include "provider/core/backend.hpp"
#include "provider/core/log.hpp"
#include "provider/core/mw.hpp"
#include "provider/core/objects.hpp"

namespace eca {
namespace {

std::atomic<uint32_t> g_next_qpn{1};

// Live QPs by number (rdma_cm looks QPs up by the number the application passes).
std::mutex g_qps_mu;
std::unordered_map<uint32_t, Qp *> &qps() {
  static auto *m = new std::unordered_map<uint32_t, Qp *>();
  return *m;
}

constexpr uint64_t kSupportedSendOps = IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_SEND |
                                       IBV_QP_EX_WITH_RDMA_READ | IBV_QP_EX_WITH_SEND_WITH_INV |
                                       IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM |
                                       IBV_QP_EX_WITH_BIND_MW | IBV_QP_EX_WITH_LOCAL_INV;
constexpr uint64_t kAtomicSendOps =
    IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP | IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD;

bool is_atomic(ibv_wr_opcode op) {
  return op == IBV_WR_ATOMIC_CMP_AND_SWP || op == IBV_WR_ATOMIC_FETCH_AND_ADD;
}

bool opcode_supported(const Qp &qp, ibv_wr_opcode op) {
  if (is_atomic(op)) return qp.atomics;  // RFC 7306 Atomic Request/Response
  switch (op) {
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_INV:
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:  // RDMA Write + RFC 7306 Immediate Data message
    case IBV_WR_RDMA_READ:
    case IBV_WR_BIND_MW:    // type 2 windows (mw.cpp)
    case IBV_WR_LOCAL_INV:  // of a type 2 window's STag
      return true;
    default:  // send with immediate, TSO: not supported
      return false;
  }
}

// Valid transitions of the verbs QP state machine (ibv_modify_qp(3)); ERR and RESET are
// reachable from every state.
bool transition_ok(ibv_qp_state from, ibv_qp_state to) {
  if (to == IBV_QPS_ERR || to == IBV_QPS_RESET) return true;
  switch (from) {
    case IBV_QPS_RESET: return to == IBV_QPS_INIT;
    case IBV_QPS_INIT: return to == IBV_QPS_INIT || to == IBV_QPS_RTR;
    case IBV_QPS_RTR: return to == IBV_QPS_RTS;
    case IBV_QPS_RTS: return to == IBV_QPS_RTS || to == IBV_QPS_SQD;
    case IBV_QPS_SQD: return to == IBV_QPS_RTS || to == IBV_QPS_SQD;
    case IBV_QPS_SQE: return to == IBV_QPS_RTS;
    default: return false;
  }
}

}  // namespace

ibv_wc_opcode wc_opcode_for(ibv_wr_opcode op) {
  switch (op) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM: return IBV_WC_RDMA_WRITE;
    case IBV_WR_RDMA_READ: return IBV_WC_RDMA_READ;
    case IBV_WR_ATOMIC_CMP_AND_SWP: return IBV_WC_COMP_SWAP;
    case IBV_WR_ATOMIC_FETCH_AND_ADD: return IBV_WC_FETCH_ADD;
    case IBV_WR_LOCAL_INV: return IBV_WC_LOCAL_INV;
    case IBV_WR_BIND_MW: return IBV_WC_BIND_MW;
    default: return IBV_WC_SEND;
  }
}

int qp_create(Context *ctx, const ibv_qp_init_attr_ex &a, Qp **out) {
  constexpr uint32_t known = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS |
                             IBV_QP_INIT_ATTR_CREATE_FLAGS;
  if (a.comp_mask & ~known) return EOPNOTSUPP;
  if ((a.comp_mask & IBV_QP_INIT_ATTR_CREATE_FLAGS) && a.create_flags) return EOPNOTSUPP;
  if (a.qp_type != IBV_QPT_RC) return EOPNOTSUPP;  // iWARP is reliable-connected only
  if (!(a.comp_mask & IBV_QP_INIT_ATTR_PD) || !a.pd || !a.send_cq || !a.recv_cq) return EINVAL;
  if (a.pd->context != ctx->ibv() || a.send_cq->context != ctx->ibv() ||
      a.recv_cq->context != ctx->ibv())
    return EINVAL;
  ibv_device_attr dattr{};
  ctx->dev->backend->device_attr(*ctx->dev, &dattr);
  const bool atomics = dattr.atomic_cap != IBV_ATOMIC_NONE;
  uint64_t ops = (a.comp_mask & IBV_QP_INIT_ATTR_SEND_OPS_FLAGS) ? a.send_ops_flags : 0;
  if (ops & ~(kSupportedSendOps | (atomics ? kAtomicSendOps : 0))) return EOPNOTSUPP;
  const ibv_qp_cap &c = a.cap;
  if (c.max_send_wr > kMaxQpWr || c.max_send_sge > kMaxSge || c.max_inline_data > kMaxInline)
    return EINVAL;
  if (!a.srq && (c.max_recv_wr > kMaxQpWr || c.max_recv_sge > kMaxSge)) return EINVAL;

  auto *qp = new Qp();
  std::memset(&qp->qpx, 0, sizeof(qp->qpx));
  qp->ctx = ctx;
  qp->pd = Pd::from(a.pd);
  qp->scq = Cq::from(a.send_cq);
  qp->rcq = Cq::from(a.recv_cq);
  qp->srq = a.srq ? Srq::from(a.srq) : nullptr;
  qp->sq_sig_all = a.sq_sig_all != 0;
  qp->send_ops_flags = ops;
  qp->atomics = atomics;
  qp->has_qpx = (a.comp_mask & IBV_QP_INIT_ATTR_SEND_OPS_FLAGS) != 0;
  qp->qpn = g_next_qpn.fetch_add(1);
  // Truthful capabilities: what the queues and the copy-in of inline data really allow.
  qp->cap.max_send_wr = c.max_send_wr;
  qp->cap.max_recv_wr = a.srq ? 0 : c.max_recv_wr;
  qp->cap.max_send_sge = kMaxSge;
  qp->cap.max_recv_sge = a.srq ? 0 : kMaxSge;
  qp->cap.max_inline_data = kMaxInline;
  qp->sq.init(c.max_send_wr);
  qp->rq.init(a.srq ? 0 : c.max_recv_wr);
  qp->ord = kMaxIrdOrd;
  qp->ird = kMaxIrdOrd;
  // iWARP drivers (siw, cxgb4) report a new QP as INIT (their idle state); the ibv_qp field
  // says RESET, as libibverbs' create path sets it, until ibv_query_qp refreshes it.
  qp->state.store(IBV_QPS_INIT);

  ibv_qp &q = qp->qpx.qp_base;
  q.context = ctx->ibv();
  q.qp_context = a.qp_context;
  q.pd = a.pd;
  q.send_cq = a.send_cq;
  q.recv_cq = a.recv_cq;
  q.srq = a.srq;
  q.handle = qp->qpn;
  q.qp_num = qp->qpn;
  q.state = IBV_QPS_RESET;
  q.qp_type = IBV_QPT_RC;
  pthread_mutex_init(&q.mutex, nullptr);
  pthread_cond_init(&q.cond, nullptr);
  if (qp->has_qpx) qp_ex_init(qp);

  qp->pd->users++;
  qp->scq->users++;
  qp->rcq->users++;
  if (qp->srq) qp->srq->users++;
  {
    std::lock_guard lk(g_qps_mu);
    qps()[qp->qpn] = qp;
  }
  *out = qp;
  return 0;
}

Qp *qp_lookup(Context *ctx, uint32_t qpn) {
  std::lock_guard lk(g_qps_mu);
  auto it = qps().find(qpn);
  // QP numbers name QPs of a device, whichever context of it created them (as in the kernel,
  // where rdma_accept/rdma_connect find conn_param->qp_num on the id's device).
  return it != qps().end() && it->second->ctx->dev == ctx->dev ? it->second : nullptr;
}

int qp_destroy(Qp *qp) {
  {
    std::lock_guard lk(g_qps_mu);
    qps().erase(qp->qpn);
  }
  qp->scq->remove_hook(qp);  // waits for an ibv_poll_cq() that is inside this QP's engine
  if (qp->rcq != qp->scq) qp->rcq->remove_hook(qp);
  std::unique_ptr<QpEngine> eng = qp->detach_engine();  // no thread is inside it any more
  if (eng) eng->close(false);  // after this, nothing calls back into the QP
  eng.reset();
  qp->scq->purge_qp(qp->qpn, qp->srq != nullptr);
  if (qp->rcq != qp->scq) qp->rcq->purge_qp(qp->qpn, qp->srq != nullptr);
  qp->pd->users--;
  qp->scq->users--;
  qp->rcq->users--;
  if (qp->srq) qp->srq->users--;
  pthread_mutex_destroy(&qp->qpx.qp_base.mutex);
  pthread_cond_destroy(&qp->qpx.qp_base.cond);
  delete qp;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Posting

int Qp::enqueue_send(const SendWqe &w) {
  ECA_ASSERT_HELD(sq_mu);
  if (sq.full()) return ENOMEM;
  SendWqe &slot = sq.at(sq.tail);
  slot = w;
  slot.state = WqeState::Posted;
  slot.status = IBV_WC_SUCCESS;
  sq.tail++;
  publish_sq_locked();
  return 0;
}

namespace {

// Copies one ibv_send_wr into a WQE, validating what can be validated at post time.
int build_wqe(const Qp &qp, const ibv_send_wr &wr, SendWqe *w) {
  if (!opcode_supported(qp, wr.opcode)) return EINVAL;
  if (wr.num_sge < 0 || (uint32_t)wr.num_sge > qp.cap.max_send_sge) return EINVAL;
  if (is_atomic(wr.opcode)) {
    // One 8-byte local buffer receives the original value; never inline.
    if (wr.num_sge != 1 || wr.sg_list[0].length != 8) return EINVAL;
    w->wr_id = wr.wr_id;
    w->opcode = wr.opcode;
    w->flags = wr.send_flags & ~IBV_SEND_INLINE;
    w->rkey = wr.wr.atomic.rkey;
    w->remote_addr = wr.wr.atomic.remote_addr;
    w->compare_add = wr.wr.atomic.compare_add;
    w->swap = wr.opcode == IBV_WR_ATOMIC_CMP_AND_SWP ? wr.wr.atomic.swap : 0;
    w->invalidate_rkey = 0;
    w->imm_data = 0;
    w->total_len = 8;
    w->inline_len = 0;
    w->num_sge = 1;
    w->sge[0] = {wr.sg_list[0].addr, wr.sg_list[0].length, wr.sg_list[0].lkey};
    return 0;
  }
  w->wr_id = wr.wr_id;
  w->opcode = wr.opcode;
  w->flags = wr.send_flags;
  w->rkey = wr.wr.rdma.rkey;
  w->remote_addr = wr.wr.rdma.remote_addr;
  w->invalidate_rkey = wr.opcode == IBV_WR_SEND_WITH_INV ? wr.invalidate_rkey : 0;
  w->imm_data = wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM ? wr.imm_data : 0;
  if (wr.opcode == IBV_WR_LOCAL_INV) w->invalidate_rkey = wr.invalidate_rkey;
  if (mw_is_local_op(wr.opcode)) {  // no data: the window fields are all (mw.cpp)
    w->num_sge = 0;
    w->inline_len = 0;
    w->total_len = 0;
    w->mw = nullptr;
    if (wr.opcode == IBV_WR_LOCAL_INV) return 0;
    return mw_prepare_bind(const_cast<Qp *>(&qp), wr.bind_mw.mw, wr.bind_mw.rkey,
                           wr.bind_mw.bind_info, w);
  }
  uint64_t total = 0;
  for (int i = 0; i < wr.num_sge; i++) total += wr.sg_list[i].length;
  if (total > kMaxMsgSize) return EINVAL;
  w->total_len = total;
  w->inline_len = 0;
  if ((wr.send_flags & IBV_SEND_INLINE) && wr.opcode != IBV_WR_RDMA_READ) {
    if (total > kMaxInline) return EINVAL;
    uint32_t off = 0;
    for (int i = 0; i < wr.num_sge; i++) {
      std::memcpy(w->inline_data.data() + off,
                  reinterpret_cast<const void *>(wr.sg_list[i].addr), wr.sg_list[i].length);
      off += wr.sg_list[i].length;
    }
    w->inline_len = off;
    w->num_sge = 0;
  } else {
    w->flags &= ~IBV_SEND_INLINE;
    w->num_sge = (uint32_t)wr.num_sge;
    for (int i = 0; i < wr.num_sge; i++)
      w->sge[i] = {wr.sg_list[i].addr, wr.sg_list[i].length, wr.sg_list[i].lkey};
  }
  return 0;
}

bool send_state_ok(ibv_qp_state s) {
  return s == IBV_QPS_RTS || s == IBV_QPS_SQD || s == IBV_QPS_ERR;
}

}  // namespace

int Qp::post_send(const ibv_send_wr *wr, const ibv_send_wr **bad) {
  int rc = 0;
  bool posted = false;
  {
    std::lock_guard lk(sq_mu);
    for (; wr; wr = wr->next) {
      if (!send_state_ok(state.load())) {
        rc = EINVAL;
        break;
      }
      if (sq.full()) {
        rc = ENOMEM;
        break;
      }
      // Built in place in the ring slot (a WQE is large: inline data, SGE array).
      SendWqe &slot = sq.at(sq.tail);
      if ((rc = build_wqe(*this, *wr, &slot))) break;
      slot.state = WqeState::Posted;
      slot.status = IBV_WC_SUCCESS;
      sq.tail++;
      posted = true;
    }
    if (posted && state.load() == IBV_QPS_ERR) flush_locked_sq();
    publish_sq_locked();
  }
  if (rc) {
    *bad = wr;
    ECA_QP_LOG(Debug, qpn, "post_send failed: %s", strerror(rc));
  }
  if (posted)
    if (EngineRef e(*this); e) e->sq_doorbell();
  return rc;
}

int Qp::post_recv(const ibv_recv_wr *wr, const ibv_recv_wr **bad) {
  int rc = 0;
  if (srq) {
    *bad = wr;
    return EINVAL;  // receives go to the SRQ
  }
  {
    std::lock_guard lk(rq_mu);
    for (; wr; wr = wr->next) {
      if (state.load() == IBV_QPS_RESET) {
        rc = EINVAL;
        break;
      }
      if (wr->num_sge < 0 || (uint32_t)wr->num_sge > cap.max_recv_sge) {
        rc = EINVAL;
        break;
      }
      if (rq.full()) {
        rc = ENOMEM;
        break;
      }
      rq.at(rq.tail).assign(*wr);
      rq.tail++;
    }
    publish_rq_locked();
  }
  if (rc) *bad = wr;
  if (state.load() == IBV_QPS_ERR)
    flush_rq();
  else if (EngineRef e(*this); e)
    e->rq_doorbell();
  return rc;
}

// ---------------------------------------------------------------------------------------------
// Device-layer side

SendWqe *Qp::sq_take() {
  // Nothing new? Checked without sq_mu. A poster publishes the tail (release, under sq_mu)
  // before it rings the doorbell; the device's hand-off protocol makes the ring happen
  // before this look (software: IwarpConn's tx_state_, an acquire RMW reading from the
  // doorbell's release RMW; the modeled adapter: its seq_cst work flag, which this fence
  // pairs with), so a post is never stranded.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (sq_unsent.empty()) return nullptr;
  std::lock_guard lk(sq_mu);
  if (sq.tx == sq.tail || state.load() == IBV_QPS_ERR) return nullptr;
  SendWqe *w = &sq.at(sq.tx++);
  w->state = WqeState::InProgress;
  publish_sq_locked();
  return w;
}

void Qp::sq_done(SendWqe *w, ibv_wc_status st) {
  std::lock_guard lk(sq_mu);
  if (w->state == WqeState::Done) return;  // already flushed
  w->state = WqeState::Done;
  w->status = st;
  while (sq.head != sq.tx && sq.at(sq.head).state == WqeState::Done) retire_locked(sq.at(sq.head++));
}

// Signaled WQEs, all WQEs with sq_sig_all, and every failed or flushed one complete.
void Qp::retire_locked(const SendWqe &d) {
  ECA_ASSERT_HELD(sq_mu);
  if (!(sq_sig_all || (d.flags & IBV_SEND_SIGNALED) || d.status != IBV_WC_SUCCESS)) return;
  if (d.status != IBV_WC_SUCCESS) err_completed.store(true, std::memory_order_release);
  ibv_wc wc{};
  wc.wr_id = d.wr_id;
  wc.status = d.status;
  wc.opcode = wc_opcode_for(d.opcode);
  wc.byte_len = d.status == IBV_WC_SUCCESS ? (uint32_t)d.total_len : 0;
  wc.qp_num = qpn;
  scq->push(wc, false);
}

bool Qp::rq_take(RecvWqe *out) {
  if (srq) return srq->take(out);
  std::lock_guard lk(rq_mu);
  if (rq.head == rq.tail) return false;
  *out = rq.at(rq.head++);
  publish_rq_locked();
  return true;
}

void Qp::rq_done(const RecvWqe &w, ibv_wc_status st, uint32_t byte_len, bool solicited,
                 uint32_t invalidated_rkey, const __be32 *imm) {
  if (st != IBV_WC_SUCCESS) err_completed.store(true, std::memory_order_release);
  ibv_wc wc{};
  wc.wr_id = w.wr_id;
  wc.status = st;
  wc.opcode = imm ? IBV_WC_RECV_RDMA_WITH_IMM : IBV_WC_RECV;
  wc.byte_len = byte_len;
  wc.qp_num = qpn;
  if (imm) {
    wc.wc_flags = IBV_WC_WITH_IMM;
    wc.imm_data = *imm;
  } else if (invalidated_rkey && st == IBV_WC_SUCCESS) {
    wc.wc_flags = IBV_WC_WITH_INV;
    wc.invalidated_rkey = invalidated_rkey;
  }
  rcq->push(wc, solicited);
}

// Marks every WQE not yet finished as flushed and retires the queue (sq_mu held).
void Qp::flush_locked_sq() {
  ECA_ASSERT_HELD(sq_mu);
  for (uint64_t i = sq.head; i != sq.tail; i++) {
    SendWqe &w = sq.at(i);
    if (w.state != WqeState::Done) {
      w.state = WqeState::Done;
      w.status = IBV_WC_WR_FLUSH_ERR;
    }
  }
  sq.tx = sq.tail;
  publish_sq_locked();
  while (sq.head != sq.tail) retire_locked(sq.at(sq.head++));
}

void Qp::flush_rq() {
  if (srq) return;  // SRQ receives stay with the SRQ
  std::lock_guard lk(rq_mu);
  // Only an ERR QP flushes: a poster that saw ERR may get here after the QP was reset and
  // connected again, and must not flush the new connection's receives.
  if (state.load() != IBV_QPS_ERR) return;
  while (rq.head != rq.tail) {
    RecvWqe &r = rq.at(rq.head++);
    ibv_wc wc{};
    wc.wr_id = r.wr_id;
    wc.status = IBV_WC_WR_FLUSH_ERR;
    wc.opcode = IBV_WC_RECV;
    wc.qp_num = qpn;
    rcq->push(wc, false);
  }
  publish_rq_locked();
}

std::unique_ptr<QpEngine> Qp::detach_engine() {
  std::lock_guard swap(engine_swap_mu);
  std::unique_ptr<QpEngine> old;
  {
    std::lock_guard lk(engine_mu);
    if (!engine) return nullptr;
    engine_gate.fetch_or(kGateClosed, std::memory_order_relaxed);
    old = std::move(engine);
  }
  // Drain: the threads inside are in non-blocking engine calls or in close(), which waits
  // only for a progress-thread handler; none of them needs engine_swap_mu.
  for (unsigned spins = 0; engine_gate.load(std::memory_order_acquire) != kGateClosed; spins++)
    if (spins > 64) std::this_thread::yield();
  engine_fast.store(nullptr, std::memory_order_relaxed);
  return old;
}

void Qp::enter_error() {
  // The engine is closed without engine_mu held: close() waits for a progress-thread handler
  // that may itself be on its way into enter_error().
  if (EngineRef e(*this); e) e->close(false);
  state.store(IBV_QPS_ERR);
  set_public_state(IBV_QPS_ERR);
  {
    std::lock_guard lk(sq_mu);
    flush_locked_sq();
  }
  flush_rq();
}

void Qp::llp_ended(LlpEnd why) {
  bool was_err = state.load() == IBV_QPS_ERR;
  ECA_QP_LOG(Info, qpn, "connection ended (%d)", (int)why);
  enter_error();
  if (!was_err && (why == LlpEnd::Reset || why == LlpEnd::TerminateSent ||
                   why == LlpEnd::TerminateRecvd)) {
    ibv_async_event ev{};
    ev.element.qp = ibv();
    ev.event_type = IBV_EVENT_QP_FATAL;
    ctx->post_async(ev);
  }
  std::function<void(LlpEnd)> hook;
  {
    std::lock_guard lk(engine_mu);
    hook = std::move(on_llp_end);
    on_llp_end = nullptr;
  }
  if (hook) hook(why);
}

uint64_t Qp::attach_engine(std::unique_ptr<QpEngine> e) {
  std::unique_ptr<QpEngine> replaced = detach_engine();  // normally none (RESET detached it)
  {
    std::lock_guard swap(engine_swap_mu);
    std::lock_guard lk(engine_mu);
    engine = std::move(e);
    engine_fast.store(engine.get(), std::memory_order_relaxed);
    engine_gate.fetch_and(~kGateClosed, std::memory_order_release);  // see EngineRef
  }
  if (replaced) replaced->close(false);
  scq->add_hook(this);
  if (rcq != scq) rcq->add_hook(this);
  // A new connection: error completions of an earlier life (flushes that landed after a
  // RESET) say nothing about this one. Under the queue locks: a poster that saw the old ERR
  // state under them and flushes its WQE is then ordered before this point, never after it.
  std::scoped_lock qlk(sq_mu, rq_mu);
  err_completed.store(false, std::memory_order_release);
  state.store(IBV_QPS_RTS);
  set_public_state(IBV_QPS_RTS);
  return conn_gen.fetch_add(1) + 1;
}

void Qp::disconnect(uint64_t gen) {
  {
    std::lock_guard lk(engine_mu);
    if (conn_gen.load() != gen) return;  // reset or reconnected since: not this connection
    on_llp_end = nullptr;
  }
  if (EngineRef e(*this); e) e->close(true);
  enter_error();
}

// ---------------------------------------------------------------------------------------------
// modify / query

int Qp::modify(const ibv_qp_attr &attr, int mask) {
  ibv_qp_state cur = visible_state();
  if ((mask & IBV_QP_CUR_STATE) && attr.cur_qp_state != cur) return EINVAL;
  if (mask & IBV_QP_PORT && attr.port_num != 1) return EINVAL;
  if (mask & IBV_QP_MAX_QP_RD_ATOMIC && attr.max_rd_atomic > kMaxIrdOrd) return EINVAL;
  if (mask & IBV_QP_MAX_DEST_RD_ATOMIC && attr.max_dest_rd_atomic > kMaxIrdOrd) return EINVAL;
  if (mask & IBV_QP_ACCESS_FLAGS &&
      (attr.qp_access_flags & ~(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC)))
    return EINVAL;
  if (mask & IBV_QP_STATE) {
    ibv_qp_state to = attr.qp_state;
    if (!transition_ok(cur, to)) return EINVAL;
    if (to == IBV_QPS_RTS && cur != IBV_QPS_RTS && cur != IBV_QPS_SQD) {
      // iWARP: RTS means "connected": only rdma_cm (or an established LLP) gets a QP there.
      std::lock_guard lk(engine_mu);
      if (!engine) return EINVAL;
    }
  }
  if (mask & IBV_QP_MAX_QP_RD_ATOMIC) ord = attr.max_rd_atomic;
  if (mask & IBV_QP_MAX_DEST_RD_ATOMIC) ird = attr.max_dest_rd_atomic;
  if (mask & IBV_QP_STATE) {
    ibv_qp_state to = attr.qp_state;
    if (to == IBV_QPS_ERR) {
      enter_error();
    } else if (to == IBV_QPS_RESET) {
      enter_error();  // stops the data path and flushes; RESET then empties the queues
      {
        std::scoped_lock lk(sq_mu, rq_mu);
        sq.head = sq.tx = sq.tail = 0;
        rq.head = rq.tx = rq.tail = 0;
        publish_sq_locked();
        publish_rq_locked();
        state.store(IBV_QPS_RESET);
        set_public_state(IBV_QPS_RESET);
        conn_gen.fetch_add(1);  // the connection is over for rdma_cm too (disconnect())
      }
      // Destroyed only when no poller, poster or notifier is inside it any more (EngineRef),
      // outside the queue locks that such a thread may be waiting for.
      std::unique_ptr<QpEngine> old = detach_engine();
      err_completed.store(false, std::memory_order_release);
    } else {
      state.store(to);
      set_public_state(to);
    }
  }
  return 0;
}

int Qp::query(ibv_qp_attr *attr, int, ibv_qp_init_attr *init) {
  std::memset(attr, 0, sizeof(*attr));
  attr->qp_state = visible_state();
  attr->cur_qp_state = attr->qp_state;
  attr->path_mtu = IBV_MTU_1024;
  attr->qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                          IBV_ACCESS_REMOTE_READ;
  attr->cap = cap;
  attr->max_rd_atomic = (uint8_t)ord.load(std::memory_order_relaxed);
  attr->max_dest_rd_atomic = (uint8_t)ird.load(std::memory_order_relaxed);
  attr->port_num = 1;
  attr->sq_draining = 0;
  if (init) {
    std::memset(init, 0, sizeof(*init));
    init->qp_context = qpx.qp_base.qp_context;
    init->send_cq = qpx.qp_base.send_cq;
    init->recv_cq = qpx.qp_base.recv_cq;
    init->srq = qpx.qp_base.srq;
    init->cap = cap;
    init->qp_type = IBV_QPT_RC;
    init->sq_sig_all = sq_sig_all;
  }
  return 0;
}

}  // namespace eca

namespace eca {
void Qp::sq_fail_oldest(ibv_wc_status st) {
  std::lock_guard lk(sq_mu);
  for (uint64_t i = sq.head; i != sq.tail; i++) {
    SendWqe &w = sq.at(i);
    if (w.state == WqeState::Done) continue;
    w.state = WqeState::Done;
    w.status = st;
    if (i >= sq.tx) sq.tx = i + 1;
    publish_sq_locked();
    break;
  }
}
}  // namespace eca

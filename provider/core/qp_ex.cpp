// The ibv_qp_ex work-request builder API (ibv_wr_start ... ibv_wr_complete). Each wr_<op>
// starts a new WQE in the QP's batch; wr_set_* fill the newest; wr_complete posts the batch
// through the same path as ibv_post_send. Errors are latched and returned by wr_complete.
#include <cerrno>
#include <cstring>

#include "provider/core/backend.hpp"
#include "provider/core/mw.hpp"
#include "provider/core/objects.hpp"

namespace eca {
namespace {

Qp *Q(ibv_qp_ex *x) { return Qp::from(x); }

SendWqe *begin(ibv_qp_ex *x, ibv_wr_opcode op) {
  Qp *qp = Q(x);
  if (qp->wr_batch.size() >= qp->cap.max_send_wr + 1u) {
    qp->wr_error = ENOMEM;
    return nullptr;
  }
  SendWqe &w = qp->wr_batch.emplace_back();
  w.wr_id = x->wr_id;
  w.flags = x->wr_flags;
  w.opcode = op;
  return &w;
}

SendWqe *last(ibv_qp_ex *x) {
  Qp *qp = Q(x);
  if (qp->wr_batch.empty()) {
    qp->wr_error = EINVAL;
    return nullptr;
  }
  return &qp->wr_batch.back();
}

void unsupported(ibv_qp_ex *x) { Q(x)->wr_error = EOPNOTSUPP; }

bool is_atomic(const SendWqe &w) {
  return w.opcode == IBV_WR_ATOMIC_CMP_AND_SWP || w.opcode == IBV_WR_ATOMIC_FETCH_AND_ADD;
}

// What ibv_post_send checks in build_wqe for an atomic: one 8-byte result buffer.
int check_atomic(const SendWqe &w) {
  return w.num_sge == 1 && w.total_len == 8 && !(w.flags & IBV_SEND_INLINE) ? 0 : EINVAL;
}

void wr_start(ibv_qp_ex *x) {
  Q(x)->wr_batch.clear();
  Q(x)->wr_error = 0;
}

void wr_abort(ibv_qp_ex *x) {
  Q(x)->wr_batch.clear();
  Q(x)->wr_error = 0;
}

int wr_complete(ibv_qp_ex *x) {
  Qp *qp = Q(x);
  int rc = qp->wr_error;
  if (!rc) {
    std::lock_guard lk(qp->sq_mu);
    ibv_qp_state st = qp->state.load();
    if (st != IBV_QPS_RTS && st != IBV_QPS_SQD) rc = EINVAL;
    if (!rc && qp->sq.tail - qp->sq.head + qp->wr_batch.size() > qp->sq.max_wr) rc = ENOMEM;
    for (size_t i = 0; !rc && i < qp->wr_batch.size(); i++) {
      if (is_atomic(qp->wr_batch[i]) && (rc = check_atomic(qp->wr_batch[i]))) break;
      rc = qp->enqueue_send(qp->wr_batch[i]);
    }
  }
  bool posted = !rc && !qp->wr_batch.empty();
  qp->wr_batch.clear();
  qp->wr_error = 0;
  if (posted)
    if (EngineRef e(*qp); e) e->sq_doorbell();
  return rc;
}

void wr_send(ibv_qp_ex *x) { begin(x, IBV_WR_SEND); }
void wr_send_inv(ibv_qp_ex *x, uint32_t rkey) {
  if (SendWqe *w = begin(x, IBV_WR_SEND_WITH_INV)) w->invalidate_rkey = rkey;
}
void wr_rdma_write(ibv_qp_ex *x, uint32_t rkey, uint64_t addr) {
  if (SendWqe *w = begin(x, IBV_WR_RDMA_WRITE)) {
    w->rkey = rkey;
    w->remote_addr = addr;
  }
}
void wr_rdma_read(ibv_qp_ex *x, uint32_t rkey, uint64_t addr) {
  if (SendWqe *w = begin(x, IBV_WR_RDMA_READ)) {
    w->rkey = rkey;
    w->remote_addr = addr;
  }
}
void wr_rdma_write_imm(ibv_qp_ex *x, uint32_t rkey, uint64_t addr, __be32 imm) {
  if (SendWqe *w = begin(x, IBV_WR_RDMA_WRITE_WITH_IMM)) {
    w->rkey = rkey;
    w->remote_addr = addr;
    w->imm_data = imm;
  }
}
void wr_send_imm(ibv_qp_ex *x, __be32) { unsupported(x); }
void wr_atomic_cmp_swp(ibv_qp_ex *x, uint32_t rkey, uint64_t addr, uint64_t compare,
                       uint64_t swap) {
  if (!Q(x)->atomics) return unsupported(x);
  if (SendWqe *w = begin(x, IBV_WR_ATOMIC_CMP_AND_SWP)) {
    w->rkey = rkey;
    w->remote_addr = addr;
    w->compare_add = compare;
    w->swap = swap;
  }
}
void wr_atomic_fetch_add(ibv_qp_ex *x, uint32_t rkey, uint64_t addr, uint64_t add) {
  if (!Q(x)->atomics) return unsupported(x);
  if (SendWqe *w = begin(x, IBV_WR_ATOMIC_FETCH_AND_ADD)) {
    w->rkey = rkey;
    w->remote_addr = addr;
    w->compare_add = add;
  }
}
void wr_bind_mw(ibv_qp_ex *x, ibv_mw *mw, uint32_t rkey, const ibv_mw_bind_info *info) {
  SendWqe *w = begin(x, IBV_WR_BIND_MW);
  if (!w) return;
  if (!info) {
    Q(x)->wr_error = EINVAL;
    return;
  }
  if (int rc = mw_prepare_bind(Q(x), mw, rkey, *info, w)) Q(x)->wr_error = rc;
}
void wr_local_inv(ibv_qp_ex *x, uint32_t rkey) {
  if (SendWqe *w = begin(x, IBV_WR_LOCAL_INV)) w->invalidate_rkey = rkey;
}
void wr_send_tso(ibv_qp_ex *x, void *, uint16_t, uint16_t) { unsupported(x); }
void wr_set_ud_addr(ibv_qp_ex *x, ibv_ah *, uint32_t, uint32_t) { unsupported(x); }
void wr_set_xrc_srqn(ibv_qp_ex *x, uint32_t) { unsupported(x); }
void wr_atomic_write(ibv_qp_ex *x, uint32_t, uint64_t, const void *) { unsupported(x); }

void set_sges(ibv_qp_ex *x, size_t n, const ibv_sge *sg) {
  SendWqe *w = last(x);
  if (!w) return;
  if (n > Q(x)->cap.max_send_sge) {
    Q(x)->wr_error = EINVAL;
    return;
  }
  w->num_sge = (uint32_t)n;
  w->total_len = 0;
  w->inline_len = 0;
  for (size_t i = 0; i < n; i++) {
    w->sge[i] = {sg[i].addr, sg[i].length, sg[i].lkey};
    w->total_len += sg[i].length;
  }
}

void wr_set_sge(ibv_qp_ex *x, uint32_t lkey, uint64_t addr, uint32_t length) {
  ibv_sge s{addr, length, lkey};
  set_sges(x, 1, &s);
}
void wr_set_sge_list(ibv_qp_ex *x, size_t n, const ibv_sge *sg) { set_sges(x, n, sg); }

void set_inline(ibv_qp_ex *x, size_t n, const ibv_data_buf *bufs) {
  SendWqe *w = last(x);
  if (!w) return;
  if (w->opcode == IBV_WR_RDMA_READ || is_atomic(*w)) {
    Q(x)->wr_error = EINVAL;
    return;
  }
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += bufs[i].length;
  if (total > kMaxInline) {
    Q(x)->wr_error = EINVAL;
    return;
  }
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    std::memcpy(w->inline_data.data() + off, bufs[i].addr, bufs[i].length);
    off += bufs[i].length;
  }
  w->inline_len = (uint32_t)off;
  w->total_len = off;
  w->num_sge = 0;
  w->flags |= IBV_SEND_INLINE;
}
void wr_set_inline_data(ibv_qp_ex *x, void *addr, size_t length) {
  ibv_data_buf b{addr, length};
  set_inline(x, 1, &b);
}
void wr_set_inline_data_list(ibv_qp_ex *x, size_t n, const ibv_data_buf *bufs) {
  set_inline(x, n, bufs);
}

}  // namespace

void qp_ex_init(Qp *qp) {
  ibv_qp_ex &x = qp->qpx;
  x.wr_start = wr_start;
  x.wr_complete = wr_complete;
  x.wr_abort = wr_abort;
  x.wr_send = wr_send;
  x.wr_send_inv = wr_send_inv;
  x.wr_rdma_write = wr_rdma_write;
  x.wr_rdma_read = wr_rdma_read;
  x.wr_rdma_write_imm = wr_rdma_write_imm;
  x.wr_send_imm = wr_send_imm;
  x.wr_atomic_cmp_swp = wr_atomic_cmp_swp;
  x.wr_atomic_fetch_add = wr_atomic_fetch_add;
  x.wr_bind_mw = wr_bind_mw;
  x.wr_local_inv = wr_local_inv;
  x.wr_send_tso = wr_send_tso;
  x.wr_set_ud_addr = wr_set_ud_addr;
  x.wr_set_xrc_srqn = wr_set_xrc_srqn;
  x.wr_set_sge = wr_set_sge;
  x.wr_set_sge_list = wr_set_sge_list;
  x.wr_set_inline_data = wr_set_inline_data;
  x.wr_set_inline_data_list = wr_set_inline_data_list;
  x.wr_atomic_write = wr_atomic_write;
  qp->wr_batch.reserve(16);
}

}  // namespace eca

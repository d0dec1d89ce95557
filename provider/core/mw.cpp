// Memory windows: allocation, binding (type 1 through ibv_bind_mw, type 2 through
// IBV_WR_BIND_MW), local and remote invalidation. The model is in mw.hpp; the bind rules are
// those of ibv_bind_mw(3) and the InfiniBand verbs that rdma-core's rxe also follows:
//  - the MR was registered with IBV_ACCESS_MW_BIND, is not zero-based, is in the window's PD;
//  - the window lies inside the MR; remote write/atomic rights need the MR's local write;
//  - type 1: a zero-length bind unbinds; rebinding a bound window replaces its binding;
//    no zero-based binding;
//  - type 2: bound only through a QP of the window's PD (it then serves only that QP: 2B),
//    never with zero length, never while bound (invalidate first); the new STag keeps the
//    window's index and takes the key byte the work request names.
// A failed bind completes with IBV_WC_MW_BIND_ERR, a failed local invalidation with
// IBV_WC_LOC_QP_OP_ERR; both are local errors that end the stream.
#include "provider/core/mw.hpp"

#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "provider/core/backend.hpp"
#include "provider/core/log.hpp"

namespace eca {
namespace {

constexpr int kRemoteRights =
    IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;
// Bits a bind may carry: remote rights, zero-based addressing, and LOCAL_WRITE, which
// applications pass along (rdma-core's own tests do) and which means nothing for a window.
constexpr int kBindAccess = kRemoteRights | IBV_ACCESS_ZERO_BASED | IBV_ACCESS_LOCAL_WRITE;

// The window lock (mw.hpp) and the windows by STag index.
Mutex &window_mu() {
  static auto *m = new Mutex();
  return *m;
}
std::unordered_map<uint32_t, Mw *> &windows() {
  static auto *m = new std::unordered_map<uint32_t, Mw *>();
  return *m;
}

// An entry that fails every lookup: an unbound or invalidated window named `key`.
std::shared_ptr<Mr> unbound_entry(Mw *mw, uint32_t key) {
  auto e = std::make_shared<Mr>();
  e->pd = mw->pd;
  e->valid.store(false, std::memory_order_relaxed);
  e->ibmr.context = mw->ibmw.context;
  e->ibmr.pd = mw->ibmw.pd;
  e->ibmr.handle = e->ibmr.lkey = e->ibmr.rkey = key;
  return e;
}

Backend &backend_of(const Mw *mw) { return *mw->pd->ctx->dev->backend; }

// Ends the window's binding; its STag (same key) fails lookups from now on. Accesses that
// found the binding before keep its entry, and through it the parent MR, alive; the MR's
// deregistration waits for them (MrUse enters the parent too). Window lock held.
void unbind_locked(Mw *mw) {
  ECA_ASSERT_HELD(window_mu());
  std::shared_ptr<Mr> old = mw->entry;
  auto e = unbound_entry(mw, old->ibmr.rkey);
  stag_replace(old->ibmr.rkey, e);
  old->valid.store(false, std::memory_order_release);
  backend_of(mw).mr_deregistered(*old);  // the device stops serving the window
  old->parent->windows--;
  mw->entry = std::move(e);
  mw->bound = false;
}

// Gives an unbound window the STag `key` (same index) without binding it.
void rekey_locked(Mw *mw, uint32_t key) {
  ECA_ASSERT_HELD(window_mu());
  if (mw->entry->ibmr.rkey == key) return;
  auto e = unbound_entry(mw, key);
  stag_replace(mw->entry->ibmr.rkey, e);
  mw->entry = std::move(e);
}

// The window a queued bind names, if it still exists. (ibmw.rkey is the application's to
// read while we change it on other threads; the index is ours and never changes.)
Mw *live_window_locked(ibv_mw *m) {
  ECA_ASSERT_HELD(window_mu());
  if (!m) return nullptr;
  Mw *mw = Mw::from(m);
  auto it = windows().find(mw->index);
  return it != windows().end() && it->second == mw ? mw : nullptr;
}

ibv_wc_status bind_locked(Qp &qp, const SendWqe &w) {
  ECA_ASSERT_HELD(window_mu());
  Mw *mw = live_window_locked(w.mw);
  if (!mw) return IBV_WC_MW_BIND_ERR;
  const ibv_mw_bind_info &b = w.bind;
  const bool type2 = mw->ibmw.type == IBV_MW_TYPE_2;
  const int access = (int)b.mw_access_flags;
  if ((w.rkey >> 8) != (mw->entry->ibmr.rkey >> 8)) return IBV_WC_MW_BIND_ERR;
  if (access & ~kBindAccess) return IBV_WC_MW_BIND_ERR;
  if (type2) {
    if (mw->pd != qp.pd || mw->bound || !b.mr || b.length == 0) return IBV_WC_MW_BIND_ERR;
  } else if (access & IBV_ACCESS_ZERO_BASED) {
    return IBV_WC_MW_BIND_ERR;
  }
  if (b.length == 0) {  // type 1: unbind
    if (mw->bound) unbind_locked(mw);
    rekey_locked(mw, w.rkey);
    return IBV_WC_SUCCESS;
  }
  if (!b.mr) return IBV_WC_MW_BIND_ERR;
  Mr *mr = Mr::from(b.mr);
  std::shared_ptr<Mr> parent = stag_get(mr->ibmr.lkey);
  if (parent.get() != mr || mr->parent || mr->deregistering) return IBV_WC_MW_BIND_ERR;
  if (mr->pd != mw->pd || !(mr->access & IBV_ACCESS_MW_BIND) ||
      (mr->access & IBV_ACCESS_ZERO_BASED))
    return IBV_WC_MW_BIND_ERR;
  if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) &&
      !(mr->access & IBV_ACCESS_LOCAL_WRITE))
    return IBV_WC_MW_BIND_ERR;
  if (b.addr < mr->iova || b.length > mr->length || b.addr - mr->iova > mr->length - b.length)
    return IBV_WC_MW_BIND_ERR;

  auto e = std::make_shared<Mr>();
  e->pd = mw->pd;
  e->iova = (access & IBV_ACCESS_ZERO_BASED) ? 0 : b.addr;
  e->addr = mr->addr + (b.addr - mr->iova);
  e->length = b.length;
  e->access = access & kRemoteRights;
  e->invalidatable = type2;
  e->window_qpn = type2 ? qp.qpn : 0;
  e->parent = std::move(parent);
  e->ibmr.context = mw->ibmw.context;
  e->ibmr.pd = mw->ibmw.pd;
  e->ibmr.addr = e->addr;
  e->ibmr.length = b.length;
  e->ibmr.handle = e->ibmr.lkey = e->ibmr.rkey = w.rkey;
  if (mw->bound) unbind_locked(mw);  // type 1 rebind
  if (int rc = backend_of(mw).mr_registered(*e)) {
    ECA_QP_LOG(Info, qp.qpn, "window 0x%x: the device refused the binding: %s", w.rkey,
               strerror(rc));
    rekey_locked(mw, w.rkey);
    return IBV_WC_MW_BIND_ERR;
  }
  stag_replace(mw->entry->ibmr.rkey, e);
  mr->windows++;
  mw->entry = std::move(e);
  mw->bound = true;
  return IBV_WC_SUCCESS;
}

// Invalidation of a type 2 window's STag `key` by a QP in `pd` (qpn 0: any QP of it).
bool invalidate_locked(uint32_t key, const Pd *pd, uint32_t qpn) {
  ECA_ASSERT_HELD(window_mu());
  auto it = windows().find(key >> 8);
  if (it == windows().end()) return false;
  Mw *mw = it->second;
  const Mr &e = *mw->entry;
  if (!mw->bound || e.ibmr.rkey != key || !e.invalidatable || e.pd != pd) return false;
  if (qpn && e.window_qpn != qpn) return false;
  unbind_locked(mw);
  return true;
}

}  // namespace

int mw_alloc(Pd *pd, ibv_mw_type type, Mw **out) {
  if (type != IBV_MW_TYPE_1 && type != IBV_MW_TYPE_2) return EINVAL;
  auto *mw = new Mw();
  std::memset(&mw->ibmw, 0, sizeof(mw->ibmw));
  mw->pd = pd;
  mw->ibmw.context = pd->ctx->ibv();
  mw->ibmw.pd = &pd->ibpd;
  mw->ibmw.type = type;
  std::lock_guard lk(window_mu());
  auto e = unbound_entry(mw, 0);
  uint32_t key = 0;
  if (int rc = stag_add(e, &key)) {
    delete mw;
    return rc;
  }
  mw->entry = std::move(e);
  mw->ibmw.rkey = key;
  mw->ibmw.handle = key;
  mw->index = key >> 8;
  windows()[mw->index] = mw;
  pd->users++;
  *out = mw;
  return 0;
}

// ibv_dealloc_mw(3): unbinds if bound; the STag is gone afterwards.
int mw_dealloc(Mw *mw) {
  {
    std::lock_guard lk(window_mu());
    if (mw->bound) unbind_locked(mw);
    stag_remove(mw->entry->ibmr.rkey);
    windows().erase(mw->index);
  }
  mw->pd->users--;
  delete mw;
  return 0;
}

int mw_bind_type1(Qp *qp, Mw *mw, const ibv_mw_bind &bind) {
  const ibv_mw_bind_info &b = bind.bind_info;
  if (mw->ibmw.type != IBV_MW_TYPE_1 || mw->ibmw.context != qp->ctx->ibv()) return EINVAL;
  if (!b.mr && (b.addr || b.length)) return EINVAL;
  if (b.mr && b.mr->pd != mw->ibmw.pd) return EPERM;  // as the inline ibv_bind_mw checks
  SendWqe w{};
  w.wr_id = bind.wr_id;
  w.opcode = IBV_WR_BIND_MW;
  w.flags = bind.send_flags & (IBV_SEND_SIGNALED | IBV_SEND_FENCE);
  w.mw = &mw->ibmw;
  w.bind = b;
  w.rkey = ibv_inc_rkey(mw->ibmw.rkey);
  int rc;
  {
    std::lock_guard lk(qp->sq_mu);
    const ibv_qp_state st = qp->state.load();
    rc = (st == IBV_QPS_RTS || st == IBV_QPS_SQD) ? qp->enqueue_send(w) : EINVAL;
  }
  if (rc) return rc;
  mw->ibmw.rkey = w.rkey;  // ibv_bind_mw(3): the R_Key after the bind
  if (EngineRef e(*qp); e) e->sq_doorbell();
  return 0;
}

int mw_prepare_bind(Qp *qp, ibv_mw *mw, uint32_t rkey, const ibv_mw_bind_info &info,
                    SendWqe *w) {
  if (!mw || mw->type != IBV_MW_TYPE_2 || mw->context != qp->ctx->ibv()) return EINVAL;
  if (!info.mr && (info.addr || info.length)) return EINVAL;
  if ((rkey >> 8) != (mw->rkey >> 8)) return EINVAL;  // the STag's index is the window's
  w->mw = mw;
  w->bind = info;
  w->rkey = rkey;
  w->num_sge = 0;
  w->inline_len = 0;
  w->total_len = 0;
  mw->rkey = rkey;  // the STag the window has once this bind completes
  return 0;
}

bool mw_execute_wqe(Qp &qp, SendWqe *w) {
  ibv_wc_status st;
  {
    std::lock_guard lk(window_mu());
    if (w->opcode == IBV_WR_BIND_MW)
      st = bind_locked(qp, *w);
    else
      st = invalidate_locked(w->invalidate_rkey, qp.pd, 0) ? IBV_WC_SUCCESS
                                                           : IBV_WC_LOC_QP_OP_ERR;
  }
  if (st != IBV_WC_SUCCESS)
    ECA_QP_LOG(Info, qp.qpn, "%s of STag 0x%x failed (wr_id %llu)",
               w->opcode == IBV_WR_BIND_MW ? "window bind" : "local invalidation",
               w->opcode == IBV_WR_BIND_MW ? w->rkey : w->invalidate_rkey,
               (unsigned long long)w->wr_id);
  qp.sq_done(w, st);
  return st == IBV_WC_SUCCESS;
}

bool mw_invalidate_remote(uint32_t key, const Pd *pd, uint32_t qpn) {
  std::lock_guard lk(window_mu());
  return invalidate_locked(key, pd, qpn);
}

bool mw_mr_release(Mr *mr) {
  std::lock_guard lk(window_mu());
  if (mr->windows > 0) return false;
  mr->deregistering = true;
  return true;
}

}  // namespace eca

// Completion queues and completion channels.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "provider/core/backend.hpp"
#include "provider/core/config.hpp"
#include "provider/core/log.hpp"
#include "provider/core/objects.hpp"
#include "provider/core/verbs_ops.hpp"
#include "runtime/timer.hpp"

namespace eca {
namespace {

constexpr uint64_t kSupportedWcFlags =
    IBV_WC_EX_WITH_BYTE_LEN | IBV_WC_EX_WITH_IMM | IBV_WC_EX_WITH_QP_NUM |
    IBV_WC_EX_WITH_SRC_QP | IBV_WC_EX_WITH_SLID | IBV_WC_EX_WITH_SL |
    IBV_WC_EX_WITH_DLID_PATH_BITS;

// ---- ibv_cq_ex polling: start_poll/next_poll consume one completion into the cursor.
int load_next(ibv_cq_ex *cx) {
  Cq *cq = Cq::from(cx);
  if (cq->poll(1, &cq->cur) != 1) return ENOENT;
  cx->wr_id = cq->cur.wr_id;
  cx->status = cq->cur.status;
  return 0;
}
int cqx_start_poll(ibv_cq_ex *cx, ibv_poll_cq_attr *attr) {
  if (attr && attr->comp_mask) return EINVAL;
  return load_next(cx);
}
int cqx_next_poll(ibv_cq_ex *cx) { return load_next(cx); }
void cqx_end_poll(ibv_cq_ex *) {}
const ibv_wc &cur(ibv_cq_ex *cx) { return Cq::from(cx)->cur; }
ibv_wc_opcode cqx_read_opcode(ibv_cq_ex *cx) { return cur(cx).opcode; }
uint32_t cqx_read_vendor_err(ibv_cq_ex *cx) { return cur(cx).vendor_err; }
uint32_t cqx_read_byte_len(ibv_cq_ex *cx) { return cur(cx).byte_len; }
__be32 cqx_read_imm_data(ibv_cq_ex *cx) { return cur(cx).imm_data; }
uint32_t cqx_read_qp_num(ibv_cq_ex *cx) { return cur(cx).qp_num; }
uint32_t cqx_read_src_qp(ibv_cq_ex *cx) { return cur(cx).src_qp; }
unsigned int cqx_read_wc_flags(ibv_cq_ex *cx) { return cur(cx).wc_flags; }
uint32_t cqx_read_slid(ibv_cq_ex *cx) { return cur(cx).slid; }
uint8_t cqx_read_sl(ibv_cq_ex *cx) { return cur(cx).sl; }
uint8_t cqx_read_dlid_path_bits(ibv_cq_ex *cx) { return cur(cx).dlid_path_bits; }

}  // namespace

// Timer state shared with the progress thread; `cq` is cleared when the CQ goes away.
struct Cq::ModTimer {
  std::mutex mu;
  Cq *cq;
  runtime::Timer timer;
  explicit ModTimer(Cq *c) : cq(c) {}
};

int Cq::set_moderation(uint16_t cnt, uint16_t period_us) {
  std::lock_guard lk(mu);
  mod_count = cnt;
  mod_period_us = period_us;
  if ((cnt > 1 || period_us) && !mod_timer) mod_timer = std::make_shared<ModTimer>(this);
  return 0;
}

void Cq::notify_channel() {
  Cq *self = this;
  if (::write(channel->wfd, &self, sizeof(self)) != (ssize_t)sizeof(self))
    ECA_LOG(Error, "completion event lost: %s", strerror(errno));
}

bool Cq::push(const ibv_wc &wc, bool solicited) {
  bool notify = false, overflow = false, start_timer = false;
  {
    std::lock_guard lk(mu);
    if (count == ring.size()) {
      overflow = !overflowed;
      overflowed = true;
    } else {
      uint32_t slot = head + count;  // no division: head < size and count < size
      if (slot >= ring.size()) slot -= (uint32_t)ring.size();
      ring[slot] = wc;
      count++;
      ready.store(count, std::memory_order_release);
      if (armed == Arm::Next ||
          (armed == Arm::Solicited && (solicited || wc.status != IBV_WC_SUCCESS))) {
        if ((mod_count > 1 || mod_period_us) && channel && wc.status == IBV_WC_SUCCESS) {
          // Moderated: the event waits for more completions or for the period to end.
          start_timer = mod_pending++ == 0 && mod_period_us;
          if (mod_count > 1 && mod_pending >= mod_count) {
            armed = Arm::None;
            mod_pending = 0;
            notify = true;
            start_timer = false;
          }
        } else {
          armed = Arm::None;
          mod_pending = 0;
          notify = channel != nullptr;
        }
      }
    }
  }
  if (start_timer) {
    auto mt = mod_timer;
    mt->timer.arm(std::chrono::microseconds(mod_period_us), [mt] {
      std::lock_guard tl(mt->mu);
      Cq *cq = mt->cq;
      if (!cq) return;
      bool fire = false;
      {
        std::lock_guard lk(cq->mu);
        if (cq->mod_pending && cq->armed != Arm::None) {
          cq->armed = Arm::None;
          cq->mod_pending = 0;
          fire = true;
        }
      }
      if (fire) cq->notify_channel();
    });
  }
  if (overflow) {
    ECA_LOG(Error, "cq %p overflow (cqe %d): completion of qp %u lost", (void *)this, cqx.cqe,
            wc.qp_num);
    ibv_async_event ev{};
    ev.element.cq = ibv();
    ev.event_type = IBV_EVENT_CQ_ERR;
    ctx->post_async(ev);
    return false;
  }
  if (notify) notify_channel();
  return true;
}

// As rdma-core's hardware providers clean a CQ when a QP is destroyed: nothing polled after
// ibv_destroy_qp returns names that QP, so an application (libfabric's rxm, for one) may free
// the buffers and contexts of its work requests as soon as the QP is gone. Completions that
// arrive during the destroy (the engine's final flush) are removed with the rest.
void Cq::purge_qp(uint32_t qpn, bool keep_srq_recv) {
  std::lock_guard lk(mu);
  const uint32_t cap = (uint32_t)ring.size();
  uint32_t kept = 0;
  for (uint32_t i = 0; i < count; i++) {
    const ibv_wc wc = ring[(head + i) % cap];
    const bool srq_recv = keep_srq_recv && (wc.opcode & IBV_WC_RECV);
    if (wc.qp_num == qpn && !srq_recv) continue;
    ring[(head + kept) % cap] = wc;  // kept <= i: never overwrites an entry still to be read
    kept++;
  }
  count = kept;
  ready.store(count, std::memory_order_release);
}

int Cq::poll(int n, ibv_wc *out) {
  if (n < 0) return -EINVAL;
  int k = 0;
  // mu only when there is something to take: a completion pushed after the look at `ready`
  // is found by the next poll (a poll reports what had arrived when it looked).
  auto take = [&] {
    if (ready.load(std::memory_order_acquire) == 0) return;
    std::lock_guard lk(mu);
    const uint32_t cap = (uint32_t)ring.size();
    while (k < n && count) {
      out[k++] = ring[head];
      head = head + 1 == cap ? 0 : head + 1;
      count--;
    }
    ready.store(count, std::memory_order_relaxed);
  };
  take();
  if (k == 0 && n > 0 && nhooks.load(std::memory_order_relaxed) &&
      pthread_rwlock_tryrdlock(&hooks_rw.rw) == 0) {
    // A QP in the list is alive (remove_hook waits for us); its engine is pinned by EngineRef.
    for (Qp *qp : hooks)
      if (EngineRef e(*qp); e) e->poll_progress();
    pthread_rwlock_unlock(&hooks_rw.rw);
    // The engines may have placed data and completed work: look again, so that a busy poller
    // gets what its own call produced without another round trip.
    take();
  }
  return k;
}

Cq::HookLock::HookLock() {
  pthread_rwlockattr_t a;
  pthread_rwlockattr_init(&a);
  // Writer preferred: pollers only try the lock, so a remove_hook() waits for the pollers
  // inside, never for a stream of new ones.
  pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&rw, &a);
  pthread_rwlockattr_destroy(&a);
}

void Cq::add_hook(Qp *qp) {
  pthread_rwlock_wrlock(&hooks_rw.rw);
  if (std::find(hooks.begin(), hooks.end(), qp) == hooks.end()) hooks.push_back(qp);
  nhooks.store((int)hooks.size());
  pthread_rwlock_unlock(&hooks_rw.rw);
}

void Cq::remove_hook(Qp *qp) {
  pthread_rwlock_wrlock(&hooks_rw.rw);
  std::erase(hooks, qp);
  nhooks.store((int)hooks.size());
  pthread_rwlock_unlock(&hooks_rw.rw);
}

int cq_req_notify(Cq *cq, bool solicited_only) {
  {
    std::lock_guard lk(cq->mu);
    // Solicited-only never downgrades a pending request for the next completion.
    if (solicited_only) {
      if (cq->armed == Cq::Arm::None) cq->armed = Cq::Arm::Solicited;
    } else {
      cq->armed = Cq::Arm::Next;
    }
  }
  // Blocking read lock: ibv_req_notify_cq may wait, and an arm must reach every engine.
  if (cq->nhooks.load(std::memory_order_relaxed)) {
    pthread_rwlock_rdlock(&cq->hooks_rw.rw);
    for (Qp *qp : cq->hooks)
      if (EngineRef e(*qp); e) e->cq_armed();
    pthread_rwlock_unlock(&cq->hooks_rw.rw);
  }
  return 0;
}

bool Cq::is_armed() {
  std::lock_guard lk(mu);
  return armed != Arm::None;
}

int cq_create(Context *ctx, int cqe, CompChannel *ch, int comp_vector, uint64_t wc_flags,
              Cq **out) {
  if (cqe < 1 || (uint32_t)cqe > kMaxCqe) return EINVAL;
  if (comp_vector < 0 || comp_vector >= ctx->ibv()->num_comp_vectors) return EINVAL;
  if (wc_flags & ~kSupportedWcFlags) return EOPNOTSUPP;
  if (ch && ch->ch.context != ctx->ibv()) return EINVAL;
  auto *cq = new Cq();
  std::memset(&cq->cqx, 0, sizeof(cq->cqx));
  cq->ctx = ctx;
  cq->channel = ch;
  cq->ring.resize((size_t)cqe);
  ibv_cq_ex &x = cq->cqx;
  x.context = ctx->ibv();
  x.channel = ch ? &ch->ch : nullptr;
  x.cqe = cqe;
  pthread_mutex_init(&x.mutex, nullptr);
  pthread_cond_init(&x.cond, nullptr);
  x.start_poll = cqx_start_poll;
  x.next_poll = cqx_next_poll;
  x.end_poll = cqx_end_poll;
  x.read_opcode = cqx_read_opcode;
  x.read_vendor_err = cqx_read_vendor_err;
  x.read_byte_len = cqx_read_byte_len;
  x.read_imm_data = cqx_read_imm_data;
  x.read_qp_num = cqx_read_qp_num;
  x.read_src_qp = cqx_read_src_qp;
  x.read_wc_flags = cqx_read_wc_flags;
  x.read_slid = cqx_read_slid;
  x.read_sl = cqx_read_sl;
  x.read_dlid_path_bits = cqx_read_dlid_path_bits;
  if (ch) ch->ch.refcnt++;
  if (config().cq_mod_count > 1 || config().cq_mod_period_us)
    cq->set_moderation(config().cq_mod_count, config().cq_mod_period_us);
  *out = cq;
  return 0;
}

int cq_modify(Cq *cq, const ibv_modify_cq_attr &attr) {
  if (attr.attr_mask & ~(uint32_t)IBV_CQ_ATTR_MODERATE) return EINVAL;
  if (!(attr.attr_mask & IBV_CQ_ATTR_MODERATE)) return 0;
  return cq->set_moderation(attr.moderate.cq_count, attr.moderate.cq_period);
}

int create_cq_ex(Context *ctx, ibv_cq_init_attr_ex *attr, Cq **out) {
  constexpr uint32_t known = IBV_CQ_INIT_ATTR_MASK_FLAGS | IBV_CQ_INIT_ATTR_MASK_PD;
  if (attr->comp_mask & ~known) return EOPNOTSUPP;
  if ((attr->comp_mask & IBV_CQ_INIT_ATTR_MASK_FLAGS) && attr->flags) return EOPNOTSUPP;
  return cq_create(ctx, (int)attr->cqe, attr->channel ? CompChannel::from(attr->channel) : nullptr,
                   (int)attr->comp_vector, attr->wc_flags, out);
}

int cq_destroy(Cq *cq) {
  if (cq->users.load() != 0) return EBUSY;
  if (auto mt = cq->mod_timer) {
    std::lock_guard tl(mt->mu);  // waits for a timer callback in progress
    mt->cq = nullptr;
    mt->timer.cancel();
  }
  if (cq->channel) cq->channel->ch.refcnt--;
  pthread_mutex_destroy(&cq->cqx.mutex);
  pthread_cond_destroy(&cq->cqx.cond);
  delete cq;
  return 0;
}

}  // namespace eca

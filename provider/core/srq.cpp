// Shared receive queues, with the limit event (IBV_EVENT_SRQ_LIMIT_REACHED) armed by
// ibv_modify_srq(IBV_SRQ_LIMIT) and fired once when the queue drops below it.
#include <cerrno>
#include <cstring>

#include "provider/core/objects.hpp"

namespace eca {

int srq_create(Pd *pd, const ibv_srq_init_attr &attr, Srq **out) {
  if (attr.attr.max_wr < 1 || attr.attr.max_wr > kMaxSrqWr || attr.attr.max_sge > kMaxSge)
    return EINVAL;
  if (attr.attr.srq_limit > attr.attr.max_wr) return EINVAL;
  auto *s = new Srq();
  std::memset(&s->ibsrq, 0, sizeof(s->ibsrq));
  s->ctx = pd->ctx;
  s->pd = pd;
  s->rq.init(attr.attr.max_wr);
  s->max_sge = kMaxSge;
  s->limit = attr.attr.srq_limit;
  s->ibsrq.context = pd->ctx->ibv();
  s->ibsrq.srq_context = attr.srq_context;
  s->ibsrq.pd = &pd->ibpd;
  pthread_mutex_init(&s->ibsrq.mutex, nullptr);
  pthread_cond_init(&s->ibsrq.cond, nullptr);
  pd->users++;
  *out = s;
  return 0;
}

int srq_destroy(Srq *s) {
  if (s->users.load()) return EBUSY;
  s->pd->users--;
  pthread_mutex_destroy(&s->ibsrq.mutex);
  pthread_cond_destroy(&s->ibsrq.cond);
  delete s;
  return 0;
}

int srq_post(Srq *s, const ibv_recv_wr *wr, const ibv_recv_wr **bad) {
  std::lock_guard lk(s->mu);
  for (; wr; wr = wr->next) {
    if (wr->num_sge < 0 || (uint32_t)wr->num_sge > s->max_sge) {
      *bad = wr;
      return EINVAL;
    }
    if (s->rq.full()) {
      *bad = wr;
      return ENOMEM;
    }
    s->rq.at(s->rq.tail).assign(*wr);
    s->rq.tail++;
  }
  return 0;
}

bool Srq::take(RecvWqe *out) {
  bool fire = false;
  {
    std::lock_guard lk(mu);
    if (rq.head == rq.tail) return false;
    *out = rq.at(rq.head++);
    if (limit && rq.tail - rq.head < limit) {
      limit = 0;  // one event per arming
      fire = true;
    }
  }
  if (fire) {
    ibv_async_event ev{};
    ev.element.srq = &ibsrq;
    ev.event_type = IBV_EVENT_SRQ_LIMIT_REACHED;
    ctx->post_async(ev);
  }
  return true;
}

}  // namespace eca

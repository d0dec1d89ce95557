// Device contexts: the ibv_context (inside a verbs_context, so the extended-op lookups of
// verbs.h work), its ops table, and the async event pipe.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "provider/core/backend.hpp"
#include "provider/core/log.hpp"
#include "provider/core/mw.hpp"
#include "provider/core/objects.hpp"
#include "provider/core/verbs_ops.hpp"

namespace eca {
namespace {

// ---- ops reached through the inline verbs of verbs.h. Each translates our convention to the
// verb's: post/poll/notify return positive errno (post) or -errno (poll), create returns
// NULL + errno.

int op_poll_cq(ibv_cq *cq, int n, ibv_wc *wc) { return Cq::from(cq)->poll(n, wc); }

int op_post_send(ibv_qp *qp, ibv_send_wr *wr, ibv_send_wr **bad) {
  return Qp::from(qp)->post_send(wr, const_cast<const ibv_send_wr **>(bad));
}

int op_post_recv(ibv_qp *qp, ibv_recv_wr *wr, ibv_recv_wr **bad) {
  return Qp::from(qp)->post_recv(wr, const_cast<const ibv_recv_wr **>(bad));
}

int op_post_srq_recv(ibv_srq *srq, ibv_recv_wr *wr, ibv_recv_wr **bad) {
  return srq_post(Srq::from(srq), wr, const_cast<const ibv_recv_wr **>(bad));
}

// Memory windows (mw.cpp).
ibv_mw *op_alloc_mw(ibv_pd *pd, ibv_mw_type type) {
  Mw *mw = nullptr;
  if (int rc = mw_alloc(Pd::from(pd), type, &mw)) {
    errno = rc;
    return nullptr;
  }
  return &mw->ibmw;
}
int op_bind_mw(ibv_qp *qp, ibv_mw *mw, ibv_mw_bind *bind) {
  if (!qp || !mw || !bind) return EINVAL;
  return mw_bind_type1(Qp::from(qp), Mw::from(mw), *bind);
}
int op_dealloc_mw(ibv_mw *mw) { return mw ? mw_dealloc(Mw::from(mw)) : EINVAL; }

int op_query_port(ibv_context *ctx, uint8_t port, ibv_port_attr *attr, size_t len) {
  ibv_port_attr a;
  int rc = query_port(Context::from(ctx), port, &a);
  if (rc) return rc;
  std::memcpy(attr, &a, std::min(len, sizeof(a)));
  return 0;
}

int op_query_device_ex(ibv_context *ctx, const ibv_query_device_ex_input *input,
                       ibv_device_attr_ex *attr, size_t len) {
  if (input && input->comp_mask) return EINVAL;
  ibv_device_attr_ex a;
  int rc = query_device_ex(Context::from(ctx), &a);
  if (rc) return rc;
  std::memcpy(attr, &a, std::min(len, sizeof(a)));
  return 0;
}

ibv_cq_ex *op_create_cq_ex(ibv_context *ctx, ibv_cq_init_attr_ex *attr) {
  Cq *cq = nullptr;
  int rc = create_cq_ex(Context::from(ctx), attr, &cq);
  if (rc) {
    errno = rc;
    return nullptr;
  }
  return &cq->cqx;
}

ibv_qp *op_create_qp_ex(ibv_context *ctx, ibv_qp_init_attr_ex *attr) {
  Qp *qp = nullptr;
  int rc = qp_create(Context::from(ctx), *attr, &qp);
  if (rc) {
    errno = rc;
    return nullptr;
  }
  attr->cap = qp->cap;  // the man page: actual values are returned in cap
  return qp->ibv();
}

ibv_srq *op_create_srq_ex(ibv_context *, ibv_srq_init_attr_ex *attr) {
  if (attr->comp_mask & ~(uint32_t)(IBV_SRQ_INIT_ATTR_TYPE | IBV_SRQ_INIT_ATTR_PD)) {
    errno = EOPNOTSUPP;  // XRC / tag matching SRQs are not supported
    return nullptr;
  }
  if ((attr->comp_mask & IBV_SRQ_INIT_ATTR_TYPE) && attr->srq_type != IBV_SRQT_BASIC) {
    errno = EOPNOTSUPP;
    return nullptr;
  }
  if (!(attr->comp_mask & IBV_SRQ_INIT_ATTR_PD) || !attr->pd) {
    errno = EINVAL;
    return nullptr;
  }
  ibv_srq_init_attr base{};
  base.srq_context = attr->srq_context;
  base.attr = attr->attr;
  Srq *s = nullptr;
  int rc = srq_create(Pd::from(attr->pd), base, &s);
  if (rc) {
    errno = rc;
    return nullptr;
  }
  attr->attr = base.attr;
  return &s->ibsrq;
}

}  // namespace

int query_port(Context *ctx, uint8_t port, ibv_port_attr *attr) {
  if (port != 1) return EINVAL;
  std::memset(attr, 0, sizeof(*attr));
  ctx->dev->backend->port_attr(*ctx->dev, attr);
  return 0;
}

int query_device(Context *ctx, ibv_device_attr *attr) {
  std::memset(attr, 0, sizeof(*attr));
  ctx->dev->backend->device_attr(*ctx->dev, attr);
  return 0;
}

int query_device_ex(Context *ctx, ibv_device_attr_ex *attr) {
  std::memset(attr, 0, sizeof(*attr));
  query_device(ctx, &attr->orig_attr);
  attr->device_cap_flags_ex = attr->orig_attr.device_cap_flags;
  attr->phys_port_cnt_ex = attr->orig_attr.phys_port_cnt;
  attr->max_dm_size = 0;
  attr->raw_packet_caps = 0;
  attr->pci_atomic_caps = {};
  return 0;
}

void Context::post_async(const ibv_async_event &ev) {
  std::lock_guard lk(async_mu);
  ssize_t r = ::write(async_wfd, &ev, sizeof(ev));
  if (r != (ssize_t)sizeof(ev))
    ECA_LOG(Error, "async event %d lost: %s", (int)ev.event_type, strerror(errno));
}

int context_open(Device *dev, Context **out) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return errno;
  // Producers must never block: the write end is non-blocking; the pipe holds thousands
  // of events, more than any sane application leaves unread.
  ::fcntl(p[1], F_SETFL, O_NONBLOCK);
  auto *c = new Context();
  std::memset(&c->vctx, 0, sizeof(c->vctx));
  c->dev = dev;
  c->async_wfd = p[1];
  ibv_context &ctx = c->vctx.context;
  ctx.device = dev->ibv();
  ctx.cmd_fd = -1;
  ctx.async_fd = p[0];
  ctx.num_comp_vectors = 1;
  ctx.abi_compat = __VERBS_ABI_IS_EXTENDED;
  pthread_mutex_init(&ctx.mutex, nullptr);
  ctx.ops.poll_cq = op_poll_cq;
  ctx.ops.req_notify_cq = [](ibv_cq *cq, int solicited_only) {
    return cq_req_notify(Cq::from(cq), solicited_only != 0);
  };
  ctx.ops.post_send = op_post_send;
  ctx.ops.post_recv = op_post_recv;
  ctx.ops.post_srq_recv = op_post_srq_recv;
  ctx.ops.alloc_mw = op_alloc_mw;
  ctx.ops.bind_mw = op_bind_mw;
  ctx.ops.dealloc_mw = op_dealloc_mw;
  c->vctx.sz = sizeof(verbs_context);
  c->vctx.query_port = op_query_port;
  c->vctx.query_device_ex = op_query_device_ex;
  c->vctx.create_cq_ex = op_create_cq_ex;
  c->vctx.create_qp_ex = op_create_qp_ex;
  c->vctx.create_srq_ex = op_create_srq_ex;
  c->vctx.modify_cq = [](ibv_cq *cq, ibv_modify_cq_attr *attr) {
    return cq_modify(Cq::from(cq), *attr);
  };
  *out = c;
  return 0;
}

int context_close(Context *c) {
  ::close(c->vctx.context.async_fd);
  ::close(c->async_wfd);
  pthread_mutex_destroy(&c->vctx.context.mutex);
  delete c;
  return 0;
}

}  // namespace eca

// librdmacm.so.1: the extern "C" rdma_* entry points (rsockets live in
// provider/abi/rdmacm_rsockets.cpp). rdma_cm itself is provider/cm/cm.cpp in libeca-core;
// this file translates its positive-errno results to the rdma_* convention (-1 with errno)
// and creates the verbs objects rdma_cm hands out (QPs, CQs, completion channels, SRQs,
// the per-device PD) through the public ibv_* functions of our libibverbs.so.1, following
// librdmacm's rules for them (rdma_create_qp: PD defaults to id->pd, missing CQs are created
// with their own completion channels and stored in id->send_cq/recv_cq; rdma_destroy_qp frees
// what rdma_create_qp made).
#include <infiniband/verbs.h>
#include <netdb.h>
#include <rdma/rdma_cma.h>

#include <cerrno>
#include <cstring>

#include "provider/cm/cm.hpp"
#include "provider/core/log.hpp"

namespace {

inline int fail(int e) {
  errno = e;
  return -1;
}
inline int ret(int r) { return r ? fail(r) : 0; }

// Every id gets its device's PD as id->pd (librdmacm does the same).
__attribute__((constructor)) void register_pd_allocator() {
  eca::cm::set_pd_allocator([](ibv_context *ctx) -> ibv_pd * { return ibv_alloc_pd(ctx); });
}

void destroy_cqs(rdma_cm_id *id) {
  if (id->recv_cq) {
    ibv_destroy_cq(id->recv_cq);
    if (id->send_cq && id->send_cq != id->recv_cq) ibv_destroy_cq(id->send_cq);
  } else if (id->send_cq) {
    ibv_destroy_cq(id->send_cq);
  }
  id->recv_cq = id->send_cq = nullptr;
  if (id->recv_cq_channel) {
    ibv_destroy_comp_channel(id->recv_cq_channel);
    if (id->send_cq_channel && id->send_cq_channel != id->recv_cq_channel)
      ibv_destroy_comp_channel(id->send_cq_channel);
  } else if (id->send_cq_channel) {
    ibv_destroy_comp_channel(id->send_cq_channel);
  }
  id->recv_cq_channel = id->send_cq_channel = nullptr;
}

int create_cqs(rdma_cm_id *id, uint32_t send_size, uint32_t recv_size) {
  if (recv_size) {
    id->recv_cq_channel = ibv_create_comp_channel(id->verbs);
    if (!id->recv_cq_channel) goto err;
    id->recv_cq = ibv_create_cq(id->verbs, int(recv_size), id, id->recv_cq_channel, 0);
    if (!id->recv_cq) goto err;
  }
  if (send_size) {
    id->send_cq_channel = ibv_create_comp_channel(id->verbs);
    if (!id->send_cq_channel) goto err;
    id->send_cq = ibv_create_cq(id->verbs, int(send_size), id, id->send_cq_channel, 0);
    if (!id->send_cq) goto err;
  }
  return 0;
err : {
  int e = errno ? errno : ENOMEM;
  destroy_cqs(id);
  return e;
}
}

}  // namespace

extern "C" {

// ---------------------------------------------------------------------------------------------
// Channels and events

rdma_event_channel *rdma_create_event_channel(void) {
  rdma_event_channel *ch = nullptr;
  int r = eca::cm::channel_create(&ch);
  if (r) {
    errno = r;
    return nullptr;
  }
  return ch;
}

void rdma_destroy_event_channel(rdma_event_channel *channel) {
  if (channel) eca::cm::channel_destroy(channel);
}

int rdma_get_cm_event(rdma_event_channel *channel, rdma_cm_event **event) {
  return ret(eca::cm::get_cm_event(channel, event));
}

int rdma_ack_cm_event(rdma_cm_event *event) { return ret(eca::cm::ack_cm_event(event)); }

const char *rdma_event_str(rdma_cm_event_type event) {
  // Any integer may arrive here; read it as one, never as an out-of-range enum.
  int raw;
  static_assert(sizeof raw == sizeof event);
  std::memcpy(&raw, &event, sizeof raw);
  if (raw < RDMA_CM_EVENT_ADDR_RESOLVED || raw > RDMA_CM_EVENT_TIMEWAIT_EXIT) return "UNKNOWN EVENT";
  return eca::cm::event_str(static_cast<rdma_cm_event_type>(raw));
}

// ---------------------------------------------------------------------------------------------
// Ids

int rdma_create_id(rdma_event_channel *channel, rdma_cm_id **id, void *context,
                   rdma_port_space ps) {
  // The application may pass any integer: read it as one, so an undefined value is an
  // EINVAL and never a load of an out-of-range enum.
  int raw;
  static_assert(sizeof raw == sizeof ps);
  std::memcpy(&raw, &ps, sizeof raw);
  switch (raw) {
    case RDMA_PS_TCP: case RDMA_PS_UDP: case RDMA_PS_IPOIB: case RDMA_PS_IB:
      return ret(eca::cm::create_id(channel, id, context, static_cast<rdma_port_space>(raw)));
    default:
      return fail(EINVAL);
  }
}

int rdma_destroy_id(rdma_cm_id *id) { return ret(eca::cm::destroy_id(id)); }

int rdma_migrate_id(rdma_cm_id *id, rdma_event_channel *channel) {
  return ret(eca::cm::migrate_id(id, channel));
}

int rdma_bind_addr(rdma_cm_id *id, sockaddr *addr) { return ret(eca::cm::bind_addr(id, addr)); }

int rdma_resolve_addr(rdma_cm_id *id, sockaddr *src_addr, sockaddr *dst_addr, int timeout_ms) {
  return ret(eca::cm::resolve_addr(id, src_addr, dst_addr, timeout_ms));
}

int rdma_resolve_route(rdma_cm_id *id, int timeout_ms) {
  return ret(eca::cm::resolve_route(id, timeout_ms));
}

int rdma_listen(rdma_cm_id *id, int backlog) { return ret(eca::cm::listen(id, backlog)); }

int rdma_connect(rdma_cm_id *id, rdma_conn_param *conn_param) {
  return ret(eca::cm::connect(id, conn_param));
}

int rdma_accept(rdma_cm_id *id, rdma_conn_param *conn_param) {
  return ret(eca::cm::accept(id, conn_param));
}

int rdma_reject(rdma_cm_id *id, const void *private_data, uint8_t private_data_len) {
  return ret(eca::cm::reject(id, private_data, private_data_len));
}

int rdma_reject_ece(rdma_cm_id *id, const void *private_data, uint8_t private_data_len) {
  return ret(eca::cm::reject(id, private_data, private_data_len));
}

int rdma_establish(rdma_cm_id *id) { return ret(eca::cm::establish(id)); }

int rdma_disconnect(rdma_cm_id *id) { return ret(eca::cm::disconnect(id)); }

int rdma_notify(rdma_cm_id *id, ibv_event_type /*event*/) {
  // Nothing to do for iWARP: the connection is established when the MPA exchange completes.
  return id ? 0 : fail(EINVAL);
}

int rdma_set_option(rdma_cm_id *id, int level, int optname, void *optval, size_t optlen) {
  return ret(eca::cm::set_option(id, level, optname, optval, optlen));
}

int rdma_init_qp_attr(rdma_cm_id *id, ibv_qp_attr *qp_attr, int *qp_attr_mask) {
  return ret(eca::cm::init_qp_attr(id, qp_attr, qp_attr_mask));
}

// The port of an IPv4 or IPv6 address in network order; 0 for any other family (rdma-core).
static __be16 port_of(const sockaddr *a) {
  if (a->sa_family == AF_INET) return reinterpret_cast<const sockaddr_in *>(a)->sin_port;
  if (a->sa_family == AF_INET6) return reinterpret_cast<const sockaddr_in6 *>(a)->sin6_port;
  return 0;
}

__be16 rdma_get_src_port(rdma_cm_id *id) { return id ? port_of(&id->route.addr.src_addr) : 0; }

__be16 rdma_get_dst_port(rdma_cm_id *id) { return id ? port_of(&id->route.addr.dst_addr) : 0; }

// ---------------------------------------------------------------------------------------------
// QPs and SRQs on ids

int rdma_create_qp_ex(rdma_cm_id *id, ibv_qp_init_attr_ex *attr) {
  if (!eca::cm::id_live(id) || !attr) return fail(EINVAL);
  if (id->qp) return fail(EINVAL);
  if (!id->verbs) return fail(EINVAL);  // no device yet: bind or resolve first
  if (!(attr->comp_mask & IBV_QP_INIT_ATTR_PD) || !attr->pd) {
    attr->comp_mask |= IBV_QP_INIT_ATTR_PD;
    attr->pd = id->pd;
  } else if (attr->pd->context != id->verbs) {
    return fail(EINVAL);
  }
  if (!attr->pd) return fail(EINVAL);
  if ((id->recv_cq && attr->recv_cq && id->recv_cq != attr->recv_cq) ||
      (id->send_cq && attr->send_cq && id->send_cq != attr->send_cq))
    return fail(EINVAL);
  if (attr->qp_type != IBV_QPT_RC) {
    ECA_LOG(Info, "rdma_create_qp: iWARP supports RC QPs only (qp_type %d)", int(attr->qp_type));
    return fail(EOPNOTSUPP);
  }
  int r = create_cqs(id, attr->send_cq || id->send_cq ? 0 : attr->cap.max_send_wr,
                     attr->recv_cq || id->recv_cq ? 0 : attr->cap.max_recv_wr);
  if (r) return fail(r);
  if (!attr->send_cq) attr->send_cq = id->send_cq;
  if (!attr->recv_cq) attr->recv_cq = id->recv_cq;
  if (id->srq && !attr->srq) attr->srq = id->srq;
  ibv_qp *qp = ibv_create_qp_ex(id->verbs, attr);
  if (!qp) {
    int e = errno ? errno : ENOMEM;
    destroy_cqs(id);
    return fail(e);
  }
  // Like librdmacm: the QP starts in INIT with rdma_init_qp_attr's attributes. The
  // connection (rdma_connect/rdma_accept) then takes it to RTS.
  ibv_qp_attr qa{};
  int mask = 0;
  qa.qp_state = IBV_QPS_INIT;
  if (eca::cm::init_qp_attr(id, &qa, &mask) == 0) {
    int mr = ibv_modify_qp(qp, &qa, mask);
    if (mr) ECA_LOG(Warn, "rdma_create_qp: moving QP %u to INIT failed: %s", qp->qp_num,
                    strerror(mr));
  }
  id->pd = qp->pd;
  id->qp = qp;
  return 0;
}

int rdma_create_qp(rdma_cm_id *id, ibv_pd *pd, ibv_qp_init_attr *qp_init_attr) {
  if (!eca::cm::id_live(id) || !qp_init_attr) return fail(EINVAL);
  ibv_qp_init_attr_ex ax{};
  std::memcpy(&ax, qp_init_attr, sizeof *qp_init_attr);
  ax.comp_mask = IBV_QP_INIT_ATTR_PD;
  ax.pd = pd ? pd : id->pd;
  int r = rdma_create_qp_ex(id, &ax);
  std::memcpy(qp_init_attr, &ax, sizeof *qp_init_attr);
  return r;
}

void rdma_destroy_qp(rdma_cm_id *id) {
  if (!eca::cm::id_live(id)) return;
  if (id->qp) {
    eca::cm::qp_release(id);  // the connection stops calling into the QP first
    ibv_destroy_qp(id->qp);
    id->qp = nullptr;
  }
  destroy_cqs(id);
}

int rdma_create_srq_ex(rdma_cm_id *id, ibv_srq_init_attr_ex *attr) {
  if (!eca::cm::id_live(id) || !attr) return fail(EINVAL);
  if (!(attr->comp_mask & IBV_SRQ_INIT_ATTR_TYPE)) return fail(EINVAL);
  if (attr->srq_type != IBV_SRQT_BASIC) return fail(EOPNOTSUPP);
  if (!id->verbs) return fail(EINVAL);
  if (!(attr->comp_mask & IBV_SRQ_INIT_ATTR_PD) || !attr->pd) {
    attr->pd = id->pd;
    attr->comp_mask |= IBV_SRQ_INIT_ATTR_PD;
  }
  if (!attr->pd) return fail(EINVAL);
  ibv_srq *srq = ibv_create_srq_ex(id->verbs, attr);
  if (!srq) return fail(errno ? errno : ENOMEM);
  if (!id->pd) id->pd = attr->pd;
  id->srq = srq;
  return 0;
}

int rdma_create_srq(rdma_cm_id *id, ibv_pd *pd, ibv_srq_init_attr *attr) {
  if (!id || !attr) return fail(EINVAL);
  ibv_srq_init_attr_ex ax{};
  std::memcpy(&ax, attr, sizeof *attr);
  ax.comp_mask = IBV_SRQ_INIT_ATTR_TYPE | IBV_SRQ_INIT_ATTR_PD;
  ax.srq_type = IBV_SRQT_BASIC;
  ax.pd = pd;
  int r = rdma_create_srq_ex(id, &ax);
  std::memcpy(attr, &ax, sizeof *attr);
  return r;
}

void rdma_destroy_srq(rdma_cm_id *id) {
  if (!eca::cm::id_live(id)) return;
  if (id->srq) ibv_destroy_srq(id->srq);
  id->srq = nullptr;
  destroy_cqs(id);
}

// ---------------------------------------------------------------------------------------------
// Synchronous helpers: rdma_create_ep / rdma_get_request / rdma_destroy_ep

int rdma_create_ep(rdma_cm_id **id, rdma_addrinfo *res, ibv_pd *pd,
                   ibv_qp_init_attr *qp_init_attr) {
  if (!id || !res) return fail(EINVAL);
  rdma_cm_id *cm_id = nullptr;
  rdma_port_space ps = res->ai_port_space ? rdma_port_space(res->ai_port_space) : RDMA_PS_TCP;
  int r = eca::cm::create_id(nullptr, &cm_id, nullptr, ps);
  if (r) return fail(r);
  if (res->ai_flags & RAI_PASSIVE) {
    r = eca::cm::bind_addr(cm_id, res->ai_src_addr);
    if (r) goto err;
    if (pd) cm_id->pd = pd;
    if (qp_init_attr) {
      ibv_qp_init_attr a = *qp_init_attr;
      a.qp_type = res->ai_qp_type ? ibv_qp_type(res->ai_qp_type) : IBV_QPT_RC;
      eca::cm::set_ep_qp_init_attr(cm_id, &a);
    }
    *id = cm_id;
    return 0;
  }
  r = eca::cm::resolve_addr(cm_id, res->ai_src_addr, res->ai_dst_addr, 2000);
  if (r) goto err;
  r = eca::cm::resolve_route(cm_id, 2000);
  if (r) goto err;
  if (qp_init_attr) {
    qp_init_attr->qp_type = res->ai_qp_type ? ibv_qp_type(res->ai_qp_type) : IBV_QPT_RC;
    if (rdma_create_qp(cm_id, pd, qp_init_attr)) {
      r = errno ? errno : EINVAL;
      goto err;
    }
  }
  if (res->ai_connect_len) {
    r = eca::cm::set_connect_data(cm_id, res->ai_connect, res->ai_connect_len);
    if (r) goto err;
  }
  *id = cm_id;
  return 0;
err:
  rdma_destroy_ep(cm_id);
  return fail(r);
}

void rdma_destroy_ep(rdma_cm_id *id) {
  if (!eca::cm::id_live(id)) return;
  if (id->qp) rdma_destroy_qp(id);
  if (id->srq) rdma_destroy_srq(id);
  eca::cm::set_ep_qp_init_attr(id, nullptr);
  eca::cm::destroy_id(id);
}

int rdma_get_request(rdma_cm_id *listen, rdma_cm_id **id) {
  rdma_cm_id *child = nullptr;
  int r = eca::cm::get_request(listen, &child);
  if (r) return fail(r);
  ibv_qp_init_attr a;
  if (eca::cm::ep_qp_init_attr(listen, &a)) {
    if (rdma_create_qp(child, listen->pd, &a)) {
      // librdmacm keeps the event on the listener in this case.
      return -1;
    }
  }
  *id = child;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Devices and address information

ibv_context **rdma_get_devices(int *num_devices) { return eca::cm::get_devices(num_devices); }

void rdma_free_devices(ibv_context **list) { eca::cm::free_devices(list); }

int rdma_getaddrinfo(const char *node, const char *service, const rdma_addrinfo *hints,
                     rdma_addrinfo **res) {
  // Like rdma-core: 0; the getaddrinfo() error code (gai_strerror() describes it) when the
  // name does not resolve; -1 with errno for anything else.
  int gai = 0;
  int r = eca::cm::getaddrinfo(node, service, hints, res, &gai);
  if (gai) {
    errno = gai == EAI_SYSTEM ? errno : ENOENT;
    return gai;
  }
  return ret(r);
}

void rdma_freeaddrinfo(rdma_addrinfo *res) { eca::cm::freeaddrinfo(res); }

// ---------------------------------------------------------------------------------------------
// Not for iWARP

int rdma_join_multicast(rdma_cm_id *, sockaddr *, void *) {
  // Multicast needs UD QPs (RDMA_PS_UDP); iWARP is connected-only.
  return fail(ENOSYS);
}

int rdma_join_multicast_ex(rdma_cm_id *, rdma_cm_join_mc_attr_ex *, void *) {
  return fail(ENOSYS);
}

int rdma_leave_multicast(rdma_cm_id *, sockaddr *) { return fail(ENOSYS); }

int rdma_set_local_ece(rdma_cm_id *, ibv_ece *) { return fail(EOPNOTSUPP); }

int rdma_get_remote_ece(rdma_cm_id *, ibv_ece *) { return fail(EOPNOTSUPP); }

}  // extern "C"

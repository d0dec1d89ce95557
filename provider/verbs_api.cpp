// libibverbs.so.1: the public C entry points (rdma-core 44 ABI). Each translates between
// the man-page convention of its verb (NULL + errno, positive errno, -1 + errno) and the
// positive-errno convention of the core (provider/core). Version nodes come from
// provider/abi/libibverbs.map; IBVERBS_1.0 compat and IBVERBS_PRIVATE_34 stubs live in
// provider/abi/.
#include <infiniband/verbs.h>

#undef ibv_get_device_list
#undef ibv_query_port
#undef ibv_reg_mr
#undef ibv_reg_mr_iova

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "provider/core/fork.hpp"
#include "provider/core/log.hpp"
#include "provider/core/objects.hpp"
#include "provider/core/verbs_ops.hpp"

using namespace eca;

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace {

template <typename T>
T *fail_null(int err) {
  errno = err;
  return nullptr;
}

int fail_minus1(int err) {
  errno = err;
  return -1;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Devices and contexts

EXPORT ibv_device **ibv_get_device_list(int *num) {
  const auto &devs = devices();
  auto **list = static_cast<ibv_device **>(std::calloc(devs.size() + 1, sizeof(ibv_device *)));
  if (!list) return fail_null<ibv_device *>(ENOMEM);
  for (size_t i = 0; i < devs.size(); i++) list[i] = devs[i]->ibv();
  if (num) *num = (int)devs.size();
  return list;
}

EXPORT void ibv_free_device_list(ibv_device **list) { std::free(list); }

EXPORT const char *ibv_get_device_name(ibv_device *dev) { return dev->name; }

EXPORT __be64 ibv_get_device_guid(ibv_device *dev) { return Device::from(dev)->guid; }

EXPORT int ibv_get_device_index(ibv_device *dev) {
  const auto &devs = devices();
  for (size_t i = 0; i < devs.size(); i++)
    if (devs[i]->ibv() == dev) return (int)i;
  return -1;
}

EXPORT ibv_context *ibv_open_device(ibv_device *dev) {
  Context *c = nullptr;
  if (int rc = context_open(Device::from(dev), &c)) return fail_null<ibv_context>(rc);
  return c->ibv();
}

EXPORT int ibv_close_device(ibv_context *ctx) { return context_close(Context::from(ctx)); }

EXPORT ibv_context *ibv_import_device(int) { return fail_null<ibv_context>(EOPNOTSUPP); }

EXPORT int ibv_query_device(ibv_context *ctx, ibv_device_attr *attr) {
  return query_device(Context::from(ctx), attr);
}

// The IBVERBS_1.1 symbol takes the pre-"flags" layout of ibv_port_attr; the inline
// ibv_query_port() of verbs.h prefers verbs_context::query_port and zeroes the struct first.
EXPORT int ibv_query_port(ibv_context *ctx, uint8_t port, _compat_ibv_port_attr *attr) {
  ibv_port_attr a;
  if (int rc = query_port(Context::from(ctx), port, &a)) return rc;
  std::memcpy(static_cast<void *>(attr), &a, offsetof(ibv_port_attr, flags));
  return 0;
}

EXPORT int ibv_query_gid(ibv_context *ctx, uint8_t port, int index, ibv_gid *gid) {
  const std::vector<ibv_gid> t = Context::from(ctx)->dev->gids();
  if (port != 1 || index < 0 || (size_t)index >= t.size()) return fail_minus1(EINVAL);
  *gid = t[(size_t)index];
  return 0;
}

EXPORT int _ibv_query_gid_ex(ibv_context *ctx, uint32_t port, uint32_t index,
                             ibv_gid_entry *entry, uint32_t flags, size_t entry_size) {
  if (flags || port != 1) return EINVAL;
  if (entry_size < sizeof(ibv_gid_entry)) return EINVAL;
  Device *d = Context::from(ctx)->dev;
  const std::vector<ibv_gid> t = d->gids();
  if (index >= t.size()) return ENODATA;
  std::memset(entry, 0, entry_size);
  entry->gid = t[index];
  entry->gid_index = index;
  entry->port_num = 1;
  entry->gid_type = IBV_GID_TYPE_IB;
  entry->ndev_ifindex = d->ifindex;
  return 0;
}

EXPORT ssize_t _ibv_query_gid_table(ibv_context *ctx, ibv_gid_entry *entries, size_t max,
                                    uint32_t flags, size_t entry_size) {
  if (flags || entry_size < sizeof(ibv_gid_entry)) return -EINVAL;
  const size_t n = Context::from(ctx)->dev->gids().size();
  if (max < n) return -EINVAL;
  for (size_t i = 0; i < n; i++) {
    auto *e = reinterpret_cast<ibv_gid_entry *>(reinterpret_cast<char *>(entries) + i * entry_size);
    if (int rc = _ibv_query_gid_ex(ctx, 1, (uint32_t)i, e, 0, entry_size)) return -rc;
  }
  return (ssize_t)n;
}

// IBVERBS_PRIVATE_34, used by ibv_devinfo: iWARP GIDs are of the IB/RoCEv1 sysfs type (0).
EXPORT int ibv_query_gid_type(ibv_context *ctx, uint8_t port, unsigned int index, int *type) {
  if (port != 1 || index >= Context::from(ctx)->dev->gids().size()) return EINVAL;
  *type = 0;
  return 0;
}

EXPORT int ibv_query_pkey(ibv_context *, uint8_t port, int index, __be16 *pkey) {
  if (port != 1 || index != 0) return fail_minus1(EINVAL);
  *pkey = htobe16(0xffff);
  return 0;
}

EXPORT int ibv_get_pkey_index(ibv_context *, uint8_t port, __be16 pkey) {
  if (port != 1 || be16toh(pkey) != 0xffff) return fail_minus1(EINVAL);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Async events

EXPORT int ibv_get_async_event(ibv_context *ctx, ibv_async_event *event) {
  ssize_t n = ::read(ctx->async_fd, event, sizeof(*event));
  if (n == (ssize_t)sizeof(*event)) return 0;
  return n < 0 ? -1 : fail_minus1(EIO);
}

// Counts acknowledged events of one object and wakes an ibv_destroy_* that waits until every
// event it reported has been acknowledged (verbs.h: the object's mutex, cond and counter).
static void count_acked(pthread_mutex_t &mu, pthread_cond_t &cond, uint32_t &acked, uint32_t n) {
  pthread_mutex_lock(&mu);
  acked += n;
  pthread_cond_signal(&cond);
  pthread_mutex_unlock(&mu);
}

EXPORT void ibv_ack_async_event(ibv_async_event *event) {
  auto &e = event->element;
  switch (event->event_type) {
    case IBV_EVENT_CQ_ERR:
      count_acked(e.cq->mutex, e.cq->cond, e.cq->async_events_completed, 1);
      break;
    case IBV_EVENT_SRQ_ERR:
    case IBV_EVENT_SRQ_LIMIT_REACHED:
      count_acked(e.srq->mutex, e.srq->cond, e.srq->events_completed, 1);
      break;
    case IBV_EVENT_QP_FATAL:
    case IBV_EVENT_QP_REQ_ERR:
    case IBV_EVENT_QP_ACCESS_ERR:
    case IBV_EVENT_COMM_EST:
    case IBV_EVENT_SQ_DRAINED:
    case IBV_EVENT_PATH_MIG:
    case IBV_EVENT_PATH_MIG_ERR:
    case IBV_EVENT_QP_LAST_WQE_REACHED:
      count_acked(e.qp->mutex, e.qp->cond, e.qp->events_completed, 1);
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Protection domains and memory regions

EXPORT ibv_pd *ibv_alloc_pd(ibv_context *ctx) {
  auto *pd = new (std::nothrow) Pd();
  if (!pd) return fail_null<ibv_pd>(ENOMEM);
  std::memset(&pd->ibpd, 0, sizeof(pd->ibpd));
  static std::atomic<uint32_t> next{1};
  pd->ctx = Context::from(ctx);
  pd->ibpd.context = ctx;
  pd->ibpd.handle = next++;
  return &pd->ibpd;
}

EXPORT int ibv_dealloc_pd(ibv_pd *p) {
  Pd *pd = Pd::from(p);
  if (pd->users.load()) return EBUSY;
  delete pd;
  return 0;
}

EXPORT ibv_pd *ibv_import_pd(ibv_context *, uint32_t) { return fail_null<ibv_pd>(EOPNOTSUPP); }
EXPORT void ibv_unimport_pd(ibv_pd *) {}

EXPORT ibv_mr *ibv_reg_mr_iova2(ibv_pd *pd, void *addr, size_t len, uint64_t iova,
                                unsigned int access) {
  Mr *mr = nullptr;
  if (int rc = mr_register(Pd::from(pd), addr, len, iova, (int)access, &mr))
    return fail_null<ibv_mr>(rc);
  return &mr->ibmr;
}

EXPORT ibv_mr *ibv_reg_mr(ibv_pd *pd, void *addr, size_t len, int access) {
  return ibv_reg_mr_iova2(pd, addr, len, (uintptr_t)addr, (unsigned)access);
}

EXPORT ibv_mr *ibv_reg_mr_iova(ibv_pd *pd, void *addr, size_t len, uint64_t iova, int access) {
  return ibv_reg_mr_iova2(pd, addr, len, iova, (unsigned)access);
}

EXPORT ibv_mr *ibv_reg_dmabuf_mr(ibv_pd *, uint64_t, size_t, uint64_t, int, int) {
  return fail_null<ibv_mr>(EOPNOTSUPP);  // no device memory behind a dma-buf here
}

EXPORT int ibv_rereg_mr(ibv_mr *, int, ibv_pd *, void *, size_t, int) {
  errno = EOPNOTSUPP;
  return IBV_REREG_MR_ERR_INPUT;  // the old MR stays valid
}

EXPORT int ibv_dereg_mr(ibv_mr *mr) { return mr_deregister(Mr::from(mr)); }

EXPORT ibv_mr *ibv_import_mr(ibv_pd *, uint32_t) { return fail_null<ibv_mr>(EOPNOTSUPP); }
EXPORT void ibv_unimport_mr(ibv_mr *) {}
EXPORT ibv_dm *ibv_import_dm(ibv_context *, uint32_t) { return fail_null<ibv_dm>(EOPNOTSUPP); }
EXPORT void ibv_unimport_dm(ibv_dm *) {}

// ---------------------------------------------------------------------------------------------
// Completion channels and CQs

EXPORT ibv_comp_channel *ibv_create_comp_channel(ibv_context *ctx) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return nullptr;
  ::fcntl(p[1], F_SETFL, O_NONBLOCK);
  auto *ch = new CompChannel();
  ch->ch.context = ctx;
  ch->ch.fd = p[0];
  ch->ch.refcnt = 0;
  ch->wfd = p[1];
  return &ch->ch;
}

EXPORT int ibv_destroy_comp_channel(ibv_comp_channel *c) {
  CompChannel *ch = CompChannel::from(c);
  if (ch->ch.refcnt) return EBUSY;  // rdma-core: the errno value itself, not -1
  ::close(ch->ch.fd);
  ::close(ch->wfd);
  delete ch;
  return 0;
}

EXPORT ibv_cq *ibv_create_cq(ibv_context *ctx, int cqe, void *cq_context,
                             ibv_comp_channel *channel, int comp_vector) {
  Cq *cq = nullptr;
  if (int rc = cq_create(Context::from(ctx), cqe, channel ? CompChannel::from(channel) : nullptr,
                         comp_vector, 0, &cq))
    return fail_null<ibv_cq>(rc);
  cq->cqx.cq_context = cq_context;
  return cq->ibv();
}

EXPORT int ibv_resize_cq(ibv_cq *c, int cqe) {
  Cq *cq = Cq::from(c);
  if (cqe < 1 || (uint32_t)cqe > kMaxCqe) return EINVAL;
  std::lock_guard lk(cq->mu);
  if ((uint32_t)cqe < cq->count) return EINVAL;
  std::vector<ibv_wc> ring((size_t)cqe);
  for (uint32_t i = 0; i < cq->count; i++) ring[i] = cq->ring[(cq->head + i) % cq->ring.size()];
  cq->ring.swap(ring);
  cq->head = 0;
  cq->cqx.cqe = cqe;
  return 0;
}

EXPORT int ibv_destroy_cq(ibv_cq *cq) { return cq_destroy(Cq::from(cq)); }

EXPORT int ibv_get_cq_event(ibv_comp_channel *channel, ibv_cq **cq, void **cq_context) {
  Cq *c = nullptr;
  // No retry on EINTR: a signal must interrupt the wait (qperf relies on it).
  ssize_t n = ::read(channel->fd, &c, sizeof(c));
  if (n != (ssize_t)sizeof(c)) return n < 0 ? -1 : fail_minus1(EIO);
  *cq = c->ibv();
  *cq_context = c->cqx.cq_context;
  return 0;
}

EXPORT void ibv_ack_cq_events(ibv_cq *cq, unsigned int nevents) {
  count_acked(cq->mutex, cq->cond, cq->comp_events_completed, nevents);
}

// ---------------------------------------------------------------------------------------------
// QPs and SRQs

EXPORT ibv_qp *ibv_create_qp(ibv_pd *pd, ibv_qp_init_attr *attr) {
  ibv_qp_init_attr_ex ex{};
  ex.qp_context = attr->qp_context;
  ex.send_cq = attr->send_cq;
  ex.recv_cq = attr->recv_cq;
  ex.srq = attr->srq;
  ex.cap = attr->cap;
  ex.qp_type = attr->qp_type;
  ex.sq_sig_all = attr->sq_sig_all;
  ex.comp_mask = IBV_QP_INIT_ATTR_PD;
  ex.pd = pd;
  Qp *qp = nullptr;
  if (int rc = qp_create(Pd::from(pd)->ctx, ex, &qp)) return fail_null<ibv_qp>(rc);
  attr->cap = qp->cap;
  return qp->ibv();
}

EXPORT int ibv_destroy_qp(ibv_qp *qp) { return qp_destroy(Qp::from(qp)); }

EXPORT int ibv_modify_qp(ibv_qp *qp, ibv_qp_attr *attr, int mask) {
  return Qp::from(qp)->modify(*attr, mask);
}

EXPORT int ibv_query_qp(ibv_qp *qp, ibv_qp_attr *attr, int mask, ibv_qp_init_attr *init) {
  int rc = Qp::from(qp)->query(attr, mask, init);
  if (!rc && (mask & IBV_QP_STATE)) Qp::set_public_state(qp, attr->qp_state);  // as libibverbs does
  return rc;
}

EXPORT ibv_qp_ex *ibv_qp_to_qp_ex(ibv_qp *qp) {
  Qp *q = Qp::from(qp);
  return q->has_qpx ? &q->qpx : nullptr;
}

// Data of a message is placed in order (TCP stream order), so the last byte of a WRITE is
// written last: what polling on the last byte relies on.
EXPORT int ibv_query_qp_data_in_order(ibv_qp *, ibv_wr_opcode op, uint32_t) {
  return op == IBV_WR_RDMA_WRITE || op == IBV_WR_SEND || op == IBV_WR_RDMA_READ ||
         op == IBV_WR_SEND_WITH_INV || op == IBV_WR_RDMA_WRITE_WITH_IMM;
}

EXPORT int ibv_set_ece(ibv_qp *, ibv_ece *) { return EOPNOTSUPP; }
EXPORT int ibv_query_ece(ibv_qp *, ibv_ece *) { return EOPNOTSUPP; }

EXPORT ibv_srq *ibv_create_srq(ibv_pd *pd, ibv_srq_init_attr *attr) {
  Srq *s = nullptr;
  if (int rc = srq_create(Pd::from(pd), *attr, &s)) return fail_null<ibv_srq>(rc);
  attr->attr.max_wr = s->rq.max_wr;
  attr->attr.max_sge = s->max_sge;
  return &s->ibsrq;
}

EXPORT int ibv_modify_srq(ibv_srq *srq, ibv_srq_attr *attr, int mask) {
  Srq *s = Srq::from(srq);
  if (mask & IBV_SRQ_MAX_WR) return EOPNOTSUPP;  // no IBV_DEVICE_SRQ_RESIZE
  if (mask & IBV_SRQ_LIMIT) {
    std::lock_guard lk(s->mu);
    if (attr->srq_limit > s->rq.max_wr) return EINVAL;
    s->limit = attr->srq_limit;
  }
  return 0;
}

EXPORT int ibv_query_srq(ibv_srq *srq, ibv_srq_attr *attr) {
  Srq *s = Srq::from(srq);
  std::lock_guard lk(s->mu);
  attr->max_wr = s->rq.max_wr;
  attr->max_sge = s->max_sge;
  attr->srq_limit = s->limit;
  return 0;
}

EXPORT int ibv_destroy_srq(ibv_srq *srq) { return srq_destroy(Srq::from(srq)); }

// ---------------------------------------------------------------------------------------------
// Address handles and multicast: InfiniBand/RoCE UD concepts with no iWARP meaning.

EXPORT ibv_ah *ibv_create_ah(ibv_pd *, ibv_ah_attr *) { return fail_null<ibv_ah>(EOPNOTSUPP); }
EXPORT int ibv_destroy_ah(ibv_ah *) { return EOPNOTSUPP; }
EXPORT int ibv_init_ah_from_wc(ibv_context *, uint8_t, ibv_wc *, ibv_grh *, ibv_ah_attr *) {
  return fail_minus1(EOPNOTSUPP);
}
EXPORT ibv_ah *ibv_create_ah_from_wc(ibv_pd *, ibv_wc *, ibv_grh *, uint8_t) {
  return fail_null<ibv_ah>(EOPNOTSUPP);
}
EXPORT int ibv_attach_mcast(ibv_qp *, const ibv_gid *, uint16_t) { return EOPNOTSUPP; }
EXPORT int ibv_detach_mcast(ibv_qp *, const ibv_gid *, uint16_t) { return EOPNOTSUPP; }
EXPORT int ibv_resolve_eth_l2_from_gid(ibv_context *, ibv_ah_attr *, uint8_t[6], uint16_t *) {
  return EOPNOTSUPP;
}

// ---------------------------------------------------------------------------------------------
// fork support: safe without preparation; ibv_fork_init selects rdma-core's MADV_DONTFORK
// mode (provider/core/fork.hpp).

EXPORT int ibv_fork_init(void) { return fork_init(); }
EXPORT ibv_fork_status ibv_is_fork_initialized(void) { return fork_status(); }
EXPORT int ibv_dontfork_range(void *base, size_t size) { return fork_dontfork(base, size); }
EXPORT int ibv_dofork_range(void *base, size_t size) { return fork_dofork(base, size); }

// ---------------------------------------------------------------------------------------------
// sysfs helpers: these devices have no sysfs entries; reads of real files still work.

EXPORT const char *ibv_get_sysfs_path(void) { return "/sys"; }

EXPORT int ibv_read_sysfs_file(const char *dir, const char *file, char *buf, size_t size) {
  char path[512];
  std::snprintf(path, sizeof(path), "%s/%s", dir, file);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = ::read(fd, buf, size);
  ::close(fd);
  if (n <= 0) return -1;
  if ((size_t)n == size) n--;
  buf[n] = 0;
  if (n > 0 && buf[n - 1] == '\n') buf[--n] = 0;
  return (int)n;
}

EXPORT int ibv_read_ibdev_sysfs_file(char *, size_t, void *, const char *, ...) {
  return fail_minus1(ENOENT);
}

// ---------------------------------------------------------------------------------------------
// Provider registration and logging (IBVERBS_PRIVATE_34). libmlx5/libefa register themselves
// from their constructors when perftest or libfabric load them; they never match our devices.

EXPORT void verbs_register_driver_34(const void *) {}

EXPORT void __verbs_log(void *, uint32_t, const char *fmt, ...) {
  if (!log_enabled(LogLevel::Debug)) return;
  va_list ap;
  va_start(ap, fmt);
  log_vmsg(LogLevel::Debug, fmt, ap);
  va_end(ap);
}

// ---------------------------------------------------------------------------------------------
// Strings and rates

namespace {

template <size_t N>
const char *lookup(const char *const (&tab)[N], int i) {
  return (i >= 0 && (size_t)i < N && tab[i]) ? tab[i] : "unknown";
}

}  // namespace

EXPORT const char *ibv_node_type_str(ibv_node_type t) {
  static const char *const tab[] = {"unknown", "InfiniBand channel adapter", "InfiniBand switch",
                                    "InfiniBand router", "iWARP NIC", "usNIC", "usNIC UDP",
                                    "unspecified"};
  return lookup(tab, (int)t);
}

EXPORT const char *ibv_port_state_str(ibv_port_state s) {
  static const char *const tab[] = {"PORT_NOP", "PORT_DOWN", "PORT_INIT", "PORT_ARMED",
                                    "PORT_ACTIVE", "PORT_ACTIVE_DEFER"};
  return lookup(tab, (int)s);
}

EXPORT const char *ibv_event_type_str(ibv_event_type e) {
  static const char *const tab[] = {
      "CQ error", "local work queue catastrophic error", "invalid request local work queue error",
      "local access violation work queue error", "communication established", "send queue drained",
      "path migrated", "path migration request error", "local catastrophic error", "port active",
      "port error", "LID change", "P_Key change", "SM change", "SRQ catastrophic error",
      "SRQ limit reached", "last WQE reached", "client reregistration", "GID table change",
      "WQ fatal"};
  return lookup(tab, (int)e);
}

EXPORT const char *ibv_wc_status_str(ibv_wc_status s) {
  static const char *const tab[] = {
      "success", "local length error", "local QP operation error", "local EE context operation error",
      "local protection error", "Work Request Flushed Error", "memory management operation error",
      "bad response error", "local access error", "remote invalid request error",
      "remote access error", "remote operation error", "transport retry counter exceeded",
      "RNR retry counter exceeded", "local RDD violation error", "remote invalid RD request",
      "aborted error", "invalid EE context number", "invalid EE context state", "fatal error",
      "response timeout error", "general error", "TM error", "TM rendezvous error"};
  return lookup(tab, (int)s);
}

namespace {
struct RateRow {
  ibv_rate rate;
  int mult;
  int mbps;
};
constexpr RateRow kRates[] = {
    {IBV_RATE_2_5_GBPS, 1, 2500},      {IBV_RATE_5_GBPS, 2, 5000},
    {IBV_RATE_10_GBPS, 4, 10000},      {IBV_RATE_20_GBPS, 8, 20000},
    {IBV_RATE_30_GBPS, 12, 30000},     {IBV_RATE_40_GBPS, 16, 40000},
    {IBV_RATE_60_GBPS, 24, 60000},     {IBV_RATE_80_GBPS, 32, 80000},
    {IBV_RATE_120_GBPS, 48, 120000},   {IBV_RATE_14_GBPS, 0, 14062},
    {IBV_RATE_56_GBPS, 0, 56250},      {IBV_RATE_112_GBPS, 0, 112500},
    {IBV_RATE_168_GBPS, 0, 168750},    {IBV_RATE_25_GBPS, 10, 25781},
    {IBV_RATE_100_GBPS, 40, 103125},   {IBV_RATE_200_GBPS, 80, 206250},
    {IBV_RATE_300_GBPS, 120, 309375},  {IBV_RATE_28_GBPS, 11, 28125},
    {IBV_RATE_50_GBPS, 20, 53125},     {IBV_RATE_400_GBPS, 160, 425000},
    {IBV_RATE_600_GBPS, 240, 637500},
};
}  // namespace

EXPORT int ibv_rate_to_mult(ibv_rate rate) {
  for (const auto &r : kRates)
    if (r.rate == rate && r.mult) return r.mult;
  return -1;
}

EXPORT ibv_rate mult_to_ibv_rate(int mult) {
  for (const auto &r : kRates)
    if (r.mult == mult && mult) return r.rate;
  return IBV_RATE_MAX;
}

EXPORT int ibv_rate_to_mbps(ibv_rate rate) {
  for (const auto &r : kRates)
    if (r.rate == rate) return r.mbps;
  return -1;
}

EXPORT ibv_rate mbps_to_ibv_rate(int mbps) {
  for (const auto &r : kRates)
    if (r.mbps == mbps) return r.rate;
  return IBV_RATE_MAX;
}

// rdma_cm ids and the connection calls (create_id .. set_connect_data); the state machine they
// drive is in conn.cpp, addresses in addr.cpp, event channels in channel.cpp. See
// cm_internal.hpp for the objects and cm.hpp for the model.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <unordered_set>

#include "provider/cm/cm_internal.hpp"

namespace eca::cm {
namespace {
std::mutex g_ids_mu;
std::unordered_set<const rdma_cm_id *> g_ids;  // ids the application may hold (g_ids_mu)
}  // namespace

Id *Id::live(rdma_cm_id *i) {
  if (!i) return nullptr;
  std::lock_guard g(g_ids_mu);
  return g_ids.count(i) ? from(i) : nullptr;
}

Id *Id::make() {
  Id *id = new Id;
  std::lock_guard g(g_ids_mu);
  g_ids.insert(&id->id);
  return id;
}

void Id::free(Id *id) {
  {
    std::lock_guard g(g_ids_mu);
    g_ids.erase(&id->id);
  }
  delete id;
}

namespace {
constexpr int kMaxBacklog = 1024;   // /proc/sys/net/rdma_ucm/max_backlog's default
constexpr int kTcpBacklog = 4096;   // TCP accept queue: requests are bounded at MPA level

Qp *lookup_qp(ibv_context *verbs, uint32_t qpn) {
  if (!verbs || !qpn) return nullptr;
  return eca::qp_lookup(Context::from(verbs), qpn);
}

uint16_t clamp_res(uint8_t v, uint16_t dflt) {
  if (v == RDMA_MAX_RESP_RES) return std::min<uint16_t>(dflt, kMaxIrdOrd);
  return std::min<uint16_t>(v, kMaxIrdOrd);
}

}  // namespace

// =============================================================================================
// Ids

int create_id(rdma_event_channel *ch, rdma_cm_id **out, void *context, rdma_port_space ps) {
  if (!out) return EINVAL;
  if (ps != RDMA_PS_TCP) {
    if (ps == RDMA_PS_UDP || ps == RDMA_PS_IPOIB || ps == RDMA_PS_IB) {
      ECA_LOG(Info, "rdma_create_id: port space 0x%x is not supported by iWARP (RDMA_PS_TCP only)",
              unsigned(ps));
      return ENOSYS;
    }
    return EINVAL;
  }
  auto *id = Id::make();
  if (!ch) {
    Channel *c = nullptr;
    if (int r = channel_new(&c)) {
      Id::free(id);
      return r;
    }
    id->chan = c;
    id->sync = true;
  } else {
    id->chan = chan_of(ch);
  }
  id->id.channel = &id->chan->ch;
  id->id.context = context;
  id->id.ps = ps;
  id->id.qp_type = IBV_QPT_RC;
  id->core = std::make_shared<Core>();
  id->core->owner = id;
  *out = &id->id;
  return 0;
}

bool is_sync(rdma_cm_id *cid) {
  Id *id = Id::live(cid);
  return id && id->sync;
}

bool id_live(rdma_cm_id *cid) { return Id::live(cid) != nullptr; }

int destroy_id(rdma_cm_id *cid) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  if (id->sync && id->id.event) {
    ack_cm_event(id->id.event);
    id->id.event = nullptr;
  }
  ToDisconnect to_disconnect;
  std::vector<Id *> orphans;
  run([&] {
    to_disconnect = teardown(*id->core);
    orphans = purge(id);
    for (Id *o : orphans) {
      (void)teardown(*o->core);
      purge(o);
    }
    return 0;
  });
  // A connected id going away takes its connection down (the peer sees DISCONNECTED).
  to_disconnect();
  for (Id *o : orphans) {
    if (o->sync) channel_free(o->chan);
    Id::free(o);
  }
  {
    std::unique_lock g(id->mu);
    bool warned = false;
    while (id->acked < id->delivered) {
      if (!id->cv.wait_for(g, std::chrono::seconds(5), [&] { return id->acked >= id->delivered; }) &&
          !warned) {
        ECA_LOG(Warn, "rdma_destroy_id: waiting for %llu unacknowledged event(s) of this id",
                (unsigned long long)(id->delivered - id->acked));
        warned = true;
      }
    }
  }
  if (id->sync) channel_free(id->chan);
  Id::free(id);
  return 0;
}

int migrate_id(rdma_cm_id *cid, rdma_event_channel *ch) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  if (id->sync && !ch) return EINVAL;
  Channel *nc = nullptr;
  bool new_sync = !ch;
  if (new_sync) {
    if (int r = channel_new(&nc)) return r;
  } else {
    nc = chan_of(ch);
  }
  if (id->sync && id->id.event) {
    ack_cm_event(id->id.event);
    id->id.event = nullptr;
  }
  Channel *old = id->chan;
  if (old != nc) {
    run([&] {
      // Undelivered events follow the id to its new channel, in order.
      std::scoped_lock g(old->mu, nc->mu);
      bool had_old = !old->q.empty(), was_new_empty = nc->q.empty();
      for (auto it = old->q.begin(); it != old->q.end();) {
        if ((*it)->owner == id) {
          nc->q.push_back(*it);
          it = old->q.erase(it);
        } else {
          ++it;
        }
      }
      if (had_old && old->q.empty()) chan_drain_locked(old);
      if (was_new_empty && !nc->q.empty()) {
        char b = 1;
        (void)!::write(nc->wfd, &b, 1);
      }
      id->chan = nc;
      id->id.channel = &nc->ch;
      return 0;
    });
  }
  bool old_sync = id->sync;
  {
    std::unique_lock g(id->mu);
    id->sync = new_sync;
    id->cv.wait(g, [&] { return id->acked >= id->delivered; });
  }
  if (old_sync && old != nc) channel_free(old);
  return 0;
}

int listen(rdma_cm_id *cid, int backlog) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  // Open every device's context now, so requests arriving on a wildcard listener find them.
  tcp::endpoint b;
  if (!src_ep(id, &b) || b.address().is_unspecified())
    for (Device *d : devices()) dev_entry(d);
  return run([&] {
    Core &c = *id->core;
    if (c.st == St::Listen) return 0;
    if (c.st == St::Idle) {
      tcp::endpoint got;  // as the kernel: an unbound id listens on the IPv4 wildcard
      if (int r = bind_socket(c, tcp::endpoint(tcp::v4(), 0), &got)) return r;
      set_src(id, got);
      if (!transition(c, St::Bound)) return EINVAL;
    }
    if (c.st != St::Bound || c.bfd < 0) return EINVAL;
    auto acc = std::make_unique<tcp::acceptor>(io());
    boost::system::error_code ec;
    acc->assign(protocol_of(c.resv_addr), c.bfd, ec);
    if (ec) return ec.value() > 0 ? ec.value() : EIO;
    c.bfd = -1;
    // As the kernel's rdma_ucm: 0 or less, or more than max_backlog (1024), means 1024.
    c.backlog = backlog > 0 && backlog < kMaxBacklog ? backlog : kMaxBacklog;
    acc->listen(std::max(c.backlog, kTcpBacklog), ec);
    if (ec) {
      // Give the socket back so the id stays bound.
      c.bfd = acc->release(ec);
      return EADDRINUSE;
    }
    if (!transition(c, St::Listen)) {
      c.bfd = acc->release(ec);
      return EINVAL;
    }
    c.acceptor = std::move(acc);
    accept_next(id->core);
    return 0;
  });
}

int get_request(rdma_cm_id *lcid, rdma_cm_id **out) {
  Id *l = Id::live(lcid);
  if (!l || !out) return EINVAL;
  if (!l->sync) return EINVAL;
  if (l->id.event) {
    ack_cm_event(l->id.event);
    l->id.event = nullptr;
  }
  rdma_cm_event *ev = nullptr;
  int r;
  while ((r = get_cm_event(&l->chan->ch, &ev)) == EINTR) {
  }
  if (r) return r;
  if (ev->status) {
    l->id.event = ev;
    return ev->status < 0 ? -ev->status : ev->status;
  }
  if (ev->event != RDMA_CM_EVENT_CONNECT_REQUEST) {
    l->id.event = ev;
    return EINVAL;
  }
  *out = ev->id;
  ev->id->event = ev;
  return 0;
}

int connect(rdma_cm_id *cid, const rdma_conn_param *param) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  if (!param && !id->id.qp) return EINVAL;
  MpaParams p;
  p.pdata = id->connect_data;
  if (param && param->private_data && param->private_data_len) {
    auto *b = static_cast<const uint8_t *>(param->private_data);
    p.pdata.insert(p.pdata.end(), b, b + param->private_data_len);
  }
  if (p.pdata.size() > mpa::kMaxUserPrivateData) return EINVAL;
  Qp *qp = id->id.qp ? Qp::from(id->id.qp) : lookup_qp(id->id.verbs, param ? param->qp_num : 0);
  p.ord = param ? clamp_res(param->initiator_depth, kMaxIrdOrd) : kMaxIrdOrd;
  p.ird = param ? clamp_res(param->responder_resources, kMaxIrdOrd) : kMaxIrdOrd;
  int r = run([&] {
    Core &c = *id->core;
    if (c.st != St::RouteResolved) return EINVAL;
    if (!transition(c, St::Connecting)) return EINVAL;
    set_qp(c, qp);
    c.qp_num = param ? param->qp_num : 0;
    c.disc_delivered = false;
    tcp::endpoint dst;
    to_ep(&id->id.route.addr.dst_addr, &dst);
    start_connect(id->core, dst, std::move(p));
    return 0;
  });
  if (r) return r;
  id->connect_data.clear();
  return complete(id);
}

int accept(rdma_cm_id *cid, const rdma_conn_param *param) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  Qp *qp = id->id.qp ? Qp::from(id->id.qp) : lookup_qp(id->id.verbs, param ? param->qp_num : 0);
  if (!qp) {
    ECA_LOG(Info, "rdma_accept: iWARP needs a QP (id->qp or conn_param->qp_num)");
    return EINVAL;
  }
  MpaParams p;
  if (param && param->private_data && param->private_data_len) {
    auto *b = static_cast<const uint8_t *>(param->private_data);
    p.pdata.assign(b, b + param->private_data_len);
  }
  int r = run([&] {
    Core &c = *id->core;
    if (c.st != St::ConnReq || !c.mpa) return EINVAL;
    p.ird = param ? clamp_res(param->responder_resources, c.def_ird)
                  : std::min<uint16_t>(c.def_ird, kMaxIrdOrd);
    p.ord = param ? clamp_res(param->initiator_depth, c.def_ord)
                  : std::min<uint16_t>(c.def_ord, kMaxIrdOrd);
    if (!transition(c, St::Accepting)) return EINVAL;
    set_qp(c, qp);
    auto cp = id->core;
    c.mpa->accept(p, [cp](MpaOutcome o) { on_responder_done(cp, o); });
    return 0;
  });
  if (r) return r;
  return complete(id);
}

int reject(rdma_cm_id *cid, const void *pdata, uint8_t len) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  std::vector<uint8_t> pd;
  if (pdata && len) pd.assign(static_cast<const uint8_t *>(pdata),
                              static_cast<const uint8_t *>(pdata) + len);
  return run([&] {
    Core &c = *id->core;
    if (c.st != St::ConnReq || !c.mpa) return EINVAL;
    if (!transition(c, St::Failed)) return EINVAL;
    c.mpa->reject(pd);
    c.mpa.reset();
    return 0;
  });
}

int establish(rdma_cm_id *cid) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  Qp *qp = id->id.qp ? Qp::from(id->id.qp) : nullptr;
  ibv_context *verbs = id->id.verbs;
  int r = run([&] {
    Core &c = *id->core;
    if (c.st != St::ConnResponse || !c.llp) return EINVAL;
    if (!qp) qp = lookup_qp(verbs, c.qp_num);
    if (!qp) return EINVAL;
    set_qp(c, qp);
    LlpConnection llp = std::move(*c.llp);
    c.llp.reset();
    if (!attach(c, std::move(llp))) {
      fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, EIO);
      return 0;
    }
    if (!transition(c, St::Established)) {
      fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, EPROTO);
      return 0;
    }
    push_conn(c, RDMA_CM_EVENT_ESTABLISHED, 0, {});
    return 0;
  });
  if (r) return r;
  return complete(id);
}

int disconnect(rdma_cm_id *cid) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  Qp *qp = nullptr;
  uint64_t gen = 0;
  bool queued_now = false;
  int r = run([&] {
    Core &c = *id->core;
    switch (c.st) {
      case St::Established:
        if (!c.qp) {
          // The QP (and with it the stream) is already gone: rdma_disconnect completes at
          // once. As with the kernel, destroying the QP itself raises no event.
          queued_now = mark_disconnected(c);
          return 0;
        }
        if (!transition(c, St::Disconnecting)) return EINVAL;
        qp = c.qp;
        gen = c.qp_gen;
        return 0;
      case St::ConnResponse: {
        c.llp.reset();  // closes its stream
        queued_now = mark_disconnected(c);
        return 0;
      }
      case St::Disconnecting:
      case St::Disconnected:
      case St::Failed:
        return 0;  // already down (the peer closed first, or the attempt failed)
      default:
        return EINVAL;
    }
  });
  if (r) return r;
  ECA_LOG(Debug, "rdma_disconnect: %s", qp ? "closing the connection" : "nothing to close");
  if (qp) {
    qp->disconnect(gen);  // graceful: flush, close; the peer sees its LLP end
    run([&] {
      Core &c = *id->core;
      if (c.owner) queued_now = mark_disconnected(c);
      return 0;
    });
  }
  if (id->sync && (queued_now || has_queued(id))) return complete(id);
  return 0;
}

int set_option(rdma_cm_id *cid, int level, int optname, const void *optval, size_t optlen) {
  Id *id = Id::live(cid);
  if (!id) return EINVAL;
  if (level != RDMA_OPTION_ID) return ENOSYS;
  if (!optval) return EINVAL;
  return run([&] {
    Core &c = *id->core;
    switch (optname) {
      case RDMA_OPTION_ID_TOS:
        if (optlen != sizeof(uint8_t)) return EINVAL;
        c.tos = *static_cast<const uint8_t *>(optval);
        return 0;
      case RDMA_OPTION_ID_REUSEADDR:
        if (optlen != sizeof(int)) return EINVAL;
        if (c.st != St::Idle) return EINVAL;
        c.reuseaddr = *static_cast<const int *>(optval) != 0;
        return 0;
      case RDMA_OPTION_ID_AFONLY:
        if (optlen != sizeof(int)) return EINVAL;
        if (c.st != St::Idle) return EINVAL;
        c.afonly = *static_cast<const int *>(optval) != 0;
        return 0;
      case RDMA_OPTION_ID_ACK_TIMEOUT:
        // Accepted for compatibility: TCP's retransmission timer governs iWARP.
        if (optlen != sizeof(uint8_t)) return EINVAL;
        return 0;
      default:
        return ENOSYS;
    }
  });
}

int init_qp_attr(rdma_cm_id *cid, ibv_qp_attr *attr, int *mask) {
  if (!cid || !attr || !mask) return EINVAL;
  switch (attr->qp_state) {
    case IBV_QPS_INIT:
      attr->pkey_index = 0;
      attr->port_num = cid->port_num ? cid->port_num : 1;
      attr->qp_access_flags =
          IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
      *mask = IBV_QP_STATE | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX | IBV_QP_PORT;
      return 0;
    case IBV_QPS_RTR:
    case IBV_QPS_RTS:
      *mask = IBV_QP_STATE;
      return 0;
    default:
      return EINVAL;
  }
}

void qp_release(rdma_cm_id *cid) {
  Id *id = Id::live(cid);
  if (!id || !cid->qp) return;
  Qp *q = Qp::from(cid->qp);
  run([&] {
    set_hook(q, nullptr);
    if (id->core->qp == q) id->core->qp = nullptr;
    return 0;
  });
}

void set_ep_qp_init_attr(rdma_cm_id *cid, const ibv_qp_init_attr *attr) {
  Id *id = Id::from(cid);
  if (attr)
    id->ep_attr = *attr;
  else
    id->ep_attr.reset();
}

bool ep_qp_init_attr(rdma_cm_id *cid, ibv_qp_init_attr *out) {
  Id *id = Id::from(cid);
  if (!id->ep_attr) return false;
  *out = *id->ep_attr;
  return true;
}

int set_connect_data(rdma_cm_id *cid, const void *data, size_t len) {
  Id *id = Id::from(cid);
  if (len > mpa::kMaxUserPrivateData) return EINVAL;
  auto *b = static_cast<const uint8_t *>(data);
  id->connect_data.assign(b, b + (data ? len : 0));
  return 0;
}

}  // namespace eca::cm

// The rdma_cm connection state machine (progress thread): the transition table, handing the
// negotiated stream to the QP's backend, the initiator path (TCP connect with retries, MPA
// request), the responder path (listener, MPA request -> CONNECT_REQUEST, reply), and
// teardown.
#include <algorithm>
#include <array>
#include <cstdlib>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "provider/core/backend.hpp"
#include "provider/cm/cm_internal.hpp"

namespace eca::cm {

// ---------------------------------------------------------------------------------------------
// The state machine

namespace {

constexpr uint16_t bit(St s) { return uint16_t(1u << static_cast<unsigned>(s)); }

struct Row {
  St from;
  const char *name;
  uint16_t next;  // the states `from` may go to
};

// One row per state, in St order. Derived from every state change in provider/cm/ and checked
// against the event sequences of rdma_cm(7) and rdma_get_cm_event(3); docs/architecture.md
// ("rdma_cm connection states") has the same table with the calls and events.
constexpr std::array<Row, kStates> kNext = {{
    // rdma_bind_addr | rdma_resolve_addr (binds first) | a CONNECT_REQUEST's new id
    {St::Idle, "idle", bit(St::Bound) | bit(St::AddrResolved) | bit(St::ConnReq)},
    // rdma_resolve_addr | rdma_listen
    {St::Bound, "bound", bit(St::AddrResolved) | bit(St::Listen)},
    // rdma_resolve_addr again (the kernel refuses it) | rdma_resolve_route
    {St::AddrResolved, "addr-resolved", bit(St::AddrResolved) | bit(St::RouteResolved)},
    // rdma_resolve_route again (the kernel refuses it) | rdma_connect
    {St::RouteResolved, "route-resolved", bit(St::RouteResolved) | bit(St::Connecting)},
    // MPA reply, QP given: ESTABLISHED | no QP: CONNECT_RESPONSE | REJECTED, UNREACHABLE,
    // CONNECT_ERROR
    {St::Connecting, "connecting", bit(St::Established) | bit(St::ConnResponse) | bit(St::Failed)},
    // rdma_establish: ESTABLISHED | its attach failed: CONNECT_ERROR | rdma_disconnect
    {St::ConnResponse, "conn-response",
     bit(St::Established) | bit(St::Failed) | bit(St::Disconnected)},
    // a listener stays one until rdma_destroy_id
    {St::Listen, "listen", 0},
    // rdma_accept | rdma_reject
    {St::ConnReq, "conn-request", bit(St::Accepting) | bit(St::Failed)},
    // reply written and QP attached: ESTABLISHED | CONNECT_ERROR
    {St::Accepting, "accepting", bit(St::Established) | bit(St::Failed)},
    // rdma_disconnect | the stream ended (peer, QP error) or rdma_disconnect without a QP:
    // DISCONNECTED
    {St::Established, "established", bit(St::Disconnecting) | bit(St::Disconnected)},
    // the local close completed or the stream ended: DISCONNECTED
    {St::Disconnecting, "disconnecting", bit(St::Disconnected)},
    // both ends of a close report it; DISCONNECTED is queued once
    {St::Disconnected, "disconnected", bit(St::Disconnected)},
    // rejected or failed: only rdma_destroy_id is left
    {St::Failed, "failed", 0},
}};

constexpr bool rows_in_state_order() {
  for (size_t i = 0; i < kStates; i++)
    if (static_cast<size_t>(kNext[i].from) != i) return false;
  return true;
}
static_assert(rows_in_state_order(), "kNext: one row per state, in St order");
static_assert(kStates <= 16, "kNext: a row's next states are a 16-bit set");

}  // namespace

const char *st_name(St s) {
  const auto i = static_cast<size_t>(s);
  return i < kStates ? kNext[i].name : "invalid";
}

bool transition_allowed(St from, St to) {
  const auto f = static_cast<size_t>(from), t = static_cast<size_t>(to);
  return f < kStates && t < kStates && (kNext[f].next & bit(to)) != 0;
}

bool transition(Core &c, St to) {
  if (transition_allowed(c.st, to)) {
    c.st = to;
    return true;
  }
  ECA_LOG(Error, "rdma_cm: id %p: illegal state transition %s -> %s",
          static_cast<void *>(c.owner), st_name(c.st), st_name(to));
  if constexpr (kCheckTransitions) std::abort();  // checked builds: the table is wrong
  return false;
}

// ---------------------------------------------------------------------------------------------
// Connection plumbing (progress thread)

// The connection is down: the id's DISCONNECTED is queued, exactly once. Returns whether it
// was queued now.
bool mark_disconnected(Core &c) {
  if (!transition(c, St::Disconnected)) return false;
  if (c.disc_delivered) return false;
  c.disc_delivered = true;
  push_simple(c, RDMA_CM_EVENT_DISCONNECTED, 0);
  return true;
}

static void llp_ended(Core &c, LlpEnd why) {
  if (!c.owner) return;
  ECA_LOG(Debug, "rdma_cm: connection ended (reason %d) in state %s", int(why), st_name(c.st));
  if (c.st == St::Established || c.st == St::Disconnecting) mark_disconnected(c);
}

// Qp::on_llp_end is guarded by Qp::engine_mu (provider/core/qp.cpp takes it to fire the hook).
void set_hook(Qp *qp, std::function<void(LlpEnd)> f) {
  std::lock_guard g(qp->engine_mu);
  qp->on_llp_end = std::move(f);
}

// Hands the stream to the QP's backend; the QP goes to RTS.
bool attach(Core &c, LlpConnection &&llp) {
  Qp *qp = c.qp;
  if (!qp || !qp->ctx || !qp->ctx->dev || !qp->ctx->dev->backend) {
    ECA_LOG(Error, "rdma_cm: no QP/device to attach the connection to");
    return false;
  }
  c.ird = llp.ird;
  c.ord = llp.ord;
  qp->ird = llp.ird;
  qp->ord = llp.ord;
  std::weak_ptr<Core> w = c.weak_from_this();
  set_hook(qp, [w](LlpEnd why) {
    // May run inside the QP's own teardown: only hand the news to the progress queue.
    Progress::instance().post([w, why] {
      if (auto p = w.lock()) llp_ended(*p, why);
    });
  });
  ECA_QP_LOG(Info, qp->qpn, "connected: mpa rev %u, crc %d, %s, ird %u ord %u, rtr %d/%d",
             unsigned(llp.mpa_rev), int(llp.crc), llp.initiator ? "initiator" : "responder",
             unsigned(llp.ird), unsigned(llp.ord), int(llp.rtr_send), int(llp.rtr_recv));
  try {
    auto eng = qp->ctx->dev->backend->attach(*qp, std::move(llp));
    if (!eng) {
      set_hook(qp, nullptr);
      return false;
    }
    c.qp_gen = qp->attach_engine(std::move(eng));
  } catch (const std::exception &e) {
    ECA_QP_LOG(Error, qp->qpn, "attaching the connection failed: %s", e.what());
    set_hook(qp, nullptr);
    return false;
  }
  return true;
}

void fail_conn(Core &c, rdma_cm_event_type t, int err, const std::vector<uint8_t> &pd) {
  // Already the failure path: the event goes out even if the table refuses the move (logged),
  // so that the application learns that its attempt is over.
  (void)transition(c, St::Failed);
  c.qp = nullptr;
  push_conn(c, t, -err, pd);
}

static void on_initiator_done(const std::shared_ptr<Core> &cp, MpaOutcome o) {
  Core &c = *cp;
  if (!c.owner || !c.mpa) return;
  std::shared_ptr<MpaSession> s = std::move(c.mpa);
  const std::vector<uint8_t> &pd = s->peer().pdata;
  switch (o.status) {
    case MpaStatus::Ok: {
      LlpConnection llp = s->take_llp();
      c.ird = llp.ird;
      c.ord = llp.ord;
      if (c.qp) {
        if (!attach(c, std::move(llp))) return fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, EIO);
        if (!transition(c, St::Established))
          return fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, EPROTO);
        c.disc_delivered = false;
        push_conn(c, RDMA_CM_EVENT_ESTABLISHED, 0, pd);
      } else {
        c.llp.emplace(std::move(llp));
        if (!transition(c, St::ConnResponse))
          return fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, EPROTO);
        push_conn(c, RDMA_CM_EVENT_CONNECT_RESPONSE, 0, pd);
      }
      return;
    }
    case MpaStatus::Rejected:
      return fail_conn(c, RDMA_CM_EVENT_REJECTED, ECONNREFUSED, pd);
    case MpaStatus::Closed:
      // The responder closed without replying: a refusal (the kernel reports the same).
      return fail_conn(c, RDMA_CM_EVENT_REJECTED, ECONNRESET);
    default:
      ECA_LOG(Warn, "rdma_cm: connection setup failed: %s", connect::mpa_status_str(o.status));
      return fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, o.err ? o.err : EPROTO);
  }
}

static void connect_attempt(const std::shared_ptr<Core> &cp, const tcp::endpoint &dst, MpaParams p,
                     std::chrono::steady_clock::time_point first, unsigned attempt);

void start_connect(const std::shared_ptr<Core> &cp, const tcp::endpoint &dst, MpaParams p) {
  Core &c = *cp;
  boost::system::error_code ec;
  c.sock.emplace(io());
  if (c.bfd >= 0) {
    c.sock->assign(protocol_of(c.resv_addr), c.bfd, ec);
    c.bfd = -1;
  } else {
    c.sock->open(dst.protocol(), ec);
  }
  if (ec) return fail_conn(c, RDMA_CM_EVENT_UNREACHABLE, ec.value() > 0 ? ec.value() : EIO);
  set_tos(c.sock->native_handle(), dst.protocol(), c.tos);
  c.timed_out = false;
  c.timer = std::make_unique<asio::steady_timer>(io());
  c.timer->expires_after(connect::mpa_timeout());
  c.timer->async_wait([cp](const boost::system::error_code &e) {
    if (e || !cp->owner || cp->st != St::Connecting || !cp->sock) return;
    cp->timed_out = true;
    boost::system::error_code ignored;
    cp->sock->close(ignored);
  });
  connect_attempt(cp, dst, std::move(p), std::chrono::steady_clock::now(), 0);
}

// A refused connection is retried for a short while: some programs (qperf's server) tell the
// client their port between rdma_bind_addr() and rdma_listen(), so a SYN can arrive while the
// port is bound but not yet listening. No fixed delay: the first retry is immediate, then the
// pause doubles from 1 ms, so a listener that appears within the window is found about as
// soon again as it took to appear. The retry window stays inside the connect timeout.
constexpr auto kRefusedRetryWindow = std::chrono::milliseconds(500);

static std::chrono::milliseconds refused_backoff(unsigned attempt) {
  return attempt == 0 ? std::chrono::milliseconds(0)
                      : std::chrono::milliseconds(1u << std::min(attempt - 1, 8u));
}

static void connect_attempt(const std::shared_ptr<Core> &cp, const tcp::endpoint &dst, MpaParams p,
                     std::chrono::steady_clock::time_point first, unsigned attempt) {
  Core &c = *cp;
  c.sock->async_connect(dst, [cp, dst, p = std::move(p), first, attempt](
                                        const boost::system::error_code &e) mutable {
    Core &c = *cp;
    if (!c.owner || c.st != St::Connecting || !c.sock) return;
    if (e == asio::error::connection_refused && !c.timed_out &&
        std::chrono::steady_clock::now() - first < kRefusedRetryWindow) {
      // A socket cannot connect again after a refusal: take a fresh one on the same local
      // address (and port, when the application bound one).
      boost::system::error_code ig;
      const tcp::endpoint local = c.sock->local_endpoint(ig);
      c.sock.emplace(io());
      c.sock->open(dst.protocol(), ig);
      c.sock->set_option(asio::socket_base::reuse_address(true), ig);
      if (!ig) {
        c.sock->bind(local, ig);
        if (ig) c.sock->bind(tcp::endpoint(local.address(), 0), ig);
      }
      set_tos(c.sock->native_handle(), dst.protocol(), c.tos);
      auto t = std::make_shared<asio::steady_timer>(io(), refused_backoff(attempt));
      t->async_wait([cp, dst, p = std::move(p), first, attempt,
                     t](const boost::system::error_code &) mutable {
        Core &c2 = *cp;
        if (!c2.owner || c2.st != St::Connecting || !c2.sock || c2.timed_out) return;
        connect_attempt(cp, dst, std::move(p), first, attempt + 1);
      });
      return;
    }
    if (c.timer) c.timer->cancel();
    if (e) {
      int err = c.timed_out || e == asio::error::operation_aborted ? ETIMEDOUT
                                                                   : (e.value() > 0 ? e.value()
                                                                                    : EIO);
      ECA_LOG(Info, "rdma_cm: TCP connect failed: %s", strerror(err));
      c.sock.reset();
      return fail_conn(c, RDMA_CM_EVENT_UNREACHABLE, err);
    }
    boost::system::error_code ig;
    auto le = c.sock->local_endpoint(ig);
    if (!ig) set_src(c.owner, unmapped(le));
    c.mpa = MpaSession::create(std::move(*c.sock));
    c.sock.reset();
    c.mpa->start_initiator(p, [cp](MpaOutcome o) { on_initiator_done(cp, o); });
  });
}

void on_responder_done(const std::shared_ptr<Core> &cp, MpaOutcome o) {
  Core &c = *cp;
  if (!c.owner || !c.mpa) return;
  std::shared_ptr<MpaSession> s = std::move(c.mpa);
  if (o.status != MpaStatus::Ok) {
    ECA_LOG(Info, "rdma_cm: accept failed: %s", connect::mpa_status_str(o.status));
    return fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, o.err ? o.err : EIO);
  }
  // Attach right after the reply is written: from now on the peer may send FPDUs.
  LlpConnection llp = s->take_llp();
  if (!attach(c, std::move(llp))) return fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, EIO);
  if (!transition(c, St::Established)) return fail_conn(c, RDMA_CM_EVENT_CONNECT_ERROR, EPROTO);
  c.disc_delivered = false;
  push_conn(c, RDMA_CM_EVENT_ESTABLISHED, 0, {});
}

// A usable MPA request arrived on listener L: create the new id and tell the application.
static void new_request(const std::shared_ptr<Core> &L, const std::shared_ptr<MpaSession> &s) {
  Id *lid = L->owner;
  auto *cid = Id::make();
  if (lid->sync) {
    Channel *ch = nullptr;
    if (channel_new(&ch)) {
      Id::free(cid);
      s->cancel();
      return;
    }
    cid->chan = ch;
    cid->sync = true;
  } else {
    cid->chan = lid->chan;
  }
  cid->id.channel = &cid->chan->ch;
  cid->id.context = lid->id.context;
  cid->id.ps = lid->id.ps;
  cid->id.qp_type = IBV_QPT_RC;
  cid->core = std::make_shared<Core>();
  Core &c = *cid->core;
  c.owner = cid;
  if (!transition(c, St::ConnReq)) {
    if (cid->sync) channel_free(cid->chan);
    Id::free(cid);
    s->cancel();
    return;
  }
  c.mpa = s;
  c.tos = L->tos;
  boost::system::error_code ec;
  auto le = s->socket().local_endpoint(ec);
  auto re = s->socket().remote_endpoint(ec);
  const tcp::endpoint ls = unmapped(le), rs = unmapped(re);
  set_src(cid, ls);
  set_dst(cid, rs);
  Device *d = serving_device(ls);
  if (!d)
    ECA_LOG(Warn, "rdma_cm: no device for local address %s", ls.address().to_string().c_str());
  set_device(cid, dev_entry(d));
  const mpa::Frame &req = s->peer();
  if (req.rev == 2) {
    c.def_ord = std::min<uint16_t>(req.ird, kMaxIrdOrd);  // we may not exceed their IRD
    c.def_ird = std::min<uint16_t>(req.ord, kMaxIrdOrd);  // they want this many READs
  }
  Event *e = make_event(lid, cid, RDMA_CM_EVENT_CONNECT_REQUEST, 0);
  e->ev.listen_id = &lid->id;
  e->child = cid;
  set_conn(e, req.pdata, c.def_ird, c.def_ord);
  lid->reqs_queued++;
  push(e);
}

void accept_next(const std::shared_ptr<Core> &L);

static void accept_retry(const std::shared_ptr<Core> &L) {
  L->timer = std::make_unique<asio::steady_timer>(io());
  L->timer->expires_after(std::chrono::milliseconds(100));
  L->timer->async_wait([L](const boost::system::error_code &e) {
    if (!e && L->owner && L->acceptor) accept_next(L);
  });
}

constexpr size_t kMaxInflight = 1024;

void accept_next(const std::shared_ptr<Core> &L) {
  L->acceptor->async_accept(io(), [L](const boost::system::error_code &ec, tcp::socket s) {
    if (!L->owner || !L->acceptor) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      ECA_LOG(Warn, "rdma_cm: accept: %s", ec.message().c_str());
      return accept_retry(L);
    }
    if (L->inflight.size() >= kMaxInflight) {
      ECA_LOG(Warn, "rdma_cm: too many connections in MPA setup; dropping one");
      boost::system::error_code ig;
      s.close(ig);
      return accept_next(L);
    }
    auto sess = MpaSession::create(std::move(s));
    L->inflight.insert(sess);
    std::weak_ptr<MpaSession> ws = sess;
    sess->start_responder([L, ws](MpaOutcome o) {
      auto s2 = ws.lock();
      if (!s2) return;
      L->inflight.erase(s2);
      if (!L->owner) return s2->cancel();
      if (o.status == MpaStatus::Ok && L->owner->reqs_queued.load() >= L->backlog) {
        // Beyond the backlog: an MPA reject (the peer sees REJECTED), written in the
        // background under the session's timer.
        ECA_LOG(Info, "rdma_cm: listen backlog %d full; connection request rejected",
                L->backlog);
        return s2->reject({});
      }
      if (o.status != MpaStatus::Ok) {
        ECA_LOG(Info, "rdma_cm: incoming connection dropped: %s",
                connect::mpa_status_str(o.status));
        return;
      }
      new_request(L, s2);
    });
    accept_next(L);
  });
}

void set_qp(Core &c, Qp *qp) {
  c.qp = qp;
  c.qp_ctx = qp ? qp->ctx : nullptr;
  c.qp_qpn = qp ? qp->qpn : 0;
}

// The application may have destroyed the QP with ibv_destroy_qp (not rdma_destroy_qp) before
// rdma_destroy_id; touch c.qp only if the verbs layer still knows it.
static bool qp_alive(const Core &c) {
  if (!c.qp) return false;
  return eca::qp_lookup(c.qp_ctx, c.qp_qpn) == c.qp;
}

ToDisconnect teardown(Core &c) {
  c.owner = nullptr;
  boost::system::error_code ig;
  if (c.mpa) {
    c.mpa->cancel();
    c.mpa.reset();
  }
  for (auto &s : c.inflight) s->cancel();
  c.inflight.clear();
  if (c.acceptor) {
    c.acceptor->close(ig);
    c.acceptor.reset();
  }
  if (c.timer) c.timer->cancel();
  if (c.sock) {
    c.sock->close(ig);
    c.sock.reset();
  }
  if (c.bfd >= 0) {
    ::close(c.bfd);
    c.bfd = -1;
  }
  c.llp.reset();  // closes its stream
  resv_release(c);
  // The QP's hook holds only a weak reference to this core, so leaving it set is harmless;
  // it is cleared (and a live connection taken down) only when the QP is known to exist.
  ToDisconnect out;
  if (qp_alive(c)) {
    {
      // Only this core's own connection: the QP may be on another id's connection by now.
      std::lock_guard g(c.qp->engine_mu);
      if (c.qp_gen && c.qp->conn_gen.load() == c.qp_gen) c.qp->on_llp_end = nullptr;
    }
    if (c.st == St::Established || c.st == St::Disconnecting) out = {c.qp, c.qp_gen};
  }
  c.qp = nullptr;
  return out;
}

}  // namespace eca::cm

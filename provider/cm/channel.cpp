// rdma_cm event channels: a FIFO of events per channel and a pipe that is readable exactly
// while the FIFO is non-empty; delivery (rdma_get_cm_event), acks, and the synchronous ids'
// wait for their own events (complete).
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "provider/cm/cm_internal.hpp"

namespace eca::cm {

Channel *chan_of(rdma_event_channel *c) { return reinterpret_cast<Channel *>(c); }

// ---------------------------------------------------------------------------------------------
// Events

void chan_drain_locked(Channel *c) {
  ECA_ASSERT_HELD(c->mu);
  char b;
  (void)!::read(c->ch.fd, &b, 1);
}

// Queues an event on its owner's channel (progress thread).
void push(Event *e) {
  Channel *c = e->owner->chan;
  std::lock_guard g(c->mu);
  bool was_empty = c->q.empty();
  c->q.push_back(e);
  if (was_empty) {
    char b = 1;
    (void)!::write(c->wfd, &b, 1);
  }
}

Event *make_event(Id *owner, Id *id, rdma_cm_event_type t, int status) {
  auto *e = new Event;
  e->owner = owner;
  e->ev.id = &id->id;
  e->ev.event = t;
  e->ev.status = status;
  return e;
}

void set_conn(Event *e, const std::vector<uint8_t> &pd, uint16_t resp_res, uint16_t init_depth) {
  size_t n = std::min<size_t>(pd.size(), 255);  // private_data_len is 8 bits in the ABI
  if (pd.size() > 255)
    ECA_LOG(Info, "rdma_cm: peer private data of %zu bytes truncated to 255 for the event",
            pd.size());
  if (n) {
    std::memcpy(e->pdata, pd.data(), n);
    e->ev.param.conn.private_data = e->pdata;
  }
  e->ev.param.conn.private_data_len = uint8_t(n);
  e->ev.param.conn.responder_resources = uint8_t(std::min<uint16_t>(resp_res, 255));
  e->ev.param.conn.initiator_depth = uint8_t(std::min<uint16_t>(init_depth, 255));
}

void push_simple(Core &c, rdma_cm_event_type t, int status) {
  push(make_event(c.owner, c.owner, t, status));
}

void push_conn(Core &c, rdma_cm_event_type t, int status, const std::vector<uint8_t> &pd) {
  Event *e = make_event(c.owner, c.owner, t, status);
  set_conn(e, pd, c.ird, c.ord);
  push(e);
}

int channel_new(Channel **out) {
  auto *c = new Channel;
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) {
    int e = errno;
    delete c;
    return e;
  }
  ::fcntl(p[1], F_SETFL, ::fcntl(p[1], F_GETFL) | O_NONBLOCK);
  c->ch.fd = p[0];
  c->wfd = p[1];
  *out = c;
  return 0;
}

void channel_free(Channel *c) {
  {
    std::lock_guard g(c->mu);
    for (Event *e : c->q) delete e;
    c->q.clear();
  }
  ::close(c->ch.fd);
  ::close(c->wfd);
  delete c;
}

// librdmacm's ucma_complete: a synchronous id waits for the event its call produces.
int complete(Id *id) {
  if (!id->sync) return 0;
  if (id->id.event) {
    ack_cm_event(id->id.event);
    id->id.event = nullptr;
  }
  rdma_cm_event *ev = nullptr;
  for (;;) {
    int r = get_cm_event(&id->chan->ch, &ev);
    if (r == EINTR) continue;
    if (r) return r;
    break;
  }
  id->id.event = ev;
  if (ev->status) {
    if (ev->event == RDMA_CM_EVENT_REJECTED) return ECONNREFUSED;
    return ev->status < 0 ? -ev->status : ev->status;
  }
  return 0;
}

// Events of `id` still queued (not delivered) on its channel.
bool has_queued(Id *id) {
  std::lock_guard g(id->chan->mu);
  for (Event *e : id->chan->q)
    if (e->owner == id) return true;
  return false;
}

// Removes the undelivered events owned by `id`; returns the new ids of purged requests.
std::vector<Id *> purge(Id *id) {
  std::vector<Id *> children;
  Channel *c = id->chan;
  std::lock_guard g(c->mu);
  bool had = !c->q.empty();
  for (auto it = c->q.begin(); it != c->q.end();) {
    if ((*it)->owner == id) {
      if ((*it)->child) children.push_back((*it)->child);
      delete *it;
      it = c->q.erase(it);
    } else {
      ++it;
    }
  }
  if (had && c->q.empty()) chan_drain_locked(c);
  return children;
}

// =============================================================================================
// Channels

int channel_create(rdma_event_channel **out) {
  if (!out) return EINVAL;
  Channel *c = nullptr;
  int r = channel_new(&c);
  if (r) return r;
  *out = &c->ch;
  return 0;
}

int channel_destroy(rdma_event_channel *ch) {
  if (!ch) return EINVAL;
  channel_free(chan_of(ch));
  return 0;
}

int get_cm_event(rdma_event_channel *ech, rdma_cm_event **out) {
  if (!ech || !out) return EINVAL;
  Channel *c = chan_of(ech);
  for (;;) {
    {
      std::lock_guard g(c->mu);
      if (!c->q.empty()) {
        Event *e = c->q.front();
        c->q.pop_front();
        if (c->q.empty()) chan_drain_locked(c);
        {
          std::lock_guard g2(e->owner->mu);
          e->owner->delivered++;
        }
        if (e->ev.event == RDMA_CM_EVENT_CONNECT_REQUEST) e->owner->reqs_queued--;
        *out = &e->ev;
        return 0;
      }
    }
    int fl = ::fcntl(c->ch.fd, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK)) return EAGAIN;
    pollfd p{c->ch.fd, POLLIN, 0};
    if (::poll(&p, 1, -1) < 0 && errno == EINTR) return EINTR;
  }
}

int ack_cm_event(rdma_cm_event *ev) {
  if (!ev) return EINVAL;
  Event *e = reinterpret_cast<Event *>(ev);
  Id *o = e->owner;
  {
    std::lock_guard g(o->mu);
    o->acked++;
    o->cv.notify_all();
  }
  delete e;
  return 0;
}

const char *event_str(rdma_cm_event_type t) {
  switch (t) {
    case RDMA_CM_EVENT_ADDR_RESOLVED: return "RDMA_CM_EVENT_ADDR_RESOLVED";
    case RDMA_CM_EVENT_ADDR_ERROR: return "RDMA_CM_EVENT_ADDR_ERROR";
    case RDMA_CM_EVENT_ROUTE_RESOLVED: return "RDMA_CM_EVENT_ROUTE_RESOLVED";
    case RDMA_CM_EVENT_ROUTE_ERROR: return "RDMA_CM_EVENT_ROUTE_ERROR";
    case RDMA_CM_EVENT_CONNECT_REQUEST: return "RDMA_CM_EVENT_CONNECT_REQUEST";
    case RDMA_CM_EVENT_CONNECT_RESPONSE: return "RDMA_CM_EVENT_CONNECT_RESPONSE";
    case RDMA_CM_EVENT_CONNECT_ERROR: return "RDMA_CM_EVENT_CONNECT_ERROR";
    case RDMA_CM_EVENT_UNREACHABLE: return "RDMA_CM_EVENT_UNREACHABLE";
    case RDMA_CM_EVENT_REJECTED: return "RDMA_CM_EVENT_REJECTED";
    case RDMA_CM_EVENT_ESTABLISHED: return "RDMA_CM_EVENT_ESTABLISHED";
    case RDMA_CM_EVENT_DISCONNECTED: return "RDMA_CM_EVENT_DISCONNECTED";
    case RDMA_CM_EVENT_DEVICE_REMOVAL: return "RDMA_CM_EVENT_DEVICE_REMOVAL";
    case RDMA_CM_EVENT_MULTICAST_JOIN: return "RDMA_CM_EVENT_MULTICAST_JOIN";
    case RDMA_CM_EVENT_MULTICAST_ERROR: return "RDMA_CM_EVENT_MULTICAST_ERROR";
    case RDMA_CM_EVENT_ADDR_CHANGE: return "RDMA_CM_EVENT_ADDR_CHANGE";
    case RDMA_CM_EVENT_TIMEWAIT_EXIT: return "RDMA_CM_EVENT_TIMEWAIT_EXIT";
  }
  return "UNKNOWN EVENT";
}

}  // namespace eca::cm

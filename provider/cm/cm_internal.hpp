// rdma_cm internals shared by the files of provider/cm/ (see cm.hpp for the model):
//   cm_internal.hpp  the objects below, the progress-thread helpers (run, io)
//   channel.cpp      event channels: queueing, delivery, acks, complete/has_queued, purge
//   addr.cpp         device cache, addresses, port reservations, binding, address/route
//                    resolution
//   conn.cpp         the connection state machine (St, its transition table), plumbing to the
//                    QP, initiator/responder/accept paths, teardown
//   cm.cpp           ids and the connection calls (create_id .. set_connect_data)
//   getaddrinfo.cpp  rdma_getaddrinfo
//
// Objects:
//   Channel - an rdma_event_channel: a FIFO of events plus a pipe whose read end is the
//             channel fd. The pipe holds one byte exactly while the FIFO is non-empty (both
//             changed under Channel::mu), so poll() on the fd is truthful and a non-blocking
//             fd makes rdma_get_cm_event fail with EAGAIN.
//   Id      - an rdma_cm_id (first member) plus what application threads touch: the channel,
//             delivered/acked event counts (rdma_destroy_id waits for the acks of delivered
//             events, like librdmacm), rdma_create_ep state.
//   Core    - the connection state of one id, owned by the progress thread (every access is
//             on it). Asynchronous handlers hold a shared_ptr<Core>; Core::owner becomes null
//             when the id is destroyed, and handlers then do nothing.
//   Event   - an rdma_cm_event (first member) with storage for its private data. Events are
//             accounted to their owner id: the id itself, or the listening id for a
//             CONNECT_REQUEST (as in librdmacm).
#pragma once

#include "provider/cm/cm.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <sys/socket.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <type_traits>
#include <vector>

#include "connect/mpa_cm.hpp"
#include "provider/core/llp.hpp"
#include "provider/core/log.hpp"
#include "provider/core/mutex.hpp"
#include "provider/core/objects.hpp"
#include "runtime/progress.hpp"

namespace eca::cm {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
namespace mpa = eca::wire::mpa;
using connect::MpaOutcome;
using connect::MpaParams;
using connect::MpaSession;
using connect::MpaStatus;
using runtime::Progress;

struct Id;
struct Core;

struct Event {
  rdma_cm_event ev{};  // first
  Id *owner = nullptr;
  Id *child = nullptr;  // CONNECT_REQUEST: the new id (destroyed with the event if undelivered)
  uint8_t pdata[mpa::kMaxPrivateData]{};
};
static_assert(std::is_standard_layout_v<Event> && offsetof(Event, ev) == 0);  // ack_cm_event

struct Channel {
  rdma_event_channel ch{};  // first; ch.fd = read end of the pipe
  int wfd = -1;
  Mutex mu;  // q
  std::deque<Event *> q;
};
static_assert(std::is_standard_layout_v<Channel> && offsetof(Channel, ch) == 0);  // chan_of

enum class St : uint8_t {
  Idle,
  Bound,
  AddrResolved,
  RouteResolved,
  Connecting,    // TCP connect + MPA request/reply
  ConnResponse,  // active, MPA done, no QP yet: waiting for rdma_establish
  Listen,
  ConnReq,       // passive, MPA request received, waiting for accept/reject
  Accepting,     // passive, reply being written
  Established,
  Disconnecting,
  Disconnected,
  Failed,        // connection attempt over (rejected, error); only destroy is useful
};

// St runs from 0 to Failed: a new state goes before Failed (and into conn.cpp's kNext).
constexpr size_t kStates = static_cast<size_t>(St::Failed) + 1;

// The state's name for logs.
const char *st_name(St s);
// Whether the transition table (conn.cpp, kNext) lets a connection go from `from` to `to`.
bool transition_allowed(St from, St to);

// Checked builds (Debug and sanitizer builds: ECA_LOCK_CHECKS, see CMakeLists.txt) stop at a
// transition the table does not list. The library users run (RelWithDebInfo) never stops the
// application for it: the move is logged and refused.
#if ECA_LOCK_CHECKS
inline constexpr bool kCheckTransitions = true;
#else
inline constexpr bool kCheckTransitions = false;
#endif

// Every state change of a Core goes through here (progress thread). A move the table does not
// list is logged (Error) and, in checked builds, aborts; otherwise the state stays
// as it was and false lets the caller fail cleanly (an API call returns EINVAL, an
// asynchronous path ends the attempt with CONNECT_ERROR).
bool transition(Core &c, St to);

struct Core : std::enable_shared_from_this<Core> {
  Id *owner = nullptr;  // null once the id is destroyed
  St st = St::Idle;
  int bfd = -1;  // bound (port-reserving) TCP socket, until it connects or listens
  std::optional<tcp::socket> sock;  // connecting socket
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<asio::steady_timer> timer;
  bool timed_out = false;
  std::shared_ptr<MpaSession> mpa;
  std::set<std::shared_ptr<MpaSession>> inflight;  // listener: handshakes before an id exists
  std::optional<LlpConnection> llp;                // ConnResponse: stream awaiting a QP
  Qp *qp = nullptr;          // the QP the connection is for (application-owned)
  Context *qp_ctx = nullptr;  // ... and how to find it again (liveness check, see qp_alive)
  uint32_t qp_qpn = 0;
  uint64_t qp_gen = 0;        // the QP's connection number once attached (Qp::conn_gen)
  uint32_t qp_num = 0;  // conn_param->qp_num given to rdma_connect
  uint16_t ird = 0, ord = 0;  // negotiated
  uint16_t def_ird = kMaxIrdOrd, def_ord = kMaxIrdOrd;  // passive defaults (from the request)
  bool disc_delivered = false;
  int tos = -1;
  bool reuseaddr = false;
  bool afonly = false;
  bool reserved = false;
  int backlog = 0;  // listener: pending connection requests allowed (rdma_listen)
  asio::ip::address resv_addr;  // address of the reservation (and of bfd's family)
  uint16_t resv_port = 0;
};

struct Id {
  rdma_cm_id id{};  // first
  Channel *chan = nullptr;
  bool sync = false;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t delivered = 0, acked = 0;
  // Listener: CONNECT_REQUEST events queued but not yet taken by rdma_get_cm_event (the
  // requests the backlog bounds, as the kernel's ucma counts them).
  std::atomic<int> reqs_queued{0};
  std::shared_ptr<Core> core;
  std::optional<ibv_qp_init_attr> ep_attr;
  std::vector<uint8_t> connect_data;
  static Id *from(rdma_cm_id *i) { return reinterpret_cast<Id *>(i); }
  // The Id behind `i` if the application holds it (created and not yet destroyed), else
  // null. Every rdma_* call on an id goes through this, so a call on an id the application
  // already destroyed gets EINVAL instead of touching freed memory; memory reused for a new
  // id is that new id, as with rdma-core.
  static Id *live(rdma_cm_id *i);
  static Id *make();
  static void free(Id *id);
};
static_assert(std::is_standard_layout_v<Id> && offsetof(Id, id) == 0);  // Id::from

// Runs f on the progress thread and returns its result; a system error thrown by Boost.Asio
// (out of descriptors: EMFILE) becomes its errno, other exceptions EIO.
template <typename F>
int run(F &&f) {
  int r = 0;
  Progress::instance().run_sync([&] {
    try {
      r = f();
    } catch (const boost::system::system_error &e) {
      ECA_LOG(Warn, "rdma_cm: %s", e.what());
      r = e.code().value() > 0 ? e.code().value() : EIO;
    } catch (const std::exception &e) {
      ECA_LOG(Error, "rdma_cm: unexpected exception: %s", e.what());
      r = EIO;
    } catch (...) {
      r = EIO;
    }
  });
  return r;
}

inline asio::io_context &io() { return Progress::instance().io(); }

// ---- channel.cpp (events; progress thread unless stated)
Channel *chan_of(rdma_event_channel *c);
// Channel::mu held.
void chan_drain_locked(Channel *c);
void push(Event *e);
Event *make_event(Id *owner, Id *id, rdma_cm_event_type t, int status);
void set_conn(Event *e, const std::vector<uint8_t> &pd, uint16_t resp_res, uint16_t init_depth);
void push_simple(Core &c, rdma_cm_event_type t, int status);
void push_conn(Core &c, rdma_cm_event_type t, int status, const std::vector<uint8_t> &pd);
int channel_new(Channel **out);
void channel_free(Channel *c);
// Application thread: a synchronous id waits for the event its call produced.
int complete(Id *id);
bool has_queued(Id *id);
std::vector<Id *> purge(Id *id);

// ---- addr.cpp (devices: any thread; reservations and binding: progress thread)
struct DevEntry {
  Device *dev = nullptr;
  Context *ctx = nullptr;
  ibv_pd *pd = nullptr;
};
DevEntry *dev_entry(Device *d);
void set_device(Id *id, DevEntry *e);
tcp::endpoint unmapped(const tcp::endpoint &e);
int to_ep(const sockaddr *a, tcp::endpoint *out);
bool src_ep(const Id *id, tcp::endpoint *out);
void set_src(Id *id, const tcp::endpoint &e);
void set_dst(Id *id, const tcp::endpoint &e);
tcp protocol_of(const asio::ip::address &a);
void set_tos(int fd, const tcp &proto, int tos);
Device *serving_device(const tcp::endpoint &e);
void resv_release(Core &c);
int bind_socket(Core &c, const tcp::endpoint &want, tcp::endpoint *got);

// ---- conn.cpp (progress thread)
bool mark_disconnected(Core &c);
void set_hook(Qp *qp, std::function<void(LlpEnd)> f);
bool attach(Core &c, LlpConnection &&llp);
void fail_conn(Core &c, rdma_cm_event_type t, int err, const std::vector<uint8_t> &pd = {});
void start_connect(const std::shared_ptr<Core> &cp, const tcp::endpoint &dst, MpaParams p);
void on_responder_done(const std::shared_ptr<Core> &cp, MpaOutcome o);
void accept_next(const std::shared_ptr<Core> &L);
void set_qp(Core &c, Qp *qp);

// A connection to take down, named by its QP and the QP's connection number.
struct ToDisconnect {
  Qp *qp = nullptr;
  uint64_t gen = 0;
  void operator()() const {
    if (qp) qp->disconnect(gen);
  }
};

// Stops everything of a core (progress thread). Returns the connection to take down, if any.
ToDisconnect teardown(Core &c);

}  // namespace eca::cm

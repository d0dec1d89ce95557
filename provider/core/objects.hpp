// The verbs objects of one process: devices, contexts, PDs, MRs, CQs, QPs, SRQs.
//
// Every object embeds the public rdma-core struct it stands for as its FIRST member, so the
// pointer an application holds (ibv_qp*, ibv_cq*, ...) converts to ours with a cast, and the
// inline verbs of verbs.h (ibv_post_send, ibv_poll_cq, verbs_get_ctx_op, ...) work unchanged.
//
// Error convention inside: functions return 0 or a positive errno. The extern "C" layer
// (provider/verbs_api.cpp) translates to each verb's man-page convention.
//
// Lock order: the numbered list in docs/architecture.md ("Lock order") names every mutex.
// The device layer (QpEngine) calls back into Qp only without holding its own locks that a
// poster could need.
#pragma once

#include <infiniband/verbs.h>
#include <netinet/in.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <pthread.h>
#include <shared_mutex>
#include <thread>
#include <string>
#include <type_traits>
#include <vector>

#include "provider/core/mutex.hpp"

namespace eca {

class Backend;
class QpEngine;
struct Context;
struct Pd;
struct Cq;
struct Qp;
struct Srq;

// ---------------------------------------------------------------------------------------------
// Device limits (truthful: the implementation enforces exactly these).
inline constexpr uint32_t kMaxSge = 8;
inline constexpr uint32_t kMaxInline = 256;
inline constexpr uint32_t kMaxQpWr = 16384;
inline constexpr uint32_t kMaxCqe = 1u << 20;
inline constexpr uint32_t kMaxSrqWr = 16384;
inline constexpr uint32_t kMaxIrdOrd = 128;
inline constexpr uint32_t kMaxQp = 16384;
inline constexpr uint32_t kMaxCq = 16384;
inline constexpr uint32_t kMaxMr = 1u << 20;  // 24-bit index space, bounded by this
inline constexpr uint32_t kMaxPd = 16384;
inline constexpr uint32_t kMaxSrq = 16384;
inline constexpr uint64_t kMaxMsgSize = 1ull << 31;  // 2 GiB
inline constexpr uint64_t kMaxMrSize = ~0ull;

// Layout-compatible with rdma-core 44's struct verbs_device (libibverbs/driver.h, not an
// installed header). libefa/libmlx5 compare ->ops with their own tables to recognise devices.
struct VerbsDeviceAbi {
  ibv_device device;
  const void *ops;
  int refcount;
  struct {
    void *next, *prev;
  } entry;
  void *sysfs;
  uint64_t core_support;
};
static_assert(offsetof(VerbsDeviceAbi, ops) == sizeof(ibv_device));

struct Device {
  VerbsDeviceAbi vdev;  // must be first
  std::string ifname;
  unsigned ifindex = 0;
  // Every IP address of the interface at enumeration, IPv4 as IPv4-mapped IPv6 (getifaddrs
  // order: IPv4 first). Link-local IPv6 addresses are scoped to `ifindex`.
  std::vector<in6_addr> addrs;
  std::array<uint8_t, 6> mac{};
  uint32_t netdev_mtu = 1500;
  uint64_t guid = 0;  // network byte order, as ibv_get_device_guid returns it
  Backend *backend = nullptr;
  bool loopback = false;

  static Device *from(ibv_device *d) { return reinterpret_cast<Device *>(d); }
  ibv_device *ibv() { return &vdev.device; }
  // The GID table of port 1: index 0 the MAC-based GID (as siw; an interface without a MAC
  // has none), then one GID per IP address (`addrs`).
  std::vector<ibv_gid> gids() const;
};

// Devices of the configured backend, one per interface that is up and has an IPv4 or IPv6
// address. Enumerated once per process; never freed (like rdma-core's device list).
const std::vector<Device *> &devices();
// The device whose interface holds `addr` (IPv4 as IPv4-mapped IPv6); 127.0.0.0/8 and ::1
// map to loopback. A link-local address matches only the interface `scope` names (0: any).
Device *device_for_ip(const in6_addr &addr, uint32_t scope);
// `a` as an IPv6 address (IPv4 as IPv4-mapped) and its scope id; false unless AF_INET/AF_INET6.
bool ip_of(const sockaddr *a, in6_addr *out, uint32_t *scope);

// ---------------------------------------------------------------------------------------------
struct Context {
  // rdma-core reaches the ops through ibv_context; the extended ops sit in front of it.
  verbs_context vctx;  // vctx.context must be last inside verbs_context: it is
  Device *dev = nullptr;
  int async_wfd = -1;  // write end of the async event pipe; read end is context.async_fd
  std::mutex async_mu;

  static Context *from(ibv_context *c) {
    return reinterpret_cast<Context *>(reinterpret_cast<char *>(c) -
                                       offsetof(Context, vctx.context));
  }
  ibv_context *ibv() { return &vctx.context; }
  void post_async(const ibv_async_event &ev);
};

int context_open(Device *dev, Context **out);
int context_close(Context *ctx);

// ---------------------------------------------------------------------------------------------
struct Pd {
  ibv_pd ibpd;  // first
  Context *ctx = nullptr;
  std::atomic<int> users{0};
  static Pd *from(ibv_pd *p) { return reinterpret_cast<Pd *>(p); }
};

struct Mr {
  ibv_mr ibmr;  // first
  Pd *pd = nullptr;
  uint64_t iova = 0;
  uint8_t *addr = nullptr;  // host address backing iova
  size_t length = 0;
  int access = 0;
  std::atomic<bool> valid{true};  // cleared by a remote SEND with Invalidate
  // Only memory windows and fast-registered MRs may be invalidated remotely (RFC 5040 6.10,
  // verbs): registered MRs answer a SEND with Invalidate with a TERMINATE; type 2 windows
  // (provider/core/mw.cpp) may be invalidated.
  bool invalidatable = false;
  // Memory windows (provider/core/mw.cpp): a bound window is an STag-table entry of its own
  // (pd = the window's PD) over part of `parent`'s memory; remote access only. Null for MRs.
  std::shared_ptr<Mr> parent;
  uint32_t window_qpn = 0;  // type 2: remote access and invalidation only through this QP
  // MR: windows bound to it; ibv_dereg_mr fails while any is (IBA 10.6.7.2.6, as rxe).
  int windows = 0;           // guarded by the window lock (mw.cpp)
  bool deregistering = false;  // guarded by the window lock: no new binds
  // Accesses in flight (low bits) and "deregistering" (kMrDead), in one word: see MrUse.
  std::atomic<uint32_t> touch{0};
  static Mr *from(ibv_mr *m) { return reinterpret_cast<Mr *>(m); }
};
inline constexpr uint32_t kMrDead = 1u << 31;

enum class AccessError : uint8_t { None, InvalidStag, ProtDomain, Access, Bounds };

// Validate [addr, addr+len) with access `need` (IBV_ACCESS_* bits; 0 = local read) on the MR
// named by `key`, for a QP in `pd`. On success sets *host to the host address of addr and
// returns a reference that keeps the MR alive while data is placed.
struct MrRef {
  std::shared_ptr<Mr> mr;
  uint8_t *host = nullptr;
};
// `qpn`: the QP the access arrives on (remote accesses; a type 2 window checks it).
AccessError mr_lookup(uint32_t key, const Pd *pd, uint64_t addr, uint64_t len, int need,
                      MrRef *out, uint32_t qpn = 0);

// The memory of MRs may be read or written only while an MrUse holds them: around the access
// itself (one readv/sendmsg/memcpy/CRC pass), never across waits. An MrRef keeps the Mr object
// alive; an MrUse keeps its memory registered. ibv_dereg_mr marks the MR kMrDead and returns
// once no MrUse holds it; entering fails from then on, and the caller treats the MR as gone
// (the software transport ends the stream). Any thread; lock-free; no lock may be needed by
// a waiting deregistration while an MrUse is held.
class MrUse {
 public:
  MrUse() = default;
  MrUse(const MrUse &) = delete;
  MrUse &operator=(const MrUse &) = delete;
  ~MrUse() { leave(); }
  // All-or-nothing per call; false if one MR is being deregistered (nothing more held).
  bool enter(const MrRef &r) { return enter(&r, 1); }
  bool enter(const std::vector<MrRef> &v) { return enter(v.data(), v.size()); }
  bool enter(const MrRef *refs, size_t n);
  void leave();  // releases everything held

 private:
  std::array<Mr *, kMaxSge + 2> held_{};
  size_t n_ = 0;
};

// The same check without keeping the MR alive: for placement that completes before the
// calling verb returns (the application may not deregister memory in use by its own call).
AccessError mr_check(uint32_t key, const Pd *pd, uint64_t addr, uint64_t len, int need,
                     uint8_t **host);
int mr_register(Pd *pd, void *addr, size_t len, uint64_t iova, int access, Mr **out);
int mr_deregister(Mr *mr);
bool mr_invalidate(uint32_t key, const Pd *pd, uint32_t qpn = 0);

// ---------------------------------------------------------------------------------------------
struct CompChannel {
  ibv_comp_channel ch;  // first; ch.fd is the read end of a pipe
  int wfd = -1;
  static CompChannel *from(ibv_comp_channel *c) { return reinterpret_cast<CompChannel *>(c); }
};

struct Cq {
  ibv_cq_ex cqx;  // first (its leading fields are struct ibv_cq)
  Context *ctx = nullptr;
  CompChannel *channel = nullptr;
  std::mutex mu;
  std::vector<ibv_wc> ring;  // capacity = ring.size()
  uint32_t head = 0, count = 0;
  // `count` as of the last push or poll (stored under mu): an empty poll reads it without
  // taking mu, so a busy poller does not contend with the thread that pushes completions.
  std::atomic<uint32_t> ready{0};
  enum class Arm : uint8_t { None, Next, Solicited } armed = Arm::None;
  bool overflowed = false;
  std::atomic<int> users{0};
  uint32_t events_delivered = 0;
  // Interrupt moderation (ibv_modify_cq IBV_CQ_ATTR_MODERATE): the completion event of an
  // armed CQ waits for `mod_count` completions or `mod_period_us`, whichever comes first.
  uint16_t mod_count = 0;
  uint16_t mod_period_us = 0;
  uint32_t mod_pending = 0;
  struct ModTimer;
  std::shared_ptr<ModTimer> mod_timer;
  // ibv_cq_ex polling cursor (valid between start_poll and end_poll)
  ibv_wc cur{};
  // QPs whose completions land here; an empty poll lets them make progress (transmit, and
  // receive in the polling thread). Pollers hold hooks_rw shared, and only try it: a poll
  // never blocks, and a waiting remove_hook() (writer preferred) is not starved by pollers.
  // remove_hook() returns when no poller is inside that QP any more.
  struct HookLock {
    pthread_rwlock_t rw;
    HookLock();
    ~HookLock() { pthread_rwlock_destroy(&rw); }
  } hooks_rw;
  std::vector<Qp *> hooks;  // each QP once (hooks_rw)
  std::atomic<int> nhooks{0};
  void add_hook(Qp *qp);  // idempotent
  void remove_hook(Qp *qp);
  bool is_armed();

  static Cq *from(ibv_cq *c) { return reinterpret_cast<Cq *>(c); }
  static Cq *from(ibv_cq_ex *c) { return reinterpret_cast<Cq *>(c); }
  ibv_cq *ibv() { return ibv_cq_ex_to_cq(&cqx); }

  // Adds one completion. `solicited` wakes a Solicited-armed channel. On overflow the CQ is
  // marked broken and IBV_EVENT_CQ_ERR is raised; returns false.
  bool push(const ibv_wc &wc, bool solicited);
  int poll(int n, ibv_wc *out);
  // ibv_destroy_qp: removes the completions of QP `qpn` not yet polled (keeping receive
  // completions of SRQ WQEs when `keep_srq_recv`: their buffers belong to the SRQ).
  void purge_qp(uint32_t qpn, bool keep_srq_recv);
  int set_moderation(uint16_t count, uint16_t period_us);
  void notify_channel();  // writes the event (mu not held)
};

int cq_create(Context *ctx, int cqe, CompChannel *ch, int comp_vector, uint64_t wc_flags,
              Cq **out);
int cq_destroy(Cq *cq);

// ---------------------------------------------------------------------------------------------
// Work queue entries: a private copy of what the application posted.
struct Sge {
  uint64_t addr;
  uint32_t length;
  uint32_t lkey;
};

enum class WqeState : uint8_t { Posted, InProgress, AwaitResponse, Done };

struct SendWqe {
  uint64_t wr_id = 0;
  ibv_wr_opcode opcode = IBV_WR_SEND;
  uint32_t flags = 0;  // IBV_SEND_*
  uint32_t num_sge = 0;
  uint32_t inline_len = 0;
  uint64_t total_len = 0;
  uint64_t remote_addr = 0;
  uint32_t rkey = 0;
  uint32_t invalidate_rkey = 0;  // SEND_WITH_INV, LOCAL_INV
  __be32 imm_data = 0;
  uint64_t compare_add = 0;  // atomics: FetchAdd's addend / CmpSwap's compare value
  uint64_t swap = 0;         // CmpSwap's swap value
  // IBV_WR_BIND_MW / ibv_bind_mw (provider/core/mw.cpp): the window, the MR range it gets,
  // and (in rkey) its new STag.
  ibv_mw *mw = nullptr;
  ibv_mw_bind_info bind{};
  WqeState state = WqeState::Posted;
  ibv_wc_status status = IBV_WC_SUCCESS;
  std::array<Sge, kMaxSge> sge{};
  std::array<uint8_t, kMaxInline> inline_data{};
};

struct RecvWqe {
  uint64_t wr_id = 0;
  uint32_t num_sge = 0;
  std::array<Sge, kMaxSge> sge{};
  // Copies a posted receive (the caller checked num_sge).
  void assign(const ibv_recv_wr &wr) {
    wr_id = wr.wr_id;
    num_sge = (uint32_t)wr.num_sge;
    for (int i = 0; i < wr.num_sge; i++)
      sge[i] = {wr.sg_list[i].addr, wr.sg_list[i].length, wr.sg_list[i].lkey};
  }
};

// A fixed ring of WQEs. head: oldest not retired; tx: next not yet taken by the device;
// tail: next free slot. Indices grow without bound; slot = index & mask.
template <typename W>
struct WqRing {
  std::vector<W> slots;
  uint64_t mask = 0, head = 0, tx = 0, tail = 0;
  uint32_t max_wr = 0;
  void init(uint32_t max) {
    max_wr = max;
    uint64_t n = 1;
    while (n < max) n <<= 1;
    slots.assign(n, W{});
    mask = n - 1;
  }
  bool full() const { return tail - head >= max_wr; }
  W &at(uint64_t i) { return slots[i & mask]; }
};

// Two indices of a WqRing as last stored under the ring's lock, for a thread without the
// lock asking "is anything between them". A hint: a stale answer is harmless as long as the
// caller looks again under the lock before acting. publish() is a release and the loads in
// empty() acquire, so a reader that sees the new `to` also sees the WQE written before it.
struct RingWindow {
  std::atomic<uint64_t> from{0}, to{0};
  void publish(uint64_t f, uint64_t t) {
    from.store(f, std::memory_order_release);
    to.store(t, std::memory_order_release);
  }
  bool empty() const {
    return from.load(std::memory_order_acquire) == to.load(std::memory_order_acquire);
  }
};

struct Srq {
  ibv_srq ibsrq;  // first
  Context *ctx = nullptr;
  Pd *pd = nullptr;
  std::mutex mu;
  WqRing<RecvWqe> rq;
  uint32_t max_sge = 0;
  uint32_t limit = 0;  // armed limit (0 = disarmed)
  std::atomic<int> users{0};
  static Srq *from(ibv_srq *s) { return reinterpret_cast<Srq *>(s); }
  bool take(RecvWqe *out);  // pops the oldest receive, raising SRQ_LIMIT_REACHED if armed
};

int srq_create(Pd *pd, const ibv_srq_init_attr &attr, Srq **out);
int srq_destroy(Srq *srq);
int srq_post(Srq *srq, const ibv_recv_wr *wr, const ibv_recv_wr **bad);

// ---------------------------------------------------------------------------------------------
// Why a QP's connection ended, as the device layer reports it.
enum class LlpEnd : uint8_t {
  PeerClosed,       // orderly close by the peer (FIN) after or without rdma_disconnect
  LocalClosed,      // we closed it (rdma_disconnect, destroy)
  Reset,            // connection reset / I/O error: the peer died
  TerminateSent,    // we detected a protocol or access error and sent TERMINATE
  TerminateRecvd,   // the peer sent TERMINATE
};

struct Qp {
  ibv_qp_ex qpx;  // first; qpx.qp_base is the ibv_qp the application holds
  Context *ctx = nullptr;
  Pd *pd = nullptr;
  Cq *scq = nullptr, *rcq = nullptr;
  Srq *srq = nullptr;
  ibv_qp_cap cap{};
  bool sq_sig_all = false;
  bool has_qpx = false;  // created with send_ops_flags: ibv_qp_to_qp_ex works
  uint64_t send_ops_flags = 0;
  uint32_t qpn = 0;
  bool atomics = false;  // the device executes RFC 7306 atomics (atomic_cap != NONE)

  // iWARP connection attributes (set by rdma_cm before/at connection, read by the engines and
  // ibv_query_qp from other threads: atomics, relaxed; they carry no other data).
  std::atomic<uint32_t> ord{0};  // outstanding RDMA READs we may issue
  std::atomic<uint32_t> ird{0};  // inbound RDMA READs we accept
  std::atomic<ibv_qp_state> state{IBV_QPS_RESET};
  // An error completion was generated: from then on the QP reports ERR (ibv_query_qp,
  // ibv_modify_qp's current state) even before the device layer has moved `state` there.
  std::atomic<bool> err_completed{false};
  // Which connection the QP is on: a new number at every attach_engine() and at RESET. rdma_cm
  // remembers the number of the connection it made, so that destroying or disconnecting an id
  // after the application reset the QP (and perhaps connected it again through another id)
  // leaves the QP alone.
  std::atomic<uint64_t> conn_gen{0};
  ibv_qp_state visible_state() const {
    ibv_qp_state s = state.load();
    const bool live = s == IBV_QPS_RTS || s == IBV_QPS_SQD || s == IBV_QPS_SQE;
    return live && err_completed.load(std::memory_order_acquire) ? IBV_QPS_ERR : s;
  }

  Mutex sq_mu;
  WqRing<SendWqe> sq;
  // [sq.tx, sq.tail) as last published under sq_mu: lets the device see "nothing new"
  // without taking the lock.
  RingWindow sq_unsent;
  void publish_sq_locked() {
    ECA_ASSERT_HELD(sq_mu);
    sq_unsent.publish(sq.tx, sq.tail);
  }
  Mutex rq_mu;
  WqRing<RecvWqe> rq;
  // [rq.head, rq.tail) as last published under rq_mu: "a receive may be posted", for a
  // polling thread deciding whether to look at the socket.
  RingWindow rq_posted;
  void publish_rq_locked() {
    ECA_ASSERT_HELD(rq_mu);
    rq_posted.publish(rq.head, rq.tail);
  }
  bool rq_maybe_posted() const { return srq || !rq_posted.empty(); }

  // ibv_wr_* API: WQEs being built between wr_start and wr_complete
  std::vector<SendWqe> wr_batch;
  int wr_error = 0;

  // The engine and its lifetime. Application threads (post, poll, req_notify) and the
  // progress thread reach the engine without a lock, through EngineRef, which counts them in
  // engine_gate: bit 0 = closed (no engine, or one being detached), bits 1.. = threads inside.
  // detach_engine() closes the gate and waits until the count drains to zero before it hands
  // the engine out to be destroyed: an engine outlives every thread that entered it (see
  // EngineRef::enter for the argument). engine_swap_mu serialises attach and detach; the
  // drain runs without engine_mu, which threads inside the engine may need.
  std::unique_ptr<QpEngine> engine;  // null until connected (engine_mu)
  std::mutex engine_mu;              // `engine` and on_llp_end
  std::mutex engine_swap_mu;         // attach_engine / detach_engine
  static constexpr uint32_t kGateClosed = 1, kGateOne = 2;
  std::atomic<uint32_t> engine_gate{kGateClosed};
  std::atomic<QpEngine *> engine_fast{nullptr};  // stable while the gate admits a reader
  // rdma_cm's hook: called once (from the progress thread) when the connection ends.
  std::function<void(LlpEnd)> on_llp_end;

  static Qp *from(ibv_qp *q) { return reinterpret_cast<Qp *>(q); }
  static Qp *from(ibv_qp_ex *q) { return reinterpret_cast<Qp *>(q); }
  ibv_qp *ibv() { return &qpx.qp_base; }
  // ibv_qp::state, the field applications may read directly: written by the thread that
  // changes the state (often the progress thread) and by ibv_query_qp, so always atomically.
  static void set_public_state(ibv_qp *q, ibv_qp_state s) {
    std::atomic_ref<ibv_qp_state>(q->state).store(s, std::memory_order_relaxed);
  }
  void set_public_state(ibv_qp_state s) { set_public_state(ibv(), s); }

  // ---- used by the verbs layer
  int post_send(const ibv_send_wr *wr, const ibv_send_wr **bad);
  int post_recv(const ibv_recv_wr *wr, const ibv_recv_wr **bad);
  int modify(const ibv_qp_attr &attr, int mask);
  int query(ibv_qp_attr *attr, int mask, ibv_qp_init_attr *init);
  int enqueue_send(const SendWqe &w);  // validates and queues one WQE (sq_mu held by caller)

  // ---- used by rdma_cm
  // Gives the QP its data path and moves it to RTS. Returns the connection's number (conn_gen).
  uint64_t attach_engine(std::unique_ptr<QpEngine> e);
  // Graceful disconnect (rdma_disconnect) of connection `gen`: QP to ERROR, outstanding work
  // flushed. Nothing happens if the QP has been reset or connected again since.
  void disconnect(uint64_t gen);

  // ---- used by the device layer (QpEngine)
  // Takes the next posted send WQE for transmission; null if none. The pointer stays valid
  // until sq_done() for it.
  SendWqe *sq_take();
  // Records the outcome of a send WQE; retires finished WQEs in posting order, generating
  // completions for signaled (or failed) ones.
  void sq_done(SendWqe *w, ibv_wc_status st);
  // The stream failed because of the peer: the oldest unfinished send WQE completes with `st`
  // (the rest are flushed by enter_error()).
  void sq_fail_oldest(ibv_wc_status st);
  // Takes the next receive WQE (from the SRQ if attached). False if none is posted.
  bool rq_take(RecvWqe *out);
  // Completes a receive WQE taken with rq_take. With `imm`, an RFC 7306 Immediate Data
  // message consumed it (IBV_WC_RECV_RDMA_WITH_IMM).
  void rq_done(const RecvWqe &w, ibv_wc_status st, uint32_t byte_len, bool solicited,
               uint32_t invalidated_rkey, const __be32 *imm = nullptr);
  // The connection ended: QP to ERROR, flush, async event when fatal, tell rdma_cm.
  void llp_ended(LlpEnd why);
  // QP to ERROR and flush everything outstanding. Idempotent.
  void enter_error();
  // Closes the gate, waits for the threads inside the engine to leave and returns the engine
  // (null if none). The caller destroys it. No lock may be held that an engine call needs.
  std::unique_ptr<QpEngine> detach_engine();

 private:
  void flush_locked_sq();
  void flush_rq();
  void retire_locked(const SendWqe &w);  // completion for a retiring send WQE (sq_mu held)
};

// A counted use of a QP's engine: while it exists, the engine it names is not destroyed.
// Empty (false) when the QP has no engine or the engine is being detached.
//
// Why the engine stays alive (C++ memory model): every access to engine_gate is a
// read-modify-write except the readers' first, relaxed peek, so all of them lie in one
// modification order. A reader whose fetch_add returned the gate open precedes detach's
// fetch_or in that order; detach then waits until an acquire load reads a count of zero. That
// value is written by an RMW after the reader's release fetch_sub, in its release sequence
// (only RMWs follow), so the reader's use of the engine happens before the load, and so
// before the destruction. A reader whose fetch_add saw the gate closed touches nothing.
// attach_engine() stores engine_fast, then opens the gate with a release RMW; a reader's
// acquire fetch_add reads from its release sequence and sees the new engine. A reader that
// peeked at an open gate just before it closed does one counted no-op at most, so the drain
// is bounded by the number of threads, never starved by a stream of new readers.
class EngineRef {
 public:
  explicit EngineRef(Qp &qp) : qp_(&qp) {
    if (qp.engine_gate.load(std::memory_order_relaxed) & Qp::kGateClosed) return;
    if (qp.engine_gate.fetch_add(Qp::kGateOne, std::memory_order_acquire) & Qp::kGateClosed) {
      qp.engine_gate.fetch_sub(Qp::kGateOne, std::memory_order_release);
      return;
    }
    e_ = qp.engine_fast.load(std::memory_order_relaxed);
    counted_ = true;
  }
  ~EngineRef() {
    if (counted_) qp_->engine_gate.fetch_sub(Qp::kGateOne, std::memory_order_release);
  }
  EngineRef(const EngineRef &) = delete;
  EngineRef &operator=(const EngineRef &) = delete;
  explicit operator bool() const { return e_ != nullptr; }
  QpEngine *operator->() const { return e_; }

 private:
  Qp *qp_;
  QpEngine *e_ = nullptr;
  bool counted_ = false;
};

int qp_create(Context *ctx, const ibv_qp_init_attr_ex &attr, Qp **out);
int qp_destroy(Qp *qp);
void qp_ex_init(Qp *qp);  // fills the ibv_qp_ex wr_* function table (qp_ex.cpp)

// Completion helpers shared by the SQ and RQ paths.
ibv_wc_opcode wc_opcode_for(ibv_wr_opcode op);

// ---------------------------------------------------------------------------------------------
// Layout assumptions of the casts between rdma-core's structs and ours (`from()` above): the
// rdma-core struct is the first member, at offset 0, and the object is standard layout, so
// the two addresses are one (C++ [basic.compound]). Qp holds a std::function, which makes it
// not standard layout; GCC and clang still place its first member at offset 0 (no virtual
// functions, no bases), and the offsetof below checks exactly that.
static_assert(std::is_standard_layout_v<Device> && offsetof(Device, vdev) == 0 &&
              offsetof(VerbsDeviceAbi, device) == 0);
// verbs.h finds the verbs_context in front of an ibv_context (verbs_get_ctx): context is last.
static_assert(std::is_standard_layout_v<Context> && offsetof(Context, vctx) == 0 &&
              offsetof(verbs_context, context) + sizeof(ibv_context) == sizeof(verbs_context));
static_assert(std::is_standard_layout_v<Pd> && offsetof(Pd, ibpd) == 0);
static_assert(std::is_standard_layout_v<Mr> && offsetof(Mr, ibmr) == 0);
static_assert(std::is_standard_layout_v<CompChannel> && offsetof(CompChannel, ch) == 0);
static_assert(std::is_standard_layout_v<Cq> && offsetof(Cq, cqx) == 0);
// ibv_cq_ex_to_cq() is a cast: ibv_cq_ex begins with the fields of ibv_cq.
static_assert(offsetof(ibv_cq_ex, context) == offsetof(ibv_cq, context) &&
              offsetof(ibv_cq_ex, cq_context) == offsetof(ibv_cq, cq_context) &&
              offsetof(ibv_cq_ex, cqe) == offsetof(ibv_cq, cqe) &&
              offsetof(ibv_cq_ex, async_events_completed) == offsetof(ibv_cq, async_events_completed));
static_assert(std::is_standard_layout_v<Srq> && offsetof(Srq, ibsrq) == 0);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
static_assert(!std::is_polymorphic_v<Qp> && offsetof(Qp, qpx) == 0 &&
              offsetof(ibv_qp_ex, qp_base) == 0);
#pragma GCC diagnostic pop

}  // namespace eca

// --- rdma_cm additions
// (owned by provider/cm; additive only)
namespace eca {
// The live QP numbered `qpn` on `ctx`'s device (any context of it), or null. rdma_connect/rdma_accept use it when the
// application passes conn_param->qp_num for a QP it did not create through rdma_cm, and
// rdma_destroy_id uses it to tell whether the application already destroyed the QP.
Qp *qp_lookup(Context *ctx, uint32_t qpn);
}  // namespace eca

// Multithreaded stress test of one backend (ECA_BACKEND), through the public verbs/rdma_cm API.
//
//   eca_stress [--seconds N] [--peers N] [--qps N] [--posters N] [--pollers N] [--dereg 0|1]
//
// This process (the target) listens on 127.0.0.1 and keeps a pool of RC QPs that all complete
// into ONE shared CQ. Peer processes (this program re-executed with --peer) connect several
// QPs each and echo every SEND they receive. While that runs, in the target:
//  - several posting threads pick connections at random and post SENDs (random sizes, seeded
//    payload, CRC in the header), RDMA READs of the peer's pattern region and RDMA WRITEs into
//    the peer's scratch region;
//  - several polling threads poll the shared CQ, verify every echoed SEND and every READ byte
//    for byte, and repost receives;
//  - (--dereg 1, the default) some SENDs and READs use a memory region that is deregistered while the work request may
//    still be in flight; its pages are then overwritten with a canary (source) or must keep
//    the canary (sink): a device that touches memory after ibv_dereg_mr returned shows up as a
//    corrupted echo or a changed canary;
//  - a killer thread SIGKILLs a random peer every ~1.5 s and starts a new one;
//  - when a connection ends, its QP is drained (every work request flushed), moved to RESET
//    and reused for the next connection.
// At the end every work request ever posted must have completed exactly once (success, or an
// error/flush status on a connection that died), no echo or READ may be corrupted, no QP may
// stay undrained, and every child is reaped. Exit 0 and a summary line when all holds.
//
// All waits are bounded; the run ends after --seconds whatever happens (default 25).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------
// Shared definitions

constexpr uint32_t kMagic = 0xeca57e55;
constexpr uint32_t kMaxMsg = 65536;      // largest SEND payload (several FPDUs)
constexpr uint32_t kRecvDepth = 16;      // receives per QP on each side = SEND credits
constexpr uint32_t kSendDepth = 64;      // the target's send queue depth per QP
constexpr uint64_t kPatternLen = 1 << 20;  // peer's read-only pattern region
// The peer's remote-write scratch region, one part per QP: WRITEs of different connections
// never overlap (overlapping placements from two threads are the application's data race,
// which ThreadSanitizer reports once nothing else happens to order the threads).
constexpr uint64_t kScratchPerQp = 256 << 10;

struct MsgHdr {
  uint32_t magic;
  uint32_t token;  // connection token (the target's)
  uint64_t seq;
  uint32_t len;    // payload bytes after the header
  uint32_t crc;
};
constexpr uint32_t kHdr = sizeof(MsgHdr);

// What a peer tells the target in its connect private data.
struct PeerInfo {
  uint64_t pattern_addr;
  uint64_t scratch_addr;
  uint32_t pattern_rkey;
  uint32_t scratch_rkey;
  uint64_t scratch_len;  // this QP's part of the scratch region
};

uint32_t crc32(const uint8_t *p, size_t n) {
  uint32_t c = ~0u;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
  }
  return ~c;
}

uint8_t pattern_byte(uint64_t off) { return uint8_t((off * 131) ^ (off >> 8) ^ 0x5a); }

void fill_payload(uint8_t *p, size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = g();
    std::memcpy(p + i, &v, std::min<size_t>(8, n - i));
  }
}

std::atomic<int> g_failures{0};

void failf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "stress: FAIL: ");
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, "\n");
  va_end(ap);
  g_failures++;
}

void die(const char *what) {
  std::fprintf(stderr, "stress: %s: %s\n", what, std::strerror(errno));
  std::exit(2);
}

void *map_pages(size_t n) {
  void *p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) die("mmap");
  return p;
}

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// Waits for one CM event on `ch` (bounded); returns null on timeout.
rdma_cm_event *get_event(rdma_event_channel *ch, int timeout_ms) {
  pollfd pf{ch->fd, POLLIN, 0};
  if (::poll(&pf, 1, timeout_ms) <= 0) return nullptr;
  rdma_cm_event *ev = nullptr;
  if (rdma_get_cm_event(ch, &ev) != 0) return nullptr;
  return ev;
}

// ---------------------------------------------------------------------------------------------
// Peer process: connects QPs to the target and echoes every SEND.

int run_peer(uint16_t port, int qps) {
  rdma_event_channel *ch = rdma_create_event_channel();
  if (!ch) die("rdma_create_event_channel");
  auto *pattern = static_cast<uint8_t *>(map_pages(kPatternLen));
  auto *scratch = static_cast<uint8_t *>(map_pages(kScratchPerQp * qps));
  for (uint64_t i = 0; i < kPatternLen; i++) pattern[i] = pattern_byte(i);
  const uint32_t slot = kHdr + kMaxMsg;
  auto *bufs = static_cast<uint8_t *>(map_pages(size_t(slot) * kRecvDepth * qps));

  struct PeerConn {
    rdma_cm_id *id = nullptr;
    bool up = false;
  };
  std::vector<PeerConn> conns(qps);
  ibv_pd *pd = nullptr;
  ibv_cq *cq = nullptr;
  ibv_mr *pmr = nullptr, *smr = nullptr, *bmr = nullptr;
  const sockaddr_in dst = loopback(port);
  int connected = 0;
  for (int i = 0; i < qps; i++) {
    rdma_cm_id *id = nullptr;
    if (rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP)) die("rdma_create_id");
    if (rdma_resolve_addr(id, nullptr, (sockaddr *)&dst, 2000)) die("rdma_resolve_addr");
    rdma_cm_event *ev = get_event(ch, 5000);
    if (!ev || ev->event != RDMA_CM_EVENT_ADDR_RESOLVED) return 3;
    rdma_ack_cm_event(ev);
    if (rdma_resolve_route(id, 2000)) die("rdma_resolve_route");
    ev = get_event(ch, 5000);
    if (!ev || ev->event != RDMA_CM_EVENT_ROUTE_RESOLVED) return 3;
    rdma_ack_cm_event(ev);
    if (!pd) {
      pd = ibv_alloc_pd(id->verbs);
      cq = ibv_create_cq(id->verbs, 4 * kRecvDepth * qps + 64, nullptr, nullptr, 0);
      pmr = ibv_reg_mr(pd, pattern, kPatternLen, IBV_ACCESS_REMOTE_READ);
      smr = ibv_reg_mr(pd, scratch, kScratchPerQp * qps,
                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
      bmr = ibv_reg_mr(pd, bufs, size_t(slot) * kRecvDepth * qps, IBV_ACCESS_LOCAL_WRITE);
      if (!pd || !cq || !pmr || !smr || !bmr) die("peer verbs setup");
    }
    ibv_qp_init_attr ia{};
    ia.send_cq = ia.recv_cq = cq;
    ia.qp_type = IBV_QPT_RC;
    ia.cap.max_send_wr = 2 * kRecvDepth;
    ia.cap.max_recv_wr = kRecvDepth;
    ia.cap.max_send_sge = ia.cap.max_recv_sge = 1;
    if (rdma_create_qp(id, pd, &ia)) die("rdma_create_qp");
    for (uint32_t r = 0; r < kRecvDepth; r++) {
      uint8_t *b = bufs + size_t(slot) * (i * kRecvDepth + r);
      ibv_sge s{uint64_t(uintptr_t(b)), slot, bmr->lkey};
      ibv_recv_wr wr{}, *bad = nullptr;
      wr.wr_id = uint64_t(uintptr_t(b));
      wr.sg_list = &s;
      wr.num_sge = 1;
      if (ibv_post_recv(id->qp, &wr, &bad)) die("peer post_recv");
    }
    PeerInfo info{uint64_t(uintptr_t(pattern)), uint64_t(uintptr_t(scratch + kScratchPerQp * i)),
                  pmr->rkey, smr->rkey, kScratchPerQp};
    rdma_conn_param cp{};
    cp.private_data = &info;
    cp.private_data_len = sizeof info;
    cp.initiator_depth = cp.responder_resources = 8;
    if (rdma_connect(id, &cp)) die("rdma_connect");
    ev = get_event(ch, 10000);
    bool ok = ev && ev->event == RDMA_CM_EVENT_ESTABLISHED;
    if (ev) rdma_ack_cm_event(ev);
    conns[i].id = id;
    conns[i].up = ok;
    connected += ok;
  }
  if (!connected) return 4;

  // Echo loop: a received SEND is checked (header, CRC) and sent back from the same buffer;
  // the receive is reposted once the echo completed. Ends when every connection is gone.
  std::vector<ibv_qp *> qp_of;
  for (auto &c : conns) qp_of.push_back(c.id->qp);
  auto conn_index = [&](uint32_t qpn) {
    for (int i = 0; i < qps; i++)
      if (conns[i].id->qp->qp_num == qpn) return i;
    return -1;
  };
  int alive = connected;
  auto deadline = Clock::now() + 120s;  // the target kills us long before
  ibv_wc wc[16];
  while (alive > 0 && Clock::now() < deadline) {
    int n = ibv_poll_cq(cq, 16, wc);
    if (n < 0) return 5;
    for (int k = 0; k < n; k++) {
      int ci = conn_index(wc[k].qp_num);
      if (ci < 0) continue;
      ibv_qp *qp = conns[ci].id->qp;
      auto *b = reinterpret_cast<uint8_t *>(uintptr_t(wc[k].wr_id));
      if (wc[k].status != IBV_WC_SUCCESS) continue;  // the connection is going away
      if (wc[k].opcode == IBV_WC_RECV) {
        MsgHdr h;
        std::memcpy(&h, b, kHdr);
        if (wc[k].byte_len < kHdr || h.magic != kMagic || h.len != wc[k].byte_len - kHdr ||
            crc32(b + kHdr, h.len) != h.crc) {
          std::fprintf(stderr, "stress peer: corrupted SEND (len %u)\n", wc[k].byte_len);
          return 6;
        }
        ibv_sge s{uint64_t(uintptr_t(b)), wc[k].byte_len, bmr->lkey};
        ibv_send_wr wr{}, *bad = nullptr;
        wr.wr_id = wc[k].wr_id;
        wr.opcode = IBV_WR_SEND;
        wr.sg_list = &s;
        wr.num_sge = 1;
        wr.send_flags = IBV_SEND_SIGNALED;
        (void)ibv_post_send(qp, &wr, &bad);
      } else if (wc[k].opcode == IBV_WC_SEND) {
        ibv_sge s{uint64_t(uintptr_t(b)), slot, bmr->lkey};
        ibv_recv_wr wr{}, *bad = nullptr;
        wr.wr_id = wc[k].wr_id;
        wr.sg_list = &s;
        wr.num_sge = 1;
        (void)ibv_post_recv(qp, &wr, &bad);
      }
    }
    if (rdma_cm_event *ev = get_event(ch, n ? 0 : 1)) {
      if (ev->event == RDMA_CM_EVENT_DISCONNECTED) alive--;
      rdma_ack_cm_event(ev);
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Target

enum class WrKind : uint8_t { Recv, Send, Read, Write };

// One posted work request. Completed exactly once, by a poller (or never posted).
struct WrRec {
  std::atomic<int> completions{0};
  WrKind kind = WrKind::Send;
  uint32_t conn = 0;
  uint64_t seq = 0;
  uint8_t *buf = nullptr;  // local buffer (recv slot, READ sink)
  uint32_t len = 0;
  uint64_t remote_off = 0;  // READ: offset in the peer's pattern
  bool churn = false;       // buffer belongs to a churned MR (deregistered under traffic)
};

enum class CState : uint8_t { Free, Connecting, Live, Draining };

struct Conn {
  uint32_t index = 0;
  ibv_qp *qp = nullptr;
  std::shared_mutex mu;  // posters: shared while posting; state changes: exclusive
  CState state = CState::Free;
  rdma_cm_id *id = nullptr;
  uint32_t token = 0;
  PeerInfo peer{};
  std::atomic<int> credits{0};
  std::atomic<int> outstanding{0};  // posted, not yet completed
  Clock::time_point drain_since;
  uint8_t *slots = nullptr;  // kRecvDepth receive buffers, READ sinks and SEND sources
  std::mutex send_mu;
  std::vector<uint8_t *> free_send;  // SEND source / READ sink slots not in flight
  uint8_t *take_send_slot() {
    std::lock_guard g(send_mu);
    if (free_send.empty()) return nullptr;
    uint8_t *p = free_send.back();
    free_send.pop_back();
    return p;
  }
  void put_send_slot(uint8_t *p) {
    std::lock_guard g(send_mu);
    free_send.push_back(p);
  }
  uint64_t uses = 0;
};

struct Stats {
  std::atomic<uint64_t> sends{0}, echoes{0}, reads{0}, writes{0}, err_completions{0};
  std::atomic<uint64_t> churn_mrs{0}, reuses{0}, kills{0}, conns{0};
};

struct Retired {  // pages of a deregistered MR, with the canary they must keep
  uint8_t *p;
  size_t n;
  uint8_t canary;
  bool sink;  // an RDMA READ sink (else a SEND source)
};

class Target {
 public:
  Target(int qps, int posters, int pollers, int peers, int seconds, int peer_qps, bool churn)
      : nqps_(qps), nposters_(posters), npollers_(pollers), npeers_(peers), seconds_(seconds),
        peer_qps_(peer_qps), churn_(churn) {}

  int run();

 private:
  void setup();
  void cm_loop();
  void poster(int idx);
  void poller();
  void killer();
  void spawn_peer(size_t slot);
  void recycle(Conn &c);
  Conn *conn_of(rdma_cm_id *id);
  bool post_recv(Conn &c, uint8_t *buf);
  uint64_t new_wr(WrKind k, Conn &c, uint8_t *buf, uint32_t len);
  void complete(const ibv_wc &wc);

  const int nqps_, nposters_, npollers_, npeers_, seconds_, peer_qps_;
  const bool churn_;  // deregister some MRs under traffic
  rdma_event_channel *ch_ = nullptr;
  rdma_cm_id *listen_ = nullptr;
  uint16_t port_ = 0;
  ibv_context *ctx_ = nullptr;
  ibv_pd *pd_ = nullptr;
  ibv_cq *cq_ = nullptr;
  ibv_mr *mr_ = nullptr;  // all connections' receive buffers and READ sinks
  uint8_t *mem_ = nullptr;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::mutex wr_mu_;
  std::deque<WrRec> wrs_;  // stable addresses; wr_id = index
  std::atomic<bool> stop_posting_{false}, stop_{false};
  std::mutex peers_mu_;
  std::vector<pid_t> peers_;
  std::mutex retired_mu_;
  std::vector<Retired> retired_;
  std::atomic<uint32_t> next_token_{1};
  Stats st_;
  std::string self_;
};

constexpr uint32_t kSlot = kHdr + kMaxMsg;

void to_init(ibv_qp *qp) {
  ibv_qp_attr at{};
  at.qp_state = IBV_QPS_INIT;
  at.port_num = 1;
  at.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
  ibv_modify_qp(qp, &at, IBV_QP_STATE | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX);
}

void Target::setup() {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) die("readlink");
  exe[n] = 0;
  self_ = exe;
  ch_ = rdma_create_event_channel();
  if (!ch_ || rdma_create_id(ch_, &listen_, nullptr, RDMA_PS_TCP)) die("rdma_create_id");
  sockaddr_in a = loopback(0);  // the kernel picks a free port
  if (rdma_bind_addr(listen_, (sockaddr *)&a) || rdma_listen(listen_, 64)) die("rdma_listen");
  port_ = ntohs(rdma_get_src_port(listen_));
  ctx_ = listen_->verbs;
  if (!ctx_) {
    // A loopback address binds no device (as with the kernel's rdma_cm); the device that
    // serves connections to it is the one address resolution picks.
    rdma_cm_id *probe = nullptr;
    sockaddr_in d = loopback(port_);
    rdma_cm_event *ev = nullptr;
    if (rdma_create_id(ch_, &probe, nullptr, RDMA_PS_TCP) ||
        rdma_resolve_addr(probe, nullptr, (sockaddr *)&d, 2000) || rdma_get_cm_event(ch_, &ev))
      die("resolving 127.0.0.1");
    const bool ok = ev->event == RDMA_CM_EVENT_ADDR_RESOLVED && probe->verbs;
    rdma_ack_cm_event(ev);
    if (!ok) die("resolving 127.0.0.1: no device");
    const std::string want = ibv_get_device_name(probe->verbs->device);
    rdma_destroy_id(probe);
    int num = 0;
    ibv_device **l = ibv_get_device_list(&num);
    for (int i = 0; i < num && !ctx_; i++)
      if (want == ibv_get_device_name(l[i])) ctx_ = ibv_open_device(l[i]);
    ibv_free_device_list(l);
  }
  if (!ctx_) die("no device serves 127.0.0.1");
  pd_ = ibv_alloc_pd(ctx_);
  // Room for every work request that can be outstanding at once (a CQ overflow loses
  // completions: that would be this program's fault).
  // (Posters check a connection's outstanding count before posting: each may overshoot it
  // by one.)
  cq_ = ibv_create_cq(ctx_, nqps_ * (kSendDepth + kRecvDepth + nposters_) + 64, nullptr, nullptr,
                      0);
  const size_t per = size_t(kSlot) * kRecvDepth * 3;
  mem_ = static_cast<uint8_t *>(map_pages(per * nqps_));
  mr_ = ibv_reg_mr(pd_, mem_, per * nqps_, IBV_ACCESS_LOCAL_WRITE);
  if (!pd_ || !cq_ || !mr_) die("target verbs setup");
  for (int i = 0; i < nqps_; i++) {
    auto c = std::make_unique<Conn>();
    c->index = i;
    c->slots = mem_ + per * i;
    for (uint32_t k = kRecvDepth; k < 3 * kRecvDepth; k++)
      c->free_send.push_back(c->slots + size_t(kSlot) * k);
    ibv_qp_init_attr ia{};
    ia.send_cq = ia.recv_cq = cq_;
    ia.qp_type = IBV_QPT_RC;
    ia.cap.max_send_wr = kSendDepth;
    ia.cap.max_recv_wr = kRecvDepth;
    ia.cap.max_send_sge = ia.cap.max_recv_sge = 1;
    c->qp = ibv_create_qp(pd_, &ia);
    if (!c->qp) die("ibv_create_qp");
    to_init(c->qp);
    conns_.push_back(std::move(c));
  }
}

uint64_t Target::new_wr(WrKind k, Conn &c, uint8_t *buf, uint32_t len) {
  std::lock_guard g(wr_mu_);
  WrRec &r = wrs_.emplace_back();
  r.kind = k;
  r.conn = c.index;
  r.buf = buf;
  r.len = len;
  return wrs_.size() - 1;
}

bool Target::post_recv(Conn &c, uint8_t *buf) {
  uint64_t id = new_wr(WrKind::Recv, c, buf, kSlot);
  ibv_sge s{uint64_t(uintptr_t(buf)), kSlot, mr_->lkey};
  ibv_recv_wr wr{}, *bad = nullptr;
  wr.wr_id = id;
  wr.sg_list = &s;
  wr.num_sge = 1;
  c.outstanding++;
  if (ibv_post_recv(c.qp, &wr, &bad) != 0) {
    c.outstanding--;
    std::lock_guard g(wr_mu_);
    wrs_[id].completions = 1;  // never posted: counts as done
    return false;
  }
  return true;
}

// The connection whose rdma_cm id is `id` (ids are destroyed by recycle(): never dereference
// an event's id after its event was acknowledged).
Conn *Target::conn_of(rdma_cm_id *id) {
  for (auto &c : conns_) {
    std::shared_lock g(c->mu);
    if (c->id == id) return c.get();
  }
  return nullptr;
}

void Target::cm_loop() {
  while (!stop_) {
    // Drained connections go back to the pool.
    for (auto &c : conns_) recycle(*c);
    rdma_cm_event *ev = get_event(ch_, 20);
    if (!ev) continue;
    rdma_cm_event e = *ev;
    PeerInfo info{};
    if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST && ev->param.conn.private_data_len >= sizeof info)
      std::memcpy(&info, ev->param.conn.private_data, sizeof info);
    rdma_ack_cm_event(ev);
    if (e.event == RDMA_CM_EVENT_CONNECT_REQUEST) {
      Conn *free_c = nullptr;
      for (auto &c : conns_) {
        std::unique_lock g(c->mu);
        if (c->state == CState::Free && !stop_posting_) {
          c->state = CState::Connecting;
          c->id = e.id;
          c->peer = info;
          c->token = next_token_++;
          c->credits = kRecvDepth;
          free_c = c.get();
          break;
        }
      }
      if (!free_c) {
        rdma_reject(e.id, nullptr, 0);
        rdma_destroy_id(e.id);
        continue;
      }
      Conn &c = *free_c;
      for (uint32_t r = 0; r < kRecvDepth; r++) post_recv(c, c.slots + size_t(kSlot) * r);
      rdma_conn_param cp{};
      cp.qp_num = c.qp->qp_num;
      cp.initiator_depth = cp.responder_resources = 8;
      if (rdma_accept(e.id, &cp) != 0) {
        std::unique_lock g(c.mu);
        c.state = CState::Draining;
        c.drain_since = Clock::now();
        ibv_qp_attr at{};
        at.qp_state = IBV_QPS_ERR;
        ibv_modify_qp(c.qp, &at, IBV_QP_STATE);
      }
    } else if (e.event == RDMA_CM_EVENT_ESTABLISHED) {
      Conn *c = conn_of(e.id);
      if (!c) continue;
      std::unique_lock g(c->mu);
      if (c->id == e.id && c->state == CState::Connecting) {
        c->state = CState::Live;
        if (c->uses++) st_.reuses++;  // this QP carried a connection before (RESET, reused)
        st_.conns++;
      }
    } else if (e.event == RDMA_CM_EVENT_DISCONNECTED || e.event == RDMA_CM_EVENT_CONNECT_ERROR ||
               e.event == RDMA_CM_EVENT_UNREACHABLE || e.event == RDMA_CM_EVENT_REJECTED) {
      Conn *c = conn_of(e.id);
      if (!c) continue;
      std::unique_lock g(c->mu);
      if (c->id == e.id && (c->state == CState::Live || c->state == CState::Connecting)) {
        c->state = CState::Draining;
        c->drain_since = Clock::now();
        ibv_qp_attr at{};
        at.qp_state = IBV_QPS_ERR;
        ibv_modify_qp(c->qp, &at, IBV_QP_STATE);  // flushes everything still queued
      }
    }
  }
}

// A draining connection whose work requests all completed: RESET, destroy its id, reuse.
void Target::recycle(Conn &c) {
  std::unique_lock g(c.mu);
  if (c.state != CState::Draining) return;
  if (c.outstanding.load() != 0) {
    if (Clock::now() - c.drain_since > 15s) {
      failf("QP %u: %d work requests never completed after the connection ended",
            c.qp->qp_num, c.outstanding.load());
      c.drain_since = Clock::now() + 3600s;  // report once
    }
    return;
  }
  if (c.id) {
    rdma_disconnect(c.id);
    rdma_destroy_id(c.id);  // the QP is ours (not rdma_create_qp): it survives
    c.id = nullptr;
  }
  ibv_qp_attr at{};
  at.qp_state = IBV_QPS_RESET;
  if (ibv_modify_qp(c.qp, &at, IBV_QP_STATE) != 0) {
    failf("QP %u: RESET failed", c.qp->qp_num);
    return;
  }
  to_init(c.qp);
  c.state = CState::Free;
}

void Target::poster(int idx) {
  std::mt19937_64 rng(0x5eed0000 + idx);
  std::vector<uint8_t> payload(kHdr + kMaxMsg);
  // A SEND's source buffer: one per poster, in its own MR (registered once).
  auto *src = static_cast<uint8_t *>(map_pages(kHdr + kMaxMsg));
  ibv_mr *src_mr = ibv_reg_mr(pd_, src, kHdr + kMaxMsg, 0);
  if (!src_mr) die("poster reg_mr");
  uint64_t seq = uint64_t(idx) << 48;
  while (!stop_posting_) {
    Conn &c = *conns_[rng() % conns_.size()];
    std::shared_lock g(c.mu);
    if (c.state != CState::Live) {
      g.unlock();
      std::this_thread::sleep_for(200us);
      continue;
    }
    // A send queue slot is free again once its completion is in the CQ, not once it is
    // polled: with slow pollers (a sanitizer build on a loaded machine) posting must stop at
    // what the CQ was sized for, or completions overflow it (the program's fault, not the
    // device's).
    if (c.outstanding.load() >= int(kSendDepth + kRecvDepth)) {
      g.unlock();
      std::this_thread::yield();
      continue;
    }
    const int op = int(rng() % 10);
    const bool churn = churn_ && rng() % 64 == 0;
    ibv_send_wr wr{}, *bad = nullptr;
    ibv_sge s{};
    wr.sg_list = &s;
    wr.num_sge = 1;
    wr.send_flags = IBV_SEND_SIGNALED;
    ibv_mr *cmr = nullptr;
    uint8_t *cbuf = nullptr;
    size_t clen = 0;
    uint64_t id;
    if (op < 6) {  // SEND, echoed back
      if (c.credits.fetch_sub(1) <= 0) {
        c.credits++;
        continue;
      }
      const uint32_t len = rng() % 4 == 0 ? uint32_t(rng() % kMaxMsg) : uint32_t(rng() % 2048);
      MsgHdr h{kMagic, c.token, ++seq, len, 0};
      fill_payload(payload.data() + kHdr, len, h.seq);
      h.crc = crc32(payload.data() + kHdr, len);
      std::memcpy(payload.data(), &h, kHdr);
      // Each SEND in flight has its own source: a slot of the connection (back when its
      // completion is polled) or a churned region.
      uint8_t *from = nullptr;
      uint32_t key = mr_->lkey;
      if (!churn && !(from = c.take_send_slot())) {
        c.credits++;
        continue;
      }
      if (churn) {
        clen = (kHdr + len + 4095) & ~size_t(4095);
        cbuf = static_cast<uint8_t *>(map_pages(clen));
        cmr = ibv_reg_mr(pd_, cbuf, clen, 0);
        if (!cmr) die("churn reg_mr");
        from = cbuf;
        key = cmr->lkey;
      }
      std::memcpy(from, payload.data(), kHdr + len);
      s = {uint64_t(uintptr_t(from)), kHdr + len, key};
      wr.opcode = IBV_WR_SEND;
      id = new_wr(WrKind::Send, c, churn ? nullptr : from, kHdr + len);
      st_.sends++;
    } else if (op < 8) {  // READ from the peer's pattern into a sink slot
      const uint32_t len = 1 + uint32_t(rng() % (kSlot - 1));
      const uint64_t roff = rng() % (kPatternLen - len);
      uint8_t *sink = nullptr;
      uint32_t key = mr_->lkey;
      if (!churn && !(sink = c.take_send_slot())) continue;
      if (churn) {
        clen = (len + 4095) & ~size_t(4095);
        cbuf = static_cast<uint8_t *>(map_pages(clen));
        cmr = ibv_reg_mr(pd_, cbuf, clen, IBV_ACCESS_LOCAL_WRITE);
        if (!cmr) die("churn reg_mr");
        sink = cbuf;
        key = cmr->lkey;
      }
      s = {uint64_t(uintptr_t(sink)), len, key};
      wr.opcode = IBV_WR_RDMA_READ;
      wr.wr.rdma.remote_addr = c.peer.pattern_addr + roff;
      wr.wr.rdma.rkey = c.peer.pattern_rkey;
      id = new_wr(WrKind::Read, c, sink, len);
      {
        std::lock_guard gw(wr_mu_);
        wrs_[id].remote_off = roff;
        wrs_[id].churn = churn;
      }
      st_.reads++;
    } else {  // WRITE into the peer's scratch region
      const uint32_t len = 1 + uint32_t(rng() % kMaxMsg);
      s = {uint64_t(uintptr_t(src)), len, src_mr->lkey};
      wr.opcode = IBV_WR_RDMA_WRITE;
      wr.wr.rdma.remote_addr = c.peer.scratch_addr + rng() % (c.peer.scratch_len - len);
      wr.wr.rdma.rkey = c.peer.scratch_rkey;
      id = new_wr(WrKind::Write, c, nullptr, len);
      st_.writes++;
    }
    wr.wr_id = id;
    c.outstanding++;
    if (ibv_post_send(c.qp, &wr, &bad) != 0) {
      c.outstanding--;
      std::lock_guard gw(wr_mu_);
      wrs_[id].completions = 1;  // not posted (queue full or QP leaving RTS)
      if (wr.opcode == IBV_WR_SEND) c.credits++;
      if (wrs_[id].buf && !churn) c.put_send_slot(wrs_[id].buf);
    }
    g.unlock();
    if (cmr) {
      // Deregistered at once or after a moment, with the work request possibly in flight.
      if (rng() % 2) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
      if (ibv_dereg_mr(cmr) != 0) failf("ibv_dereg_mr failed");
      const uint8_t canary = 0xdd;
      std::memset(cbuf, canary, clen);
      st_.churn_mrs++;
      std::lock_guard gr(retired_mu_);
      retired_.push_back({cbuf, clen, canary, wr.opcode == IBV_WR_RDMA_READ});
    }
  }
  ibv_dereg_mr(src_mr);
}

void Target::complete(const ibv_wc &wc) {
  WrRec *r;
  {
    std::lock_guard g(wr_mu_);
    if (wc.wr_id >= wrs_.size()) {
      failf("completion with unknown wr_id %llu", (unsigned long long)wc.wr_id);
      return;
    }
    r = &wrs_[wc.wr_id];
  }
  if (r->completions.fetch_add(1) != 0) {
    failf("work request %llu completed twice", (unsigned long long)wc.wr_id);
    return;
  }
  Conn &c = *conns_[r->conn];
  if (wc.qp_num != c.qp->qp_num) failf("completion for QP %u reports QP %u", c.qp->qp_num, wc.qp_num);
  // A SEND source or READ sink slot is free again once this completion is handled.
  uint8_t *slot = (r->kind == WrKind::Send || r->kind == WrKind::Read) && !r->churn ? r->buf
                                                                                     : nullptr;
  if (wc.status != IBV_WC_SUCCESS) {
    st_.err_completions++;
    if (slot) c.put_send_slot(slot);
    c.outstanding--;
    return;
  }
  switch (r->kind) {
    case WrKind::Recv: {
      MsgHdr h;
      std::memcpy(&h, r->buf, kHdr);
      if (wc.byte_len < kHdr || h.magic != kMagic || h.len != wc.byte_len - kHdr ||
          h.token != c.token) {
        failf("QP %u: echo with a bad header (len %u, token %u/%u)", c.qp->qp_num, wc.byte_len,
              h.token, c.token);
      } else {
        std::vector<uint8_t> want(h.len);
        fill_payload(want.data(), h.len, h.seq);
        if (h.crc != crc32(want.data(), h.len) ||
            (h.len && std::memcmp(want.data(), r->buf + kHdr, h.len) != 0))
          failf("QP %u: echoed SEND seq %llx corrupted (%u bytes)", c.qp->qp_num,
                (unsigned long long)h.seq, h.len);
        st_.echoes++;
      }
      c.credits++;
      // The slot goes back to the receive queue (unless the connection is ending).
      std::shared_lock g(c.mu);
      if (c.state == CState::Live) post_recv(c, r->buf);
      break;
    }
    case WrKind::Read:
      if (!r->churn)
        for (uint32_t i = 0; i < r->len; i++)
          if (r->buf[i] != pattern_byte(r->remote_off + i)) {
            failf("QP %u: RDMA READ data corrupted at byte %u of %u", c.qp->qp_num, i, r->len);
            break;
          }
      break;
    case WrKind::Send:
    case WrKind::Write:
      break;
  }
  if (slot) c.put_send_slot(slot);
  c.outstanding--;
}

void Target::poller() {
  ibv_wc wc[16];
  while (!stop_) {
    int n = ibv_poll_cq(cq_, 16, wc);
    if (n < 0) {
      failf("ibv_poll_cq: %d", n);
      return;
    }
    for (int i = 0; i < n; i++) complete(wc[i]);
    if (!n) std::this_thread::yield();
  }
}

void Target::spawn_peer(size_t slot) {
  pid_t pid = fork();
  if (pid == 0) {
    std::string port = std::to_string(port_), qps = std::to_string(peer_qps_);
    execl(self_.c_str(), self_.c_str(), "--peer", port.c_str(), "--qps", qps.c_str(), nullptr);
    _exit(127);
  }
  if (pid < 0) die("fork");
  std::lock_guard g(peers_mu_);
  peers_[slot] = pid;
}

void Target::killer() {
  std::mt19937 rng(77);
  auto next = Clock::now() + 1500ms;
  while (!stop_posting_) {
    std::this_thread::sleep_for(20ms);
    // Reap peers that ended by themselves (a refused connection, ...) and replace them.
    for (size_t i = 0; i < peers_.size(); i++) {
      pid_t p;
      {
        std::lock_guard g(peers_mu_);
        p = peers_[i];
      }
      int status;
      if (p > 0 && waitpid(p, &status, WNOHANG) == p) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 6) failf("peer %d saw a corrupted SEND", p);
        spawn_peer(i);
      }
    }
    if (Clock::now() < next) continue;
    next = Clock::now() + 1500ms;
    size_t i = rng() % peers_.size();
    pid_t p;
    {
      std::lock_guard g(peers_mu_);
      p = peers_[i];
    }
    kill(p, SIGKILL);
    waitpid(p, nullptr, 0);
    st_.kills++;
    spawn_peer(i);
  }
}

int Target::run() {
  setup();
  peers_.assign(npeers_, -1);
  for (int i = 0; i < npeers_; i++) spawn_peer(i);
  std::thread cm([this] { cm_loop(); });
  std::vector<std::thread> ts;
  for (int i = 0; i < npollers_; i++) ts.emplace_back([this] { poller(); });
  for (int i = 0; i < nposters_; i++) ts.emplace_back([this, i] { poster(i); });
  std::thread kt([this] { killer(); });

  std::this_thread::sleep_for(std::chrono::seconds(seconds_));
  stop_posting_ = true;
  kt.join();
  for (int i = 0; i < nposters_; i++) {
    ts.back().join();
    ts.pop_back();
  }
  // End every connection: the peers die, every QP drains and returns to the pool.
  {
    std::lock_guard g(peers_mu_);
    for (pid_t p : peers_) kill(p, SIGKILL);
    for (pid_t p : peers_) waitpid(p, nullptr, 0);
  }
  for (auto &c : conns_) {
    std::unique_lock g(c->mu);
    if (c->state == CState::Live || c->state == CState::Connecting) {
      c->state = CState::Draining;
      c->drain_since = Clock::now();
      ibv_qp_attr at{};
      at.qp_state = IBV_QPS_ERR;
      ibv_modify_qp(c->qp, &at, IBV_QP_STATE);
    }
  }
  auto deadline = Clock::now() + 20s;
  for (;;) {
    bool all_free = true;
    for (auto &c : conns_) {  // the CM thread recycles them (it alone destroys ids)
      std::shared_lock g(c->mu);
      all_free &= c->state == CState::Free;
    }
    if (all_free || Clock::now() > deadline) break;
    std::this_thread::sleep_for(10ms);
  }
  stop_ = true;
  cm.join();
  for (auto &t : ts) t.join();

  // Every work request completed exactly once.
  uint64_t never = 0;
  for (size_t i = 0; i < wrs_.size(); i++)
    if (wrs_[i].completions.load() == 0) never++;
  if (never) failf("%llu work requests never completed", (unsigned long long)never);
  for (auto &c : conns_)
    if (c->state != CState::Free) failf("QP %u never drained", c->qp->qp_num);
  // Deregistered memory kept what we wrote after ibv_dereg_mr returned.
  for (const Retired &r : retired_) {
    for (size_t i = 0; i < r.n; i++)
      if (r.p[i] != r.canary) {
        failf("dereg: %s memory changed after ibv_dereg_mr returned (byte %zu of %zu)",
              r.sink ? "RDMA READ sink" : "SEND source", i, r.n);
        break;
      }
    munmap(r.p, r.n);
  }
  for (auto &c : conns_) ibv_destroy_qp(c->qp);
  ibv_dereg_mr(mr_);
  ibv_destroy_cq(cq_);
  ibv_dealloc_pd(pd_);
  rdma_destroy_id(listen_);
  rdma_destroy_event_channel(ch_);

  const char *be = std::getenv("ECA_BACKEND");
  std::printf(
      "stress: backend %s, %d s: %llu connections (%llu QP reuses), %llu peers killed; "
      "%llu SENDs (%llu echoes verified), %llu READs, %llu WRITEs, %llu error/flush "
      "completions, %llu MRs deregistered under traffic; %zu work requests, %d failures\n",
      be ? be : "software", seconds_, (unsigned long long)st_.conns.load(),
      (unsigned long long)st_.reuses.load(), (unsigned long long)st_.kills.load(),
      (unsigned long long)st_.sends.load(), (unsigned long long)st_.echoes.load(),
      (unsigned long long)st_.reads.load(), (unsigned long long)st_.writes.load(),
      (unsigned long long)st_.err_completions.load(), (unsigned long long)st_.churn_mrs.load(),
      wrs_.size(), g_failures.load());
  // The run must have done something: connections were made and data was verified.
  if (st_.conns.load() == 0) failf("no connection was ever established");
  if (st_.echoes.load() == 0) failf("no SEND was ever echoed");
  return g_failures.load() ? 1 : 0;
}

}  // namespace

int main(int argc, char **argv) {
  int seconds = 25, peers = 3, qps = 12, posters = 3, pollers = 3, peer_qps = 3;
  int peer_port = -1, churn = 1;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto val = [&](int &out) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "stress: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      out = std::atoi(argv[++i]);
    };
    if (a == "--seconds") val(seconds);
    else if (a == "--peers") val(peers);
    else if (a == "--qps") val(qps);
    else if (a == "--posters") val(posters);
    else if (a == "--pollers") val(pollers);
    else if (a == "--peer-qps") val(peer_qps);
    else if (a == "--peer") val(peer_port);
    else if (a == "--dereg") val(churn);
    else {
      std::fprintf(stderr, "usage: %s [--seconds N] [--peers N] [--qps N] [--posters N] "
                           "[--pollers N] [--peer-qps N] [--dereg 0|1]\n", argv[0]);
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  if (peer_port >= 0) return run_peer(uint16_t(peer_port), qps);
  Target t(qps, posters, pollers, peers, seconds, peer_qps, churn != 0);
  return t.run();
}

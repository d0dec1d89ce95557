// libFuzzer target: the modeled adapter's validation of frames from its peer
// (hwmodel/backend/hw_conn.cpp: rx_locked -> handle_frame_locked), the frames a hostile peer
// adapter writes into the shared link ring.
//
// One connected pair of hwmodel QPs in this process over rdma_cm on 127.0.0.1: A is the
// target, B the peer. B's data path is switched off, so the harness alone writes B's outgoing
// ring (A's incoming one) and A alone consumes it: per input, the frames are published into
// the ring and A's receive path runs once. When a frame ended A's connection (TERMINATE,
// failure) or after 256 inputs, the pair is rebuilt.
//
// Hook: HwConn declares `friend struct HwConnProbe` (hwmodel/backend/hw_conn.hpp);
// the probe below uses its private members (mu_, failing_, ring_slot_locked,
// ring_publish_locked, rx_locked). When that class is reworked, only the probe changes.
//
// Input: a sequence of raw Frame images (sizeof(Frame) = 448 octets, see shm_layout.hpp; a
// short tail is zero-padded). Substitutions so inputs can name real memory:
//   sge[i].addr with top 32 bits 0xeca0eca0  -> B's send buffer + (addr & 0xffff)
//   sge[i].addr with top 32 bits 0xeca0eca3  -> the secret (memory of this process that no
//                                               MR covers) + (addr & 0xfff)
//   sge[i].stag == 0xeca0                    -> B's send MR (lkey)
//   imm == 0xeca0eca1 / 0xeca0eca2 (with the invalidate flag) -> A's receive / spare MR rkey
// Checked beyond "no crash, no sanitizer report": no byte outside A's receive windows changes
// (guard zones), A's spare region (not remote accessible) never changes, no byte of the
// secret (fresh random words each input) reaches A's receive windows, and no more completions
// appear than receives were posted.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_set>
#include <vector>

#include "hwmodel/backend/adapter.hpp"
#include "hwmodel/backend/hw_conn.hpp"
#include "hwmodel/backend/shm_layout.hpp"
#include "provider/core/objects.hpp"
#include "tests/fuzz/fuzz_util.hpp"


namespace eca::hw {

struct HwConnProbe {
  static HwConn *conn(ibv_qp *qp) {
    Qp *q = Qp::from(qp);
    std::lock_guard g(q->engine_mu);
    auto *e = static_cast<HwEngine *>(q->engine.get());
    return e ? e->conn() : nullptr;
  }
  // Stops B's own data path: from now on only the harness touches B's rings.
  static void silence(HwConn *c) {
    std::lock_guard g(c->mu_);
    c->failing_ = true;
  }
  static bool inject(HwConn *c, const Frame &f) {
    std::lock_guard g(c->mu_);
    Frame *slot = c->ring_slot_locked();
    if (!slot) return false;
    std::memcpy(static_cast<void *>(slot), &f, sizeof f);
    c->ring_publish_locked();
    return true;
  }
  static void deliver(HwConn *c) {
    std::lock_guard g(c->mu_);
    if (!c->closed_ && !c->failing_) c->rx_locked();
  }
  static bool broken(HwConn *c) { return c->closed_ || c->failing_; }
  static bool ready(HwConn *c) { return c->ready_.load(std::memory_order_acquire); }
};

}  // namespace eca::hw

namespace {

using eca::hw::Frame;
using eca::hw::HwConnProbe;

constexpr size_t kGuard = 4096;
constexpr uint8_t kCanary = 0xc5;
constexpr size_t kRecvLen = 16384, kSpareLen = 4096, kSendLen = 65536, kSecretLen = 8192;
constexpr int kRecvs = 8;

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// The next event of type `want`; stray events (the ends of earlier pairs) are acknowledged
// and skipped. Null after 10 s.
rdma_cm_event *get_event(rdma_event_channel *ch, rdma_cm_event_type want) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd pf{ch->fd, POLLIN, 0};
    if (::poll(&pf, 1, 100) <= 0) continue;
    rdma_cm_event *ev = nullptr;
    if (rdma_get_cm_event(ch, &ev) != 0) return nullptr;
    if (ev->event == want) return ev;
    rdma_ack_cm_event(ev);
  }
  std::fprintf(stderr, "hw_frame_fuzz: no %s event\n", rdma_event_str(want));
  return nullptr;
}

// Memory of one process for both ends (one adapter per process): A's receive windows and
// spare region with guards, B's send buffer.
struct Memory {
  uint8_t *recv = nullptr, *spare = nullptr, *send = nullptr;
  uint64_t *secret = nullptr;  // never registered
  std::unordered_set<uint64_t> secret_words;
  std::mt19937_64 rng{std::random_device{}()};
  Memory() {
    recv = alloc(kRecvLen + 2 * kGuard) + kGuard;
    spare = alloc(kSpareLen + 2 * kGuard) + kGuard;
    send = alloc(kSendLen);
    secret = reinterpret_cast<uint64_t *>(alloc(kSecretLen));
    std::memset(recv - kGuard, kCanary, kRecvLen + 2 * kGuard);
    std::memset(spare - kGuard, kCanary, kSpareLen + 2 * kGuard);
    for (size_t i = 0; i < kSendLen; i++) send[i] = uint8_t(i * 7);
  }
  static uint8_t *alloc(size_t n) {
    void *p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    FUZZ_CHECK(p != MAP_FAILED);
    return static_cast<uint8_t *>(p);
  }
  // New secret words for each input (the fuzzer cannot learn them from our comparisons).
  void new_secret() {
    secret_words.clear();
    for (size_t i = 0; i < kSecretLen / 8; i++) secret_words.insert(secret[i] = rng() | 1);
  }
  void check() const {
    for (size_t i = 0; i + 8 <= kRecvLen; i++) {
      uint64_t v;
      std::memcpy(&v, recv + i, 8);
      FUZZ_CHECK(!secret_words.count(v));
    }
    for (size_t i = 0; i < kGuard; i++) {
      FUZZ_CHECK(recv[-1 - long(i)] == kCanary && recv[kRecvLen + i] == kCanary);
      FUZZ_CHECK(spare[-1 - long(i)] == kCanary && spare[kSpareLen + i] == kCanary);
    }
    for (size_t i = 0; i < kSpareLen; i++) FUZZ_CHECK(spare[i] == kCanary);
  }
};

// One event channel and listener for all pairs.
struct Listener {
  rdma_event_channel *ch = nullptr;
  rdma_cm_id *listen = nullptr;
  sockaddr_in addr{};
  Listener() {
    ch = rdma_create_event_channel();
    FUZZ_CHECK(ch && rdma_create_id(ch, &listen, nullptr, RDMA_PS_TCP) == 0);
    sockaddr_in la = loopback(0);  // a free port
    FUZZ_CHECK(rdma_bind_addr(listen, (sockaddr *)&la) == 0 && rdma_listen(listen, 4) == 0);
    addr = loopback(ntohs(rdma_get_src_port(listen)));
  }
};

struct Pair {
  rdma_event_channel *ch = nullptr;
  rdma_cm_id *a_id = nullptr, *b_id = nullptr;
  ibv_pd *pd = nullptr;  // both ends share the PD of the one device context
  ibv_cq *cq_a = nullptr, *cq_b = nullptr;
  ibv_mr *recv_mr = nullptr, *spare_mr = nullptr, *send_mr = nullptr;
  eca::hw::HwConn *a = nullptr, *b = nullptr;
  int posted = 0, completions = 0, inputs = 0;

  bool build(Memory &m, Listener &l) {
    ch = l.ch;
    const sockaddr_in dst = l.addr;
    FUZZ_CHECK(rdma_create_id(ch, &b_id, nullptr, RDMA_PS_TCP) == 0);
    FUZZ_CHECK(rdma_resolve_addr(b_id, nullptr, (sockaddr *)&dst, 2000) == 0);
    rdma_cm_event *ev = get_event(ch, RDMA_CM_EVENT_ADDR_RESOLVED);
    if (!ev) return false;
    rdma_ack_cm_event(ev);
    FUZZ_CHECK(rdma_resolve_route(b_id, 2000) == 0);
    if (!(ev = get_event(ch, RDMA_CM_EVENT_ROUTE_RESOLVED))) return false;
    rdma_ack_cm_event(ev);
    pd = ibv_alloc_pd(b_id->verbs);
    cq_a = ibv_create_cq(b_id->verbs, 256, nullptr, nullptr, 0);
    cq_b = ibv_create_cq(b_id->verbs, 256, nullptr, nullptr, 0);
    const int local = IBV_ACCESS_LOCAL_WRITE, remote = local | IBV_ACCESS_REMOTE_WRITE;
    recv_mr = ibv_reg_mr(pd, m.recv, kRecvLen, remote);
    spare_mr = ibv_reg_mr(pd, m.spare, kSpareLen, local);
    send_mr = ibv_reg_mr(pd, m.send, kSendLen, local);
    FUZZ_CHECK(pd && cq_a && cq_b && recv_mr && spare_mr && send_mr);
    ibv_qp_init_attr ia{};
    ia.qp_type = IBV_QPT_RC;
    ia.cap.max_send_wr = 16;
    ia.cap.max_recv_wr = 64;
    ia.cap.max_send_sge = ia.cap.max_recv_sge = 4;
    ia.send_cq = ia.recv_cq = cq_b;
    FUZZ_CHECK(rdma_create_qp(b_id, pd, &ia) == 0);
    rdma_conn_param cp{};
    cp.initiator_depth = cp.responder_resources = 4;
    FUZZ_CHECK(rdma_connect(b_id, &cp) == 0);
    if (!(ev = get_event(ch, RDMA_CM_EVENT_CONNECT_REQUEST))) return false;
    a_id = ev->id;
    rdma_ack_cm_event(ev);
    ia.send_cq = ia.recv_cq = cq_a;
    FUZZ_CHECK(rdma_create_qp(a_id, pd, &ia) == 0);
    FUZZ_CHECK(rdma_accept(a_id, &cp) == 0);
    for (int i = 0; i < 2; i++) {
      if (!(ev = get_event(ch, RDMA_CM_EVENT_ESTABLISHED))) return false;
      rdma_ack_cm_event(ev);
    }
    a = HwConnProbe::conn(a_id->qp);
    b = HwConnProbe::conn(b_id->qp);
    FUZZ_CHECK(a && b);
    // The adapters exchange identities and map the link after ESTABLISHED.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!(HwConnProbe::ready(a) && HwConnProbe::ready(b))) {
      if (std::chrono::steady_clock::now() > deadline || HwConnProbe::broken(a)) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    HwConnProbe::silence(b);
    // What B's adapter does when it sends from its send MR: the region behind it may be
    // handed to the peer (here: this process) read-only.
    eca::hw::Adapter::instance().name_for(send_mr->lkey, eca::hw::Adapter::instance().pid());
    // A's receives: two segments, then single ones.
    for (int i = 0; i < kRecvs; i++) {
      ibv_sge sge[2];
      int n = 1;
      sge[0] = {uint64_t(uintptr_t(m.recv + 2048 * i)), i == 0 ? 100u : 2048u, recv_mr->lkey};
      if (i == 0) {
        sge[1] = {uint64_t(uintptr_t(m.recv + 200)), 1500, recv_mr->lkey};
        n = 2;
      }
      ibv_recv_wr wr{}, *bad = nullptr;
      wr.wr_id = i;
      wr.sg_list = sge;
      wr.num_sge = n;
      FUZZ_CHECK(ibv_post_recv(a_id->qp, &wr, &bad) == 0);
      posted++;
    }
    return true;
  }

  void drain() {
    ibv_wc wc[16];
    for (int n; (n = ibv_poll_cq(cq_a, 16, wc)) > 0;) {
      completions += n;
      fuzz::print_completions(wc, n);
    }
    while (ibv_poll_cq(cq_b, 16, wc) > 0) {
    }
  }

  void destroy() {
    // Destroying a connected id ends its connection; stray events are skipped by get_event.
    for (rdma_cm_id *id : {a_id, b_id})
      if (id) {
        if (id->qp) rdma_destroy_qp(id);
        rdma_destroy_id(id);
      }
    drain();
    FUZZ_CHECK(completions <= posted);
    for (ibv_mr *mr : {recv_mr, spare_mr, send_mr})
      if (mr) ibv_dereg_mr(mr);
    for (ibv_cq *cq : {cq_a, cq_b})
      if (cq) ibv_destroy_cq(cq);
    if (pd) ibv_dealloc_pd(pd);
    *this = Pair{};
  }
};

Memory *g_mem;
Listener *g_listener;
Pair g_pair;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  fuzz::set_backend_env("hwmodel");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0 || size > 16 * sizeof(Frame)) return 0;
  if (!g_mem) g_mem = new Memory();
  if (!g_listener) g_listener = new Listener();
  Pair &p = g_pair;
  if (!p.a) FUZZ_CHECK(p.build(*g_mem, *g_listener));
  g_mem->new_secret();

  for (size_t off = 0; off < size; off += sizeof(Frame)) {
    Frame f;
    std::memset(static_cast<void *>(&f), 0, sizeof f);
    std::memcpy(static_cast<void *>(&f), data + off, std::min(sizeof f, size - off));
    for (uint32_t i = 0; i < eca::hw::kFrameSges; i++) {
      if ((f.sge[i].addr >> 32) == 0xeca0eca0u)
        f.sge[i].addr = uint64_t(uintptr_t(g_mem->send)) + (f.sge[i].addr & 0xffff);
      else if ((f.sge[i].addr >> 32) == 0xeca0eca3u)
        f.sge[i].addr = uint64_t(uintptr_t(g_mem->secret)) + (f.sge[i].addr & 0xfff);
      if (f.sge[i].stag == 0xeca0) f.sge[i].stag = p.send_mr->lkey;
    }
    if (f.imm == 0xeca0eca1) f.imm = p.recv_mr->rkey;
    if (f.imm == 0xeca0eca2) f.imm = p.spare_mr->rkey;
    f.model_ps = 0;  // visible at once (paced mode would hold it back)
    if (!HwConnProbe::inject(p.b, f)) break;  // ring full: A stopped consuming
  }
  HwConnProbe::deliver(p.a);
  p.drain();
  FUZZ_CHECK(p.completions <= p.posted);
  g_mem->check();
  if (HwConnProbe::broken(p.a) || ++p.inputs >= 256) p.destroy();
  return 0;
}

// Shared test fixture for the verbs/data-path unit tests: one connected RC QP pair in one
// process over loopback, set up through the public rdma_cm API, parameterized over backends.
//
// Backends: a process serves exactly one backend (eca::config() reads ECA_BACKEND once), so
// the parameter list is the process's backend: ECA_TEST_BACKENDS (comma separated) if set,
// else ECA_BACKEND, else "software". A parameter that is not the process's backend is skipped.
// To run a binary for a second backend, register it again with ECA_BACKEND=<name> in its
// environment and --gtest_filter='*/<name>' (see the report / tests/CMakeLists.txt note).
//
// Everything here is header-only (every tests/unit/*_test.cpp is its own executable).
// All waits are bounded (kTimeoutMs by default): a broken implementation fails, never hangs.
#pragma once

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "provider/core/config.hpp"

namespace ecatest {

using Clock = std::chrono::steady_clock;
inline constexpr int kTimeoutMs = 10000;

// ---------------------------------------------------------------------------------------------
// Backends

inline std::string normalize_backend(std::string b) {
  for (auto &c : b) c = (char)std::tolower((unsigned char)c);
  if (b == "hw") return "hwmodel";
  if (b == "sw" || b.empty()) return "software";
  return b;
}

// The backend this process runs (what eca::config() will pick).
inline std::string process_backend() {
  const char *b = std::getenv("ECA_BACKEND");
  return normalize_backend(b ? b : "");
}

inline std::vector<std::string> backend_params() {
  std::vector<std::string> out;
  if (const char *l = std::getenv("ECA_TEST_BACKENDS"); l && *l) {
    std::stringstream ss(l);
    std::string item;
    while (std::getline(ss, item, ','))
      if (!item.empty()) out.push_back(normalize_backend(item));
  }
  if (out.empty()) out.push_back(process_backend());
  return out;
}

// For suites that test the modeled adapter's own machinery: the backends of backend_params()
// that are "hwmodel" (none in a software-backend process, so nothing is listed there as
// skipped; pair with GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST).
inline std::vector<std::string> hwmodel_only_params() {
  std::vector<std::string> out = backend_params();
  std::erase_if(out, [](const std::string &b) { return b != "hwmodel"; });
  return out;
}

inline std::string backend_name(const ::testing::TestParamInfo<std::string> &i) { return i.param; }

inline const char *device_prefix(const std::string &backend) {
  return backend == "hwmodel" ? "ecahw" : "ecasw";
}

// ---------------------------------------------------------------------------------------------
// Small helpers

inline int ms_left(Clock::time_point deadline) {
  auto d = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return d < 0 ? 0 : (int)d;
}

inline bool fd_readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    return r == 1 && (p.revents & POLLIN);
  }
}

inline sockaddr_in loopback_addr(uint16_t port = 0) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

inline const char *wc_status_name(ibv_wc_status s) { return ibv_wc_status_str(s); }

// Waits for the next rdma_cm event on `ch` (bounded); null on timeout. Caller acks.
inline rdma_cm_event *next_cm_event(rdma_event_channel *ch, int timeout_ms = kTimeoutMs) {
  if (!fd_readable(ch->fd, timeout_ms)) return nullptr;
  rdma_cm_event *ev = nullptr;
  if (rdma_get_cm_event(ch, &ev)) return nullptr;
  return ev;
}

// Waits for an event of type `t` on `ch`, acking (and recording) any other event first.
// Returns true when seen; *id_out gets the event's id, *pd_out a copy of its private data.
inline bool wait_cm_event(rdma_event_channel *ch, rdma_cm_event_type t, int timeout_ms = kTimeoutMs,
                          rdma_cm_id **id_out = nullptr, std::vector<uint8_t> *pd_out = nullptr,
                          std::vector<rdma_cm_event_type> *others = nullptr, int *status = nullptr) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    rdma_cm_event *ev = next_cm_event(ch, ms_left(deadline));
    if (!ev) return false;
    bool match = ev->event == t;
    if (match) {
      if (id_out) *id_out = ev->id;
      if (status) *status = ev->status;
      if (pd_out) {
        pd_out->clear();
        if (ev->param.conn.private_data && ev->param.conn.private_data_len) {
          auto *b = static_cast<const uint8_t *>(ev->param.conn.private_data);
          pd_out->assign(b, b + ev->param.conn.private_data_len);
        }
      }
    } else if (others) {
      others->push_back(ev->event);
    }
    rdma_ack_cm_event(ev);
    if (match) return true;
  }
}

// Polls one completion (busy poll, bounded). False on timeout.
inline bool poll_one(ibv_cq *cq, ibv_wc *wc, int timeout_ms = kTimeoutMs) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (uint64_t spins = 0;; spins++) {
    int n = ibv_poll_cq(cq, 1, wc);
    if (n == 1) return true;
    if (n < 0) return false;
    if (Clock::now() >= deadline) return false;
    if (spins > 1000) std::this_thread::yield();
  }
}

// Polls exactly n completions (bounded). Returns what arrived (fewer on timeout).
inline std::vector<ibv_wc> poll_n(ibv_cq *cq, size_t n, int timeout_ms = kTimeoutMs) {
  std::vector<ibv_wc> out;
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  ibv_wc wc[32];
  while (out.size() < n) {
    int k = ibv_poll_cq(cq, (int)std::min<size_t>(32, n - out.size()), wc);
    if (k < 0) break;
    for (int i = 0; i < k; i++) out.push_back(wc[i]);
    if (k == 0) {
      if (Clock::now() >= deadline) break;
      std::this_thread::yield();
    }
  }
  return out;
}

// True if the CQ holds no completion right now.
inline bool cq_empty(ibv_cq *cq) {
  ibv_wc wc;
  int n = ibv_poll_cq(cq, 1, &wc);
  return n == 0;
}

inline ibv_qp_state qp_state(ibv_qp *qp) {
  ibv_qp_attr a{};
  ibv_qp_init_attr ia{};
  if (ibv_query_qp(qp, &a, IBV_QP_STATE, &ia)) return (ibv_qp_state)-1;
  return a.qp_state;
}

// Waits until ibv_query_qp reports `st` (bounded).
inline bool wait_qp_state(ibv_qp *qp, ibv_qp_state st, int timeout_ms = kTimeoutMs) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (qp_state(qp) == st) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // polling, not synchronization
  }
}

// A PD, one CQ for both queues and an RC QP of `depth` WRs (one SGE) on `id`.
inline bool make_rc_qp(rdma_cm_id *id, uint32_t depth, ibv_pd **pd, ibv_cq **cq) {
  *pd = ibv_alloc_pd(id->verbs);
  *cq = ibv_create_cq(id->verbs, (int)(4 * depth), nullptr, nullptr, 0);
  if (!*pd || !*cq) return false;
  ibv_qp_init_attr qa{};
  qa.send_cq = qa.recv_cq = *cq;
  qa.qp_type = IBV_QPT_RC;
  qa.cap.max_send_wr = qa.cap.max_recv_wr = depth;
  qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
  return rdma_create_qp(id, *pd, &qa) == 0;
}

// Tears down a passive side (listener `lid`, accepted `id` with its QP, PD, CQ, one MR) in
// order; every handle may be null and is null afterwards.
inline void teardown_passive(rdma_event_channel *&ch, rdma_cm_id *&lid, rdma_cm_id *&id,
                             ibv_pd *&pd, ibv_cq *&cq, ibv_mr *&mr) {
  if (ch)
    while (rdma_cm_event *ev = next_cm_event(ch, 0)) rdma_ack_cm_event(ev);
  if (id) rdma_destroy_qp(id);
  if (mr) ibv_dereg_mr(mr);
  if (cq) ibv_destroy_cq(cq);
  if (pd) ibv_dealloc_pd(pd);
  if (ch) {
    while (rdma_cm_event *ev = next_cm_event(ch, 0)) rdma_ack_cm_event(ev);
    if (id) rdma_destroy_id(id);
    if (lid) rdma_destroy_id(lid);
    rdma_destroy_event_channel(ch);
  }
  ch = nullptr, lid = id = nullptr, pd = nullptr, cq = nullptr, mr = nullptr;
}

// ---- async events
struct AsyncEv {
  ibv_event_type type;
  void *element;  // qp / cq / srq pointer
};

// Reads async events without acknowledging them (stale events of objects that no longer
// exist must not be acked). Non-blocking.
inline void drain_async(ibv_context *ctx) {
  while (fd_readable(ctx->async_fd, 0)) {
    ibv_async_event ev;
    if (ibv_get_async_event(ctx, &ev)) break;
  }
}

// Waits for an event of `type` on `element` (bounded); other events are recorded in *seen.
inline bool wait_async(ibv_context *ctx, ibv_event_type type, void *element,
                       int timeout_ms = kTimeoutMs, std::vector<AsyncEv> *seen = nullptr) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (!fd_readable(ctx->async_fd, ms_left(deadline))) return false;
    ibv_async_event ev;
    if (ibv_get_async_event(ctx, &ev)) return false;
    AsyncEv a{ev.event_type, ev.element.qp};
    if (seen) seen->push_back(a);
    ibv_ack_async_event(&ev);
    if (a.type == type && a.element == element) return true;
  }
}

// ---- posting
inline ibv_sge sge(const ibv_mr *mr, const void *addr, uint32_t len) {
  return ibv_sge{(uint64_t)(uintptr_t)addr, len, mr ? mr->lkey : 0};
}

struct SendSpec {
  ibv_wr_opcode opcode = IBV_WR_SEND;
  std::vector<ibv_sge> sges;
  unsigned flags = IBV_SEND_SIGNALED;
  uint64_t wr_id = 0;
  uint64_t remote_addr = 0;
  uint32_t rkey = 0;
  uint32_t imm = 0;         // host order; sent as htonl(imm)
  uint32_t invalidate = 0;  // SEND_WITH_INV
};

inline ibv_send_wr make_wr(SendSpec &s) {
  ibv_send_wr wr{};
  wr.wr_id = s.wr_id;
  wr.opcode = s.opcode;
  wr.sg_list = s.sges.empty() ? nullptr : s.sges.data();
  wr.num_sge = (int)s.sges.size();
  wr.send_flags = s.flags;
  wr.wr.rdma.remote_addr = s.remote_addr;
  wr.wr.rdma.rkey = s.rkey;
  if (s.opcode == IBV_WR_RDMA_WRITE_WITH_IMM) wr.imm_data = htonl(s.imm);
  if (s.opcode == IBV_WR_SEND_WITH_INV) wr.invalidate_rkey = s.invalidate;
  return wr;
}

// Posts one WR; returns ibv_post_send's result.
inline int post(ibv_qp *qp, SendSpec s) {
  ibv_send_wr wr = make_wr(s), *bad = nullptr;
  return ibv_post_send(qp, &wr, &bad);
}

// Posts a chain of WRs in one call.
inline int post_chain(ibv_qp *qp, std::vector<SendSpec> &specs, ibv_send_wr **bad_out = nullptr) {
  std::vector<ibv_send_wr> wrs(specs.size());
  for (size_t i = 0; i < specs.size(); i++) {
    wrs[i] = make_wr(specs[i]);
    wrs[i].next = i + 1 < specs.size() ? &wrs[i + 1] : nullptr;
  }
  ibv_send_wr *bad = nullptr;
  int r = wrs.empty() ? 0 : ibv_post_send(qp, wrs.data(), &bad);
  if (bad_out) *bad_out = bad;
  return r;
}

inline int post_recv(ibv_qp *qp, std::vector<ibv_sge> sges, uint64_t wr_id) {
  ibv_recv_wr wr{}, *bad = nullptr;
  wr.wr_id = wr_id;
  wr.sg_list = sges.empty() ? nullptr : sges.data();
  wr.num_sge = (int)sges.size();
  return ibv_post_recv(qp, &wr, &bad);
}

inline int post_srq_recv(ibv_srq *srq, std::vector<ibv_sge> sges, uint64_t wr_id) {
  ibv_recv_wr wr{}, *bad = nullptr;
  wr.wr_id = wr_id;
  wr.sg_list = sges.empty() ? nullptr : sges.data();
  wr.num_sge = (int)sges.size();
  return ibv_post_srq_recv(srq, &wr, &bad);
}

// Posts one (signaled) WR and waits for its completion on `cq`.
inline ibv_wc post_and_wait(ibv_qp *qp, ibv_cq *cq, SendSpec s, int timeout_ms = kTimeoutMs) {
  s.flags |= IBV_SEND_SIGNALED;
  ibv_wc wc{};
  int r = post(qp, s);
  EXPECT_EQ(r, 0) << "ibv_post_send: " << strerror(r);
  if (r) {
    wc.status = IBV_WC_GENERAL_ERR;
    return wc;
  }
  if (!poll_one(cq, &wc, timeout_ms)) {
    ADD_FAILURE() << "no completion for wr_id " << s.wr_id << " within " << timeout_ms << " ms";
    wc.status = IBV_WC_GENERAL_ERR;
    wc.wr_id = ~0ull;
  }
  return wc;
}

// Deterministic test pattern.
inline void fill_pattern(void *p, size_t n, uint32_t seed) {
  auto *b = static_cast<uint8_t *>(p);
  uint32_t x = seed * 2654435761u + 12345;
  for (size_t i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    b[i] = (uint8_t)(x >> 16);
  }
}

// ---------------------------------------------------------------------------------------------
// Guarded memory: [PROT_NONE page][canary .. region .. canary][PROT_NONE page]. Any access by
// the implementation beyond the mapped canary pages faults (the test process dies = fails);
// any write into the canary bytes around `region` is detected by canary_intact().
struct Guarded {
  uint8_t *map = nullptr;
  size_t map_len = 0;
  uint8_t *inner = nullptr;  // first byte after the leading guard page
  size_t inner_len = 0;      // bytes between the guard pages
  uint8_t *region = nullptr;
  size_t len = 0;
  uint8_t canary = 0xA5;

  Guarded() = default;
  Guarded(const Guarded &) = delete;
  Guarded &operator=(const Guarded &) = delete;
  ~Guarded() {
    if (map) ::munmap(map, map_len);
  }
  // `len` bytes at `lead` bytes after the leading guard page; `trail` canary bytes after.
  void init(size_t n, size_t lead = 64, size_t trail = 64, uint8_t can = 0xA5) {
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    inner_len = (lead + n + trail + pg - 1) / pg * pg;
    map_len = inner_len + 2 * pg;
    void *m = ::mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
      ADD_FAILURE() << "mmap: " << strerror(errno);
      return;
    }
    map = static_cast<uint8_t *>(m);
    ::mprotect(map, pg, PROT_NONE);
    ::mprotect(map + pg + inner_len, pg, PROT_NONE);
    inner = map + pg;
    canary = can;
    std::memset(inner, canary, inner_len);
    region = inner + lead;
    len = n;
  }
  // No byte outside [region, region+len) changed.
  ::testing::AssertionResult canary_intact() const {
    for (size_t i = 0; i < inner_len; i++) {
      const uint8_t *p = inner + i;
      if (p >= region && p < region + len) continue;
      if (*p != canary)
        return ::testing::AssertionFailure()
               << "byte at offset " << (long)(p - region) << " from the region changed to 0x"
               << std::hex << (int)*p;
    }
    return ::testing::AssertionSuccess();
  }
  // The region itself still holds `fill` everywhere.
  ::testing::AssertionResult region_is(uint8_t fill) const {
    for (size_t i = 0; i < len; i++)
      if (region[i] != fill)
        return ::testing::AssertionFailure() << "region byte " << i << " is 0x" << std::hex
                                             << (int)region[i];
    return ::testing::AssertionSuccess();
  }
};

// ---------------------------------------------------------------------------------------------
// Connection options and the two sides.

struct ConnOpts {
  uint32_t max_send_wr = 512;
  uint32_t max_recv_wr = 512;
  uint32_t max_sge = 8;
  uint32_t max_inline = 0;
  bool sq_sig_all = false;
  int cqe = 4096;
  bool comp_channel = false;  // CQs of both sides get a completion channel
  // rdma_connect parameters (client = active side)
  uint8_t initiator_depth = 16;
  uint8_t responder_resources = 16;
  // server (passive side) accept parameters
  uint8_t srv_initiator_depth = 16;
  uint8_t srv_responder_resources = 16;
  // server QP gets an SRQ
  bool server_srq = false;
  uint32_t srq_max_wr = 64;
  // client QP through rdma_create_qp_ex with IBV_QP_INIT_ATTR_SEND_OPS_FLAGS
  uint64_t client_send_ops = 0;
  // client send CQ created with ibv_create_cq_ex
  bool client_send_cq_ex = false;
  uint64_t cq_ex_wc_flags = IBV_WC_EX_WITH_BYTE_LEN | IBV_WC_EX_WITH_QP_NUM;
  std::vector<uint8_t> connect_pdata, accept_pdata;
};

struct Side {
  rdma_cm_id *id = nullptr;
  ibv_context *ctx = nullptr;
  ibv_pd *pd = nullptr;
  ibv_comp_channel *cc = nullptr;
  ibv_cq *scq = nullptr;
  ibv_cq *rcq = nullptr;
  ibv_cq_ex *scq_ex = nullptr;  // when created with ibv_create_cq_ex (scq is its ibv_cq)
  ibv_srq *srq = nullptr;
  ibv_qp *qp = nullptr;
};

// ---------------------------------------------------------------------------------------------
// The fixture. Tests call Connect() (or Connect(opts)) first; TearDown disconnects and frees.
class EcaTest : public ::testing::TestWithParam<std::string> {
 protected:
  rdma_event_channel *lch_ = nullptr;  // listener (and the accepted id's) channel
  rdma_event_channel *cch_ = nullptr;  // client channel
  rdma_cm_id *listen_ = nullptr;
  uint16_t port_ = 0;
  Side cli_, srv_;  // cli_ = active side ("A", the requester), srv_ = passive ("B")
  ConnOpts opts_;
  std::vector<ibv_mr *> mrs_;
  std::vector<ibv_pd *> extra_pds_;
  std::vector<std::unique_ptr<uint8_t[]>> bufs_;     // freed after Disconnect()
  std::vector<std::unique_ptr<Guarded>> guarded_;    // freed after Disconnect()
  bool connected_ = false;
  std::vector<uint8_t> cli_conn_pdata_;  // private data the client got with ESTABLISHED

  void SetUp() override {
    if (GetParam() != process_backend())
      GTEST_SKIP() << "this process runs backend '" << process_backend() << "' (ECA_BACKEND); '"
                   << GetParam() << "' needs its own process";
  }

  void TearDown() override {
    Disconnect();
    bufs_.clear();
    guarded_.clear();
  }

  // Memory that lives until after TearDown's disconnect: a peer may still be placing data
  // into it after the requester saw its completion.
  uint8_t *Alloc(size_t n, uint8_t fill = 0) {
    bufs_.emplace_back(new uint8_t[n]);
    std::memset(bufs_.back().get(), fill, n);
    return bufs_.back().get();
  }
  Guarded &NewGuarded(size_t n, size_t lead = 64, size_t trail = 64) {
    guarded_.push_back(std::make_unique<Guarded>());
    guarded_.back()->init(n, lead, trail);
    return *guarded_.back();
  }

  // Registers memory in `pd` (tracked: deregistered in TearDown).
  ibv_mr *Reg(ibv_pd *pd, void *addr, size_t len, int access) {
    ibv_mr *mr = ibv_reg_mr(pd, addr, len, access);
    EXPECT_NE(mr, nullptr) << "ibv_reg_mr: " << strerror(errno);
    if (mr) mrs_.push_back(mr);
    return mr;
  }
  void Dereg(ibv_mr *mr) {
    auto it = std::find(mrs_.begin(), mrs_.end(), mr);
    if (it != mrs_.end()) mrs_.erase(it);
    EXPECT_EQ(0, ibv_dereg_mr(mr));
  }
  ibv_pd *ExtraPd(ibv_context *ctx) {
    ibv_pd *pd = ibv_alloc_pd(ctx);
    EXPECT_NE(pd, nullptr);
    if (pd) extra_pds_.push_back(pd);
    return pd;
  }

  static constexpr int kAllAccess =
      IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;

  bool MakeCqs(Side &s, bool cq_ex) {
    if (opts_.comp_channel) {
      s.cc = ibv_create_comp_channel(s.ctx);
      if (!s.cc) return false;
    }
    if (cq_ex) {
      ibv_cq_init_attr_ex a{};
      a.cqe = (uint32_t)opts_.cqe;
      a.channel = s.cc;
      a.wc_flags = opts_.cq_ex_wc_flags;
      s.scq_ex = ibv_create_cq_ex(s.ctx, &a);
      if (!s.scq_ex) return false;
      s.scq = ibv_cq_ex_to_cq(s.scq_ex);
    } else {
      s.scq = ibv_create_cq(s.ctx, opts_.cqe, &s, s.cc, 0);
    }
    s.rcq = ibv_create_cq(s.ctx, opts_.cqe, &s, s.cc, 0);
    return s.scq && s.rcq;
  }

  bool MakeQp(Side &s, bool client) {
    ibv_qp_init_attr_ex a{};
    a.send_cq = s.scq;
    a.recv_cq = s.rcq;
    a.srq = s.srq;
    a.qp_type = IBV_QPT_RC;
    a.sq_sig_all = opts_.sq_sig_all ? 1 : 0;
    a.cap.max_send_wr = opts_.max_send_wr;
    a.cap.max_recv_wr = s.srq ? 0 : opts_.max_recv_wr;
    a.cap.max_send_sge = opts_.max_sge;
    a.cap.max_recv_sge = s.srq ? 0 : opts_.max_sge;
    a.cap.max_inline_data = opts_.max_inline;
    a.comp_mask = IBV_QP_INIT_ATTR_PD;
    a.pd = s.pd;
    if (client && opts_.client_send_ops) {
      a.comp_mask |= IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
      a.send_ops_flags = opts_.client_send_ops;
    }
    if (rdma_create_qp_ex(s.id, &a)) {
      ADD_FAILURE() << "rdma_create_qp_ex: " << strerror(errno);
      return false;
    }
    s.qp = s.id->qp;
    return s.qp != nullptr;
  }

  // Builds the connected pair. Fatal failures on any step (use ASSERT_NO_FATAL_FAILURE).
  void Connect(const ConnOpts &o = ConnOpts()) {
    opts_ = o;
    lch_ = rdma_create_event_channel();
    ASSERT_NE(lch_, nullptr);
    cch_ = rdma_create_event_channel();
    ASSERT_NE(cch_, nullptr);
    ASSERT_EQ(0, rdma_create_id(lch_, &listen_, nullptr, RDMA_PS_TCP));
    sockaddr_in la = loopback_addr(0);
    ASSERT_EQ(0, rdma_bind_addr(listen_, reinterpret_cast<sockaddr *>(&la))) << strerror(errno);
    ASSERT_EQ(0, rdma_listen(listen_, 16)) << strerror(errno);
    port_ = ntohs(rdma_get_src_port(listen_));
    ASSERT_NE(port_, 0);

    ASSERT_EQ(0, rdma_create_id(cch_, &cli_.id, nullptr, RDMA_PS_TCP));
    sockaddr_in da = loopback_addr(port_);
    ASSERT_EQ(0, rdma_resolve_addr(cli_.id, nullptr, reinterpret_cast<sockaddr *>(&da), 2000));
    ASSERT_TRUE(wait_cm_event(cch_, RDMA_CM_EVENT_ADDR_RESOLVED));
    ASSERT_EQ(0, rdma_resolve_route(cli_.id, 2000));
    ASSERT_TRUE(wait_cm_event(cch_, RDMA_CM_EVENT_ROUTE_RESOLVED));
    cli_.ctx = cli_.id->verbs;
    ASSERT_NE(cli_.ctx, nullptr);
    drain_async(cli_.ctx);  // stale events of earlier tests (never acked: objects are gone)
    cli_.pd = ibv_alloc_pd(cli_.ctx);
    ASSERT_NE(cli_.pd, nullptr);
    ASSERT_TRUE(MakeCqs(cli_, opts_.client_send_cq_ex)) << strerror(errno);
    ASSERT_TRUE(MakeQp(cli_, true));

    rdma_conn_param cp{};
    cp.initiator_depth = opts_.initiator_depth;
    cp.responder_resources = opts_.responder_resources;
    cp.private_data = opts_.connect_pdata.empty() ? nullptr : opts_.connect_pdata.data();
    cp.private_data_len = (uint8_t)opts_.connect_pdata.size();
    ASSERT_EQ(0, rdma_connect(cli_.id, &cp)) << strerror(errno);

    ASSERT_TRUE(wait_cm_event(lch_, RDMA_CM_EVENT_CONNECT_REQUEST, kTimeoutMs, &srv_.id))
        << "no CONNECT_REQUEST";
    srv_.ctx = srv_.id->verbs;
    ASSERT_NE(srv_.ctx, nullptr);
    if (srv_.ctx != cli_.ctx) drain_async(srv_.ctx);
    srv_.pd = ibv_alloc_pd(srv_.ctx);
    ASSERT_NE(srv_.pd, nullptr);
    ASSERT_TRUE(MakeCqs(srv_, false));
    if (opts_.server_srq) {
      ibv_srq_init_attr sa{};
      sa.attr.max_wr = opts_.srq_max_wr;
      sa.attr.max_sge = opts_.max_sge;
      srv_.srq = ibv_create_srq(srv_.pd, &sa);
      ASSERT_NE(srv_.srq, nullptr) << strerror(errno);
    }
    ASSERT_TRUE(MakeQp(srv_, false));
    rdma_conn_param ap{};
    ap.initiator_depth = opts_.srv_initiator_depth;
    ap.responder_resources = opts_.srv_responder_resources;
    ap.private_data = opts_.accept_pdata.empty() ? nullptr : opts_.accept_pdata.data();
    ap.private_data_len = (uint8_t)opts_.accept_pdata.size();
    ASSERT_EQ(0, rdma_accept(srv_.id, &ap)) << strerror(errno);
    ASSERT_TRUE(wait_cm_event(lch_, RDMA_CM_EVENT_ESTABLISHED)) << "server: no ESTABLISHED";
    ASSERT_TRUE(wait_cm_event(cch_, RDMA_CM_EVENT_ESTABLISHED, kTimeoutMs, nullptr,
                              &cli_conn_pdata_))
        << "client: no ESTABLISHED";
    connected_ = true;
    ASSERT_EQ(qp_state(cli_.qp), IBV_QPS_RTS);
    ASSERT_EQ(qp_state(srv_.qp), IBV_QPS_RTS);
  }

  void FreeSide(Side &s) {
    if (s.id && s.id->qp) rdma_destroy_qp(s.id);
    s.qp = nullptr;
    if (s.srq) { EXPECT_EQ(0, ibv_destroy_srq(s.srq)); }
    s.srq = nullptr;
    if (s.scq) { EXPECT_EQ(0, ibv_destroy_cq(s.scq)); }
    if (s.rcq) { EXPECT_EQ(0, ibv_destroy_cq(s.rcq)); }
    s.scq = s.rcq = nullptr;
    s.scq_ex = nullptr;
    if (s.cc) { EXPECT_EQ(0, ibv_destroy_comp_channel(s.cc)); }
    s.cc = nullptr;
  }

  // Disconnects (if connected) and frees everything; safe to call twice.
  void Disconnect() {
    if (cli_.id && connected_) rdma_disconnect(cli_.id);
    if (srv_.id && connected_) rdma_disconnect(srv_.id);
    connected_ = false;
    // Ack whatever is queued (DISCONNECTED etc.) so rdma_destroy_id never waits.
    for (auto *ch : {cch_, lch_})
      if (ch)
        while (rdma_cm_event *ev = next_cm_event(ch, 0)) rdma_ack_cm_event(ev);
    FreeSide(cli_);
    FreeSide(srv_);
    for (ibv_mr *mr : mrs_) ibv_dereg_mr(mr);
    mrs_.clear();
    for (Side *s : {&cli_, &srv_}) {
      if (s->pd) { EXPECT_EQ(0, ibv_dealloc_pd(s->pd)); }
      s->pd = nullptr;
    }
    for (ibv_pd *pd : extra_pds_) EXPECT_EQ(0, ibv_dealloc_pd(pd));
    extra_pds_.clear();
    for (auto *ch : {cch_, lch_})
      if (ch)
        while (rdma_cm_event *ev = next_cm_event(ch, 0)) rdma_ack_cm_event(ev);
    if (srv_.id) rdma_destroy_id(srv_.id);
    if (cli_.id) rdma_destroy_id(cli_.id);
    if (listen_) rdma_destroy_id(listen_);
    srv_.id = cli_.id = listen_ = nullptr;
    if (cch_) rdma_destroy_event_channel(cch_);
    if (lch_) rdma_destroy_event_channel(lch_);
    cch_ = lch_ = nullptr;
    cli_ = Side{};
    srv_ = Side{};
  }
};

#define ECA_INSTANTIATE_BACKENDS(Suite)                                                   \
  INSTANTIATE_TEST_SUITE_P(Backends, Suite, ::testing::ValuesIn(::ecatest::backend_params()), \
                           ::ecatest::backend_name)

}  // namespace ecatest

// libFuzzer target: the software transport's receive path (transport/qp_rx.cpp: MPA FPDUs ->
// DDP segments -> RDMAP messages) on a connected QP, fed by a hostile peer.
//
// Per input: a fresh RC QP on ecasw_lo with receives posted and an RDMA READ and a SEND
// outstanding is attached, exactly as rdma_cm attaches it after MPA, to one end of a
// socketpair; the harness writes the input's stream into the other end, closes it, and
// waits (bounded) until the QP has left RTS. Then it drains the CQ and destroys the QP.
//
// Input layout:
//   byte 0   bit 0: MPA CRC32c negotiated (the fuzzer rarely gets a CRC right: mostly off)
//            bit 1: MPA revision 1 instead of 2
//            bits 2-3: number of extra receives posted (0, 1, 4, 16)
//   rest     the byte stream from the peer, after the MPA exchange
// The four-byte tokens "KEY0".."KEY3" anywhere in the stream are replaced by the rkeys of
// the harness's memory regions (big-endian), so inputs can name valid STags although keys
// are unpredictable; the regions are registered at fixed iovas (kIova*), so tagged offsets
// are stable too. tests/fuzz/fpdu_rx.dict lists the tokens and the header shapes.
//
// Checked beyond "no crash, no sanitizer report": no byte outside the registered windows
// changes (guard zones around every region), the read-only region never changes, the QP
// always leaves RTS once the stream ends (no stall), and no more completions appear than
// work requests were posted.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <infiniband/verbs.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "provider/core/backend.hpp"
#include "provider/core/llp.hpp"
#include "provider/core/objects.hpp"
#include "tests/fuzz/fuzz_util.hpp"

namespace {

constexpr size_t kGuard = 4096;
constexpr uint8_t kCanary = 0xc5;

// A registered window with guard zones on both sides.
struct Region {
  std::vector<uint8_t> mem;  // guard | window | guard
  size_t len = 0;
  ibv_mr *mr = nullptr;
  uint8_t fill = 0;
  uint8_t *win() { return mem.data() + kGuard; }
  void init(ibv_pd *pd, size_t n, uint64_t iova, int access, uint8_t f) {
    len = n;
    fill = f;
    mem.assign(n + 2 * kGuard, kCanary);
    std::memset(win(), fill, len);
    mr = ibv_reg_mr_iova2(pd, win(), len, iova, access);
    FUZZ_CHECK(mr != nullptr);
  }
  void check_guards() const {
    for (size_t i = 0; i < kGuard; i++) {
      FUZZ_CHECK(mem[i] == kCanary);
      FUZZ_CHECK(mem[kGuard + len + i] == kCanary);
    }
  }
};

constexpr uint64_t kIovaRecv = 0x10000;   // KEY0: local write (receive buffers, READ sink)
constexpr uint64_t kIovaWrite = 0x20000;  // KEY1: remote write + remote read + remote atomic
constexpr uint64_t kIovaRead = 0x30000;   // KEY2: remote read only
constexpr uint64_t kIovaNone = 0x40000;   // KEY3: no remote access

struct Harness {
  ibv_context *ctx = nullptr;
  ibv_pd *pd = nullptr;
  ibv_cq *cq = nullptr;
  Region recv, write, read, none;

  Harness() {
    int n = 0;
    ibv_device **list = ibv_get_device_list(&n);
    FUZZ_CHECK(list != nullptr);
    for (int i = 0; i < n && !ctx; i++)
      if (std::strcmp(ibv_get_device_name(list[i]), "ecasw_lo") == 0) ctx = ibv_open_device(list[i]);
    ibv_free_device_list(list);
    FUZZ_CHECK(ctx != nullptr);
    pd = ibv_alloc_pd(ctx);
    cq = ibv_create_cq(ctx, 4096, nullptr, nullptr, 0);
    FUZZ_CHECK(pd && cq);
    recv.init(pd, 16384, kIovaRecv, IBV_ACCESS_LOCAL_WRITE, 0x11);
    write.init(pd, 8192, kIovaWrite,
               IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
                   IBV_ACCESS_REMOTE_ATOMIC,
               0x22);
    read.init(pd, 4096, kIovaRead, IBV_ACCESS_REMOTE_READ, 0x33);
    none.init(pd, 4096, kIovaNone, 0, 0x44);
  }

  // QP_FATAL events of the QPs that a peer's bytes killed: read them so none is lost, and
  // acknowledge those of `live` before it is destroyed. An event for a QP that is already
  // destroyed (posted after the harness looked) is dropped unacknowledged: acknowledging it
  // would touch the freed QP (the library does not purge a destroyed QP's queued events).
  void drain_async_events(ibv_qp *live) {
    pollfd pf{ctx->async_fd, POLLIN, 0};
    while (::poll(&pf, 1, 0) == 1) {
      ibv_async_event ev;
      if (ibv_get_async_event(ctx, &ev) != 0) break;
      if (ev.element.qp == live) ibv_ack_async_event(&ev);
    }
  }

  uint32_t key(int i) const {
    const Region *r[] = {&recv, &write, &read, &none};
    return r[i]->mr->rkey;
  }

  void check_memory() {
    for (Region *r : {&recv, &write, &read, &none}) r->check_guards();
    for (size_t i = 0; i < read.len; i++) FUZZ_CHECK(read.win()[i] == read.fill);
    for (size_t i = 0; i < none.len; i++) FUZZ_CHECK(none.win()[i] == none.fill);
  }
};

Harness &harness() {
  static Harness *h = new Harness();  // lives for the process: the progress thread may outlive main
  return *h;
}

std::vector<uint8_t> substitute_keys(const uint8_t *p, size_t n, const Harness &h) {
  std::vector<uint8_t> out(p, p + n);
  for (size_t i = 0; i + 4 <= out.size(); i++) {
    if (out[i] == 'K' && out[i + 1] == 'E' && out[i + 2] == 'Y' && out[i + 3] >= '0' &&
        out[i + 3] <= '3') {
      uint32_t k = h.key(out[i + 3] - '0');
      out[i] = uint8_t(k >> 24);
      out[i + 1] = uint8_t(k >> 16);
      out[i + 2] = uint8_t(k >> 8);
      out[i + 3] = uint8_t(k);
      i += 3;
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  fuzz::set_backend_env("software");
  setenv("ECA_RX_BATCH", "256", 1);    // headers straddle staging reads: resumption is exercised
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > (1u << 20)) return 0;
  Harness &h = harness();
  const uint8_t ctl = data[0];
  std::vector<uint8_t> stream = substitute_keys(data + 1, size - 1, h);

  ibv_qp_init_attr ia{};
  ia.send_cq = ia.recv_cq = h.cq;
  ia.qp_type = IBV_QPT_RC;
  ia.cap.max_send_wr = 8;
  ia.cap.max_recv_wr = 32;
  ia.cap.max_send_sge = ia.cap.max_recv_sge = 4;
  ibv_qp *qp = ibv_create_qp(h.pd, &ia);
  FUZZ_CHECK(qp != nullptr);
  eca::Qp *q = eca::Qp::from(qp);
  {  // INIT, as rdma_cm leaves a QP before connecting it
    ibv_qp_attr at{};
    at.qp_state = IBV_QPS_INIT;
    at.port_num = 1;
    at.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
    FUZZ_CHECK(ibv_modify_qp(qp, &at, IBV_QP_STATE | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS |
                                          IBV_QP_PKEY_INDEX) == 0);
  }

  // Receives: one of two segments, one single small, then 0/1/4/16 more of 512 bytes.
  int posted = 0;
  auto post_recv = [&](std::initializer_list<std::pair<uint64_t, uint32_t>> segs) {
    ibv_sge sge[4];
    int k = 0;
    for (auto [off, len] : segs) sge[k++] = {kIovaRecv + off, len, h.recv.mr->lkey};
    ibv_recv_wr wr{}, *bad = nullptr;
    wr.wr_id = 1000 + posted;
    wr.sg_list = sge;
    wr.num_sge = k;
    FUZZ_CHECK(ibv_post_recv(qp, &wr, &bad) == 0);
    posted++;
  };
  post_recv({{0, 100}, {200, 1000}});
  post_recv({{2048, 16}});
  static const int kExtra[] = {0, 1, 4, 16};
  for (int i = 0; i < kExtra[(ctl >> 2) & 3]; i++) post_recv({{uint64_t(4096 + 512 * i), 512}});

  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  eca::LlpConnection llp{eca::OwnedFd(sv[0])};
  llp.crc = ctl & 1;
  llp.mpa_rev = (ctl & 2) ? 1 : 2;
  llp.initiator = true;
  llp.ird = 4;
  llp.ord = 4;
  q->ird = llp.ird;
  q->ord = llp.ord;
  auto eng = q->ctx->dev->backend->attach(*q, std::move(llp));
  FUZZ_CHECK(eng != nullptr);
  q->attach_engine(std::move(eng));

  // Work of our own that the peer's bytes may answer: an RDMA READ (sink STag KEY0, sink TO
  // 0x13000, 1024 bytes, from the peer's STag 0x1234 at 0x1000) and a SEND. Local SGEs use the
  // regions' iovas.
  int sends = 0;
  {
    ibv_sge s{kIovaRecv + 12288, 1024, h.recv.mr->lkey};
    ibv_send_wr wr{}, *bad = nullptr;
    wr.wr_id = 1;
    wr.opcode = IBV_WR_RDMA_READ;
    wr.sg_list = &s;
    wr.num_sge = 1;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.wr.rdma.remote_addr = 0x1000;
    wr.wr.rdma.rkey = 0x1234;
    if (ibv_post_send(qp, &wr, &bad) == 0) sends++;
    ibv_sge s2{kIovaWrite, 64, h.write.mr->lkey};
    wr.wr_id = 2;
    wr.opcode = IBV_WR_SEND;
    wr.sg_list = &s2;
    if (ibv_post_send(qp, &wr, &bad) == 0) sends++;
  }

  // Feed the stream while draining what the QP sends back (READ responses, TERMINATE).
  size_t off = 0;
  bool shut = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::vector<uint8_t> sink(65536);
  int completions = 0;
  ibv_wc wc[32];
  for (;;) {
    if (off == stream.size() && !shut) {
      ::shutdown(sv[1], SHUT_WR);
      shut = true;
    }
    int n = ibv_poll_cq(h.cq, 32, wc);
    FUZZ_CHECK(n >= 0);
    completions += n;
    fuzz::print_completions(wc, n);
    if (shut && q->state.load() != IBV_QPS_RTS) break;
    FUZZ_CHECK(std::chrono::steady_clock::now() < deadline);  // the stream ended: QP must react
    pollfd pf{sv[1], short(POLLIN | (shut ? 0 : POLLOUT)), 0};
    ::poll(&pf, 1, 1);
    if (pf.revents & POLLIN) (void)::recv(sv[1], sink.data(), sink.size(), MSG_DONTWAIT);
    if (!shut && (pf.revents & POLLOUT)) {
      ssize_t w = ::send(sv[1], stream.data() + off, stream.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) off += size_t(w);
      else if (w < 0 && errno != EAGAIN) off = stream.size();  // the QP closed its end
    }
    if (pf.revents & (POLLERR | POLLHUP) && !shut) off = stream.size();
  }

  h.drain_async_events(qp);
  FUZZ_CHECK(ibv_destroy_qp(qp) == 0);
  // Whatever was still queued is flushed; no work request completes twice.
  for (int n; (n = ibv_poll_cq(h.cq, 32, wc)) > 0;) completions += n;
  FUZZ_CHECK(completions <= posted + sends);
  ::close(sv[1]);
  h.check_memory();
  return 0;
}

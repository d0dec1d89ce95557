// Wire formats (transport/wire/ddp_rdmap.hpp, transport/crc32c.hpp) and hostile input: a raw
// TCP peer that completes a hand-built MPA handshake with an rdma_cm listener and then sends
// malformed FPDUs. The server QP must go to ERR, answer with a TERMINATE (RDMAP opcode 7,
// untagged queue 2) where one is due, and the process must survive.
#include "tests/unit/fixture.hpp"

#include <sys/ioctl.h>

#include <netinet/tcp.h>

#include <random>

#include "transport/crc32c.hpp"
#include "transport/wire/atomic.hpp"
#include "transport/wire/ddp_rdmap.hpp"

using namespace ecatest;
namespace w = eca::wire;

namespace {

// ---------------------------------------------------------------------------------------------
// Helpers of ddp_rdmap.hpp and crc32c

TEST(Wire, OpcodeTable) {
  EXPECT_EQ(w::kOps.size(), 16u);
  EXPECT_EQ(w::kNumOpcodes, 16u);
  int valid = 0;
  for (size_t i = 0; i < w::kOps.size(); i++) valid += w::kOps[i].valid;
  EXPECT_EQ(valid, 12) << "RFC 5040 opcodes 0..7 and RFC 7306 8..11";
  for (size_t i = 12; i < 16; i++) EXPECT_FALSE(w::kOps[i].valid) << i;
  auto op = [](w::Opcode o) { return w::kOps[static_cast<size_t>(o)]; };
  EXPECT_EQ(w::kTaggedHdr, 16u);
  EXPECT_EQ(w::kUntaggedHdr, 20u);
  EXPECT_TRUE(op(w::Opcode::Write).tagged);
  EXPECT_TRUE(op(w::Opcode::ReadResponse).tagged);
  EXPECT_EQ(op(w::Opcode::Write).hdr_len, 16u);
  EXPECT_FALSE(op(w::Opcode::ReadRequest).tagged);
  EXPECT_EQ(op(w::Opcode::ReadRequest).hdr_len, 48u);
  EXPECT_EQ(op(w::Opcode::ReadRequest).queue, w::Queue::ReadRequest);
  EXPECT_EQ(op(w::Opcode::Send).hdr_len, 20u);
  EXPECT_EQ(op(w::Opcode::Terminate).hdr_len, 24u);
  EXPECT_EQ(op(w::Opcode::Terminate).queue, w::Queue::Terminate);
  EXPECT_EQ(static_cast<int>(w::Queue::Terminate), 2);
  EXPECT_EQ(op(w::Opcode::ImmediateData).hdr_len, 28u);
  EXPECT_TRUE(op(w::Opcode::SendSolicited).solicited);
  EXPECT_TRUE(op(w::Opcode::SendSolicitedInvalidate).solicited);
  EXPECT_TRUE(op(w::Opcode::SendSolicitedInvalidate).invalidate);
  EXPECT_TRUE(op(w::Opcode::SendInvalidate).invalidate);
  EXPECT_FALSE(op(w::Opcode::Send).solicited);
  EXPECT_EQ(op(w::Opcode::AtomicRequest).hdr_len, 72u) << "RFC 7306: 20 + 52";
  EXPECT_EQ(op(w::Opcode::AtomicRequest).queue, w::Queue::ReadRequest);
  EXPECT_FALSE(op(w::Opcode::AtomicRequest).tagged);
  EXPECT_EQ(op(w::Opcode::AtomicResponse).hdr_len, 32u) << "RFC 7306: 20 + 12";
  EXPECT_EQ(static_cast<int>(w::Queue::AtomicResponse), 3);
  EXPECT_EQ(op(w::Opcode::AtomicResponse).queue, w::Queue::AtomicResponse);
  EXPECT_FALSE(op(w::Opcode::AtomicResponse).tagged);
  EXPECT_EQ(w::kMaxHdr, 72u);
  for (size_t i = 0; i < 12; i++) EXPECT_LE(w::kOps[i].hdr_len, w::kMaxHdr);
}

TEST(Wire, PutCtrl) {
  for (size_t i = 0; i < 12; i++) {
    for (bool last : {false, true}) {
      uint8_t h[4] = {0xAA, 0xAA, 0xAA, 0xAA};
      auto o = static_cast<w::Opcode>(i);
      w::put_ctrl(h, o, last);
      EXPECT_EQ(h[0], 0xAA) << "MPA length untouched";
      EXPECT_EQ(h[1], 0xAA);
      EXPECT_EQ((h[2] & 0x80) != 0, w::kOps[i].tagged) << "T bit, opcode " << i;
      EXPECT_EQ((h[2] & 0x40) != 0, last) << "L bit";
      EXPECT_EQ(h[2] & 0x3c, 0) << "reserved bits";
      EXPECT_EQ(h[2] & 0x03, 1) << "DDP version 1";
      EXPECT_EQ(h[3] >> 6, 1) << "RDMAP version 1";
      EXPECT_EQ(h[3] & 0x30, 0);
      EXPECT_EQ(h[3] & 0x0f, (int)i);
    }
  }
}

TEST(Wire, TermWordRoundTrip) {
  for (int layer = 0; layer < 3; layer++)
    for (int et = 0; et < 16; et++)
      for (int code = 0; code < 256; code += 17) {
        w::TermInfo t{static_cast<w::TermLayer>(layer), (uint8_t)et, (uint8_t)code};
        uint32_t word = w::term_word(t);
        EXPECT_EQ(word & 0xffff, 0u) << "M/D/R and reserved bits are zero";
        EXPECT_EQ(word >> 28, (uint32_t)layer);
        EXPECT_EQ((word >> 24) & 0xf, (uint32_t)et);
        EXPECT_EQ((word >> 16) & 0xff, (uint32_t)code);
        w::TermInfo b = w::term_parse(word);
        EXPECT_EQ(b.layer, t.layer);
        EXPECT_EQ(b.etype, t.etype);
        EXPECT_EQ(b.code, t.code);
      }
  // Known value: DDP (1), tagged buffer error (1), invalid STag (0)
  EXPECT_EQ(w::term_word({w::TermLayer::Ddp, 1, 0}), 0x11000000u);
  EXPECT_EQ(w::term_word({w::TermLayer::Llp, 0, 2}), 0x20020000u);
}

TEST(Wire, MpaPadAllResidues) {
  for (size_t n = 0; n < 64; n++) {
    size_t pad = w::mpa_pad(n);
    EXPECT_LT(pad, 4u);
    EXPECT_EQ((2 + n + pad) % 4, 0u) << n;
  }
  EXPECT_EQ(w::mpa_pad(18), 0u);  // an empty SEND: 2 + 18 = 20
  EXPECT_EQ(w::mpa_pad(19), 3u);
  EXPECT_EQ(w::mpa_pad(20), 2u);
  EXPECT_EQ(w::mpa_pad(21), 1u);
}

TEST(Wire, ByteOrderHelpers) {
  uint8_t b[8];
  w::st16(b, 0x1234);
  EXPECT_EQ(b[0], 0x12);
  EXPECT_EQ(w::ld16(b), 0x1234);
  w::st32(b, 0xA1B2C3D4);
  EXPECT_EQ(b[0], 0xA1);
  EXPECT_EQ(b[3], 0xD4);
  EXPECT_EQ(w::ld32(b), 0xA1B2C3D4u);
  w::st64(b, 0x0102030405060708ull);
  EXPECT_EQ(b[0], 1);
  EXPECT_EQ(b[7], 8);
  EXPECT_EQ(w::ld64(b), 0x0102030405060708ull);
}

TEST(Wire, Crc32cKnownAnswer) {
  const char *s = "123456789";
  EXPECT_EQ(eca::transport::crc32c(s, 9), 0xE3069283u);
  // incremental == one shot, at every split point
  for (size_t k = 0; k <= 9; k++) {
    uint32_t st = eca::transport::crc32c_update(eca::transport::kCrcInit, s, k);
    st = eca::transport::crc32c_update(st, s + k, 9 - k);
    EXPECT_EQ(eca::transport::crc32c_final(st), 0xE3069283u) << k;
  }
  // 32 zero bytes (iSCSI test vector, RFC 3720 B.4)
  uint8_t z[32] = {};
  EXPECT_EQ(eca::transport::crc32c(z, 32), 0x8A9136AAu);
  uint8_t f[32];
  std::memset(f, 0xff, 32);
  EXPECT_EQ(eca::transport::crc32c(f, 32), 0x62A8AB43u);
}


// ---------------------------------------------------------------------------------------------
// RFC 7306 Atomic Request / Atomic Response, as byte strings written from the RFC's figures
// (not from our encoder): MPA length, DDP/RDMAP control (T=0 L=1 DV=1 | RV=1 opcode), RsvdULP,
// QN, MSN, MO, then the body.

const std::vector<uint8_t> kRfcFetchAdd = {
    0x00, 0x46,              // MPA ULPDU length: 72 - 2 = 70
    0x41, 0x4A,              // untagged, last, DDP v1 | RDMAP v1, opcode 1010b Atomic Request
    0x00, 0x00, 0x00, 0x00,  // RsvdULP
    0x00, 0x00, 0x00, 0x01,  // QN 1 (with RDMA Read Requests)
    0x00, 0x00, 0x00, 0x05,  // MSN 5
    0x00, 0x00, 0x00, 0x00,  // MO 0
    0x00, 0x00, 0x00, 0x00,  // Reserved | AOpCode 0000b FetchAdd
    0x11, 0x22, 0x33, 0x44,  // Request Identifier
    0xAA, 0xBB, 0xCC, 0xDD,  // Remote STag
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,  // Remote Tagged Offset
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,  // Add Data
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // Add Mask (no field boundaries)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // Compare Data (unused)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // Compare Mask (unused)
};

const std::vector<uint8_t> kRfcCompareSwap = {
    0x00, 0x46, 0x41, 0x4A,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x02,  // AOpCode 0010b CompareSwap
    0x00, 0x00, 0x00, 0x07,  // Request Identifier
    0x00, 0x00, 0x12, 0x34,  // Remote STag
    0x00, 0x00, 0x7f, 0x00, 0x00, 0x00, 0x10, 0x08,  // Remote Tagged Offset
    0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x00, 0x00, 0x01,  // Swap Data
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,  // Swap Mask: all bits
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2A,  // Compare Data
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,  // Compare Mask: all bits
};

const std::vector<uint8_t> kRfcAtomicResponse = {
    0x00, 0x1E,              // 32 - 2 = 30
    0x41, 0x4B,              // opcode 1011b Atomic Response
    0x00, 0x00, 0x00, 0x00,  // RsvdULP
    0x00, 0x00, 0x00, 0x03,  // QN 3
    0x00, 0x00, 0x00, 0x09,  // MSN 9
    0x00, 0x00, 0x00, 0x00,  // MO 0
    0x11, 0x22, 0x33, 0x44,  // Original Request Identifier
    0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,  // Original Remote Data Value
};

std::vector<uint8_t> encode_request(uint32_t msn, const w::AtomicRequest &r) {
  std::vector<uint8_t> h(w::kUntaggedHdr + w::kAtomicReqBody, 0xEE);
  std::memset(h.data() + 4, 0, 16);
  w::st16(h.data(), (uint16_t)(h.size() - 2));
  w::put_ctrl(h.data(), w::Opcode::AtomicRequest, true);
  w::st32(h.data() + w::off::kQn, static_cast<uint32_t>(w::kOps[0xA].queue));
  w::st32(h.data() + w::off::kMsn, msn);
  w::put_atomic_request(h.data(), r);
  return h;
}

// A decoded CompareSwap as the verbs operation sends it (all-ones masks).
void ExpectVerbsCompareSwap(const w::AtomicRequest &d, uint32_t stag, uint64_t to,
                            uint64_t compare, uint64_t swap) {
  EXPECT_EQ(d.aopcode, static_cast<uint8_t>(w::AtomicOp::CompareSwap));
  EXPECT_EQ(d.stag, stag);
  EXPECT_EQ(d.to, to);
  EXPECT_EQ(d.add_swap, swap);
  EXPECT_EQ(d.add_swap_mask, ~0ull);
  EXPECT_EQ(d.compare, compare);
  EXPECT_EQ(d.compare_mask, ~0ull);
}

TEST(Wire, AtomicRequestMatchesRfcBytes) {
  auto fa = w::verbs_fetch_add(0xAABBCCDD, 0x0102030405060708ull, 0x10);
  fa.req_id = 0x11223344;
  EXPECT_EQ(encode_request(5, fa), kRfcFetchAdd);
  auto cs = w::verbs_compare_swap(0x1234, 0x7f0000001008ull, 42, 0xDEADBEEF00000001ull);
  cs.req_id = 7;
  EXPECT_EQ(encode_request(2, cs), kRfcCompareSwap);

  const w::AtomicRequest d = w::get_atomic_request(kRfcCompareSwap.data());
  EXPECT_EQ(d.req_id, 7u);
  ExpectVerbsCompareSwap(d, 0x1234, 0x7f0000001008ull, 42, 0xDEADBEEF00000001ull);
  // Reserved bits of the AOpCode word are ignored on receipt.
  auto b = kRfcFetchAdd;
  b[20] = 0xFF;
  b[23] = 0xF0;
  EXPECT_EQ(w::get_atomic_request(b.data()).aopcode, 0);
}

TEST(Wire, AtomicResponseMatchesRfcBytes) {
  std::vector<uint8_t> h(w::kUntaggedHdr + w::kAtomicRespBody, 0);
  w::st16(h.data(), (uint16_t)(h.size() - 2));
  w::put_ctrl(h.data(), w::Opcode::AtomicResponse, true);
  w::st32(h.data() + w::off::kQn, static_cast<uint32_t>(w::Queue::AtomicResponse));
  w::st32(h.data() + w::off::kMsn, 9);
  w::put_atomic_response(h.data(), {0x11223344, 0x8000000000000100ull});
  EXPECT_EQ(h, kRfcAtomicResponse);
  const w::AtomicResponse r = w::get_atomic_response(kRfcAtomicResponse.data());
  EXPECT_EQ(r.req_id, 0x11223344u);
  EXPECT_EQ(r.orig, 0x8000000000000100ull);
}

// The operations' semantics (RFC 7306 §5.2.1.3), including the masked forms.
TEST(Wire, AtomicNewValueTable) {
  struct Row {
    const char *name;
    w::AtomicOp op;
    uint64_t data, mask, cmp, cmp_mask, before, after;
  } rows[] = {
      {"add", w::AtomicOp::FetchAdd, 5, 0, 0, 0, 10, 15},
      {"add wraps", w::AtomicOp::FetchAdd, 2, 0, 0, 0, ~0ull, 1},
      {"add, two 32-bit fields: no carry across bit 31", w::AtomicOp::FetchAdd, 0x0000000100000001ull,
       0x8000000080000000ull, 0, 0, 0x00000001FFFFFFFFull, 0x0000000200000000ull},
      {"swap all", w::AtomicOp::Swap, 0x1234, ~0ull, 0, 0, 0xFFFF, 0x1234},
      {"swap low byte", w::AtomicOp::Swap, 0xAB, 0xFF, 0, 0, 0x1111, 0x11AB},
      {"cmpswap equal", w::AtomicOp::CompareSwap, 7, ~0ull, 3, ~0ull, 3, 7},
      {"cmpswap differs", w::AtomicOp::CompareSwap, 7, ~0ull, 4, ~0ull, 3, 3},
      {"cmpswap compares masked bits only", w::AtomicOp::CompareSwap, 0x99, 0xFF, 0x10, 0xF0,
       0x1F, 0x99},
  };
  for (const Row &r : rows) {
    w::AtomicRequest q;
    q.aopcode = static_cast<uint8_t>(r.op);
    q.add_swap = r.data;
    q.add_swap_mask = r.mask;
    q.compare = r.cmp;
    q.compare_mask = r.cmp_mask;
    EXPECT_EQ(w::atomic_new_value(q, r.before), r.after) << r.name;
  }
  EXPECT_TRUE(w::atomic_op_valid(0));
  EXPECT_TRUE(w::atomic_op_valid(2));
  for (uint8_t op = 3; op < 16; op++) EXPECT_FALSE(w::atomic_op_valid(op)) << (int)op;
}

// ---------------------------------------------------------------------------------------------
// Hostile input

// Builds an FPDU: `hdr` starts with the 2 MPA length bytes (filled here unless `len_override`),
// then payload, pad, and the CRC field (RFC 5044: present in every FPDU): the little-endian
// CRC32c over all preceding bytes when `crc`, zero otherwise.
std::vector<uint8_t> fpdu(std::vector<uint8_t> hdr, const std::vector<uint8_t> &payload, bool crc,
                          int len_override = -1, bool corrupt_crc = false) {
  size_t ulpdu = hdr.size() - 2 + payload.size();
  w::st16(hdr.data(), (uint16_t)(len_override >= 0 ? len_override : (int)ulpdu));
  std::vector<uint8_t> f = hdr;
  f.insert(f.end(), payload.begin(), payload.end());
  f.resize(f.size() + w::mpa_pad(ulpdu), 0);
  uint32_t c = crc ? eca::transport::crc32c(f.data(), f.size()) : 0;
  if (corrupt_crc) c ^= 0x1;
  uint32_t le = htole32(c);
  uint8_t b[4];
  std::memcpy(b, &le, 4);
  f.insert(f.end(), b, b + 4);
  return f;
}

std::vector<uint8_t> untagged_hdr(w::Opcode op, uint32_t qn, uint32_t msn, uint32_t mo,
                                  size_t body = 0) {
  std::vector<uint8_t> h(w::kUntaggedHdr + body, 0);
  w::put_ctrl(h.data(), op, true);
  w::st32(h.data() + w::off::kQn, qn);
  w::st32(h.data() + w::off::kMsn, msn);
  w::st32(h.data() + w::off::kMo, mo);
  return h;
}

std::vector<uint8_t> tagged_hdr(w::Opcode op, uint32_t stag, uint64_t to) {
  std::vector<uint8_t> h(w::kTaggedHdr, 0);
  w::put_ctrl(h.data(), op, true);
  w::st32(h.data() + w::off::kStag, stag);
  w::st64(h.data() + w::off::kTo, to);
  return h;
}

bool send_all(int fd, const std::vector<uint8_t> &b) {
  size_t off = 0;
  while (off < b.size()) {
    ssize_t r = ::send(fd, b.data() + off, b.size() - off, MSG_NOSIGNAL);
    if (r <= 0) return false;
    off += (size_t)r;
  }
  return true;
}

bool recv_exact(int fd, uint8_t *p, size_t n, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (n) {
    if (!fd_readable(fd, ms_left(deadline))) return false;
    ssize_t r = ::recv(fd, p, n, 0);
    if (r <= 0) return false;
    p += r;
    n -= (size_t)r;
  }
  return true;
}

struct RxFrame {
  std::vector<uint8_t> bytes;  // whole FPDU incl. length, pad, CRC
  uint8_t opcode = 0xff;
  bool tagged = false;
  bool crc_ok = true;
};

// Reads one FPDU from the raw socket (bounded). False on EOF/timeout.
bool read_fpdu(int fd, bool crc, RxFrame *out, int timeout_ms = kTimeoutMs) {
  uint8_t lb[2];
  if (!recv_exact(fd, lb, 2, timeout_ms)) return false;
  size_t ulpdu = w::ld16(lb);
  size_t rest = ulpdu + w::mpa_pad(ulpdu) + 4;  // the CRC field is always there
  out->bytes.assign(lb, lb + 2);
  out->bytes.resize(2 + rest);
  if (!recv_exact(fd, out->bytes.data() + 2, rest, timeout_ms)) return false;
  if (out->bytes.size() >= 4) {
    out->tagged = out->bytes[2] & 0x80;
    out->opcode = out->bytes[3] & 0x0f;
  }
  size_t body = out->bytes.size() - 4;
  uint32_t le;
  std::memcpy(&le, out->bytes.data() + body, 4);
  // Without negotiated CRC the field carries zero (as Linux siw sends it).
  out->crc_ok = le32toh(le) == (crc ? eca::transport::crc32c(out->bytes.data(), body) : 0u);
  return true;
}

class Hostile : public ::testing::TestWithParam<std::string> {
 protected:
  rdma_event_channel *ch_ = nullptr;
  rdma_cm_id *listen_ = nullptr;
  uint16_t port_ = 0;

  // One accepted connection from a raw TCP peer.
  struct Conn {
    int fd = -1;
    bool crc = false;
    rdma_cm_id *id = nullptr;
    ibv_pd *pd = nullptr, *other_pd = nullptr;
    ibv_cq *cq = nullptr;
    std::vector<uint8_t> rbuf, wbuf, obuf;
    std::vector<uint64_t> abuf;  // REMOTE_ATOMIC words (RFC 7306 tests)
    ibv_mr *rmr = nullptr, *wmr = nullptr, *omr = nullptr, *amr = nullptr;
    ibv_qp *qp() { return id ? id->qp : nullptr; }
  };

  void SetUp() override {
    if (GetParam() != process_backend()) GTEST_SKIP() << "backend " << process_backend();
    ch_ = rdma_create_event_channel();
    ASSERT_NE(ch_, nullptr);
    ASSERT_EQ(0, rdma_create_id(ch_, &listen_, nullptr, RDMA_PS_TCP));
    sockaddr_in a = loopback_addr(0);
    ASSERT_EQ(0, rdma_bind_addr(listen_, reinterpret_cast<sockaddr *>(&a)));
    ASSERT_EQ(0, rdma_listen(listen_, 16));
    port_ = ntohs(rdma_get_src_port(listen_));
  }
  void TearDown() override {
    if (listen_) rdma_destroy_id(listen_);
    if (ch_) {
      while (rdma_cm_event *ev = next_cm_event(ch_, 0)) rdma_ack_cm_event(ev);
      rdma_destroy_event_channel(ch_);
    }
  }

  // Raw TCP connect + hand-built MPA request; server accepts with a QP; MPA reply read.
  void Open(Conn &c, bool want_crc = true) {
    c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(c.fd, 0);
    int one = 1;
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in a = loopback_addr(port_);
    ASSERT_EQ(0, ::connect(c.fd, reinterpret_cast<sockaddr *>(&a), sizeof a)) << strerror(errno);
    // MPA request: key, flags (C, and the E bit Linux peers set on rev 2), rev 2,
    // PD_Length 4, IRD 16 / ORD 16 (no peer-to-peer, no RTR).
    std::vector<uint8_t> req;
    const char *key = "MPA ID Req Frame";
    req.insert(req.end(), key, key + 16);
    req.push_back(want_crc ? 0x50 : 0x10);
    req.push_back(2);
    req.push_back(0);
    req.push_back(4);
    req.push_back(0);
    req.push_back(16);
    req.push_back(0);
    req.push_back(16);
    ASSERT_TRUE(send_all(c.fd, req));

    ASSERT_TRUE(wait_cm_event(ch_, RDMA_CM_EVENT_CONNECT_REQUEST, kTimeoutMs, &c.id))
        << "no CONNECT_REQUEST for the raw peer";
    drain_async(c.id->verbs);
    c.pd = ibv_alloc_pd(c.id->verbs);
    c.other_pd = ibv_alloc_pd(c.id->verbs);
    c.cq = ibv_create_cq(c.id->verbs, 64, nullptr, nullptr, 0);
    ASSERT_TRUE(c.pd && c.other_pd && c.cq);
    ibv_qp_init_attr qa{};
    qa.send_cq = qa.recv_cq = c.cq;
    qa.qp_type = IBV_QPT_RC;
    qa.cap.max_send_wr = qa.cap.max_recv_wr = 16;
    qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
    ASSERT_EQ(0, rdma_create_qp(c.id, c.pd, &qa));
    c.rbuf.assign(4 * 256, 0);
    c.wbuf.assign(4096, 0xEE);
    c.obuf.assign(4096, 0x5C);
    c.rmr = ibv_reg_mr(c.pd, c.rbuf.data(), c.rbuf.size(), IBV_ACCESS_LOCAL_WRITE);
    c.wmr = ibv_reg_mr(c.pd, c.wbuf.data(), c.wbuf.size(),
                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
    c.omr = ibv_reg_mr(c.other_pd, c.obuf.data(), c.obuf.size(),
                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
    c.abuf.assign(8, 0);
    c.amr = ibv_reg_mr(c.pd, c.abuf.data(), c.abuf.size() * 8,
                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC);
    ASSERT_TRUE(c.rmr && c.wmr && c.omr && c.amr);
    for (int i = 0; i < 4; i++)
      ASSERT_EQ(0, post_recv(c.qp(), {sge(c.rmr, c.rbuf.data() + i * 256, 256)}, 10 + i));
    rdma_conn_param cp{};
    cp.initiator_depth = cp.responder_resources = 16;
    ASSERT_EQ(0, rdma_accept(c.id, &cp)) << strerror(errno);

    uint8_t rep[20];
    ASSERT_TRUE(recv_exact(c.fd, rep, 20, kTimeoutMs)) << "no MPA reply";
    ASSERT_EQ(0, memcmp(rep, "MPA ID Rep Frame", 16));
    ASSERT_EQ(rep[16] & 0x20, 0) << "rejected";
    ASSERT_EQ(rep[17], 2);
    uint16_t pdl = (uint16_t)(rep[18] << 8 | rep[19]);
    ASSERT_GE(pdl, 4);
    ASSERT_LE(pdl, 512);
    std::vector<uint8_t> pd(pdl);
    ASSERT_TRUE(recv_exact(c.fd, pd.data(), pdl, kTimeoutMs));
    c.crc = rep[16] & 0x40;
    // RFC 5044 7.1.2: CRC is used when either side sets C; a responder may insist on it.
    if (want_crc) {
      EXPECT_TRUE(c.crc) << "the responder must honour the requested CRC";
    }
    ASSERT_TRUE(wait_cm_event(ch_, RDMA_CM_EVENT_ESTABLISHED)) << "server: no ESTABLISHED";
    ASSERT_EQ(qp_state(c.qp()), IBV_QPS_RTS);
  }

  void Close(Conn &c) {
    if (c.fd >= 0) ::close(c.fd);
    c.fd = -1;
    if (c.id) {
      while (rdma_cm_event *ev = next_cm_event(ch_, 0)) rdma_ack_cm_event(ev);
      rdma_destroy_qp(c.id);
    }
    if (c.rmr) { ibv_dereg_mr(c.rmr); }
    if (c.wmr) { ibv_dereg_mr(c.wmr); }
    if (c.omr) { ibv_dereg_mr(c.omr); }
    if (c.amr) { ibv_dereg_mr(c.amr); }
    if (c.cq) { EXPECT_EQ(0, ibv_destroy_cq(c.cq)); }
    if (c.pd) { EXPECT_EQ(0, ibv_dealloc_pd(c.pd)); }
    if (c.other_pd) { EXPECT_EQ(0, ibv_dealloc_pd(c.other_pd)); }
    if (c.id) {
      while (rdma_cm_event *ev = next_cm_event(ch_, 0)) rdma_ack_cm_event(ev);
      rdma_destroy_id(c.id);
    }
    c = Conn{};
  }

  // A valid SEND (MSN msn) of `data`; the server must deliver it (proves the framing).
  void ValidSend(Conn &c, uint32_t msn, const std::string &data) {
    std::vector<uint8_t> pl(data.begin(), data.end());
    ASSERT_TRUE(send_all(c.fd, fpdu(untagged_hdr(w::Opcode::Send, 0, msn, 0), pl, c.crc)));
    ibv_wc wc{};
    ASSERT_TRUE(poll_one(c.cq, &wc)) << "valid SEND not delivered";
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
    EXPECT_EQ(wc.byte_len, data.size());
    EXPECT_EQ(0, memcmp(c.rbuf.data() + (wc.wr_id - 10) * 256, data.data(), data.size()));
  }

  // Expects a TERMINATE as the next frame from the server (when `term`), the server QP in
  // ERR, and the rest of its posted receives flushed. Returns the TERMINATE control word.
  uint32_t ExpectTerminated(Conn &c, bool term, int receives_left) {
    uint32_t word = 0;
    if (term) {
      RxFrame f;
      EXPECT_TRUE(read_fpdu(c.fd, c.crc, &f)) << "no TERMINATE from the server";
      EXPECT_EQ(f.opcode, 7) << "RDMAP opcode of the first frame";
      EXPECT_FALSE(f.tagged);
      EXPECT_TRUE(f.crc_ok) << "TERMINATE with a bad CRC";
      if (f.bytes.size() >= 24) {
        EXPECT_EQ(w::ld32(f.bytes.data() + w::off::kQn), 2u) << "untagged queue 2";
        EXPECT_EQ(w::ld32(f.bytes.data() + w::off::kMsn), 1u);
        EXPECT_EQ(f.bytes[3] >> 6, 1) << "RDMAP version";
        word = w::ld32(f.bytes.data() + w::off::kTermCtrl);
      } else {
        ADD_FAILURE() << "TERMINATE shorter than its header: " << f.bytes.size();
      }
    }
    EXPECT_TRUE(wait_qp_state(c.qp(), IBV_QPS_ERR)) << "server QP not in ERR";
    auto wcs = poll_n(c.cq, (size_t)receives_left);
    EXPECT_EQ(wcs.size(), (size_t)receives_left) << "receives not flushed";
    for (auto &x : wcs) EXPECT_EQ(x.status, IBV_WC_WR_FLUSH_ERR) << wc_status_name(x.status);
    // The server closes after the TERMINATE: EOF within the bound.
    uint8_t b[256];
    auto deadline = Clock::now() + std::chrono::milliseconds(kTimeoutMs);
    bool eof = false;
    while (!eof && fd_readable(c.fd, ms_left(deadline))) {
      ssize_t r = ::recv(c.fd, b, sizeof b, 0);
      if (r <= 0) eof = true;
    }
    EXPECT_TRUE(eof) << "server did not close the stream";
    return word;
  }
};

TEST_P(Hostile, ValidFramesAreAccepted) {
  Conn c;
  ASSERT_NO_FATAL_FAILURE(Open(c));
  ASSERT_NO_FATAL_FAILURE(ValidSend(c, 1, "hello"));
  ASSERT_NO_FATAL_FAILURE(ValidSend(c, 2, std::string(200, 'x')));
  // WRITE to a valid STag lands in the MR
  std::vector<uint8_t> pl = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  ASSERT_TRUE(send_all(c.fd, fpdu(tagged_hdr(w::Opcode::Write, c.wmr->rkey,
                                             (uint64_t)(uintptr_t)c.wbuf.data() + 100),
                                  pl, c.crc)));
  // READ request of a valid region: the response carries the data (and orders behind the
  // WRITE, so it shows the WRITE was placed).
  auto rr = untagged_hdr(w::Opcode::ReadRequest, 1, 1, 0, w::kReadReqBody);
  w::st32(rr.data() + w::off::kSinkStag, 0x4242);
  w::st64(rr.data() + w::off::kSinkTo, 0x1000);
  w::st32(rr.data() + w::off::kReadSize, 16);
  w::st32(rr.data() + w::off::kSrcStag, c.wmr->rkey);
  w::st64(rr.data() + w::off::kSrcTo, (uint64_t)(uintptr_t)c.wbuf.data() + 96);
  ASSERT_TRUE(send_all(c.fd, fpdu(rr, {}, c.crc)));
  RxFrame f;
  ASSERT_TRUE(read_fpdu(c.fd, c.crc, &f));
  EXPECT_EQ(f.opcode, 2) << "READ response";
  EXPECT_TRUE(f.tagged);
  EXPECT_TRUE(f.crc_ok);
  ASSERT_EQ(f.bytes.size(), (size_t)(2 + 14 + 16 + w::mpa_pad(30) + 4));
  EXPECT_EQ(w::ld32(f.bytes.data() + w::off::kStag), 0x4242u);
  EXPECT_EQ(w::ld64(f.bytes.data() + w::off::kTo), 0x1000u);
  const uint8_t *d = f.bytes.data() + 16;
  EXPECT_EQ(d[0], 0xEE);
  EXPECT_EQ(d[3], 0xEE);
  EXPECT_EQ(0, memcmp(d + 4, pl.data(), 9));
  EXPECT_EQ(d[13], 0xEE);
  EXPECT_EQ(qp_state(c.qp()), IBV_QPS_RTS);
  Close(c);
}

TEST_P(Hostile, CrcNotRequestedAndTooLongSend) {
  Conn c;
  ASSERT_NO_FATAL_FAILURE(Open(c, false));
  ASSERT_NO_FATAL_FAILURE(ValidSend(c, 1, "no crc"));
  // A SEND of 300 bytes for a 256-byte receive.
  ASSERT_TRUE(send_all(c.fd, fpdu(untagged_hdr(w::Opcode::Send, 0, 2, 0),
                                  std::vector<uint8_t>(300, 3), c.crc)));
  ibv_wc wc{};
  ASSERT_TRUE(poll_one(c.cq, &wc));
  EXPECT_EQ(wc.status, IBV_WC_LOC_LEN_ERR) << wc_status_name(wc.status);
  uint32_t word = ExpectTerminated(c, true, 2);
  EXPECT_EQ(w::term_parse(word).layer, w::TermLayer::Ddp);
  EXPECT_EQ(w::term_parse(word).etype, w::kDdpUntaggedError);
  EXPECT_EQ(w::term_parse(word).code, w::kDdpUTooLong);
  Close(c);
}

// CRC off (the request has C=0, the responder follows): FPDUs still carry the 4-byte CRC
// field. The SEND and the READ request are byte strings written from RFC 5044 6.1 / RFC 5041
// / RFC 5040, and the READ response must come back byte for byte as the RFCs lay it out.
TEST_P(Hostile, CrcOffFramesKeepTheCrcField) {
  Conn c;
  ASSERT_NO_FATAL_FAILURE(Open(c, false));
  ASSERT_FALSE(c.crc) << "the responder must not force CRC on an initiator that declines it";
  // SEND "hi!": ULPDU length 21 (18 header + 3), DDP ctrl T=0 L=1 version 1 (0x41), RDMAP
  // version 1 opcode Send (0x43), 4 reserved bytes, QN 0, MSN 1, MO 0, the payload, one
  // byte of pad ((2 + 21) % 4 = 3), then the CRC field, zero.
  const std::vector<uint8_t> send_hi = {
      0x00, 0x15, 0x41, 0x43, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 'h',  'i',  '!',  0x00,
      0x00, 0x00, 0x00, 0x00};
  ASSERT_TRUE(send_all(c.fd, send_hi));
  ibv_wc wc{};
  ASSERT_TRUE(poll_one(c.cq, &wc)) << "CRC-less SEND not delivered";
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  ASSERT_EQ(wc.byte_len, 3u);
  EXPECT_EQ(0, memcmp(c.rbuf.data() + (wc.wr_id - 10) * 256, "hi!", 3));
  // READ request for 8 bytes of the write-enabled MR, sink STag 0x00004242 TO 0x1000.
  std::vector<uint8_t> rr = {0x00, 0x2e, 0x41, 0x41, 0x00, 0x00, 0x00, 0x00,
                             0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01,
                             0x00, 0x00, 0x00, 0x00,                          // MO
                             0x00, 0x00, 0x42, 0x42,                          // sink STag
                             0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,  // sink TO
                             0x00, 0x00, 0x00, 0x08};                         // size
  uint8_t b[12];
  w::st32(b, c.wmr->rkey);
  w::st64(b + 4, (uint64_t)(uintptr_t)c.wbuf.data());
  rr.insert(rr.end(), b, b + 12);
  rr.insert(rr.end(), {0x00, 0x00, 0x00, 0x00});  // (2+46) % 4 = 0: no pad; zero CRC field
  ASSERT_EQ(rr.size(), 52u);
  ASSERT_TRUE(send_all(c.fd, rr));
  // READ response: ULPDU 22 (14 + 8), T=1 L=1 (0xc1), opcode Read Response (0x42), sink STag,
  // sink TO, 8 bytes of 0xEE, no pad ((2 + 22) % 4 = 0), the CRC field, zero.
  const std::vector<uint8_t> want = {0x00, 0x16, 0xc1, 0x42, 0x00, 0x00, 0x42, 0x42,
                                     0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,
                                     0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
                                     0x00, 0x00, 0x00, 0x00};
  std::vector<uint8_t> got(want.size());
  ASSERT_TRUE(recv_exact(c.fd, got.data(), got.size(), kTimeoutMs)) << "no READ response";
  EXPECT_EQ(got, want);
  EXPECT_EQ(qp_state(c.qp()), IBV_QPS_RTS);
  Close(c);
}

struct BadCase {
  const char *name;
  // builds the malformed bytes for connection c
  std::function<std::vector<uint8_t>(Hostile *, bool crc, ibv_mr *wmr, ibv_mr *omr)> build;
  bool terminate;
  int layer, etype, code;  // expected TERMINATE word fields (-1: not checked)
};

TEST_P(Hostile, MalformedFpdusTerminate) {
  std::vector<BadCase> cases = {
      {"bad opcode",
       [](Hostile *, bool crc, ibv_mr *, ibv_mr *) {
         auto h = untagged_hdr(w::Opcode::Send, 0, 2, 0);
         h[3] = (uint8_t)(w::kRdmapVersion | 0x0c);
         return fpdu(h, {1, 2, 3}, crc);
       },
       true, 0, w::kRdmapRemoteOperation, w::kRdmapUnexpectedOpcode},
      {"bad DDP version",
       [](Hostile *, bool crc, ibv_mr *, ibv_mr *) {
         auto h = untagged_hdr(w::Opcode::Send, 0, 2, 0);
         h[2] = (uint8_t)((h[2] & ~0x03) | 0x02);
         return fpdu(h, {1, 2, 3}, crc);
       },
       true, 1, w::kDdpUntaggedError, w::kDdpUInvalidVersion},
      {"bad RDMAP version",
       [](Hostile *, bool crc, ibv_mr *, ibv_mr *) {
         auto h = untagged_hdr(w::Opcode::Send, 0, 2, 0);
         h[3] = (uint8_t)(0x80 | static_cast<int>(w::Opcode::Send));
         return fpdu(h, {1, 2, 3}, crc);
       },
       true, 0, w::kRdmapRemoteOperation, w::kRdmapInvalidVersion},
      {"MPA length shorter than the header",
       [](Hostile *, bool crc, ibv_mr *, ibv_mr *) {
         return fpdu(untagged_hdr(w::Opcode::Send, 0, 2, 0), {}, crc, 10);
       },
       true, 2, -1, w::kMpaInvalidFpdu},
      {"bad CRC",
       [](Hostile *, bool crc, ibv_mr *, ibv_mr *) {
         return fpdu(untagged_hdr(w::Opcode::Send, 0, 2, 0), {9, 9, 9, 9}, crc, -1, true);
       },
       true, 2, -1, w::kMpaCrcError},
      {"WRITE to an invalid STag",
       [](Hostile *, bool crc, ibv_mr *wmr, ibv_mr *) {
         return fpdu(tagged_hdr(w::Opcode::Write, wmr->rkey ^ 0xff00, 0x1000),
                     std::vector<uint8_t>(16, 7), crc);
       },
       true, 1, w::kDdpTaggedError, w::kDdpTInvalidStag},
      {"WRITE beyond the MR",
       [](Hostile *, bool crc, ibv_mr *wmr, ibv_mr *) {
         return fpdu(tagged_hdr(w::Opcode::Write, wmr->rkey,
                                (uint64_t)(uintptr_t)wmr->addr + wmr->length - 8),
                     std::vector<uint8_t>(16, 7), crc);
       },
       true, 1, w::kDdpTaggedError, w::kDdpTBaseBounds},
      {"READ request with an STag of another PD",
       [](Hostile *, bool crc, ibv_mr *, ibv_mr *omr) {
         auto rr = untagged_hdr(w::Opcode::ReadRequest, 1, 1, 0, w::kReadReqBody);
         w::st32(rr.data() + w::off::kSinkStag, 0x4242);
         w::st64(rr.data() + w::off::kSinkTo, 0);
         w::st32(rr.data() + w::off::kReadSize, 64);
         w::st32(rr.data() + w::off::kSrcStag, omr->rkey);
         w::st64(rr.data() + w::off::kSrcTo, (uint64_t)(uintptr_t)omr->addr);
         return fpdu(rr, {}, crc);
       },
       true, 0, w::kRdmapRemoteProtection, w::kRdmapStagNotAssoc},
      {"SEND with a wrong MSN",
       [](Hostile *, bool crc, ibv_mr *, ibv_mr *) {
         return fpdu(untagged_hdr(w::Opcode::Send, 0, 7, 0), {1}, crc);
       },
       true, 1, w::kDdpUntaggedError, w::kDdpUInvalidMsn},
      {"SEND on an invalid queue",
       [](Hostile *, bool crc, ibv_mr *, ibv_mr *) {
         return fpdu(untagged_hdr(w::Opcode::Send, 5, 2, 0), {1}, crc);
       },
       true, 1, w::kDdpUntaggedError, w::kDdpUInvalidQn},
      {"garbage",
       [](Hostile *, bool, ibv_mr *, ibv_mr *) { return std::vector<uint8_t>(64, 0xff); },
       true, -1, -1, -1},
  };
  for (auto &bc : cases) {
    SCOPED_TRACE(bc.name);
    Conn c;
    ASSERT_NO_FATAL_FAILURE(Open(c));
    ASSERT_NO_FATAL_FAILURE(ValidSend(c, 1, "before"));
    std::vector<uint8_t> bad = bc.build(this, c.crc, c.wmr, c.omr);
    ASSERT_TRUE(send_all(c.fd, bad));
    uint32_t word = ExpectTerminated(c, bc.terminate, 3);
    if (bc.terminate) {
      w::TermInfo t = w::term_parse(word);
      if (bc.layer >= 0) { EXPECT_EQ((int)t.layer, bc.layer) << "TERMINATE layer"; }
      if (bc.etype >= 0) { EXPECT_EQ((int)t.etype, bc.etype) << "TERMINATE error type"; }
      if (bc.code >= 0) { EXPECT_EQ((int)t.code, bc.code) << "TERMINATE error code"; }
    }
    EXPECT_TRUE(std::all_of(c.obuf.begin(), c.obuf.end(), [](uint8_t b) { return b == 0x5C; }));
    // nothing outside [100, 109) etc.: the bad WRITEs placed nothing
    EXPECT_TRUE(std::all_of(c.wbuf.begin(), c.wbuf.end(), [](uint8_t b) { return b == 0xEE; }))
        << "a rejected WRITE placed data";
    Close(c);
  }
}

TEST_P(Hostile, PeerTerminateEndsConnection) {
  Conn c;
  ASSERT_NO_FATAL_FAILURE(Open(c));
  ASSERT_NO_FATAL_FAILURE(ValidSend(c, 1, "x"));
  auto t = untagged_hdr(w::Opcode::Terminate, 2, 1, 0, w::kTerminateBody);
  w::st32(t.data() + w::off::kTermCtrl, w::term_word({w::TermLayer::Rdmap, 1, 2}));
  ASSERT_TRUE(send_all(c.fd, fpdu(t, {}, c.crc)));
  ExpectTerminated(c, false, 3);  // no TERMINATE in answer to a TERMINATE
  Close(c);
}

// A TERMINATE that cannot leave (the peer reads nothing and our socket is full) must not hold
// up the progress thread: the erring QP reaches ERR at once and another connection is served
// meanwhile. (A transmitter that waited for socket room on the progress thread, up to a
// second per attempt, fails both: nothing happens on any connection for that second.)
TEST_P(Hostile, BlockedTerminateDoesNotStallOtherConnections) {
  Conn a, b;
  ASSERT_NO_FATAL_FAILURE(Open(a));
  ASSERT_NO_FATAL_FAILURE(Open(b));
  // Fill a's socket: a large RDMA WRITE towards the raw peer, which never reads.
  std::vector<uint8_t> big(32u << 20, 0x33);
  ibv_mr *bmr = ibv_reg_mr(a.pd, big.data(), big.size(), IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(bmr, nullptr);
  SendSpec sp;
  sp.opcode = IBV_WR_RDMA_WRITE;
  sp.sges = {sge(bmr, big.data(), (uint32_t)big.size())};
  sp.rkey = 0x1234;
  sp.remote_addr = 0;
  sp.flags = 0;
  ASSERT_EQ(0, post(a.qp(), sp));
  // Wait until the raw peer's receive queue stops growing: both socket buffers are full.
  int queued = -1, prev = -2;
  for (int i = 0; i < 2000 && queued != prev; i++) {
    prev = queued;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // sampling, not synchronisation
    ASSERT_EQ(0, ::ioctl(a.fd, FIONREAD, &queued));
  }
  ASSERT_GT(queued, 0);
  ASSERT_LT((size_t)queued, big.size()) << "the socket never filled";
  // The bad frame: a's receive side detects it while its transmit side is stuck.
  auto t0 = Clock::now();
  ASSERT_TRUE(send_all(a.fd, fpdu(untagged_hdr(w::Opcode::Send, 0, 7, 0), {1}, a.crc)));
  ASSERT_TRUE(wait_qp_state(a.qp(), IBV_QPS_ERR)) << "the erring QP did not reach ERR";
  ASSERT_NO_FATAL_FAILURE(ValidSend(b, 1, "served meanwhile"));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  EXPECT_LT(ms, 900) << "the progress thread waited for socket room (" << ms << " ms)";
  EXPECT_EQ(0, ibv_dereg_mr(bmr));
  Close(a);
  Close(b);
}

TEST_P(Hostile, RandomBytesAfterHandshake) {
  std::mt19937 rng(20240607u);
  const int kIters = 40;
  for (int it = 0; it < kIters; it++) {
    SCOPED_TRACE("iteration " + std::to_string(it));
    Conn c;
    ASSERT_NO_FATAL_FAILURE(Open(c));
    std::vector<uint8_t> junk;
    if (it % 2 == 0) {
      junk.resize(1 + rng() % 600);
      for (auto &b : junk) b = (uint8_t)rng();
    } else {
      // a valid SEND with a few random bytes flipped
      std::vector<uint8_t> pl(1 + rng() % 200);
      for (auto &b : pl) b = (uint8_t)rng();
      junk = fpdu(untagged_hdr(w::Opcode::Send, 0, 1, 0), pl, c.crc);
      int flips = 1 + (int)(rng() % 4);
      for (int k = 0; k < flips; k++) junk[rng() % junk.size()] ^= (uint8_t)(1u << (rng() % 8));
    }
    (void)send_all(c.fd, junk);  // the server may close early
    // Whatever the server made of it, closing the raw peer ends the connection.
    ::shutdown(c.fd, SHUT_WR);
    EXPECT_TRUE(wait_qp_state(c.qp(), IBV_QPS_ERR)) << "server QP not in ERR after EOF";
    // Each of the four posted receives completes exactly once: consumed by a SEND that got
    // through, failed, or flushed when the QP went to ERR; nothing more.
    auto wcs = poll_n(c.cq, 4, 2000);
    EXPECT_EQ(wcs.size(), 4u);
    EXPECT_TRUE(poll_n(c.cq, 1, 100).empty()) << "a receive completed twice";
    for (auto &x : wcs)
      EXPECT_TRUE(x.status == IBV_WC_WR_FLUSH_ERR || x.status == IBV_WC_SUCCESS ||
                  x.status == IBV_WC_LOC_LEN_ERR || x.status == IBV_WC_REM_INV_REQ_ERR)
          << wc_status_name(x.status);
    EXPECT_TRUE(std::all_of(c.obuf.begin(), c.obuf.end(), [](uint8_t b) { return b == 0x5C; }))
        << "memory of another PD changed";
    Close(c);
  }
  // The listener still serves a well-behaved peer.
  Conn c;
  ASSERT_NO_FATAL_FAILURE(Open(c));
  ASSERT_NO_FATAL_FAILURE(ValidSend(c, 1, "still alive"));
  Close(c);
}

// ---------------------------------------------------------------------------------------------
// RFC 7306 atomics against a raw peer: our QP as responder and as requester.

std::vector<uint8_t> atomic_request_fpdu(bool crc, uint32_t msn, const w::AtomicRequest &r) {
  auto h = untagged_hdr(w::Opcode::AtomicRequest, 1, msn, 0, w::kAtomicReqBody);
  w::put_atomic_request(h.data(), r);
  return fpdu(h, {}, crc);
}

// Reads an Atomic Response; returns {req_id, orig}. Checks the untagged header of queue 3.
w::AtomicResponse read_atomic_response(int fd, bool crc, uint32_t msn) {
  RxFrame f;
  EXPECT_TRUE(read_fpdu(fd, crc, &f)) << "no Atomic Response";
  EXPECT_EQ(f.opcode, 0xB);
  EXPECT_FALSE(f.tagged);
  EXPECT_TRUE(f.crc_ok);
  if (f.bytes.size() != 32 + 4) {
    ADD_FAILURE() << "Atomic Response of " << f.bytes.size() << " bytes";
    return {};
  }
  EXPECT_EQ(w::ld16(f.bytes.data()), 30u);
  EXPECT_EQ(f.bytes[2], 0x41) << "L=1, DV=1";
  EXPECT_EQ(w::ld32(f.bytes.data() + w::off::kQn), 3u);
  EXPECT_EQ(w::ld32(f.bytes.data() + w::off::kMsn), msn);
  EXPECT_EQ(w::ld32(f.bytes.data() + w::off::kMo), 0u);
  return w::get_atomic_response(f.bytes.data());
}

TEST_P(Hostile, AtomicRequestsAreExecutedAndAnswered) {
  Conn c;
  ASSERT_NO_FATAL_FAILURE(Open(c));
  const uint64_t word = (uint64_t)(uintptr_t)&c.abuf[2];
  c.abuf[2] = 40;
  auto fa = w::verbs_fetch_add(c.amr->rkey, word, 2);
  fa.req_id = 101;
  ASSERT_TRUE(send_all(c.fd, atomic_request_fpdu(c.crc, 1, fa)));
  auto r = read_atomic_response(c.fd, c.crc, 1);
  EXPECT_EQ(r.req_id, 101u);
  EXPECT_EQ(r.orig, 40u);
  // CompareSwap that matches, then one that does not (the word stays).
  auto cs = w::verbs_compare_swap(c.amr->rkey, word, 42, 0x5555);
  cs.req_id = 102;
  ASSERT_TRUE(send_all(c.fd, atomic_request_fpdu(c.crc, 2, cs)));
  r = read_atomic_response(c.fd, c.crc, 2);
  EXPECT_EQ(r.req_id, 102u);
  EXPECT_EQ(r.orig, 42u);
  cs.req_id = 103;
  ASSERT_TRUE(send_all(c.fd, atomic_request_fpdu(c.crc, 3, cs)));
  r = read_atomic_response(c.fd, c.crc, 3);
  EXPECT_EQ(r.orig, 0x5555u);
  // Swap (AOpCode 1), masked: the low 16 bits only.
  w::AtomicRequest sw;
  sw.aopcode = static_cast<uint8_t>(w::AtomicOp::Swap);
  sw.req_id = 104;
  sw.stag = c.amr->rkey;
  sw.to = word;
  sw.add_swap = 0xABCD0000BEEFull;
  sw.add_swap_mask = 0xFFFF;
  ASSERT_TRUE(send_all(c.fd, atomic_request_fpdu(c.crc, 4, sw)));
  r = read_atomic_response(c.fd, c.crc, 4);
  EXPECT_EQ(r.orig, 0x5555u);
  // A READ behind the atomics on the same queue (MSN 5) sees their result.
  auto rr = untagged_hdr(w::Opcode::ReadRequest, 1, 5, 0, w::kReadReqBody);
  w::st32(rr.data() + w::off::kSinkStag, 0x77);
  w::st64(rr.data() + w::off::kSinkTo, 0);
  w::st32(rr.data() + w::off::kReadSize, 8);
  w::st32(rr.data() + w::off::kSrcStag, c.amr->rkey);
  w::st64(rr.data() + w::off::kSrcTo, word);
  ASSERT_TRUE(send_all(c.fd, fpdu(rr, {}, c.crc)));
  RxFrame f;
  ASSERT_TRUE(read_fpdu(c.fd, c.crc, &f));
  EXPECT_EQ(f.opcode, 2);
  uint64_t seen = 0;
  ASSERT_GE(f.bytes.size(), 16u + 8u);
  std::memcpy(&seen, f.bytes.data() + 16, 8);
  EXPECT_EQ(seen, 0xBEEFull);
  EXPECT_EQ(c.abuf[2], 0xBEEFull);
  EXPECT_EQ(c.abuf[1], 0u);
  EXPECT_EQ(c.abuf[3], 0u);
  EXPECT_EQ(qp_state(c.qp()), IBV_QPS_RTS);
  Close(c);
}

// RFC 7306 ordering at the responder: READs and atomics on the same QP are answered in the
// order they arrived, each seeing the effect of the ones before it and none after it.
TEST_P(Hostile, AtomicsAreOrderedWithReads) {
  Conn c;
  ASSERT_NO_FATAL_FAILURE(Open(c));
  const uint64_t word = (uint64_t)(uintptr_t)&c.abuf[2];
  c.abuf[2] = 40;
  auto read = [&](uint32_t msn, uint32_t sink_stag) {
    auto rr = untagged_hdr(w::Opcode::ReadRequest, 1, msn, 0, w::kReadReqBody);
    w::st32(rr.data() + w::off::kSinkStag, sink_stag);
    w::st64(rr.data() + w::off::kSinkTo, 0);
    w::st32(rr.data() + w::off::kReadSize, 8);
    w::st32(rr.data() + w::off::kSrcStag, c.amr->rkey);
    w::st64(rr.data() + w::off::kSrcTo, word);
    return fpdu(rr, {}, c.crc);
  };
  auto fa = w::verbs_fetch_add(c.amr->rkey, word, 2);
  fa.req_id = 1;
  auto cs = w::verbs_compare_swap(c.amr->rkey, word, 42, 7);
  cs.req_id = 2;
  // All five requests in one write: they reach the responder together.
  std::vector<uint8_t> all;
  for (const auto &part : {read(1, 0x51), atomic_request_fpdu(c.crc, 2, fa), read(3, 0x52),
                           atomic_request_fpdu(c.crc, 4, cs), read(5, 0x53)})
    all.insert(all.end(), part.begin(), part.end());
  ASSERT_TRUE(send_all(c.fd, all));
  auto read_response = [&](uint32_t sink_stag) {
    RxFrame f;
    EXPECT_TRUE(read_fpdu(c.fd, c.crc, &f));
    EXPECT_EQ(f.opcode, 2) << "READ response for sink 0x" << std::hex << sink_stag;
    uint64_t v = ~0ull;
    if (f.bytes.size() >= 24 && f.opcode == 2) {
      EXPECT_EQ(w::ld32(f.bytes.data() + w::off::kStag), sink_stag);
      std::memcpy(&v, f.bytes.data() + 16, 8);
    }
    return v;
  };
  EXPECT_EQ(read_response(0x51), 40u);
  auto r = read_atomic_response(c.fd, c.crc, 1);
  EXPECT_EQ(r.req_id, 1u);
  EXPECT_EQ(r.orig, 40u);
  EXPECT_EQ(read_response(0x52), 42u);
  r = read_atomic_response(c.fd, c.crc, 2);
  EXPECT_EQ(r.req_id, 2u);
  EXPECT_EQ(r.orig, 42u);
  EXPECT_EQ(read_response(0x53), 7u);
  EXPECT_EQ(qp_state(c.qp()), IBV_QPS_RTS);
  Close(c);
}

// The application ends the connection in the middle of a Send: the receive the transport took
// for it is owed a completion like every receive still posted (engine/conn_end.hpp: close()
// flushes the receive an engine holds).
TEST_P(Hostile, CloseInTheMiddleOfASendFlushesItsReceive) {
  Conn c;
  ASSERT_NO_FATAL_FAILURE(Open(c));
  // The first segment of a Send (L clear)...
  auto first = untagged_hdr(w::Opcode::Send, 0, 1, 0);
  w::put_ctrl(first.data(), w::Opcode::Send, false);
  std::vector<uint8_t> all = fpdu(first, std::vector<uint8_t>(64, 0xAB), c.crc);
  // ...then an RDMA Read Request: its answer shows the server has handled the segment.
  auto rr = untagged_hdr(w::Opcode::ReadRequest, 1, 1, 0, w::kReadReqBody);
  w::st32(rr.data() + w::off::kSinkStag, 0x61);
  w::st64(rr.data() + w::off::kSinkTo, 0);
  w::st32(rr.data() + w::off::kReadSize, 8);
  w::st32(rr.data() + w::off::kSrcStag, c.wmr->rkey);
  w::st64(rr.data() + w::off::kSrcTo, (uint64_t)(uintptr_t)c.wbuf.data());
  const auto rrf = fpdu(rr, {}, c.crc);
  all.insert(all.end(), rrf.begin(), rrf.end());
  ASSERT_TRUE(send_all(c.fd, all));
  RxFrame f;
  ASSERT_TRUE(read_fpdu(c.fd, c.crc, &f));
  ASSERT_EQ(f.opcode, 2) << "READ response";
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_ERR;
  ASSERT_EQ(0, ibv_modify_qp(c.qp(), &a, IBV_QP_STATE));
  auto wcs = poll_n(c.cq, 4);
  EXPECT_EQ(wcs.size(), 4u) << "a posted receive got no completion";
  for (size_t i = 0; i < wcs.size(); i++) {
    EXPECT_EQ(wcs[i].wr_id, 10u + i) << "receives complete in order";
    EXPECT_EQ(wcs[i].status, IBV_WC_WR_FLUSH_ERR) << wc_status_name(wcs[i].status);
  }
  EXPECT_TRUE(cq_empty(c.cq));
  Close(c);
}

// Every error path of a received Atomic Request ends in the TERMINATE of RFC 7306 / RFC 5040
// and leaves the target word alone.
TEST_P(Hostile, BadAtomicRequestsTerminate) {
  struct Case {
    const char *name;
    std::function<std::vector<uint8_t>(Conn &)> build;
    int layer, etype, code;
  };
  auto fa = [](uint32_t stag, uint64_t to) { return w::verbs_fetch_add(stag, to, 1); };
  std::vector<Case> cases = {
      {"misaligned Remote Tagged Offset",
       [&](Conn &c) { return atomic_request_fpdu(c.crc, 1, fa(c.amr->rkey, (uintptr_t)&c.abuf[2] + 4)); },
       0, w::kRdmapRemoteOperation, w::kRdmapInvalidAtomicRequest},
      {"reserved AOpCode",
       [&](Conn &c) {
         auto r = fa(c.amr->rkey, (uintptr_t)&c.abuf[2]);
         r.aopcode = 5;
         return atomic_request_fpdu(c.crc, 1, r);
       },
       0, w::kRdmapRemoteOperation, w::kRdmapInvalidAtomicRequest},
      {"no REMOTE_ATOMIC right",
       [&](Conn &c) { return atomic_request_fpdu(c.crc, 1, fa(c.wmr->rkey, (uintptr_t)c.wbuf.data() + 8)); },
       0, w::kRdmapRemoteProtection, w::kRdmapAccessRights},
      {"invalid STag",
       [&](Conn &c) { return atomic_request_fpdu(c.crc, 1, fa(c.amr->rkey ^ 0x100, (uintptr_t)&c.abuf[2])); },
       0, w::kRdmapRemoteProtection, w::kRdmapInvalidStag},
      {"STag of another PD",
       [&](Conn &c) { return atomic_request_fpdu(c.crc, 1, fa(c.omr->rkey, (uintptr_t)c.obuf.data())); },
       0, w::kRdmapRemoteProtection, w::kRdmapStagNotAssoc},
      {"word beyond the MR",
       [&](Conn &c) { return atomic_request_fpdu(c.crc, 1, fa(c.amr->rkey, (uintptr_t)(c.abuf.data() + 8))); },
       0, w::kRdmapRemoteProtection, w::kRdmapBaseBounds},
      {"Atomic Request with a payload",
       [&](Conn &c) {
         auto h = untagged_hdr(w::Opcode::AtomicRequest, 1, 1, 0, w::kAtomicReqBody);
         w::put_atomic_request(h.data(), fa(c.amr->rkey, (uintptr_t)&c.abuf[2]));
         return fpdu(h, {1, 2, 3, 4}, c.crc);
       },
       0, w::kRdmapRemoteOperation, w::kRdmapUnspecified},
      {"Atomic Request on the Send queue",
       [&](Conn &c) {
         auto h = untagged_hdr(w::Opcode::AtomicRequest, 0, 1, 0, w::kAtomicReqBody);
         w::put_atomic_request(h.data(), fa(c.amr->rkey, (uintptr_t)&c.abuf[2]));
         return fpdu(h, {}, c.crc);
       },
       1, w::kDdpUntaggedError, w::kDdpUInvalidQn},
      {"Atomic Response nobody asked for",
       [&](Conn &c) {
         auto h = untagged_hdr(w::Opcode::AtomicResponse, 3, 1, 0, w::kAtomicRespBody);
         w::put_atomic_response(h.data(), {1, 2});
         return fpdu(h, {}, c.crc);
       },
       0, w::kRdmapRemoteOperation, w::kRdmapUnexpectedOpcode},
  };
  for (const Case &k : cases) {
    SCOPED_TRACE(k.name);
    Conn c;
    ASSERT_NO_FATAL_FAILURE(Open(c));
    c.abuf[2] = 7;
    ASSERT_TRUE(send_all(c.fd, k.build(c)));
    const w::TermInfo t = w::term_parse(ExpectTerminated(c, true, 4));
    EXPECT_EQ((int)t.layer, k.layer);
    EXPECT_EQ((int)t.etype, k.etype);
    EXPECT_EQ((int)t.code, k.code);
    EXPECT_EQ(c.abuf[2], 7u) << "the target word changed";
    Close(c);
  }
}

// Our QP as requester: the Atomic Request on the wire, an answer that completes it, and a
// peer without atomics (Linux siw) that answers with TERMINATE "Unexpected OpCode".
TEST_P(Hostile, OurAtomicRequestAndThePeersAnswers) {
  for (bool peer_has_atomics : {true, false}) {
    SCOPED_TRACE(peer_has_atomics ? "peer answers" : "peer terminates (as siw)");
    Conn c;
    ASSERT_NO_FATAL_FAILURE(Open(c));
    ibv_send_wr wr{}, *bad = nullptr;
    ibv_sge s = sge(c.amr, &c.abuf[0], 8);
    wr.wr_id = 77;
    wr.opcode = IBV_WR_ATOMIC_CMP_AND_SWP;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.sg_list = &s;
    wr.num_sge = 1;
    wr.wr.atomic.remote_addr = 0x1000;
    wr.wr.atomic.rkey = 0x2345;
    wr.wr.atomic.compare_add = 9;
    wr.wr.atomic.swap = 10;
    ASSERT_EQ(0, ibv_post_send(c.qp(), &wr, &bad));
    RxFrame f;
    ASSERT_TRUE(read_fpdu(c.fd, c.crc, &f));
    ASSERT_EQ(f.bytes.size(), 72u + 4u);
    EXPECT_EQ(f.opcode, 0xA);
    EXPECT_TRUE(f.crc_ok);
    EXPECT_EQ(w::ld32(f.bytes.data() + w::off::kQn), 1u);
    EXPECT_EQ(w::ld32(f.bytes.data() + w::off::kMsn), 1u);
    const w::AtomicRequest r = w::get_atomic_request(f.bytes.data());
    ExpectVerbsCompareSwap(r, 0x2345, 0x1000, 9, 10);
    ibv_wc wc{};
    if (peer_has_atomics) {
      auto h = untagged_hdr(w::Opcode::AtomicResponse, 3, 1, 0, w::kAtomicRespBody);
      w::put_atomic_response(h.data(), {r.req_id, 0x0102030405060708ull});
      ASSERT_TRUE(send_all(c.fd, fpdu(h, {}, c.crc)));
      ASSERT_TRUE(poll_one(c.cq, &wc));
      EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
      EXPECT_EQ(wc.opcode, IBV_WC_COMP_SWAP);
      EXPECT_EQ(wc.wr_id, 77u);
      EXPECT_EQ(c.abuf[0], 0x0102030405060708ull) << "original value, host order";
      EXPECT_EQ(qp_state(c.qp()), IBV_QPS_RTS);
    } else {
      // What siw sends for an opcode above 7: RDMAP, Remote Operation Error, Unexpected
      // OpCode; here with the D and R bits and the terminated message's headers appended
      // (RFC 5040 4.8), which a TERMINATE may carry.
      auto t = untagged_hdr(w::Opcode::Terminate, 2, 1, 0, w::kTerminateBody);
      w::st32(t.data() + w::off::kTermCtrl,
              w::term_word({w::TermLayer::Rdmap, w::kRdmapRemoteOperation, w::kRdmapUnexpectedOpcode}) |
                  0x6000u);
      std::vector<uint8_t> copied(f.bytes.begin(), f.bytes.begin() + 72);  // DDP seg len + headers
      ASSERT_TRUE(send_all(c.fd, fpdu(t, copied, c.crc)));
      ::shutdown(c.fd, SHUT_WR);
      ASSERT_TRUE(poll_one(c.cq, &wc));
      EXPECT_EQ(wc.wr_id, 77u);
      EXPECT_EQ(wc.status, IBV_WC_REM_OP_ERR) << wc_status_name(wc.status);
      EXPECT_EQ(c.abuf[0], 0u);
      ExpectTerminated(c, false, 4);
    }
    Close(c);
  }
}

// Memory windows on the wire (provider/core/mw.cpp): the raw peer names the server's windows.
// Each case ends with the RFC 5040 TERMINATE for the window, as for an MR: an invalidated or
// deallocated window is an Invalid STag, bounds and rights are the window's, a window of
// another PD is not associated with the stream, a type 1 window cannot be invalidated.
TEST_P(Hostile, MemoryWindowTerminates) {
  constexpr int kRw = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
  struct MwCase {
    const char *name;
    ibv_mw_type type;
    bool other_pd;     // window and MR in the connection's other PD
    unsigned access;   // the window's rights
    bool invalidate;   // type 2: invalidated locally after the bind
    int frame;         // 0 WRITE, 1 READ request, 2 SEND with Invalidate
    uint64_t off;      // where the frame points, from the window's start
    uint32_t len;
    int layer, etype, code;
  };
  const MwCase cases[] = {
      {"WRITE through an invalidated window", IBV_MW_TYPE_2, false, kRw, true, 0, 0, 16, 1,
       w::kDdpTaggedError, w::kDdpTInvalidStag},
      {"READ through an invalidated window", IBV_MW_TYPE_2, false, kRw, true, 1, 0, 16, 0,
       w::kRdmapRemoteProtection, w::kRdmapInvalidStag},
      {"WRITE beyond the window", IBV_MW_TYPE_1, false, kRw, false, 0, 1016, 16, 1,
       w::kDdpTaggedError, w::kDdpTBaseBounds},
      {"WRITE to a read-only window", IBV_MW_TYPE_1, false, IBV_ACCESS_REMOTE_READ, false, 0, 0,
       16, 0, w::kRdmapRemoteProtection, w::kRdmapAccessRights},
      {"WRITE to a window of another PD", IBV_MW_TYPE_1, true, kRw, false, 0, 0, 16, 1,
       w::kDdpTaggedError, w::kDdpTStagNotAssoc},
      {"SEND with Invalidate of a type 1 window", IBV_MW_TYPE_1, false, kRw, false, 2, 0, 8, 0,
       w::kRdmapRemoteOperation, w::kRdmapCannotInvalidate},
  };
  for (const MwCase &mc : cases) {
    SCOPED_TRACE(mc.name);
    Conn c;
    ASSERT_NO_FATAL_FAILURE(Open(c));
    ASSERT_NO_FATAL_FAILURE(ValidSend(c, 1, "before"));
    ibv_pd *pd = mc.other_pd ? c.other_pd : c.pd;
    std::vector<uint8_t> mem(4096, 0xEE);
    ibv_mr *mr = ibv_reg_mr(pd, mem.data(), mem.size(), IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND);
    ibv_mw *mw = ibv_alloc_mw(pd, mc.type);
    ASSERT_TRUE(mr && mw) << strerror(errno);
    uint8_t *win = mem.data() + 1024;
    uint32_t rkey = ibv_inc_rkey(mw->rkey);
    ibv_mw_bind_info info{mr, (uint64_t)(uintptr_t)win, 1024, mc.access};
    if (mc.type == IBV_MW_TYPE_1) {
      ibv_mw_bind b{};
      b.wr_id = 90;
      b.send_flags = IBV_SEND_SIGNALED;
      b.bind_info = info;
      ASSERT_EQ(0, ibv_bind_mw(c.qp(), mw, &b));
      rkey = mw->rkey;
    } else {
      ibv_send_wr wr{}, *bad = nullptr;
      wr.wr_id = 90;
      wr.opcode = IBV_WR_BIND_MW;
      wr.send_flags = IBV_SEND_SIGNALED;
      wr.bind_mw = {mw, rkey, info};
      ASSERT_EQ(0, ibv_post_send(c.qp(), &wr, &bad));
    }
    ibv_wc wc{};
    ASSERT_TRUE(poll_one(c.cq, &wc));
    ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
    ASSERT_EQ(wc.opcode, IBV_WC_BIND_MW);
    if (mc.invalidate) {
      ibv_send_wr wr{}, *bad = nullptr;
      wr.wr_id = 91;
      wr.opcode = IBV_WR_LOCAL_INV;
      wr.send_flags = IBV_SEND_SIGNALED;
      wr.invalidate_rkey = rkey;
      ASSERT_EQ(0, ibv_post_send(c.qp(), &wr, &bad));
      ASSERT_TRUE(poll_one(c.cq, &wc));
      ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
      ASSERT_EQ(wc.opcode, IBV_WC_LOCAL_INV);
    }
    const uint64_t to = (uint64_t)(uintptr_t)win + mc.off;
    std::vector<uint8_t> bad;
    if (mc.frame == 0) {
      bad = fpdu(tagged_hdr(w::Opcode::Write, rkey, to), std::vector<uint8_t>(mc.len, 7), c.crc);
    } else if (mc.frame == 1) {
      auto rr = untagged_hdr(w::Opcode::ReadRequest, 1, 1, 0, w::kReadReqBody);
      w::st32(rr.data() + w::off::kSinkStag, 0x4242);
      w::st64(rr.data() + w::off::kSinkTo, 0);
      w::st32(rr.data() + w::off::kReadSize, mc.len);
      w::st32(rr.data() + w::off::kSrcStag, rkey);
      w::st64(rr.data() + w::off::kSrcTo, to);
      bad = fpdu(rr, {}, c.crc);
    } else {
      auto h = untagged_hdr(w::Opcode::SendInvalidate, 0, 2, 0);
      w::st32(h.data() + w::off::kRsvdUlp, rkey);
      bad = fpdu(h, std::vector<uint8_t>(mc.len, 3), c.crc);
    }
    ASSERT_TRUE(send_all(c.fd, bad));
    int left = 3;
    if (mc.frame == 2) {  // the SEND consumed a receive, which completes in error
      ASSERT_TRUE(poll_one(c.cq, &wc));
      EXPECT_EQ(wc.status, IBV_WC_REM_INV_REQ_ERR) << wc_status_name(wc.status);
      left = 2;
    }
    uint32_t word = ExpectTerminated(c, true, left);
    w::TermInfo t = w::term_parse(word);
    EXPECT_EQ((int)t.layer, mc.layer) << "TERMINATE layer";
    EXPECT_EQ((int)t.etype, mc.etype) << "TERMINATE error type";
    EXPECT_EQ((int)t.code, mc.code) << "TERMINATE error code";
    EXPECT_TRUE(std::all_of(mem.begin(), mem.end(), [](uint8_t b) { return b == 0xEE; }))
        << "a rejected access through a window placed data";
    EXPECT_EQ(0, ibv_dealloc_mw(mw));
    EXPECT_EQ(0, ibv_dereg_mr(mr));
    Close(c);
  }
}

// Post-time checks: one 8-byte result buffer.
TEST_P(Hostile, AtomicWorkRequestsNeedOneEightByteBuffer) {
  Conn c;
  ASSERT_NO_FATAL_FAILURE(Open(c));
  ibv_send_wr wr{}, *bad = nullptr;
  ibv_sge s = sge(c.amr, &c.abuf[0], 16);
  wr.opcode = IBV_WR_ATOMIC_FETCH_AND_ADD;
  wr.sg_list = &s;
  wr.num_sge = 1;
  EXPECT_EQ(EINVAL, ibv_post_send(c.qp(), &wr, &bad));
  wr.num_sge = 0;
  EXPECT_EQ(EINVAL, ibv_post_send(c.qp(), &wr, &bad));
  EXPECT_EQ(qp_state(c.qp()), IBV_QPS_RTS);
  Close(c);
}

// A type 2 window invalidated by the peer's SEND with Invalidate: the receive says so
// (IBV_WC_WITH_INV, invalidated_rkey), the stream goes on, and the STag is dead afterwards.
TEST_P(Hostile, SendWithInvalidateOfType2Window) {
  Conn c;
  ASSERT_NO_FATAL_FAILURE(Open(c));
  std::vector<uint8_t> mem(4096, 0xEE);
  ibv_mr *mr = ibv_reg_mr(c.pd, mem.data(), mem.size(), IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND);
  ibv_mw *mw = ibv_alloc_mw(c.pd, IBV_MW_TYPE_2);
  ASSERT_TRUE(mr && mw);
  const uint32_t rkey = ibv_inc_rkey(mw->rkey);
  ibv_send_wr wr{}, *bad = nullptr;
  wr.opcode = IBV_WR_BIND_MW;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.bind_mw = {mw, rkey, {mr, (uint64_t)(uintptr_t)mem.data(), 4096, IBV_ACCESS_REMOTE_WRITE}};
  ASSERT_EQ(0, ibv_post_send(c.qp(), &wr, &bad));
  ibv_wc wc{};
  ASSERT_TRUE(poll_one(c.cq, &wc));
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  // A WRITE through it lands.
  const uint64_t to = (uint64_t)(uintptr_t)mem.data();
  ASSERT_TRUE(send_all(c.fd, fpdu(tagged_hdr(w::Opcode::Write, rkey, to),
                                  std::vector<uint8_t>(16, 7), c.crc)));
  auto h = untagged_hdr(w::Opcode::SendInvalidate, 0, 1, 0);
  w::st32(h.data() + w::off::kRsvdUlp, rkey);
  ASSERT_TRUE(send_all(c.fd, fpdu(h, {1, 2, 3, 4}, c.crc)));
  ASSERT_TRUE(poll_one(c.cq, &wc));
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << wc_status_name(wc.status);
  EXPECT_TRUE(wc.wc_flags & IBV_WC_WITH_INV);
  EXPECT_EQ(wc.invalidated_rkey, rkey);
  EXPECT_EQ(mem[0], 7) << "the WRITE before the invalidation was not placed";
  EXPECT_EQ(qp_state(c.qp()), IBV_QPS_RTS);
  // The next WRITE through the STag is an Invalid STag.
  ASSERT_TRUE(send_all(c.fd, fpdu(tagged_hdr(w::Opcode::Write, rkey, to + 100),
                                  std::vector<uint8_t>(16, 9), c.crc)));
  w::TermInfo t = w::term_parse(ExpectTerminated(c, true, 3));
  EXPECT_EQ((int)t.layer, 1);
  EXPECT_EQ((int)t.etype, w::kDdpTaggedError);
  EXPECT_EQ((int)t.code, w::kDdpTInvalidStag);
  EXPECT_EQ(mem[100], 0xEE) << "data placed through an invalidated window";
  EXPECT_EQ(0, ibv_dealloc_mw(mw));
  EXPECT_EQ(0, ibv_dereg_mr(mr));
  Close(c);
}

INSTANTIATE_TEST_SUITE_P(Backends, Hostile, ::testing::ValuesIn(backend_params()), backend_name);

}  // namespace

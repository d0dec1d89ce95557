// Wire formats of the iWARP data path: MPA FPDU framing (RFC 5044 §6), DDP segments
// (RFC 5041) and RDMAP messages (RFC 5040), plus RFC 7306 Immediate Data. All multi-byte
// fields are big-endian on the wire; structs here are packed byte images of the headers and
// are only ever accessed through the load/store helpers. The RFC 7306 Atomic bodies are laid
// out in wire/atomic.hpp.
#pragma once

#include <endian.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace eca::wire {

// ---- byte-order helpers over unaligned memory
inline uint16_t ld16(const uint8_t *p) { uint16_t v; std::memcpy(&v, p, 2); return be16toh(v); }
inline uint32_t ld32(const uint8_t *p) { uint32_t v; std::memcpy(&v, p, 4); return be32toh(v); }
inline uint64_t ld64(const uint8_t *p) { uint64_t v; std::memcpy(&v, p, 8); return be64toh(v); }
inline void st16(uint8_t *p, uint16_t v) { v = htobe16(v); std::memcpy(p, &v, 2); }
inline void st32(uint8_t *p, uint32_t v) { v = htobe32(v); std::memcpy(p, &v, 4); }
inline void st64(uint8_t *p, uint64_t v) { v = htobe64(v); std::memcpy(p, &v, 8); }

// ---- MPA FPDU: | ULPDU length (16) | ULPDU ... | pad to 4 | CRC32c (32, if negotiated) |
inline constexpr size_t kMpaLenBytes = 2;
inline constexpr size_t kMpaCrcBytes = 4;
inline constexpr uint32_t kMaxUlpdu = 65535;
// Pad so that (length field + ULPDU + pad) is a multiple of 4.
inline constexpr size_t mpa_pad(size_t ulpdu_len) { return (4 - ((kMpaLenBytes + ulpdu_len) & 3)) & 3; }

// ---- DDP/RDMAP control word (bytes 2..3 of the FPDU, right after the MPA length)
//   byte 0: T(1) L(1) Rsvd(4) DV(2)      byte 1: RV(2) Rsvd(2) Opcode(4)
inline constexpr uint8_t kDdpTagged = 0x80;
inline constexpr uint8_t kDdpLast = 0x40;
inline constexpr uint8_t kDdpVersion = 0x01;    // DV = 1
inline constexpr uint8_t kRdmapVersion = 0x40;  // RV = 1 (in byte 1, top two bits)

enum class Opcode : uint8_t {
  Write = 0x0,
  ReadRequest = 0x1,
  ReadResponse = 0x2,
  Send = 0x3,
  SendInvalidate = 0x4,
  SendSolicited = 0x5,
  SendSolicitedInvalidate = 0x6,
  Terminate = 0x7,
  ImmediateData = 0x8,           // RFC 7306
  ImmediateDataSolicited = 0x9,  // RFC 7306
  AtomicRequest = 0xA,           // RFC 7306
  AtomicResponse = 0xB,          // RFC 7306
};
inline constexpr size_t kNumOpcodes = 16;

// Untagged queue numbers (RFC 5040 §5.1; RFC 7306 sends Atomic Requests on queue 1 with the
// RDMA Read Requests, and adds queue 3 for Atomic Responses)
enum class Queue : uint8_t { Send = 0, ReadRequest = 1, Terminate = 2, AtomicResponse = 3 };

// Header sizes, counting from the MPA length field (so they include its 2 bytes).
inline constexpr size_t kTaggedHdr = 2 + 2 + 4 + 8;          // len, ctrl, STag, TO = 16
inline constexpr size_t kUntaggedHdr = 2 + 2 + 4 + 4 + 4 + 4;  // len, ctrl, RsvdULP, QN, MSN, MO = 20
inline constexpr size_t kReadReqBody = 4 + 8 + 4 + 4 + 8;      // sink STag/TO, size, src STag/TO = 28
inline constexpr size_t kTerminateBody = 4;                     // layer/etype/code/flags
inline constexpr size_t kImmediateBody = 8;                     // RFC 7306: 8 bytes of data
inline constexpr size_t kAtomicReqBody = 4 + 4 + 4 + 8 + 4 * 8;  // RFC 7306 §5.2.1.3 = 52
inline constexpr size_t kAtomicRespBody = 4 + 8;                 // RFC 7306 §5.2.1.4 = 12
inline constexpr size_t kMaxHdr = kUntaggedHdr + kAtomicReqBody;  // 72

// One row per RDMAP opcode: how it is framed and which untagged queue it uses.
struct OpInfo {
  bool valid;
  bool tagged;
  Queue queue;      // untagged only
  size_t hdr_len;   // fixed header bytes incl. MPA length; payload follows
  bool solicited;
  bool invalidate;
  const char *name;
};

inline constexpr std::array<OpInfo, kNumOpcodes> kOps = [] {
  std::array<OpInfo, kNumOpcodes> t{};
  auto set = [&](Opcode o, OpInfo i) { t[static_cast<size_t>(o)] = i; };
  set(Opcode::Write, {true, true, Queue::Send, kTaggedHdr, false, false, "RDMA Write"});
  set(Opcode::ReadRequest, {true, false, Queue::ReadRequest, kUntaggedHdr + kReadReqBody, false, false, "RDMA Read Request"});
  set(Opcode::ReadResponse, {true, true, Queue::Send, kTaggedHdr, false, false, "RDMA Read Response"});
  set(Opcode::Send, {true, false, Queue::Send, kUntaggedHdr, false, false, "Send"});
  set(Opcode::SendInvalidate, {true, false, Queue::Send, kUntaggedHdr, false, true, "Send with Invalidate"});
  set(Opcode::SendSolicited, {true, false, Queue::Send, kUntaggedHdr, true, false, "Send with SE"});
  set(Opcode::SendSolicitedInvalidate, {true, false, Queue::Send, kUntaggedHdr, true, true, "Send with SE and Invalidate"});
  set(Opcode::Terminate, {true, false, Queue::Terminate, kUntaggedHdr + kTerminateBody, false, false, "Terminate"});
  set(Opcode::ImmediateData, {true, false, Queue::Send, kUntaggedHdr + kImmediateBody, false, false, "Immediate Data"});
  set(Opcode::ImmediateDataSolicited, {true, false, Queue::Send, kUntaggedHdr + kImmediateBody, true, false, "Immediate Data with SE"});
  set(Opcode::AtomicRequest, {true, false, Queue::ReadRequest, kUntaggedHdr + kAtomicReqBody, false, false, "Atomic Request"});
  set(Opcode::AtomicResponse, {true, false, Queue::AtomicResponse, kUntaggedHdr + kAtomicRespBody, false, false, "Atomic Response"});
  return t;
}();
static_assert(kOps.size() == kNumOpcodes);

// Field offsets inside a header image (from the MPA length field).
namespace off {
inline constexpr size_t kMpaLen = 0;
inline constexpr size_t kCtrl = 2;
// tagged
inline constexpr size_t kStag = 4;
inline constexpr size_t kTo = 8;
// untagged
inline constexpr size_t kRsvdUlp = 4;  // SEND with Invalidate: the STag to invalidate
inline constexpr size_t kQn = 8;
inline constexpr size_t kMsn = 12;
inline constexpr size_t kMo = 16;
// RDMA Read Request body
inline constexpr size_t kSinkStag = 20;
inline constexpr size_t kSinkTo = 24;
inline constexpr size_t kReadSize = 32;
inline constexpr size_t kSrcStag = 36;
inline constexpr size_t kSrcTo = 40;
// Terminate body and Immediate Data body
inline constexpr size_t kTermCtrl = 20;
inline constexpr size_t kImmData = 20;
}  // namespace off

inline void put_ctrl(uint8_t *h, Opcode op, bool last) {
  const OpInfo &i = kOps[static_cast<size_t>(op)];
  h[off::kCtrl] = (uint8_t)((i.tagged ? kDdpTagged : 0) | (last ? kDdpLast : 0) | kDdpVersion);
  h[off::kCtrl + 1] = (uint8_t)(kRdmapVersion | static_cast<uint8_t>(op));
}

// ---- TERMINATE (RFC 5040 §4.8): layer(4) etype(4) code(8) M D R reserved(13)
enum class TermLayer : uint8_t { Rdmap = 0, Ddp = 1, Llp = 2 };
// RDMAP error types / codes
inline constexpr uint8_t kRdmapLocalCatastrophic = 0;
inline constexpr uint8_t kRdmapRemoteProtection = 1;
inline constexpr uint8_t kRdmapRemoteOperation = 2;
inline constexpr uint8_t kRdmapInvalidStag = 0x00;
inline constexpr uint8_t kRdmapBaseBounds = 0x01;
inline constexpr uint8_t kRdmapAccessRights = 0x02;
inline constexpr uint8_t kRdmapStagNotAssoc = 0x03;
inline constexpr uint8_t kRdmapInvalidVersion = 0x05;
inline constexpr uint8_t kRdmapUnexpectedOpcode = 0x06;
inline constexpr uint8_t kRdmapCatastrophicStream = 0x07;
inline constexpr uint8_t kRdmapCannotInvalidate = 0x09;
inline constexpr uint8_t kRdmapUnspecified = 0xff;
// DDP error types / codes (RFC 5041 §7)
inline constexpr uint8_t kDdpCatastrophic = 0;
inline constexpr uint8_t kDdpTaggedError = 1;
inline constexpr uint8_t kDdpUntaggedError = 2;
inline constexpr uint8_t kDdpTInvalidStag = 0x00;
inline constexpr uint8_t kDdpTBaseBounds = 0x01;
inline constexpr uint8_t kDdpTStagNotAssoc = 0x02;
inline constexpr uint8_t kDdpTInvalidVersion = 0x04;
inline constexpr uint8_t kDdpUInvalidQn = 0x01;
inline constexpr uint8_t kDdpUNoBuffer = 0x02;
inline constexpr uint8_t kDdpUInvalidMsn = 0x03;
inline constexpr uint8_t kDdpUInvalidMo = 0x04;
inline constexpr uint8_t kDdpUTooLong = 0x05;
inline constexpr uint8_t kDdpUInvalidVersion = 0x06;
// LLP (MPA) error codes (RFC 5044 §8)
inline constexpr uint8_t kMpaCrcError = 0x02;
inline constexpr uint8_t kMpaMarkerError = 0x03;
inline constexpr uint8_t kMpaInvalidFpdu = 0x04;

struct TermInfo {
  TermLayer layer = TermLayer::Rdmap;
  uint8_t etype = 0;
  uint8_t code = 0;
};

inline uint32_t term_word(const TermInfo &t) {
  return ((uint32_t)t.layer & 0xf) << 28 | ((uint32_t)t.etype & 0xf) << 24 | (uint32_t)t.code << 16;
}
inline TermInfo term_parse(uint32_t w) {
  return {static_cast<TermLayer>((w >> 28) & 0xf), (uint8_t)((w >> 24) & 0xf),
          (uint8_t)((w >> 16) & 0xff)};
}

}  // namespace eca::wire

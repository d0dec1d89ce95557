// RFC 7306 Atomic Operations on the wire: the bodies of the Atomic Request and Atomic Response
// messages, which follow the untagged DDP header (wire/ddp_rdmap.hpp, opcodes 0xA/0xB). The
// execution rule of each operation on the 64-bit target word is in engine/atomic.hpp.
//
// Atomic Request (untagged, QN 1 shared with RDMA Read Requests, MSN of that queue, MO 0):
//   offset 20: Reserved (28 bits) | AOpCode (4 bits)
//          24: Request Identifier         28: Remote STag        32: Remote Tagged Offset (64)
//          40: Add or Swap Data (64)       48: Add or Swap Mask (64)
//          56: Compare Data (64)           64: Compare Mask (64)             = 72 bytes
// Atomic Response (untagged, QN 3, its own MSN, MO 0):
//   offset 20: Original Request Identifier 24: Original Remote Data Value (64) = 32 bytes
// Offsets count from the MPA length field, like every other header image of this project.
#pragma once

#include <cstdint>

#include "engine/atomic.hpp"
#include "transport/wire/ddp_rdmap.hpp"

namespace eca::wire {

// AOpCode values (RFC 7306 §5.2.1.3; the others are reserved), the operations and their rule
// on the target word: shared with the modeled adapter, in engine/atomic.hpp.
using engine::AtomicOp;
using engine::atomic_new_value;
using engine::atomic_op_valid;
using engine::kAtomicAlign;
using engine::kAtomicLen;
inline constexpr uint32_t kAtomicOpMask = 0xf;

// The TERMINATE code for a malformed Atomic Request (a reserved AOpCode or a misaligned
// Remote Tagged Offset). RFC 7306 registers no RDMAP error code of its own (IANA's RDDP
// registry lists only RFC 5040's under "RDMAP Errors"), so this is the registered code that
// fits: Remote Operation Error / Unspecified Error (layer 0, type 2, code 0xFF). Remote STag,
// bounds, PD and missing REMOTE_ATOMIC rights use the RFC 5040 Remote Protection codes.
inline constexpr uint8_t kRdmapInvalidAtomicRequest = kRdmapUnspecified;

namespace off {
// Each field follows the one before it, by that field's width in the RFC 7306 figures.
inline constexpr size_t kAtomicCtrl = kUntaggedHdr;              // 20
inline constexpr size_t kAtomicReqId = kAtomicCtrl + 4;          // 24
inline constexpr size_t kAtomicStag = kAtomicReqId + 4;          // 28
inline constexpr size_t kAtomicTo = kAtomicStag + 4;             // 32
inline constexpr size_t kAtomicAddSwap = kAtomicTo + 8;          // 40
inline constexpr size_t kAtomicAddSwapMask = kAtomicAddSwap + 8; // 48
inline constexpr size_t kAtomicCompare = kAtomicAddSwapMask + 8; // 56
inline constexpr size_t kAtomicCompareMask = kAtomicCompare + 8; // 64
inline constexpr size_t kAtomicOrigReqId = kUntaggedHdr;         // 20
inline constexpr size_t kAtomicOrigValue = kAtomicOrigReqId + 4; // 24
}  // namespace off
static_assert(off::kAtomicCtrl == 20 && off::kAtomicTo == 32 && off::kAtomicCompareMask == 64);
static_assert(off::kAtomicCompareMask + 8 == kUntaggedHdr + kAtomicReqBody);
static_assert(off::kAtomicOrigValue + 8 == kUntaggedHdr + kAtomicRespBody);

struct AtomicRequest : engine::AtomicOperation {
  uint32_t req_id = 0;
};

struct AtomicResponse {
  uint32_t req_id = 0;
  uint64_t orig = 0;
};

// Body fields only: the caller frames the untagged header (ctrl, QN, MSN, MO).
inline void put_atomic_request(uint8_t *h, const AtomicRequest &r) {
  st32(h + off::kAtomicCtrl, r.aopcode & kAtomicOpMask);
  st32(h + off::kAtomicReqId, r.req_id);
  st32(h + off::kAtomicStag, r.stag);
  st64(h + off::kAtomicTo, r.to);
  st64(h + off::kAtomicAddSwap, r.add_swap);
  st64(h + off::kAtomicAddSwapMask, r.add_swap_mask);
  st64(h + off::kAtomicCompare, r.compare);
  st64(h + off::kAtomicCompareMask, r.compare_mask);
}

// Reserved bits of the first word are ignored on receipt, as reserved fields are.
inline AtomicRequest get_atomic_request(const uint8_t *h) {
  AtomicRequest r;
  r.aopcode = (uint8_t)(ld32(h + off::kAtomicCtrl) & kAtomicOpMask);
  r.req_id = ld32(h + off::kAtomicReqId);
  r.stag = ld32(h + off::kAtomicStag);
  r.to = ld64(h + off::kAtomicTo);
  r.add_swap = ld64(h + off::kAtomicAddSwap);
  r.add_swap_mask = ld64(h + off::kAtomicAddSwapMask);
  r.compare = ld64(h + off::kAtomicCompare);
  r.compare_mask = ld64(h + off::kAtomicCompareMask);
  return r;
}

inline void put_atomic_response(uint8_t *h, const AtomicResponse &r) {
  st32(h + off::kAtomicOrigReqId, r.req_id);
  st64(h + off::kAtomicOrigValue, r.orig);
}

inline AtomicResponse get_atomic_response(const uint8_t *h) {
  return {ld32(h + off::kAtomicOrigReqId), ld64(h + off::kAtomicOrigValue)};
}

inline AtomicRequest verbs_fetch_add(uint32_t stag, uint64_t to, uint64_t add) {
  return {engine::atomic_fetch_add(stag, to, add)};
}
inline AtomicRequest verbs_compare_swap(uint32_t stag, uint64_t to, uint64_t compare,
                                        uint64_t swap) {
  return {engine::atomic_compare_swap(stag, to, compare, swap)};
}

}  // namespace eca::wire

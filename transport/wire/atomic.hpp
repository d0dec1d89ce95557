// RFC 7306 Atomic Operations on the wire: the bodies of the Atomic Request and Atomic Response
// messages, which follow the untagged DDP header (wire/ddp_rdmap.hpp, opcodes 0xA/0xB), and
// the execution rule of each atomic operation on the 64-bit target word.
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

#include "transport/wire/ddp_rdmap.hpp"

namespace eca::wire {

// AOpCode values (RFC 7306 §5.2.1.3); the others are reserved.
enum class AtomicOp : uint8_t { FetchAdd = 0x0, Swap = 0x1, CompareSwap = 0x2 };
inline constexpr uint32_t kAtomicOpMask = 0xf;
inline constexpr uint64_t kAtomicAlign = 8;  // the Remote Tagged Offset names an aligned word
inline constexpr uint64_t kAtomicLen = 8;

// The TERMINATE code for a malformed Atomic Request (a reserved AOpCode or a misaligned
// Remote Tagged Offset). RFC 7306 registers no RDMAP error code of its own (IANA's RDDP
// registry lists only RFC 5040's under "RDMAP Errors"), so this is the registered code that
// fits: Remote Operation Error / Unspecified Error (layer 0, type 2, code 0xFF). Remote STag,
// bounds, PD and missing REMOTE_ATOMIC rights use the RFC 5040 Remote Protection codes.
inline constexpr uint8_t kRdmapInvalidAtomicRequest = kRdmapUnspecified;

namespace off {
inline constexpr size_t kAtomicCtrl = 20;
inline constexpr size_t kAtomicReqId = 24;
inline constexpr size_t kAtomicStag = 28;
inline constexpr size_t kAtomicTo = 32;
inline constexpr size_t kAtomicAddSwap = 40;
inline constexpr size_t kAtomicAddSwapMask = 48;
inline constexpr size_t kAtomicCompare = 56;
inline constexpr size_t kAtomicCompareMask = 64;
inline constexpr size_t kAtomicOrigReqId = 20;
inline constexpr size_t kAtomicOrigValue = 24;
}  // namespace off
static_assert(off::kAtomicCompareMask + 8 == kUntaggedHdr + kAtomicReqBody);
static_assert(off::kAtomicOrigValue + 8 == kUntaggedHdr + kAtomicRespBody);

struct AtomicRequest {
  uint8_t aopcode = 0;  // raw 4-bit AOpCode as received (may be reserved)
  uint32_t req_id = 0;
  uint32_t stag = 0;
  uint64_t to = 0;
  uint64_t add_swap = 0, add_swap_mask = 0;
  uint64_t compare = 0, compare_mask = 0;
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

inline bool atomic_op_valid(uint8_t aopcode) {
  return aopcode <= static_cast<uint8_t>(AtomicOp::CompareSwap);
}

// The verbs operations as RFC 7306 requests: plain (unmasked) FetchAdd and CompareSwap.
// FetchAdd: an Add Mask of zero declares no field boundaries (one 64-bit addition).
// CompareSwap: all 64 bits compared and all 64 bits swapped.
inline AtomicRequest verbs_fetch_add(uint32_t stag, uint64_t to, uint64_t add) {
  AtomicRequest r;
  r.aopcode = static_cast<uint8_t>(AtomicOp::FetchAdd);
  r.stag = stag;
  r.to = to;
  r.add_swap = add;
  return r;
}
inline AtomicRequest verbs_compare_swap(uint32_t stag, uint64_t to, uint64_t compare,
                                        uint64_t swap) {
  AtomicRequest r;
  r.aopcode = static_cast<uint8_t>(AtomicOp::CompareSwap);
  r.stag = stag;
  r.to = to;
  r.add_swap = swap;
  r.add_swap_mask = ~0ull;
  r.compare = compare;
  r.compare_mask = ~0ull;
  return r;
}

// The new value of the target word for a valid request, given its current value `v`.
// FetchAdd with an Add Mask: each set bit ends a field, so no carry leaves that bit.
// Swap: the bits under the Swap Mask take the Swap Data. CompareSwap: as Swap, only if the
// bits under the Compare Mask equal the Compare Data; otherwise the word is left alone.
inline uint64_t atomic_new_value(const AtomicRequest &r, uint64_t v) {
  switch (static_cast<AtomicOp>(r.aopcode)) {
    case AtomicOp::FetchAdd: {
      if (!r.add_swap_mask) return v + r.add_swap;
      uint64_t out = 0, carry = 0;
      for (int i = 0; i < 64; i++) {
        const uint64_t a = (v >> i) & 1, b = (r.add_swap >> i) & 1;
        out |= (a ^ b ^ carry) << i;
        carry = (a & b) | (a & carry) | (b & carry);
        if ((r.add_swap_mask >> i) & 1) carry = 0;
      }
      return out;
    }
    case AtomicOp::Swap:
      return (v & ~r.add_swap_mask) | (r.add_swap & r.add_swap_mask);
    case AtomicOp::CompareSwap:
      if (((v ^ r.compare) & r.compare_mask) != 0) return v;
      return (v & ~r.add_swap_mask) | (r.add_swap & r.add_swap_mask);
  }
  return v;
}

}  // namespace eca::wire

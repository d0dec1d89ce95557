// RFC 7306 atomic operations at the target, shared by both engines: the operations' rule on
// the 64-bit target word, the checks a request must pass, and its execution.
//
// Atomicity: the operation runs as one CPU atomic instruction sequence (lock cmpxchg) on the
// target's memory itself, in the process that registered it. It is therefore atomic against
// every other remote atomic (any QP, any connection, any process of this host, either
// backend: they all end up as CPU atomics on the same physical word) and against the
// application's own CPU atomics on that word (IBV_ATOMIC_GLOB). Plain CPU stores and RDMA
// WRITEs racing with it are not ordered against it, as on any adapter.
#pragma once

#include <cstdint>

#include "provider/core/objects.hpp"

namespace eca::engine {

enum class AtomicOp : uint8_t { FetchAdd = 0x0, Swap = 0x1, CompareSwap = 0x2 };  // AOpCode
inline constexpr uint64_t kAtomicAlign = 8;  // the Remote Tagged Offset names an aligned word
inline constexpr uint64_t kAtomicLen = 8;

// One operation as RFC 7306 defines it (the wire's Request Identifier is not part of it).
struct AtomicOperation {
  uint8_t aopcode = 0;  // raw 4-bit AOpCode as received (may be reserved)
  uint32_t stag = 0;
  uint64_t to = 0;
  uint64_t add_swap = 0, add_swap_mask = 0;
  uint64_t compare = 0, compare_mask = 0;
};

inline bool atomic_op_valid(uint8_t aopcode) {
  return aopcode <= static_cast<uint8_t>(AtomicOp::CompareSwap);
}

// What verbs ask for: IBV_WR_ATOMIC_FETCH_AND_ADD (no Add Mask) and IBV_WR_ATOMIC_CMP_AND_SWP
// (all 64 bits compared and swapped).
inline AtomicOperation atomic_fetch_add(uint32_t stag, uint64_t to, uint64_t add) {
  AtomicOperation r;
  r.aopcode = static_cast<uint8_t>(AtomicOp::FetchAdd);
  r.stag = stag;
  r.to = to;
  r.add_swap = add;
  return r;
}
inline AtomicOperation atomic_compare_swap(uint32_t stag, uint64_t to, uint64_t compare,
                                           uint64_t swap) {
  AtomicOperation r;
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
uint64_t atomic_new_value(const AtomicOperation &r, uint64_t v);

// Why a request is refused: an invalid request (reserved AOpCode, a Remote Tagged Offset or
// host word not 8-byte aligned), or a protection error (`access` says which check failed).
struct AtomicRefusal {
  bool invalid_request = false;
  AccessError access = AccessError::None;
};

// Validates a received request for QP `qpn` in `pd` (a type 2 window serves only its QP):
// AOpCode, alignment, STag, PD, REMOTE_ATOMIC rights, bounds. True and the target word in
// *out, or false and the reason in *why. Any thread.
bool atomic_check(const Pd *pd, uint32_t qpn, const AtomicOperation &r, MrRef *out,
                  AtomicRefusal *why);

// Executes a validated request on the aligned word at `host` (an MrUse must hold its MR).
// Returns the original value. Any thread; lock-free.
uint64_t atomic_execute(uint8_t *host, const AtomicOperation &r);

}  // namespace eca::engine

// RFC 7306 atomics at the responder, shared by both backends: which TERMINATE a received
// Atomic Request earns, and its execution on the target word.
//
// Atomicity: the operation runs as one CPU atomic instruction sequence (lock cmpxchg) on the
// target's memory itself, in the process that registered it. It is therefore atomic against
// every other remote atomic (any QP, any connection, any process of this host: they all end
// up as CPU atomics on the same physical word) and against the application's own CPU atomics
// on that word (IBV_ATOMIC_GLOB). Plain CPU stores and RDMA WRITEs racing with it are not
// ordered against it, as on any adapter.
#pragma once

#include <cstdint>

#include "provider/core/objects.hpp"
#include "transport/wire/atomic.hpp"

namespace eca::transport {

// Validates a received request for QP `qpn` in `pd` (a type 2 window serves only its QP): AOpCode, 8-byte alignment of the Remote
// Tagged Offset (and of the host word behind it), STag, PD, REMOTE_ATOMIC rights, bounds.
// Returns true and the target in *out, or false and the TERMINATE to send in *term.
bool atomic_check(const Pd *pd, uint32_t qpn, const wire::AtomicRequest &r, MrRef *out,
                  wire::TermInfo *term);

// Executes a validated request on the aligned word at `host` (an MrUse must hold its MR).
// Returns the original value. Any thread; lock-free.
uint64_t atomic_execute(uint8_t *host, const wire::AtomicRequest &r);

}  // namespace eca::transport

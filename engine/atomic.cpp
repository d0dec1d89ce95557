#include "engine/atomic.hpp"

#include <atomic>

namespace eca::engine {

uint64_t atomic_new_value(const AtomicOperation &r, uint64_t v) {
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

bool atomic_check(const Pd *pd, uint32_t qpn, const AtomicOperation &r, MrRef *out,
                  AtomicRefusal *why) {
  *why = {};
  if (!atomic_op_valid(r.aopcode) || r.to % kAtomicAlign) {
    why->invalid_request = true;
    return false;
  }
  why->access = mr_lookup(r.stag, pd, r.to, kAtomicLen, IBV_ACCESS_REMOTE_ATOMIC, out, qpn);
  if (why->access != AccessError::None) return false;
  if (reinterpret_cast<uintptr_t>(out->host) % kAtomicAlign) {
    // An MR whose iova and address differ modulo 8: the aligned offset is not an aligned word.
    *out = MrRef{};
    why->invalid_request = true;
    return false;
  }
  return true;
}

uint64_t atomic_execute(uint8_t *host, const AtomicOperation &r) {
  std::atomic_ref<uint64_t> word(*reinterpret_cast<uint64_t *>(host));
  if (r.aopcode == static_cast<uint8_t>(AtomicOp::FetchAdd) && !r.add_swap_mask)
    return word.fetch_add(r.add_swap, std::memory_order_seq_cst);
  uint64_t v = word.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t next = atomic_new_value(r, v);
    if (next == v) {  // a failed compare (or a no-op): nothing to store, v is the original
      std::atomic_thread_fence(std::memory_order_seq_cst);
      return v;
    }
    if (word.compare_exchange_weak(v, next, std::memory_order_seq_cst)) return v;
  }
}

}  // namespace eca::engine

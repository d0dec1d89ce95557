// Scatter/gather lists of work requests: the SGEs checked against the MRs they name and
// mapped to host memory (what an RNIC does with the lkeys of a descriptor), and the copies
// between such a list and contiguous bytes. Shared by both engines (transport/, hwmodel/).
#pragma once

#include <infiniband/verbs.h>
#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <span>

#include "provider/core/objects.hpp"

namespace eca::engine {

// The host memory behind a work request's non-empty SGEs, in order. The MrRefs keep the MRs
// alive; an MrUse around each access keeps their memory registered (objects.hpp).
struct SgeMap {
  std::array<iovec, kMaxSge> iov{};
  std::array<MrRef, kMaxSge> refs;
  std::array<const Sge *, kMaxSge> sge{};  // the SGE each piece came from (null: inline data)
  size_t n = 0;
  uint64_t bytes = 0;
  std::span<const iovec> spans() const { return {iov.data(), n}; }
};

// Checks each non-empty SGE of `sges` against the MR its lkey names: the MR exists and lives
// in `pd`, grants `need` (IBV_ACCESS_* bits; 0 = local read) and covers [addr, addr+length).
// Returns IBV_WC_SUCCESS with the mapping in *out, or IBV_WC_LOC_PROT_ERR (nothing mapped)
// with the index of the failing SGE in *bad. Any thread; no lock held or taken but the MR
// table's.
ibv_wc_status map_sges(const Pd *pd, std::span<const Sge> sges, int need, SgeMap *out,
                       uint32_t *bad);

// The same for a send work request: its inline data as one piece, otherwise its SGEs.
ibv_wc_status map_send_sges(const Pd *pd, const SendWqe &w, int need, SgeMap *out,
                            uint32_t *bad);

// ---- copies between a segment list and contiguous bytes ([from, to): byte offsets in the
// concatenation of the list's segments). Any thread; the caller holds the memory (MrUse).

// Bytes [from, to) of `src` to out[0 .. to-from).
void gather_copy(std::span<const iovec> src, uint64_t from, uint64_t to, uint8_t *out);
// src[0 .. to-from) to bytes [from, to) of `dst`.
void scatter_copy(const uint8_t *src, std::span<const iovec> dst, uint64_t from, uint64_t to);
// The pieces of `segs` that cover bytes [from, to), at most `max` of them; returns how many.
size_t slice(std::span<const iovec> segs, uint64_t from, uint64_t to, iovec *out, size_t max);

}  // namespace eca::engine

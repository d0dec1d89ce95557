// Memory windows (ibv_alloc_mw(3), ibv_bind_mw(3), IBV_WR_BIND_MW / IBV_WR_LOCAL_INV of
// ibv_post_send(3)): type 1 and type 2B.
//
// A window owns one index of the process-wide STag table from allocation to deallocation.
// While bound, that index holds a window entry: an Mr whose `parent` is the MR it was bound
// to, whose pd is the window's, and whose range and access are the bind's, so every remote
// access path (mr_lookup) checks bounds, rights and PD against the window and reaches the
// parent's memory. Unbound or invalidated, the index holds an entry that fails every lookup
// (AccessError::InvalidStag -> RFC 5040 "Invalid STag"). Window STags never serve local
// access (lkeys).
//
// Binds and local invalidations are send-queue work: the device layer executes them in
// posting order when it takes them (mw_execute_wqe), so a SEND posted after a bind leaves
// after the window is usable, as ibv_bind_mw(3) promises.
//
// Locking: one process-wide window lock guards every window's binding and every MR's
// `windows` / `deregistering`; it is taken before the STag table's lock and the backend's
// registration locks, and never while waiting for anything.
#pragma once

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "provider/core/objects.hpp"

namespace eca {

struct Mw {
  ibv_mw ibmw;  // first
  Pd *pd = nullptr;
  uint32_t index = 0;  // STag index (rkey >> 8), fixed from allocation to deallocation
  std::shared_ptr<Mr> entry;  // what the window's STag index holds now (window lock)
  bool bound = false;         // entry is a live binding (window lock)
  static Mw *from(ibv_mw *m) { return reinterpret_cast<Mw *>(m); }
};
static_assert(std::is_standard_layout_v<Mw> && offsetof(Mw, ibmw) == 0);  // from()

int mw_alloc(Pd *pd, ibv_mw_type type, Mw **out);
int mw_dealloc(Mw *mw);
// ibv_bind_mw: checks what can be checked now, gives mw->ibmw.rkey its next key byte and
// queues the bind on `qp` (its completion is IBV_WC_BIND_MW or IBV_WC_MW_BIND_ERR).
int mw_bind_type1(Qp *qp, Mw *mw, const ibv_mw_bind &bind);
// ibv_post_send / ibv_wr_*: post-time checks of IBV_WR_BIND_MW and IBV_WR_LOCAL_INV, filling
// the WQE's window fields. For a bind, `rkey` is the window's new STag.
int mw_prepare_bind(Qp *qp, ibv_mw *mw, uint32_t rkey, const ibv_mw_bind_info &info,
                    SendWqe *w);
inline bool mw_is_local_op(ibv_wr_opcode op) {
  return op == IBV_WR_BIND_MW || op == IBV_WR_LOCAL_INV;
}
// Device layer: executes a bind or local invalidation taken from `qp`'s send queue and
// reports it with sq_done(). False if it failed: the caller ends the stream as for any
// local error.
bool mw_execute_wqe(Qp &qp, SendWqe *w);
// RDMAP SEND with Invalidate naming a window entry (called by mr_invalidate).
bool mw_invalidate_remote(uint32_t key, const Pd *pd, uint32_t qpn);
// ibv_dereg_mr: false while windows are bound to `mr` (then it stays registered); true
// otherwise, and no bind to it succeeds from then on.
bool mw_mr_release(Mr *mr);

// The STag table (provider/core/pd_mr.cpp) as windows use it: an entry's index is fixed, its
// key byte changes with every bind.
int stag_add(std::shared_ptr<Mr> entry, uint32_t *key);
// Puts `entry` (whose ibmr.rkey has `key`'s index) where `key` is; false if `key` is not there.
bool stag_replace(uint32_t key, std::shared_ptr<Mr> entry);
std::shared_ptr<Mr> stag_remove(uint32_t key);
std::shared_ptr<Mr> stag_get(uint32_t key);

}  // namespace eca

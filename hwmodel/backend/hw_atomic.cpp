// RFC 7306 atomics on the modeled adapter. The requester's adapter puts an AtomicRequest
// frame on the link ring (behind the Sends already there) and wakes the target's adapter,
// which checks the access like the software transport's responder (engine/atomic.hpp, shared
// by both: alignment, STag, PD, REMOTE_ATOMIC, bounds), executes the operation with CPU atomics on
// its own process's memory and answers with an AtomicResponse frame. Responses come back in
// request order; at most ORD atomics are outstanding; a later READ or WRITE waits until the
// atomics before it are answered (it is executed by the requester, so it could overtake).
#include <algorithm>
#include <cstring>

#include "engine/atomic.hpp"
#include "engine/sge.hpp"
#include "hwmodel/backend/hw_conn.hpp"
#include "provider/core/log.hpp"

namespace eca::hw {

namespace eng = eca::engine;

Step HwConn::exec_atomic_locked(SendWqe *wqe) {
  ECA_ASSERT_HELD(mu_);
  // ORD, fence and ORD 0 were decided by exec_wqe_locked (rd_.sq_gate).
  Frame *f = ring_slot_locked();
  if (!f) return Step::Retry;
  // One 8-byte buffer (checked at post time), the sink of the original value.
  eng::SgeMap sink;
  uint32_t bad = 0;
  if (const ibv_wc_status st =
          eng::map_sges(qp_.pd, {wqe->sge.data(), 1}, IBV_ACCESS_LOCAL_WRITE, &sink, &bad)) {
    ECA_QP_LOG(Info, qp_.qpn, "local protection error (lkey 0x%x)", wqe->sge[0].lkey);
    return fail_wqe_locked(wqe, st);
  }
  AtomicBody b{};
  const bool add = wqe->opcode == IBV_WR_ATOMIC_FETCH_AND_ADD;
  b.op = static_cast<uint32_t>(add ? eng::AtomicOp::FetchAdd : eng::AtomicOp::CompareSwap);
  b.rkey = wqe->rkey;
  b.addr = wqe->remote_addr;
  b.operand = add ? wqe->compare_add : wqe->swap;
  b.compare = add ? 0 : wqe->compare_add;
  f->type = (uint32_t)FrameType::AtomicRequest;
  f->len = sizeof b;
  std::memcpy(f->data, &b, sizeof b);
  f->model_ps = pending_due_ ? pending_due_ : now_ps();
  ring_publish_locked();
  // The target's adapter must act whether or not its application is looking (a NIC
  // answers atomics by itself): wake its firmware if it sleeps.
  Adapter::kick_peer(peer_->bell());
  await_atomic_.push_back({wqe, std::move(sink.refs[0])});
  rd_.request_sent();
  stats_.ops++;
  stats_.bytes += eng::kAtomicLen;
  stats_.modeled_ps += timing_.message_ps(eng::kAtomicLen);
  return Step::Done;
}

// The target's side. Retry: no room for the response yet (the frame is handled again).
Step HwConn::handle_atomic_request_locked(const Frame &f) {
  ECA_ASSERT_HELD(mu_);
  AtomicBody b;
  std::memcpy(&b, f.data, sizeof b);
  if (f.len != sizeof b ||
      (b.op != (uint32_t)eng::AtomicOp::FetchAdd && b.op != (uint32_t)eng::AtomicOp::CompareSwap)) {
    ECA_QP_LOG(Warn, qp_.qpn, "malformed atomic frame from the peer");
    return terminate_locked(WireError::Protocol);
  }
  const eng::AtomicOperation r = b.op == (uint32_t)eng::AtomicOp::FetchAdd
                                   ? eng::atomic_fetch_add(b.rkey, b.addr, b.operand)
                                   : eng::atomic_compare_swap(b.rkey, b.addr, b.compare, b.operand);
  MrRef target;
  eng::AtomicRefusal why;
  if (!eng::atomic_check(qp_.pd, qp_.qpn, r, &target, &why)) {
    ECA_QP_LOG(Info, qp_.qpn, "atomic on rkey 0x%x addr 0x%llx rejected", b.rkey,
               (unsigned long long)b.addr);
    return terminate_locked(why.invalid_request ? WireError::InvalidRequest : WireError::Access);
  }
  Frame *out = ring_slot_locked();
  if (!out) return Step::Retry;  // executed only once there is room for the answer
  {
    MrUse use;
    if (!use.enter(target)) return terminate_locked(WireError::Access);  // as an invalid STag
    b.orig = eng::atomic_execute(target.host, r);
  }
  out->type = (uint32_t)FrameType::AtomicResponse;
  out->len = sizeof b;
  std::memcpy(out->data, &b, sizeof b);
  out->model_ps = now_ps();
  ring_publish_locked();
  return Step::Done;
}

Step HwConn::handle_atomic_response_locked(const Frame &f) {
  ECA_ASSERT_HELD(mu_);
  if (await_atomic_.empty() || f.len != sizeof(AtomicBody)) {
    ECA_QP_LOG(Warn, qp_.qpn, "unexpected atomic response from the peer");
    return terminate_locked(WireError::Protocol);
  }
  AtomicBody b;
  std::memcpy(&b, f.data, sizeof b);
  AtomicWait a = std::move(await_atomic_.front());
  await_atomic_.pop_front();
  rd_.response_done();
  {
    MrUse use;
    if (!use.enter(a.result)) return fail_wqe_locked(a.w, IBV_WC_LOC_PROT_ERR);
    std::memcpy(a.result.host, &b.orig, sizeof b.orig);
  }
  qp_.sq_done(a.w, IBV_WC_SUCCESS);
  return Step::Done;
}

}  // namespace eca::hw

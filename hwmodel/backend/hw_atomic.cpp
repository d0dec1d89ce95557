// RFC 7306 atomics on the modeled adapter. The requester's adapter puts an AtomicRequest
// frame on the link ring (behind the Sends already there) and wakes the target's adapter,
// which checks the access like the software transport's responder (transport/atomic.hpp:
// alignment, STag, PD, REMOTE_ATOMIC, bounds), executes the operation with CPU atomics on
// its own process's memory and answers with an AtomicResponse frame. Responses come back in
// request order; at most ORD atomics are outstanding; a later READ or WRITE waits until the
// atomics before it are answered (it is executed by the requester, so it could overtake).
#include <algorithm>
#include <cstring>

#include "hwmodel/backend/hw_conn.hpp"
#include "provider/core/log.hpp"
#include "transport/atomic.hpp"

namespace eca::hw {

namespace w = eca::wire;

bool HwConn::exec_atomic_locked(SendWqe *wqe) {
  ECA_ASSERT_HELD(mu_);
  if (qp_.ord == 0) {  // the peer accepts no READs or atomics (IRD 0)
    ECA_QP_LOG(Warn, qp_.qpn, "atomic posted on a connection with ORD 0");
    qp_.sq_done(wqe, IBV_WC_LOC_QP_OP_ERR);
    send_terminate_locked(WireError::Ended);
    fail(LlpEnd::TerminateSent, IBV_WC_WR_FLUSH_ERR);
    return true;
  }
  if (await_atomic_.size() >= std::max<uint32_t>(qp_.ord, 1)) return false;  // ORD full
  Frame *f = ring_slot_locked();
  if (!f) return false;
  const Sge &s = wqe->sge[0];  // one 8-byte buffer (checked at post time)
  MrRef result;
  if (mr_lookup(s.lkey, qp_.pd, s.addr, s.length, IBV_ACCESS_LOCAL_WRITE, &result) !=
      AccessError::None) {
    ECA_QP_LOG(Info, qp_.qpn, "local protection error (lkey 0x%x)", s.lkey);
    qp_.sq_done(wqe, IBV_WC_LOC_PROT_ERR);
    send_terminate_locked(WireError::Ended);
    fail(LlpEnd::TerminateSent, IBV_WC_WR_FLUSH_ERR);
    return true;
  }
  AtomicBody b{};
  const bool add = wqe->opcode == IBV_WR_ATOMIC_FETCH_AND_ADD;
  b.op = static_cast<uint32_t>(add ? w::AtomicOp::FetchAdd : w::AtomicOp::CompareSwap);
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
  await_atomic_.push_back({wqe, std::move(result)});
  stats_.ops++;
  stats_.bytes += w::kAtomicLen;
  stats_.modeled_ps += timing_.message_ps(w::kAtomicLen);
  return true;
}

// The target's side. False: no room for the response yet (the frame is handled again).
bool HwConn::handle_atomic_request_locked(const Frame &f) {
  ECA_ASSERT_HELD(mu_);
  AtomicBody b;
  std::memcpy(&b, f.data, sizeof b);
  if (f.len != sizeof b ||
      (b.op != (uint32_t)w::AtomicOp::FetchAdd && b.op != (uint32_t)w::AtomicOp::CompareSwap)) {
    ECA_QP_LOG(Warn, qp_.qpn, "malformed atomic frame from the peer");
    send_terminate_locked(WireError::Protocol);
    fail(LlpEnd::TerminateSent, IBV_WC_WR_FLUSH_ERR);
    return true;
  }
  const w::AtomicRequest r = b.op == (uint32_t)w::AtomicOp::FetchAdd
                                 ? w::verbs_fetch_add(b.rkey, b.addr, b.operand)
                                 : w::verbs_compare_swap(b.rkey, b.addr, b.compare, b.operand);
  MrRef target;
  w::TermInfo term;
  if (!transport::atomic_check(qp_.pd, qp_.qpn, r, &target, &term)) {
    ECA_QP_LOG(Info, qp_.qpn, "atomic on rkey 0x%x addr 0x%llx rejected", b.rkey,
               (unsigned long long)b.addr);
    send_terminate_locked(term.etype == w::kRdmapRemoteProtection ? WireError::Access
                                                                  : WireError::InvalidRequest);
    fail(LlpEnd::TerminateSent, IBV_WC_WR_FLUSH_ERR);
    return true;
  }
  Frame *out = ring_slot_locked();
  if (!out) return false;  // executed only once there is room for the answer
  {
    MrUse use;
    if (!use.enter(target)) {  // deregistered under us: as an invalid STag
      send_terminate_locked(WireError::Access);
      fail(LlpEnd::TerminateSent, IBV_WC_WR_FLUSH_ERR);
      return true;
    }
    b.orig = transport::atomic_execute(target.host, r);
  }
  out->type = (uint32_t)FrameType::AtomicResponse;
  out->len = sizeof b;
  std::memcpy(out->data, &b, sizeof b);
  out->model_ps = now_ps();
  ring_publish_locked();
  return true;
}

bool HwConn::handle_atomic_response_locked(const Frame &f) {
  ECA_ASSERT_HELD(mu_);
  if (await_atomic_.empty() || f.len != sizeof(AtomicBody)) {
    ECA_QP_LOG(Warn, qp_.qpn, "unexpected atomic response from the peer");
    send_terminate_locked(WireError::Protocol);
    fail(LlpEnd::TerminateSent, IBV_WC_WR_FLUSH_ERR);
    return true;
  }
  AtomicBody b;
  std::memcpy(&b, f.data, sizeof b);
  AtomicWait a = std::move(await_atomic_.front());
  await_atomic_.pop_front();
  {
    MrUse use;
    if (!use.enter(a.result)) {
      qp_.sq_done(a.w, IBV_WC_LOC_PROT_ERR);
      send_terminate_locked(WireError::Ended);
      fail(LlpEnd::TerminateSent, IBV_WC_WR_FLUSH_ERR);
      return true;
    }
    std::memcpy(a.result.host, &b.orig, sizeof b.orig);
  }
  qp_.sq_done(a.w, IBV_WC_SUCCESS);
  return true;
}

}  // namespace eca::hw

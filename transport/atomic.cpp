// RFC 7306 atomics of the software transport: the responder (Atomic Request in, Atomic
// Response out) and the requester's completion (Atomic Response in). The framing of both
// messages is in qp_tx.cpp next to the other RDMAP messages; the body layout in
// wire/atomic.hpp. Atomic Requests share the inbound read queue (IRQ) and its IRD limit with
// RDMA Read Requests and are executed when they reach its head, so a READ or atomic that
// arrived earlier on the QP has been answered before, and one that arrived later sees the
// result (RFC 7306 ordering). Outbound, they occupy ORQ entries (ORD) like READs.
#include "transport/atomic.hpp"

#include <atomic>
#include <cstring>

#include "provider/core/log.hpp"
#include "transport/iwarp_conn.hpp"

namespace eca::transport {

using namespace eca::wire;

bool atomic_check(const Pd *pd, uint32_t qpn, const AtomicRequest &r, MrRef *out, TermInfo *term) {
  if (!atomic_op_valid(r.aopcode) || r.to % kAtomicAlign) {
    *term = {TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapInvalidAtomicRequest};
    return false;
  }
  const AccessError e = mr_lookup(r.stag, pd, r.to, kAtomicLen, IBV_ACCESS_REMOTE_ATOMIC, out, qpn);
  if (e != AccessError::None) {
    *term = term_for_read_source(e);  // the RFC 5040 Remote Protection codes
    return false;
  }
  if (reinterpret_cast<uintptr_t>(out->host) % kAtomicAlign) {
    // An MR whose iova and address differ modulo 8: the aligned offset is not an aligned word.
    *out = MrRef{};
    *term = {TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapInvalidAtomicRequest};
    return false;
  }
  return true;
}

uint64_t atomic_execute(uint8_t *host, const AtomicRequest &r) {
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

// ---------------------------------------------------------------------------------------------
// Responder. Progress thread, cb_mu held; the request passed its CRC check.
bool IwarpConn::rx_atomic_request() {
  const AtomicRequest r = get_atomic_request(rx_.hdr.data());
  IrqEntry e;
  TermInfo term;
  if (!atomic_check(qp_.pd, qp_.qpn, r, &e.src, &term)) {
    ECA_QP_LOG(Info, qp_.qpn, "Atomic Request (op %u) on STag 0x%x TO 0x%llx rejected",
               r.aopcode, r.stag, (unsigned long long)r.to);
    fail_terminate(term, IBV_WC_WR_FLUSH_ERR);
    return false;
  }
  e.atomic = true;
  e.areq = r;
  {
    std::lock_guard lk(tx_mu_);
    if (irq_.size() < std::max<uint16_t>(ird_, 1)) {
      irq_.push_back(std::move(e));  // answered by the doorbell after the request
      return true;
    }
  }
  ECA_QP_LOG(Info, qp_.qpn, "peer exceeded IRD %u with an Atomic Request", ird_);
  fail_terminate({TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapCatastrophicStream},
                 IBV_WC_WR_FLUSH_ERR);
  return false;
}

// The atomic at the head of the IRQ: execute it now and make its response the current
// message. tx_mu held. False if its MR was deregistered under it (the stream ends).
bool IwarpConn::start_atomic_response_locked(IrqEntry &e) {
  ECA_ASSERT_HELD(tx_mu_);
  uint64_t orig;
  {
    MrUse use;
    if (!use.enter(e.src)) {  // deregistered since the request was checked
      ECA_QP_LOG(Info, qp_.qpn, "atomic target deregistered before execution");
      fail_local_async(term_for_read_source(AccessError::InvalidStag));
      return false;
    }
    orig = atomic_execute(e.src.host, e.areq);
  }
  msg_ = TxMsg{};
  msg_.kind = TxMsg::Kind::AtomicResponse;
  msg_.op = Opcode::AtomicResponse;
  msg_.aresp = {e.areq.req_id, orig};
  msg_.msn = msn_aresp_++;
  irq_active_ = true;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Requester. Progress thread, cb_mu held; the response passed its CRC check. Responses come
// in request order (one inbound queue at the peer), so it answers the oldest ORQ entry.
bool IwarpConn::rx_atomic_response() {
  const AtomicResponse r = get_atomic_response(rx_.hdr.data());
  OrqEntry *o = nullptr;
  {
    std::lock_guard lk(tx_mu_);
    if (!orq_.empty()) o = &orq_.front();
  }
  if (!o || !o->atomic || o->req_id != r.req_id) {
    ECA_QP_LOG(Info, qp_.qpn, "unexpected Atomic Response (request id %u)", r.req_id);
    fail_terminate({TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapUnexpectedOpcode},
                   IBV_WC_WR_FLUSH_ERR);
    return false;
  }
  {
    MrUse use;
    if (!use.enter(o->sinks)) {
      ECA_QP_LOG(Info, qp_.qpn, "atomic result buffer deregistered");
      fail_terminate({TermLayer::Rdmap, kRdmapLocalCatastrophic, kRdmapUnspecified},
                     IBV_WC_LOC_PROT_ERR);  // the atomic is the oldest outstanding WQE
      return false;
    }
    // The original value, in host order, into the local buffer (8 bytes, maybe split).
    const uint8_t *src = reinterpret_cast<const uint8_t *>(&r.orig);
    uint64_t left = kAtomicLen;
    for (const iovec &v : o->sink_iov) {
      const size_t n = std::min<uint64_t>(left, v.iov_len);
      std::memcpy(v.iov_base, src, n);
      src += n;
      left -= n;
      if (!left) break;
    }
  }
  SendWqe *w = o->wqe;
  {
    std::lock_guard lk(tx_mu_);
    orq_.pop_front();
    orq_size_.store((uint32_t)orq_.size(), std::memory_order_release);
  }
  qp_.sq_done(w, IBV_WC_SUCCESS);
  doorbell();  // ORD room or a fence may let the send queue move on
  return true;
}

}  // namespace eca::transport

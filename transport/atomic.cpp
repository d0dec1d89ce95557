// RFC 7306 atomics of the software transport: the responder (Atomic Request in, Atomic
// Response out) and the requester's completion (Atomic Response in). The framing of both
// messages is in qp_tx.cpp next to the other RDMAP messages; the body layout in
// wire/atomic.hpp. Atomic Requests share the inbound read queue (IRQ) and its IRD limit with
// RDMA Read Requests and are executed when they reach its head, so a READ or atomic that
// arrived earlier on the QP has been answered before, and one that arrived later sees the
// result (RFC 7306 ordering). Outbound, they occupy ORQ entries (ORD) like READs.
#include "engine/atomic.hpp"
#include "engine/sge.hpp"
#include "provider/core/log.hpp"
#include "transport/iwarp_conn.hpp"

namespace eca::transport {

using namespace eca::wire;

namespace {
// The TERMINATE a refused Atomic Request earns.
TermInfo term_for_atomic(const engine::AtomicRefusal &why) {
  if (why.invalid_request)
    return {TermLayer::Rdmap, kRdmapRemoteOperation, kRdmapInvalidAtomicRequest};
  return term_for_read_source(why.access);  // the RFC 5040 Remote Protection codes
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// Responder. Progress thread, cb_mu held; the request passed its CRC check.
bool IwarpConn::rx_atomic_request() {
  const AtomicRequest r = get_atomic_request(rx_.hdr.data());
  IrqEntry e;
  engine::AtomicRefusal why;
  if (!engine::atomic_check(qp_.pd, qp_.qpn, r, &e.src, &why)) {
    ECA_QP_LOG(Info, qp_.qpn, "Atomic Request (op %u) on STag 0x%x TO 0x%llx rejected",
               r.aopcode, r.stag, (unsigned long long)r.to);
    fail_terminate(term_for_atomic(why), IBV_WC_WR_FLUSH_ERR);
    return false;
  }
  e.atomic = true;
  e.areq = r;
  {
    std::lock_guard lk(tx_mu_);
    if (rd_.inbound_accept()) {
      irq_.push_back(std::move(e));  // answered by the doorbell after the request
      return true;
    }
  }
  ECA_QP_LOG(Info, qp_.qpn, "peer exceeded IRD %u with an Atomic Request", rd_.ird());
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
    orig = engine::atomic_execute(e.src.host, e.areq);
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
    engine::scatter_copy(reinterpret_cast<const uint8_t *>(&r.orig), o->sink_iov, 0, kAtomicLen);
  }
  SendWqe *w = o->wqe;
  {
    std::lock_guard lk(tx_mu_);
    orq_.pop_front();
    rd_.response_done();
    orq_size_.store((uint32_t)orq_.size(), std::memory_order_release);
  }
  qp_.sq_done(w, IBV_WC_SUCCESS);
  doorbell();  // ORD room or a fence may let the send queue move on
  return true;
}

}  // namespace eca::transport

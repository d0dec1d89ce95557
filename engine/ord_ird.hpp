// ORD/IRD accounting, shared by both engines (transport/, hwmodel/backend/).
//
// RFC 5040 (RDMAP) and RFC 7306 (atomics): a requester has at most ORD RDMA Read and Atomic
// Requests outstanding (the Outbound Read queue Depth, negotiated in the MPA exchange, RFC
// 6581: our ORD never exceeds the peer's IRD); a responder holds at most IRD of them (the
// Inbound Read queue Depth) and ends the stream when a peer sends more. The verbs semantics
// on top: a READ or atomic at the head of the send queue waits while ORD are outstanding;
// a work request posted with IBV_SEND_FENCE waits until every READ and atomic before it has
// completed; a READ or atomic on a connection whose ORD is 0 (the peer takes none) fails
// with IBV_WC_LOC_QP_OP_ERR and ends the stream like any local error.
//
// The engine keeps the outstanding requests themselves (the software transport's ORQ and
// IRQ, the modeled adapter's awaited atomics); this class keeps their counts and decides.
// Threads: not synchronised; each engine calls it under the lock that guards its queues
// (IwarpConn::tx_mu_, HwConn::mu_), and every caller states that with ECA_ASSERT_HELD.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>

namespace eca {
struct Qp;
struct SendWqe;
}  // namespace eca

namespace eca::engine {

// Work requests that wait for an answer from the peer and count against ORD.
constexpr bool uses_ord(ibv_wr_opcode op) {
  return op == IBV_WR_RDMA_READ || op == IBV_WR_ATOMIC_FETCH_AND_ADD ||
         op == IBV_WR_ATOMIC_CMP_AND_SWP;
}

// What the engine does with the work request at the head of its send queue.
enum class SqGate : uint8_t {
  Go,         // start it now
  WaitOrd,    // a READ/atomic with ORD requests outstanding: it stays at the head
  WaitFence,  // IBV_SEND_FENCE with READs/atomics outstanding: it stays at the head
  RefuseOrd0, // a READ/atomic on a connection with ORD 0: complete it with kOrd0Status,
              // then end the stream (the engine's local-error path)
};

// The completion status of a READ or atomic posted on a connection with ORD 0.
inline constexpr ibv_wc_status kOrd0Status = IBV_WC_LOC_QP_OP_ERR;

class OrdIrd {
 public:
  OrdIrd() = default;
  // The negotiated depths of the connection (LlpConnection::ord / ird).
  OrdIrd(uint32_t ord, uint32_t ird) : ord_(ord), ird_(ird) {}

  uint32_t ord() const { return ord_; }
  uint32_t ird() const { return ird_; }

  // ---- outbound (requester)
  // The rule for the send-queue head. An ORD of 0 still lets one through, so that the
  // request reaches the refusal and completes instead of waiting for ever.
  SqGate sq_gate(ibv_wr_opcode op, unsigned send_flags) const {
    if (uses_ord(op)) {
      if (outstanding_ >= (ord_ ? ord_ : 1)) return SqGate::WaitOrd;
      if (ord_ == 0) return SqGate::RefuseOrd0;
    }
    if ((send_flags & IBV_SEND_FENCE) && outstanding_) return SqGate::WaitFence;
    return SqGate::Go;
  }
  // A memory-window bind or invalidation runs in the engine without wire traffic; it honours
  // a fence the same way.
  bool fence_blocks(unsigned send_flags) const {
    return (send_flags & IBV_SEND_FENCE) && outstanding_;
  }
  void request_sent() { outstanding_++; }              // a READ/atomic left (sq_gate said Go)
  void response_done() { if (outstanding_) outstanding_--; }  // its answer completed it
  uint32_t outstanding() const { return outstanding_; }

  // ---- inbound (responder)
  // A READ or Atomic Request arrived: true if it fits (it is then counted until
  // inbound_done()), false if the peer exceeded IRD (the engine terminates the stream:
  // RDMAP, Remote Operation Error, catastrophic). An IRD of 0 takes one, as ORD 0 sends one.
  bool inbound_accept() {
    if (inbound_ >= (ird_ ? ird_ : 1)) return false;
    inbound_++;
    return true;
  }
  void inbound_done() { if (inbound_) inbound_--; }  // its response went out (or was dropped)
  uint32_t inbound() const { return inbound_; }

 private:
  uint32_t ord_ = 0, ird_ = 0;
  uint32_t outstanding_ = 0;  // our READ/Atomic Requests awaiting their responses
  uint32_t inbound_ = 0;      // the peer's requests we hold and have not answered yet
};

// SqGate::RefuseOrd0: logs it and completes `w` with kOrd0Status. The engine then ends the
// stream its own way (the software transport: TERMINATE, local catastrophic error; the
// modeled adapter: a Terminate frame), so nothing posted behind it is transmitted.
// The caller holds the lock of its send path.
void refuse_ord0(Qp &qp, SendWqe *w);

}  // namespace eca::engine

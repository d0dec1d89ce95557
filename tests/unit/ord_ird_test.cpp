// engine/ord_ird.hpp on its own: the ORD/IRD rules both engines follow, with the numbers of
// RFC 5040 (RDMAP: at most ORD RDMA Read Requests outstanding at the requester, at most IRD
// held by the responder, more is a stream-ending error), RFC 7306 (Atomic Requests use the
// same ORD/IRD as RDMA Read Requests), RFC 6581 (the MPA IRD/ORD fields are 14 bits: at most
// 0x3FFF) and the verbs semantics of IBV_SEND_FENCE (a fenced work request waits for every
// READ and atomic before it). Each case counts requests in and out by hand (a second
// computation), not by the class's own formula.
#include <gtest/gtest.h>

#include "engine/ord_ird.hpp"

namespace {

using eca::engine::OrdIrd;
using eca::engine::SqGate;
using eca::engine::uses_ord;

TEST(OrdIrd, OnlyReadsAndAtomicsCountAgainstOrd) {
  EXPECT_TRUE(uses_ord(IBV_WR_RDMA_READ));
  EXPECT_TRUE(uses_ord(IBV_WR_ATOMIC_FETCH_AND_ADD));
  EXPECT_TRUE(uses_ord(IBV_WR_ATOMIC_CMP_AND_SWP));
  for (ibv_wr_opcode op : {IBV_WR_RDMA_WRITE, IBV_WR_RDMA_WRITE_WITH_IMM, IBV_WR_SEND,
                           IBV_WR_SEND_WITH_IMM, IBV_WR_SEND_WITH_INV, IBV_WR_LOCAL_INV,
                           IBV_WR_BIND_MW})
    EXPECT_FALSE(uses_ord(op)) << op;
}

// ORD 4: four READs leave, the fifth waits at the head; each response lets one more go.
TEST(OrdIrd, ReadsBeyondOrdWaitAtTheHead) {
  OrdIrd r(4, 4);
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(r.sq_gate(IBV_WR_RDMA_READ, 0), SqGate::Go) << i;
    r.request_sent();
  }
  EXPECT_EQ(r.outstanding(), 4u);
  EXPECT_EQ(r.sq_gate(IBV_WR_RDMA_READ, 0), SqGate::WaitOrd);
  // RFC 7306: an atomic needs the same room.
  EXPECT_EQ(r.sq_gate(IBV_WR_ATOMIC_CMP_AND_SWP, 0), SqGate::WaitOrd);
  // Writes and Sends do not wait for ORD.
  EXPECT_EQ(r.sq_gate(IBV_WR_RDMA_WRITE, 0), SqGate::Go);
  EXPECT_EQ(r.sq_gate(IBV_WR_SEND, 0), SqGate::Go);
  r.response_done();
  EXPECT_EQ(r.outstanding(), 3u);
  EXPECT_EQ(r.sq_gate(IBV_WR_RDMA_READ, 0), SqGate::Go);
  r.request_sent();
  EXPECT_EQ(r.sq_gate(IBV_WR_ATOMIC_FETCH_AND_ADD, 0), SqGate::WaitOrd);
}

// Mixed READs and atomics share one count: ORD 3 = 2 READs + 1 atomic.
TEST(OrdIrd, ReadsAndAtomicsShareOneOrd) {
  OrdIrd r(3, 0);
  const ibv_wr_opcode seq[] = {IBV_WR_RDMA_READ, IBV_WR_ATOMIC_FETCH_AND_ADD, IBV_WR_RDMA_READ};
  for (ibv_wr_opcode op : seq) {
    ASSERT_EQ(r.sq_gate(op, 0), SqGate::Go);
    r.request_sent();
  }
  EXPECT_EQ(r.sq_gate(IBV_WR_ATOMIC_CMP_AND_SWP, 0), SqGate::WaitOrd);
  EXPECT_EQ(r.sq_gate(IBV_WR_RDMA_READ, 0), SqGate::WaitOrd);
}

// The fence waits for every READ/atomic before it, whatever the fenced request is; with none
// outstanding it does not wait; an unfenced request does not wait for them.
TEST(OrdIrd, FenceWaitsForOutstandingReadsAndAtomics) {
  OrdIrd r(8, 8);
  EXPECT_EQ(r.sq_gate(IBV_WR_SEND, IBV_SEND_FENCE), SqGate::Go);
  EXPECT_FALSE(r.fence_blocks(IBV_SEND_FENCE));
  r.request_sent();  // one READ out
  r.request_sent();  // one atomic out
  for (ibv_wr_opcode op : {IBV_WR_SEND, IBV_WR_RDMA_WRITE, IBV_WR_RDMA_READ,
                           IBV_WR_ATOMIC_FETCH_AND_ADD, IBV_WR_SEND_WITH_INV}) {
    EXPECT_EQ(r.sq_gate(op, IBV_SEND_FENCE | IBV_SEND_SIGNALED), SqGate::WaitFence) << op;
    EXPECT_EQ(r.sq_gate(op, IBV_SEND_SIGNALED), SqGate::Go) << op;
  }
  EXPECT_TRUE(r.fence_blocks(IBV_SEND_FENCE));     // a memory-window bind behind them
  EXPECT_FALSE(r.fence_blocks(IBV_SEND_SIGNALED));
  r.response_done();
  EXPECT_EQ(r.sq_gate(IBV_WR_SEND, IBV_SEND_FENCE), SqGate::WaitFence);  // one still out
  r.response_done();
  EXPECT_EQ(r.sq_gate(IBV_WR_SEND, IBV_SEND_FENCE), SqGate::Go);
  EXPECT_FALSE(r.fence_blocks(IBV_SEND_FENCE));
}

// ORD 0 (the peer's IRD is 0): a READ or atomic is refused, with IBV_WC_LOC_QP_OP_ERR;
// everything else goes, fenced or not (nothing can be outstanding).
TEST(OrdIrd, OrdZeroRefusesReadsAndAtomics) {
  OrdIrd r(0, 16);
  EXPECT_EQ(eca::engine::kOrd0Status, IBV_WC_LOC_QP_OP_ERR);
  EXPECT_EQ(r.sq_gate(IBV_WR_RDMA_READ, 0), SqGate::RefuseOrd0);
  EXPECT_EQ(r.sq_gate(IBV_WR_ATOMIC_FETCH_AND_ADD, IBV_SEND_FENCE), SqGate::RefuseOrd0);
  EXPECT_EQ(r.sq_gate(IBV_WR_ATOMIC_CMP_AND_SWP, 0), SqGate::RefuseOrd0);
  EXPECT_EQ(r.sq_gate(IBV_WR_SEND, IBV_SEND_FENCE), SqGate::Go);
  EXPECT_EQ(r.sq_gate(IBV_WR_RDMA_WRITE, 0), SqGate::Go);
  EXPECT_EQ(r.outstanding(), 0u);
}

// IRD 2: two requests held, the third is the peer's error (the stream ends); once one is
// answered there is room again.
TEST(OrdIrd, InboundBeyondIrdIsRefused) {
  OrdIrd r(0, 2);
  EXPECT_TRUE(r.inbound_accept());
  EXPECT_TRUE(r.inbound_accept());
  EXPECT_EQ(r.inbound(), 2u);
  EXPECT_FALSE(r.inbound_accept());
  EXPECT_EQ(r.inbound(), 2u) << "a refused request is not counted";
  r.inbound_done();
  EXPECT_TRUE(r.inbound_accept());
  EXPECT_FALSE(r.inbound_accept());
  // The inbound count is independent of the outbound one.
  EXPECT_EQ(r.outstanding(), 0u);
}

// IRD 0 still holds one request, as ORD 0 lets one reach the refusal (project rule:
// docs/architecture.md); a second one while it is held is refused.
TEST(OrdIrd, IrdZeroHoldsOne) {
  OrdIrd r(5, 0);
  EXPECT_TRUE(r.inbound_accept());
  EXPECT_FALSE(r.inbound_accept());
  r.inbound_done();
  EXPECT_TRUE(r.inbound_accept());
}

// RFC 6581: the largest depth the MPA fields carry, 0x3FFF = 16383.
TEST(OrdIrd, LargestMpaDepth) {
  OrdIrd r(0x3FFF, 0x3FFF);
  uint32_t sent = 0;
  while (r.sq_gate(IBV_WR_RDMA_READ, 0) == SqGate::Go && sent < 20000) {
    r.request_sent();
    sent++;
  }
  EXPECT_EQ(sent, 16383u);
  uint32_t held = 0;
  while (r.inbound_accept() && held < 20000) held++;
  EXPECT_EQ(held, 16383u);
}

// Counts never go below zero (a stray completion after the end of a stream).
TEST(OrdIrd, CountsDoNotUnderflow) {
  OrdIrd r(1, 1);
  r.response_done();
  r.inbound_done();
  EXPECT_EQ(r.outstanding(), 0u);
  EXPECT_EQ(r.inbound(), 0u);
  EXPECT_EQ(r.sq_gate(IBV_WR_RDMA_READ, 0), SqGate::Go);
  EXPECT_TRUE(r.inbound_accept());
}

}  // namespace

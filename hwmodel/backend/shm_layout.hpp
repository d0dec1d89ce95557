// Shared-memory formats of the modeled adapter. Everything here lives in memfd-backed
// mappings shared between processes of one user; offsets and indices only, never pointers,
// and every struct's size is asserted. Fields a peer writes are validated before use.
//
//  AdapterShm (one per process)  the adapter's STag table and memory-region table, read by
//                                peers' adapters to validate and translate remote accesses,
//                                plus the adapter's doorbell word.
//  LinkShm (one per connection)  two single-producer/single-consumer frame rings (one per
//                                direction) and each side's identity and state: the
//                                point-to-point Ethernet segment between the two adapters.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace eca::hw {

inline constexpr uint64_t kAdapterMagic = 0x4543414877416470ull;  // "ECAHwAdp"
inline constexpr uint64_t kLinkMagic = 0x454341487754696eull;     // "ECAHwLin"
inline constexpr uint32_t kLayoutVersion = 7;

inline constexpr uint32_t kMaxStags = 1u << 16;
inline constexpr uint32_t kMaxRegions = 1u << 12;

struct alignas(64) StagEntry {
  std::atomic<uint32_t> key;  // full STag; 0 = free. Written last (release) when valid.
  uint32_t pd;                // owner's PD handle
  uint32_t access;            // IBV_ACCESS_* bits
  uint32_t region;            // regions[] index of the MR's interior pages, or kMaxRegions
  uint64_t iova;              // first valid address (the MR's iova)
  uint64_t length;
  uint64_t host;              // owner's virtual address of iova
  uint32_t qpn;               // type 2 memory window: the owner's QP it serves; 0 = any
  uint8_t pad_[20];
};
static_assert(sizeof(StagEntry) == 64);

struct alignas(64) RegionEntry {
  std::atomic<uint32_t> gen;  // 0 = unused; bumped when the slot is reused
  int32_t fd;                 // the owner's own memfd number (peers ask for the region by index)
  uint64_t base;              // owner's virtual address of the mapping
  uint64_t length;
  uint8_t pad_[40];
};
static_assert(sizeof(RegionEntry) == 64);

// Peers map this read-only: they validate and translate with it, never change it.
struct AdapterShm {
  uint64_t magic;
  uint32_t version;
  uint32_t pid;
  alignas(64) RegionEntry regions[kMaxRegions];
  StagEntry stags[kMaxStags];
};
static_assert(offsetof(AdapterShm, regions) % 64 == 0);

// The adapter's doorbell (its own memfd, the one object peers may write besides links and
// regions granted for REMOTE_WRITE).
struct alignas(64) Bell {
  std::atomic<uint32_t> doorbell;  // futex word: bumped to wake the adapter
  std::atomic<uint32_t> sleeping;  // the adapter thread waits on doorbell
};
inline constexpr uint64_t kBellBytes = 4096;
static_assert(sizeof(Bell) <= kBellBytes);

// ---- frames on the link rings
enum class FrameType : uint32_t {
  Send = 1,        // untagged message for a receive WQE (inline payload or region references)
  Immediate = 2,   // RFC 7306 Immediate Data (after an RDMA Write with immediate)
  // 3 was a per-Send Ack frame; acknowledgements are now LinkSide::placed.
  Terminate = 4,   // the sender's side hit an error; the stream is dead
  Disconnect = 5,  // orderly close
  AtomicRequest = 6,   // an RFC 7306 atomic for the receiving adapter to execute (AtomicBody)
  AtomicResponse = 7,  // its original value (AtomicBody::orig), in request order
};
// Why a side ended the link (Terminate frames): the adapter's own vocabulary, translated to
// verbs completion statuses only at the verbs boundary (hw_conn.cpp, kTerminateStatus).
enum class WireError : uint32_t {
  Ended = 1,           // the sender ended the link for its own reasons (its WR failed locally)
  Access = 2,          // a tagged access failed the owner's checks (STag, PD, rights, bounds)
  InvalidRequest = 3,  // no receive posted, message too long, invalidation refused
  Protocol = 4,        // a malformed or unexpected frame, a corrupt ring or count
};
static_assert(sizeof(WireError) == 4);  // carried in Frame::status
inline constexpr uint32_t kFrameSendSolicited = 1u << 0;
inline constexpr uint32_t kFrameSendInvalidate = 1u << 1;

inline constexpr uint32_t kFrameSges = 8;
inline constexpr uint32_t kFrameInline = 256;  // = the QPs' max_inline_data

// A piece of a large Send's payload, in the sender's memory. The receiving adapter fetches it
// as it would an RDMA READ of the sender's MR `stag` (the sender's lkey): validated against
// the sender's published STag table (PD, bounds) and announced in LinkSide::touching, so it
// reaches only memory the sender's adapter still has registered.
struct FrameSge {
  uint32_t stag;    // the sender's MR holding [addr, addr+len)
  uint32_t len;
  uint64_t addr;    // in that MR's address space (its iova), as in the sender's work request
};
static_assert(sizeof(FrameSge) == 16);

struct alignas(64) Frame {
  uint32_t type;
  uint32_t flags;
  uint32_t len;        // payload bytes of the message
  uint32_t nsge;       // 0: payload inline
  uint32_t imm;        // immediate data (network order), or STag to invalidate
  uint32_t status;     // Terminate: a WireError
  uint32_t reserved_[kFrameSges];  // zero (layout 5: region generations)
  uint64_t model_ps;   // modeled time at which the frame is visible to the receiver
  FrameSge sge[kFrameSges];
  uint8_t data[kFrameInline];
};
static_assert(sizeof(Frame) == 448);

// Frame::data of the atomic frames. The target's adapter runs the operation on its own
// process's memory with CPU atomics (engine/atomic.hpp), after the same checks as the
// software transport's responder.
struct AtomicBody {
  uint32_t op;       // engine::AtomicOp: FetchAdd or CompareSwap
  uint32_t rkey;
  uint64_t addr;
  uint64_t operand;  // FetchAdd: the addend; CompareSwap: the swap value
  uint64_t compare;  // CompareSwap: the compare value
  uint64_t orig;     // AtomicResponse: the target's value before the operation
};
static_assert(sizeof(AtomicBody) == 40 && sizeof(AtomicBody) <= kFrameInline);

inline constexpr uint32_t kRingSlots = 1024;  // power of two
static_assert((kRingSlots & (kRingSlots - 1)) == 0);

// Single producer (the sending adapter), single consumer (the receiving one). The producer
// writes the slot, then publishes it with a release store of tail; the consumer reads tail
// with acquire, consumes, then releases the slot with a release store of head.
struct Ring {
  alignas(64) std::atomic<uint64_t> head;
  alignas(64) std::atomic<uint64_t> tail;
  alignas(64) Frame slots[kRingSlots];
};

struct alignas(64) LinkSide {
  std::atomic<uint32_t> pid;
  std::atomic<uint32_t> qpn;
  std::atomic<uint32_t> pd;
  std::atomic<uint32_t> want_intr;   // consumer asks to be woken (a CQ is armed)
  std::atomic<uint32_t> closed;      // this side closed or failed the link
  // The STag of the peer's memory this side's adapter is reading or writing right now (0:
  // none). Stored (seq_cst) BEFORE the STag is validated in the peer's table and cleared
  // after the last byte moved; the peer's ibv_dereg_mr clears the STag entry, then waits
  // until no link announces it (Adapter::unregister_mr). Either the accessor sees the STag
  // gone, or the owner sees the access and waits for it.
  std::atomic<uint32_t> touching;
  // Acknowledgement: Send and Immediate Data messages of the peer that this side has placed
  // (a running count, release-stored BEFORE the receive completion becomes visible). The
  // peer completes its oldest unacknowledged Sends up to this count; it never needs a ring
  // slot, so placing never waits for room and close() can owe nothing.
  std::atomic<uint64_t> placed;
  uint8_t pad_[32];
};
static_assert(sizeof(LinkSide) == 64);

struct LinkShm {
  uint64_t magic;
  uint32_t version;
  uint32_t pad_;
  LinkSide side[2];
  Ring ring[2];  // ring[i]: frames sent BY side i
};

}  // namespace eca::hw

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
#include <type_traits>

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
// process's memory with CPU atomics (transport/atomic.hpp), after the same checks as the
// software transport's responder.
struct AtomicBody {
  uint32_t op;       // wire::AtomicOp: FetchAdd or CompareSwap
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


// ---- layout assertions
// Both processes of a link map these structs and must agree on every byte: each is standard
// layout, has its exact size, and every field sits at the offset asserted here (a change to
// any of them is a new kLayoutVersion). Plain data is trivially copyable; the atomics are
// lock-free, hence address-free, so they work between processes on shared pages.
template <typename T>
inline constexpr bool kShmPlain = std::is_standard_layout_v<T> && std::is_trivially_copyable_v<T>;
template <typename T>
inline constexpr bool kShmShared =
    std::is_standard_layout_v<T> && std::is_trivially_destructible_v<T>;
static_assert(std::atomic<uint32_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<uint32_t>) == 4 && sizeof(std::atomic<uint64_t>) == 8);

static_assert(kShmShared<StagEntry> && alignof(StagEntry) == 64);
static_assert(offsetof(StagEntry, key) == 0 && offsetof(StagEntry, pd) == 4 &&
              offsetof(StagEntry, access) == 8 && offsetof(StagEntry, region) == 12 &&
              offsetof(StagEntry, iova) == 16 && offsetof(StagEntry, length) == 24 &&
              offsetof(StagEntry, host) == 32 && offsetof(StagEntry, qpn) == 40);
static_assert(kShmShared<RegionEntry> && alignof(RegionEntry) == 64);
static_assert(offsetof(RegionEntry, gen) == 0 && offsetof(RegionEntry, fd) == 4 &&
              offsetof(RegionEntry, base) == 8 && offsetof(RegionEntry, length) == 16);
static_assert(kShmShared<AdapterShm>);
static_assert(offsetof(AdapterShm, magic) == 0 && offsetof(AdapterShm, version) == 8 &&
              offsetof(AdapterShm, pid) == 12 && offsetof(AdapterShm, regions) == 64 &&
              offsetof(AdapterShm, stags) == 64 + 64 * kMaxRegions);
static_assert(sizeof(AdapterShm) == 64 + 64 * (uint64_t)kMaxRegions + 64 * (uint64_t)kMaxStags);
static_assert(kShmShared<Bell> && sizeof(Bell) == 64);
static_assert(offsetof(Bell, doorbell) == 0 && offsetof(Bell, sleeping) == 4);
static_assert(kShmPlain<FrameSge>);
static_assert(offsetof(FrameSge, stag) == 0 && offsetof(FrameSge, len) == 4 &&
              offsetof(FrameSge, addr) == 8);
static_assert(kShmPlain<Frame> && alignof(Frame) == 64);
static_assert(offsetof(Frame, type) == 0 && offsetof(Frame, flags) == 4 &&
              offsetof(Frame, len) == 8 && offsetof(Frame, nsge) == 12 &&
              offsetof(Frame, imm) == 16 && offsetof(Frame, status) == 20 &&
              offsetof(Frame, reserved_) == 24 && offsetof(Frame, model_ps) == 56 &&
              offsetof(Frame, sge) == 64 && offsetof(Frame, data) == 64 + 16 * kFrameSges &&
              offsetof(Frame, data) + kFrameInline == sizeof(Frame));
static_assert(kShmPlain<AtomicBody>);
static_assert(offsetof(AtomicBody, op) == 0 && offsetof(AtomicBody, rkey) == 4 &&
              offsetof(AtomicBody, addr) == 8 && offsetof(AtomicBody, operand) == 16 &&
              offsetof(AtomicBody, compare) == 24 && offsetof(AtomicBody, orig) == 32);
static_assert(kShmShared<Ring>);
static_assert(offsetof(Ring, head) == 0 && offsetof(Ring, tail) == 64 &&
              offsetof(Ring, slots) == 128 &&
              sizeof(Ring) == 128 + sizeof(Frame) * (uint64_t)kRingSlots);
static_assert(kShmShared<LinkSide> && alignof(LinkSide) == 64);
static_assert(offsetof(LinkSide, pid) == 0 && offsetof(LinkSide, qpn) == 4 &&
              offsetof(LinkSide, pd) == 8 && offsetof(LinkSide, want_intr) == 12 &&
              offsetof(LinkSide, closed) == 16 && offsetof(LinkSide, touching) == 20 &&
              offsetof(LinkSide, placed) == 24);
static_assert(kShmShared<LinkShm>);
static_assert(offsetof(LinkShm, magic) == 0 && offsetof(LinkShm, version) == 8 &&
              offsetof(LinkShm, side) == 64 && offsetof(LinkShm, ring) == 64 + 2 * 64 &&
              sizeof(LinkShm) == 64 + 2 * 64 + 2 * sizeof(Ring));

}  // namespace eca::hw

// wire.h - the rsocket stream protocol between two ends that both use this library.
//
// Transport: one RC QP per connected rsocket, established with rdma_connect/rdma_accept
// (private data: kMagic, kVersion). Every message is one SEND into one receive slot of
// kSlotSize bytes; the receiver keeps kRecvSlots receive WQEs posted, one per slot.
//
//   message = Hdr (8 bytes) + payload (0 .. kSlotSize - sizeof(Hdr) bytes)
//
//   Hdr: type (u8) | flags (u8) | credits (u16, big endian) | len (u32, big endian)
//
//   DATA     payload is stream bytes, in order.
//   CREDIT   no payload; exists only to carry credits.
//   FIN      no payload; the sender will send no more stream bytes (shutdown SHUT_WR).
//   IOMAP    payload IoMap: the sender registered a buffer the peer may riowrite into.
//   IOUNMAP  payload IoMap (only offset used): that mapping is gone.
//
// Flow control (credit based, so a SEND never finds its receive queue empty, which is
// fatal on iWARP): each end starts with kRecvSlots credits for the peer's slots; a SEND
// costs one. A receiver reposts a slot when its content is consumed (control messages at
// once, DATA when the application has read all of it) and returns the credits of reposted
// slots in the `credits` field of the next message it sends. To keep the exchange from
// deadlocking or ping-ponging:
//   - DATA, FIN and IOMAP need 2 credits: the last credit is reserved for CREDIT.
//   - A CREDIT goes out when at least kCreditBatch slots wait to be returned, or when the
//     peer signalled it is short (kWant: it is blocked for credits; kLast: it just spent
//     its last credit) and at least 2 slots wait (one of which is the peer's own message;
//     so a blocked peer and a reader that does not read do not ping-pong single credits).
//   - A blocked sender holding exactly one credit spends it on a CREDIT with kWant, once
//     per credit grant it received.
// riowrite is an RDMA WRITE into a mapping announced by IOMAP; it costs no credit. Stream
// ordering covers it: an RC QP places a WRITE before any later SEND completes at the peer.
//
// Both ends are this library on a little- or big-endian host; numbers are big endian.
#pragma once

#include <arpa/inet.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace eca::rsock::wire {

constexpr uint32_t kMagic = 0x52534f43;  // "RSOC"
constexpr uint8_t kVersion = 1;
constexpr uint32_t kSlotSize = 64 * 1024;
constexpr uint32_t kRecvSlots = 16;
constexpr uint32_t kSendSlots = 16;
constexpr uint32_t kCreditBatch = kRecvSlots / 2;

enum Type : uint8_t { kData = 1, kCredit = 2, kFin = 3, kIoMap = 4, kIoUnmap = 5 };
enum Flags : uint8_t { kWant = 1, kLast = 2 };

struct Hdr {
  uint8_t type = 0;
  uint8_t flags = 0;
  uint16_t credits = 0;
  uint32_t len = 0;
};
constexpr uint32_t kHdrSize = 8;
constexpr uint32_t kMaxPayload = kSlotSize - kHdrSize;

inline void put(uint8_t *p, const Hdr &h) {
  p[0] = h.type;
  p[1] = h.flags;
  uint16_t c = htons(h.credits);
  uint32_t l = htonl(h.len);
  std::memcpy(p + 2, &c, 2);
  std::memcpy(p + 4, &l, 4);
}

inline Hdr get(const uint8_t *p) {
  Hdr h;
  h.type = p[0];
  h.flags = p[1];
  uint16_t c;
  uint32_t l;
  std::memcpy(&c, p + 2, 2);
  std::memcpy(&l, p + 4, 4);
  h.credits = ntohs(c);
  h.len = ntohl(l);
  return h;
}

// IOMAP payload: offset (u64), addr (u64), len (u64), rkey (u32), all big endian.
struct IoMap {
  uint64_t offset = 0, addr = 0, len = 0;
  uint32_t rkey = 0;
};
constexpr uint32_t kIoMapSize = 28;

inline void put64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
inline uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

inline void put(uint8_t *p, const IoMap &m) {
  put64(p, m.offset);
  put64(p + 8, m.addr);
  put64(p + 16, m.len);
  uint32_t k = htonl(m.rkey);
  std::memcpy(p + 24, &k, 4);
}

inline IoMap get_iomap(const uint8_t *p) {
  IoMap m;
  m.offset = get64(p);
  m.addr = get64(p + 8);
  m.len = get64(p + 16);
  uint32_t k;
  std::memcpy(&k, p + 24, 4);
  m.rkey = ntohl(k);
  return m;
}

// Connection private data.
struct Hello {
  uint32_t magic;
  uint8_t version;
  uint8_t pad[3];
};
// Sent as the bytes of the struct: plain data, 8 bytes, fields where the peer expects them.
static_assert(std::is_standard_layout_v<Hello> && std::is_trivially_copyable_v<Hello>);
static_assert(sizeof(Hello) == 8 && offsetof(Hello, magic) == 0 && offsetof(Hello, version) == 4);

}  // namespace eca::rsock::wire

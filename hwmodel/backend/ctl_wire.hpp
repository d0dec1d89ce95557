// Wire format of the adapters' control channel: a Unix-domain stream socket at a filesystem
// path (path sockets reach across network namespaces; abstract ones do not), one request and
// one reply per connection. The reply carries file descriptors with SCM_RIGHTS. The server
// learns who asks from SO_PEERCRED, the client learns who answers the same way; neither
// trusts a pid or fd number written by the other.
//
//   Hello   (nonce)     the nonce the server's adapter sent over the connection's TCP set-up
//                       socket: proves the asker is the process at the other end of that TCP
//                       connection. Reply: the server's adapter table (read-only fd), its
//                       doorbell (read-write fd) and, from the link's creator, the link memory.
//   Region  (idx, gen)  asks for one shared region. Only a process that completed a Hello
//                       may ask; the reply fd is read-write only if an MR of the region grants
//                       REMOTE_WRITE, read-only if one grants REMOTE_READ or the region was
//                       named in a Send to the asker, refused otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace eca::hw::ctl {

inline constexpr uint64_t kCtlMagic = 0x4543414877436c31ull;  // "ECAHwCl1"
inline constexpr uint32_t kMaxFds = 3;
inline constexpr uint32_t kNonceBytes = 16;

enum class Kind : uint32_t { Hello = 1, Region = 2 };

struct Request {
  uint64_t magic;
  uint32_t kind;
  uint32_t idx;  // Region: region index
  uint32_t gen;  // Region: generation the asker saw in the table
  uint32_t pad_;
  uint8_t nonce[kNonceBytes];  // Hello
};
static_assert(sizeof(Request) == 40);

struct Reply {
  uint64_t magic;
  uint32_t status;  // 0 or a positive errno
  uint32_t nfds;
  uint64_t size[kMaxFds];  // exact size of each memfd (checked with fstat before mmap)
};
static_assert(sizeof(Reply) == 40);


// Both ends copy these to and from the socket as bytes: plain data, exact sizes and offsets.
static_assert(std::is_standard_layout_v<Request> && std::is_trivially_copyable_v<Request>);
static_assert(offsetof(Request, magic) == 0 && offsetof(Request, kind) == 8 &&
              offsetof(Request, idx) == 12 && offsetof(Request, gen) == 16 &&
              offsetof(Request, nonce) == 24 && offsetof(Request, nonce) + kNonceBytes == sizeof(Request));
static_assert(std::is_standard_layout_v<Reply> && std::is_trivially_copyable_v<Reply>);
static_assert(offsetof(Reply, magic) == 0 && offsetof(Reply, status) == 8 &&
              offsetof(Reply, nfds) == 12 && offsetof(Reply, size) == 16);

}  // namespace eca::hw::ctl

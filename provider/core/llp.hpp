// What a device backend is handed to build a QP's data path on: an established
// lower-layer-protocol connection (a TCP stream after the MPA exchange, connect/) and what
// the two ends negotiated. rdma_cm produces it, Backend::attach consumes it. It names no
// socket library: the stream is a file descriptor the object owns; each backend builds
// from it what it needs.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <utility>

namespace eca {

// RFC 6581 ready-to-receive message the initiator must send in peer-to-peer mode.
enum class Rtr : uint8_t { None, ZeroLengthSend, ZeroLengthWrite, ZeroLengthRead };

// A file descriptor with one owner: closed when the owner goes, moved, never copied.
class OwnedFd {
 public:
  OwnedFd() = default;
  explicit OwnedFd(int fd) : fd_(fd) {}
  OwnedFd(OwnedFd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  OwnedFd &operator=(OwnedFd &&o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  OwnedFd(const OwnedFd &) = delete;
  OwnedFd &operator=(const OwnedFd &) = delete;
  ~OwnedFd() { reset(); }

  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }  // the caller owns the fd now
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct LlpConnection {
  OwnedFd fd;              // the connected TCP socket (IPv4 or IPv6); the next byte is FPDU data
  bool crc = false;        // MPA CRC32c in use (negotiated)
  uint8_t mpa_rev = 2;     // 1 or 2
  bool initiator = false;  // we sent the MPA request
  uint16_t ird = 0;        // inbound READs we accept (our IRD after negotiation)
  uint16_t ord = 0;        // outbound READs we may have outstanding (<= peer IRD)
  Rtr rtr_send = Rtr::None;  // RTR we must send first (initiator in p2p mode)
  Rtr rtr_recv = Rtr::None;  // RTR we must expect and consume first (responder in p2p mode)
};

}  // namespace eca

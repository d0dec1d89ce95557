// An established lower-layer-protocol connection: a TCP stream after the MPA exchange,
// with what the two ends negotiated. rdma_cm produces it; a backend consumes it.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <cstdint>

namespace eca {

// RFC 6581 ready-to-receive message the initiator must send in peer-to-peer mode.
enum class Rtr : uint8_t { None, ZeroLengthSend, ZeroLengthWrite, ZeroLengthRead };

struct LlpConnection {
  boost::asio::ip::tcp::socket sock;
  bool crc = false;        // MPA CRC32c in use (negotiated)
  uint8_t mpa_rev = 2;     // 1 or 2
  bool initiator = false;  // we sent the MPA request
  uint16_t ird = 0;        // inbound READs we accept (our IRD after negotiation)
  uint16_t ord = 0;        // outbound READs we may have outstanding (<= peer IRD)
  Rtr rtr_send = Rtr::None;  // RTR we must send first (initiator in p2p mode)
  Rtr rtr_recv = Rtr::None;  // RTR we must expect and consume first (responder in p2p mode)
};

}  // namespace eca

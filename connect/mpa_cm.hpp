// The MPA connection-setup exchange (RFC 5044 §7.1, RFC 6581) on a connected TCP socket,
// asynchronous on the progress thread. rdma_cm (provider/cm) drives it; when it succeeds the
// session yields a LlpConnection for the device backend.
//
// Every method of MpaSession must be called on the progress thread (runtime::Progress).
// Nothing read from the network is trusted: frames are read exactly (20-octet header, then
// PD_Length octets, never beyond: what follows belongs to the data path), lengths are bounded,
// and every wait is bounded by a timer (mpa_timeout()).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "connect/wire/mpa.hpp"
#include "provider/core/llp.hpp"

namespace eca::connect {

enum class MpaStatus : uint8_t {
  Ok,
  Rejected,            // peer replied with R=1 (initiator only)
  MarkersUnsupported,  // the peer asked for markers (we never do markers)
  ProtocolError,       // bad key, revision, length, missing IRD/ORD, no usable RTR ...
  Timeout,             // the peer did not complete its part in time
  Closed,              // the peer closed or reset the stream mid-exchange
  IoError,             // other socket error
};

const char *mpa_status_str(MpaStatus s);

struct MpaOutcome {
  MpaStatus status = MpaStatus::Ok;
  int err = 0;  // positive errno describing the failure (0 on success)
};

// What we offer in a request or reply.
struct MpaParams {
  uint16_t ird = 0;  // inbound RDMA READs we accept
  uint16_t ord = 0;  // outbound RDMA READs we want
  std::vector<uint8_t> pdata;  // application private data (<= wire::mpa::kMaxUserPrivateData)
};

// Handshake timeout: ECA_MPA_TIMEOUT_MS (default 10000 ms, range 100 .. 600000).
std::chrono::milliseconds mpa_timeout();

// What this end asks for and insists on (RFC 5044 7.1, RFC 6581). CRC follows RFC 5044's rule:
// it is used unless both ends agree to omit it. The initiator asks with C in the Request;
// the responder's Reply carries the outcome (C=1 when the Request had C=1 or the responder
// requires CRC), and both ends then use what the Reply says.
struct MpaPolicy {
  uint8_t rev = 2;             // revision we initiate with (ECA_MPA_REV)
  bool crc_request = true;     // initiator: C=1 in the Request (ECA_MPA_CRC)
  bool crc_required = false;   // both: insist on CRC (ECA_MPA_CRC_REQUIRED): a responder replies
                               // C=1 whatever was asked; an initiator refuses a Reply with C=0
  bool markers = false;        // request markers (negative tests only; never supported)
  static MpaPolicy from_config();
};

class MpaSession : public std::enable_shared_from_this<MpaSession> {
 public:
  using tcp = boost::asio::ip::tcp;
  using Done = std::function<void(MpaOutcome)>;

  // `sock` must be connected and belong to the progress io_context.
  static std::shared_ptr<MpaSession> create(tcp::socket sock,
                                            std::chrono::milliseconds timeout = mpa_timeout(),
                                            MpaPolicy policy = MpaPolicy::from_config());
  ~MpaSession();

  // ---- initiator: sends the request (rev/C/M from the policy), reads the reply.
  // done(Ok) -> take_llp(); done(Rejected) -> peer().pdata holds the reject's private data.
  void start_initiator(const MpaParams &ours, Done done);

  // ---- responder: reads the request. on_request(Ok) when a usable request arrived
  // (peer() describes it); on a request we refuse (markers, no usable RTR) the session
  // answers with R=1, closes, and reports the reason. The timer stops while the
  // application decides.
  void start_responder(Done on_request);
  // Sends the accepting reply; done(Ok) once it is written (then take_llp()).
  void accept(const MpaParams &ours, Done done);
  // Sends a reject reply carrying `pdata`, then closes. No callback.
  void reject(std::span<const uint8_t> pdata);

  // Closes the stream; no callback runs after this. Idempotent.
  void cancel();

  // The peer's frame (valid after its header and private data arrived).
  const wire::mpa::Frame &peer() const { return peer_; }
  bool initiator() const { return initiator_; }
  // Negotiated connection; the socket leaves the session as the connection's fd. Valid once
  // after done(Ok).
  LlpConnection take_llp();
  tcp::socket &socket() { return sock_; }

 private:
  MpaSession(tcp::socket sock, std::chrono::milliseconds timeout, MpaPolicy policy);
  void arm_timer();
  void read_frame(wire::mpa::Kind kind, std::function<void()> then);
  void fail(MpaStatus st, int err);
  void finish(MpaOutcome o);
  void send_reject_and_close(uint16_t ird, uint16_t ord, std::span<const uint8_t> pdata,
                             bool report, MpaStatus st, int err);

  tcp::socket sock_;
  boost::asio::steady_timer timer_;
  std::chrono::milliseconds timeout_;
  MpaPolicy policy_;
  Done done_;
  bool initiator_ = false;
  bool cancelled_ = false;
  bool timed_out_ = false;
  bool finished_ = false;
  std::array<uint8_t, wire::mpa::kHeaderLen> hdr_buf_{};
  std::vector<uint8_t> pd_buf_;
  std::vector<uint8_t> out_;
  wire::mpa::Header hdr_{};
  wire::mpa::Frame peer_;
  // negotiated
  bool crc_ = false;
  uint8_t rev_ = 1;
  uint16_t ird_ = 0, ord_ = 0;
  Rtr rtr_send_ = Rtr::None, rtr_recv_ = Rtr::None;
  bool sent_markers_ = false;
};

}  // namespace eca::connect

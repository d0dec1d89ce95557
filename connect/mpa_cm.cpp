#include "connect/mpa_cm.hpp"

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <netinet/tcp.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "provider/core/config.hpp"
#include "provider/core/log.hpp"

namespace eca::connect {

namespace asio = boost::asio;
namespace mpa = eca::wire::mpa;

const char *mpa_status_str(MpaStatus s) {
  switch (s) {
    case MpaStatus::Ok: return "ok";
    case MpaStatus::Rejected: return "rejected by peer";
    case MpaStatus::MarkersUnsupported: return "markers requested (unsupported)";
    case MpaStatus::ProtocolError: return "MPA protocol error";
    case MpaStatus::Timeout: return "MPA exchange timed out";
    case MpaStatus::Closed: return "connection closed during MPA exchange";
    case MpaStatus::IoError: return "I/O error during MPA exchange";
  }
  return "?";
}

std::chrono::milliseconds mpa_timeout() {
  return std::chrono::milliseconds(config().mpa_timeout_ms);
}

MpaPolicy MpaPolicy::from_config() {
  const Config &cfg = config();
  MpaPolicy p;
  p.rev = uint8_t(cfg.mpa_rev == 1 ? 1 : 2);
  p.crc_request = cfg.mpa_crc;
  p.crc_required = cfg.mpa_crc_required;
  p.markers = cfg.mpa_markers;
  return p;
}

std::shared_ptr<MpaSession> MpaSession::create(tcp::socket sock,
                                               std::chrono::milliseconds timeout,
                                               MpaPolicy policy) {
  return std::shared_ptr<MpaSession>(new MpaSession(std::move(sock), timeout, policy));
}

MpaSession::MpaSession(tcp::socket sock, std::chrono::milliseconds timeout, MpaPolicy policy)
    : sock_(std::move(sock)), timer_(sock_.get_executor()), timeout_(timeout), policy_(policy) {
  boost::system::error_code ec;
  sock_.set_option(tcp::no_delay(true), ec);
}

MpaSession::~MpaSession() = default;

void MpaSession::arm_timer() {
  timer_.expires_after(timeout_);
  timer_.async_wait([self = shared_from_this()](const boost::system::error_code &ec) {
    if (ec || self->finished_ || self->cancelled_) return;
    self->timed_out_ = true;
    boost::system::error_code ignored;
    self->sock_.close(ignored);  // pending reads/writes complete with operation_aborted
  });
}

static MpaOutcome outcome_for(const boost::system::error_code &ec, bool timed_out) {
  if (timed_out) return {MpaStatus::Timeout, ETIMEDOUT};
  if (ec == asio::error::eof || ec == asio::error::connection_reset ||
      ec == asio::error::broken_pipe || ec == asio::error::connection_aborted)
    return {MpaStatus::Closed, ECONNRESET};
  int e = ec.value() > 0 ? ec.value() : EIO;
  return {MpaStatus::IoError, e};
}

void MpaSession::finish(MpaOutcome o) {
  if (finished_ || cancelled_) return;
  finished_ = true;
  boost::system::error_code ignored;
  timer_.cancel();
  if (o.status != MpaStatus::Ok) sock_.close(ignored);
  Done d = std::move(done_);
  done_ = nullptr;
  if (d) d(o);
}

void MpaSession::fail(MpaStatus st, int err) { finish({st, err}); }

void MpaSession::cancel() {
  if (cancelled_) return;
  cancelled_ = true;
  done_ = nullptr;
  boost::system::error_code ignored;
  timer_.cancel();
  sock_.close(ignored);
}

// Reads exactly one frame: the 20-octet header, then PD_Length octets. Never more.
void MpaSession::read_frame(mpa::Kind kind, std::function<void()> then) {
  auto self = shared_from_this();
  asio::async_read(
      sock_, asio::buffer(hdr_buf_),
      [self, kind, then = std::move(then)](const boost::system::error_code &ec, size_t) mutable {
        if (self->cancelled_ || self->finished_) return;
        if (ec) return self->finish(outcome_for(ec, self->timed_out_));
        auto pe = mpa::parse_header(self->hdr_buf_, kind, &self->hdr_);
        if (pe != mpa::ParseError::None) {
          ECA_LOG(Warn, "MPA %s: %s; closing connection",
                  kind == mpa::Kind::Request ? "request" : "reply", mpa::parse_error_str(pe));
          return self->fail(MpaStatus::ProtocolError, EPROTO);
        }
        self->pd_buf_.assign(self->hdr_.pd_len, 0);
        auto body = [self, kind, then = std::move(then)]() mutable {
          auto pe2 = mpa::parse_body(self->hdr_, self->pd_buf_, &self->peer_);
          if (pe2 != mpa::ParseError::None) {
            ECA_LOG(Warn, "MPA %s: %s; closing connection",
                    kind == mpa::Kind::Request ? "request" : "reply", mpa::parse_error_str(pe2));
            // A request without IRD/ORD gets a reject so the peer learns why.
            if (kind == mpa::Kind::Request)
              return self->send_reject_and_close(0, 0, {}, true, MpaStatus::ProtocolError,
                                                 EPROTO);
            return self->fail(MpaStatus::ProtocolError, EPROTO);
          }
          then();
        };
        if (self->hdr_.pd_len == 0) return body();
        asio::async_read(self->sock_, asio::buffer(self->pd_buf_),
                         [self, body = std::move(body)](const boost::system::error_code &ec2,
                                                        size_t) mutable {
                           if (self->cancelled_ || self->finished_) return;
                           if (ec2) return self->finish(outcome_for(ec2, self->timed_out_));
                           body();
                         });
      });
}

// ---------------------------------------------------------------------------------------------
// Initiator

void MpaSession::start_initiator(const MpaParams &ours, Done done) {
  initiator_ = true;
  done_ = std::move(done);
  mpa::Frame req;
  req.kind = mpa::Kind::Request;
  req.rev = policy_.rev == 1 ? 1 : 2;
  req.crc = policy_.crc_request || policy_.crc_required;
  req.markers = policy_.markers;
  req.ird = std::min<uint16_t>(ours.ird, mpa::kIrdOrdMask);
  req.ord = std::min<uint16_t>(ours.ord, mpa::kIrdOrdMask);
  req.pdata = ours.pdata;
  sent_markers_ = req.markers;
  out_ = mpa::build(req);
  if (out_.empty()) return fail(MpaStatus::ProtocolError, EINVAL);
  rev_ = req.rev;
  crc_ = req.crc;
  ird_ = req.ird;
  ord_ = req.ord;
  arm_timer();
  auto self = shared_from_this();
  asio::async_write(sock_, asio::buffer(out_), [self](const boost::system::error_code &ec, size_t) {
    if (self->cancelled_ || self->finished_) return;
    if (ec) return self->finish(outcome_for(ec, self->timed_out_));
    self->read_frame(mpa::Kind::Reply, [self] {
      const mpa::Frame &rep = self->peer_;
      if (rep.reject) {
        ECA_LOG(Info, "MPA: peer rejected the connection (%zu bytes private data)",
                rep.pdata.size());
        return self->fail(MpaStatus::Rejected, ECONNREFUSED);
      }
      if (rep.markers || self->sent_markers_) {
        ECA_LOG(Warn, "MPA: reply %s markers; markers are not supported, closing",
                rep.markers ? "requests" : "accepts");
        return self->fail(MpaStatus::MarkersUnsupported, EPROTO);
      }
      if (rep.rev > self->rev_) {
        ECA_LOG(Warn, "MPA: reply revision %u above requested %u; closing", rep.rev, self->rev_);
        return self->fail(MpaStatus::ProtocolError, EPROTO);
      }
      // The Reply decides. A responder must honour a Request with C=1 (RFC 5044 7.1); one
      // that answers C=0 anyway, or a Reply without CRC when we insist on it, ends here
      // rather than leaving the two ends framing differently.
      if (!rep.crc && (self->crc_ || self->policy_.crc_required)) {
        ECA_LOG(Warn, "MPA: reply declines the CRC we %s; closing",
                self->crc_ ? "requested" : "require");
        return self->fail(MpaStatus::ProtocolError, ECONNREFUSED);
      }
      self->crc_ = rep.crc;
      if (rep.rev == 2 && self->rev_ == 2) {
        self->ord_ = std::min<uint16_t>(self->ord_, rep.ird);
      }
      self->rev_ = rep.rev;
      self->rtr_send_ = Rtr::None;  // we never ask for peer-to-peer mode
      self->rtr_recv_ = Rtr::None;
      self->finish({MpaStatus::Ok, 0});
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Responder

void MpaSession::start_responder(Done on_request) {
  initiator_ = false;
  done_ = std::move(on_request);
  arm_timer();
  auto self = shared_from_this();
  read_frame(mpa::Kind::Request, [self] {
    const mpa::Frame &req = self->peer_;
    if (req.markers) {
      ECA_LOG(Warn, "MPA: request asks for markers (unsupported); rejecting");
      return self->send_reject_and_close(0, 0, {}, true, MpaStatus::MarkersUnsupported,
                                         EPROTO);
    }
    if (req.reject) {
      ECA_LOG(Warn, "MPA: request with R=1; closing");
      return self->fail(MpaStatus::ProtocolError, EPROTO);
    }
    self->rev_ = req.rev;
    self->crc_ = req.crc || self->policy_.crc_required;
    self->rtr_recv_ = Rtr::None;
    if (req.rev == 2 && req.p2p) {
      if (req.rtr_write)
        self->rtr_recv_ = Rtr::ZeroLengthWrite;
      else if (req.rtr_read)
        self->rtr_recv_ = Rtr::ZeroLengthRead;
      else if (req.rtr_send)
        self->rtr_recv_ = Rtr::ZeroLengthSend;
      else {
        ECA_LOG(Warn, "MPA: peer-to-peer request offers no RTR type; rejecting");
        return self->send_reject_and_close(0, 0, {}, true, MpaStatus::ProtocolError, EPROTO);
      }
    }
    // The application decides now; its time is not bounded by the MPA timer.
    self->timer_.cancel();
    Done d = std::move(self->done_);
    self->done_ = nullptr;
    if (d) d({MpaStatus::Ok, 0});
  });
}

void MpaSession::accept(const MpaParams &ours, Done done) {
  if (cancelled_ || finished_) {
    // The peer went away (or we timed out) before the application answered.
    if (done) done({MpaStatus::Closed, ECONNRESET});
    return;
  }
  done_ = std::move(done);
  const mpa::Frame &req = peer_;
  mpa::Frame rep;
  rep.kind = mpa::Kind::Reply;
  rep.rev = req.rev;
  rep.crc = crc_;
  ird_ = std::min<uint16_t>(ours.ird, mpa::kIrdOrdMask);
  ord_ = std::min<uint16_t>(ours.ord, mpa::kIrdOrdMask);
  if (req.rev == 2) ord_ = std::min<uint16_t>(ord_, req.ird);
  rep.ird = ird_;
  rep.ord = ord_;
  if (req.rev == 2 && req.p2p) {
    rep.p2p = true;
    rep.rtr_write = rtr_recv_ == Rtr::ZeroLengthWrite;
    rep.rtr_read = rtr_recv_ == Rtr::ZeroLengthRead;
    rep.rtr_send = rtr_recv_ == Rtr::ZeroLengthSend;
  }
  rep.pdata = ours.pdata;
  out_ = mpa::build(rep);
  if (out_.empty()) return fail(MpaStatus::ProtocolError, EINVAL);
  arm_timer();
  auto self = shared_from_this();
  asio::async_write(sock_, asio::buffer(out_), [self](const boost::system::error_code &ec, size_t) {
    if (self->cancelled_ || self->finished_) return;
    if (ec) return self->finish(outcome_for(ec, self->timed_out_));
    self->finish({MpaStatus::Ok, 0});
  });
}

void MpaSession::send_reject_and_close(uint16_t ird, uint16_t ord, std::span<const uint8_t> pdata,
                                       bool report, MpaStatus st, int err) {
  mpa::Frame rep;
  rep.kind = mpa::Kind::Reply;
  rep.rev = (hdr_.rev == 1 || hdr_.rev == 2) ? hdr_.rev : 1;
  rep.reject = true;
  rep.crc = false;
  rep.ird = ird;
  rep.ord = ord;
  rep.pdata.assign(pdata.begin(), pdata.end());
  out_ = mpa::build(rep);
  if (report) {
    // The caller learns the outcome now; the reject is written in the background.
    Done d = std::move(done_);
    done_ = nullptr;
    finished_ = true;
    if (d) d({st, err});
  }
  finished_ = true;
  if (out_.empty() || cancelled_) {
    boost::system::error_code ignored;
    sock_.close(ignored);
    return;
  }
  // Bound the write; a peer that does not read cannot keep us.
  timer_.expires_after(timeout_);
  auto self = shared_from_this();
  timer_.async_wait([self](const boost::system::error_code &ec) {
    if (ec) return;
    boost::system::error_code ignored;
    self->sock_.close(ignored);
  });
  asio::async_write(sock_, asio::buffer(out_), [self](const boost::system::error_code &, size_t) {
    boost::system::error_code ignored;
    self->timer_.cancel();
    self->sock_.shutdown(tcp::socket::shutdown_send, ignored);
    self->sock_.close(ignored);
  });
}

void MpaSession::reject(std::span<const uint8_t> pdata) {
  if (cancelled_ || finished_) {
    boost::system::error_code ignored;
    sock_.close(ignored);
    return;
  }
  done_ = nullptr;
  send_reject_and_close(0, 0, pdata, false, MpaStatus::Rejected, ECONNREFUSED);
}

LlpConnection MpaSession::take_llp() {
  // The socket leaves the io_context (nothing of ours waits on it any more) as a bare fd.
  boost::system::error_code ec;
  LlpConnection c{OwnedFd(sock_.release(ec))};
  if (ec) ECA_LOG(Error, "mpa: handing the stream on failed: %s", ec.message().c_str());
  c.crc = crc_;
  c.mpa_rev = rev_;
  c.initiator = initiator_;
  c.ird = ird_;
  c.ord = ord_;
  c.rtr_send = rtr_send_;
  c.rtr_recv = rtr_recv_;
  return c;
}

}  // namespace eca::connect

// libFuzzer target: the MPA connection-setup exchange (connect/mpa_cm.cpp over
// connect/wire/mpa.hpp) fed by a hostile peer.
//
// Input: byte 0 chooses the role and the application's answer, the rest is what the peer sends
// on the stream before closing its side:
//   bit 0   0: we are the responder (the bytes are the peer's request)
//           1: we are the initiator (the bytes are the peer's reply to our request)
//   bit 1   responder: the application rejects instead of accepting
//   bits 2+ responder: private data length of our answer (x 8 octets)
// The session runs on a private io_context over one end of a socketpair (no network, no
// ports); the harness plays the peer on the other end.
//
// Checked beyond "no crash, no sanitizer report":
//  - the session reads exactly one frame: after Ok, every byte the peer sent after its frame
//    is still in the stream for the data path, in order;
//  - the negotiated values respect the RFCs: revision not above the one requested, ORD not
//    above the peer's IRD, private data within 512 octets;
//  - the wire parser agrees with itself: parse(build(parse(x))) == parse(x).
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include "connect/mpa_cm.hpp"
#include "connect/wire/mpa.hpp"
#include "provider/core/config.hpp"
#include "tests/fuzz/fuzz_util.hpp"

namespace mpa = eca::wire::mpa;
using eca::connect::MpaOutcome;
using eca::connect::MpaParams;
using eca::connect::MpaSession;
using eca::connect::MpaStatus;


namespace {

// Everything the peer end can read without blocking (what the session wrote).
std::vector<uint8_t> drain(int fd) {
  std::vector<uint8_t> out;
  uint8_t buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  return out;
}

bool same(const mpa::Frame &a, const mpa::Frame &b) {
  return a.kind == b.kind && a.markers == b.markers && a.crc == b.crc && a.reject == b.reject &&
         a.rev == b.rev && (a.rev == 1 || (a.ird == b.ird && a.ord == b.ord && a.p2p == b.p2p &&
                                           a.rtr_send == b.rtr_send && a.rtr_write == b.rtr_write &&
                                           a.rtr_read == b.rtr_read)) &&
         a.pdata == b.pdata;
}

// The pure wire layer: parse, rebuild, parse again.
void roundtrip(const uint8_t *data, size_t size) {
  for (mpa::Kind k : {mpa::Kind::Request, mpa::Kind::Reply}) {
    mpa::Frame f;
    if (mpa::parse({data, size}, k, &f) != mpa::ParseError::None) continue;
    FUZZ_CHECK(f.pdata.size() <= mpa::kMaxPrivateData);
    // A rev 2 reject may lack the IRD/ORD words; build() always writes them.
    if (f.rev == 2 && f.reject && size < mpa::kHeaderLen + mpa::kIrdOrdLen) continue;
    std::vector<uint8_t> again = mpa::build(f);
    FUZZ_CHECK(!again.empty());
    mpa::Frame g;
    FUZZ_CHECK(mpa::parse(again, k, &g) == mpa::ParseError::None);
    FUZZ_CHECK(same(f, g));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  setenv("ECA_LOG", "error", 0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  roundtrip(data, size);
  if (size < 1) return 0;
  const uint8_t ctl = data[0];
  const uint8_t *wire = data + 1;
  const size_t wire_len = size - 1;
  const bool initiator = ctl & 1;

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  // The peer's bytes are in the stream before the session starts, then its side closes:
  // every read the session makes completes (data or end of stream), so the run ends.
  size_t off = 0;
  while (off < wire_len) {
    ssize_t n = ::send(sv[1], wire + off, wire_len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) break;
    off += size_t(n);
  }
  FUZZ_CHECK(off == wire_len);  // inputs are far smaller than a socket buffer
  ::shutdown(sv[1], SHUT_WR);

  boost::asio::io_context io;
  boost::asio::ip::tcp::socket sock(io);
  boost::system::error_code ec;
  sock.assign(boost::asio::ip::tcp::v4(), sv[0], ec);
  FUZZ_CHECK(!ec);
  auto s = MpaSession::create(std::move(sock), std::chrono::milliseconds(2000));

  std::optional<MpaOutcome> outcome;
  MpaParams ours;
  ours.ird = 16;
  ours.ord = 16;
  if (initiator) {
    ours.pdata.assign(7, 0xab);
    s->start_initiator(ours, [&](MpaOutcome o) { outcome = o; });
  } else {
    s->start_responder([&](MpaOutcome o) {
      if (o.status != MpaStatus::Ok) {
        outcome = o;
        return;
      }
      FUZZ_CHECK(!s->peer().markers);
      MpaParams ans;
      ans.ird = 8;
      ans.ord = 100;
      ans.pdata.assign(std::min<size_t>((ctl >> 2) * 8u, mpa::kMaxUserPrivateData), 0x5a);
      if (ctl & 2) {
        s->reject(ans.pdata);
        outcome = MpaOutcome{MpaStatus::Rejected, ECONNREFUSED};
      } else {
        s->accept(ans, [&](MpaOutcome o2) { outcome = o2; });
      }
    });
  }
  io.run();
  FUZZ_CHECK(outcome.has_value());  // every path reports exactly once, and the run ends

  const mpa::Frame &peer = s->peer();
  if (outcome->status == MpaStatus::Ok) {
    FUZZ_CHECK(peer.pdata.size() <= mpa::kMaxPrivateData);
    auto llp = s->take_llp();
    FUZZ_CHECK(llp.mpa_rev == 1 || llp.mpa_rev == 2);
    if (initiator) {
      FUZZ_CHECK(!peer.reject && !peer.markers);
      FUZZ_CHECK(llp.mpa_rev <= (eca::config().mpa_rev == 1 ? 1 : 2));
      if (llp.mpa_rev == 2) FUZZ_CHECK(llp.ord <= peer.ird && llp.ord <= ours.ord);
    } else {
      FUZZ_CHECK(!peer.reject);
      if (llp.mpa_rev == 2) FUZZ_CHECK(llp.ord <= peer.ird);
      // Our reply went out and parses as an accepting reply of the peer's revision.
      std::vector<uint8_t> sent = drain(sv[1]);
      mpa::Frame rep;
      FUZZ_CHECK(mpa::parse(sent, mpa::Kind::Reply, &rep) == mpa::ParseError::None);
      FUZZ_CHECK(!rep.reject && rep.rev == peer.rev);
    }
    // Exactly one frame was consumed: the rest of the peer's bytes wait for the data path.
    const size_t frame_len = mpa::kHeaderLen + (peer.rev == 2 ? mpa::kIrdOrdLen : 0) +
                             peer.pdata.size();
    FUZZ_CHECK(frame_len <= wire_len);
    std::vector<uint8_t> rest;
    uint8_t buf[4096];
    int fd = llp.fd.get();
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n <= 0) break;
      rest.insert(rest.end(), buf, buf + n);
    }
    FUZZ_CHECK(rest.size() == wire_len - frame_len);
    FUZZ_CHECK(rest.empty() || std::memcmp(rest.data(), wire + frame_len, rest.size()) == 0);
  }
  s->cancel();
  ::close(sv[1]);
  return 0;
}

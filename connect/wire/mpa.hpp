// MPA connection-setup frames (RFC 5044 §7.1, RFC 6581 §5): the request/reply that precede
// FPDU mode on an iWARP TCP stream. Wire format only: building and parsing, no I/O.
//
//   0                   1                   2                   3
//   +---------------------------------------------------------------+
//   |  Key: "MPA ID Req Frame" / "MPA ID Rep Frame" (16 octets)     |
//   +-+-+-+-+-------+---------------+-------------------------------+
//   |M|C|R|E| Res   |     Rev       |          PD_Length            |
//   +-+-+-+-+-------+---------------+-------------------------------+
//   |  Private data (PD_Length octets, at most 512)                 |
//
// Rev 2 (RFC 6581): private data starts with the IRD/ORD word pair, counted in PD_Length:
//   IRD half: bit15 peer-to-peer, bit14 zero-length SEND RTR, low 14 bits IRD
//   ORD half: bit15 zero-length WRITE RTR, bit14 zero-length READ RTR, low 14 bits ORD
// E (0x10) is the "enhanced connection setup" bit Linux siw and cxgb4 put on Rev 2 frames;
// we set it whenever we send Rev 2 (they require it) and do not require it on receipt (a
// Rev 2 frame always carries the IRD/ORD words, as RFC 6581 says).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace eca::wire::mpa {

inline constexpr char kReqKey[16] = {'M', 'P', 'A', ' ', 'I', 'D', ' ', 'R',
                                     'e', 'q', ' ', 'F', 'r', 'a', 'm', 'e'};
inline constexpr char kRepKey[16] = {'M', 'P', 'A', ' ', 'I', 'D', ' ', 'R',
                                     'e', 'p', ' ', 'F', 'r', 'a', 'm', 'e'};

inline constexpr size_t kHeaderLen = 20;
inline constexpr size_t kMaxPrivateData = 512;  // PD_Length limit (RFC 5044)
inline constexpr size_t kIrdOrdLen = 4;         // Rev 2 IRD/ORD word pair
// Largest application private data we carry: the Rev 2 word pair shares the 512 octets.
inline constexpr size_t kMaxUserPrivateData = kMaxPrivateData - kIrdOrdLen;

inline constexpr uint8_t kFlagMarkers = 0x80;
inline constexpr uint8_t kFlagCrc = 0x40;
inline constexpr uint8_t kFlagReject = 0x20;
inline constexpr uint8_t kFlagEnhanced = 0x10;

inline constexpr uint16_t kIrdOrdMask = 0x3fff;
// IRD half
inline constexpr uint16_t kPeerToPeer = 0x8000;
inline constexpr uint16_t kRtrZeroSend = 0x4000;
// ORD half
inline constexpr uint16_t kRtrZeroWrite = 0x8000;
inline constexpr uint16_t kRtrZeroRead = 0x4000;

enum class Kind : uint8_t { Request, Reply };

// Everything a frame says, in host terms.
struct Frame {
  Kind kind = Kind::Request;
  bool markers = false;
  bool crc = false;
  bool reject = false;
  uint8_t rev = 2;
  // Rev 2 only (ignored for Rev 1): the IRD/ORD word pair.
  uint16_t ird = 0;  // 14 bits
  uint16_t ord = 0;  // 14 bits
  bool p2p = false;
  bool rtr_send = false, rtr_write = false, rtr_read = false;
  // Application private data (after the IRD/ORD words for Rev 2).
  std::vector<uint8_t> pdata;
};

enum class ParseError : uint8_t {
  None,
  BadKey,        // not the key expected for this frame kind
  BadRev,        // revision other than 1 or 2
  TooLong,       // PD_Length > 512
  MissingIrdOrd  // Rev 2 accept frame shorter than the IRD/ORD words
};

inline const char *parse_error_str(ParseError e) {
  switch (e) {
    case ParseError::None: return "ok";
    case ParseError::BadKey: return "bad MPA key";
    case ParseError::BadRev: return "unsupported MPA revision";
    case ParseError::TooLong: return "MPA private data length > 512";
    case ParseError::MissingIrdOrd: return "MPA rev 2 frame without IRD/ORD";
  }
  return "?";
}

inline void put_be16(uint8_t *p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline uint16_t get_be16(const uint8_t *p) { return uint16_t((p[0] << 8) | p[1]); }

// The header alone. Returns the PD_Length to read next (0..512) via *pd_len.
struct Header {
  Kind kind = Kind::Request;
  uint8_t flags = 0;
  uint8_t rev = 0;
  uint16_t pd_len = 0;
};

// Parses the fixed 20-octet header; `expect` is the frame kind we are waiting for.
inline ParseError parse_header(std::span<const uint8_t> b, Kind expect, Header *h) {
  if (b.size() < kHeaderLen) return ParseError::BadKey;
  const char *key = expect == Kind::Request ? kReqKey : kRepKey;
  if (std::memcmp(b.data(), key, 16) != 0) return ParseError::BadKey;
  h->kind = expect;
  h->flags = b[16];
  h->rev = b[17];
  h->pd_len = get_be16(&b[18]);
  if (h->rev != 1 && h->rev != 2) return ParseError::BadRev;
  if (h->pd_len > kMaxPrivateData) return ParseError::TooLong;
  return ParseError::None;
}

// Interprets header + its PD_Length octets of private data.
inline ParseError parse_body(const Header &h, std::span<const uint8_t> pd, Frame *f) {
  f->kind = h.kind;
  f->markers = h.flags & kFlagMarkers;
  f->crc = h.flags & kFlagCrc;
  f->reject = h.flags & kFlagReject;
  f->rev = h.rev;
  f->ird = f->ord = 0;
  f->p2p = f->rtr_send = f->rtr_write = f->rtr_read = false;
  size_t off = 0;
  if (h.rev == 2) {
    if (pd.size() < kIrdOrdLen) {
      // A reject need not carry the words (some peers send a bare reject).
      if (!f->reject) return ParseError::MissingIrdOrd;
    } else {
      uint16_t ird = get_be16(&pd[0]), ord = get_be16(&pd[2]);
      f->ird = ird & kIrdOrdMask;
      f->ord = ord & kIrdOrdMask;
      f->p2p = ird & kPeerToPeer;
      f->rtr_send = ird & kRtrZeroSend;
      f->rtr_write = ord & kRtrZeroWrite;
      f->rtr_read = ord & kRtrZeroRead;
      off = kIrdOrdLen;
    }
  }
  f->pdata.assign(pd.begin() + off, pd.end());
  return ParseError::None;
}

// Whole frame in one buffer (tests, tools). Requires the exact length.
inline ParseError parse(std::span<const uint8_t> b, Kind expect, Frame *f) {
  Header h;
  if (auto e = parse_header(b, expect, &h); e != ParseError::None) return e;
  if (b.size() != kHeaderLen + h.pd_len) return ParseError::TooLong;
  return parse_body(h, b.subspan(kHeaderLen, h.pd_len), f);
}

// Serializes a frame. Returns an empty vector if the private data does not fit.
inline std::vector<uint8_t> build(const Frame &f) {
  size_t words = f.rev == 2 ? kIrdOrdLen : 0;
  size_t pd_len = words + f.pdata.size();
  if (pd_len > kMaxPrivateData) return {};
  std::vector<uint8_t> out(kHeaderLen + pd_len);
  std::memcpy(out.data(), f.kind == Kind::Request ? kReqKey : kRepKey, 16);
  uint8_t flags = 0;
  if (f.markers) flags |= kFlagMarkers;
  if (f.crc) flags |= kFlagCrc;
  if (f.reject) flags |= kFlagReject;
  if (f.rev == 2) flags |= kFlagEnhanced;
  out[16] = flags;
  out[17] = f.rev;
  put_be16(&out[18], uint16_t(pd_len));
  if (words) {
    uint16_t ird = f.ird & kIrdOrdMask, ord = f.ord & kIrdOrdMask;
    if (f.p2p) ird |= kPeerToPeer;
    if (f.rtr_send) ird |= kRtrZeroSend;
    if (f.rtr_write) ord |= kRtrZeroWrite;
    if (f.rtr_read) ord |= kRtrZeroRead;
    put_be16(&out[20], ird);
    put_be16(&out[22], ord);
  }
  if (!f.pdata.empty()) std::memcpy(out.data() + kHeaderLen + words, f.pdata.data(), f.pdata.size());
  return out;
}

}  // namespace eca::wire::mpa

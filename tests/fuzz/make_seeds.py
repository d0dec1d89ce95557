#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/seed-*).

Seeds are small valid (and a few almost valid) inputs from which libFuzzer mutates; found
inputs are added to the same directories by hand once the bug they found is fixed. Run from
anywhere: python3 tests/fuzz/make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
REQ = b"MPA ID Req Frame"
REP = b"MPA ID Rep Frame"


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# ---- MPA: control byte, then the peer's bytes (see mpa_fuzz.cpp)
def mpa_frame(key, flags, rev, pdata, ird=None, ord_=None):
    body = b""
    if rev == 2 and ird is not None:
        body = struct.pack(">HH", ird, ord_)
    body += pdata
    return key + bytes([flags, rev]) + struct.pack(">H", len(body)) + body


RESP, INIT, REJECT = 0, 1, 2
fpdu_tail = b"\x00\x10" + bytes(18)  # the start of the data path after the frame
write("mpa", "req-rev2-crc", bytes([RESP]) + mpa_frame(REQ, 0x50, 2, b"hello", 16, 16) + fpdu_tail)
write("mpa", "req-rev2-reject", bytes([RESP | REJECT | (4 << 2)]) + mpa_frame(REQ, 0x10, 2, b"", 4, 4))
write("mpa", "req-rev1", bytes([RESP | (2 << 2)]) + mpa_frame(REQ, 0x40, 1, b"private") + fpdu_tail)
write("mpa", "req-p2p-rtr-write", bytes([RESP]) + mpa_frame(REQ, 0x10, 2, b"", 0x8000 | 8, 0x8000 | 8))
write("mpa", "req-p2p-no-rtr", bytes([RESP]) + mpa_frame(REQ, 0x10, 2, b"", 0x8000 | 8, 8))
write("mpa", "req-markers", bytes([RESP]) + mpa_frame(REQ, 0x80, 2, b"", 1, 1))
write("mpa", "req-short-pd", bytes([RESP]) + REQ + bytes([0x10, 2]) + struct.pack(">H", 2) + b"ab")
write("mpa", "req-truncated", bytes([RESP]) + REQ[:10])
write("mpa", "rep-rev2", bytes([INIT]) + mpa_frame(REP, 0x50, 2, b"ok", 4, 4) + fpdu_tail)
write("mpa", "rep-rev1", bytes([INIT]) + mpa_frame(REP, 0x40, 1, b""))
write("mpa", "rep-reject", bytes([INIT]) + mpa_frame(REP, 0x20, 2, b"go away", 0, 0))
write("mpa", "rep-bare-reject", bytes([INIT]) + mpa_frame(REP, 0x20, 2, b""))
write("mpa", "rep-too-long", bytes([INIT]) + REP + bytes([0, 2]) + struct.pack(">H", 600) + bytes(600))

# ---- FPDU receive path: control byte, then the stream (see fpdu_rx_fuzz.cpp).
# KEY0..KEY3 are replaced by the harness's rkeys; regions at 0x10000 (local write), 0x20000
# (remote write+read, 8 KiB), 0x30000 (remote read, 4 KiB), 0x40000 (no remote access).
NOCRC_REV2, EXTRA4 = 0, 2 << 2


def fpdu(ctrl_op, tagged, last, rest, payload):
    ctrl0 = (0x80 if tagged else 0) | (0x40 if last else 0) | 0x01
    ctrl1 = 0x40 | ctrl_op
    ulpdu = bytes([ctrl0, ctrl1]) + rest + payload
    pad = (4 - ((2 + len(ulpdu)) & 3)) & 3
    return struct.pack(">H", len(ulpdu)) + ulpdu + bytes(pad)


def untagged(op, qn, msn, mo, payload, last=True, rsvd=b"\0\0\0\0", body=b""):
    return fpdu(op, False, last, rsvd + struct.pack(">III", qn, msn, mo) + body, payload)


def tagged(op, stag, to, payload, last=True):
    return fpdu(op, True, last, stag + struct.pack(">Q", to), payload)


SEND, SEND_INV, SEND_SE, WRITE, READ_REQ, READ_RESP, TERM, IMM = 3, 4, 5, 0, 1, 2, 7, 8
c = bytes([NOCRC_REV2 | EXTRA4])
write("fpdu_rx", "send", c + untagged(SEND, 0, 1, 0, b"x" * 50))
write("fpdu_rx", "send-two-segments",
      c + untagged(SEND, 0, 1, 0, b"a" * 64, last=False) + untagged(SEND, 0, 1, 64, b"b" * 64))
write("fpdu_rx", "send-se-then-send",
      c + untagged(SEND_SE, 0, 1, 0, b"s" * 8) + untagged(SEND, 0, 2, 0, b"t" * 900))
write("fpdu_rx", "send-invalidate", c + untagged(SEND_INV, 0, 1, 0, b"i" * 16, rsvd=b"KEY1"))
write("fpdu_rx", "send-no-receive", bytes([NOCRC_REV2]) + b"".join(
    untagged(SEND, 0, m, 0, b"n") for m in range(1, 5)))
write("fpdu_rx", "write", c + tagged(WRITE, b"KEY1", 0x20000, b"w" * 100))
write("fpdu_rx", "write-out-of-bounds", c + tagged(WRITE, b"KEY1", 0x21ff0, b"w" * 100))
write("fpdu_rx", "write-readonly", c + tagged(WRITE, b"KEY2", 0x30000, b"w" * 10))
write("fpdu_rx", "write-then-send",
      c + tagged(WRITE, b"KEY1", 0x20100, b"p" * 300, last=False) +
      tagged(WRITE, b"KEY1", 0x2022c, b"q" * 20) + untagged(SEND, 0, 1, 0, b"done"))
write("fpdu_rx", "write-with-imm",
      c + tagged(WRITE, b"KEY1", 0x20000, b"w" * 8) + untagged(IMM, 0, 1, 0, b"", body=b"\x12\x34\x56\x78\0\0\0\0"))
write("fpdu_rx", "read-request", c + untagged(READ_REQ, 1, 1, 0, b"", body=b"\0\0\xab\xcd" +
      struct.pack(">QI", 0x9000, 256) + b"KEY1" + struct.pack(">Q", 0x20000)))
write("fpdu_rx", "read-request-readonly", c + untagged(READ_REQ, 1, 1, 0, b"", body=b"\0\0\xab\xcd" +
      struct.pack(">QI", 0x9000, 4096) + b"KEY2" + struct.pack(">Q", 0x30000)))
write("fpdu_rx", "read-response", c + tagged(READ_RESP, b"KEY0", 0x13000, b"r" * 1024))
write("fpdu_rx", "read-response-split",
      c + tagged(READ_RESP, b"KEY0", 0x13000, b"r" * 500, last=False) +
      tagged(READ_RESP, b"KEY0", 0x131f4, b"s" * 524))
write("fpdu_rx", "terminate", c + untagged(TERM, 2, 1, 0, b"", body=struct.pack(">I", 0x12020000)))
write("fpdu_rx", "bad-version", c + bytes([0, 18, 0x42, 0x03]) + bytes(16) + bytes(2))
write("fpdu_rx", "large-send", bytes([NOCRC_REV2 | (3 << 2)]) + untagged(SEND, 0, 1, 0, b"L" * 1100))
write("fpdu_rx", "crc-send", bytes([1 | EXTRA4]) + untagged(SEND, 0, 1, 0, b"c" * 20) + bytes(4))
write("fpdu_rx", "rev1-send", bytes([2 | EXTRA4]) + untagged(SEND, 0, 1, 0, b"1" * 20))
# RFC 7306 atomics: Atomic Request on queue 1 (shared with READ requests), Response on 3.
ATOMIC_REQ, ATOMIC_RESP = 10, 11


# These seeds carry the 4-byte CRC field (zero, CRC off) that RFC 5044 keeps in every FPDU:
# an atomic is acted on once its trailer is in (crc_field appends it).
def crc_field(f):
    return f + bytes(4)


def atomic_req(msn, aop, req_id, stag, to, data, mask=0, cmp=0, cmask=0):
    return crc_field(untagged(ATOMIC_REQ, 1, msn, 0, b"", body=struct.pack(">II", aop, req_id) +
                              stag + struct.pack(">QQQQQ", to, data, mask, cmp, cmask)))


ONES = (1 << 64) - 1
write("fpdu_rx", "atomic-fetch-add", c + atomic_req(1, 0, 1, b"KEY1", 0x20008, 5))
write("fpdu_rx", "atomic-cmp-swap-then-read",
      c + atomic_req(1, 2, 7, b"KEY1", 0x20010, 9, ONES, 0x2222222222222222, ONES) +
      crc_field(untagged(READ_REQ, 1, 2, 0, b"", body=b"\0\0\xab\xcd" +
                         struct.pack(">QI", 0x9000, 16) + b"KEY1" + struct.pack(">Q", 0x20008))))
write("fpdu_rx", "atomic-misaligned", c + atomic_req(1, 0, 1, b"KEY1", 0x2000c, 1))
write("fpdu_rx", "atomic-readonly", c + atomic_req(1, 0, 1, b"KEY2", 0x30000, 1))
write("fpdu_rx", "atomic-response-unexpected",
      c + crc_field(untagged(ATOMIC_RESP, 3, 1, 0, b"", body=struct.pack(">IQ", 1, 42))))

# ---- modeled adapter frames: raw Frame images (hwmodel/backend/shm_layout.hpp, 448 octets)
# type, flags, len, nsge, imm, status, reserved[8], model_ps, sge[8] {stag, len, addr},
# data[256]. Substitutions (see hw_frame_fuzz.cpp): sge addr 0xeca0eca0xxxxxxxx -> the peer's
# send buffer + low 16 bits, 0xeca0eca3xxxxxxxx -> memory no MR covers (the secret); stag 0xeca0
# -> the peer's send MR; imm 0xeca0eca1 / 0xeca0eca2 -> the receiver's remote-writable /
# local-only MR.
F_SEND, F_IMM, F_ACK, F_TERM, F_DISC, F_AREQ, F_ARESP = 1, 2, 3, 4, 5, 6, 7
SOLICITED, INVALIDATE = 1, 2


def hw_frame(ftype, flags=0, length=0, sges=(), imm=0, status=0, data=b""):
    sge_bytes = b""
    for stag, slen, addr in sges:
        sge_bytes += struct.pack("<IIQ", stag, slen, addr)
    sge_bytes += bytes(16 * (8 - len(sges)))
    head = struct.pack("<IIIIII", ftype, flags, length, len(sges), imm, status)
    head += bytes(32) + struct.pack("<Q", 0)
    frame = head + sge_bytes + data + bytes(256 - len(data))
    assert len(frame) == 448, len(frame)
    return frame


PEER = 0xECA0ECA0 << 32
SECRET = 0xECA0ECA3 << 32
write("hw_frame", "send-inline", hw_frame(F_SEND, length=40, data=b"i" * 40))
write("hw_frame", "send-solicited", hw_frame(F_SEND, SOLICITED, 8, data=b"s" * 8))
write("hw_frame", "send-region", hw_frame(F_SEND, length=1000, sges=[(0xECA0, 1000, PEER | 0x100)]))
write("hw_frame", "send-two-sges", hw_frame(F_SEND, length=3000, sges=[
    (0xECA0, 1000, PEER), (0xECA0, 2000, PEER | 0x4000)]))
write("hw_frame", "send-private-memory", hw_frame(F_SEND, length=64, sges=[(4096, 64, PEER | 0x10)]))
# The sender's MR, but an address outside it (memory of the sender's process no MR covers).
write("hw_frame", "send-unregistered-memory",
      hw_frame(F_SEND, length=1000, sges=[(0xECA0, 1000, SECRET | 0x10)]))
write("hw_frame", "send-no-stag", hw_frame(F_SEND, length=1000, sges=[(0, 1000, SECRET)]))
write("hw_frame", "send-too-long", hw_frame(F_SEND, length=60000, sges=[(0xECA0, 60000, PEER)]))
write("hw_frame", "send-invalidate", hw_frame(F_SEND, INVALIDATE, 4, imm=0xECA0ECA1, data=b"inv!"))
write("hw_frame", "immediate", hw_frame(F_IMM, imm=0x12345678))
write("hw_frame", "ack-unexpected", hw_frame(F_ACK))
write("hw_frame", "terminate", hw_frame(F_TERM, status=10))
write("hw_frame", "disconnect", hw_frame(F_DISC))
# AtomicBody: op, rkey, addr, operand, compare, orig (little-endian, as the adapter writes it)
write("hw_frame", "atomic-request", hw_frame(F_AREQ, length=40,
      data=struct.pack("<IIQQQQ", 0, 0xECA0ECA1, 0x1000, 1, 0, 0)))
write("hw_frame", "atomic-request-bad-op", hw_frame(F_AREQ, length=40,
      data=struct.pack("<IIQQQQ", 9, 0, 0, 0, 0, 0)))
write("hw_frame", "atomic-response-unexpected", hw_frame(F_ARESP, length=40,
      data=struct.pack("<IIQQQQ", 0, 0, 0, 0, 0, 7)))
write("hw_frame", "sends-then-disconnect",
      hw_frame(F_SEND, length=10, data=b"a" * 10) + hw_frame(F_SEND, length=20, data=b"b" * 20) +
      hw_frame(F_DISC))
write("hw_frame", "unknown-type", hw_frame(99))

#!/usr/bin/python3
"""Checks the iWARP traffic in a packet capture, independently and through tshark.

Independent check: every TCP connection to PORT is reassembled from the captured
segments (any gap fails), then parsed as MPA (RFC 5044/6581): the Request and Reply
frames, then every FPDU of both directions, verifying each FPDU's CRC32c, the DDP and
RDMAP versions, and that the stream ends on an FPDU boundary. RDMAP messages are
counted per opcode and direction, and --min OPCODE:DIR:N requires at least N complete
messages (DDP Last flag set) of OPCODE in direction DIR (i2r: initiator to responder,
r2i: responder to initiator). With --crc off the session must have negotiated no CRC
(C clear in both frames); every FPDU must still carry the 4-byte CRC field (RFC 5044
keeps it in every FPDU), sent as zero, and tshark must show that field.

tshark check: Wireshark's MPA dissector is a heuristic TCP dissector that needs the MPA
Request/Reply in the capture and assumes each TCP segment starts with an FPDU. A
software RNIC on the kernel's TCP (a "non-optimized" MPA sender, RFC 5044 section 8)
cannot align FPDUs to segments when several are queued, so tshark is held to what it
can dissect: it must decode the Request and Reply and an FPDU in every segment that
starts on an FPDU boundary (found by the independent parse), report "Good CRC32" for
every such segment, mark none of them malformed, and decode > 0 DDP/RDMAP frames.

With --atomics fetch_add|cmp_swap the RFC 7306 Atomic Requests and Responses are checked
byte by byte from the independent parse (Requests on untagged queue 1 with consecutive
MSNs, 70-byte ULPDUs, the AOpCode and masks of the verbs operation, an 8-byte aligned
Remote Tagged Offset; Responses on queue 3 with consecutive MSNs, 30-byte ULPDUs, and the
Request Identifiers of the requests in order), and tshark must decode atomic frames with
the same AOpCode and Request Identifiers.

Exit status 0 when everything holds; otherwise 1 with the reasons on stderr.
"""
import argparse
import collections
import re
import struct
import subprocess
import sys

OPCODES = {0: "write", 1: "read_req", 2: "read_resp", 3: "send", 4: "send_inv",
           5: "send_se", 6: "send_se_inv", 7: "terminate", 8: "imm", 9: "imm_se",
           10: "atomic_req", 11: "atomic_resp"}
OPNUM = {v: k for k, v in OPCODES.items()}
REQ_KEY = b"MPA ID Req Frame"
REP_KEY = b"MPA ID Rep Frame"


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    t = CRC_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def tshark(pcap, *args):
    # Upper-layer heuristics (RPC-over-RDMA, SMB Direct) would parse perftest's SEND
    # payloads as their protocols and flag them malformed: keep them out of the way.
    cmd = ["tshark", "-n", "-r", pcap, "-o", "tcp.try_heuristic_first:TRUE",
           "--disable-heuristic", "rpcrdma_iwarp", "--disable-heuristic", "smb_direct_iwarp",
           *args]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         timeout=300, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}): "
                         f"{res.stderr.decode(errors='replace')[-2000:]}")
    return res.stdout.decode(errors="replace")


class Direction:
    def __init__(self):
        self.segments = []  # (relative seq, payload, frame number)
        self.data = b""
        self.frame_at = {}  # stream offset where a segment starts -> (frame, length)

    def assemble(self, errors, name):
        """Builds the byte stream; duplicates (retransmissions) must agree; no gaps."""
        buf = bytearray()
        for seq, payload, frame in sorted(self.segments, key=lambda s: (s[0], s[2])):
            off = seq - 1  # relative sequence numbers start at 1 after the SYN
            if off < 0:
                errors.append(f"{name}: frame {frame} has relative seq {seq}")
                continue
            if off > len(buf):
                errors.append(f"{name}: capture gap of {off - len(buf)} bytes before frame "
                              f"{frame} (packets dropped?)")
                return
            overlap = buf[off:off + len(payload)]
            if overlap != payload[:len(overlap)]:
                errors.append(f"{name}: retransmitted bytes differ at frame {frame}")
            buf.extend(payload[len(overlap):])
            self.frame_at.setdefault(off, (frame, len(payload)))
        self.data = bytes(buf)


def parse_hello(data, key, name, errors):
    """Parses an MPA Request/Reply frame; returns (flags, rev, private data length)."""
    if len(data) < 20 or data[:16] != key:
        errors.append(f"{name}: does not start with {key.decode()!r}")
        return None
    flags, rev, pdlen = data[16], data[17], struct.unpack(">H", data[18:20])[0]
    if pdlen > 512:
        errors.append(f"{name}: private data length {pdlen} > 512")
    if len(data) < 20 + pdlen:
        errors.append(f"{name}: truncated MPA frame")
        return None
    return flags, rev, pdlen


def parse_atomic(fpdu):
    """The fields of an Atomic Request (opcode 10) or Response (11) FPDU (RFC 7306)."""
    ulpdu_len, ddp_ctl, rdmap_ctl, rsvd, qn, msn, mo = struct.unpack(">HBBIIII", fpdu[:20])
    a = {"ulpdu": ulpdu_len, "ddp": ddp_ctl, "opcode": rdmap_ctl & 0xF, "qn": qn,
         "msn": msn, "mo": mo}
    if a["opcode"] == 10 and len(fpdu) >= 72:
        (a["ctrl"], a["req_id"], a["stag"], a["to"], a["add_swap"], a["add_swap_mask"],
         a["compare"], a["compare_mask"]) = struct.unpack(">IIIQQQQQ", fpdu[20:72])
    elif a["opcode"] == 11 and len(fpdu) >= 32:
        a["req_id"], a["orig"] = struct.unpack(">IQ", fpdu[20:32])
    return a


def parse_fpdus(data, start, name, stats, errors, direction, crc=True, atomics=None):
    """Walks the FPDUs of one direction from offset start; returns [(offset, length)]."""
    starts = []
    off = start
    bad_crc = 0
    while off < len(data):
        if len(data) - off < 2:
            errors.append(f"{name}: {len(data) - off} trailing bytes after the last FPDU")
            break
        ulpdu_len = struct.unpack(">H", data[off:off + 2])[0]
        pad = (4 - (2 + ulpdu_len) % 4) % 4
        total = 2 + ulpdu_len + pad + 4
        if len(data) - off < total:
            errors.append(f"{name}: stream ends inside an FPDU at offset {off} "
                          f"({len(data) - off} of {total} bytes)")
            break
        if ulpdu_len < 2:
            errors.append(f"{name}: FPDU at offset {off} has ULPDU length {ulpdu_len}")
            break
        body = data[off:off + 2 + ulpdu_len + pad]
        # The CRC32c goes on the wire least significant byte first, as iSCSI's digest
        # (RFC 3385/7143) and as Linux siw and Wireshark's MPA dissector have it.
        sent_crc = struct.unpack("<I", data[off + total - 4:off + total])[0]
        want_crc = crc32c(body) if crc else 0
        if want_crc != sent_crc:
            bad_crc += 1
            if bad_crc <= 5:
                errors.append(f"{name}: FPDU at offset {off}: CRC field 0x{sent_crc:08x}, "
                              f"expected 0x{want_crc:08x}")
        ddp_ctl, rdmap_ctl = data[off + 2], data[off + 3]
        if ddp_ctl & 0x3 != 1:
            errors.append(f"{name}: FPDU at offset {off}: DDP version {ddp_ctl & 3}")
        if rdmap_ctl >> 6 != 1:
            errors.append(f"{name}: FPDU at offset {off}: RDMAP version {rdmap_ctl >> 6}")
        op = OPCODES.get(rdmap_ctl & 0xF, f"op{rdmap_ctl & 0xF}")
        tagged, last = bool(ddp_ctl & 0x80), bool(ddp_ctl & 0x40)
        hdr = 14 if tagged else 18
        if rdmap_ctl & 0xF in (10, 11):  # RFC 7306 atomics: the body is all header
            hdr = ulpdu_len
            if atomics is not None:
                atomics.append(parse_atomic(data[off:off + total]))
        stats["fpdus", direction, op] += 1
        stats["payload", direction, op] += max(0, ulpdu_len - hdr)
        if last:
            stats["messages", direction, op] += 1
        starts.append((off, total))
        off += total
    stats["bad_crc"] += bad_crc
    return starts


def check_atomics(op, atomics, name, errors):
    """RFC 7306 layout of one connection's atomics; returns the Request Identifiers."""
    want_aop = 0 if op == "fetch_add" else 2
    reqs = [a for a in atomics["i2r"] if a["opcode"] == 10]
    resps = [a for a in atomics["r2i"] if a["opcode"] == 11]
    stray = [a for d in atomics.values() for a in d if a not in reqs and a not in resps]
    if stray:
        errors.append(f"{name}: {len(stray)} atomic messages in the wrong direction")
    if not reqs:
        return []
    if len(reqs) != len(resps):
        errors.append(f"{name}: {len(reqs)} Atomic Requests, {len(resps)} Atomic Responses")
    def header(a, ulpdu, qn, msn):
        why = []
        if a["ulpdu"] != ulpdu or a["ddp"] != 0x41:
            why.append(f"ULPDU {a['ulpdu']} / DDP control 0x{a['ddp']:02x}, "
                       f"expected {ulpdu} / 0x41")
        if a["qn"] != qn or a["mo"] != 0 or a["msn"] != msn:
            why.append(f"QN {a['qn']} MSN {a['msn']} MO {a['mo']}, expected {qn} {msn} 0")
        return why

    for i, a in enumerate(reqs):
        why = header(a, 70, 1, i + 1)
        if a["ctrl"] != want_aop:
            why.append(f"AOpCode word 0x{a['ctrl']:08x}, expected {want_aop}")
        if a["to"] % 8:
            why.append(f"Remote Tagged Offset 0x{a['to']:x} not 8-byte aligned")
        ones = (1 << 64) - 1
        if op == "fetch_add" and (a["add_swap_mask"] or a["compare"] or a["compare_mask"]):
            why.append("FetchAdd with a mask or compare fields")
        if op == "cmp_swap" and (a["add_swap_mask"] != ones or a["compare_mask"] != ones):
            why.append("CompareSwap without all-ones masks")
        if why and len(errors) < 20:
            errors.append(f"{name}: Atomic Request {i + 1}: " + "; ".join(why))
    for i, a in enumerate(resps):
        why = header(a, 30, 3, i + 1)
        if i < len(reqs) and a["req_id"] != reqs[i]["req_id"]:
            why.append(f"answers request id {a['req_id']}, expected {reqs[i]['req_id']}")
        if why and len(errors) < 20:
            errors.append(f"{name}: Atomic Response {i + 1}: " + "; ".join(why))
    print(f"{name}: {len(reqs)} Atomic Requests (QN 1), {len(resps)} Atomic Responses (QN 3)")
    return [a["req_id"] for a in reqs]


def check_tshark_atomics(pcap, port, op, our_req_ids, errors):
    """tshark decodes atomic frames, with our AOpCode and Request Identifiers."""
    out = tshark(pcap, "-Y", f"tcp.port == {port} && iwarp_rdma.opcode >= 10", "-T", "fields",
                 "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,",
                 "-e", "iwarp_rdma.opcode", "-e", "iwarp_rdma.atomic.opcode",
                 "-e", "iwarp_rdma.atomic.request_identifier",
                 "-e", "iwarp_rdma.atomic.original_request_identifier")
    want_aop = "0" if op == "fetch_add" else "2"
    reqs = resps = 0
    ours = set(our_req_ids)
    for line in out.splitlines():
        if not line.strip():
            continue
        cols = (line.split("\t") + [""] * 4)[:4]
        for aop in filter(None, cols[1].split(",")):
            if aop != want_aop:
                errors.append(f"tshark decoded AOpCode {aop}, expected {want_aop}")
        for rid in filter(None, cols[2].split(",")):
            reqs += 1
            if int(rid) not in ours:
                errors.append(f"tshark decoded Request Identifier {rid}, not one we sent")
        # the second "original_request_identifier" occurrence is the data value (a
        # Wireshark 4.0 label slip): only the first of each pair is an identifier
        ids = list(filter(None, cols[3].split(",")))
        for rid in ids[0::2]:
            resps += 1
            if int(rid) not in ours:
                errors.append(f"tshark decoded Original Request Identifier {rid}, not ours")
    if not reqs or not resps:
        errors.append(f"tshark decoded {reqs} Atomic Requests and {resps} Atomic Responses")
    print(f"tshark: {reqs} Atomic Requests and {resps} Atomic Responses decoded")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pcap")
    ap.add_argument("port", type=int)
    ap.add_argument("--min", action="append", default=[],
                    help="OPCODE:DIR:N, e.g. write:i2r:100")
    ap.add_argument("--crc", choices=("on", "off"), default="on",
                    help="whether the session must have negotiated MPA CRC")
    ap.add_argument("--atomics", choices=("fetch_add", "cmp_swap"),
                    help="check the RFC 7306 atomics of a session doing this operation")
    args = ap.parse_args()
    errors = []
    port = args.port
    crc = args.crc == "on"

    # --- 1. independent parse of the reassembled streams
    out = tshark(args.pcap, "-Y", f"tcp.port == {port} && tcp.len > 0", "-T", "fields",
                 "-E", "separator=\t", "-e", "frame.number", "-e", "tcp.stream",
                 "-e", "tcp.srcport", "-e", "tcp.seq", "-e", "tcp.payload")
    streams = collections.defaultdict(lambda: {"i2r": Direction(), "r2i": Direction()})
    for line in out.splitlines():
        if not line.strip():
            continue
        frame, stream, sport, seq, payload = line.split("\t")
        d = "r2i" if int(sport) == port else "i2r"
        streams[int(stream)][d].segments.append(
            (int(seq), bytes.fromhex(payload.replace(":", "")), int(frame)))
    if not streams:
        errors.append(f"no TCP payload to or from port {port} in the capture")

    stats = collections.Counter()
    our_req_ids = []  # Request Identifiers of the Atomic Requests, all streams
    aligned = {}  # frame number -> "req" | "rep" | "fpdu"
    for sid, dirs in sorted(streams.items()):
        for d in ("i2r", "r2i"):
            dirs[d].assemble(errors, f"stream {sid} {d}")
        req = parse_hello(dirs["i2r"].data, REQ_KEY, f"stream {sid} request", errors)
        rep = parse_hello(dirs["r2i"].data, REP_KEY, f"stream {sid} reply", errors)
        if not req or not rep:
            continue
        if req[0] & 0x80 or rep[0] & 0x80:
            errors.append(f"stream {sid}: markers negotiated (M flag set)")
        if rep[0] & 0x20:
            errors.append(f"stream {sid}: connection rejected (R flag in reply)")
            continue
        if crc and not rep[0] & 0x40:
            errors.append(f"stream {sid}: CRC not negotiated (C flag clear in the Reply)")
        if not crc and (req[0] & 0x40 or rep[0] & 0x40):
            errors.append(f"stream {sid}: CRC negotiated (C flag set) in a CRC-off session")
        if req[1] not in (1, 2) or rep[1] not in (1, 2):
            errors.append(f"stream {sid}: MPA revisions {req[1]}/{rep[1]}")
        stats["connections"] += 1
        stats["rev", req[1]] += 1
        atomics = {"i2r": [], "r2i": []}
        for d, hello in (("i2r", req), ("r2i", rep)):
            dr = dirs[d]
            first = 20 + hello[2]
            if 0 in dr.frame_at:
                aligned[dr.frame_at[0][0]] = "req" if d == "i2r" else "rep"
            # The segments tshark can dissect: those starting with a whole FPDU.
            for s, length in parse_fpdus(dr.data, first, f"stream {sid} {d}", stats,
                                         errors, d, crc, atomics[d]):
                if s in dr.frame_at and dr.frame_at[s][1] >= length:
                    aligned[dr.frame_at[s][0]] = "fpdu"
        if args.atomics:
            our_req_ids += check_atomics(args.atomics, atomics, f"stream {sid}", errors)

    total_fpdus = sum(v for k, v in stats.items() if isinstance(k, tuple) and k[0] == "fpdus")
    if total_fpdus == 0:
        errors.append("no FPDU found in the capture")
    for spec in args.min:
        op, d, n = spec.split(":")
        got = stats["messages", d, op]
        if got < int(n):
            errors.append(f"{op} messages {d}: {got}, expected >= {n}")

    if args.atomics:
        check_tshark_atomics(args.pcap, port, args.atomics, our_req_ids, errors)

    # --- 2. what tshark's own dissectors make of it
    text = tshark(args.pcap, "-Y", f"tcp.port == {port}", "-O", "iwarp_mpa", "-V")
    verdict = {}  # frame -> "good" | "bad"
    frame = None
    for line in text.splitlines():
        m = re.match(r"^Frame (\d+):", line)
        if m:
            frame = int(m.group(1))
            continue
        if "CRC check:" in line and frame is not None:
            verdict[frame] = "good" if "(Good CRC32)" in line else "bad"
        elif not crc and frame is not None and re.match(r"^\s+CRC: 0x[0-9a-f]{8}$", line):
            # CRC not negotiated: Wireshark shows the field without checking it.
            verdict.setdefault(frame, "good" if line.strip() == "CRC: 0x00000000" else "bad")
    fields = tshark(args.pcap, "-Y", f"tcp.port == {port}", "-T", "fields", "-E",
                    "separator=\t", "-e", "frame.number", "-e", "iwarp_mpa.req",
                    "-e", "iwarp_mpa.rep", "-e", "iwarp_mpa.fpdu", "-e", "iwarp_rdma.opcode",
                    "-e", "_ws.malformed")
    decoded = {}
    ddp_frames = 0
    malformed = set()
    for line in fields.splitlines():
        if not line.strip():
            continue
        f, req_f, rep_f, fpdu_f, opcode, malf = (line.split("\t") + [""] * 6)[:6]
        f = int(f)
        if req_f:
            decoded[f] = "req"
        elif rep_f:
            decoded[f] = "rep"
        elif fpdu_f:
            decoded[f] = "fpdu"
        if opcode:
            ddp_frames += 1
        if malf:
            malformed.add(f)
    mpa_frames = len(decoded)
    if mpa_frames == 0:
        errors.append("tshark decoded no iwarp_mpa frame")
    if ddp_frames == 0:
        errors.append("tshark decoded no iwarp_ddp_rdmap frame")
    good = sum(1 for f, k in aligned.items() if k == "fpdu" and verdict.get(f) == "good")
    problems = 0
    for f, kind in sorted(aligned.items()):
        why = None
        if decoded.get(f) != kind:
            why = f"tshark decoded it as {decoded.get(f, 'nothing')}, expected {kind}"
        elif kind == "fpdu" and verdict.get(f) != "good":
            why = f"tshark CRC verdict {verdict.get(f, 'missing')}"
        elif f in malformed:
            why = "tshark marked it malformed"
        if why:
            problems += 1
            if problems <= 10:
                errors.append(f"frame {f} (starts with an MPA {kind}): {why}")
    if problems > 10:
        errors.append(f"... {problems} aligned frames with problems in all")
    if good == 0:
        errors.append("tshark verified no FPDU CRC as good")

    print(f"connections={stats['connections']} fpdus={total_fpdus} "
          f"bad_crc={stats['bad_crc']} "
          f"revisions={ {k[1]: v for k, v in stats.items() if isinstance(k, tuple) and k[0] == 'rev'} }")
    for (kind, d, op), v in sorted((k, v) for k, v in stats.items()
                                    if isinstance(k, tuple) and len(k) == 3):
        print(f"  {d} {op:12s} {kind:9s} {v}")
    print(f"tshark: mpa_frames={mpa_frames} ddp_rdmap_frames={ddp_frames} "
          f"fpdu_aligned_frames={sum(1 for k in aligned.values() if k == 'fpdu')} "
          f"good_crc_aligned={good} malformed_total={len(malformed)} "
          f"crc_verdicts_good={sum(1 for v in verdict.values() if v == 'good')} "
          f"crc_verdicts_bad_any={sum(1 for v in verdict.values() if v == 'bad')}")
    if errors:
        for e in errors:
            print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

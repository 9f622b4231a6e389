#!/usr/bin/env python3
"""Extract BGP messages from a tcpdump pcap into test-vector files.

Standard library only. Steps:
  1. parse the pcap (Ethernet link type, IPv4/IPv6, TCP);
  2. reassemble each TCP direction by sequence number (a SYN starts a new stream;
     retransmitted/overlapping bytes are taken once);
  3. split each byte stream into BGP messages by the 16-byte 0xff marker and the 2-byte
     length field;
  4. classify each message into a "kind" (open, keepalive, update-ipv4-comm, eor-ipv6,
     notification-cease-admin-shutdown, route-refresh-ipv4-borr, ...), keep the first
     message of each kind per sender, receiver and session;
  5. write <sender>-to-<receiver>-<session>-<kind>.hex with a comment header, and
     <same>.tshark.txt with tshark's verbose decode of that one message (tshark decodes a
     synthetic pcap holding both OPENs of the connection followed by the message, so
     that it sees the negotiated capabilities; only the last frame is printed).

The "what:" line is written by this script's own small decoder; the .tshark.txt file is
the independent decode.
"""

import argparse
import ipaddress
import os
import struct
import subprocess
import sys
import tempfile

MARKER = b"\xff" * 16

# --------------------------------------------------------------------------- pcap / TCP


def read_pcap(path):
    """Yield (ts, src, sport, dst, dport, seq, flags, payload) for every TCP segment."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise SystemExit(f"{path}: not a pcap file (magic {magic.hex()})")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        ts_s, ts_u, incl, _orig = struct.unpack(endian + "IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        seg = parse_frame(pkt, linktype)
        if seg is not None:
            yield (ts_s + ts_u / 1e6,) + seg


def parse_frame(pkt, linktype):
    if linktype == 1:  # Ethernet
        if len(pkt) < 14:
            return None
        etype = struct.unpack(">H", pkt[12:14])[0]
        l3 = pkt[14:]
        while etype == 0x8100 and len(l3) >= 4:
            etype = struct.unpack(">H", l3[2:4])[0]
            l3 = l3[4:]
    elif linktype == 113:  # Linux cooked
        etype = struct.unpack(">H", pkt[14:16])[0]
        l3 = pkt[16:]
    elif linktype == 101:  # raw IP
        l3 = pkt
        etype = 0x0800 if pkt and pkt[0] >> 4 == 4 else 0x86DD
    else:
        return None
    if etype == 0x0800:
        if len(l3) < 20:
            return None
        ihl = (l3[0] & 0x0F) * 4
        total = struct.unpack(">H", l3[2:4])[0]
        if l3[9] != 6:
            return None
        src = str(ipaddress.IPv4Address(l3[12:16]))
        dst = str(ipaddress.IPv4Address(l3[16:20]))
        tcp = l3[ihl:total]
    elif etype == 0x86DD:
        if len(l3) < 40:
            return None
        plen = struct.unpack(">H", l3[4:6])[0]
        nh = l3[6]
        src = str(ipaddress.IPv6Address(l3[8:24]))
        dst = str(ipaddress.IPv6Address(l3[24:40]))
        rest = l3[40:40 + plen]
        while nh in (0, 43, 60) and len(rest) >= 8:
            nh, hlen = rest[0], (rest[1] + 1) * 8
            rest = rest[hlen:]
        if nh != 6:
            return None
        tcp = rest
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport, seq = struct.unpack(">HHI", tcp[:8])
    doff = (tcp[12] >> 4) * 4
    flags = tcp[13]
    return (src, sport, dst, dport, seq, flags, tcp[doff:])


class Stream:
    """One direction of one TCP connection."""

    def __init__(self, key, isn, ts):
        self.key = key  # (src, sport, dst, dport)
        self.base = isn  # sequence number of the first payload byte
        self.start_ts = ts
        self.segs = {}  # relative offset -> payload (longest kept)

    def add(self, seq, payload):
        rel = (seq - self.base) & 0xFFFFFFFF
        if rel > 0x7FFFFFFF:  # before base (should not happen after SYN)
            return
        old = self.segs.get(rel)
        if old is None or len(payload) > len(old):
            self.segs[rel] = payload

    def bytes(self):
        out = bytearray()
        for rel in sorted(self.segs):
            p = self.segs[rel]
            if rel > len(out):
                # gap: data missing from the capture; stop here, later bytes unusable
                break
            take = p[len(out) - rel:]
            out += take
        return bytes(out)


def reassemble(pcap):
    streams = []  # in order of first appearance
    current = {}  # key -> Stream
    for ts, src, sport, dst, dport, seq, flags, payload in read_pcap(pcap):
        if 179 not in (sport, dport):
            continue
        key = (src, sport, dst, dport)
        syn = flags & 0x02
        if syn:
            st = Stream(key, (seq + 1) & 0xFFFFFFFF, ts)
            current[key] = st
            streams.append(st)
            continue
        if not payload:
            continue
        st = current.get(key)
        if st is None:
            st = Stream(key, seq, ts)
            current[key] = st
            streams.append(st)
        st.add(seq, payload)
    return streams


def split_messages(buf):
    msgs = []
    off = 0
    while off + 19 <= len(buf):
        if buf[off:off + 16] != MARKER:
            sys.stderr.write(f"warning: lost BGP framing at offset {off}\n")
            break
        ln = struct.unpack(">H", buf[off + 16:off + 18])[0]
        if ln < 19 or off + ln > len(buf):
            break
        msgs.append(buf[off:off + ln])
        off += ln
    return msgs


# --------------------------------------------------------------------------- decoding

AFI = {1: "ipv4", 2: "ipv6"}
SAFI = {1: "unicast", 2: "multicast", 4: "labeled", 128: "vpn"}
ROLES = {0: "provider", 1: "rs", 2: "rs-client", 3: "customer", 4: "peer"}
NOTIF = {
    (1, 0): "header-error", (1, 1): "header-conn-not-synced", (1, 2): "header-bad-length",
    (1, 3): "header-bad-type",
    (2, 0): "open-error", (2, 1): "open-unsupported-version", (2, 2): "open-bad-peer-as",
    (2, 3): "open-bad-bgp-id", (2, 4): "open-unsupported-optional-param",
    (2, 6): "open-unacceptable-hold-time", (2, 7): "open-unsupported-capability",
    (2, 11): "open-role-mismatch",
    (3, 0): "update-error", (4, 0): "hold-timer-expired", (5, 0): "fsm-error",
    (6, 0): "cease", (6, 1): "cease-max-prefixes", (6, 2): "cease-admin-shutdown",
    (6, 3): "cease-peer-deconfigured", (6, 4): "cease-admin-reset",
    (6, 5): "cease-connection-rejected", (6, 6): "cease-other-config-change",
    (6, 7): "cease-connection-collision", (6, 8): "cease-out-of-resources",
    (6, 9): "cease-hard-reset", (6, 10): "cease-bfd-down",
}


def afi_name(afi, safi):
    return f"{AFI.get(afi, f'afi{afi}')}-{SAFI.get(safi, f'safi{safi}')}"


def parse_open(m):
    """Return dict with as, hold, id, caps: list of (code, bytes)."""
    body = m[19:]
    ver, asn, hold = struct.unpack(">BHH", body[:5])
    bgpid = str(ipaddress.IPv4Address(body[5:9]))
    optlen = body[9]
    opts = body[10:10 + optlen]
    caps = []
    i = 0
    # RFC 9072 extended optional parameters length
    if optlen == 255 and len(body) > 12 and body[10] == 255:
        optlen = struct.unpack(">H", body[11:13])[0]
        opts = body[13:13 + optlen]
        ext = True
    else:
        ext = False
    while i < len(opts):
        ptype = opts[i]
        if ext:
            plen = struct.unpack(">H", opts[i + 1:i + 3])[0]
            pval = opts[i + 3:i + 3 + plen]
            i += 3 + plen
        else:
            plen = opts[i + 1]
            pval = opts[i + 2:i + 2 + plen]
            i += 2 + plen
        if ptype != 2:
            continue
        j = 0
        while j + 2 <= len(pval):
            code, clen = pval[j], pval[j + 1]
            caps.append((code, pval[j + 2:j + 2 + clen]))
            j += 2 + clen
    return {"version": ver, "as": asn, "hold": hold, "id": bgpid, "caps": caps}


def describe_cap(code, v):
    if code == 1:
        afi, _res, safi = struct.unpack(">HBB", v[:4])
        return f"MP {afi_name(afi, safi)}"
    if code == 2:
        return "ROUTE_REFRESH"
    if code == 128:
        return "ROUTE_REFRESH(old,128)"
    if code == 5:
        parts = []
        for k in range(0, len(v) - 5, 6):
            afi, safi, nh = struct.unpack(">HHH", v[k:k + 6])
            parts.append(f"{afi_name(afi, safi)} nh {AFI.get(nh, nh)}")
        return "EXTENDED_NEXTHOP(" + ", ".join(parts) + ")"
    if code == 6:
        return "EXTENDED_MESSAGE"
    if code == 9:
        return f"ROLE {ROLES.get(v[0], v[0]) if v else '?'}"
    if code == 64:
        if len(v) < 2:
            return "GRACEFUL_RESTART"
        w = struct.unpack(">H", v[:2])[0]
        fl = []
        if w & 0x8000:
            fl.append("R")
        if w & 0x4000:
            fl.append("N")
        parts = []
        for k in range(2, len(v) - 3, 4):
            afi, safi, f = struct.unpack(">HBB", v[k:k + 4])
            parts.append(f"{afi_name(afi, safi)}{' F' if f & 0x80 else ''}")
        return (f"GRACEFUL_RESTART(flags {''.join(fl) or '-'}, time {w & 0xFFF}"
                + (", " + ", ".join(parts) if parts else "") + ")")
    if code == 65:
        return f"AS4 {struct.unpack('>I', v[:4])[0]}"
    if code == 69:
        modes = {1: "rx", 2: "tx", 3: "rx+tx"}
        parts = []
        for k in range(0, len(v) - 3, 4):
            afi, safi, mode = struct.unpack(">HBB", v[k:k + 4])
            parts.append(f"{afi_name(afi, safi)} {modes.get(mode, mode)}")
        return "ADD_PATH(" + ", ".join(parts) + ")"
    if code == 70:
        return "ENHANCED_ROUTE_REFRESH"
    if code == 71:
        parts = []
        for k in range(0, len(v) - 6, 7):
            afi, safi, f = struct.unpack(">HBB", v[k:k + 4])
            t = int.from_bytes(v[k + 4:k + 7], "big")
            parts.append(f"{afi_name(afi, safi)}{' F' if f & 0x80 else ''} stale {t}")
        return "LLGR(" + ", ".join(parts) + ")"
    if code == 73:
        hl = v[0] if v else 0
        host = v[1:1 + hl].decode("utf-8", "replace")
        dl = v[1 + hl] if len(v) > 1 + hl else 0
        dom = v[2 + hl:2 + hl + dl].decode("utf-8", "replace")
        return f"FQDN {host!r} domain {dom!r}"
    return f"CAP{code}({v.hex()})"


def negotiated(open_a, open_b):
    """Per-direction facts for messages sent by A to B."""
    ca = dict()
    for code, v in open_a["caps"]:
        ca.setdefault(code, []).append(v)
    cb = dict()
    for code, v in open_b["caps"]:
        cb.setdefault(code, []).append(v)
    as4 = 65 in ca and 65 in cb

    def ap_modes(lst):
        d = {}
        for v in lst:
            for k in range(0, len(v) - 3, 4):
                afi, safi, mode = struct.unpack(">HBB", v[k:k + 4])
                d[(afi, safi)] = mode
        return d

    ma = ap_modes(ca.get(69, []))
    mb = ap_modes(cb.get(69, []))
    addpath = {fam for fam, mode in ma.items() if mode & 2 and mb.get(fam, 0) & 1}
    return {"as4": as4, "addpath": addpath}


def parse_prefixes(buf, afi, addpath):
    out = []
    i = 0
    alen = 4 if afi == 1 else 16
    while i < len(buf):
        pid = None
        if addpath:
            pid = struct.unpack(">I", buf[i:i + 4])[0]
            i += 4
        plen = buf[i]
        nb = (plen + 7) // 8
        raw = buf[i + 1:i + 1 + nb] + b"\x00" * (alen - nb)
        i += 1 + nb
        addr = ipaddress.IPv4Address(raw) if afi == 1 else ipaddress.IPv6Address(raw)
        out.append(f"{addr}/{plen}" + (f" (path id {pid})" if pid is not None else ""))
    return out


def parse_aspath(v, as4):
    size = 4 if as4 else 2
    segs = []
    i = 0
    while i + 2 <= len(v):
        t, n = v[i], v[i + 1]
        i += 2
        asns = [int.from_bytes(v[i + k * size:i + (k + 1) * size], "big") for k in range(n)]
        i += n * size
        s = " ".join(str(a) for a in asns)
        segs.append("{" + s + "}" if t == 1 else s)
    return " ".join(segs) if segs else "(empty)"


def fmt_ext(e):
    t, st = e[0], e[1]
    if t in (0x00, 0x40) and st in (2, 3):
        a = struct.unpack(">H", e[2:4])[0]
        b = struct.unpack(">I", e[4:8])[0]
        return f"{'RT' if st == 2 else 'SOO'} {a}:{b}"
    if t in (0x02, 0x42) and st in (2, 3):
        a = struct.unpack(">I", e[2:6])[0]
        b = struct.unpack(">H", e[6:8])[0]
        return f"{'RT' if st == 2 else 'SOO'} {a}:{b}"
    if t in (0x01, 0x41) and st in (2, 3):
        a = ipaddress.IPv4Address(e[2:6])
        b = struct.unpack(">H", e[6:8])[0]
        return f"{'RT' if st == 2 else 'SOO'} {a}:{b}"
    return f"type 0x{t:02x} sub 0x{st:02x} value {e[2:].hex()}"


def parse_update(m, facts):
    """Return (label, summary)."""
    body = m[19:]
    wlen = struct.unpack(">H", body[:2])[0]
    withdrawn = body[2:2 + wlen]
    alen = struct.unpack(">H", body[2 + wlen:4 + wlen])[0]
    attrs = body[4 + wlen:4 + wlen + alen]
    nlri = body[4 + wlen + alen:]
    ap4 = (1, 1) in facts["addpath"]
    parts = []
    feats = []
    mp_reach = mp_unreach = None
    i = 0
    attr_desc = []
    while i + 3 <= len(attrs):
        flags, code = attrs[i], attrs[i + 1]
        if flags & 0x10:
            ln = struct.unpack(">H", attrs[i + 2:i + 4])[0]
            v = attrs[i + 4:i + 4 + ln]
            i += 4 + ln
        else:
            ln = attrs[i + 2]
            v = attrs[i + 3:i + 3 + ln]
            i += 3 + ln
        if code == 1:
            attr_desc.append("ORIGIN " + {0: "IGP", 1: "EGP", 2: "INCOMPLETE"}.get(v[0], str(v[0])))
        elif code == 2:
            ap = parse_aspath(v, facts["as4"])
            attr_desc.append("AS_PATH " + ap)
            toks = ap.split()
            if len(toks) != len(set(toks)):
                feats.append("prepend")
        elif code == 3:
            attr_desc.append(f"NEXT_HOP {ipaddress.IPv4Address(v)}")
        elif code == 4:
            attr_desc.append(f"MED {struct.unpack('>I', v)[0]}")
            feats.append("med")
        elif code == 5:
            attr_desc.append(f"LOCAL_PREF {struct.unpack('>I', v)[0]}")
            feats.append("lpref")
        elif code == 6:
            attr_desc.append("ATOMIC_AGGREGATE")
            feats.append("atomic")
        elif code == 7:
            if len(v) == 8:
                a = struct.unpack(">I", v[:4])[0]
                ip = ipaddress.IPv4Address(v[4:])
            else:
                a = struct.unpack(">H", v[:2])[0]
                ip = ipaddress.IPv4Address(v[2:6])
            attr_desc.append(f"AGGREGATOR {a} {ip}")
            feats.append("aggregator")
        elif code == 8:
            cs = []
            for k in range(0, len(v) - 3, 4):
                a, b = struct.unpack(">HH", v[k:k + 4])
                cs.append(f"{a}:{b}")
            attr_desc.append("COMMUNITIES " + " ".join(cs))
            feats.append("comm")
        elif code == 9:
            attr_desc.append(f"ORIGINATOR_ID {ipaddress.IPv4Address(v)}")
        elif code == 10:
            attr_desc.append("CLUSTER_LIST " + " ".join(
                str(ipaddress.IPv4Address(v[k:k + 4])) for k in range(0, len(v), 4)))
        elif code == 14:
            mp_reach = v
        elif code == 15:
            mp_unreach = v
        elif code == 16:
            attr_desc.append("EXT_COMMUNITIES " + ", ".join(
                fmt_ext(v[k:k + 8]) for k in range(0, len(v) - 7, 8)))
            feats.append("extcomm")
        elif code == 17:
            attr_desc.append("AS4_PATH " + parse_aspath(v, True))
        elif code == 18:
            attr_desc.append(f"AS4_AGGREGATOR {struct.unpack('>I', v[:4])[0]} "
                             f"{ipaddress.IPv4Address(v[4:8])}")
        elif code == 32:
            ls = []
            for k in range(0, len(v) - 11, 12):
                ls.append("%d:%d:%d" % struct.unpack(">III", v[k:k + 12]))
            attr_desc.append("LARGE_COMMUNITY " + " ".join(ls))
            feats.append("lcomm")
        elif code == 35:
            attr_desc.append(f"OTC {struct.unpack('>I', v)[0]}")
            feats.append("otc")
        else:
            attr_desc.append(f"ATTR{code}(flags 0x{flags:02x}, {v.hex()})")
            feats.append(f"attr{code}")

    label = None
    if wlen:
        parts.append("withdrawn " + ", ".join(parse_prefixes(withdrawn, 1, ap4)))
    if mp_unreach is not None:
        afi, safi = struct.unpack(">HB", mp_unreach[:3])
        fam = (afi, safi)
        routes = mp_unreach[3:]
        if routes:
            parts.append(f"MP_UNREACH {afi_name(afi, safi)} " + ", ".join(
                parse_prefixes(routes, afi, fam in facts["addpath"])))
        else:
            parts.append(f"MP_UNREACH {afi_name(afi, safi)} (no routes)")
    mp_fam = None
    if mp_reach is not None:
        afi, safi = struct.unpack(">HB", mp_reach[:3])
        mp_fam = (afi, safi)
        nhl = mp_reach[3]
        nh = mp_reach[4:4 + nhl]
        if nhl in (16, 32):
            nhs = [str(ipaddress.IPv6Address(nh[k:k + 16])) for k in range(0, nhl, 16)]
        elif nhl == 4:
            nhs = [str(ipaddress.IPv4Address(nh))]
        else:
            nhs = [nh.hex()]
        rest = mp_reach[5 + nhl:]
        pfx = parse_prefixes(rest, afi, mp_fam in facts["addpath"])
        parts.append(f"MP_REACH {afi_name(afi, safi)} next hop {' + '.join(nhs)}: "
                     + ", ".join(pfx))
        if nhl == 32:
            feats.insert(0, "ll")
        if afi == 1 and nhl in (16, 32):
            feats.insert(0, "v6nh")
    if nlri:
        parts.append("NLRI " + ", ".join(parse_prefixes(nlri, 1, ap4)))

    if not wlen and not attrs and not nlri:
        label = "eor-ipv4"
        parts = ["End-of-RIB ipv4-unicast (empty UPDATE)"]
    elif mp_unreach is not None and len(mp_unreach) == 3 and not nlri and not wlen \
            and mp_reach is None and len(attr_desc) == 0:
        afi, safi = struct.unpack(">HB", mp_unreach[:3])
        label = f"eor-{AFI.get(afi, afi)}"
        parts = [f"End-of-RIB {afi_name(afi, safi)} (MP_UNREACH with no routes)"]
    elif nlri or mp_reach is not None:
        if nlri:
            fam = "ipv4"
            ap = ap4
        else:
            fam = "ipv6" if mp_fam[0] == 2 else f"{AFI.get(mp_fam[0], mp_fam[0])}-mp"
            ap = mp_fam in facts["addpath"]
        label = "update-" + fam + ("-addpath" if ap else "")
        if feats:
            label += "-" + "-".join(dict.fromkeys(feats))
        if wlen or (mp_unreach is not None and len(mp_unreach) > 3):
            label += "-with-withdraw"
    else:
        if wlen and mp_unreach is None:
            label = "withdraw-ipv4" + ("-addpath" if ap4 else "")
        elif mp_unreach is not None and not wlen:
            afi, safi = struct.unpack(">HB", mp_unreach[:3])
            label = f"withdraw-{AFI.get(afi, afi)}" + (
                "-addpath" if (afi, safi) in facts["addpath"] else "")
        else:
            label = "withdraw-mixed"
    summary = "UPDATE: " + "; ".join(parts + attr_desc)
    return label, summary


def classify(m, facts):
    t = m[18]
    if t == 1:
        o = parse_open(m)
        caps = ", ".join(describe_cap(c, v) for c, v in o["caps"])
        return "open", (f"OPEN: version {o['version']}, AS {o['as']}, hold {o['hold']}, "
                        f"BGP ID {o['id']}, capabilities: {caps}")
    if t == 2:
        return parse_update(m, facts)
    if t == 3:
        code, sub = m[19], m[20]
        data = m[21:]
        name = NOTIF.get((code, sub), f"code{code}-sub{sub}")
        desc = f"NOTIFICATION: code {code} subcode {sub} ({name})"
        if code == 6 and sub in (2, 4) and data:
            n = data[0]
            txt = data[1:1 + n].decode("utf-8", "replace")
            desc += f", shutdown communication (len {n}) {txt!r}"
            name += "-with-message"
        elif data:
            desc += f", data {data.hex()}"
        return "notification-" + name, desc
    if t == 4:
        return "keepalive", "KEEPALIVE"
    if t == 5:
        afi, sub, safi = struct.unpack(">HBB", m[19:23])
        st = {0: "", 1: "-borr", 2: "-eorr"}.get(sub, f"-subtype{sub}")
        what = {0: "request", 1: "Begin-of-RIB-Refresh (BoRR)",
                2: "End-of-RIB-Refresh (EoRR)"}.get(sub, f"subtype {sub}")
        return (f"route-refresh-{AFI.get(afi, afi)}{st}",
                f"ROUTE-REFRESH: {afi_name(afi, safi)} {what}")
    return f"type{t}", f"message type {t}"


# --------------------------------------------------------------------------- synthetic pcap


def synth_pcap(path, frames):
    """frames: list of (src, sport, dst, dport, payload). Writes Ethernet/IP/TCP frames with
    consistent sequence numbers per direction."""
    seqs = {}
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    for n, (src, sport, dst, dport, payload) in enumerate(frames):
        key = (src, sport, dst, dport)
        seq = seqs.get(key, 1000)
        seqs[key] = seq + len(payload)
        ack = seqs.get((dst, dport, src, sport), 1000)
        tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, ack, 5 << 4, 0x18, 65535, 0, 0)
        seg = tcp + payload
        s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        if s.version == 4:
            ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), n, 0x4000, 64, 6, 0,
                             s.packed, d.packed)
            etype = 0x0800
        else:
            ip = struct.pack(">IHBB16s16s", 0x60000000, len(seg), 6, 64, s.packed, d.packed)
            etype = 0x86DD
        eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + struct.pack(">H", etype)
        pkt = eth + ip + seg
        out += struct.pack("<IIII", 1700000000 + n, 0, len(pkt), len(pkt)) + pkt
    with open(path, "wb") as f:
        f.write(out)


def tshark_decode(frames):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "one.pcap")
        synth_pcap(p, frames)
        r = subprocess.run(
            ["tshark", "-n", "-r", p, "-V", "-O", "bgp", "-o", "tcp.analyze_sequence_numbers:FALSE",
             "-Y", f"frame.number == {len(frames)}"],
            capture_output=True, text=True, check=False)
        txt = r.stdout
        if r.returncode != 0:
            txt += f"\n# tshark exit code {r.returncode}: {r.stderr}"
        # drop the lower-layer one-line summaries; keep the BGP tree
        lines = txt.splitlines()
        for k, line in enumerate(lines):
            if line.startswith("Border Gateway Protocol"):
                lines = lines[k:]
                break
        return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--capture-note", required=True,
                    help="text for the '# capture:' line")
    ap.add_argument("--node", action="append", default=[],
                    help="ADDR=NAME (a speaker's address on the veth)")
    ap.add_argument("--version", action="append", default=[],
                    help="NAME=implementation and version")
    ap.add_argument("--session", action="append", default=[],
                    help="ADDR_A,ADDR_B=TAG|DESCRIPTION ('{local}' and '{peer}' are replaced "
                    "by the sender's and receiver's AS)")
    ap.add_argument("--as", dest="asn", action="append", default=[],
                    help="TAG:NAME=AS")
    ap.add_argument("--config", action="append", default=[],
                    help="TAG:NAME=config summary of that sender in that session")
    ap.add_argument("--dump", action="store_true", help="print every message to stdout")
    a = ap.parse_args()

    node = dict(x.split("=", 1) for x in a.node)
    version = dict(x.split("=", 1) for x in a.version)
    sessions = {}
    for x in a.session:
        pair, rest = x.split("=", 1)
        aa, bb = pair.split(",")
        tag, desc = rest.split("|", 1)
        sessions[frozenset((aa, bb))] = (tag, desc)
    asn = dict(x.split("=", 1) for x in a.asn)
    config = dict(x.split("=", 1) for x in a.config)

    streams = reassemble(a.pcap)
    # pair the two directions of each connection
    by_key = {}
    for st in streams:
        by_key.setdefault(st.key, []).append(st)
    written = []
    seen = set()
    for st in streams:
        src, sport, dst, dport = st.key
        pair = frozenset((src, dst))
        if pair not in sessions or src not in node or dst not in node:
            continue
        tag, desc = sessions[pair]
        sender, receiver = node[src], node[dst]
        msgs = split_messages(st.bytes())
        # the reverse direction of the same connection (same 4-tuple instance nearest in time)
        rev_list = by_key.get((dst, dport, src, sport), [])
        rev = min(rev_list, key=lambda r: abs(r.start_ts - st.start_ts)) if rev_list else None
        rmsgs = split_messages(rev.bytes()) if rev else []
        open_a = next((m for m in msgs if m[18] == 1), None)
        open_b = next((m for m in rmsgs if m[18] == 1), None)
        if open_a is not None and open_b is not None:
            facts = negotiated(parse_open(open_a), parse_open(open_b))
        else:
            facts = {"as4": True, "addpath": set()}
        for m in msgs:
            label, what = classify(m, facts)
            if a.dump:
                print(f"{tag} {sender}->{receiver} {label}: {what}")
            key = (sender, receiver, tag, label)
            if key in seen:
                continue
            seen.add(key)
            base = f"{sender}-to-{receiver}-{tag}-{label}"
            d = desc.replace("{local}", asn.get(f"{tag}:{sender}", "?")).replace(
                "{peer}", asn.get(f"{tag}:{receiver}", "?"))
            hx = m.hex()
            lines = [
                f"# source: {version.get(sender, sender)} to {version.get(receiver, receiver)}",
                f"# session: {d}",
                f"# config: {config.get(f'{tag}:{sender}', '(defaults)')}",
                f"# capture: {a.capture_note}",
                f"# what: {what}",
            ] + [hx[k:k + 64] for k in range(0, len(hx), 64)]
            with open(os.path.join(a.out, base + ".hex"), "w") as f:
                f.write("\n".join(lines) + "\n")
            frames = []
            if open_a is not None and open_b is not None:
                frames = [(src, sport, dst, dport, open_a), (dst, dport, src, sport, open_b)]
            frames.append((src, sport, dst, dport, m))
            with open(os.path.join(a.out, base + ".tshark.txt"), "w") as f:
                f.write(f"# tshark -V -O bgp decode of {base}.hex (frame {len(frames)} of a "
                        f"synthetic pcap that first carries both OPENs of the connection)\n")
                f.write(tshark_decode(frames))
            written.append((base, sender, receiver, what))
    for base, s, r, what in written:
        print(f"{base}\t{s}\t{r}\t{what}")


if __name__ == "__main__":
    main()

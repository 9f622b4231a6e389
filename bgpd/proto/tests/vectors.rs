//! Messages that BIRD 2, FRR and GoBGP sent each other in network namespaces
//! (captured by `conformance/capture/capture-vectors.sh`, provenance in each
//! vector's header): each decodes, under the context its session's two OPENs
//! negotiate, to the values tshark decoded from the same bytes (the
//! `.tshark.txt` beside it), and encodes back to the same bytes.

use std::path::{Path, PathBuf};

use bgpd_proto::wire::{AddPathMode, Attr, Capability, Message, MpNlri, NextHop, Open, PathAttribute};
use bgpd_proto::{Family, FamilySet, WireContext};

struct Vector {
    name: String,
    bytes: Vec<u8>,
    tshark: String,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    digits.chunks(2).map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap()).collect()
}

fn load() -> Vec<Vector> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "hex") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.lines().any(|l| l.starts_with("# source:")), "{}: no provenance header", p.display());
        let body: String = text.lines().filter(|l| !l.starts_with('#')).collect();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        let tshark = std::fs::read_to_string(p.with_extension("tshark.txt")).unwrap_or_default();
        v.push(Vector { name, bytes: hex(&body), tshark });
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// `sender-to-receiver-session` of a vector name.
fn session(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.splitn(4, '-');
    let (from, to_kw, to, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (to_kw == "to").then_some((from, to, rest.split('-').next()?))
}

fn open_of(all: &[Vector], from: &str, to: &str, sess: &str) -> Option<Open> {
    let v = all.iter().find(|v| v.name == format!("{from}-to-{to}-{sess}-open"))?;
    match Message::decode(&v.bytes, &WireContext::default()).ok()??.message {
        Message::Open(o) => Some(o),
        _ => None,
    }
}

/// What the two OPENs negotiate for messages from `tx` to `rx` (RFC 6793,
/// RFC 7911 §4, RFC 8654).
fn negotiate(tx: &Open, rx: &Open) -> WireContext {
    let four = |o: &Open| o.capabilities().any(|c| matches!(c, Capability::FourOctetAs(_)));
    let ext = |o: &Open| o.capabilities().any(|c| matches!(c, Capability::ExtendedMessage));
    let add_path = |o: &Open, send: bool| -> Vec<Family> {
        o.capabilities()
            .flat_map(|c| match c {
                Capability::AddPath(v) => v.clone(),
                _ => Vec::new(),
            })
            .filter(|(_, m): &(Family, AddPathMode)| if send { m.send() } else { m.receive() })
            .map(|(f, _)| f)
            .collect()
    };
    let rx_fams = add_path(rx, false);
    let both: Vec<Family> = add_path(tx, true).into_iter().filter(|f| rx_fams.contains(f)).collect();
    WireContext::new(four(tx) && four(rx)).with_add_path(FamilySet::of(&both)).with_extended_message(ext(tx) && ext(rx))
}

fn after<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    line.trim_start().strip_prefix(label).map(str::trim)
}

fn paren_num(s: &str) -> Option<String> {
    let open = s.rfind('(')?;
    Some(s[open + 1..s.rfind(')')?].to_string())
}

/// The facts tshark states about a message, as `key=value` strings.
fn tshark_facts(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let mut f = Vec::new();
    let mut flags = None;
    let mut community_as = None;
    let mut large = Vec::new();
    let mut ext_subtype = None;
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim();
        if l.starts_with("    Type: ") && t.contains("Message") {
            f.push(format!("type={}", paren_num(t).unwrap()));
        } else if let Some(v) = after(l, "My AS:") {
            f.push(format!("my_as={v}"));
        } else if let Some(v) = after(l, "Hold Time:") {
            f.push(format!("hold={v}"));
        } else if let Some(v) = after(l, "BGP Identifier:") {
            f.push(format!("id={v}"));
        } else if t.starts_with("Capability: ") && !text.contains("NOTIFICATION Message") {
            if let Some(n) = lines.get(i + 1).and_then(|n| after(n, "Type:")).and_then(paren_num) {
                f.push(format!("cap={n}"));
            }
        } else if let Some(v) = after(l, "AS Number:") {
            f.push(format!("as4_cap={v}"));
        } else if let Some(v) = t.split("= Time: ").nth(1) {
            f.push(format!("gr_time={v}"));
        } else if let Some(v) = after(l, "Hostname:") {
            f.push(format!("hostname={v}"));
        } else if let Some(v) = after(l, "Flags: 0x") {
            flags = Some(v.split(',').next().unwrap().to_string());
        } else if let Some(v) = after(l, "Type Code:") {
            f.push(format!("attr={}/{}", paren_num(v).unwrap(), flags.take().unwrap_or_default()));
        } else if let Some(v) = after(l, "Origin:") {
            f.push(format!("origin={}", paren_num(v).unwrap()));
        } else if let Some(v) = after(l, "AS4:").or_else(|| after(l, "AS2:")) {
            f.push(format!("as={v}"));
        } else if let Some(v) = after(l, "Next hop:").filter(|v| v.parse::<std::net::IpAddr>().is_ok()) {
            f.push(format!("nexthop={v}"));
        } else if let Some(v) = after(l, "IPv6 Address:") {
            f.push(format!("nexthop={v}"));
        } else if let Some(v) = after(l, "Link-local Address:") {
            f.push(format!("link_local={v}"));
        } else if let Some(v) = after(l, "Multiple exit discriminator:") {
            f.push(format!("med={v}"));
        } else if let Some(v) = after(l, "Local preference:") {
            f.push(format!("local_pref={v}"));
        } else if let Some(v) = after(l, "Community AS:") {
            community_as = Some(v.to_string());
        } else if let Some(v) = after(l, "Community value:") {
            f.push(format!("community={}:{v}", community_as.take().unwrap()));
        } else if let Some(v) = after(l, "Global Administrator:")
            .or_else(|| after(l, "Local Data Part 1:"))
            .or_else(|| after(l, "Local Data Part 2:"))
        {
            large.push(v.to_string());
            if large.len() == 3 {
                f.push(format!("large={}", large.join(":")));
                large.clear();
            }
        } else if let Some(v) = after(l, "Community Well-known:") {
            let code = u32::from_str_radix(paren_num(v).unwrap().trim_start_matches("0x"), 16).unwrap();
            f.push(format!("community={}:{}", code >> 16, code & 0xFFFF));
        } else if let Some(v) = after(l, "Subtype (AS2):") {
            ext_subtype = paren_num(v);
        } else if let Some(v) = after(l, "2-Octet AS:") {
            community_as = Some(v.to_string());
        } else if let Some(v) = after(l, "4-Octet AN:") {
            f.push(format!("ext2={}/{}:{v}", ext_subtype.take().unwrap(), community_as.take().unwrap()));
        } else if let Some(v) = after(l, "Address family identifier (AFI):") {
            f.push(format!("afi={}", paren_num(v).unwrap()));
        } else if let Some(v) = after(l, "Subsequent address family identifier (SAFI):") {
            f.push(format!("safi={}", paren_num(v).unwrap()));
        } else if let Some(v) = after(l, "Subtype:").filter(|_| text.contains("ROUTE-REFRESH Message")) {
            f.push(format!("subtype={}", paren_num(v).unwrap()));
        } else if let Some(v) = after(l, "Major error Code:") {
            f.push(format!("major={}", paren_num(v).unwrap()));
        } else if t.starts_with("Minor error Code") {
            f.push(format!("minor={}", paren_num(t).unwrap()));
        } else if let Some(v) = after(l, "Shutdown Communication:") {
            f.push(format!("shutdown={v}"));
        } else if let Some(p) = prefix_line(t) {
            f.push(p);
        } else if text.contains("NOTIFICATION Message") && t.starts_with("Type: ") {
            f.push(format!("unsupported_cap={}", paren_num(t).unwrap()));
        }
    }
    normalize(f)
}

/// Sorts, and keeps one `nexthop` fact per address: tshark prints the next
/// hop of MP_REACH_NLRI both as a summary and as its parts.
fn normalize(mut f: Vec<String>) -> Vec<String> {
    f.sort();
    f.dedup_by(|a, b| a == b && a.starts_with("nexthop="));
    f
}

/// `10.1.0.0/24 PathId 2` → `prefix=10.1.0.0/24#2`.
fn prefix_line(t: &str) -> Option<String> {
    let mut w = t.split_whitespace();
    let p = w.next()?;
    let net: ipnet::IpNet = p.parse().ok()?;
    let id = match (w.next(), w.next()) {
        (Some("PathId"), Some(id)) => id.to_string(),
        (None, None) => "-".into(),
        _ => return None,
    };
    Some(format!("prefix={net}#{id}"))
}

fn nlri_facts<P: std::fmt::Display>(f: &mut Vec<String>, v: &[bgpd_proto::Nlri<P>]) {
    for n in v {
        let id = n.path_id.map_or("-".into(), |i| i.to_string());
        f.push(format!("prefix={}#{id}", n.prefix));
    }
}

/// The same facts, from bgpd's decoded value.
fn our_facts(m: &Message) -> Vec<String> {
    let mut f = vec![format!("type={}", m.kind().0)];
    match m {
        Message::Open(o) => {
            f.push(format!("my_as={}", o.my_as));
            f.push(format!("hold={}", o.hold_time));
            f.push(format!("id={}", o.bgp_id));
            for c in o.capabilities() {
                f.push(format!("cap={}", c.code().0));
                match c {
                    Capability::FourOctetAs(a) => f.push(format!("as4_cap={a}")),
                    Capability::GracefulRestart(g) => f.push(format!("gr_time={}", g.time)),
                    Capability::Fqdn { hostname, .. } => f.push(format!("hostname={hostname}")),
                    _ => {}
                }
            }
        }
        Message::Update(u) => {
            nlri_facts(&mut f, &u.withdrawn);
            nlri_facts(&mut f, &u.nlri);
            for PathAttribute { flags, value } in &u.attributes {
                f.push(format!("attr={}/{:02x}", value.code().0, flags.0));
                match value {
                    Attr::Origin(o) => f.push(format!("origin={}", o.code())),
                    Attr::AsPath(p) | Attr::As4Path(p) => {
                        p.segments.iter().flat_map(|s| &s.asns).for_each(|a| f.push(format!("as={a}")))
                    }
                    Attr::NextHop(a) => f.push(format!("nexthop={a}")),
                    Attr::Med(v) => f.push(format!("med={v}")),
                    Attr::LocalPref(v) => f.push(format!("local_pref={v}")),
                    Attr::Communities(c) => c.iter().for_each(|c| f.push(format!("community={c:?}"))),
                    Attr::LargeCommunities(c) => c.iter().for_each(|c| f.push(format!("large={c:?}"))),
                    // Transitive two-octet-AS-specific ones (RFC 4360 §3.1).
                    Attr::ExtCommunities(c) => c.iter().filter(|c| c.kind().0 == 0).for_each(|c| {
                        let b = c.0;
                        f.push(format!(
                            "ext2={:#04x}/{}:{}",
                            b[1],
                            u16::from_be_bytes([b[2], b[3]]),
                            u32::from_be_bytes([b[4], b[5], b[6], b[7]])
                        ))
                    }),
                    Attr::MpReach(r) => {
                        f.push(format!("afi={}", r.family.afi.0));
                        f.push(format!("safi={}", r.family.safi.0));
                        match &r.next_hop {
                            NextHop::V4(a) => f.push(format!("nexthop={a}")),
                            NextHop::V6 { global, link_local } => {
                                f.push(format!("nexthop={global}"));
                                if let Some(ll) = link_local {
                                    f.push(format!("link_local={ll}"));
                                }
                            }
                            NextHop::Other(_) => {}
                        }
                        mp_facts(&mut f, &r.nlri);
                    }
                    Attr::MpUnreach(u) => {
                        f.push(format!("afi={}", u.family.afi.0));
                        f.push(format!("safi={}", u.family.safi.0));
                        mp_facts(&mut f, &u.nlri);
                    }
                    _ => {}
                }
            }
        }
        Message::Notification(n) => {
            f.push(format!("major={}", n.code));
            f.push(format!("minor={}", n.subcode));
            if let Some(m) = n.shutdown_message() {
                f.push(format!("shutdown={m}"));
            }
            for c in n.unsupported_capabilities().unwrap_or_default() {
                f.push(format!("unsupported_cap={}", c.code().0));
            }
        }
        Message::RouteRefresh(r) => {
            f.push(format!("afi={}", r.family.afi.0));
            f.push(format!("safi={}", r.family.safi.0));
            f.push(format!("subtype={}", r.subtype.0));
        }
        Message::Keepalive => {}
    }
    normalize(f)
}

fn mp_facts(f: &mut Vec<String>, n: &MpNlri) {
    match n {
        MpNlri::V4(v) => nlri_facts(f, v),
        MpNlri::V6(v) => nlri_facts(f, v),
        MpNlri::Other(_) => {}
    }
}

#[test]
fn real_implementations_messages_decode_and_reencode_exactly() {
    let all = load();
    assert!(all.len() >= 25, "expected at least 25 vectors in {}, found {}", dir().display(), all.len());
    for src in ["bird-", "frr-", "gobgp-"] {
        assert!(all.iter().any(|v| v.name.starts_with(src)), "no vector sent by {src}");
    }
    let mut failures = Vec::new();
    let mut checked_against_tshark = 0;
    for v in &all {
        let ctx = match session(&v.name) {
            Some((from, to, sess)) => match (open_of(&all, from, to, sess), open_of(&all, to, from, sess)) {
                (Some(tx), Some(rx)) => negotiate(&tx, &rx),
                _ => WireContext::new(true),
            },
            None => WireContext::new(true),
        };
        let frame = match Message::decode(&v.bytes, &ctx) {
            Ok(Some(f)) => f,
            other => {
                failures.push(format!("{}: decode gave {other:?}", v.name));
                continue;
            }
        };
        if frame.len != v.bytes.len() || !frame.issues.is_empty() {
            failures.push(format!("{}: len {} of {}, issues {:?}", v.name, frame.len, v.bytes.len(), frame.issues));
        }
        match frame.message.to_bytes(&ctx) {
            Ok(b) if b[..] == v.bytes[..] => {}
            other => failures.push(format!("{}: re-encoding differs: {other:?}", v.name)),
        }
        if !v.tshark.is_empty() {
            checked_against_tshark += 1;
            let (theirs, ours) = (tshark_facts(&v.tshark), our_facts(&frame.message));
            if theirs != ours {
                failures.push(format!("{}: tshark {theirs:?}\n   bgpd   {ours:?}", v.name));
            }
        }
    }
    assert!(checked_against_tshark >= 25, "only {checked_against_tshark} vectors have a tshark decode");
    assert!(failures.is_empty(), "{} vector(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_vector_folder_is_documented() {
    let readme = std::fs::read_to_string(Path::new(&dir()).join("README.md")).unwrap_or_default();
    for v in load() {
        assert!(readme.contains(&v.name), "{} is not listed in tests/vectors/README.md", v.name);
    }
}

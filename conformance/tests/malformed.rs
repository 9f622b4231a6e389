//! Malformed OPENs and UPDATEs from a raw socket (a minimal client in this
//! file, speaking bytes, in a namespace of its own), each on a session of
//! its own, get the answer the RFCs require, read back from the socket:
//!
//! | sent | required | rule |
//! |---|---|---|
//! | OPEN version 3 | NOTIFICATION 2/1 Unsupported Version Number | RFC 4271 §6.2 |
//! | OPEN with the wrong AS | 2/2 Bad Peer AS | RFC 4271 §6.2 |
//! | OPEN with hold time 1 | 2/6 Unacceptable Hold Time | RFC 4271 §6.2 |
//! | UPDATE whose AS_PATH segment overruns the attribute | no NOTIFICATION; treat-as-withdraw: the earlier route for the prefix is gone | RFC 7606 §7.2 |
//! | UPDATE whose NEXT_HOP length overruns the path attributes | no NOTIFICATION; treat-as-withdraw | RFC 7606 §4 (which replaces RFC 4271's 3/1 here) |
//! | UPDATE whose Total Path Attribute Length overruns the message | 3/1 Malformed Attribute List | RFC 7606 §3 (a), RFC 4271 §6.3 |
//!
//! Meanwhile a BIRD session on the same bgpd stays Established with its
//! route, without a flap.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use conformance::lab::{bgpd, bird, setup, wait_for, Lab};
use serde_json::Value;

const UP: Duration = Duration::from_secs(60);
const BGPD_AS: u32 = 64512;
const RAW_AS: u32 = 65002;

// ----- a minimal BGP speaker on a raw TCP socket -----

const OPEN: u8 = 1;
const UPDATE: u8 = 2;
const NOTIFICATION: u8 = 3;
const KEEPALIVE: u8 = 4;

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&u16::try_from(19 + body.len()).expect("test messages are small").to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// OPEN with capabilities multiprotocol IPv4 unicast and 4-octet AS.
fn open(version: u8, asn: u32, hold: u16, id: Ipv4Addr) -> Vec<u8> {
    let mut caps = vec![1, 4, 0, 1, 0, 1, 65, 4];
    caps.extend_from_slice(&asn.to_be_bytes());
    let mut b = vec![version];
    b.extend_from_slice(&u16::try_from(asn).unwrap_or(23456).to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id.octets());
    b.push(u8::try_from(caps.len() + 2).expect("small"));
    b.push(2);
    b.push(u8::try_from(caps.len()).expect("small"));
    b.extend_from_slice(&caps);
    message(OPEN, &b)
}

/// UPDATE announcing `prefix`/24 with ORIGIN IGP, AS_PATH (one AS_SEQUENCE
/// of `as_count` declared ASes, holding only RAW_AS) and NEXT_HOP, whose
/// attribute length is declared as `nh_len`.
fn update(prefix: [u8; 3], as_count: u8, nh_len: u8, next_hop: Ipv4Addr) -> Vec<u8> {
    update_total(prefix, as_count, nh_len, next_hop, 0)
}

/// [`update`] with `extra` added to the declared Total Path Attribute Length.
fn update_total(prefix: [u8; 3], as_count: u8, nh_len: u8, next_hop: Ipv4Addr, extra: u16) -> Vec<u8> {
    let mut attrs = vec![0x40, 1, 1, 0];
    attrs.extend_from_slice(&[0x40, 2, 6, 2, as_count]);
    attrs.extend_from_slice(&RAW_AS.to_be_bytes());
    attrs.extend_from_slice(&[0x40, 3, nh_len]);
    attrs.extend_from_slice(&next_hop.octets());
    let mut b = vec![0, 0];
    b.extend_from_slice(&(u16::try_from(attrs.len()).expect("small") + extra).to_be_bytes());
    b.extend_from_slice(&attrs);
    b.push(24);
    b.extend_from_slice(&prefix);
    message(UPDATE, &b)
}

/// Reads one message: (type, body). `Ok(None)` on timeout.
fn read_message(s: &mut TcpStream) -> Result<Option<(u8, Vec<u8>)>, String> {
    let mut head = [0u8; 19];
    match s.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return Ok(None),
        Err(e) => return Err(format!("read: {e}")),
    }
    let len = usize::from(u16::from_be_bytes([head[16], head[17]]));
    let mut body = vec![0u8; len.saturating_sub(19)];
    s.read_exact(&mut body).map_err(|e| format!("read body: {e}"))?;
    Ok(Some((head[18], body)))
}

/// Reads until a NOTIFICATION arrives (its code and subcode) or `within` passes.
fn notification(s: &mut TcpStream, within: Duration) -> Result<Option<(u8, u8)>, String> {
    let start = Instant::now();
    while start.elapsed() < within {
        match read_message(s) {
            Ok(Some((NOTIFICATION, body))) if body.len() >= 2 => return Ok(Some((body[0], body[1]))),
            Ok(_) => {}
            // closed without a NOTIFICATION
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Listens on `addr`:179 for bgpd's connection and reads its OPEN.
fn accept_bgpd(addr: Ipv4Addr) -> Result<TcpStream, String> {
    let l = TcpListener::bind(SocketAddr::from((addr, 179))).map_err(|e| format!("bind {addr}:179: {e}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut s = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < UP => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("no connection from bgpd: {e}")),
        }
    };
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(500))).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some((kind, _)) = read_message(&mut s)? {
            if kind == OPEN {
                return Ok(s);
            }
            return Err(format!("bgpd's first message is type {kind}, not OPEN"));
        }
    }
    Err("bgpd sent no OPEN".into())
}

/// Completes the handshake with a valid OPEN and KEEPALIVE, until bgpd's KEEPALIVE.
fn establish(s: &mut TcpStream, id: Ipv4Addr) -> Result<(), String> {
    s.write_all(&open(4, RAW_AS, 9, id)).map_err(|e| e.to_string())?;
    s.write_all(&message(KEEPALIVE, &[])).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match read_message(s)? {
            Some((KEEPALIVE, _)) => return Ok(()),
            Some((NOTIFICATION, b)) => return Err(format!("bgpd refused a valid OPEN: NOTIFICATION {b:?}")),
            _ => {}
        }
    }
    Err("no KEEPALIVE from bgpd".into())
}

// ----- the variants -----

#[derive(Clone, Copy, Debug)]
enum Variant {
    Version,
    PeerAs,
    HoldTime,
    AsPathOverrun,
    AttrLengthOverrun,
    TotalLengthOverrun,
}

const VARIANTS: [Variant; 6] = [
    Variant::Version,
    Variant::PeerAs,
    Variant::HoldTime,
    Variant::AsPathOverrun,
    Variant::AttrLengthOverrun,
    Variant::TotalLengthOverrun,
];

impl Variant {
    fn index(self) -> u8 {
        match self {
            Variant::Version => 1,
            Variant::PeerAs => 2,
            Variant::HoldTime => 3,
            Variant::AsPathOverrun => 4,
            Variant::AttrLengthOverrun => 5,
            Variant::TotalLengthOverrun => 6,
        }
    }
    fn addr(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 255, 2, 10 + self.index())
    }
    fn peer_name(self) -> String {
        format!("raw-{}", self.index())
    }
}

/// Runs one variant against bgpd from inside the raw namespace.
fn run_variant(v: Variant, b: &bgpd::Bgpd) -> Result<(), String> {
    let mut s = accept_bgpd(v.addr())?;
    let id = v.addr();
    let expect = |got: Option<(u8, u8)>, want: (u8, u8)| match got {
        Some(g) if g == want => Ok(()),
        Some(g) => Err(format!("{v:?}: NOTIFICATION {g:?}, the RFC requires {want:?}")),
        None => Err(format!("{v:?}: no NOTIFICATION within 10 s, the RFC requires {want:?}")),
    };
    let within = Duration::from_secs(10);
    let write = |s: &mut TcpStream, m: &[u8]| s.write_all(m).map_err(|e| e.to_string());
    match v {
        Variant::Version => {
            write(&mut s, &open(3, RAW_AS, 9, id))?;
            expect(notification(&mut s, within)?, (2, 1))
        }
        Variant::PeerAs => {
            write(&mut s, &open(4, 65099, 9, id))?;
            expect(notification(&mut s, within)?, (2, 2))
        }
        Variant::HoldTime => {
            write(&mut s, &open(4, RAW_AS, 1, id))?;
            expect(notification(&mut s, within)?, (2, 6))
        }
        Variant::AsPathOverrun => {
            establish(&mut s, id)?;
            // AS_PATH segment claims 5 ASes, holds 1.
            treat_as_withdraw(&mut s, b, v, [10, 200, 4], &update([10, 200, 4], 5, 4, id))
        }
        Variant::AttrLengthOverrun => {
            establish(&mut s, id)?;
            // NEXT_HOP declares 10 bytes; the path attributes hold 4 more.
            treat_as_withdraw(&mut s, b, v, [10, 200, 5], &update([10, 200, 5], 1, 10, id))
        }
        Variant::TotalLengthOverrun => {
            establish(&mut s, id)?;
            // Total Path Attribute Length 20 bytes beyond the message's end.
            write(&mut s, &update_total([10, 200, 6], 1, 4, id, 20))?;
            expect(notification(&mut s, within)?, (3, 1))
        }
    }
}

/// Announces `prefix`/24 validly, then sends `bad` for it: bgpd must drop
/// the route (treat-as-withdraw) and keep the session (no NOTIFICATION).
fn treat_as_withdraw(s: &mut TcpStream, b: &bgpd::Bgpd, v: Variant, prefix: [u8; 3], bad: &[u8]) -> Result<(), String> {
    let name = v.peer_name();
    let p = format!("{}.{}.{}.0/24", prefix[0], prefix[1], prefix[2]);
    s.write_all(&update(prefix, 1, 4, v.addr())).map_err(|e| e.to_string())?;
    wait_for("the valid route at bgpd", UP, || b.has_route(&name, &p))?;
    s.write_all(bad).map_err(|e| e.to_string())?;
    wait_for(&format!("treat-as-withdraw of {p}"), UP, || match b.has_route(&name, &p) {
        Ok(r) => Err(format!("still there: {r}")),
        Err(_) => Ok(()),
    })?;
    // The session is not reset: no NOTIFICATION within 4 s, and keepalives
    // from this client keep it up meanwhile.
    s.write_all(&message(KEEPALIVE, &[])).map_err(|e| e.to_string())?;
    if let Some(n) = notification(s, Duration::from_secs(4))? {
        return Err(format!("{v:?}: treat-as-withdraw expected, got NOTIFICATION {n:?}"));
    }
    b.established(&name).map(|_| ())
}

fn bird_status(b: &bgpd::Bgpd) -> Result<Value, String> {
    b.established("bird")
}

#[test]
fn malformed_messages_get_the_required_notification() {
    if !testgate::require_root_and_cmds("malformed_messages_get_the_required_notification", &["ip", "bird", "birdc"]) {
        return;
    }
    bgpd::binary();
    let lab = Lab::new("malformed").expect("lab");
    let r = run(&lab);
    if let Err(e) = r {
        panic!("{e}\n{}", lab.logs(40));
    }
}

fn run(lab: &Lab) -> Result<(), String> {
    let nb = setup(lab.netns("bgpd"))?;
    let nbird = setup(lab.netns("bird"))?;
    let nraw = setup(lab.netns("raw"))?;
    setup(lab.veth(&nb, "veth0", &["10.255.1.1/24"], &nbird, "veth0", &["10.255.1.2/24"]))?;
    let raw_addrs: Vec<String> = VARIANTS.iter().map(|v| format!("{}/24", v.addr())).collect();
    let raw_refs: Vec<&str> = raw_addrs.iter().map(String::as_str).collect();
    setup(lab.veth(&nb, "veth1", &["10.255.2.1/24"], &nraw, "veth0", &raw_refs))?;
    // bgpd connects from the node's address (sourceAddress UseNodeIP).
    setup(nraw.route("10.255.1.0/24", "10.255.2.1"))?;

    let bird_cfg = bird::BirdConfig {
        router_id: "10.255.1.2".into(),
        routes4: vec!["10.100.1.0/24".into()],
        routes6: vec![],
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: "10.255.1.2".into(),
            local_as: 65001,
            neighbor: "10.255.1.1".into(),
            peer_as: BGPD_AS,
            ..Default::default()
        }],
        ..Default::default()
    };
    let _bird = setup(bird::Bird::start(lab, &nbird, "x", &bird_cfg))?;
    let mut peers = vec![bgpd::Peer::new("bird", "10.255.1.2", 65001)];
    for v in VARIANTS {
        peers.push(bgpd::Peer::new(&v.peer_name(), &v.addr().to_string(), RAW_AS));
    }
    let mut cfg = bgpd::Config::on_link(1, peers);
    cfg.ipv6 = None;
    let b = setup(bgpd::Bgpd::start(lab, &nb, "x", &cfg))?;
    wait_for("bgpd: BIRD Established", UP, || bird_status(&b))?;
    wait_for("bgpd: BIRD's route", UP, || b.has_route("bird", "10.100.1.0/24"))?;
    let before = bird_status(&b)?;
    let started = Instant::now();

    // All variants at once, each on its own session, from the raw namespace.
    let results: Vec<Result<(), String>> = std::thread::scope(|sc| {
        let handles: Vec<_> = VARIANTS
            .iter()
            .map(|&v| {
                let (nraw, b) = (&nraw, &b);
                sc.spawn(move || nraw.in_ns(|| run_variant(v, b)).unwrap_or_else(|e| Err(format!("setns: {e}"))))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("variant panicked".into()))).collect()
    });
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();

    // The BIRD session never went down.
    let after = bird_status(&b)?;
    let elapsed = started.elapsed().as_secs();
    let (up0, up1) = (before["uptime_secs"].as_u64().unwrap_or(0), after["uptime_secs"].as_u64().unwrap_or(0));
    let mut bird_problems = Vec::new();
    if after["flaps"] != before["flaps"] {
        bird_problems.push(format!("BIRD session flapped: flaps {} -> {}", before["flaps"], after["flaps"]));
    }
    if up1 + 1 < up0 + elapsed {
        bird_problems.push(format!("BIRD session uptime reset: {up0} s, then {up1} s after {elapsed} s"));
    }
    if let Err(e) = b.has_route("bird", "10.100.1.0/24") {
        bird_problems.push(format!("BIRD's route gone: {e}"));
    }
    let all: Vec<String> = failures.into_iter().chain(bird_problems).collect();
    if all.is_empty() {
        Ok(())
    } else {
        Err(all.join("\n"))
    }
}

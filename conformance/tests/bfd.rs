//! BFD (RFC 5880, 5881, 5883) between bgpd and BIRD 2 (`protocol bfd`) and
//! FRR (bfdd), with BGP on it (RFC 5882): single-hop over IPv4 and IPv6, and
//! multihop through a router. Each case:
//!
//! - the BFD session comes up, with the 300 ms x 3 both sides configured, as
//!   bgpd and the peer each show it;
//! - the peer's namespace (the router's, for multihop) goes silent
//!   (iptables drops everything, the links stay up): bgpd's BFD goes down and
//!   its BGP session closes with Cease / BFD Down and drops the peer's routes,
//!   well before the 9 s hold timer would;
//! - while BFD is down the BGP session stays down; when the path is back BFD
//!   comes up and BGP with it.
//!
//! And bgpd restarts with SIGTERM while BIRD and FRR run BFD with it: their
//! BFD sessions never leave Up (bgpd carries them across the restart), and
//! neither ends its BGP session for BFD.
//!
//! The BIRD IPv4 case also sends bgpd spoofed and malformed packets from the
//! peer's address (a Down with TTL 64, bad lengths, version 2, an unknown
//! discriminator): each is counted as discarded and the session stays Up.

use std::time::{Duration, Instant};

use bgpd_proto::bfd::{ControlPacket, Diag, State};
use conformance::lab::bgpd::{self, doc};
use conformance::lab::{bird, frr, holds_for, run_parallel, setup, wait_for, Lab, Ns};
use serde_json::Value;

const UP: Duration = Duration::from_secs(60);

/// The BFDConfiguration of the cases: every interface, 300 ms x 3, 1 s idle.
const BFD_CONFIG: &str = "apiVersion: projectcalico.org/v3\nkind: BFDConfiguration\nmetadata:\n  name: default\nspec:\n  nodeSelector: all()\n  interfaces:\n  - matchPattern: \"*\"\n    minimumRecvInterval: 300ms\n    minimumSendInterval: 300ms\n    idleSendInterval: 1s\n    multiplier: 3\n";

/// bgpd's datastore: node-1 (`v4`, `v6` addresses), a BFDConfiguration, and
/// one BGPPeer `name` at `peer_ip` with `bgpd.io/bfd: bfd`.
fn datastore(v4: &str, v6: Option<&str>, name: &str, peer_ip: &str, asn: u32, bfd: &str) -> String {
    let mut node = doc::node("node-1", v4, &[], None);
    if let Some(v6) = v6 {
        node.push_str(&format!("    ipv6Address: \"{v6}\"\n"));
    }
    let spec = format!("  peerIP: \"{peer_ip}\"\n  asNumber: {asn}\n  keepaliveTime: 3s\n");
    doc::stream(&[
        doc::bgp_configuration(64512),
        node,
        BFD_CONFIG.to_string(),
        doc::peer(name, &[("bgpd.io/bfd", bfd)], &spec),
    ])
}

/// Drops every packet in (and through) `ns`, links left up: a silent failure.
fn silence(ns: &Ns, on: bool) -> Result<(), String> {
    let op = if on { "-I" } else { "-D" };
    for tool in ["iptables", "ip6tables"] {
        for chain in ["INPUT", "OUTPUT", "FORWARD"] {
            ns.run(tool, &[op, chain, "-j", "DROP"]).map_err(|e| format!("{tool} {op} {chain}: {e}"))?;
        }
    }
    Ok(())
}

/// bgpd's BFD session with `peer`, once it is Up.
fn bfd_up(b: &bgpd::Bgpd, peer: &str) -> Result<Value, String> {
    let v = b.bfd()?;
    let s = v["sessions"][peer].clone();
    if s["state"] == "Up" {
        Ok(s)
    } else {
        Err(format!("bgpd's BFD session with {peer}: {s}"))
    }
}

fn diag(b: &bgpd::Bgpd, e: String) -> String {
    format!(
        "{e}\n--- bgpd show bfd ---\n{}\n--- bgpd show peers ---\n{}",
        b.show_text(&["bfd"]),
        b.show_text(&["peers"])
    )
}

/// The common drill once the sessions are up: the peer's side goes silent,
/// BFD takes BGP down before the hold timer; the path comes back, and both.
fn drill(lab: &Lab, b: &bgpd::Bgpd, peer: &str, silent: &Ns, route: &str) -> Result<(), String> {
    // Up first at the 1 s of a session not Up (RFC 5880 §6.8.3), then the
    // configured 300 ms once the Poll sequence that follows is done.
    let timers = format!("bgpd: BFD with {peer} Up at 300/300 ms, detection 900 ms");
    wait_for(&timers, UP, || {
        let s = bfd_up(b, peer)?;
        if s["tx_interval_ms"] == 300 && s["rx_interval_ms"] == 300 && s["detection_time_ms"] == 900 {
            Ok(())
        } else {
            Err(format!("have {s}"))
        }
    })
    .map_err(|e| diag(b, e))?;
    wait_for(&format!("bgpd: {route} from {peer}"), UP, || b.has_route(peer, route)).map_err(|e| diag(b, e))?;
    let _ = lab;
    let flaps = |b: &bgpd::Bgpd| b.bfd().map(|v| v["sessions"][peer]["flaps"].as_u64().unwrap_or(0));
    let before = flaps(b)?;
    silence(silent, true)?;
    let t0 = Instant::now();
    let gone = wait_for("bgpd: the peer's routes gone after BFD down", Duration::from_secs(8), || {
        match b.has_route(peer, route) {
            Ok(r) => Err(format!("still there: {r}")),
            Err(_) => Ok(()),
        }
    });
    let took = t0.elapsed();
    let held = gone.and_then(|()| {
        let p = b.peer(peer)?;
        if !p["last_error"].as_str().unwrap_or("").contains("BFD Down") {
            return Err(format!("the BGP session should have closed with Cease / BFD Down: {p}"));
        }
        // Well within the 9 s hold time: BFD, not the hold timer, took it down.
        if took >= Duration::from_secs(5) {
            return Err(format!("the routes went {took:?} after the failure: the hold timer, not BFD"));
        }
        holds_for("BGP stays down while BFD is down", Duration::from_secs(3), || b.not_established(peer))
    });
    silence(silent, false)?;
    held.map_err(|e| diag(b, e))?;
    wait_for(&format!("bgpd: BFD with {peer} Up again"), UP, || bfd_up(b, peer)).map_err(|e| diag(b, e))?;
    wait_for(&format!("bgpd: {peer} Established again"), UP, || b.established(peer)).map_err(|e| diag(b, e))?;
    wait_for(&format!("bgpd: {route} back"), UP, || b.has_route(peer, route)).map_err(|e| diag(b, e))?;
    let after = flaps(b)?;
    if after != before + 1 {
        return Err(format!("bgpd's BFD session should have flapped once in the drill, not {}", after - before));
    }
    Ok(())
}

/// BIRD's BFD timers: 300 ms x 3, single-hop and multihop alike.
const BIRD_BFD: bird::BirdBfdTimers =
    bird::BirdBfdTimers { min_rx_ms: 300, min_tx_ms: 300, idle_tx_ms: None, multiplier: 3 };

/// bfdd's profile `fast`: 300 ms x 3.
fn frr_bfdd() -> String {
    let t = frr::FrrBfdTimers { transmit_ms: 300, receive_ms: 300, detect_mult: 3 };
    frr::FrrBfdd { profiles: vec![("fast".into(), t)], ..Default::default() }.render()
}

fn bird_conf(
    router_id: &str,
    local: &str,
    neighbor: &str,
    routes4: &[&str],
    routes6: &[&str],
    multihop: Option<u8>,
) -> String {
    let cfg = bird::BirdConfig {
        router_id: router_id.into(),
        routes4: routes4.iter().map(|r| r.to_string()).collect(),
        routes6: routes6.iter().map(|r| r.to_string()).collect(),
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: local.into(),
            local_as: 65020,
            neighbor: neighbor.into(),
            peer_as: 64512,
            multihop,
            bfd: true,
            ..Default::default()
        }],
        bfd: Some(bird::BirdBfd {
            interfaces: vec![("*".into(), BIRD_BFD)],
            multihop: Some(BIRD_BFD),
            ..Default::default()
        }),
        ..Default::default()
    };
    cfg.render()
}

/// BIRD's `show bfd sessions` line for `addr`, once Up.
fn bird_bfd_up(bird: &bird::Bird, addr: &str) -> Result<String, String> {
    let out = bird.cmd(&["show", "bfd", "sessions"])?;
    match out.lines().find(|l| l.split_whitespace().next() == Some(addr)) {
        Some(l) if l.contains("Up") => Ok(l.to_string()),
        other => Err(format!("BIRD's BFD session with {addr}: {other:?}\n{out}")),
    }
}

fn bird_v4(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(15, &["bgpd", "bird"]))?;
    let yaml = datastore("10.255.15.1/24", None, "bird", "10.255.15.2", 65020, "true");
    let b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "bf4", "node-1", &yaml))?;
    let conf = bird_conf("10.255.15.2", "10.255.15.2", "10.255.15.1", &["10.100.150.0/24"], &[], None);
    let bird = setup(bird::Bird::start_conf(lab, &ns[1], "bf4", &conf))?;
    wait_for("bgpd: bird Established", UP, || b.established("bird"))?;
    let line = wait_for("BIRD: BFD with bgpd Up", UP, || bird_bfd_up(&bird, "10.255.15.1"))?;
    if !line.contains("0.300") {
        return Err(format!("BIRD should show the 300 ms interval: {line}"));
    }
    spoofed(&b, &ns[1], "bird", "10.255.15.2", "10.255.15.1")?;
    drill(lab, &b, "bird", &ns[1], "10.100.150.0/24")
}

/// From the peer's namespace and address, packets a session must not take:
/// a Down for the session with TTL 64 (a spoofer further away), a packet too
/// short, one whose Length is more than was sent, version 2, and an unknown
/// Your Discriminator. Each is counted as discarded, and the session stays Up.
fn spoofed(b: &bgpd::Bgpd, ns: &Ns, peer: &str, from: &str, to: &str) -> Result<(), String> {
    let s = wait_for("bgpd: BFD Up", UP, || bfd_up(b, peer))?;
    let (ours, theirs) =
        (s["local_discr"].as_u64().unwrap_or(0) as u32, s["remote_discr"].as_u64().unwrap_or(0) as u32);
    let flaps = s["flaps"].clone();
    let down = ControlPacket {
        diag: Diag::CONTROL_DETECTION_TIME_EXPIRED,
        state: State::Down,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discr: theirs,
        your_discr: ours,
        desired_min_tx: 300_000,
        required_min_rx: 300_000,
        required_min_echo_rx: 0,
    }
    .encode();
    let mut long = down;
    long[3] = 48;
    let mut v2 = down;
    v2[0] = (2 << 5) | (v2[0] & 0x1f);
    let unknown = ControlPacket { your_discr: ours.wrapping_add(1).max(1), ..ControlPacket::decode(&down).unwrap() };
    let sends: Vec<(Vec<u8>, u32)> = vec![
        (down.to_vec(), 64),
        (down[..20].to_vec(), 255),
        (long.to_vec(), 255),
        (v2.to_vec(), 255),
        (unknown.encode().to_vec(), 255),
    ];
    let (from, to) = (format!("{from}:49999"), format!("{to}:3784"));
    setup(ns.in_ns(move || -> std::io::Result<()> {
        let sock = std::net::UdpSocket::bind(&from)?;
        for (bytes, ttl) in &sends {
            sock.set_ttl(*ttl)?;
            sock.send_to(bytes, &to)?;
        }
        Ok(())
    }))
    .and_then(setup)?;
    let want = ["TTL is not 255", "bad length", "version is not 1", "your discriminator names no session"];
    wait_for("bgpd to count the spoofed and malformed packets", Duration::from_secs(5), || {
        let v = b.bfd()?;
        let d = &v["discarded"];
        let missing: Vec<&str> = want.iter().copied().filter(|w| d[*w].as_u64().unwrap_or(0) == 0).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("not counted: {missing:?}; discarded: {d}"))
        }
    })
    .map_err(|e| diag(b, e))?;
    holds_for("the BFD session stays Up through them", Duration::from_secs(2), || {
        let s = bfd_up(b, peer)?;
        if s["flaps"] == flaps {
            Ok(())
        } else {
            Err(format!("it flapped: {s}"))
        }
    })
    .map_err(|e| diag(b, e))
}

fn bird_v6(lab: &Lab) -> Result<(), String> {
    let (a, p) = setup(lab.pair(17))?;
    let yaml = datastore("10.255.17.1/24", Some("fd00:255:17::1/64"), "bird", "fd00:255:17::2", 65020, "true");
    let b = setup(bgpd::Bgpd::start_yaml(lab, &a, "bf6", "node-1", &yaml))?;
    let conf = bird_conf("10.255.17.2", "fd00:255:17::2", "fd00:255:17::1", &[], &["2001:db8:170::/48"], None);
    let bird = setup(bird::Bird::start_conf(lab, &p, "bf6", &conf))?;
    wait_for("bgpd: bird Established", UP, || b.established("bird"))?;
    wait_for("BIRD: BFD with bgpd Up", UP, || bird_bfd_up(&bird, "fd00:255:17::1"))?;
    drill(lab, &b, "bird", &p, "2001:db8:170::/48")
}

fn bird_multihop(lab: &Lab) -> Result<(), String> {
    let (a, r, p) = setup(lab.routed(18, 19))?;
    let yaml = datastore("10.255.18.1/24", None, "bird", "10.255.19.2", 65020, "multihop");
    let b = setup(bgpd::Bgpd::start_yaml(lab, &a, "bfm", "node-1", &yaml))?;
    let conf = bird_conf("10.255.19.2", "10.255.19.2", "10.255.18.1", &["10.100.190.0/24"], &[], Some(2));
    let bird = setup(bird::Bird::start_conf(lab, &p, "bfm", &conf))?;
    wait_for("bgpd: bird Established", UP, || b.established("bird"))?;
    wait_for("BIRD: multihop BFD with bgpd Up", UP, || bird_bfd_up(&bird, "10.255.18.1"))?;
    if b.bfd()?["sessions"]["bird"]["kind"] != "multihop" {
        return Err(format!("bgpd should run multihop BFD: {}", b.show_text(&["bfd"])));
    }
    // The router in between goes silent.
    drill(lab, &b, "bird", &r, "10.100.190.0/24")
}

/// FRR with bfdd: `neighbor X bfd profile fast` (bfdd's `profile fast`: 300 ms
/// x 3), as frr-k8s configures it. A `peer` block of its own would be a second
/// session: BGP's registration carries the interface, the block does not.
#[allow(clippy::too_many_arguments)]
fn frr_case(
    lab: &Lab,
    bgpd_ns: &Ns,
    frr_ns: &Ns,
    silent: &Ns,
    tag: &str,
    yaml: &str,
    frr_addr: &str,
    bgpd_addr: &str,
    multihop: bool,
    route: &str,
) -> Result<(), String> {
    let b = setup(bgpd::Bgpd::start_yaml(lab, bgpd_ns, tag, "node-1", yaml))?;
    let v6 = route.contains(':');
    let cfg = frr::FrrConfig {
        asn: 65021,
        router_id: "10.255.99.2".into(),
        routes4: if v6 { vec![] } else { vec![route.into()] },
        routes6: if v6 { vec![route.into()] } else { vec![] },
        neighbors: vec![frr::FrrNeighbor {
            addr: bgpd_addr.into(),
            remote_as: 64512,
            update_source: frr_addr.into(),
            ebgp_multihop: multihop.then_some(2),
            bfd_profile: Some("fast".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let frr = setup(frr::Frr::start_with_bfdd(lab, frr_ns, tag, &cfg.render(), &frr_bfdd()))?;
    wait_for("bgpd: frr Established", UP, || b.established("frr"))?;
    let peer = wait_for("FRR: BFD with bgpd up", UP, || {
        let v = frr.bfd_peer(bgpd_addr)?;
        if v["status"] == "up" {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })?;
    if peer["transmit-interval"] != 300 || peer["receive-interval"] != 300 {
        return Err(format!("FRR should show 300 ms both ways: {peer}"));
    }
    if peer["multihop"] != multihop {
        return Err(format!("FRR's session should be multihop: {multihop}: {peer}"));
    }
    let kind = if multihop { "multihop" } else { "single-hop" };
    if b.bfd()?["sessions"]["frr"]["kind"] != kind {
        return Err(format!("bgpd should run {kind} BFD: {}", b.show_text(&["bfd"])));
    }
    drill(lab, &b, "frr", silent, route)
}

fn frr_v4(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(16, &["bgpd", "frr"]))?;
    let yaml = datastore("10.255.16.1/24", None, "frr", "10.255.16.2", 65021, "true");
    frr_case(lab, &ns[0], &ns[1], &ns[1], "bff", &yaml, "10.255.16.2", "10.255.16.1", false, "10.100.160.0/24")
}

fn frr_v6(lab: &Lab) -> Result<(), String> {
    let (a, p) = setup(lab.pair(20))?;
    let yaml = datastore("10.255.20.1/24", Some("fd00:255:20::1/64"), "frr", "fd00:255:20::2", 65021, "true");
    frr_case(lab, &a, &p, &p, "bf6f", &yaml, "fd00:255:20::2", "fd00:255:20::1", false, "2001:db8:200::/48")
}

fn frr_multihop(lab: &Lab) -> Result<(), String> {
    let (a, r, p) = setup(lab.routed(21, 22))?;
    let yaml = datastore("10.255.21.1/24", None, "frr", "10.255.22.2", 65021, "multihop");
    frr_case(lab, &a, &p, &r, "bfmf", &yaml, "10.255.22.2", "10.255.21.1", true, "10.100.220.0/24")
}

/// bgpd restarts with SIGTERM (a rolling upgrade) while BIRD and FRR run BFD
/// with it: the sessions are carried over (slowed down, then resumed with the
/// same discriminators), so neither peer's BFD leaves Up and neither ends its
/// BGP session for BFD; both keep bgpd's session as graceful restart says.
fn restart_keeps_bfd(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(23, &["bgpd", "bird", "frr"]))?;
    let spec = |ip: &str, asn: u32| format!("  peerIP: \"{ip}\"\n  asNumber: {asn}\n  keepaliveTime: 3s\n");
    let yaml = doc::stream(&[
        doc::bgp_configuration(64512),
        doc::node("node-1", "10.255.23.1/24", &[], None),
        BFD_CONFIG.to_string(),
        doc::peer("bird", &[], &spec("10.255.23.2", 65020)),
        doc::peer("frr", &[], &spec("10.255.23.3", 65021)),
    ]);
    let mut b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "bfr", "node-1", &yaml))?;
    let bird_text = bird_conf("10.255.23.2", "10.255.23.2", "10.255.23.1", &["10.100.230.0/24"], &[], None);
    let bird = setup(bird::Bird::start_conf(lab, &ns[1], "bfr", &bird_text))?;
    let cfg = frr::FrrConfig {
        asn: 65021,
        router_id: "10.255.23.3".into(),
        routes4: vec!["10.100.231.0/24".into()],
        routes6: vec![],
        neighbors: vec![frr::FrrNeighbor {
            addr: "10.255.23.1".into(),
            remote_as: 64512,
            update_source: "10.255.23.3".into(),
            bfd_profile: Some("fast".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let frr = setup(frr::Frr::start_with_bfdd(lab, &ns[2], "bfr", &cfg.render(), &frr_bfdd()))?;
    let frr_up = || {
        let v = frr.bfd_peer("10.255.23.1")?;
        if v["status"] == "up" {
            Ok(v)
        } else {
            Err(format!("FRR's BFD session with bgpd: {v}"))
        }
    };
    let peers_up = || -> Result<(), String> {
        bird_bfd_up(&bird, "10.255.23.1")?;
        frr_up().map(|_| ())
    };
    for p in ["bird", "frr"] {
        wait_for(&format!("bgpd: {p} Established"), UP, || b.established(p))?;
    }
    let discr = |b: &bgpd::Bgpd| -> Result<(Value, Value), String> {
        let v = b.bfd()?;
        Ok((v["sessions"]["bird"]["local_discr"].clone(), v["sessions"]["frr"]["local_discr"].clone()))
    };
    let before = wait_for("bgpd: BFD Up with both at 300 ms", UP, || {
        let v = b.bfd()?;
        for p in ["bird", "frr"] {
            if v["sessions"][p]["state"] != "Up" || v["sessions"][p]["detection_time_ms"] != 900 {
                return Err(format!("{p}: {}", v["sessions"][p]));
            }
        }
        discr(&b)
    })
    .map_err(|e| diag(&b, e))?;
    wait_for("BIRD and FRR: BFD Up", UP, peers_up)?;
    let uptime = frr_up()?["uptime"].as_u64().unwrap_or(0);

    setup(b.restart(lab))?;
    // Through the restart and after it, neither peer's BFD leaves Up.
    let held = holds_for("BIRD's and FRR's BFD stay Up through bgpd's restart", Duration::from_secs(8), peers_up);
    let resumed = wait_for("bgpd: the same BFD sessions, Up again at 300 ms", UP, || {
        let v = b.bfd()?;
        let now = discr(&b)?;
        let fast = ["bird", "frr"].iter().all(|p| v["sessions"][p]["detection_time_ms"] == 900);
        if now == before && fast {
            Ok(())
        } else {
            Err(format!("before {before:?}, now {v}"))
        }
    });
    held.and(resumed).map_err(|e| diag(&b, e))?;
    let after = frr_up()?["uptime"].as_u64().unwrap_or(0);
    if after < uptime {
        return Err(format!("FRR's BFD session restarted: uptime {uptime} s before, {after} s after"));
    }
    for p in ["bird", "frr"] {
        wait_for(&format!("bgpd: {p} Established again"), UP, || b.established(p))?;
    }
    let p = bird.protocol("bgpd")?;
    if p.contains("BFD session down") {
        return Err(format!("BIRD ended its BGP session for BFD: {p}"));
    }
    let n = frr.neighbor("10.255.23.1")?;
    if n["lastResetDueTo"].as_str().is_some_and(|r| r.contains("BFD")) {
        return Err(format!("FRR ended its BGP session for BFD: {}", n["lastResetDueTo"]));
    }
    Ok(())
}

fn prerequisites_met(test: &str) -> bool {
    let programs = ["ip", "iptables", "ip6tables", "bird", "birdc", "vtysh", "/usr/lib/frr/bfdd", "/usr/lib/frr/bgpd"];
    let ok = testgate::require_root_and_cmds(test, &programs);
    if ok {
        bgpd::binary();
    }
    ok
}

#[test]
fn bfd_with_bird_and_frr() {
    if prerequisites_met("bfd_with_bird_and_frr") {
        run_parallel(vec![
            ("BIRD single-hop IPv4: up, silent failure, BGP down at once, back".into(), Box::new(bird_v4)),
            ("BIRD single-hop IPv6".into(), Box::new(bird_v6)),
            ("BIRD multihop through a router".into(), Box::new(bird_multihop)),
            ("FRR bfdd single-hop IPv4".into(), Box::new(frr_v4)),
            ("FRR bfdd single-hop IPv6".into(), Box::new(frr_v6)),
            ("FRR bfdd multihop through a router".into(), Box::new(frr_multihop)),
            ("BIRD and FRR: BFD carried across bgpd's SIGTERM restart".into(), Box::new(restart_keeps_bfd)),
        ]);
    }
}

//! GTSM (RFC 5082, `ttlSecurity`): with BIRD (`ttl security on`) and FRR
//! (`ttl-security hops`), a directly connected peer comes up; a peer one
//! hop further away (through a forwarding router namespace) is refused by
//! bgpd when `ttlSecurity: 1`, although the peer itself would accept the
//! session (it allows 2 hops); with `ttlSecurity: 2` the same routed peer
//! comes up, which shows the refusal is GTSM's and not the topology's.

use std::time::Duration;

use conformance::lab::{bgpd, bird, frr, holds_for, run_parallel, setup, wait_for, Case, Lab, Ns};

const UP: Duration = Duration::from_secs(60);
const NEVER: Duration = Duration::from_secs(15);
const PEER_AS: u32 = 65200;

/// Where the peer is: on bgpd's link `n`, or behind a router on link `m`.
#[derive(Clone, Copy)]
enum Place {
    OneHop { n: u8 },
    TwoHops { n: u8, m: u8 },
}

impl Place {
    fn bgpd_addr(self) -> String {
        match self {
            Place::OneHop { n } | Place::TwoHops { n, .. } => format!("10.255.{n}.1"),
        }
    }
    fn peer_addr(self) -> String {
        match self {
            Place::OneHop { n } => format!("10.255.{n}.2"),
            Place::TwoHops { m, .. } => format!("10.255.{m}.2"),
        }
    }
    fn hops(self) -> u8 {
        match self {
            Place::OneHop { .. } => 1,
            Place::TwoHops { .. } => 2,
        }
    }
}

/// The namespaces and a bgpd with `ttlSecurity: ttl` towards the peer.
fn setup_bgpd(lab: &Lab, place: Place, ttl: u8) -> Result<(bgpd::Bgpd, Ns), String> {
    let (nb, np, n) = match place {
        Place::OneHop { n } => {
            let (a, b) = setup(lab.pair(n))?;
            (a, b, n)
        }
        Place::TwoHops { n, m } => {
            let (a, _router, b) = setup(lab.routed(n, m))?;
            (a, b, n)
        }
    };
    let mut peer = bgpd::Peer::new("peer", &place.peer_addr(), PEER_AS);
    peer.ttl_security = Some(ttl);
    let b = setup(bgpd::Bgpd::start(lab, &nb, "g", &bgpd::Config::on_link(n, vec![peer])))?;
    Ok((b, np))
}

fn bird_peer(lab: &Lab, np: &Ns, place: Place, passive: bool) -> Result<bird::Bird, String> {
    let cfg = bird::BirdConfig {
        router_id: place.peer_addr(),
        routes4: vec![],
        routes6: vec![],
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: place.peer_addr(),
            local_as: PEER_AS,
            neighbor: place.bgpd_addr(),
            peer_as: 64512,
            ttl_security: true,
            multihop: (place.hops() > 1).then_some(place.hops()),
            passive,
            ..Default::default()
        }],
        ..Default::default()
    };
    setup(bird::Bird::start(lab, np, "g", &cfg))
}

fn frr_peer(lab: &Lab, np: &Ns, place: Place, passive: bool) -> Result<frr::Frr, String> {
    let cfg = frr::FrrConfig {
        asn: PEER_AS,
        router_id: place.peer_addr(),
        routes4: vec![],
        routes6: vec![],
        neighbors: vec![frr::FrrNeighbor {
            addr: place.bgpd_addr(),
            remote_as: 64512,
            update_source: place.peer_addr(),
            ttl_security_hops: Some(place.hops()),
            passive,
            password: None,
            ..Default::default()
        }],
        ..Default::default()
    };
    setup(frr::Frr::start(lab, np, "g", &cfg))
}

fn up(b: &bgpd::Bgpd, peer_up: impl Fn() -> Result<(), String>) -> Result<(), String> {
    wait_for("peer side Established", UP, &peer_up)?;
    wait_for("bgpd Established", UP, || b.established("peer")).map(|_| ())
}

fn never_up(b: &bgpd::Bgpd, peer_up: impl Fn() -> Result<(), String>) -> Result<(), String> {
    holds_for("session not Established", NEVER, || {
        b.not_established("peer")?;
        match peer_up() {
            Ok(()) => Err("the peer reports the session Established".into()),
            Err(_) => Ok(()),
        }
    })
}

#[test]
fn gtsm_one_hop_up_two_hops_refused() {
    if !testgate::require_root_and_cmds(
        "gtsm_one_hop_up_two_hops_refused",
        &["ip", "sysctl", "bird", "birdc", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra"],
    ) {
        return;
    }
    bgpd::binary();
    let cases: Vec<Case> = vec![
        (
            "BIRD one hop, ttlSecurity 1: up".into(),
            Box::new(|lab| {
                let place = Place::OneHop { n: 1 };
                let (b, np) = setup_bgpd(lab, place, 1)?;
                let p = bird_peer(lab, &np, place, false)?;
                up(&b, || p.established("bgpd").map(|_| ()))
            }),
        ),
        (
            "FRR one hop, ttlSecurity 1: up".into(),
            Box::new(|lab| {
                let place = Place::OneHop { n: 2 };
                let (b, np) = setup_bgpd(lab, place, 1)?;
                let p = frr_peer(lab, &np, place, false)?;
                up(&b, || p.established(&place.bgpd_addr()).map(|_| ()))
            }),
        ),
        (
            "BIRD two hops (passive), ttlSecurity 1: bgpd's connection refused".into(),
            Box::new(|lab| {
                let place = Place::TwoHops { n: 3, m: 13 };
                let (b, np) = setup_bgpd(lab, place, 1)?;
                let p = bird_peer(lab, &np, place, true)?;
                never_up(&b, || p.established("bgpd").map(|_| ()))
            }),
        ),
        (
            "FRR two hops (passive), ttlSecurity 1: bgpd's connection refused".into(),
            Box::new(|lab| {
                let place = Place::TwoHops { n: 4, m: 14 };
                let (b, np) = setup_bgpd(lab, place, 1)?;
                let p = frr_peer(lab, &np, place, true)?;
                never_up(&b, || p.established(&place.bgpd_addr()).map(|_| ()))
            }),
        ),
        (
            "BIRD two hops, ttlSecurity 2: up (control)".into(),
            Box::new(|lab| {
                let place = Place::TwoHops { n: 5, m: 15 };
                let (b, np) = setup_bgpd(lab, place, 2)?;
                let p = bird_peer(lab, &np, place, false)?;
                up(&b, || p.established("bgpd").map(|_| ()))
            }),
        ),
        (
            "FRR two hops, ttlSecurity 2: up (control)".into(),
            Box::new(|lab| {
                let place = Place::TwoHops { n: 6, m: 16 };
                let (b, np) = setup_bgpd(lab, place, 2)?;
                let p = frr_peer(lab, &np, place, false)?;
                up(&b, || p.established(&place.bgpd_addr()).map(|_| ()))
            }),
        ),
    ];
    run_parallel(cases);
}

/// The incoming direction: BIRD, two hops away, connects to bgpd's
/// listener. bgpd must drop its segments (TTL 254 < 255) before reading its
/// OPEN; instead the listener accepts the connection, GTSM is applied only
/// after accept, so BIRD's OPEN (already queued) is processed, bgpd answers
/// with OPEN and KEEPALIVE, and BIRD reports the session Established.
#[test]

fn gtsm_incoming_from_two_hops_refused() {
    if !testgate::require_root_and_cmds("gtsm_incoming_from_two_hops_refused", &["ip", "sysctl", "bird", "birdc"]) {
        return;
    }
    bgpd::binary();
    let cases: Vec<Case> = vec![(
        "BIRD two hops (connecting), ttlSecurity 1: refused".into(),
        Box::new(|lab| {
            let place = Place::TwoHops { n: 7, m: 17 };
            let (b, np) = setup_bgpd(lab, place, 1)?;
            let p = bird_peer(lab, &np, place, false)?;
            never_up(&b, || p.established("bgpd").map(|_| ()))
        }),
    )];
    run_parallel(cases);
}

//! TCP MD5 (RFC 2385): with the right password bgpd reaches Established
//! with BIRD, FRR and GoBGP; with a wrong or missing password it never does,
//! and `bgpd show peers` explains why (the connect timed out, and with a
//! password set, MD5 keys may differ).
//!
//! A session that never comes up proves nothing by itself (a peer that never
//! connects passes too), so each negative case also reads the kernel's TCP
//! MD5 drop counters (`TcpExt` in `/proc/net/netstat`, per namespace): the
//! peer's SYNs reached bgpd's namespace and were dropped there for the
//! mismatch, and bgpd's SYNs were dropped in the peer's namespace.

use std::time::Duration;

use conformance::lab::{bgpd, bird, frr, gobgp, holds_for, run_parallel, setup, wait_for, Case, Lab, Ns};

const UP: Duration = Duration::from_secs(60);
/// How long a session with mismatched keys is watched for not coming up.
const NEVER: Duration = Duration::from_secs(15);
const PEER_AS: u32 = 65100;

/// bgpd on link `n` with `password` for its peer: (bgpd, bgpd's namespace, the peer's namespace).
fn bgpd_with(lab: &Lab, n: u8, password: Option<&str>) -> Result<(bgpd::Bgpd, Ns, Ns), String> {
    let (nb, np) = setup(lab.pair(n))?;
    let mut peer = bgpd::Peer::new("peer", &format!("10.255.{n}.2"), PEER_AS);
    peer.password = password.map(String::from);
    let b = setup(bgpd::Bgpd::start(lab, &nb, "m", &bgpd::Config::on_link(n, vec![peer])))?;
    Ok((b, nb, np))
}

fn bird_cfg(n: u8, password: Option<&str>) -> bird::BirdConfig {
    bird::BirdConfig {
        router_id: format!("10.255.{n}.2"),
        routes4: vec![],
        routes6: vec![],
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: format!("10.255.{n}.2"),
            local_as: PEER_AS,
            neighbor: format!("10.255.{n}.1"),
            peer_as: 64512,
            password: password.map(String::from),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn frr_cfg(n: u8, password: Option<&str>) -> frr::FrrConfig {
    frr::FrrConfig {
        asn: PEER_AS,
        router_id: format!("10.255.{n}.2"),
        routes4: vec![],
        routes6: vec![],
        neighbors: vec![frr::FrrNeighbor {
            addr: format!("10.255.{n}.1"),
            remote_as: 64512,
            update_source: format!("10.255.{n}.2"),
            password: password.map(String::from),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn gobgp_cfg(n: u8, password: Option<&str>) -> gobgp::Config {
    gobgp::Config {
        asn: PEER_AS,
        router_id: format!("10.255.{n}.2"),
        listen: vec![format!("10.255.{n}.2")],
        neighbors: vec![gobgp::Neighbor {
            addr: format!("10.255.{n}.1"),
            peer_as: 64512,
            local_address: format!("10.255.{n}.2"),
            password: password.map(String::from),
        }],
    }
}

/// Why the kernel drops a SYN of a TCP MD5 mismatch (RFC 2385 §3.2: "the
/// receiver MUST drop the segment"), as counted in `TcpExt`.
#[derive(Clone, Copy, Debug)]
enum Md5Drop {
    /// No digest, but the receiver has a key for the sender.
    NotFound,
    /// A digest, but the receiver has no key for the sender.
    Unexpected,
    /// A digest made with another key.
    Failure,
}

impl Md5Drop {
    fn counter(self) -> &'static str {
        match self {
            Md5Drop::NotFound => "TCPMD5NotFound",
            Md5Drop::Unexpected => "TCPMD5Unexpected",
            Md5Drop::Failure => "TCPMD5Failure",
        }
    }
}

/// The value of `TcpExt` counter `name` in `ns`'s `/proc/net/netstat` (a
/// header line of names, then a line of values).
fn tcp_ext(ns: &Ns, name: &str) -> Result<u64, String> {
    let text = ns.run("cat", &["/proc/net/netstat"]).map_err(|e| format!("/proc/net/netstat in {}: {e}", ns.name()))?;
    let mut rows = text.lines().filter_map(|l| l.strip_prefix("TcpExt:"));
    let (names, values) = rows.next().zip(rows.next()).ok_or_else(|| format!("no TcpExt rows: {text}"))?;
    let value = names.split_whitespace().zip(values.split_whitespace()).find(|(n, _)| *n == name);
    value.and_then(|(_, v)| v.parse().ok()).ok_or_else(|| format!("no TcpExt counter {name}: {names}"))
}

/// Neither side comes up for [`NEVER`], and not for want of trying: the
/// kernel in bgpd's namespace dropped the peer's SYNs as `at_bgpd` says, and
/// the kernel in the peer's namespace dropped bgpd's as `at_peer` says.
fn never_up(
    b: &bgpd::Bgpd,
    (nb, np): (&Ns, &Ns),
    (at_bgpd, at_peer): (Md5Drop, Md5Drop),
    peer_up: impl Fn() -> bool,
) -> Result<(), String> {
    holds_for("session not Established", NEVER, || {
        b.not_established("peer")?;
        if peer_up() {
            return Err("the peer reports the session Established".into());
        }
        Ok(())
    })?;
    for (ns, who, why) in
        [(nb, "the peer's SYNs, in bgpd's namespace", at_bgpd), (np, "bgpd's SYNs, in the peer's", at_peer)]
    {
        wait_for(&format!("{who}: dropped for TCP MD5 ({})", why.counter()), UP, || {
            match tcp_ext(ns, why.counter())? {
                0 => Err(format!("{} is 0", why.counter())),
                n => Ok(n),
            }
        })?;
    }
    Ok(())
}

/// bgpd's `last_failure` says the connection attempt got no answer and
/// names MD5 (bgpd has a key), within [`NEVER`].
fn explains_md5(b: &bgpd::Bgpd) -> Result<(), String> {
    // A first attempt may be refused outright while the peer starts; the
    // explanation comes with the first attempt that gets no answer at all,
    // one or two ConnectRetry periods (5 s) later.
    wait_for("last_failure naming MD5", UP, || {
        let p = b.peer("peer")?;
        let why = p["last_failure"].as_str().unwrap_or_default().to_string();
        if why.contains("no answer") && why.contains("MD5") {
            Ok(())
        } else {
            Err(format!("last_failure is {why:?}"))
        }
    })
}

#[test]
fn md5_right_password_up_wrong_or_missing_never() {
    if !testgate::require_root_and_cmds(
        "md5_right_password_up_wrong_or_missing_never",
        &["ip", "bird", "birdc", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "gobgpd", "gobgp", "unshare"],
    ) {
        return;
    }
    bgpd::binary();
    let cases: Vec<Case> = vec![
        (
            "BIRD, same password".into(),
            Box::new(|lab| {
                let (b, _, np) = bgpd_with(lab, 1, Some("s3cret"))?;
                let peer = setup(bird::Bird::start(lab, &np, "m", &bird_cfg(1, Some("s3cret"))))?;
                wait_for("BIRD Established", UP, || peer.established("bgpd"))?;
                wait_for("bgpd Established", UP, || b.established("peer")).map(|_| ())
            }),
        ),
        (
            "FRR, same password".into(),
            Box::new(|lab| {
                let (b, _, np) = bgpd_with(lab, 2, Some("s3cret"))?;
                let peer = setup(frr::Frr::start(lab, &np, "m", &frr_cfg(2, Some("s3cret"))))?;
                wait_for("FRR Established", UP, || peer.established("10.255.2.1"))?;
                wait_for("bgpd Established", UP, || b.established("peer")).map(|_| ())
            }),
        ),
        (
            "GoBGP, same password".into(),
            Box::new(|lab| {
                let (b, _, np) = bgpd_with(lab, 3, Some("s3cret"))?;
                let peer = setup(gobgp::Gobgp::start(lab, &np, "m", &gobgp_cfg(3, Some("s3cret"))))?;
                wait_for("GoBGP established", UP, || peer.established("10.255.3.1"))?;
                wait_for("bgpd Established", UP, || b.established("peer")).map(|_| ())
            }),
        ),
        (
            "BIRD, wrong password".into(),
            Box::new(|lab| {
                let (b, nb, np) = bgpd_with(lab, 4, Some("s3cret"))?;
                let peer = setup(bird::Bird::start(lab, &np, "m", &bird_cfg(4, Some("wrong"))))?;
                never_up(&b, (&nb, &np), (Md5Drop::Failure, Md5Drop::Failure), || peer.established("bgpd").is_ok())
            }),
        ),
        (
            "FRR, no password (bgpd has one)".into(),
            Box::new(|lab| {
                let (b, nb, np) = bgpd_with(lab, 5, Some("s3cret"))?;
                let peer = setup(frr::Frr::start(lab, &np, "m", &frr_cfg(5, None)))?;
                let drops = (Md5Drop::NotFound, Md5Drop::Unexpected);
                never_up(&b, (&nb, &np), drops, || peer.established("10.255.5.1").is_ok())
            }),
        ),
        (
            "GoBGP has a password, bgpd none".into(),
            Box::new(|lab| {
                let (b, nb, np) = bgpd_with(lab, 6, None)?;
                let peer = setup(gobgp::Gobgp::start(lab, &np, "m", &gobgp_cfg(6, Some("s3cret"))))?;
                let drops = (Md5Drop::Unexpected, Md5Drop::NotFound);
                never_up(&b, (&nb, &np), drops, || peer.established("10.255.6.1").is_ok())
            }),
        ),
    ];
    run_parallel(cases);
}

/// What an operator sees when the keys differ: the SYNs are dropped by the
/// kernel, so the only clue is bgpd's `last_failure`.
#[test]

fn md5_mismatch_explained_in_last_failure() {
    if !testgate::require_root_and_cmds(
        "md5_mismatch_explained_in_last_failure",
        &["ip", "bird", "birdc", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra"],
    ) {
        return;
    }
    bgpd::binary();
    let cases: Vec<Case> = vec![
        (
            "BIRD, wrong password: last_failure".into(),
            Box::new(|lab| {
                let (b, _, np) = bgpd_with(lab, 7, Some("s3cret"))?;
                let _peer = setup(bird::Bird::start(lab, &np, "m", &bird_cfg(7, Some("wrong"))))?;
                explains_md5(&b)
            }),
        ),
        (
            "FRR, no password: last_failure".into(),
            Box::new(|lab| {
                let (b, _, np) = bgpd_with(lab, 8, Some("s3cret"))?;
                let _peer = setup(frr::Frr::start(lab, &np, "m", &frr_cfg(8, None)))?;
                explains_md5(&b)
            }),
        ),
    ];
    run_parallel(cases);
}

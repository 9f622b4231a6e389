//! TCP MD5 (RFC 2385): with the right password bgpd reaches Established
//! with BIRD, FRR and GoBGP; with a wrong or missing password it never does,
//! and `bgpd show peers` explains why (the connect timed out, and with a
//! password set, MD5 keys may differ).

use std::time::Duration;

use conformance::lab::{bgpd, bird, frr, gobgp, holds_for, prerequisites, run_parallel, setup, wait_for, Case, Lab};

const UP: Duration = Duration::from_secs(60);
/// How long a session with mismatched keys is watched for not coming up.
const NEVER: Duration = Duration::from_secs(15);
const PEER_AS: u32 = 65100;

fn bgpd_with(lab: &Lab, n: u8, password: Option<&str>) -> Result<(bgpd::Bgpd, conformance::lab::Ns), String> {
    let (nb, np) = setup(lab.pair(n))?;
    let mut peer = bgpd::Peer::new("peer", &format!("10.255.{n}.2"), PEER_AS);
    peer.password = password.map(String::from);
    let b = setup(bgpd::Bgpd::start(lab, &nb, "m", &bgpd::Config::on_link(n, vec![peer])))?;
    Ok((b, np))
}

fn bird_cfg(n: u8, password: Option<&str>) -> bird::Config {
    bird::Config {
        router_id: format!("10.255.{n}.2"),
        routes4: vec![],
        routes6: vec![],
        sessions: vec![bird::Session {
            name: "bgpd".into(),
            local: format!("10.255.{n}.2"),
            local_as: PEER_AS,
            neighbor: format!("10.255.{n}.1"),
            peer_as: 64512,
            password: password.map(String::from),
            ..Default::default()
        }],
    }
}

fn frr_cfg(n: u8, password: Option<&str>) -> frr::Config {
    frr::Config {
        asn: PEER_AS,
        router_id: format!("10.255.{n}.2"),
        routes4: vec![],
        routes6: vec![],
        neighbors: vec![frr::Neighbor {
            addr: format!("10.255.{n}.1"),
            remote_as: 64512,
            update_source: format!("10.255.{n}.2"),
            password: password.map(String::from),
            ..Default::default()
        }],
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

/// Neither side comes up for [`NEVER`].
fn never_up(b: &bgpd::Bgpd, peer_up: impl Fn() -> bool) -> Result<(), String> {
    holds_for("session not Established", NEVER, || {
        b.not_established("peer")?;
        if peer_up() {
            return Err("the peer reports the session Established".into());
        }
        Ok(())
    })
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
    if !prerequisites(
        "md5",
        &["ip", "bird", "birdc", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "gobgpd", "gobgp", "unshare"],
    ) {
        return;
    }
    bgpd::binary();
    let cases: Vec<Case> = vec![
        (
            "BIRD, same password".into(),
            Box::new(|lab| {
                let (b, np) = bgpd_with(lab, 1, Some("s3cret"))?;
                let peer = setup(bird::Bird::start(lab, &np, "m", &bird_cfg(1, Some("s3cret"))))?;
                wait_for("BIRD Established", UP, || peer.established("bgpd"))?;
                wait_for("bgpd Established", UP, || b.established("peer")).map(|_| ())
            }),
        ),
        (
            "FRR, same password".into(),
            Box::new(|lab| {
                let (b, np) = bgpd_with(lab, 2, Some("s3cret"))?;
                let peer = setup(frr::Frr::start(lab, &np, "m", &frr_cfg(2, Some("s3cret"))))?;
                wait_for("FRR Established", UP, || peer.established("10.255.2.1"))?;
                wait_for("bgpd Established", UP, || b.established("peer")).map(|_| ())
            }),
        ),
        (
            "GoBGP, same password".into(),
            Box::new(|lab| {
                let (b, np) = bgpd_with(lab, 3, Some("s3cret"))?;
                let peer = setup(gobgp::Gobgp::start(lab, &np, "m", &gobgp_cfg(3, Some("s3cret"))))?;
                wait_for("GoBGP established", UP, || peer.established("10.255.3.1"))?;
                wait_for("bgpd Established", UP, || b.established("peer")).map(|_| ())
            }),
        ),
        (
            "BIRD, wrong password".into(),
            Box::new(|lab| {
                let (b, np) = bgpd_with(lab, 4, Some("s3cret"))?;
                let peer = setup(bird::Bird::start(lab, &np, "m", &bird_cfg(4, Some("wrong"))))?;
                never_up(&b, || peer.established("bgpd").is_ok())
            }),
        ),
        (
            "FRR, no password (bgpd has one)".into(),
            Box::new(|lab| {
                let (b, np) = bgpd_with(lab, 5, Some("s3cret"))?;
                let peer = setup(frr::Frr::start(lab, &np, "m", &frr_cfg(5, None)))?;
                never_up(&b, || peer.established("10.255.5.1").is_ok())
            }),
        ),
        (
            "GoBGP has a password, bgpd none".into(),
            Box::new(|lab| {
                let (b, np) = bgpd_with(lab, 6, None)?;
                let peer = setup(gobgp::Gobgp::start(lab, &np, "m", &gobgp_cfg(6, Some("s3cret"))))?;
                never_up(&b, || peer.established("10.255.6.1").is_ok())
            }),
        ),
    ];
    run_parallel(cases);
}

/// What an operator sees when the keys differ: the SYNs are dropped by the
/// kernel, so the only clue is bgpd's `last_failure`.
#[test]

fn md5_mismatch_explained_in_last_failure() {
    if !prerequisites("md5", &["ip", "bird", "birdc", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra"]) {
        return;
    }
    bgpd::binary();
    let cases: Vec<Case> = vec![
        (
            "BIRD, wrong password: last_failure".into(),
            Box::new(|lab| {
                let (b, np) = bgpd_with(lab, 7, Some("s3cret"))?;
                let _peer = setup(bird::Bird::start(lab, &np, "m", &bird_cfg(7, Some("wrong"))))?;
                explains_md5(&b)
            }),
        ),
        (
            "FRR, no password: last_failure".into(),
            Box::new(|lab| {
                let (b, np) = bgpd_with(lab, 8, Some("s3cret"))?;
                let _peer = setup(frr::Frr::start(lab, &np, "m", &frr_cfg(8, None)))?;
                explains_md5(&b)
            }),
        ),
    ];
    run_parallel(cases);
}

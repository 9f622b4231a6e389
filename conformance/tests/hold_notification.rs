//! Hold timer (RFC 4271 §6.5) and NOTIFICATIONs from peers:
//! - a peer frozen with SIGSTOP is declared down once the hold time (9 s)
//!   passes, with `last_error` "sent: Hold Timer Expired" and code [4, 0],
//!   and the session comes back (with the peer's routes) after SIGCONT;
//! - a Cease / Administrative Shutdown with a shutdown communication
//!   (RFC 9003) from BIRD (`birdc disable`) and FRR (`neighbor … shutdown
//!   message`) shows up decoded in `last_error`: code, subcode and message.

use std::time::Duration;

use conformance::lab::{bgpd, bird, frr, run_parallel, setup, wait_for, Case, Lab, Ns};
use serde_json::Value;

const UP: Duration = Duration::from_secs(60);
const PEER_AS: u32 = 65300;

fn bgpd_on(lab: &Lab, n: u8) -> Result<(bgpd::Bgpd, Ns), String> {
    let (nb, np) = setup(lab.pair(n))?;
    let peer = bgpd::Peer::new("peer", &format!("10.255.{n}.2"), PEER_AS);
    let b = setup(bgpd::Bgpd::start(lab, &nb, "h", &bgpd::Config::on_link(n, vec![peer])))?;
    Ok((b, np))
}

fn bird_on(lab: &Lab, np: &Ns, n: u8) -> Result<bird::Bird, String> {
    let cfg = bird::BirdConfig {
        router_id: format!("10.255.{n}.2"),
        routes4: vec![format!("10.100.{n}.0/24")],
        routes6: vec![],
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: format!("10.255.{n}.2"),
            local_as: PEER_AS,
            neighbor: format!("10.255.{n}.1"),
            peer_as: 64512,
            ..Default::default()
        }],
        ..Default::default()
    };
    setup(bird::Bird::start(lab, np, "h", &cfg))
}

/// Waits until bgpd's `last_error` for the peer is `want_code` and its text
/// contains every string of `want_text`; returns the peer's status.
fn wait_last_error(b: &bgpd::Bgpd, want_code: [u64; 2], want_text: &[&str]) -> Result<Value, String> {
    wait_for(&format!("last_error {want_code:?} {want_text:?}"), UP, || {
        let p = b.peer("peer")?;
        let code: Vec<u64> = p["last_error_code"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
        let text = p["last_error"].as_str().unwrap_or_default();
        if code == want_code && want_text.iter().all(|t| text.contains(t)) && p["state"] != "Established" {
            Ok(p)
        } else {
            Err(format!("state {}, last_error {:?}, last_error_code {:?}", p["state"], text, code))
        }
    })
}

#[test]
fn hold_timer_expiry_and_peer_notifications() {
    if !testgate::require_root_and_cmds(
        "hold_timer_expiry_and_peer_notifications",
        &["ip", "kill", "bird", "birdc", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra"],
    ) {
        return;
    }
    bgpd::binary();
    let cases: Vec<Case> = vec![
        (
            "BIRD frozen (SIGSTOP): Hold Timer Expired, back after SIGCONT".into(),
            Box::new(|lab| {
                let (b, np) = bgpd_on(lab, 1)?;
                let peer = bird_on(lab, &np, 1)?;
                wait_for("bgpd Established", UP, || b.established("peer"))?;
                wait_for("route from BIRD", UP, || b.has_route("peer", "10.100.1.0/24"))?;
                setup(lab.signal(peer.proc, "STOP"))?;
                let p = wait_last_error(&b, [4, 0], &["sent: Hold Timer Expired"])?;
                if p["routes_received"].as_u64().unwrap_or(0) != 0 || b.has_route("peer", "10.100.1.0/24").is_ok() {
                    return Err(format!("bgpd kept the frozen peer's routes after the hold timer expired: {p}"));
                }
                setup(lab.signal(peer.proc, "CONT"))?;
                wait_for("bgpd Established again", UP, || b.established("peer"))?;
                wait_for("BIRD Established again", UP, || peer.established("bgpd"))?;
                wait_for("route from BIRD again", UP, || b.has_route("peer", "10.100.1.0/24"))?;
                let p = b.peer("peer")?;
                if p["flaps"].as_u64().unwrap_or(0) < 1 {
                    return Err(format!("bgpd counts no flap after the hold timer expired: {p}"));
                }
                Ok(())
            }),
        ),
        (
            "BIRD disable with message: Cease / Administrative Shutdown decoded".into(),
            Box::new(|lab| {
                let (b, np) = bgpd_on(lab, 2)?;
                let peer = bird_on(lab, &np, 2)?;
                wait_for("bgpd Established", UP, || b.established("peer"))?;
                peer.cmd(&["disable", "bgpd", "\"maintenance by bird\""])?;
                wait_last_error(&b, [6, 2], &["received: Cease / Administrative Shutdown", "maintenance by bird"])?;
                peer.cmd(&["enable", "bgpd"])?;
                wait_for("bgpd Established again", UP, || b.established("peer")).map(|_| ())
            }),
        ),
        (
            "FRR neighbor shutdown message: Cease / Administrative Shutdown decoded".into(),
            Box::new(|lab| {
                let (b, np) = bgpd_on(lab, 3)?;
                let cfg = frr::FrrConfig {
                    asn: PEER_AS,
                    router_id: "10.255.3.2".into(),
                    routes4: vec![],
                    routes6: vec![],
                    neighbors: vec![frr::FrrNeighbor {
                        addr: "10.255.3.1".into(),
                        remote_as: 64512,
                        update_source: "10.255.3.2".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                let peer = setup(frr::Frr::start(lab, &np, "h", &cfg))?;
                wait_for("bgpd Established", UP, || b.established("peer"))?;
                let router = format!("router bgp {PEER_AS}");
                peer.vtysh(&[
                    "configure terminal",
                    &router,
                    "neighbor 10.255.3.1 shutdown message maintenance by frr",
                ])?;
                wait_last_error(&b, [6, 2], &["received: Cease / Administrative Shutdown", "maintenance by frr"])?;
                peer.vtysh(&["configure terminal", &router, "no neighbor 10.255.3.1 shutdown"])?;
                wait_for("bgpd Established again", UP, || b.established("peer")).map(|_| ())
            }),
        ),
    ];
    run_parallel(cases);
}

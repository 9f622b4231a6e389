//! Maximum prefixes per peer (`bgpd.io/max-prefix` on the BGPPeer):
//! - teardown (the default action): ExaBGP announces 10 prefixes to a peer
//!   limited to 5; bgpd sends NOTIFICATION Cease / Maximum Number of Prefixes
//!   Reached (RFC 4486 subcode 1), ExaBGP reports receiving it, bgpd shows
//!   `last_error_code` [6, 1], drops the peer's routes and does not take the
//!   session up again at once (it waits 30 s).
//! - `bgpd.io/max-prefix-action: warn`: the same announcement keeps the
//!   session up with all 10 routes.

use std::time::Duration;

use conformance::lab::bgpd::{self, doc};
use conformance::lab::{exabgp, holds_for, run_parallel, setup, wait_for, Case, Lab};
use serde_json::Value;

const UP: Duration = Duration::from_secs(60);
const COUNT: u8 = 10;

fn prefixes(n: u8) -> Vec<String> {
    (0..COUNT).map(|i| format!("10.{}.{i}.0/24", 100 + n)).collect()
}

/// bgpd on a LAN with ExaBGP (AS 65040), limited to 5 prefixes with `action`.
fn setup_lab(lab: &Lab, n: u8, action: &str) -> Result<(bgpd::Bgpd, exabgp::Exabgp), String> {
    let ns = setup(lab.lan(n, &["bgpd", "exabgp"]))?;
    let (me, them) = (format!("10.255.{n}.1"), format!("10.255.{n}.2"));
    let docs = vec![
        doc::bgp_configuration(64512),
        doc::node("node-1", &format!("{me}/24"), &[], None),
        doc::ipam_block(&format!("10.244.{n}.0/26"), "node-1"),
        doc::peer(
            "exabgp",
            &[("bgpd.io/max-prefix", "5"), ("bgpd.io/max-prefix-action", action)],
            &format!("  peerIP: {them}\n  asNumber: 65040\n  keepaliveTime: 3s\n"),
        ),
    ];
    let b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "mp", "node-1", &doc::stream(&docs)))?;
    let cfg = exabgp::Config {
        router_id: them.clone(),
        local_address: them.clone(),
        local_as: 65040,
        neighbor: me,
        peer_as: 64512,
        routes: prefixes(n).into_iter().map(|p| (p, them.clone())).collect(),
    };
    let x = setup(exabgp::Exabgp::start(lab, &ns[1], "mp", &cfg))?;
    Ok((b, x))
}

fn teardown(lab: &Lab) -> Result<(), String> {
    let (b, x) = setup_lab(lab, 7, "teardown")?;
    let diag = |e: String| format!("{e}\n--- bgpd show peers ---\n{}", b.show_text(&["peers"]));
    let p = wait_for("bgpd: last_error_code [6, 1] (Maximum Number of Prefixes Reached)", UP, || {
        let p = b.peer("exabgp")?;
        let code: Vec<u64> = p["last_error_code"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
        if code == [6, 1] && p["state"] != "Established" {
            Ok(p)
        } else {
            Err(format!("state {}, last_error {}, last_error_code {code:?}", p["state"], p["last_error"]))
        }
    })
    .map_err(diag)?;
    let text = p["last_error"].as_str().unwrap_or_default();
    if !text.contains("sent") || !text.contains("Maximum Number of Prefixes Reached") {
        return Err(diag(format!(
            "bgpd's last_error should say it sent Cease / Maximum Number of Prefixes Reached: {p}"
        )));
    }
    wait_for("ExaBGP: NOTIFICATION Cease / subcode 1 received", Duration::from_secs(20), || {
        let msgs = x.messages();
        let got = msgs.iter().any(|m| {
            let n = &m["neighbor"]["notification"];
            m["type"] == "notification" && n["code"] == 6 && n["subcode"] == 1
        });
        if got {
            Ok(())
        } else {
            let notes: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "notification").collect();
            Err(format!("ExaBGP's notifications so far: {notes:?}"))
        }
    })
    .map_err(diag)?;
    let left: Vec<Value> = b.routes()?.into_iter().filter(|r| r["peer"] == "exabgp").collect();
    if !left.is_empty() {
        return Err(diag(format!("bgpd kept routes of the torn-down peer: {left:?}")));
    }
    // bgpd waits before it takes the session up again (30 s); not at once.
    holds_for("bgpd keeps the session down after the teardown", Duration::from_secs(5), || b.not_established("exabgp"))
        .map_err(diag)?;
    Ok(())
}

fn warn(lab: &Lab) -> Result<(), String> {
    let (b, _x) = setup_lab(lab, 8, "warn")?;
    let diag = |e: String| format!("{e}\n--- bgpd show peers ---\n{}", b.show_text(&["peers"]));
    wait_for("bgpd: exabgp Established", UP, || b.established("exabgp"))?;
    for p in prefixes(8) {
        wait_for(&format!("bgpd: {p} from ExaBGP"), UP, || b.has_route("exabgp", &p)).map_err(diag)?;
    }
    holds_for("the session stays up over the limit with action warn", Duration::from_secs(4), || {
        b.established("exabgp").map(|_| ())
    })
    .map_err(diag)?;
    let p = b.peer("exabgp")?;
    if !p["last_error_code"].is_null() {
        return Err(diag(format!("bgpd reports an error on a warn-only peer: {p}")));
    }
    Ok(())
}

#[test]
fn max_prefix() {
    if !testgate::require_root_and_cmds("max_prefix", &["ip", "exabgp", "python3"]) {
        return;
    }
    bgpd::binary();
    let cases: Vec<Case> = vec![
        ("max-prefix teardown: Cease / Maximum Number of Prefixes Reached".into(), Box::new(teardown)),
        ("max-prefix warn: session stays up".into(), Box::new(warn)),
    ];
    run_parallel(cases);
}

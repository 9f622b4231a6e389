//! Connection collision (RFC 4271 §6.8): bgpd and BIRD, both configured to
//! connect, are started (and then restarted) at the same moment, so each
//! side's connection can meet the other's. Each time, exactly one TCP
//! connection on port 179 remains ESTABLISHED, both sides report the
//! session Established, and it stays so. Then the link is cut until both
//! sides drop the session and restored while both retry: same outcome.

use std::time::Duration;

use conformance::lab::{bgpd, bird, holds_for, run_parallel, setup, wait_for, Case, Lab, Ns};

const UP: Duration = Duration::from_secs(60);
const ROUNDS: usize = 3;

/// Exactly one ESTABLISHED connection on port 179 in `ns`, and both sides
/// Established.
fn single_session(ns: &Ns, b: &bgpd::Bgpd, peer: &bird::Bird) -> Result<(), String> {
    let conns = ns.established_tcp(179).map_err(|e| e.to_string())?;
    if conns.len() != 1 {
        return Err(format!("{} ESTABLISHED connections on port 179: {conns:?}", conns.len()));
    }
    b.established("peer")?;
    peer.established("bgpd").map(|_| ())
}

fn collide(lab: &Lab) -> Result<(), String> {
    let (nb, np) = setup(lab.pair(1))?;
    let bird_cfg = bird::BirdConfig {
        router_id: "10.255.1.2".into(),
        routes4: vec!["10.100.1.0/24".into()],
        routes6: vec![],
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: "10.255.1.2".into(),
            local_as: 65400,
            neighbor: "10.255.1.1".into(),
            peer_as: 64512,
            // connect at once when started, as bgpd does
            connect_delay: Some(1),
            ..Default::default()
        }],
        ..Default::default()
    };
    let bgpd_cfg = bgpd::Config::on_link(1, vec![bgpd::Peer::new("peer", "10.255.1.2", 65400)]);
    // Both started at the same moment.
    let (peer, b) = std::thread::scope(|s| {
        let p = s.spawn(|| bird::Bird::start(lab, &np, "c", &bird_cfg));
        let b = s.spawn(|| bgpd::Bgpd::start(lab, &nb, "c", &bgpd_cfg));
        (p.join(), b.join())
    });
    let mut peer = setup(peer.map_err(|_| "BIRD start panicked".to_string())?)?;
    let mut b = setup(b.map_err(|_| "bgpd start panicked".to_string())?)?;
    for round in 0..ROUNDS {
        if round > 0 {
            // Restart both at the same moment.
            let (rp, rb) = std::thread::scope(|s| {
                let p = s.spawn(|| peer.restart(lab));
                let q = s.spawn(|| b.restart(lab));
                (p.join(), q.join())
            });
            setup(rp.map_err(|_| "BIRD restart panicked".to_string())?)?;
            setup(rb.map_err(|_| "bgpd restart panicked".to_string())?)?;
        }
        wait_for(&format!("round {round}: a single session"), UP, || single_session(&nb, &b, &peer))?;
        holds_for(&format!("round {round}: a single session"), Duration::from_secs(4), || {
            single_session(&nb, &b, &peer)
        })?;
        wait_for("route from BIRD", UP, || b.has_route("peer", "10.100.1.0/24"))?;
    }
    // Cut the link until both sides give up the session (hold timer), so
    // both keep trying to connect; then restore it: both sides' retried
    // connections race again.
    setup(np.ip(&["link", "set", "veth0", "down"]))?;
    wait_for("bgpd: session down while the link is down", UP, || match b.established("peer") {
        Ok(_) => Err("still Established".to_string()),
        Err(_) => Ok(()),
    })?;
    wait_for("BIRD: session down while the link is down", UP, || match peer.established("bgpd") {
        Ok(_) => Err("still Established".to_string()),
        Err(_) => Ok(()),
    })?;
    setup(np.ip(&["link", "set", "veth0", "up"]))?;
    wait_for("after the link flap: a single session", UP, || single_session(&nb, &b, &peer))?;
    holds_for("after the link flap: a single session", Duration::from_secs(4), || single_session(&nb, &b, &peer))?;
    Ok(())
}

/// A collision for certain: BIRD is frozen (SIGSTOP) before its first
/// connection attempt; bgpd connects, the kernel completes the handshake on
/// BIRD's listener and bgpd sends OPEN and waits in OpenSent. Thawed, BIRD
/// finds bgpd's connection waiting and also opens its own, which reaches
/// bgpd in OpenSent: two connections for one session.
fn frozen_collision(lab: &Lab) -> Result<(), String> {
    let (nb, np) = setup(lab.pair(2))?;
    let bird_cfg = bird::BirdConfig {
        router_id: "10.255.2.2".into(),
        routes4: vec!["10.100.2.0/24".into()],
        routes6: vec![],
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: "10.255.2.2".into(),
            local_as: 65400,
            neighbor: "10.255.2.1".into(),
            peer_as: 64512,
            connect_delay: Some(3),
            ..Default::default()
        }],
        ..Default::default()
    };
    let peer = setup(bird::Bird::start(lab, &np, "f", &bird_cfg))?;
    setup(lab.signal(peer.proc, "STOP"))?;
    let bgpd_cfg = bgpd::Config::on_link(2, vec![bgpd::Peer::new("peer", "10.255.2.2", 65400)]);
    let b = setup(bgpd::Bgpd::start(lab, &nb, "f", &bgpd_cfg))?;
    wait_for("bgpd in OpenSent towards the frozen BIRD", UP, || {
        let p = b.peer("peer")?;
        if p["state"] == "OpenSent" {
            Ok(())
        } else {
            Err(format!("state {}", p["state"]))
        }
    })?;
    // Let BIRD's connect delay pass while it is frozen.
    std::thread::sleep(Duration::from_secs(4));
    setup(lab.signal(peer.proc, "CONT"))?;
    wait_for("a single session", UP, || single_session(&nb, &b, &peer))?;
    holds_for("a single session", Duration::from_secs(4), || single_session(&nb, &b, &peer))?;
    wait_for("route from BIRD", UP, || b.has_route("peer", "10.100.2.0/24")).map(|_| ())
}

#[test]
fn collision_leaves_one_session() {
    if !testgate::require_root_and_cmds("collision_leaves_one_session", &["ip", "ss", "bird", "birdc"]) {
        return;
    }
    bgpd::binary();
    let cases: Vec<Case> = vec![
        ("bgpd and BIRD started and restarted together".into(), Box::new(collide)),
        ("BIRD thawed while bgpd waits in OpenSent".into(), Box::new(frozen_collision)),
    ];
    run_parallel(cases);
}

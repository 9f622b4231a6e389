//! bgpd's lifecycle against real peers (BIRD 2, FRR, GoBGP):
//!
//! - SIGTERM is a restart: BIRD and FRR keep bgpd's route as graceful
//!   restart helpers, in their tables and their kernels, and bgpd's kernel
//!   keeps theirs, without a gap (polled every 50 ms) from the stop to the
//!   End-of-RIB after the start.
//! - `bgpd stop --withdraw` decommissions: BIRD and FRR see the route with
//!   GRACEFUL_SHUTDOWN (65535:0) while the session is still up, then the
//!   Cease; the routes go, bgpd's kernel routes and its restart marker too.
//! - selection deferral after a restart waits for the GR-capable peer
//!   (BIRD), not for the one without graceful restart (GoBGP), and for a
//!   configured peer that is down only a while: it ends on its rules, before
//!   its deadline.
//! - long-lived graceful restart (RFC 9494) both ways: bgpd keeps a
//!   restarting BIRD's route LLGR_STALE and depreferenced after the restart
//!   time, then sweeps it; BIRD and FRR keep a restarting bgpd's route with
//!   LLGR_STALE after its restart time, then sweep it.
//! - the node's Node deleted from the datastore: bgpd decommissions by
//!   itself (GRACEFUL_SHUTDOWN, drain, Cease), stays up without sessions,
//!   and starts again when the Node comes back.
//! - the N bit (RFC 8538) with FRR: a SIGTERM restart sends Cease /
//!   Administrative Reset and FRR keeps the route; a decommission sends a
//!   Hard Reset and FRR drops it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use conformance::lab::bgpd::{self, doc};
use conformance::lab::{bird, frr, gobgp, holds_for, run_parallel, setup, wait_for, Lab, Ns};
use serde_json::Value;

const UP: Duration = Duration::from_secs(60);

fn diag(b: &bgpd::Bgpd, e: String) -> String {
    format!(
        "{e}\n--- bgpd show peers ---\n{}\n--- bgpd show routes ---\n{}",
        b.show_text(&["peers"]),
        b.show_text(&["routes"])
    )
}

/// `Ok` when `ns`'s kernel routes `prefix` (any protocol).
fn kernel_has(ns: &Ns, prefix: &str) -> Result<(), String> {
    let out = ns.ip(&["route", "show", prefix]).map_err(|e| e.to_string())?;
    if out.trim().is_empty() {
        Err(format!("{}: no kernel route {prefix}", ns.name()))
    } else {
        Ok(())
    }
}

/// bgpd's routes in its kernel (protocol 186).
fn bgpd_kernel_routes(ns: &Ns) -> Result<String, String> {
    ns.ip(&["route", "show", "table", "254", "proto", "186"]).map_err(|e| e.to_string())
}

/// Polls `check` every 50 ms in a thread until [`Watch::finish`]; counts the failures.
struct Watch {
    stop: Arc<AtomicBool>,
    misses: Arc<AtomicU64>,
    first: Arc<std::sync::Mutex<Option<String>>>,
    handle: std::thread::JoinHandle<u64>,
}

impl Watch {
    fn start(check: impl Fn() -> Result<(), String> + Send + 'static) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let misses = Arc::new(AtomicU64::new(0));
        let first = Arc::new(std::sync::Mutex::new(None));
        let (s, m, f) = (stop.clone(), misses.clone(), first.clone());
        let handle = std::thread::spawn(move || {
            let mut polls = 0;
            while !s.load(Ordering::Relaxed) {
                polls += 1;
                if let Err(e) = check() {
                    m.fetch_add(1, Ordering::Relaxed);
                    f.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            polls
        });
        Watch { stop, misses, first, handle }
    }

    /// Stops polling: `Err` naming the first failure if any poll failed.
    fn finish(self, what: &str) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        let polls = self.handle.join().map_err(|_| format!("{what}: the watcher panicked"))?;
        match self.misses.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(format!(
                "{what}: failed {n} of {polls} polls; first: {}",
                self.first.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default()
            )),
        }
    }
}

fn bird_session(n: u8, local_as: u32) -> bird::BirdSession {
    bird::BirdSession {
        name: "bgpd".into(),
        local: format!("10.255.{n}.2"),
        local_as,
        neighbor: format!("10.255.{n}.1"),
        peer_as: 64512,
        ..Default::default()
    }
}

/// BIRD at .2 of LAN `n` announcing `routes`, its learned routes exported to its kernel.
fn bird_with_kernel(n: u8, routes: &[&str]) -> String {
    let cfg = bird::BirdConfig {
        router_id: format!("10.255.{n}.2"),
        routes4: routes.iter().map(|r| r.to_string()).collect(),
        routes6: vec![],
        sessions: vec![bird_session(n, 65020)],
        kernel: vec![bird::BirdKernel {
            name: None,
            af: bird::Af::Ipv4,
            import: Some("none".into()),
            export: "where source = RTS_BGP".into(),
            merge_paths: false,
        }],
        ..Default::default()
    };
    cfg.render()
}

fn frr_conf(n: u8, routes: &[&str]) -> frr::FrrConfig {
    frr::FrrConfig {
        asn: 65021,
        router_id: format!("10.255.{n}.3"),
        routes4: routes.iter().map(|r| r.to_string()).collect(),
        routes6: vec![],
        neighbors: vec![frr::FrrNeighbor {
            addr: format!("10.255.{n}.1"),
            remote_as: 64512,
            update_source: format!("10.255.{n}.3"),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A BGPPeer of [`node_docs`]: name, host number on the LAN, AS, annotations, more spec lines.
type PeerDoc<'a> = (&'a str, u8, u32, &'a [(&'a str, &'a str)], &'a str);

/// bgpd's datastore on LAN `n`: node-1 at .1 with `block`, and BGPPeers.
fn node_docs(n: u8, block: &str, peers: &[PeerDoc<'_>]) -> String {
    let mut docs = vec![
        doc::bgp_configuration(64512),
        doc::node("node-1", &format!("10.255.{n}.1/24"), &[], None),
        doc::ipam_block(block, "node-1"),
    ];
    for (name, host, asn, annotations, extra) in peers {
        let spec = format!("  peerIP: 10.255.{n}.{host}\n  asNumber: {asn}\n  keepaliveTime: 3s\n{extra}");
        docs.push(doc::peer(name, annotations, &spec));
    }
    doc::stream(&docs)
}

/// FRR's view of `prefix`: whether it has it, and whether its path is stale.
fn frr_path(frr: &frr::Frr, prefix: &str) -> Result<(bool, Value), String> {
    let v = frr.has_route(prefix)?;
    let stale = v["paths"].as_array().into_iter().flatten().any(|p| p["stale"] == true);
    Ok((stale, v))
}

fn frr_lacks(frr: &frr::Frr, prefix: &str) -> Result<(), String> {
    match frr.has_route(prefix) {
        Ok(v) => Err(format!("FRR still has {prefix}: {v}")),
        Err(_) => Ok(()),
    }
}

fn bird_lacks(bird: &bird::Bird, prefix: &str) -> Result<(), String> {
    match bird.has_route("bgpd", prefix) {
        Ok(r) => Err(format!("BIRD still has {prefix}: {r}")),
        Err(_) => Ok(()),
    }
}

/// `Ok` once BIRD has dropped `block` and its session says it got Cease / Administrative Shutdown.
fn bird_ceased(bird: &bird::Bird, block: &str) -> Result<(), String> {
    bird_lacks(bird, block)?;
    let p = bird.protocol("bgpd")?;
    if p.contains("Administrative shutdown") {
        Ok(())
    } else {
        Err(format!("BIRD's bgpd protocol: {p}"))
    }
}

/// `Ok` when bgpd left no kernel route and no restart marker (after a decommission or a deliberate stop).
fn nothing_left(ns: &Ns, b: &bgpd::Bgpd) -> Result<(), String> {
    let k = bgpd_kernel_routes(ns)?;
    if k.trim().is_empty() && !b.marker().exists() {
        Ok(())
    } else {
        Err(format!("bgpd left kernel routes {k:?}, marker left: {}", b.marker().exists()))
    }
}

fn sigterm_restart(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(7, &["bgpd", "bird", "frr"]))?;
    let block = "10.244.7.0/26";
    let (from_bird, from_frr) = ("10.100.72.0/24", "10.100.73.0/24");
    let yaml = node_docs(7, block, &[("bird", 2, 65020, &[], ""), ("frr", 3, 65021, &[], "")]);
    let mut b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "sgt", "node-1", &yaml))?;
    let bird = setup(bird::Bird::start_conf(lab, &ns[1], "sgt", &bird_with_kernel(7, &[from_bird])))?;
    let frr = setup(frr::Frr::start(lab, &ns[2], "sgt", &frr_conf(7, &[from_frr])))?;
    for p in ["bird", "frr"] {
        wait_for(&format!("bgpd: {p} Established"), UP, || b.established(p))?;
    }
    let everywhere = {
        let ns = ns.clone();
        move || -> Result<(), String> {
            kernel_has(&ns[1], block)?;
            kernel_has(&ns[2], block)?;
            kernel_has(&ns[0], from_bird)?;
            kernel_has(&ns[0], from_frr)
        }
    };
    wait_for("every kernel has the routes", UP, &everywhere).map_err(|e| diag(&b, e))?;
    wait_for("FRR: bgpd's block fresh", UP, || match frr_path(&frr, block)? {
        (false, _) => Ok(()),
        (true, v) => Err(format!("stale: {v}")),
    })?;

    let watch = Watch::start(everywhere.clone());
    lab.stop(b.proc);
    let helping = || -> Result<(), String> {
        let p = bird.protocol("bgpd")?;
        if !p.contains("Neighbor graceful restart active") {
            return Err(format!("BIRD is not helping bgpd's graceful restart after SIGTERM: {p}"));
        }
        match frr_path(&frr, block)? {
            (true, _) => Ok(()),
            (false, v) => Err(format!("FRR: bgpd's block not stale after SIGTERM: {v}")),
        }
    };
    let helped = wait_for("BIRD and FRR helping after SIGTERM", Duration::from_secs(15), helping)
        .and_then(|()| holds_for("BIRD and FRR keep helping while bgpd is down", Duration::from_secs(2), helping));
    let started = setup(b.start_again(lab));
    let back = started.and_then(|()| {
        for p in ["bird", "frr"] {
            wait_for(&format!("bgpd: {p} Established again"), UP, || b.established(p))?;
        }
        wait_for("bgpd: selection deferral over", UP, || {
            let v = b.peers_view()?;
            if v["deferral"].is_null() {
                Ok(())
            } else {
                Err(format!("deferral: {}", v["deferral"]))
            }
        })?;
        wait_for("BIRD: graceful restart done", UP, || {
            let p = bird.protocol("bgpd")?;
            if p.contains("Established") && !p.contains("graceful restart active") {
                Ok(())
            } else {
                Err(p)
            }
        })?;
        wait_for("FRR: bgpd's block fresh again", UP, || match frr_path(&frr, block)? {
            (false, _) => Ok(()),
            (true, v) => Err(format!("stale: {v}")),
        })
    });
    // A second more: a late sweep would show.
    std::thread::sleep(Duration::from_secs(1));
    let watched = watch.finish("every kernel keeps the routes from SIGTERM to the End-of-RIB after the restart");
    helped.map_err(|e| diag(&b, e))?;
    back.map_err(|e| diag(&b, e))?;
    watched.map_err(|e| diag(&b, e))?;
    let log = b.log(lab);
    let starts: Vec<&str> = log.lines().filter(|l| l.contains(" starting") && l.contains("restarting=")).collect();
    let ok = starts.len() == 2
        && starts[0].contains("restarting=false")
        && starts[1].contains("restarting=true")
        && starts[1].contains("forwarding=true");
    if !ok {
        return Err(format!(
            "bgpd's start lines: want a clean start, then a restart with forwarding state: {starts:?}"
        ));
    }
    if log.contains("Administrative Shutdown") {
        return Err("bgpd sent Cease / Administrative Shutdown on SIGTERM".into());
    }
    Ok(())
}

fn decommission(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(8, &["bgpd", "bird", "frr"]))?;
    let block = "10.244.8.0/26";
    let from_bird = "10.100.82.0/24";
    let yaml = node_docs(8, block, &[("bird", 2, 65020, &[], ""), ("frr", 3, 65021, &[], "")]);
    let b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "dec", "node-1", &yaml))?;
    let bird = setup(bird::Bird::start_conf(lab, &ns[1], "dec", &bird_with_kernel(8, &[from_bird])))?;
    let frr = setup(frr::Frr::start(lab, &ns[2], "dec", &frr_conf(8, &[])))?;
    for p in ["bird", "frr"] {
        wait_for(&format!("bgpd: {p} Established"), UP, || b.established(p))?;
    }
    wait_for("BIRD and FRR: bgpd's block", UP, || {
        bird.has_route("bgpd", block)?;
        frr.has_route(block).map(|_| ())
    })?;
    wait_for("bgpd's kernel: BIRD's route and the blackhole", UP, || {
        let k = bgpd_kernel_routes(&ns[0])?;
        if k.contains(from_bird) && k.contains(&format!("blackhole {block}")) {
            Ok(())
        } else {
            Err(k)
        }
    })?;
    if !b.marker().exists() {
        return Err(format!("no restart marker at {}", b.marker().display()));
    }

    let stopping = std::thread::scope(|s| -> Result<String, String> {
        let stop = s.spawn(|| b.stop_withdraw(4));
        // RFC 8326: the route with GRACEFUL_SHUTDOWN while the session is up.
        let bird_gshut = wait_for("BIRD: bgpd's block with GRACEFUL_SHUTDOWN", Duration::from_secs(4), || {
            let r = bird.cmd(&["show", "route", block, "all"])?;
            if r.contains("(65535,0)") && bird.established("bgpd").is_ok() {
                Ok(())
            } else {
                Err(r)
            }
        });
        let frr_gshut = wait_for("FRR: bgpd's block with graceful-shutdown", Duration::from_secs(4), || {
            let v = frr.has_route(block)?;
            if v.to_string().contains("graceful-shutdown") && frr.established("10.255.8.1").is_ok() {
                Ok(())
            } else {
                Err(v.to_string())
            }
        });
        let out = stop.join().map_err(|_| "bgpd stop panicked".to_string())??;
        bird_gshut?;
        frr_gshut?;
        Ok(out)
    });
    let out = stopping.map_err(|e| diag(&b, e))?;
    if !out.contains("decommissioned") {
        return Err(format!("bgpd stop --withdraw said: {out}"));
    }
    wait_for("bgpd exits after the decommission", Duration::from_secs(10), || {
        if lab.running(b.proc) {
            Err("still running".into())
        } else {
            Ok(())
        }
    })?;
    wait_for("BIRD: the route gone, the session closed by Cease", Duration::from_secs(10), || {
        bird_ceased(&bird, block)
    })?;
    wait_for("FRR: the route gone", Duration::from_secs(10), || frr_lacks(&frr, block))?;
    nothing_left(&ns[0], &b)?;
    Ok(())
}

fn deliberate_stop(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(14, &["bgpd", "bird"]))?;
    let block = "10.244.14.0/26";
    let yaml = node_docs(14, block, &[("bird", 2, 65020, &[], "")]);
    let mut b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "dls", "node-1", &yaml))?;
    let bird = setup(bird::Bird::start_conf(lab, &ns[1], "dls", &bird_with_kernel(14, &["10.100.142.0/24"])))?;
    wait_for("bgpd: bird Established", UP, || b.established("bird"))?;
    wait_for("BIRD: bgpd's block", UP, || bird.has_route("bgpd", block))?;
    let out = b.stop(&[]).map_err(|e| diag(&b, e))?;
    if !out.contains("decommissioned (bgpd stop)") {
        return Err(format!("bgpd stop said: {out}"));
    }
    wait_for("BIRD: the route gone at once, by Cease", Duration::from_secs(5), || bird_ceased(&bird, block))?;
    nothing_left(&ns[0], &b)?;
    wait_for(
        "bgpd exits",
        Duration::from_secs(10),
        || if lab.running(b.proc) { Err("running".into()) } else { Ok(()) },
    )?;
    // Started again at once: a clean start, no deferral.
    lab.stop(b.proc);
    setup(b.start_again(lab))?;
    wait_for("bgpd: bird Established again", UP, || b.established("bird"))?;
    let starts: Vec<String> = b.log(lab).lines().filter(|l| l.contains(" starting")).map(String::from).collect();
    if starts.len() != 2 || !starts[1].contains("restarting=false") {
        return Err(format!("the start after a deliberate stop should be a clean one: {starts:?}"));
    }
    Ok(())
}

fn node_deleted(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(13, &["bgpd", "bird"]))?;
    let block = "10.244.13.0/26";
    let with_node = node_docs(13, block, &[("bird", 2, 65020, &[], "")]);
    let node_doc = doc::node("node-1", "10.255.13.1/24", &[], None);
    let without_node = with_node.replace(&node_doc, "");
    if without_node == with_node {
        return Err("the test's datastore has no Node document to delete".into());
    }
    let b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "ndl", "node-1", &with_node))?;
    let bird = setup(bird::Bird::start_conf(lab, &ns[1], "ndl", &bird_with_kernel(13, &["10.100.132.0/24"])))?;
    wait_for("bgpd: bird Established", UP, || b.established("bird"))?;
    wait_for("BIRD: bgpd's block", UP, || bird.has_route("bgpd", block))?;
    std::thread::sleep(Duration::from_secs(1));

    setup(b.reconfigure_yaml(&without_node))?;
    let lifecycle = |want: &str| {
        let v = b.peers_view()?;
        if v["lifecycle"]["state"] == want {
            Ok(v)
        } else {
            Err(format!("lifecycle {}, want {want}", v["lifecycle"]))
        }
    };
    wait_for("bgpd: draining after the Node's deletion", Duration::from_secs(10), || lifecycle("draining"))
        .map_err(|e| diag(&b, e))?;
    wait_for("BIRD: bgpd's block with GRACEFUL_SHUTDOWN", Duration::from_secs(8), || {
        let r = bird.cmd(&["show", "route", block, "all"])?;
        if r.contains("(65535,0)") {
            Ok(())
        } else {
            Err(r)
        }
    })?;
    wait_for("bgpd: decommissioned", Duration::from_secs(30), || lifecycle("decommissioned"))
        .map_err(|e| diag(&b, e))?;
    wait_for("BIRD: the route gone after the Cease", Duration::from_secs(10), || bird_ceased(&bird, block))?;
    nothing_left(&ns[0], &b)?;
    if !lab.running(b.proc) {
        return Err("bgpd exited after the Node's deletion; it should wait for the Node to come back".into());
    }

    setup(b.reconfigure_yaml(&with_node))?;
    wait_for("bgpd: running again once the Node is back", Duration::from_secs(10), || lifecycle("running"))?;
    wait_for("bgpd: bird Established again", UP, || b.established("bird"))?;
    wait_for("BIRD: bgpd's block again", UP, || bird.has_route("bgpd", block))?;
    wait_for("bgpd's kernel: BIRD's route again", UP, || {
        let k = bgpd_kernel_routes(&ns[0])?;
        if k.contains("10.100.132.0/24") {
            Ok(())
        } else {
            Err(k)
        }
    })?;
    Ok(())
}

fn deferral(lab: &Lab) -> Result<(), String> {
    // bgpd .1, BIRD .2 (graceful restart), GoBGP .3 (none), and .4: a configured peer nobody runs.
    let ns = setup(lab.lan(9, &["bgpd", "bird", "gobgp"]))?;
    let block = "10.244.9.0/26";
    let yaml =
        node_docs(9, block, &[("bird", 2, 65020, &[], ""), ("gobgp", 3, 65022, &[], ""), ("gone", 4, 65023, &[], "")]);
    let mut b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "dfr", "node-1", &yaml))?;
    let bird = setup(bird::Bird::start_conf(lab, &ns[1], "dfr", &bird_with_kernel(9, &["10.100.92.0/24"])))?;
    let go = gobgp::Config {
        asn: 65022,
        router_id: "10.255.9.3".into(),
        listen: vec!["10.255.9.3".into()],
        neighbors: vec![gobgp::Neighbor {
            addr: "10.255.9.1".into(),
            peer_as: 64512,
            local_address: "10.255.9.3".into(),
            password: None,
        }],
    };
    // No graceful restart at all on GoBGP's side.
    let text = go
        .render()
        .replace("  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 120\n", "")
        .replace("\n    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true", "");
    let _go = setup(gobgp::Gobgp::start_conf(lab, &ns[2], "dfr", &text))?;
    for p in ["bird", "gobgp"] {
        wait_for(&format!("bgpd: {p} Established"), UP, || b.established(p))?;
    }
    let caps = b.peer("gobgp")?["capabilities"].to_string();
    if caps.contains("graceful-restart") {
        return Err(format!("GoBGP should not do graceful restart here: {caps}"));
    }

    lab.stop(b.proc);
    setup(b.start_again(lab))?;
    let mut seen: Vec<String> = Vec::new();
    let mut deadline: Option<u64> = None;
    wait_for("bgpd: selection deferral over", UP, || {
        let v = b.peers_view()?;
        let d = &v["deferral"];
        if d.is_null() {
            return Ok(());
        }
        deadline = d["until"].as_u64();
        for w in d["waiting"].as_array().into_iter().flatten() {
            let line = format!("{} ({})", w[0].as_str().unwrap_or("?"), w[1].as_str().unwrap_or("?"));
            if !seen.contains(&line) {
                seen.push(line);
            }
        }
        Err(format!("deferral: {d}"))
    })
    .map_err(|e| diag(&b, e))?;
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let Some(deadline) = deadline else {
        return Err("bgpd never showed a selection deferral after the restart".into());
    };
    if now >= deadline {
        return Err(format!("the deferral ran to its deadline ({deadline}, now {now}): it waited for {seen:?}"));
    }
    if seen.iter().any(|w| w.starts_with("gobgp (End-of-RIB")) {
        return Err(format!("the deferral waited for GoBGP, which does not do graceful restart: {seen:?}"));
    }
    if !seen.iter().any(|w| w.starts_with("gone (its session")) {
        return Err(format!("the deferral should have waited a while for the peer that is down: {seen:?}"));
    }
    wait_for("BIRD: bgpd's block after the deferral", UP, || bird.has_route("bgpd", block))?;
    Ok(())
}

fn llgr_helper(lab: &Lab) -> Result<(), String> {
    // BIRD .2 and FRR .3 both announce P; BIRD's path wins (lower router ID)
    // until BIRD is gone for longer than its restart time.
    let ns = setup(lab.lan(10, &["bgpd", "bird", "frr"]))?;
    let p = "10.100.100.0/24";
    let yaml = node_docs(10, "10.244.10.0/26", &[("bird", 2, 65020, &[], ""), ("frr", 3, 65021, &[], "")]);
    let b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "llh", "node-1", &yaml))?;
    let cfg = bird::BirdConfig {
        router_id: "10.255.10.2".into(),
        routes4: vec![p.into()],
        routes6: vec![],
        sessions: vec![bird::BirdSession {
            graceful_restart_time: Some(3),
            long_lived_graceful_restart: true,
            long_lived_stale_time: Some(15),
            ..bird_session(10, 65020)
        }],
        ..Default::default()
    };
    let bird = setup(bird::Bird::start(lab, &ns[1], "llh", &cfg))?;
    let _frr = setup(frr::Frr::start(lab, &ns[2], "llh", &frr_conf(10, &[p])))?;
    for peer in ["bird", "frr"] {
        wait_for(&format!("bgpd: {peer} Established"), UP, || b.established(peer))?;
    }
    let path = |peer: &str| -> Result<Value, String> {
        b.routes_for(p)?.into_iter().find(|r| r["peer"] == peer).ok_or_else(|| format!("no path to {p} from {peer}"))
    };
    wait_for("bgpd: BIRD's path best", UP, || {
        let r = path("bird")?;
        path("frr")?;
        if r["best"] == true {
            Ok(())
        } else {
            Err(r.to_string())
        }
    })
    .map_err(|e| diag(&b, e))?;
    if !b.peer("bird")?["capabilities"].to_string().contains("long-lived-graceful-restart") {
        return Err(format!("BIRD's LLGR capability not seen: {}", b.peer("bird")?["capabilities"]));
    }

    setup(lab.signal(bird.proc, "KILL"))?;
    wait_for("bgpd: BIRD's path long-lived stale and depreferenced", Duration::from_secs(20), || {
        let r = path("bird")?;
        let f = path("frr")?;
        let marked = r["communities"].as_array().into_iter().flatten().any(|c| c == "65535:6");
        if marked && r["best"] == false && f["best"] == true && r["lost"] == "long-lived stale (LLGR_STALE)" {
            Ok(())
        } else {
            Err(format!("BIRD's path {r}, FRR's {f}"))
        }
    })
    .map_err(|e| diag(&b, e))?;
    wait_for("bgpd: BIRD's path swept after the long-lived stale time", Duration::from_secs(40), || {
        match path("bird") {
            Ok(r) => Err(format!("still there: {r}")),
            Err(_) => path("frr").map(|_| ()),
        }
    })
    .map_err(|e| diag(&b, e))?;
    Ok(())
}

fn llgr_restarting(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(11, &["bgpd", "bird", "frr"]))?;
    let block = "10.244.11.0/26";
    let ll: &[(&str, &str)] = &[("bgpd.io/long-lived-stale-time", "15")];
    let yaml = node_docs(
        11,
        block,
        &[("bird", 2, 65020, ll, "  maxRestartTime: 3s\n"), ("frr", 3, 65021, ll, "  maxRestartTime: 3s\n")],
    );
    let b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "llr", "node-1", &yaml))?;
    let cfg = bird::BirdConfig {
        router_id: "10.255.11.2".into(),
        routes4: vec![],
        routes6: vec![],
        sessions: vec![bird::BirdSession { long_lived_graceful_restart: true, ..bird_session(11, 65020) }],
        ..Default::default()
    };
    let bird = setup(bird::Bird::start(lab, &ns[1], "llr", &cfg))?;
    // FRR's helper keeps long-lived stale routes at most its own stale-time (0 by default).
    let cfg = frr::FrrConfig { long_lived_stale_time: Some(60), ..frr_conf(11, &[]) };
    let frr = setup(frr::Frr::start(lab, &ns[2], "llr", &cfg))?;
    for peer in ["bird", "frr"] {
        wait_for(&format!("bgpd: {peer} Established"), UP, || b.established(peer))?;
    }
    wait_for("BIRD and FRR: bgpd's block", UP, || {
        bird.has_route("bgpd", block)?;
        frr.has_route(block).map(|_| ())
    })?;

    // BIRD helps only once the session is fully up (End-of-RIB exchanged):
    // a session killed within the first 100 ms gets no graceful restart.
    std::thread::sleep(Duration::from_secs(2));
    setup(b.kill(lab))?;
    wait_for("BIRD and FRR: bgpd's block long-lived stale (LLGR_STALE)", Duration::from_secs(20), || {
        let r = bird.cmd(&["show", "route", block, "all"]).unwrap_or_else(|e| e);
        if !r.contains("(65535,6)") {
            let all = bird.cmd(&["show", "route", "all"]).unwrap_or_else(|e| e);
            return Err(format!("BIRD: {r}\n{all}\n{}", bird.protocol("bgpd").unwrap_or_else(|e| e)));
        }
        let v = frr.has_route(block)?;
        if v.to_string().contains("llgr-stale") {
            Ok(())
        } else {
            Err(format!("FRR: {v}"))
        }
    })?;
    wait_for("BIRD and FRR: bgpd's block swept after the long-lived stale time", Duration::from_secs(40), || {
        bird_lacks(&bird, block)?;
        frr_lacks(&frr, block)
    })?;
    Ok(())
}

fn n_bit(lab: &Lab) -> Result<(), String> {
    let ns = setup(lab.lan(12, &["bgpd", "unused", "frr"]))?;
    let block = "10.244.12.0/26";
    let n: &[(&str, &str)] = &[("bgpd.io/graceful-notification", "true")];
    let yaml = node_docs(12, block, &[("frr", 3, 65021, n, "")]);
    let mut b = setup(bgpd::Bgpd::start_yaml(lab, &ns[0], "nbt", "node-1", &yaml))?;
    let cfg = frr::FrrConfig { graceful_restart_notification: true, ..frr_conf(12, &[]) };
    let frr = setup(frr::Frr::start(lab, &ns[2], "nbt", &cfg))?;
    let caps = wait_for("bgpd: frr Established", UP, || b.established("frr"))?["capabilities"].to_string();
    if !caps.contains("graceful-notification") {
        return Err(format!("the N bit was not negotiated with FRR: {caps}"));
    }
    wait_for("FRR: bgpd's block", UP, || frr.has_route(block).map(|_| ()))?;

    lab.stop(b.proc);
    let kept = wait_for("FRR keeps bgpd's block stale after the Administrative Reset", Duration::from_secs(15), || {
        let nb = frr.neighbor("10.255.12.1")?.to_string();
        if !nb.contains("Administrative Reset") {
            return Err(format!("FRR's neighbor does not show the Administrative Reset: {nb}"));
        }
        match frr_path(&frr, block)? {
            (true, _) => Ok(()),
            (false, v) => Err(format!("not stale: {v}")),
        }
    });
    setup(b.start_again(lab))?;
    kept?;
    wait_for("bgpd: frr Established again", UP, || b.established("frr"))?;
    wait_for("FRR: bgpd's block fresh again", UP, || match frr_path(&frr, block)? {
        (false, _) => Ok(()),
        (true, v) => Err(format!("stale: {v}")),
    })?;

    b.stop_withdraw(1).map_err(|e| diag(&b, e))?;
    wait_for("FRR drops bgpd's block at the Hard Reset", Duration::from_secs(10), || {
        frr_lacks(&frr, block)?;
        let nb = frr.neighbor("10.255.12.1")?;
        if nb["lastNotificationHardReset"] == true {
            Ok(())
        } else {
            Err(format!("FRR's neighbor does not show the Hard Reset: {nb}"))
        }
    })?;
    Ok(())
}

fn prerequisites_met(test: &str) -> bool {
    let programs =
        ["ip", "kill", "bird", "birdc", "vtysh", "/usr/lib/frr/bgpd", "/usr/lib/frr/zebra", "gobgpd", "gobgp"];
    let ok = testgate::require_root_and_cmds(test, &programs);
    if ok {
        bgpd::binary();
    }
    ok
}

#[test]
fn lifecycle() {
    if prerequisites_met("lifecycle") {
        run_parallel(vec![
            (
                "SIGTERM restart: BIRD, FRR and bgpd keep every route in table and kernel".into(),
                Box::new(sigterm_restart),
            ),
            ("decommission: GRACEFUL_SHUTDOWN before the Cease, then nothing left".into(), Box::new(decommission)),
            ("deferral: a non-GR peer and a peer down do not hold it to its deadline".into(), Box::new(deferral)),
            ("Node deleted: decommission, then back when the Node is".into(), Box::new(node_deleted)),
            ("bgpd stop: Cease at once, nothing left, the next start clean".into(), Box::new(deliberate_stop)),
            ("LLGR helper: BIRD's route LLGR_STALE, depreferenced, swept".into(), Box::new(llgr_helper)),
            (
                "LLGR restarting: BIRD and FRR keep bgpd's route LLGR_STALE, then sweep it".into(),
                Box::new(llgr_restarting),
            ),
            ("N bit with FRR: Administrative Reset keeps, Hard Reset drops".into(), Box::new(n_bit)),
        ]);
    }
}

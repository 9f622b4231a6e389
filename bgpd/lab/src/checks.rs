//! The lab's checks: sessions Established, probes answered by the right
//! pods, kernel routes settled, and the reports `up`, `status` and the
//! drills print.

use super::*;

/// One check's outcome.
struct Check {
    pub(super) what: String,
    pub(super) ok: bool,
    pub(super) detail: String,
}

/// A probe target and the answers that are right (the pods that may answer).
type Expect = (SocketAddr, Vec<String>);

/// Where probes go from: (source name, its namespace, its targets).
type ProbesFrom = (String, String, Vec<Expect>);

/// The probes: (source name, its namespace) → (target, what answers are right).
pub(super) fn probe_plan(lab: &Lab, st: &State) -> Vec<ProbesFrom> {
    let port = lab.topo.port;
    let up = |p: &&Pod| !st.stopped.contains(&p.node);
    let mut sources: Vec<(String, String)> =
        st.pods.iter().filter(up).map(|p| (p.name.clone(), p.ns.clone())).collect();
    for m in lab.topo.members.values().filter(|m| matches!(m.role, Role::Host { .. })) {
        sources.push((m.name.clone(), lab.topo.netns(&m.name)));
    }
    let mut plan = Vec::new();
    for (src, ns) in sources {
        let mut targets = Vec::new();
        for p in st.pods.iter().filter(up).filter(|p| p.name != src) {
            for a in p.addresses() {
                targets.push((SocketAddr::new(a, port), vec![p.name.clone()]));
            }
        }
        for s in &lab.topo.services {
            let ready: Vec<String> = s
                .endpoints
                .iter()
                .filter(|(n, _)| st.endpoints.get(&endpoint_key(&s.key, n)).copied().unwrap_or(false))
                .filter(|(n, _)| !st.stopped.contains(n))
                .filter_map(|(n, _)| st.pods.iter().find(|p| &p.node == n).map(|p| p.name.clone()))
                .collect();
            if ready.is_empty() {
                continue;
            }
            for a in &s.addresses {
                targets.push((SocketAddr::from((*a, port)), ready.clone()));
            }
        }
        plan.push((src, ns, targets));
    }
    plan
}

fn run_checks(lab: &Lab, st: &State, bgpd: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    // Sessions over a link cut by `lab fail` (every link of a failed router,
    // or every member's link to a cut segment) are expected down.
    let failed: Vec<&spec::Member> = st.faults.iter().filter_map(|f| lab.topo.members.get(f)).collect();
    let mut dead: Vec<IpAddr> = Vec::new();
    for m in &failed {
        for seg in m.segments() {
            dead.extend(m.addresses_on(seg));
        }
    }
    for seg in lab.topo.segments.iter().filter(|s| st.faults.contains(&s.name)) {
        for m in &seg.members {
            dead.extend(lab.topo.members[m].addresses_on(&seg.name));
        }
    }
    // A stopped node is off: every session to it is expected down.
    for m in st.stopped.iter().filter_map(|n| lab.topo.members.get(n)) {
        for seg in m.segments() {
            dead.extend(m.addresses_on(seg));
        }
    }
    let failed_addr = |a: &str| a.parse::<SocketAddr>().is_ok_and(|a| dead.contains(&a.ip()));
    // Sessions, and no bgpd still restarting (selection deferral holds its
    // UPDATEs: it has not got its routes back to its peers yet).
    for r in
        lab.topo.routers().filter(|r| matches!(r.role, Role::Router { implementation: spec::Implementation::Bgpd, .. }))
    {
        if failed.iter().any(|f| f.name == r.name) {
            continue;
        }
        if let Some(v) = ask_peers(&routers::RouterFiles::new(&lab.dir, &r.name).bgpd_sock()) {
            checks.push(restart_check(&r.name, &v));
        }
    }
    for node in lab.topo.nodes().filter(|n| !st.stopped.contains(&n.name)) {
        if st.bird.contains(&node.name) {
            checks.extend(calico_bird_checks(lab, &node.name, &dead));
            continue;
        }
        match ask_peers(&lab.node_socket(&node.name)) {
            None => checks.push(Check {
                what: format!("{}: bgpd answers", node.name),
                ok: false,
                detail: format!(
                    "no answer on its control socket; log tail:\n{}",
                    net::tail(&lab.dir.join("nodes").join(&node.name).join("bgpd.log"), 8)
                ),
            }),
            Some(v) => {
                checks.push(restart_check(&node.name, &v));
                for p in v["peers"].as_array().into_iter().flatten() {
                    if failed_addr(p["address"].as_str().unwrap_or("")) {
                        continue;
                    }
                    let state = p["state"].as_str().unwrap_or("?");
                    checks.push(Check {
                        what: format!(
                            "{}: session {} ({})",
                            node.name,
                            p["name"].as_str().unwrap_or("?"),
                            p["address"].as_str().unwrap_or("?")
                        ),
                        ok: state == "Established",
                        detail: format!("{state} {}", p["last_failure"].as_str().unwrap_or("")),
                    });
                }
            }
        }
    }
    for r in lab.topo.routers().filter(|r| !failed.iter().any(|f| f.name == r.name)) {
        let sessions = lab.topo.router_sessions(r);
        for (s, (peer, up, info)) in sessions.iter().zip(routers::sessions_up(&lab.topo, r, &lab.dir)) {
            if dead.contains(&s.neighbor) || dead.contains(&s.local) {
                continue;
            }
            checks.push(Check { what: format!("{}: session {peer}", r.name), ok: up, detail: info });
        }
    }
    // Reachability.
    let plan = probe_plan(lab, st);
    let results: Vec<(ProbesFrom, Vec<probe::Outcome>)> = std::thread::scope(|s| {
        let hs: Vec<_> = plan
            .into_iter()
            .map(|(src, ns, targets)| {
                s.spawn(move || {
                    let mut cmd = Command::new("ip");
                    cmd.args(["netns", "exec", &ns]).arg(bgpd).args(["lab", "probe"]);
                    cmd.args(targets.iter().map(|(t, _)| t.to_string()));
                    let out = cmd.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
                    let outcomes = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
                    ((src, ns, targets), outcomes)
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for ((src, ns, targets), outcomes) in results {
        for (t, want) in targets {
            let got = outcomes.iter().find(|o: &&probe::Outcome| o.target == t).map(|o| o.answer.clone());
            let (ok, detail) = match got {
                Some(Ok(a)) if want.contains(&a) => (true, format!("answered by {a}")),
                Some(Ok(a)) => (false, format!("answered by {a}, expected {}", want.join(" or "))),
                Some(Err(e)) => (false, e),
                None => (false, "the prober did not report".into()),
            };
            let detail = if ok { detail } else { format!("{detail}\n{}", trace(lab, st, &ns, t.ip())) };
            checks.push(Check { what: format!("{src} -> {t} ({})", want.join("|")), ok, detail });
        }
    }
    checks
}

/// The sessions of a node that runs Calico's BIRD: every one its
/// configuration has (but those over a cut link) Established.
fn calico_bird_checks(lab: &Lab, node: &str, dead: &[IpAddr]) -> Vec<Check> {
    let planned = cluster_model(lab, node).and_then(|m| calico_bird::sessions(&m, node));
    let planned = match planned {
        Ok(p) => p,
        Err(e) => {
            return vec![Check { what: format!("{node}: Calico BIRD configured"), ok: false, detail: e.to_string() }]
        }
    };
    let states = routers::bird_bgp_sessions(&lab.bird_socket(node));
    if states.is_empty() {
        let log = net::tail(&lab.dir.join("nodes").join(node).join("bird.log"), 8);
        let detail = format!("no answer on its control socket; log tail:\n{log}");
        return vec![Check { what: format!("{node}: Calico BIRD answers"), ok: false, detail }];
    }
    planned
        .iter()
        .filter(|s| !dead.contains(&s.neighbor))
        .map(|s| {
            let state = states.iter().find(|(n, ..)| *n == s.name);
            Check {
                what: format!("{node}: session {} ({}, Calico BIRD)", s.name, s.neighbor),
                ok: state.is_some_and(|(_, up, _)| *up),
                detail: state.map_or_else(|| "no such protocol".into(), |(.., info)| info.clone()),
            }
        })
        .collect()
}

/// The check that a bgpd is not in its selection deferral after a restart.
fn restart_check(name: &str, peers: &serde_json::Value) -> Check {
    let d = &peers["deferral"];
    let waiting: Vec<String> = d["waiting"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| format!("{} ({})", w[0].as_str().unwrap_or("?"), w[1].as_str().unwrap_or("?")))
        .collect();
    Check {
        what: format!("{name}: bgpd ready (no restart deferral)"),
        ok: d.is_null(),
        detail: format!("selection deferral waits for {}", waiting.join(", ")),
    }
}

/// `bgpd show peers --json` of the bgpd on `socket`, if it answers within 3 s.
pub(super) fn ask_peers(socket: &Path) -> Option<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    rt.block_on(async {
        let ask = bgpd::daemon::ask(socket, &bgpd::daemon::Request::Peers);
        tokio::time::timeout(Duration::from_secs(3), ask).await.ok().and_then(Result::ok)
    })
}

/// The routes on the path from `ns` to `dst`, hop by hop (`ip route get` in
/// each namespace, following the next hop to the member that owns it).
fn trace(lab: &Lab, st: &State, ns: &str, dst: std::net::IpAddr) -> String {
    let fam = if dst.is_ipv4() { "-4" } else { "-6" };
    let mut out = String::from("    path:");
    let mut here = ns.to_string();
    for _ in 0..8 {
        let route = net::ip_in(&here, &[fam, "route", "get", &dst.to_string()]).unwrap_or_else(|e| format!("{e}"));
        let line = route.lines().next().unwrap_or("").trim().to_string();
        let _ = write!(out, "\n      [{here}] {line}");
        let words: Vec<&str> = line.split_whitespace().collect();
        let via = words
            .iter()
            .position(|w| *w == "via")
            .and_then(|i| words.get(i + 1))
            .and_then(|a| a.parse::<IpAddr>().ok());
        let next = match via {
            Some(v) => match lab.topo.owner_of(v) {
                Some(m) => lab.topo.netns(&m.name),
                // A pod's gateway is its node's side of the ptp link.
                None => match st.pods.iter().find(|p| p.ns == here) {
                    Some(p) => lab.topo.netns(&p.node),
                    None => break,
                },
            },
            None => break,
        };
        if next == here {
            break;
        }
        here = next;
    }
    out
}

pub(super) fn converge(lab: &Lab, st: &State, bgpd: &Path, limit: Duration) -> (bool, String) {
    let start = Instant::now();
    loop {
        let checks = run_checks(lab, st, bgpd);
        let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
        if failed.is_empty() || start.elapsed() >= limit {
            let mut r = String::new();
            let sessions = checks.iter().filter(|c| c.what.contains(": session")).count();
            let probes = checks.iter().filter(|c| c.what.contains(" -> ")).count();
            let ready = checks.len() - sessions - probes;
            let _ = writeln!(
                r,
                "== checks: {} sessions, {} bgpd ready, {} probes; {} failed (after {:.1} s)",
                sessions,
                ready,
                probes,
                failed.len(),
                start.elapsed().as_secs_f64()
            );
            for c in &failed {
                let _ = writeln!(r, "FAIL {}: {}", c.what, c.detail);
            }
            return (failed.is_empty(), r);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The routes once they have held still for a second (at most 15 s): the
/// checks can pass on the first path while a second (ECMP) path is on its way.
pub(super) fn settled_routes(lab: &Lab, st: &State) -> String {
    let start = Instant::now();
    let mut last = routes_report(lab, st);
    while start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_secs(1));
        let now = routes_report(lab, st);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Each node's and router's kernel routes (the pods' own /32 links left out).
fn routes_report(lab: &Lab, st: &State) -> String {
    let mut r = String::new();
    for m in lab.topo.members.values().filter(|m| !matches!(m.role, Role::Host { .. })) {
        let what = match &m.role {
            Role::Node { asn, .. } if st.bird.contains(&m.name) => format!("node, AS {asn}, Calico BIRD"),
            Role::Node { asn, .. } => format!("node, AS {asn}, bgpd"),
            Role::Router { implementation, asn, .. } => {
                format!("router, AS {asn}, {}", format!("{implementation:?}").to_lowercase())
            }
            Role::Host { .. } => String::new(),
        };
        let _ = writeln!(r, "== {} ({what}) routes", m.name);
        let ns = lab.topo.netns(&m.name);
        let mut table = net::ip_in(&ns, &["-4", "route", "show"]).unwrap_or_else(|e| e.to_string());
        if lab.topo.dual_stack() {
            table.push_str(&net::ip_in(&ns, &["-6", "route", "show"]).unwrap_or_else(|e| e.to_string()));
        }
        // A pod's own /32 on its ptp link is left out (one line per pod says
        // nothing), and so are IPv6 link-local and multicast routes.
        let noise = |l: &str| {
            (l.contains(" dev veth") && !l.contains("via")) || l.starts_with("fe80::") || l.starts_with("multicast ")
        };
        for l in table.lines().filter(|l| !noise(l)) {
            let _ = writeln!(r, "  {l}");
        }
    }
    r
}

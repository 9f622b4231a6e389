//! The lab's drills, run against a lab that is up: failing and recovering
//! routers, links and endpoints, restarting, stopping and starting nodes,
//! and the rolling upgrade, each while probing, with the probes lost.

use super::*;

/// What a drill acts on.
enum Target {
    Router(String),
    Segment(String),
    Endpoint { service: String, node: String },
}

fn target(lab: &Lab, what: &str) -> anyhow::Result<Target> {
    if let Some((service, node)) = what.split_once('@') {
        let s = lab.topo.services.iter().find(|s| s.key == service || s.name == service);
        let Some(s) = s else { bail!("no lab service {service:?} (spec.services)") };
        if !s.endpoints.iter().any(|(n, _)| n == node) {
            bail!("service {} has no lab endpoint on {node:?}", s.key);
        }
        return Ok(Target::Endpoint { service: s.key.clone(), node: node.into() });
    }
    if lab.topo.segments.iter().any(|s| s.name == what) {
        return Ok(Target::Segment(what.into()));
    }
    match lab.topo.members.get(what).map(|m| &m.role) {
        Some(Role::Router { .. }) => Ok(Target::Router(what.into())),
        _ => bail!("{what:?} is neither a router nor a segment of the lab, nor SERVICE@NODE"),
    }
}

/// `bgpd lab fail FILE TARGET [--silent]` and `bgpd lab recover FILE TARGET`:
/// cut (or restore) every link of a router, or one segment (a link), or turn
/// a service's endpoint on a node unready (or ready), while probing; then the
/// checks, and the probes lost. With `silent`, a router fails without losing
/// carrier: every packet in its namespace is dropped (iptables), as a hung
/// forwarding plane or a reload that keeps the links up would; only BFD (or
/// the hold timer) notices. `recover` undoes whichever failure is in effect.
pub fn fail(file: &Path, what: &str, recover: bool, silent: bool) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let mut st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    let t = target(&lab, what)?;
    if silent && !matches!(t, Target::Router(_)) {
        bail!("--silent fails a router: {what:?} is a segment or an endpoint");
    }
    if !recover && st.faults.iter().any(|f| f == what) {
        bail!("{what} has failed already (`bgpd lab recover {} {what}` first)", file.display());
    }
    let endpoint = matches!(t, Target::Endpoint { .. });
    if recover && !endpoint && !st.faults.iter().any(|f| f == what) {
        bail!("{what} has not failed (`bgpd lab status {}` lists the faults in effect)", file.display());
    }
    let verb = match (recover, silent) {
        (true, _) => "recover",
        (false, true) => "fail (silent)",
        (false, false) => "fail",
    };
    let (ok, _) = drill(&lab, &mut st, &bgpd, &format!("{verb} {what}"), Drill::probing_all(300), |lab, st| {
        match &t {
            Target::Router(r) if st.silent.contains(r) || (silent && !recover) => {
                net::silence(&lab.topo.netns(r), !recover)?;
                st.silent.retain(|x| x != r);
                if !recover {
                    st.silent.push(r.clone());
                }
            }
            Target::Router(r) => {
                let m = &lab.topo.members[r];
                for seg in m.segments() {
                    net::ip_in(&lab.topo.netns(r), &["link", "set", seg, if recover { "up" } else { "down" }])?;
                }
            }
            Target::Segment(seg) => {
                let members = lab.topo.segments.iter().find(|s| s.name == *seg).map(|s| s.members.clone());
                for m in members.unwrap_or_default() {
                    net::ip_in(&lab.topo.netns(&m), &["link", "set", seg, if recover { "up" } else { "down" }])?;
                }
            }
            Target::Endpoint { service, node } => {
                set_endpoint(lab, st, service, node, recover)?;
                write_datastores(lab, st)?;
            }
        }
        st.faults.retain(|f| f != what);
        if !recover {
            st.faults.push(what.to_string());
        }
        Ok(())
    })?;
    Ok(ok)
}

/// The bgpd processes the lab runs: every node's (but stopped ones) and
/// every bgpd router's, by member name.
fn bgpd_members(lab: &Lab, st: &State) -> Vec<String> {
    let nodes = lab.topo.nodes().map(|n| n.name.clone()).filter(|n| !st.stopped.contains(n) && !st.bird.contains(n));
    let routers = lab
        .topo
        .routers()
        .filter(|r| matches!(r.role, Role::Router { implementation: spec::Implementation::Bgpd, .. }))
        .map(|r| r.name.clone());
    nodes.chain(routers).collect()
}

/// Stops `member`'s bgpd (SIGTERM: a graceful restart; with `kill`,
/// SIGKILL: a crash), waits until it is gone (SIGKILL after 10 s), and
/// returns its process record, removed from the state.
fn stop_bgpd(st: &mut State, member: &str, kill: bool) -> anyhow::Result<Proc> {
    stop_proc(st, &format!("{member}/bgpd"), kill)
}

/// Stops the lab's process `name` (`MEMBER/PROGRAM`) as [`stop_bgpd`] does.
fn stop_proc(st: &mut State, name: &str, kill: bool) -> anyhow::Result<Proc> {
    let i = st.procs.iter().position(|p| p.name == name).with_context(|| format!("{name} is not running"))?;
    let old = st.procs.remove(i);
    net::signal(old.pid, if kill { "KILL" } else { "TERM" });
    let exe = old.argv.first().cloned().unwrap_or_default();
    let t0 = Instant::now();
    while net::alive(old.pid, &exe) {
        if t0.elapsed() > Duration::from_secs(10) {
            net::signal(old.pid, "KILL");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(old)
}

/// Starts a bgpd again as it ran before ([`stop_bgpd`]), its old log kept as `.log.1`.
fn start_bgpd(lab: &Lab, st: &mut State, old: &Proc) -> anyhow::Result<()> {
    let _ = std::fs::rename(&old.log, old.log.with_extension("log.1"));
    lab.start(st, &old.name, &old.ns, old.argv.clone(), old.log.clone())
}

/// `bgpd lab restart FILE TARGET… [--signal term|kill]`: stops the bgpd of
/// each node or bgpd router named (SIGTERM by default, as Kubernetes stops a
/// pod; SIGKILL as a crash), all at once, and starts them again. With
/// graceful restart the kernels keep their routes and the peers keep theirs,
/// so no probe may be lost.
pub fn restart(file: &Path, targets: &[String], kill: bool) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let mut st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    let known = bgpd_members(&lab, &st);
    if let Some(t) = targets.iter().find(|t| !known.contains(t)) {
        bail!("{t:?} is not a running node or bgpd router of lab {} ({})", lab.topo.name, known.join(", "));
    }
    let how = if kill { "SIGKILL" } else { "SIGTERM" };
    let what = format!("restart {}'s bgpd ({how})", targets.join(" and "));
    let (ok, lost) = drill(&lab, &mut st, &bgpd, &what, Drill::probing_all(300), |lab, st| {
        let old: Vec<Proc> = targets.iter().map(|t| stop_bgpd(st, t, kill)).collect::<anyhow::Result<_>>()?;
        old.iter().try_for_each(|p| start_bgpd(lab, st, p))
    })?;
    if lost > 0 {
        println!("restart lost {lost} probes (target: 0)");
    }
    Ok(ok && lost == 0)
}

/// `bgpd lab stop FILE NODE [--crash]`: takes a node down for good. By
/// default as an operator would: its bgpd decommissions (`bgpd stop
/// --withdraw`: routes sent with GRACEFUL_SHUTDOWN, a drain, then Cease);
/// with `crash`, SIGKILL. Then the machine goes off: its links go down, its
/// service endpoints turn unready, and its pods are no longer probed.
pub fn stop(file: &Path, node: &str, crash: bool) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let mut st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    if !lab.topo.nodes().any(|n| n.name == node) || st.stopped.iter().any(|n| n == node) {
        bail!("{node:?} is not a running node of lab {}", lab.topo.name);
    }
    let bird = st.bird.iter().any(|n| n == node);
    if bird && !crash {
        bail!("{node} runs Calico's BIRD, which has no decommission: `--crash`, or `bgpd lab migrate` it first");
    }
    let what = if crash { format!("{node} fails (SIGKILL, links down)") } else { format!("decommission {node}") };
    let (ok, lost) = drill(&lab, &mut st, &bgpd, &what, Drill { max_secs: 300, unprobed: Some(node) }, |lab, st| {
        if bird {
            stop_proc(st, &format!("{node}/bird"), true)?;
        } else if crash {
            stop_bgpd(st, node, true)?;
        } else {
            let sock = lab.node_socket(node);
            let out = Command::new(&bgpd)
                .args(["stop", "--withdraw", "--drain", &LAB_DRAIN.as_secs().to_string(), "--control-socket"])
                .arg(&sock)
                .output()
                .context("running bgpd stop --withdraw")?;
            if !out.status.success() {
                bail!("bgpd stop --withdraw on {node}: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            print!("{}", String::from_utf8_lossy(&out.stdout));
            // It exits once decommissioned.
            stop_bgpd(st, node, false)?;
        }
        for seg in lab.topo.members[node].segments() {
            net::ip_in(&lab.topo.netns(node), &["link", "set", seg, "down"])?;
        }
        let keys: Vec<String> = lab.topo.services.iter().map(|s| s.key.clone()).collect();
        for k in keys {
            if st.endpoints.contains_key(&endpoint_key(&k, node)) {
                st.endpoints.insert(endpoint_key(&k, node), false);
            }
        }
        st.stopped.push(node.to_string());
        write_datastores(lab, st)
    })?;
    Ok(ok && lost == 0)
}

/// How long `lab stop` lets traffic move away from a decommissioned node.
const LAB_DRAIN: Duration = Duration::from_secs(3);

/// `bgpd lab start FILE NODE`: brings a node taken down by `stop` back: its
/// links up, its bgpd started (a clean start), its endpoints as the
/// template says.
pub fn start(file: &Path, node: &str) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let mut st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    if !st.stopped.iter().any(|n| n == node) {
        bail!("{node:?} is not a node that `bgpd lab stop` took down");
    }
    let (ok, lost) =
        drill(&lab, &mut st, &bgpd, &format!("start {node} again"), Drill::probing_all(300), |lab, st| {
            for seg in lab.topo.members[node].segments() {
                net::ip_in(&lab.topo.netns(node), &["link", "set", seg, "up"])?;
            }
            st.stopped.retain(|n| n != node);
            for s in lab.topo.services.clone() {
                for (n, ready) in s.endpoints.iter().filter(|(n, _)| n == node) {
                    set_endpoint(lab, st, &s.key, n, *ready)?;
                }
            }
            write_datastores(lab, st)?;
            if st.bird.iter().any(|n| n == node) {
                start_calico_bird(lab, st, node)
            } else {
                start_node(lab, st, &bgpd, node, &[])
            }
        })?;
    Ok(ok && lost == 0)
}

/// `bgpd lab upgrade FILE`: every node's and bgpd router's bgpd restarted
/// with SIGTERM, one at a time, each once the checks pass again after the
/// one before (its deferral over: a DaemonSet update with maxUnavailable 1
/// waits for readiness), probing throughout.
pub fn upgrade(file: &Path) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let mut st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    let members = bgpd_members(&lab, &st);
    let budget = 60 + 90 * members.len() as u64;
    let what = format!("upgrade: restart {} one at a time (SIGTERM)", members.join(", "));
    let (ok, lost) = drill(&lab, &mut st, &bgpd, &what, Drill::probing_all(budget), |lab, st| {
        for m in &members {
            let t0 = Instant::now();
            let old = stop_bgpd(st, m, false)?;
            start_bgpd(lab, st, &old)?;
            lab.save(st)?;
            let (ok, report) = converge(lab, st, &bgpd, CONVERGE);
            if !ok {
                print!("{report}");
                bail!("after restarting {m}'s bgpd the checks did not pass");
            }
            println!("  {m}: restarted and ready again in {:.1} s", t0.elapsed().as_secs_f64());
        }
        Ok(())
    })?;
    if lost > 0 {
        println!("upgrade lost {lost} probes (target: 0)");
    }
    Ok(ok && lost == 0)
}

/// `bgpd lab migrate FILE NODE`: replaces a node's Calico BIRD with bgpd,
/// as docs/migration.md does on a real node, while probing. BIRD is killed
/// (SIGKILL: no NOTIFICATION, so every peer keeps the node's routes as a
/// graceful restart helper, and its kernel routes stay: `persist`), and bgpd
/// starts on the same datastore with `--take-over bird`: it restarts the
/// sessions as a restarting speaker that kept its forwarding state, and once
/// its own routes are in, removes BIRD's. Fails if a probe is lost or a
/// route of BIRD's is left.
pub fn migrate(file: &Path, node: &str) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let mut st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    if !st.bird.iter().any(|n| n == node) {
        let bird = if st.bird.is_empty() { "none".to_string() } else { st.bird.join(", ") };
        bail!("{node:?} does not run Calico's BIRD in lab {} (those that do: {bird})", lab.topo.name);
    }
    let what = format!("migrate {node} from Calico's BIRD to bgpd");
    let (ok, lost) = drill(&lab, &mut st, &bgpd, &what, Drill::probing_all(300), |lab, st| {
        stop_proc(st, &format!("{node}/bird"), true)?;
        st.bird.retain(|n| n != node);
        start_node(lab, st, &bgpd, node, &["--take-over", "bird"])
    })?;
    // bgpd removes BIRD's routes once its deferral is over and its own are in.
    let ns = lab.topo.netns(node);
    let left = |ns: &str| -> usize {
        ["-4", "-6"]
            .iter()
            .map(|f| net::ip_in(ns, &[f, "route", "show", "proto", "bird"]).map_or(0, |o| o.lines().count()))
            .sum()
    };
    let t0 = Instant::now();
    while left(&ns) > 0 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let n = left(&ns);
    if n > 0 {
        println!("migrate {node}: {n} routes of BIRD's are still in its kernel (want 0)");
    } else {
        println!("migrate {node}: no route of BIRD's is left in its kernel");
    }
    if lost > 0 {
        println!("migrate lost {lost} probes (target: 0)");
    }
    Ok(ok && lost == 0 && n == 0)
}

/// How a drill probes.
struct Drill<'a> {
    /// The probers stop by themselves after this long.
    max_secs: u64,
    /// A node whose pods are not probed (the drill takes it down).
    unprobed: Option<&'a str>,
}

impl Drill<'_> {
    fn probing_all(max_secs: u64) -> Drill<'static> {
        Drill { max_secs, unprobed: None }
    }
}

/// Runs `event` while every source probes every target each 200 ms; waits
/// for the checks to pass again; reports the probes lost. Returns (checks
/// passed, probes lost).
fn drill(
    lab: &Lab,
    st: &mut State,
    bgpd: &Path,
    what: &str,
    drill: Drill<'_>,
    event: impl FnOnce(&Lab, &mut State) -> anyhow::Result<()>,
) -> anyhow::Result<(bool, u64)> {
    let stop = lab.dir.join("probe.stop");
    let _ = std::fs::remove_file(&stop);
    let max_secs = drill.max_secs;
    // The pods of a node the drill takes down are not probed (nor services
    // whose only endpoints are there).
    let mut view = st.clone();
    view.stopped.extend(drill.unprobed.map(str::to_string));
    let plan = probe_plan(lab, &view);
    let mut loops = Vec::new();
    for (src, ns, targets) in &plan {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(bgpd).args(["lab", "probe", "--interval-ms", "200", "--stop-file"]);
        cmd.arg(&stop).args(["--max-secs", &max_secs.to_string()]).args(targets.iter().map(|(t, _)| t.to_string()));
        cmd.stdout(std::process::Stdio::piped());
        loops.push((src.clone(), cmd.spawn().context("cannot start a prober")?));
    }
    // The probers stop whatever happens below (they would probe on, to
    // their time limit, after a failed event).
    struct StopProbers<'a>(&'a Path);
    impl Drop for StopProbers<'_> {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0, b"");
        }
    }
    let stop_guard = StopProbers(&stop);
    std::thread::sleep(Duration::from_secs(2));
    println!("lab {}: {what}", lab.topo.name);
    let t0 = Instant::now();
    let happened = event(lab, st);
    lab.save(st)?;
    happened?;
    let (ok, report) = converge(lab, st, bgpd, CONVERGE);
    let settled = t0.elapsed();
    // Keep probing a while after convergence: stale routes a peer sweeps at
    // End-of-RIB, or a late withdrawal, would show here.
    std::thread::sleep(Duration::from_secs(5));
    drop(stop_guard);
    let mut sent = 0;
    let mut lost = 0;
    let mut lines = String::new();
    // The longest failure window of any probed flow: (ms, source, target).
    let mut outage: Option<(u64, String, SocketAddr)> = None;
    for (src, child) in loops {
        let out = child.wait_with_output()?;
        let Some(c) = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<probe::LoopCounts>(l).ok())
        else {
            let _ = writeln!(lines, "  {src}: the prober did not report");
            lost += 1;
            continue;
        };
        sent += c.sent;
        lost += c.failed;
        for (t, e, n) in &c.failures {
            let _ = writeln!(lines, "  {src} -> {t}: {n} lost ({e})");
        }
        for (t, ms) in &c.outages {
            if outage.as_ref().is_none_or(|(m, ..)| ms > m) {
                outage = Some((*ms, src.clone(), *t));
            }
        }
    }
    let _ = std::fs::remove_file(&stop);
    print!("{report}");
    println!(
        "drill {what}: checks {} {:.1} s after the event; {lost} of {sent} probes lost during it",
        if ok { "passed" } else { "FAILED" },
        settled.as_secs_f64()
    );
    if let Some((ms, src, t)) = &outage {
        println!("drill {what}: probes failed for {:.1} s at most ({src} -> {t})", *ms as f64 / 1000.0);
    }
    print!("{lines}");
    Ok((ok, lost))
}

/// `bgpd lab check FILE`: the checks once more (after a drill, say).
pub fn check(file: &Path) -> anyhow::Result<bool> {
    let lab = Lab::load(file)?;
    let st = lab.read_state()?;
    let (bgpd, _) = binaries()?;
    let (ok, report) = converge(&lab, &st, &bgpd, CONVERGE);
    print!("{}", settled_routes(&lab, &st));
    print!("{report}");
    Ok(ok)
}

//! `bench verify`: how long `bgpd verify` takes on a large design, and how much
//! memory (issue 14).
//!
//! The design is generated as template text, so that it goes through the same
//! parsing as a user's template (`Topology::parse`): `N` nodes in racks of
//! `--per-rack` (default 25: 1,000 nodes are 40 racks), an AS per rack, two ToRs
//! per rack on an L2 segment each (every node of the rack on both), one spine
//! with a point-to-point uplink to every ToR, a pool per rack, and 10
//! LoadBalancer services with `externalTrafficPolicy: Local`, each with ready
//! endpoints on three nodes in different racks (anycast over the spine).
//!
//! ```text
//!                           spine (AS 64512)
//!            segment up-r1  /   \      …      /   \  segment up-r40
//!   tor-r1a  tor-r1b (AS 65001)   …   tor-r40a  tor-r40b (AS 65040)
//!   segment r1a  r1b                   segment r40a  r40b
//!      node-1 … node-25 (AS 64601)        node-976 … node-1000 (AS 64640)
//! ```
//!
//! Every router is `implementation: bgpd`: `verify` configures it through the
//! daemon's own datastore parser and planner (the datastore `bgpd lab` writes
//! for it), so what is simulated is what would run, not an approximation
//! (BIRD and FRR routers are approximated by a speaker configured as their
//! lab configuration says). Both ToRs of a rack share its ToR AS; the nodes of
//! a rack share the rack's AS and accept their rack mates' routes back through
//! a ToR with `numAllowedLocalASNumbers: 1`, as in
//! `templates/l3-tor-per-rack.yaml`; nodes use both ToRs (ECMP) as in
//! `templates/dual-tor-ecmp.yaml`. A rack's two ToRs and the spine share one
//! uplink segment (a /29; each ToR peers with the spine and its rack's nodes
//! only, not with the other ToR), so that both ToRs advertise it alike and
//! the nodes reach it, like every other prefix, through both.
//!
//! Each size runs in a child process (this binary again, `--one N`), so that the
//! peak resident memory (`VmHWM`) is that size's own. The child loads the
//! template, simulates it to convergence and runs every check (the figure
//! `bgpd verify FILE` would take), then with `--failures` every single ToR
//! failure. A child that runs past `--timeout` is killed: the benchmark stops by
//! itself.

use std::fmt::Write as _;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bgpd_lab::spec::Topology;
use bgpd_lab::verify::report::{Report, Severity};
use bgpd_lab::verify::sim::Scenario;
use bgpd_lab::verify::{self, Options};

use super::args::Flags;

/// The generated design's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Nodes in all.
    pub nodes: usize,
    /// Nodes per rack (the last rack may have fewer).
    pub per_rack: usize,
    /// Pods per node.
    pub pods: u32,
    /// LoadBalancer services.
    pub services: usize,
    /// Ready endpoints per service, on nodes in different racks.
    pub endpoints: usize,
}

/// At most this many racks: their ASes (65000 + rack for the ToRs, 64600 + rack
/// for the nodes) must not meet.
pub const MAX_RACKS: usize = 399;
/// At most this many nodes per rack: their addresses are .11 to .254 of the rack's /24s.
pub const MAX_PER_RACK: usize = 240;
/// At most this many services: their addresses are 192.0.2.10 and up.
pub const MAX_SERVICES: usize = 240;

impl Shape {
    /// `nodes` nodes in racks of 25, a pod each, 10 services with 3 endpoints each.
    pub fn new(nodes: usize) -> Shape {
        Shape { nodes, per_rack: 25, pods: 1, services: 10, endpoints: 3 }
    }

    /// How many racks.
    pub fn racks(&self) -> usize {
        self.nodes.div_ceil(self.per_rack.max(1))
    }

    /// The rack (1-based) of node `i` (1-based).
    fn rack_of(&self, i: usize) -> usize {
        (i - 1) / self.per_rack + 1
    }

    /// The names of the ToRs, `tor-rRa` and `tor-rRb` per rack.
    pub fn tors(&self) -> Vec<String> {
        (1..=self.racks()).flat_map(|r| [format!("tor-r{r}a"), format!("tor-r{r}b")]).collect()
    }

    fn check(&self) -> Result<(), String> {
        if self.nodes == 0 || self.per_rack == 0 || self.pods == 0 {
            return Err("nodes, nodes per rack and pods per node must be at least 1".into());
        }
        if self.racks() > MAX_RACKS || self.per_rack > MAX_PER_RACK || self.services > MAX_SERVICES {
            return Err(format!(
                "at most {MAX_RACKS} racks of {MAX_PER_RACK} nodes and {MAX_SERVICES} services (asked: {} racks of {}, \
                 {} services)",
                self.racks(),
                self.per_rack,
                self.services
            ));
        }
        if self.endpoints == 0 || self.endpoints > self.nodes {
            return Err(format!("endpoints per service: 1 to {} (the nodes)", self.nodes));
        }
        Ok(())
    }

    /// The nodes (1-based) with a ready endpoint of service `s` (0-based):
    /// spread over the design, so that they fall in different racks.
    fn endpoint_nodes(&self, s: usize) -> Vec<usize> {
        let stride = self.nodes / self.endpoints;
        let mut out: Vec<usize> = (0..self.endpoints).map(|k| (s * 7 + k * stride) % self.nodes + 1).collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Rack `r`'s uplink segment: the spine's, ToR a's and ToR b's addresses in a /29 of 10.254.0.0/16.
fn uplink(r: usize) -> [String; 3] {
    let base = r * 8;
    let (hi, lo) = (base / 256, base % 256);
    [1, 2, 3].map(|h| format!("10.254.{hi}.{}/29", lo + h))
}

/// The rack's pool: a /20 in 10.128.0.0/10 (64 blocks of /26).
fn rack_pool(r: usize) -> String {
    let base = r * 16;
    format!("10.{}.{}.0/20", 128 + base / 256, base % 256)
}

/// The design as a template, in the format of `templates/*.yaml`.
pub fn template(shape: &Shape) -> Result<String, String> {
    shape.check()?;
    let racks = shape.racks();
    let mut y = String::new();
    let _ = write!(
        y,
        "# Generated by `bench verify`: {} nodes in {racks} racks of {}, two ToRs per rack, one spine.\n\
         apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\n\
         spec:\n  nodeToNodeMeshEnabled: false\n  asNumber: 64512\n  serviceLoadBalancerIPs: [{{cidr: 192.0.2.0/24}}]\n",
        shape.nodes, shape.per_rack
    );
    for i in 1..=shape.nodes {
        let r = shape.rack_of(i);
        let host = 10 + (i - 1) % shape.per_rack + 1;
        let _ = write!(
            y,
            "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: node-{i}, labels: {{rack: r{r}}}}}\n\
             spec: {{bgp: {{ipv4Address: 10.1.{r}.{host}/24, asNumber: {}}}}}\n",
            64600 + r
        );
    }
    for r in 1..=racks {
        for (side, octet) in [('a', 1), ('b', 2)] {
            let _ = write!(
                y,
                "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: tor-r{r}{side}}}\n\
                 spec: {{nodeSelector: rack == 'r{r}', peerIP: 10.{octet}.{r}.1, asNumber: {}, numAllowedLocalASNumbers: 1}}\n",
                65000 + r
            );
        }
        let _ = write!(
            y,
            "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: rack{r}}}\n\
             spec: {{cidr: {}, blockSize: 26, nodeSelector: rack == 'r{r}'}}\n",
            rack_pool(r)
        );
    }
    for s in 0..shape.services {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: default}}\n\
             spec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  clusterIP: 10.96.0.{ip}\n  \
             ports: [{{port: 7070, protocol: TCP}}]\nstatus:\n  loadBalancer: {{ingress: [{{ip: 192.0.2.{ip}}}]}}\n",
            ip = 10 + s
        );
    }
    let _ = write!(
        y,
        "---\napiVersion: bgpd.io/v1\nkind: Lab\nmetadata: {{name: bench}}\nspec:\n  podsPerNode: {}\n  routers:\n    \
         - {{name: spine, asNumber: 64512, implementation: bgpd}}\n",
        shape.pods
    );
    for r in 1..=racks {
        let first = (r - 1) * shape.per_rack + 1;
        let last = (r * shape.per_rack).min(shape.nodes);
        let nodes: Vec<String> = (first..=last).map(|i| format!("node-{i}")).collect();
        for side in ['a', 'b'] {
            let _ = writeln!(
                y,
                "    - {{name: tor-r{r}{side}, asNumber: {}, implementation: bgpd, peers: [spine, {}]}}",
                65000 + r,
                nodes.join(", ")
            );
        }
    }
    y.push_str("  segments:\n");
    for r in 1..=racks {
        let first = (r - 1) * shape.per_rack + 1;
        let last = (r * shape.per_rack).min(shape.nodes);
        for (side, octet) in [('a', 1), ('b', 2)] {
            let _ = write!(y, "    - name: r{r}{side}\n      members:\n        - {{name: tor-r{r}{side}, address: 10.{octet}.{r}.1/24}}\n");
            for i in first..=last {
                if side == 'a' {
                    // The Node's own address (spec.bgp.ipv4Address) is on segment a.
                    let _ = writeln!(y, "        - {{name: node-{i}}}");
                } else {
                    let host = 10 + (i - 1) % shape.per_rack + 1;
                    let _ = writeln!(y, "        - {{name: node-{i}, address: 10.2.{r}.{host}/24}}");
                }
            }
        }
    }
    for r in 1..=racks {
        let [spine, a, b] = uplink(r);
        let _ = write!(
            y,
            "    - name: up-r{r}\n      members: [{{name: spine, address: {spine}}}, {{name: tor-r{r}a, address: {a}}}, \
             {{name: tor-r{r}b, address: {b}}}]\n"
        );
    }
    y.push_str("  services:\n");
    for s in 0..shape.services {
        let eps: Vec<String> = shape.endpoint_nodes(s).iter().map(|n| format!("{{node: node-{n}}}")).collect();
        let _ = writeln!(y, "    - {{name: svc-{s}, endpoints: [{}]}}", eps.join(", "));
    }
    Ok(y)
}

/// What one size measured (one child process).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// The shape measured.
    pub nodes: usize,
    /// Racks.
    pub racks: usize,
    /// Members simulated (nodes and routers).
    pub members: usize,
    /// Sessions configured, and established at the end.
    pub sessions: (usize, usize),
    /// Flows traced (each way counts), and delivered.
    pub traced: (usize, usize),
    /// The simulation converged.
    pub converged: bool,
    /// Problems found (a sound design has none), with the first few summaries.
    pub problems: Vec<String>,
    /// Load, simulate to convergence and check: wall time.
    pub check: Duration,
    /// Peak resident memory after the check (VmHWM), bytes.
    pub check_peak: u64,
    /// With every single ToR failure: the ToRs failed.
    pub failures: usize,
    /// Failure scenarios that did not converge.
    pub failures_unconverged: usize,
    /// Problems the failures found beyond the design's own (a dual-ToR design has none).
    pub failure_problems: Vec<String>,
    /// The whole run with every ToR failure (the design again, then each failure): wall time.
    pub with_failures: Option<Duration>,
    /// Peak resident memory at the end (VmHWM), bytes.
    pub peak: u64,
}

/// The process's peak resident memory, from `/proc/self/status` (`VmHWM`), in bytes.
pub fn peak_rss() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).ok_or("/proc/self/status has no VmHWM")?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|e| format!("VmHWM {line:?}: {e}"))?;
    Ok(kb * 1024)
}

fn problems(r: &Report) -> Vec<String> {
    r.findings.iter().filter(|f| f.severity == Severity::Problem).map(|f| f.summary.clone()).collect()
}

/// Runs one size in this process: generate, then load + simulate + check
/// (timed), then, with `failures`, the same with every single ToR failure (timed).
pub fn measure(shape: &Shape, failures: bool) -> Result<Figures, String> {
    let text = template(shape)?;
    let start = Instant::now();
    let topo = Topology::parse(&text).map_err(|e| format!("the generated template: {e}"))?;
    let report = verify::verify_topology(topo, "bench verify", &Options::default());
    let check = start.elapsed();
    let check_peak = peak_rss()?;
    let (n, r, h) = report.members;
    let mut f = Figures {
        nodes: shape.nodes,
        racks: shape.racks(),
        members: n + r + h,
        sessions: (report.sessions.len(), report.sessions.iter().filter(|s| s.established).count()),
        traced: (report.traces.traced, report.traces.delivered),
        converged: report.converged,
        problems: problems(&report),
        check,
        check_peak,
        ..Figures::default()
    };
    drop(report);
    if failures {
        let scenarios: Vec<Scenario> =
            shape.tors().into_iter().map(|t| Scenario { members: [t].into(), ..Scenario::none() }).collect();
        f.failures = scenarios.len();
        let start = Instant::now();
        let topo = Topology::parse(&text).map_err(|e| format!("the generated template: {e}"))?;
        let report = verify::verify_failures(topo, "bench verify", &Options::default(), scenarios);
        f.with_failures = Some(start.elapsed());
        f.failures_unconverged = report.failures.iter().filter(|o| !o.converged).count();
        f.failure_problems = report
            .failures
            .iter()
            .flat_map(|o| o.findings.iter().filter(|x| x.severity == Severity::Problem))
            .map(|x| x.summary.clone())
            .collect();
    }
    f.peak = peak_rss()?;
    Ok(f)
}

impl Figures {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "nodes": self.nodes,
            "racks": self.racks,
            "members": self.members,
            "sessions": [self.sessions.0, self.sessions.1],
            "traced": [self.traced.0, self.traced.1],
            "converged": self.converged,
            "problems": self.problems,
            "check_s": self.check.as_secs_f64(),
            "check_peak": self.check_peak,
            "failures": self.failures,
            "failures_unconverged": self.failures_unconverged,
            "failure_problems": self.failure_problems,
            "with_failures_s": self.with_failures.map(|d| d.as_secs_f64()),
            "peak": self.peak,
        })
    }

    fn from_json(v: &serde_json::Value) -> Option<Figures> {
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).map(|n| n as usize);
        let pair = |k: &str| {
            let a = v.get(k)?.as_array()?;
            Some((a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize))
        };
        let strings = |k: &str| -> Option<Vec<String>> {
            v.get(k)?.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect()
        };
        let secs = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).map(Duration::from_secs_f64);
        Some(Figures {
            nodes: num("nodes")?,
            racks: num("racks")?,
            members: num("members")?,
            sessions: pair("sessions")?,
            traced: pair("traced")?,
            converged: v.get("converged")?.as_bool()?,
            problems: strings("problems")?,
            check: secs("check_s")?,
            check_peak: v.get("check_peak")?.as_u64()?,
            failures: num("failures")?,
            failures_unconverged: num("failures_unconverged")?,
            failure_problems: strings("failure_problems")?,
            with_failures: secs("with_failures_s"),
            peak: v.get("peak")?.as_u64()?,
        })
    }

    /// Whether the checks found the design sound: converged, every session
    /// up, every traced flow delivered, no problem (and none under any ToR failure).
    pub fn sound(&self) -> bool {
        self.converged
            && self.sessions.0 > 0
            && self.sessions.0 == self.sessions.1
            && self.traced.0 > 0
            && self.traced.0 == self.traced.1
            && self.problems.is_empty()
            && self.failure_problems.is_empty()
            && self.failures_unconverged == 0
    }
}

struct Opts {
    sizes: Vec<usize>,
    per_rack: usize,
    pods: u32,
    failures: bool,
    timeout: Duration,
    one: Option<usize>,
    print_template: Option<usize>,
}

const USAGE: &str = "usage: bench verify [--nodes 100,250,500,1000] [--per-rack 25] [--pods 1] [--failures] \
                     [--timeout SECS (900, per size)] [--template N (print the design of N nodes and stop)]";

/// The largest design the benchmark generates.
pub const MAX_NODES: usize = 20_000;

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        sizes: vec![100, 250, 500, 1000],
        per_rack: 25,
        pods: 1,
        failures: false,
        timeout: Duration::from_secs(900),
        one: None,
        print_template: None,
    };
    let mut flags = Flags::new(args);
    let count = 1..=MAX_NODES;
    while let Some(flag) = flags.next() {
        match flag {
            "--nodes" => {
                let v = flags.value()?;
                o.sizes = v.split(',').map(|s| flags.in_range(s, count.clone())).collect::<Result<_, _>>()?;
            }
            "--per-rack" => o.per_rack = flags.number_in(count.clone())?,
            "--pods" => o.pods = flags.number_in(count.clone())?.min(64) as u32,
            "--failures" => o.failures = true,
            "--timeout" => o.timeout = Duration::from_secs(flags.number_in(count.clone())? as u64),
            "--one" => o.one = Some(flags.number_in(count.clone())?),
            "--template" => o.print_template = Some(flags.number_in(count.clone())?),
            _ => return Err(format!("{}; {USAGE}", flags.unknown())),
        }
    }
    Ok(o)
}

fn shape_of(o: &Opts, nodes: usize) -> Shape {
    Shape { per_rack: o.per_rack, pods: o.pods, ..Shape::new(nodes) }
}

/// Runs one size in a child process (this program, `verify --one N`), killed after `timeout`.
fn child(o: &Opts, nodes: usize) -> Result<Figures, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["verify", "--one", &nodes.to_string(), "--per-rack", &o.per_rack.to_string()]);
    cmd.args(["--pods", &o.pods.to_string()]);
    if o.failures {
        cmd.arg("--failures");
    }
    let mut c = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().map_err(|e| format!("spawn: {e}"))?;
    let deadline = Instant::now() + o.timeout;
    let status = loop {
        match c.try_wait().map_err(|e| format!("wait: {e}"))? {
            Some(s) => break s,
            None if Instant::now() > deadline => {
                let _ = c.kill();
                let _ = c.wait();
                return Err(format!("{nodes} nodes: no result within {} s (killed)", o.timeout.as_secs()));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut out = String::new();
    if let Some(mut s) = c.stdout.take() {
        s.read_to_string(&mut out).map_err(|e| format!("the child's output: {e}"))?;
    }
    if !status.success() {
        return Err(format!("{nodes} nodes: the child failed ({status})"));
    }
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).map_err(|e| format!("the child's output {out:?}: {e}"))?;
    Figures::from_json(&v).ok_or_else(|| format!("the child's output lacks a figure: {out}"))
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// How time grows between two sizes: the exponent k of t ∝ n^k.
fn growth(a: (usize, Duration), b: (usize, Duration)) -> Option<f64> {
    let (na, nb) = (a.0 as f64, b.0 as f64);
    let (ta, tb) = (a.1.as_secs_f64(), b.1.as_secs_f64());
    (na != nb && ta > 0.0 && tb > 0.0).then(|| (tb / ta).ln() / (nb / na).ln())
}

/// The figures as a Markdown table.
pub fn table(all: &[Figures]) -> String {
    let mut t = String::from(
        "| nodes | racks | members | sessions up | flows delivered | sound | load + simulate + check | per node | growth (t ∝ n^k) | peak RSS |",
    );
    let failures = all.iter().any(|f| f.with_failures.is_some());
    if failures {
        t.push_str(" ToR failures | design + every ToR failure | per failure | peak RSS |");
    }
    t.push('\n');
    t.push_str(&"|---".repeat(if failures { 14 } else { 10 }));
    t.push_str("|\n");
    let mut prev: Option<&Figures> = None;
    for f in all {
        let k = prev.and_then(|p| growth((p.nodes, p.check), (f.nodes, f.check)));
        let _ = write!(
            t,
            "| {} | {} | {} | {} of {} | {} of {} | {} | {:.2} s | {:.2} ms | {} | {} |",
            f.nodes,
            f.racks,
            f.members,
            f.sessions.1,
            f.sessions.0,
            f.traced.1,
            f.traced.0,
            if f.sound() { "yes" } else { "**no**" },
            f.check.as_secs_f64(),
            f.check.as_secs_f64() * 1000.0 / f.nodes as f64,
            k.map_or("".into(), |k| format!("{k:.2}")),
            mib(f.check_peak)
        );
        if failures {
            match f.with_failures {
                Some(w) => {
                    let alone = w.saturating_sub(f.check);
                    let _ = write!(
                        t,
                        " {} | {:.1} s | {:.2} s | {} |",
                        f.failures,
                        w.as_secs_f64(),
                        alone.as_secs_f64() / f.failures.max(1) as f64,
                        mib(f.peak)
                    );
                }
                None => t.push_str(" | | | |"),
            }
        }
        t.push('\n');
        prev = Some(f);
    }
    t
}

/// `bench verify [ARGS…]`.
pub fn run(args: &[String]) -> Result<(), String> {
    let o = parse_args(args)?;
    if let Some(n) = o.print_template {
        print!("{}", template(&shape_of(&o, n))?);
        return Ok(());
    }
    if let Some(n) = o.one {
        let f = measure(&shape_of(&o, n), o.failures)?;
        println!("{}", f.to_json());
        return Ok(());
    }
    let mut all = Vec::new();
    for &n in &o.sizes {
        eprintln!("bench verify: {n} nodes{} …", if o.failures { ", then every single ToR failure" } else { "" });
        let f = child(&o, n)?;
        for p in f.problems.iter().chain(&f.failure_problems).take(5) {
            eprintln!("  problem: {p}");
        }
        all.push(f);
        eprint!("{}", table(&all));
    }
    println!("{}", table(&all));
    Ok(())
}

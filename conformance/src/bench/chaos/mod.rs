//! `bench chaos`: bgpd and BIRD 2 under hostile peers and a broken datastore.
//!
//! `bench chaos [--dut bgpd,bird] [--scenario slow-reader,malformed,storm,datastore]
//! [--bgpd PATH] [--routes N] [--slow-routes N] [--slow-sets N] [--slow-secs S]
//! [--flooders N] [--flood-secs S] [--storm-rate N] [--storm-secs S] [--storm-sources N]`
//!
//! Every scenario runs the DUT (AS 64512, 10.77.0.1/24) in a namespace of its own, configured
//! as in `bench routeserver` ([`dut`]: every peer eBGP, everything accepted and passed on),
//! with its peers in a second namespace on one veth. The well-behaved peers are the
//! route-server bench's speakers ([`speaker`]): a tester that sends prebuilt UPDATEs and a
//! monitor (10.77.0.100) that keeps the table the DUT sends it. The hostile peers are in
//! [`peer`]. Scenarios, each run against bgpd then BIRD in the same run:
//!
//! - [`slow_reader`]: a peer that never reads while another sends a full table;
//! - [`malformed`]: peers flooding UPDATEs of every RFC 7606 class;
//! - [`storm`]: a storm of TCP connections to port 179 from addresses not configured;
//! - [`datastore`] (bgpd only): the datastore file rewritten with garbage.
//!
//! Every load is bounded in time and count; namespaces and processes belong to a [`Lab`]
//! and go when it is dropped (also on Ctrl-C).

pub mod datastore;
pub mod malformed;
pub mod peer;
pub mod slow_reader;
pub mod storm;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::args::Flags;
use crate::bench::routeserver::dut::{self, Dut, DutKind};
use crate::bench::routeserver::scenario::{self, Kind, Load, Scenario};
use crate::bench::routeserver::speaker::{self, Control};
use crate::bench::routeserver::{tester_addr, tester_as, DUT_ADDR, INTERRUPTED, MONITOR_ADDR, MONITOR_AS};
use crate::lab::{Lab, Ns};

/// Time allowed for the DUT to start and a session to come up.
const SETUP: Duration = Duration::from_secs(60);
/// Pause once the sessions are up (initial exchanges, End-of-RIB) before a load starts.
const QUIET: Duration = Duration::from_secs(2);
/// How often the samplers look at the DUT.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// One figure of a scenario for one DUT.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// A number shown with this many decimals; ratios are taken between numbers.
    Num(f64, usize),
    /// Anything else (a verdict, a NOTIFICATION, a reason).
    Text(String),
}

/// The figures of one scenario for one DUT, in the order the table shows them.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// (what, value) pairs.
    pub rows: Vec<(String, Val)>,
}

impl Figures {
    /// Adds a number.
    pub fn num(&mut self, what: impl Into<String>, v: f64, digits: usize) {
        self.rows.push((what.into(), Val::Num(v, digits)));
    }

    /// Adds a text.
    pub fn text(&mut self, what: impl Into<String>, v: impl Into<String>) {
        self.rows.push((what.into(), Val::Text(v.into())));
    }
}

/// The Markdown table of one scenario: one column per DUT, then bgpd ÷ BIRD where both
/// are numbers.
pub fn table(results: &[(DutKind, Figures)]) -> String {
    let mut t = String::from("| figure |");
    for (k, _) in results {
        let _ = write!(t, " {} |", k.name());
    }
    let ratio = results.len() == 2 && results[0].0 == DutKind::Bgpd && results[1].0 == DutKind::Bird;
    if ratio {
        t.push_str(" bgpd ÷ bird |");
    }
    t.push('\n');
    t.push_str(&"|---".repeat(results.len() + 1 + usize::from(ratio)));
    t.push_str("|\n");
    let mut names: Vec<&str> = Vec::new();
    for (_, f) in results {
        for (n, _) in &f.rows {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
    }
    let show = |v: Option<&Val>| match v {
        Some(Val::Num(x, d)) => format!("{x:.d$}", d = *d),
        Some(Val::Text(s)) => s.clone(),
        None => "—".into(),
    };
    for n in names {
        let vals: Vec<Option<&Val>> =
            results.iter().map(|(_, f)| f.rows.iter().find(|(m, _)| m == n).map(|(_, v)| v)).collect();
        let _ = write!(t, "| {n} |");
        for v in &vals {
            let _ = write!(t, " {} |", show(*v));
        }
        if ratio {
            let r = match (vals[0], vals[1]) {
                (Some(Val::Num(a, _)), Some(Val::Num(b, _))) if *b != 0.0 => format!("{:.2}", a / b),
                _ => "—".into(),
            };
            let _ = write!(t, " {r} |");
        }
        t.push('\n');
    }
    t
}

// ----- the testbed ---------------------------------------------------------------------------

/// A DUT in its namespace, the peers' namespace, and the run's [`Control`].
pub struct Bed {
    /// The DUT (dropped before the lab).
    pub dut: Option<Dut>,
    /// The DUT's namespace.
    pub dut_ns: Ns,
    /// The peers' namespace.
    pub peers_ns: Ns,
    /// The run's start gate and stop flag (one writer: the tester).
    pub control: Arc<Control>,
    /// The lab (last to go).
    pub lab: Lab,
}

impl Bed {
    /// A lab with the DUT (configured with `peers`) and, in the peers' namespace, the peers'
    /// addresses plus `extra` ones; `run_for` bounds the whole run after setup.
    pub fn new(
        tag: &str,
        kind: DutKind,
        peers: &[dut::Peer],
        extra: &[Ipv4Addr],
        bgpd: Option<&Path>,
        run_for: Duration,
    ) -> Result<Bed, String> {
        let lab = Lab::new(&format!("chaos {tag} {}", kind.name())).map_err(|e| format!("lab: {e}"))?;
        let dut_ns = lab.netns("dut").map_err(|e| format!("netns: {e}"))?;
        let peers_ns = lab.netns("peers").map_err(|e| format!("netns: {e}"))?;
        let addrs: Vec<String> =
            peers.iter().map(|p| p.addr).chain(extra.iter().copied()).map(|a| format!("{a}/24")).collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        lab.veth(&dut_ns, "rs0", &[&format!("{DUT_ADDR}/24")], &peers_ns, "rs0", &refs)
            .map_err(|e| format!("veth: {e}"))?;
        let dut = Dut::start(&lab, &dut_ns, kind, peers, bgpd)?;
        let control = Control::new(1, Instant::now() + SETUP + QUIET + run_for + Duration::from_secs(30), &INTERRUPTED);
        Ok(Bed { dut: Some(dut), dut_ns, peers_ns, control, lab })
    }

    /// The DUT.
    pub fn dut(&self) -> Result<&Dut, String> {
        self.dut.as_ref().ok_or_else(|| "no DUT".to_string())
    }

    /// Whether the DUT still runs.
    pub fn alive(&self) -> bool {
        self.dut.as_ref().is_some_and(|d| d.alive(&self.lab))
    }

    /// The first error a tester or the monitor hit (a session closed by the DUT, say).
    pub fn speaker_error(&self) -> Option<String> {
        self.control.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.control.request_stop();
        self.dut = None;
    }
}

/// The good tester's (10.77.0.11, AS 65001) load: `routes` distinct /24s in `sets` attribute
/// sets, and the table the monitor must then hold.
pub fn good_load(routes: usize, sets: usize) -> Result<Load, String> {
    scenario::build(&Scenario {
        name: "chaos".into(),
        testers: 1,
        kind: Kind::Distinct { prefixes: routes, sets: sets.clamp(1, routes) },
    })
}

/// The DUT's peer entry for the good tester.
pub fn good_peer() -> dut::Peer {
    dut::Peer { name: "t1".into(), addr: tester_addr(0), asn: tester_as(0) }
}

/// The DUT's peer entry for the monitor.
pub fn monitor_peer() -> dut::Peer {
    dut::Peer { name: "monitor".into(), addr: MONITOR_ADDR, asn: MONITOR_AS }
}

/// The monitor and the good tester, connected; the tester writes once the gate opens.
pub struct Speakers {
    monitor: std::thread::JoinHandle<speaker::Table>,
    tester: speaker::Tester,
}

impl Speakers {
    /// Connects the monitor, then the tester with `load`'s single stream.
    pub fn connect(bed: &Bed, load: &Load) -> Result<Speakers, String> {
        let deadline = Instant::now() + SETUP;
        let c = &bed.control;
        let est = speaker::connect(&bed.peers_ns, "monitor", MONITOR_ADDR, DUT_ADDR, MONITOR_AS, deadline, c)?;
        let monitor = speaker::spawn_monitor(est, load.expected.clone(), c.clone())?;
        let est = speaker::connect(&bed.peers_ns, "t1", tester_addr(0), DUT_ADDR, tester_as(0), deadline, c)?;
        let stream = load.streams.first().cloned().ok_or("the load has no stream")?;
        let tester = speaker::Tester::spawn(est, stream, c.clone())?;
        Ok(Speakers { monitor, tester })
    }

    /// Stops them (the control's stop) and waits for their threads.
    pub fn finish(self, control: &Control) {
        control.request_stop();
        let _ = self.tester.join();
        let _ = self.monitor.join();
    }
}

/// How long the monitor may take to hold the good tester's table.
const GOOD_TABLE_LIMIT: Duration = Duration::from_secs(120);

/// Opens the gate and waits until the monitor holds the good tester's `routes` routes:
/// the seconds from the gate, or an error once [`GOOD_TABLE_LIMIT`] passed.
pub fn load_good_table(control: &Control, routes: usize) -> Result<f64, String> {
    let t0 = control.open_gate();
    control
        .wait_done(t0 + GOOD_TABLE_LIMIT)
        .map(|d| d.saturating_duration_since(t0).as_secs_f64())
        .ok_or_else(|| format!("the monitor never held the good tester's {routes} routes"))
}

/// What the samplers saw while a load ran.
#[derive(Clone, Copy, Debug, Default)]
pub struct Samples {
    /// The highest VmRSS sampled (KiB, all the DUT's processes).
    pub peak_rss_kib: u64,
    /// The fewest expected routes the monitor held at a sample.
    pub min_progress: u64,
    /// Samples taken.
    pub count: u64,
}

/// Samples the DUT's VmRSS and the monitor's progress every [`SAMPLE_EVERY`] while `f`
/// runs; returns `f`'s result and the samples.
pub fn sampled<T>(dut: &Dut, control: &Control, f: impl FnOnce() -> T) -> (T, Samples) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut out = Samples { min_progress: u64::MAX, ..Samples::default() };
            while !done.load(Ordering::Relaxed) {
                if let Ok((rss, _)) = dut.memory_kib() {
                    out.peak_rss_kib = out.peak_rss_kib.max(rss);
                }
                out.min_progress = out.min_progress.min(control.progress.load(Ordering::Relaxed));
                out.count += 1;
                std::thread::sleep(SAMPLE_EVERY);
            }
            out
        });
        let r = f();
        done.store(true, Ordering::Relaxed);
        (r, sampler.join().unwrap_or_default())
    })
}

/// Sleeps until `until`, or less if the bench is interrupted.
pub fn sleep_until(until: Instant) {
    while Instant::now() < until && !INTERRUPTED.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
    }
}

/// KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The DUT's view of peer `name`: bgpd's state from `bgpd show peers`, BIRD's protocol line
/// from `birdc show protocols NAME`.
pub fn dut_peer_state(bed: &Bed, kind: DutKind, bgpd: Option<&Path>, name: &str) -> String {
    let dir = bed.lab.dir();
    match kind {
        DutKind::Bgpd => {
            let Some(bin) = bgpd else { return "?".into() };
            match crate::bench::sessions::bgpd_show_json(bin, &dir.join("bgpd.sock"), "peers") {
                Ok(v) => v["peers"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["name"] == name))
                    .and_then(|p| p["state"].as_str())
                    .unwrap_or("?")
                    .to_string(),
                Err(e) => format!("? ({e})"),
            }
        }
        DutKind::Bird => {
            let out = std::process::Command::new("birdc")
                .arg("-s")
                .arg(dir.join("bird.ctl"))
                .args(["show", "protocols", name])
                .output();
            match out {
                Ok(o) => {
                    let text = String::from_utf8_lossy(&o.stdout);
                    // "t2  BGP  ---  up  12:00:00.000  Established"
                    text.lines()
                        .find(|l| l.starts_with(name))
                        .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
                        .unwrap_or_else(|| "?".into())
                }
                Err(e) => format!("? (birdc: {e})"),
            }
        }
        _ => "?".into(),
    }
}

// ----- the command line ----------------------------------------------------------------------

/// The scenario names `--scenario` takes, in the order they run.
pub const SCENARIOS: [&str; 4] = ["slow-reader", "malformed", "storm", "datastore"];

/// Parameters of a run (see the module's usage line; defaults as documented there).
#[derive(Clone, Debug)]
pub struct Options {
    /// DUTs, in order.
    pub duts: Vec<DutKind>,
    /// Scenarios, in order.
    pub scenarios: Vec<String>,
    /// The bgpd binary (found next to the bench when not given).
    pub bgpd: Option<PathBuf>,
    /// Routes of the good tester in the malformed, storm and datastore scenarios.
    pub routes: usize,
    /// Routes peer B sends in the slow-reader scenario.
    pub slow_routes: usize,
    /// Attribute sets those routes come in.
    pub slow_sets: usize,
    /// How long peer A does not read.
    pub slow_secs: u64,
    /// Peers sending malformed UPDATEs.
    pub flooders: usize,
    /// How long they send.
    pub flood_secs: u64,
    /// Connection attempts per second in the storm.
    pub storm_rate: u64,
    /// How long the storm lasts.
    pub storm_secs: u64,
    /// Source addresses of the storm.
    pub storm_sources: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            duts: vec![DutKind::Bgpd, DutKind::Bird],
            scenarios: SCENARIOS.iter().map(|s| s.to_string()).collect(),
            bgpd: None,
            routes: 10_000,
            slow_routes: 1_000_000,
            slow_sets: 4,
            slow_secs: 60,
            flooders: 100,
            flood_secs: 10,
            storm_rate: 10_000,
            storm_secs: 10,
            storm_sources: 32,
        }
    }
}

const USAGE: &str = "usage: chaos [--dut bgpd,bird] [--scenario slow-reader,malformed,storm,datastore] [--bgpd PATH] \
                     [--routes N] [--slow-routes N] [--slow-sets N] [--slow-secs S] [--flooders N] [--flood-secs S] \
                     [--storm-rate N] [--storm-secs S] [--storm-sources N]";

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next() {
        match flag {
            "--dut" => {
                let v = flags.value()?;
                o.duts = v.split(',').map(DutKind::parse).collect::<Result<_, _>>()?;
                if let Some(k) = o.duts.iter().find(|k| !matches!(k, DutKind::Bgpd | DutKind::Bird)) {
                    return Err(format!("--dut {}: chaos runs bgpd and bird only", k.name()));
                }
            }
            "--scenario" => {
                o.scenarios = flags.value()?.split(',').map(str::to_string).collect();
                if let Some(s) = o.scenarios.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
                    return Err(format!("unknown scenario {s:?}; known: {}", SCENARIOS.join(", ")));
                }
            }
            "--bgpd" => o.bgpd = Some(PathBuf::from(flags.value()?)),
            "--routes" => o.routes = flags.number_in(1..=1_000_000)?,
            "--slow-routes" => o.slow_routes = flags.number_in(1..=4_000_000)?,
            "--slow-sets" => o.slow_sets = flags.number_in(1..=100_000)?,
            "--slow-secs" => o.slow_secs = flags.number_in(1..=600)?,
            "--flooders" => o.flooders = flags.number_in(1..=malformed::MAX_FLOODERS)?,
            "--flood-secs" => o.flood_secs = flags.number_in(1..=600)?,
            "--storm-rate" => o.storm_rate = flags.number_in(1..=100_000)?,
            "--storm-secs" => o.storm_secs = flags.number_in(1..=600)?,
            "--storm-sources" => o.storm_sources = flags.number_in(1..=storm::MAX_SOURCES)?,
            _ => return Err(format!("{}; {USAGE}", flags.unknown())),
        }
    }
    Ok(o)
}

/// Runs the chaos benchmark with the arguments after `chaos`.
pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse_args(args)?;
    if !rustix::process::geteuid().is_root() {
        return Err("needs root (network namespaces, port 179)".into());
    }
    crate::bench::routeserver::install_signal_handler()?;
    let bgpd = if opts.duts.contains(&DutKind::Bgpd) {
        Some(testgate::testbed::bgpd_binary(opts.bgpd.clone())?)
    } else {
        None
    };
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# chaos benchmark: DUTs {}, scenarios {}, {} CPUs, load average {}",
        opts.duts.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
        opts.scenarios.join(","),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load_avg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let mut tables = Vec::new();
    for name in &opts.scenarios {
        let mut results = Vec::new();
        for kind in &opts.duts {
            if INTERRUPTED.load(Ordering::SeqCst) {
                break;
            }
            if name == "datastore" && *kind != DutKind::Bgpd {
                continue;
            }
            let b = bgpd.as_deref();
            let t = Instant::now();
            let r = match name.as_str() {
                "slow-reader" => slow_reader::run(*kind, b, &opts),
                "malformed" => malformed::run(*kind, b, &opts),
                "storm" => storm::run(*kind, b, &opts),
                _ => datastore::run(b, &opts),
            };
            match r {
                Ok(f) => {
                    println!("# {name} {}: done in {:.0} s", kind.name(), t.elapsed().as_secs_f64());
                    for (what, v) in &f.rows {
                        println!("{name} {} {what}: {}", kind.name(), table_cell(v));
                    }
                    results.push((*kind, f));
                }
                Err(e) => println!("# {name} {} failed: {e}", kind.name()),
            }
        }
        if !results.is_empty() {
            tables.push(format!("### {name}\n\n{}", table(&results)));
        }
    }
    println!("\n{}", tables.join("\n"));
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err("interrupted".into());
    }
    Ok(())
}

fn table_cell(v: &Val) -> String {
    match v {
        Val::Num(x, d) => format!("{x:.d$}", d = *d),
        Val::Text(s) => s.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_are_checked_and_default_to_the_full_run() {
        let o = parse_args(&[]).unwrap();
        assert_eq!((o.slow_routes, o.slow_secs, o.flooders, o.flood_secs), (1_000_000, 60, 100, 10));
        assert_eq!((o.storm_rate, o.storm_secs, o.routes), (10_000, 10, 10_000));
        let o = parse_args(&args(&["--dut", "bird", "--scenario", "storm", "--storm-rate", "500"])).unwrap();
        assert_eq!((o.duts, o.scenarios, o.storm_rate), (vec![DutKind::Bird], vec!["storm".to_string()], 500));
        assert!(parse_args(&args(&["--dut", "frr"])).is_err());
        assert!(parse_args(&args(&["--scenario", "flood"])).is_err());
        assert!(parse_args(&args(&["--flood-secs", "0"])).is_err());
        assert!(parse_args(&args(&["--flooders", "1000"])).is_err());
        assert!(parse_args(&args(&["--routes"])).is_err());
    }

    #[test]
    fn the_table_puts_duts_side_by_side_with_their_ratio() {
        let mut a = Figures::default();
        a.num("peak RSS MiB", 50.0, 1);
        a.text("peer A", "kept");
        let mut b = Figures::default();
        b.num("peak RSS MiB", 100.0, 1);
        b.text("peer A", "closed");
        b.num("only bird", 1.0, 0);
        let t = table(&[(DutKind::Bgpd, a), (DutKind::Bird, b)]);
        assert!(t.starts_with("| figure | bgpd | bird | bgpd ÷ bird |\n|---|---|---|---|\n"), "{t}");
        assert!(t.contains("| peak RSS MiB | 50.0 | 100.0 | 0.50 |\n"), "{t}");
        assert!(t.contains("| peer A | kept | closed | — |\n"), "{t}");
        assert!(t.contains("| only bird | — | 1 | — |\n"), "{t}");
    }
}

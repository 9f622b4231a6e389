//! Route-server benchmark (bgperf style): bgpd, BIRD 2, FRR and GoBGP in turn as the
//! device under test (DUT, AS 64512), a route server that accepts every route of every
//! peer and re-advertises it to every other peer.
//!
//! `bench routeserver [--dut bgpd,bird,frr,gobgp] [--scenario NAME,…] [--scale F]
//! [--timeout SECS] [--mrt PATH] [--bgpd PATH] [--no-generator]`, or `bench routeserver
//! --show-config N` to print the configuration each DUT gets with N testers.
//!
//! Per run: two fresh network namespaces joined by a veth, the DUT's (10.77.0.1/24) and
//! the peers' (testers 10.77.0.11…, AS 65001…; monitor 10.77.0.100, AS 65100). The testers
//! and the monitor are in-process speakers built on `bgpd_proto`'s codec (see
//! [`speaker`]); all UPDATE bytes are built before the clock starts ([`scenario`]). Once
//! every session is up, the gate opens: the testers write their UPDATEs and keep reading
//! (decoding and discarding) what the DUT sends them; the monitor applies what it receives
//! to its table. The run is **done** at the first moment when every tester has written its
//! last UPDATE and the monitor's table is exactly the expected final table: the same
//! prefix set (nothing missing, nothing extra) and, where the scenario says which path must
//! win, that path's origin AS. Measured: seconds from the first UPDATE written to done,
//! prefixes (announcements + withdrawals sent) per second, the DUT's CPU seconds over that
//! window (utime + stime of all its processes), its peak RSS (VmHWM summed over its
//! processes) and (peak RSS − RSS before the load) per route held.
//!
//! The `generator` row runs each scenario with no DUT: the monitor listens in the DUT's
//! place and takes the testers' sessions directly, decoding everything into one table per
//! session; done when every prefix sent has been received. It shows how fast load
//! generator and monitor are on this machine.

pub mod dut;
pub mod scenario;
pub mod speaker;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::bench::args::Flags;
use crate::lab::Lab;

pub use dut::DutKind;
pub use scenario::{Load, Scenario};

/// The DUT's address.
pub const DUT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The DUT's AS.
pub const DUT_AS: u32 = 64512;
/// The monitor's address.
pub const MONITOR_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
/// The monitor's AS.
pub const MONITOR_AS: u32 = 65100;
/// The most testers a scenario may have (10.77.0.11 to 10.77.0.74).
pub const MAX_TESTERS: usize = 64;
/// Time allowed for the DUT to start and every session to come up.
const SETUP: Duration = Duration::from_secs(60);
/// Pause between the last session coming up and the gate opening (initial exchanges,
/// End-of-RIB markers), then the "before load" figures are taken.
const QUIET: Duration = Duration::from_secs(2);

/// Tester `t`'s address (0-based).
pub fn tester_addr(t: usize) -> Ipv4Addr {
    // MAX_TESTERS keeps 11 + t ≤ 74.
    Ipv4Addr::new(10, 77, 0, 11 + t as u8)
}

/// Tester `t`'s AS (0-based).
pub fn tester_as(t: usize) -> u32 {
    65001 + t as u32
}

/// Set by Ctrl-C / SIGTERM: every loop ends, labs are dropped (namespaces deleted,
/// daemons stopped) and the bench exits.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// What runs in the DUT's place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A DUT (for bgpd, the binary).
    Dut(DutKind, Option<PathBuf>),
    /// No DUT: the testers send straight to the monitor.
    Generator,
}

impl Target {
    /// Its name in the table.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Dut(k, _) => k.name(),
            Target::Generator => "generator",
        }
    }
}

/// How one run is bounded.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The most a run may take from the first UPDATE.
    pub timeout: Duration,
    /// After done, keep the sessions this long and check the monitor's table is still
    /// exactly the expected one (no late extra or changed route); zero skips the check.
    pub settle: Duration,
}

/// The figures of one run.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// DUT name (or `generator`).
    pub target: String,
    /// Scenario name.
    pub scenario: String,
    /// Seconds from the first UPDATE written to done; `None` if not done by the timeout.
    pub seconds: Option<f64>,
    /// Seconds from the first UPDATE written to the first prefix the monitor held
    /// (DUT only; `None` if none arrived).
    pub first_out: Option<f64>,
    /// Scenarios with a withdrawal phase: seconds from the first withdrawal written to
    /// the first prefix gone at the monitor, and to none left.
    pub withdraw_out: Option<(Option<f64>, Option<f64>)>,
    /// The timeout it had.
    pub timeout: Duration,
    /// Prefixes announced + withdrawn by all testers.
    pub events: u64,
    /// Routes the DUT holds at the end (sum of the testers' final announcements).
    pub routes: u64,
    /// Expected routes the monitor held as expected when the run ended (generator: prefixes received).
    pub progress: u64,
    /// Routes the monitor must hold (generator: prefixes to receive).
    pub expected: u64,
    /// Routes the monitor held that it should not.
    pub extra: u64,
    /// CPU seconds of the DUT over the run (generator: of this process, testers and monitor).
    pub cpu: Option<f64>,
    /// The DUT's RSS before the load, KiB.
    pub rss_before_kib: Option<u64>,
    /// The DUT's peak RSS, KiB.
    pub hwm_kib: Option<u64>,
    /// After `settle`, whether the table was still exactly the expected one.
    pub still_complete: Option<bool>,
    /// Prefixes the testers received from the DUT.
    pub tester_received: u64,
    /// The first error a speaker or the DUT hit, if any.
    pub error: Option<String>,
}

impl Outcome {
    /// Prefixes per second.
    pub fn rate(&self) -> Option<f64> {
        self.seconds.filter(|s| *s > 0.0).map(|s| self.events as f64 / s)
    }

    /// (Peak RSS − RSS before load) per route held, in bytes (only when the run finished:
    /// otherwise the DUT may not hold the routes).
    pub fn bytes_per_route(&self) -> Option<f64> {
        match (self.hwm_kib, self.rss_before_kib) {
            (Some(h), Some(b)) if self.routes > 0 && self.seconds.is_some() => {
                Some((h as f64 - b as f64) * 1024.0 / self.routes as f64)
            }
            _ => None,
        }
    }

    /// The result column: seconds, or why not.
    pub fn result(&self) -> String {
        match self.seconds {
            Some(s) => format!("{s:.3} s"),
            None => {
                format!("timeout after {} s, {} of {} prefixes", self.timeout.as_secs(), self.progress, self.expected)
            }
        }
    }

    /// One line for the log.
    pub fn line(&self) -> String {
        let mut s = format!(
            "target={} scenario={} result=\"{}\" events={} routes={} progress={}/{} extra={} tester_received={}",
            self.target,
            self.scenario,
            self.result(),
            self.events,
            self.routes,
            self.progress,
            self.expected,
            self.extra,
            self.tester_received
        );
        if let Some(f) = self.first_out {
            let _ = write!(s, " first_out_ms={:.1}", f * 1000.0);
        }
        if let Some((first, last)) = self.withdraw_out {
            let ms = |v: Option<f64>| v.map_or("none".into(), |v| format!("{:.1}", v * 1000.0));
            let _ = write!(s, " withdraw_first_out_ms={} withdraw_last_out_ms={}", ms(first), ms(last));
        }
        if let Some(r) = self.rate() {
            let _ = write!(s, " prefixes_per_s={r:.0}");
        }
        if let Some(c) = self.cpu {
            let _ = write!(s, " cpu_s={c:.2}");
        }
        if let (Some(b), Some(h)) = (self.rss_before_kib, self.hwm_kib) {
            let _ = write!(s, " rss_before_kib={b} hwm_kib={h}");
        }
        if let Some(b) = self.bytes_per_route() {
            let _ = write!(s, " bytes_per_route={b:.0}");
        }
        if let Some(c) = self.still_complete {
            let _ = write!(s, " still_complete_after_settle={c}");
        }
        if let Some(e) = &self.error {
            let _ = write!(s, " error={e:?}");
        }
        s
    }
}

/// The DUT's clients: the testers, then the monitor.
pub fn peers(testers: usize) -> Vec<dut::Peer> {
    let mut p: Vec<dut::Peer> = (0..testers)
        .map(|t| dut::Peer { name: format!("t{}", t + 1), addr: tester_addr(t), asn: tester_as(t) })
        .collect();
    p.push(dut::Peer { name: "monitor".into(), addr: MONITOR_ADDR, asn: MONITOR_AS });
    p
}

/// Runs `load` (of `scenario`) against `target` once, in a lab of its own.
pub fn run_one(target: &Target, scenario: &Scenario, load: &Load, cfg: &RunConfig) -> Result<Outcome, String> {
    let testers = load.streams.len();
    let lab = Lab::new(&format!("routeserver {} {}", target.name(), scenario.name)).map_err(|e| format!("lab: {e}"))?;
    let dut_ns = lab.netns("rs").map_err(|e| format!("netns: {e}"))?;
    let peers_ns = lab.netns("peers").map_err(|e| format!("netns: {e}"))?;
    let mut addrs: Vec<String> = (0..testers).map(|t| format!("{}/24", tester_addr(t))).collect();
    addrs.push(format!("{MONITOR_ADDR}/24"));
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    lab.veth(&dut_ns, "rs0", &[&format!("{DUT_ADDR}/24")], &peers_ns, "rs0", &addr_refs)
        .map_err(|e| format!("veth: {e}"))?;

    let setup_deadline = Instant::now() + SETUP;
    let control = speaker::Control::new(
        testers,
        setup_deadline + QUIET + cfg.timeout + cfg.settle + Duration::from_secs(5),
        &INTERRUPTED,
    );
    let mut dut = None;
    let mut sink = None;
    match target {
        Target::Dut(kind, bgpd) => {
            dut = Some(dut::Dut::start(&lab, &dut_ns, *kind, &peers(testers), bgpd.as_deref())?);
        }
        Target::Generator => {
            sink = Some(speaker::Sink::spawn(&dut_ns, DUT_ADDR, MONITOR_AS, testers, load.events, control.clone())?);
        }
    }
    let result = (|| {
        let mut monitor = None;
        if dut.is_some() {
            let est =
                speaker::connect(&peers_ns, "monitor", MONITOR_ADDR, DUT_ADDR, MONITOR_AS, setup_deadline, &control)?;
            monitor = Some(speaker::spawn_monitor(est, load.expected.clone(), control.clone())?);
        }
        let mut tester_threads = Vec::new();
        for (t, stream) in load.streams.iter().enumerate() {
            let name = format!("t{}", t + 1);
            let est =
                speaker::connect(&peers_ns, &name, tester_addr(t), DUT_ADDR, tester_as(t), setup_deadline, &control)?;
            // The withdrawal phase needs the monitor (a DUT) to see the table complete.
            let withdrawals = load.withdrawals.as_ref().filter(|_| dut.is_some()).map(|w| w[t].clone());
            tester_threads.push(speaker::Tester::spawn_then(est, stream.clone(), withdrawals, control.clone())?);
        }
        std::thread::sleep(QUIET);
        let before = match &dut {
            Some(d) => Some((d.cpu_seconds()?, d.memory_kib()?.0)),
            None => Some((dut::proc_cpu_seconds("self")?, 0)),
        };
        let t0 = control.open_gate();
        let done = control.wait_done(t0 + cfg.timeout);
        let cpu_after = match &dut {
            Some(d) => d.cpu_seconds().ok(),
            None => dut::proc_cpu_seconds("self").ok(),
        };
        let hwm = dut.as_ref().and_then(|d| d.memory_kib().ok()).map(|m| m.1);
        let progress = control.progress.load(Ordering::Relaxed);
        let withdraw_out = match done {
            Some(_) if dut.is_some() && load.withdrawals.is_some() => {
                // The DUT is idle again before the withdrawals begin.
                std::thread::sleep(QUIET);
                control.open_withdraw_gate();
                control.wait_all_withdrawn(Instant::now() + cfg.timeout);
                let w = control.withdraw();
                let since = |t: Option<Instant>| {
                    t.zip(w.first_write).map(|(t, f)| t.saturating_duration_since(f).as_secs_f64())
                };
                Some((since(w.first_out), since(w.all_out)))
            }
            _ => None,
        };
        let still_complete = match done {
            Some(_) if !cfg.settle.is_zero() => {
                std::thread::sleep(cfg.settle);
                Some(control.complete_now() && control.extra.load(Ordering::Relaxed) == 0)
            }
            _ => None,
        };
        let extra = control.extra.load(Ordering::Relaxed);
        control.request_stop();
        let reports: Vec<speaker::TesterReport> = tester_threads.into_iter().map(speaker::Tester::join).collect();
        if let Some(m) = monitor {
            let _ = m.join();
        }
        if done.is_none() && INTERRUPTED.load(Ordering::SeqCst) {
            return Err("interrupted".to_string());
        }
        let first = reports.iter().filter_map(|r| r.first_write).min().unwrap_or(t0);
        let mut error = control.error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(d) = &dut {
            if !d.alive(&lab) {
                error = Some(format!("{} exited:\n{}", d.kind.name(), lab.logs(20)));
            }
        }
        Ok(Outcome {
            target: target.name().to_string(),
            scenario: scenario.name.clone(),
            seconds: done.map(|d| d.saturating_duration_since(first).as_secs_f64()),
            first_out: control.first_out().map(|f| f.saturating_duration_since(first).as_secs_f64()),
            withdraw_out,
            timeout: cfg.timeout,
            events: load.events,
            routes: load.routes,
            progress,
            expected: if dut.is_some() { load.expected.len() as u64 } else { load.events },
            extra,
            cpu: before.zip(cpu_after).map(|((b, _), a)| a - b),
            rss_before_kib: dut.as_ref().and(before.map(|b| b.1)),
            hwm_kib: hwm,
            still_complete,
            tester_received: reports.iter().map(|r| r.received).sum(),
            error,
        })
    })();
    control.request_stop();
    if let Some(s) = sink {
        s.join();
    }
    if result.is_err() {
        eprintln!("{}", lab.logs(20));
    }
    drop(dut);
    drop(lab);
    result
}

// ----- the command line ----------------------------------------------------------------------

struct Options {
    duts: Vec<DutKind>,
    scenarios: Vec<String>,
    scale: f64,
    timeout: Duration,
    mrt: PathBuf,
    bgpd: Option<PathBuf>,
    generator: bool,
}

const USAGE: &str = "usage: routeserver [--dut bgpd,bird,frr,gobgp] [--scenario NAME,…] [--scale F] \
                     [--timeout SECS] [--mrt PATH] [--bgpd PATH] [--no-generator] | --show-config TESTERS";

/// The MRT capture the `mrt-*` scenarios replay by default.
/// The RIS capture the benchmark replays by default, in the shared data folder
/// (`$BGPD_SHARED_DATA`, else `../shared/data`).
pub fn default_mrt() -> PathBuf {
    testgate::shared_data_dir().join("mrt/updates.et-header.2015.gz")
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        duts: DutKind::ALL.to_vec(),
        scenarios: scenario::NAMES.iter().map(|s| s.to_string()).collect(),
        scale: 1.0,
        timeout: Duration::from_secs(300),
        mrt: default_mrt(),
        bgpd: None,
        generator: true,
    };
    let mut explicit_duts = false;
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next() {
        match flag {
            "--dut" => {
                o.duts = flags.value()?.split(',').map(DutKind::parse).collect::<Result<_, _>>()?;
                explicit_duts = true;
            }
            "--scenario" => {
                o.scenarios = flags.value()?.split(',').map(str::to_string).collect();
                for s in &o.scenarios {
                    if !scenario::NAMES.contains(&s.as_str()) {
                        return Err(format!("unknown scenario {s:?}; known: {}", scenario::NAMES.join(", ")));
                    }
                }
            }
            "--scale" => {
                o.scale = flags.number()?;
                if !(o.scale > 0.0 && o.scale <= 10.0) {
                    return Err("--scale must be in (0, 10]".into());
                }
            }
            "--timeout" => o.timeout = Duration::from_secs(flags.number_in(1..=3600)?),
            "--mrt" => o.mrt = PathBuf::from(flags.value()?),
            "--bgpd" => o.bgpd = Some(PathBuf::from(flags.value()?)),
            "--no-generator" => o.generator = false,
            _ => return Err(format!("{}; {USAGE}", flags.unknown())),
        }
    }
    if !explicit_duts {
        o.duts.retain(|k| k.programs().iter().all(|p| program_exists(p)));
    }
    Ok(o)
}

fn program_exists(p: &str) -> bool {
    if p.contains('/') {
        return Path::new(p).exists();
    }
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(p).is_file()))
}

/// On the first SIGINT or SIGTERM, sets [`INTERRUPTED`] (runs end, labs clean up); on the
/// second, the test bed's cleanup kills what is left, deletes the namespaces and exits.
pub(crate) fn install_signal_handler() -> Result<(), String> {
    testgate::testbed::on_signal("routeserver", testgate::testbed::OnSignal::Interrupt(&INTERRUPTED))
}

/// The configuration every DUT gets with `testers` testers, as the bench writes it.
pub fn show_config(testers: usize) -> String {
    let p = peers(testers);
    let mut s = String::new();
    for (name, text) in [
        ("bgpd: datastore (file:bgpd.yaml; started as `bgpd run --no-kernel`)", dut::bgpd_datastore(&p)),
        ("BIRD 2: bird.conf", dut::bird_config(&p)),
        ("FRR: bgpd.conf (zebra.conf empty; bgpd started with -S -n)", dut::frr_config(&p)),
        ("GoBGP: gobgpd.toml", dut::gobgp_config(&p)),
    ] {
        let _ = write!(s, "# ----- {name}\n{text}\n");
    }
    s
}

/// Runs the route-server benchmark with the arguments after `routeserver`.
pub fn run(args: &[String]) -> Result<(), String> {
    if let [flag, n] = args {
        if flag == "--show-config" {
            let n: usize = n.parse().map_err(|e| format!("--show-config {n:?}: {e}"))?;
            if !(1..=MAX_TESTERS).contains(&n) {
                return Err(format!("--show-config: 1 to {MAX_TESTERS} testers"));
            }
            print!("{}", show_config(n));
            return Ok(());
        }
    }
    let opts = parse_args(args)?;
    if !rustix::process::geteuid().is_root() {
        return Err("needs root (network namespaces, port 179)".into());
    }
    install_signal_handler()?;
    let bgpd = if opts.duts.contains(&DutKind::Bgpd) {
        Some(testgate::testbed::bgpd_binary(opts.bgpd.clone())?)
    } else {
        None
    };
    let mut targets: Vec<Target> = Vec::new();
    if opts.generator {
        targets.push(Target::Generator);
    }
    targets.extend(opts.duts.iter().map(|k| Target::Dut(*k, if *k == DutKind::Bgpd { bgpd.clone() } else { None })));
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# routeserver benchmark: scale {}, timeout {} s, targets {}, {} CPUs, load average {}",
        opts.scale,
        opts.timeout.as_secs(),
        targets.iter().map(Target::name).collect::<Vec<_>>().join(","),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load_avg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let cfg = RunConfig { timeout: opts.timeout, settle: Duration::ZERO };
    let mut outcomes = Vec::new();
    for name in &opts.scenarios {
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        let s = Scenario::named(name, opts.scale, &opts.mrt)?;
        let t = Instant::now();
        let load = scenario::build(&s)?;
        println!(
            "# scenario {name}: {} testers, {} UPDATEs, {} prefixes sent, {} routes held, {} expected at the monitor (built in {:.1} s)",
            s.testers,
            load.updates,
            load.events,
            load.routes,
            load.expected.len(),
            t.elapsed().as_secs_f64()
        );
        for target in &targets {
            if INTERRUPTED.load(Ordering::SeqCst) {
                break;
            }
            match run_one(target, &s, &load, &cfg) {
                Ok(o) => {
                    println!("{}", o.line());
                    outcomes.push(o);
                }
                Err(e) => println!("# target={} scenario={name} failed: {e}", target.name()),
            }
        }
    }
    println!("\n{}", table(&outcomes));
    println!("{}", propagation_table(&outcomes));
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err("interrupted".into());
    }
    Ok(())
}

/// The Markdown table of how soon each DUT passed routes on: milliseconds from the first
/// UPDATE written to the first prefix at the monitor, and to done (the last one), with the
/// first's ratio against the fastest other DUT's first.
pub fn propagation_table(outcomes: &[Outcome]) -> String {
    let mut t = String::from(
        "| scenario | DUT | first prefix out ms | done ms | first × | first withdrawal out ms | last withdrawal out ms |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for o in outcomes.iter().filter(|o| o.target != "generator") {
        let best = outcomes
            .iter()
            .filter(|b| b.scenario == o.scenario && b.target != "bgpd" && b.target != "generator")
            .filter_map(|b| b.first_out)
            .min_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let ms = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.1}", v * 1000.0));
        let ratio = match (o.first_out, best) {
            (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
            _ => "—".into(),
        };
        let (wf, wl) = o.withdraw_out.unwrap_or_default();
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {ratio} | {} | {} |",
            o.scenario,
            o.target,
            ms(o.first_out),
            ms(o.seconds),
            ms(wf),
            ms(wl)
        );
    }
    t
}

/// The Markdown table of the outcomes, with ratios against the fastest non-bgpd DUT of the
/// same scenario.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut t = String::from(
        "| scenario | DUT | result | prefixes/s | DUT CPU s | peak RSS MiB | bytes/route | time × | CPU × | bytes/route × |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut scenarios: Vec<&str> = Vec::new();
    for o in outcomes {
        if !scenarios.contains(&o.scenario.as_str()) {
            scenarios.push(&o.scenario);
        }
    }
    for s in scenarios {
        let rows: Vec<&Outcome> = outcomes.iter().filter(|o| o.scenario == s).collect();
        let best = rows
            .iter()
            .filter(|o| o.target != "bgpd" && o.target != "generator" && o.seconds.is_some())
            .min_by(|a, b| a.seconds.partial_cmp(&b.seconds).unwrap_or(std::cmp::Ordering::Equal));
        for o in rows.iter().copied() {
            let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
                (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
                _ => "—".into(),
            };
            let opt = |v: Option<f64>, digits: usize| v.map_or("—".into(), |v| format!("{v:.digits$}"));
            let name = if o.target == "generator" { "generator (no DUT)".to_string() } else { o.target.clone() };
            let _ = writeln!(
                t,
                "| {s} | {name}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
                if best.is_some_and(|b| std::ptr::eq(*b, o)) { " (fastest)" } else { "" },
                o.result(),
                o.rate().map_or("—".into(), |r| format!("{:.0}", r)),
                opt(o.cpu, 2),
                opt(o.hwm_kib.map(|h| h as f64 / 1024.0), 1),
                opt(o.bytes_per_route(), 0),
                ratio(o.seconds, best.and_then(|b| b.seconds)),
                if o.target == "generator" { "—".into() } else { ratio(o.cpu, best.and_then(|b| b.cpu)) },
                ratio(o.bytes_per_route(), best.and_then(|b| b.bytes_per_route())),
            );
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_are_checked() {
        let o = parse_args(&args(&["--dut", "bird,frr", "--scenario", "mrt-1", "--scale", "0.1", "--timeout", "9"]))
            .unwrap();
        assert_eq!(o.duts, vec![DutKind::Bird, DutKind::Frr]);
        assert_eq!(o.scenarios, vec!["mrt-1".to_string()]);
        assert_eq!((o.scale, o.timeout), (0.1, Duration::from_secs(9)));
        assert!(parse_args(&args(&["--dut", "quagga"])).is_err());
        assert!(parse_args(&args(&["--scenario", "2x2"])).is_err());
        assert!(parse_args(&args(&["--scale", "0"])).is_err());
        assert!(parse_args(&args(&["--timeout", "0"])).is_err());
        assert!(parse_args(&args(&["--timeout"])).is_err());
    }

    #[test]
    fn tester_addresses_are_distinct_and_not_the_dut_or_monitor() {
        let addrs: std::collections::HashSet<Ipv4Addr> = (0..MAX_TESTERS).map(tester_addr).collect();
        assert_eq!(addrs.len(), MAX_TESTERS);
        assert!(!addrs.contains(&DUT_ADDR) && !addrs.contains(&MONITOR_ADDR));
        assert_eq!(peers(2).iter().map(|p| p.asn).collect::<Vec<_>>(), vec![65001, 65002, MONITOR_AS]);
    }

    fn outcome(target: &str, seconds: Option<f64>, cpu: f64) -> Outcome {
        Outcome {
            target: target.into(),
            scenario: "s".into(),
            seconds,
            first_out: None,
            withdraw_out: None,
            timeout: Duration::from_secs(5),
            events: 1000,
            routes: 1000,
            progress: 10,
            expected: 1000,
            extra: 0,
            cpu: Some(cpu),
            rss_before_kib: Some(1000),
            hwm_kib: Some(2000),
            still_complete: None,
            tester_received: 0,
            error: None,
        }
    }

    #[test]
    fn the_table_compares_with_the_fastest_other_dut_and_reports_timeouts() {
        let t = table(&[
            outcome("generator", Some(0.1), 0.1),
            outcome("bird", Some(2.0), 2.0),
            outcome("frr", Some(1.0), 4.0),
            outcome("bgpd", None, 1.0),
        ]);
        assert!(t.contains("| s | frr (fastest) | 1.000 s | 1000 | 4.00 | 2.0 | 1024 | 1.00 | 1.00 | 1.00 |"), "{t}");
        assert!(t.contains("| s | bird | 2.000 s | 500 | 2.00 | 2.0 | 1024 | 2.00 | 0.50 | 1.00 |"), "{t}");
        assert!(
            t.contains("| s | bgpd | timeout after 5 s, 10 of 1000 prefixes | — | 1.00 | 2.0 | — | — | 0.25 | — |"),
            "{t}"
        );
        assert!(
            t.contains("| s | generator (no DUT) | 0.100 s | 10000 | 0.10 | 2.0 | 1024 | 0.10 | — | 1.00 |"),
            "{t}"
        );
    }
}

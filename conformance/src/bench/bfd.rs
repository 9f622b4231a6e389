//! BFD benchmark (issue 13): N BFD sessions at 300 ms x 3 held by bgpd, BIRD 2 and FRR's
//! bfdd in the same run.
//!
//! `bench bfd [--sessions 100,1000] [--contenders bgpd,bird,frr] [--window-secs S]
//! [--silent K] [--bgpd PATH] [--via static,bgp] [--load] [--table-prefixes P]
//! [--load-period-secs S]`
//!
//! Per contender and N, as `bench sessions` does: two fresh network namespaces joined by
//! a veth, the DUT with 10.251.0.1/16, the far side with N addresses
//! 10.251.(1+i/250).(i%250+1)/16. The bench re-executes itself in the far namespace
//! (`bench bfd __farend …`, [`farend`]): one active `bgpd_proto::bfd` session per far
//! address. The DUT is configured with the N sessions at 300 ms x 3, 1 s while not Up.
//!
//! Measured once all N sessions are Up and a settle time has passed:
//! - CPU seconds per second of the process that runs BFD over a window (bgpd: all its
//!   threads; BIRD: the bird process, its BFD thread included; FRR: bfdd only, not zebra);
//! - VmRSS of that process with N sessions minus the same program's VmRSS with none (a
//!   short separate start), per session;
//! - the DUT's detection time as seen from outside, `--silent K` samples: one session at
//!   a time stops sending while all others keep running, and the time from the last
//!   packet it sent to the arrival of the DUT's packet saying Down (ideal: the 900 ms
//!   detection time; the rest is the DUT's lateness); min / median / max;
//! - false Downs: sessions that left Up unasked during the window and the samples.
//!
//! bgpd runs BFD only with BGP peers, so its N sessions are N BGP peers (which the far
//! end refuses: TCP RST). BIRD and FRR run once per `--via` (default both): `static`,
//! BFD sessions of their own (`protocol bfd { neighbor … }`, bfdd `peer …`), and `bgp`,
//! the same N BGP neighbors with BFD on (BIRD `bfd on`, FRR `neighbor X bfd profile`):
//! both bring BFD up while BGP is refused. A further run measures bgpd (and BIRD with BGP
//! neighbors) with the same N BGP peers and BFD off (`bgpd.io/bfd: "false"`), so that what
//! BFD itself costs is known.
//!
//! `--load` (bgpd only): a further run per N in which the far end also answers BGP on the
//! first [`LOAD_PEERS`] addresses, and the first of them sends a full table of
//! `--table-prefixes` /24s (default 1,000,000), each round as fast as TCP takes it, a
//! round every `--load-period-secs` (default 1), through the window and the samples;
//! false Downs are counted the same way.

mod control;
mod dut;
mod farend;
mod lines;
mod load;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use control::{FarEnd, Plan};
use dut::{Contender, Dut, Peers};

use crate::bench::args::Flags;
use crate::bench::sessions::{install_signal_cleanup, ScratchDir, Testbed};

const DUT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);
const DUT_AS: u32 = 64512;
const FAR_AS: u32 = 65000;
/// The single-hop BFD port (RFC 5881 §4).
const BFD_PORT: u16 = 3784;
/// Desired Min TX and Required Min RX on every side.
const INTERVAL: Duration = Duration::from_millis(300);
const DETECT_MULT: u8 = 3;
/// The transmit interval while not Up (RFC 5880 §6.8.3: at least 1 s).
const IDLE_TX: Duration = Duration::from_secs(1);
/// The far addresses run from 10.251.1.1 to 10.251.40.250.
const MAX_SESSIONS: usize = 10_000;
/// Time after the last session came up before the window opens (Poll sequences to 300 ms).
const SETTLE: Duration = Duration::from_secs(5);
/// How long all sessions may take to come Up.
const UP_BUDGET: Duration = Duration::from_secs(90);
/// BGP peers the far end answers with `--load`; the first sends the table.
const LOAD_PEERS: usize = 4;
/// Under load, the DUT's RSS at which the load stops (a DUT that queues what it cannot
/// process yet must not take the machine down).
const LOAD_RSS_LIMIT_KIB: u64 = 6 * 1024 * 1024;

/// The far end's address for session `i` (0-based): 10.251.(1+i/250).(i%250+1).
fn far_addr(i: usize) -> Ipv4Addr {
    // MAX_SESSIONS keeps 1 + i/250 ≤ 40 and i%250 + 1 ≤ 250: both fit a u8.
    Ipv4Addr::new(10, 251, (1 + i / 250) as u8, (i % 250 + 1) as u8)
}

struct Options {
    sessions: Vec<usize>,
    contenders: Vec<Contender>,
    window: Duration,
    silent: usize,
    bgpd: Option<PathBuf>,
    via: Vec<Peers>,
    load: bool,
    table_prefixes: usize,
    load_period: Duration,
}

const USAGE: &str = "usage: bfd [--sessions 100,1000] [--contenders bgpd,bird,frr] [--window-secs S] [--silent K] \
                     [--bgpd PATH] [--via static,bgp] [--load] [--table-prefixes P] \
                     [--load-period-secs S]";

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        sessions: vec![100, 1000],
        contenders: Contender::ALL.to_vec(),
        window: Duration::from_secs(30),
        silent: 10,
        bgpd: None,
        via: vec![Peers::Static, Peers::Bgp],
        load: false,
        table_prefixes: 1_000_000,
        load_period: Duration::from_secs(1),
    };
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next() {
        match flag {
            "--sessions" => {
                let v = flags.value()?;
                o.sessions = v.split(',').map(|n| flags.in_range(n, 1..=MAX_SESSIONS)).collect::<Result<_, _>>()?;
            }
            "--contenders" => {
                o.contenders = flags.value()?.split(',').map(Contender::parse).collect::<Result<_, _>>()?;
            }
            "--window-secs" => o.window = Duration::from_secs(flags.number_in(1..=3600)?),
            "--silent" => o.silent = flags.number_in(0..=1000)?,
            "--bgpd" => o.bgpd = Some(PathBuf::from(flags.value()?)),
            "--via" => {
                o.via = flags
                    .value()?
                    .split(',')
                    .map(|v| match v {
                        "static" => Ok(Peers::Static),
                        "bgp" => Ok(Peers::Bgp),
                        other => Err(format!("--via {other:?}: static, bgp or both")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--load" => o.load = true,
            "--table-prefixes" => o.table_prefixes = flags.number_in(1..=load::MAX_TABLE)?,
            "--load-period-secs" => o.load_period = Duration::from_secs_f64(flags.number_in(0.0..=600.0)?),
            _ => return Err(format!("{}; {USAGE}", flags.unknown())),
        }
    }
    if o.sessions.is_empty() || o.contenders.is_empty() || o.via.is_empty() {
        return Err(USAGE.into());
    }
    Ok(o)
}

/// Runs the BFD benchmark with the arguments after `bfd` (or, with `__farend` first, the
/// far end inside its namespace).
pub fn run(args: &[String]) -> Result<(), String> {
    if args.first().map(String::as_str) == Some("__farend") {
        return farend::main(&args[1..]);
    }
    let opts = parse_args(args)?;
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root (network namespaces)".into());
    }
    install_signal_cleanup("bfd bench")?;
    let bgpd = if opts.contenders.contains(&Contender::Bgpd) {
        Some(testgate::testbed::bgpd_binary(opts.bgpd.clone())?)
    } else {
        None
    };
    let via: Vec<&str> = opts.via.iter().map(|p| p.name()).collect();
    println!(
        "# bfd benchmark: sessions {:?} at {} ms x {DETECT_MULT} ({} ms while not Up), window {} s, {} detection \
         samples, BIRD/FRR sessions {}, kernel {}, {} CPUs",
        opts.sessions,
        INTERVAL.as_millis(),
        IDLE_TX.as_millis(),
        opts.window.as_secs(),
        opts.silent,
        via.join(" and "),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    );
    println!(
        "# {}; {}; bgpd {}",
        version("/usr/sbin/bird", "--version"),
        version("/usr/lib/frr/bfdd", "--version"),
        bgpd.as_deref().map_or("not run".into(), |p| p.display().to_string())
    );
    // Per N, every contender in turn (BIRD and FRR once per --via), then bgpd under load.
    let mut runs: Vec<(Contender, Peers, bool)> = Vec::new();
    for &c in &opts.contenders {
        match c {
            Contender::Bgpd => runs.push((c, Peers::Bgp, false)),
            _ => runs.extend(opts.via.iter().map(|&p| (c, p, false))),
        }
    }
    if opts.load && bgpd.is_some() {
        runs.push((Contender::Bgpd, Peers::Bgp, true));
    }
    let mut results: Vec<Outcome> = Vec::new();
    for &n in &opts.sessions {
        for &(c, peers, load) in &runs {
            match bench_one(c, n, peers, load, &opts, bgpd.as_deref()) {
                Ok(r) => {
                    println!("{}", r.line());
                    results.push(r);
                }
                Err(e) => println!("# contender={} sessions={n} failed: {e}", label(c, peers, load)),
            }
        }
    }
    for &n in &opts.sessions {
        for line in verdict(&results, n, &opts.via) {
            println!("{line}");
        }
    }
    Ok(())
}

/// How a run is named in the output: `bgpd`, `bgpd+load`, `bird-static`, `frr-bgp`, …
fn label(c: Contender, peers: Peers, load: bool) -> String {
    match (c, load) {
        (Contender::Bgpd, true) => "bgpd+load".into(),
        (Contender::Bgpd, false) => "bgpd".into(),
        (c, _) => format!("{}-{}", c.name(), peers.name()),
    }
}

fn version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|e| format!("{program}: {e}"))
}

/// The figures of one contender at one N.
struct Outcome {
    contender: Contender,
    peers: Peers,
    load: bool,
    sessions: usize,
    /// Sessions Up at the far end when the window opened.
    up: usize,
    seconds_to_up: Option<f64>,
    /// Sessions the DUT itself reported Up before the window and after the samples.
    dut_up_before: usize,
    dut_up_after: usize,
    /// The intervals the far end sees negotiated: (its TX, the DUT's TX, its detection, count), ms.
    intervals: Vec<(u64, u64, u64, usize)>,
    /// The mean interval between the DUT's packets of one session over the window, ms.
    dut_tx_mean_ms: Option<f64>,
    cpu_stat: f64,
    cpu_sched: f64,
    rss_kib: u64,
    /// VmHWM at the end (under load: the peak the queued UPDATEs took).
    hwm_kib: u64,
    rss_zero_kib: Option<u64>,
    /// bgpd, and BIRD with BGP neighbors: the same N BGP peers without BFD, (RSS KiB,
    /// CPU-s/s by schedstat).
    without_bfd: Option<(u64, f64)>,
    detect_ms: Vec<f64>,
    detect_missed: usize,
    false_downs: usize,
    /// `--load`: what the table peer did and what the DUT made of it.
    load_figures: Option<LoadFigures>,
    load_avg: String,
}

impl Outcome {
    fn label(&self) -> String {
        label(self.contender, self.peers, self.load)
    }

    /// VmRSS above the 0-session process, per session, KiB.
    fn kib_per_session(&self) -> Option<f64> {
        self.rss_zero_kib.map(|z| (self.rss_kib as f64 - z as f64) / self.sessions as f64)
    }

    fn line(&self) -> String {
        let mut s = format!(
            "contender={} sessions={} up={} seconds_to_up={} dut_up_before={} dut_up_after={} cpu_s_per_s={:.5} \
             cpu_s_per_s_sched={:.5} cpu_us_per_s_per_session={:.2} rss_kib={} hwm_kib={}",
            self.label(),
            self.sessions,
            self.up,
            self.seconds_to_up.map_or("none".into(), |s| format!("{s:.2}")),
            self.dut_up_before,
            self.dut_up_after,
            self.cpu_stat,
            self.cpu_sched,
            self.cpu_sched * 1e6 / self.sessions as f64,
            self.rss_kib,
            self.hwm_kib,
        );
        if let (Some(z), Some(k)) = (self.rss_zero_kib, self.kib_per_session()) {
            let _ = write!(s, " rss_0_kib={z} kib_per_session={k:.2}");
        }
        if let Some((rss, cpu)) = self.without_bfd {
            let _ = write!(
                s,
                " without_bfd_rss_kib={rss} without_bfd_cpu_s_per_s_sched={cpu:.5} bfd_kib_per_session={:.2} \
                 bfd_cpu_s_per_s_sched={:.5}",
                (self.rss_kib as f64 - rss as f64) / self.sessions as f64,
                self.cpu_sched - cpu
            );
        }
        match quantiles(&self.detect_ms) {
            Some((lo, mid, hi)) => {
                let _ = write!(s, " detect_ms_min={lo:.1} detect_ms_median={mid:.1} detect_ms_max={hi:.1}");
            }
            None => s.push_str(" detect_ms=none"),
        }
        let _ = write!(
            s,
            " detect_samples={} detect_missed={} false_downs={}",
            self.detect_ms.len(),
            self.detect_missed,
            self.false_downs
        );
        if let Some(m) = self.dut_tx_mean_ms {
            let _ = write!(s, " dut_tx_interval_ms_mean={m:.1}");
        }
        let iv: Vec<String> = self.intervals.iter().map(|(t, r, d, c)| format!("{t}/{r}/{d}x{c}")).collect();
        let _ = write!(s, " negotiated_tx/rx/detect_ms={}", iv.join(","));
        if let Some(l) = &self.load_figures {
            let _ = write!(
                s,
                " load_rounds={} load_round_write_secs_mean={:.2} load_secs={:.1} load_updates_at_dut={} \
                 load_routes_at_dut={}",
                l.rounds,
                l.write_secs / l.rounds.max(1) as f64,
                l.secs,
                l.updates,
                l.routes
            );
        }
        let _ = write!(s, " loadavg={}", self.load_avg);
        s
    }
}

/// What the table peer did under `--load`, and what the DUT made of it.
struct LoadFigures {
    /// Full-table rounds written.
    rounds: u64,
    /// Seconds the rounds took to write, all together.
    write_secs: f64,
    /// Seconds from the start of the load to its end (the window and the samples).
    secs: f64,
    /// UPDATEs the DUT counted from the table peer.
    updates: u64,
    /// Routes the DUT holds from the table peer at the end.
    routes: u64,
}

/// min, median and max of `v` (the median of an even count: the mean of the middle two).
fn quantiles(v: &[f64]) -> Option<(f64, f64, f64)> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    Some((s[0], median, s[n - 1]))
}

/// The session of detection sample `k` of `count`: spread evenly over sessions
/// `skip..n` (the first `skip` carry the BGP load).
fn sample_index(k: usize, count: usize, n: usize, skip: usize) -> usize {
    let span = n.saturating_sub(skip).max(1);
    (skip + k * span / count.max(1)).min(n.saturating_sub(1))
}

/// The ratio lines and the verdict for N sessions: bgpd against BIRD and FRR configured
/// each way of `via`.
fn verdict(results: &[Outcome], n: usize, via: &[Peers]) -> Vec<String> {
    let find = |c: Contender, peers: Peers, load: bool| {
        results.iter().find(|r| r.contender == c && r.peers == peers && r.load == load && r.sessions == n)
    };
    let Some(b) = find(Contender::Bgpd, Peers::Bgp, false) else { return Vec::new() };
    let ratio = |x: f64, y: f64| match (x > 0.0, y > 0.0) {
        (_, true) => format!("{:.3}", x / y),
        (true, false) => "inf".to_string(),
        (false, false) => "n/a".to_string(),
    };
    let median = |r: &Outcome| quantiles(&r.detect_ms).map_or(0.0, |q| q.1);
    let spread = |r: &Outcome| quantiles(&r.detect_ms).map_or(0.0, |q| q.2 - q.0);
    let met = |ok: bool| if ok { "met" } else { "missed" };
    let loaded = match find(Contender::Bgpd, Peers::Bgp, true) {
        Some(l) => met(l.false_downs == 0 && l.detect_missed == 0),
        None => "not-run",
    };
    let mut out = Vec::new();
    for &peers in via {
        let others: Vec<&Outcome> =
            [Contender::Bird, Contender::Frr].into_iter().filter_map(|c| find(c, peers, false)).collect();
        for o in &others {
            out.push(format!(
                "ratio=bgpd/{} sessions={n} cpu_s_per_s_sched={} cpu_s_per_s={} kib_per_session={} detect_median={} \
                 detect_spread={}",
                o.label(),
                ratio(b.cpu_sched, o.cpu_sched),
                ratio(b.cpu_stat, o.cpu_stat),
                ratio(b.kib_per_session().unwrap_or(0.0), o.kib_per_session().unwrap_or(0.0)),
                ratio(median(b), median(o)),
                ratio(spread(b), spread(o)),
            ));
        }
        if others.is_empty() {
            continue;
        }
        let best_cpu = others.iter().map(|o| o.cpu_sched).fold(f64::INFINITY, f64::min);
        let best_kib = others.iter().filter_map(|o| o.kib_per_session()).fold(f64::INFINITY, f64::min);
        out.push(format!(
            "target sessions={n} against={} cpu={} memory={} false_downs={} false_downs_under_load={loaded}",
            peers.name(),
            met(b.cpu_sched <= best_cpu),
            met(b.kib_per_session().is_some_and(|k| k <= best_kib)),
            met(b.false_downs == 0 && b.detect_missed == 0),
        ));
    }
    out
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join("/"))
        .unwrap_or_default()
}

/// Stops the load when the DUT's RSS passes [`LOAD_RSS_LIMIT_KIB`].
struct LoadGuard<'a> {
    on: bool,
    tag: &'a str,
}

impl LoadGuard<'_> {
    fn check(&mut self, dut: &Dut, far: &mut FarEnd) -> Result<(), String> {
        if !self.on {
            return Ok(());
        }
        let rss = dut.rss_kib()?;
        if rss > LOAD_RSS_LIMIT_KIB {
            far.send(lines::Command::Load(false))?;
            self.on = false;
            println!("# {}: the DUT's RSS reached {} MiB under load: load stopped", self.tag, rss / 1024);
        }
        Ok(())
    }
}

/// Runs one contender at N sessions (`load`: bgpd with the BGP load).
fn bench_one(
    c: Contender,
    n: usize,
    peers: Peers,
    load: bool,
    opts: &Options,
    bgpd: Option<&Path>,
) -> Result<Outcome, String> {
    let tag = format!("{}-{n}{}", c.name(), if load { "-load" } else { "" });
    let far: Vec<Ipv4Addr> = (0..n).map(far_addr).collect();
    let bed = Testbed::new("bfd", &tag, DUT_ADDR, &far)?;
    let files = ScratchDir::new(&format!("bgpd-bench-bfd-{tag}"))?;
    let load_at_start = load_average();

    // The same program with no session, and bgpd with the same BGP peers but no BFD.
    let rss_zero_kib = if load {
        None
    } else {
        let dut = Dut::start(c, &bed.dut, files.path(), 0, peers, bgpd)?;
        dut.wait_ready(Duration::from_secs(20))?;
        std::thread::sleep(Duration::from_secs(2));
        Some(dut.rss_kib()?)
    };
    // (FRR's bfdd holds no BGP state: its increment is BFD's already.)
    let without_bfd = if peers == Peers::Bgp && c != Contender::Frr && !load {
        let dut = Dut::start(c, &bed.dut, files.path(), n, Peers::BgpWithoutBfd, bgpd)?;
        dut.wait_ready(Duration::from_secs(20))?;
        std::thread::sleep(SETTLE);
        let cpu0 = dut.cpu()?;
        let w0 = Instant::now();
        std::thread::sleep(opts.window);
        let cpu1 = dut.cpu()?;
        Some((dut.rss_kib()?, (cpu1.1 - cpu0.1) / w0.elapsed().as_secs_f64()))
    } else {
        None
    };

    let bgp_peers = if load { LOAD_PEERS.min(n) } else { 0 };
    let samples = Duration::from_secs(45) * u32::try_from(opts.silent).unwrap_or(u32::MAX);
    let plan = Plan {
        sessions: n,
        lifetime: UP_BUDGET + SETTLE + opts.window + samples + Duration::from_secs(180),
        bgp_peers,
        table_prefixes: opts.table_prefixes,
        load_period: opts.load_period,
    };
    let mut far = FarEnd::spawn(&bed.far, &plan)?;
    let t0 = Instant::now();
    let mut dut = Dut::start(c, &bed.dut, files.path(), n, peers, bgpd)?;
    let all_up = far.wait(t0 + UP_BUDGET, |f| f.up >= n);
    let seconds_to_up = all_up.map(|t| t.duration_since(t0).as_secs_f64());
    if all_up.is_none() {
        println!("# {tag}: only {} of {n} sessions Up after {} s; measuring what is up", far.up, UP_BUDGET.as_secs());
    }
    if bgp_peers > 0 && far.wait(Instant::now() + Duration::from_secs(60), |f| f.bgp_up >= bgp_peers).is_none() {
        println!("# {tag}: only {} of {bgp_peers} load peers Established after 60 s", far.bgp_up);
    }
    far.pump_until(Instant::now() + SETTLE);
    let dut_up_before = dut.sessions_up()?;
    let intervals = far.intervals()?;
    let up = far.up;
    let downs_before = far.downs.len();
    let load_t0 = Instant::now();
    if load {
        far.send(lines::Command::Load(true))?;
        // The window opens with the table already flowing.
        far.pump_until(Instant::now() + Duration::from_secs(1));
    }

    let mut guard = LoadGuard { on: load, tag: &tag };
    let (received0, _, _) = far.stats()?;
    let cpu0 = dut.cpu()?;
    let w0 = Instant::now();
    while Instant::now() < w0 + opts.window {
        far.pump_until((Instant::now() + Duration::from_secs(1)).min(w0 + opts.window));
        guard.check(&dut, &mut far)?;
    }
    let cpu1 = dut.cpu()?;
    let window = w0.elapsed().as_secs_f64();
    let (received1, _, _) = far.stats()?;
    let rss_kib = dut.rss_kib()?;
    let dut_tx_mean_ms = (received1 > received0).then(|| n as f64 * window * 1000.0 / (received1 - received0) as f64);

    let mut detect_ms = Vec::new();
    let mut detect_missed = 0;
    for k in 0..opts.silent {
        let i = sample_index(k, opts.silent, n, bgp_peers);
        match far.sample(i, n)? {
            Some(ms) => detect_ms.push(ms),
            None => {
                detect_missed += 1;
                println!("# {tag}: no Down from the DUT for silent session {i}");
            }
        }
        guard.check(&dut, &mut far)?;
    }
    let hwm_kib = dut.hwm_kib()?;
    let load_figures = if load {
        if guard.on {
            far.send(lines::Command::Load(false))?;
        }
        let secs = load_t0.elapsed().as_secs_f64();
        let (updates, routes) = dut.bgpd_peer_load("p0").unwrap_or_else(|e| {
            println!("# {tag}: {e}");
            (0, 0)
        });
        Some(LoadFigures { rounds: far.rounds, write_secs: far.round_secs, secs, updates, routes })
    } else {
        None
    };
    // The DUT is Up a moment after the far end (its last packet is on its way).
    far.pump_until(Instant::now() + Duration::from_secs(2));
    let dut_up_after = dut.sessions_up()?;
    if !dut.alive() {
        println!("# {tag}: a DUT process exited during the run");
    }
    let false_downs = far.downs.len() - downs_before;
    let load_avg = format!("{load_at_start}..{}", load_average());
    drop(dut);
    drop(far);
    Ok(Outcome {
        contender: c,
        peers,
        load,
        sessions: n,
        up,
        seconds_to_up,
        dut_up_before,
        dut_up_after,
        intervals,
        dut_tx_mean_ms,
        cpu_stat: (cpu1.0 - cpu0.0) / window,
        cpu_sched: (cpu1.1 - cpu0.1) / window,
        rss_kib,
        hwm_kib,
        rss_zero_kib,
        without_bfd,
        detect_ms,
        detect_missed,
        false_downs,
        load_figures,
        load_avg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_addresses_are_distinct_and_outside_the_dut_address() {
        let addrs: std::collections::HashSet<Ipv4Addr> = (0..MAX_SESSIONS).map(far_addr).collect();
        assert_eq!(addrs.len(), MAX_SESSIONS);
        assert!(!addrs.contains(&DUT_ADDR));
        assert_eq!(far_addr(0), Ipv4Addr::new(10, 251, 1, 1));
        assert_eq!(far_addr(249), Ipv4Addr::new(10, 251, 1, 250));
        assert_eq!(far_addr(250), Ipv4Addr::new(10, 251, 2, 1));
        assert_eq!(far_addr(MAX_SESSIONS - 1), Ipv4Addr::new(10, 251, 40, 250));
    }

    #[test]
    fn quantiles_are_min_median_max() {
        assert_eq!(quantiles(&[]), None);
        assert_eq!(quantiles(&[5.0]), Some((5.0, 5.0, 5.0)));
        assert_eq!(quantiles(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(quantiles(&[4.0, 1.0, 3.0, 2.0]), Some((1.0, 2.5, 4.0)));
        assert_eq!(quantiles(&[f64::NAN, 1.0]), Some((1.0, 1.0, 1.0)));
    }

    #[test]
    fn samples_are_spread_over_the_sessions_without_load() {
        let picked: Vec<usize> = (0..10).map(|k| sample_index(k, 10, 100, 0)).collect();
        assert_eq!(picked, vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
        let loaded: Vec<usize> = (0..10).map(|k| sample_index(k, 10, 1000, 4)).collect();
        assert!(loaded.iter().all(|&i| (4..1000).contains(&i)));
        let distinct: std::collections::HashSet<_> = loaded.iter().collect();
        assert_eq!(distinct.len(), 10);
        // More samples than sessions: indices stay in range.
        assert!((0..10).map(|k| sample_index(k, 10, 3, 0)).all(|i| i < 3));
    }

    #[test]
    fn arguments_are_checked() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o =
            parse_args(&args(&["--sessions", "10,20", "--contenders", "bird,frr", "--silent", "3", "--load"])).unwrap();
        assert_eq!(o.sessions, vec![10, 20]);
        assert_eq!(o.contenders, vec![Contender::Bird, Contender::Frr]);
        assert!(o.load && o.silent == 3 && o.via == vec![Peers::Static, Peers::Bgp]);
        assert_eq!(parse_args(&args(&["--via", "bgp"])).unwrap().via, vec![Peers::Bgp]);
        assert!(parse_args(&args(&["--sessions", "0"])).is_err());
        assert!(parse_args(&args(&["--contenders", "gobgp"])).is_err());
        assert!(parse_args(&args(&["--window-secs"])).is_err());
        assert!(parse_args(&args(&["--via", "ospf"])).is_err());
    }
}

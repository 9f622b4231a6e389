//! Idle-sessions benchmark (issue 3): N established, idle BGP sessions held by bgpd and by BIRD 2.
//!
//! `bench sessions [--peers N] [--contenders bgpd,bird] [--idle-secs S] [--budget-secs B] [--bgpd PATH]`
//! builds, per contender, two fresh network namespaces joined by a veth: the device under test
//! (DUT) has 10.250.0.1/16, the far side N addresses 10.250.(1+i/250).(i%250+1)/16, one per
//! session. The bench re-executes itself in the far namespace (`bench sessions __farend …`):
//! N passive sessions of `bgpd_proto::session` on one tokio thread, listening on port 179
//! of their own addresses, answering keepalives. The DUT is configured with the N peers as
//! an operator would (it connects; hold 90 s, keepalive 30 s on every side).
//!
//! Measured per contender: seconds from starting the DUT until the far end sees all N
//! sessions Established (cross-checked with `bgpd show peers --json` / `birdc show
//! protocols`); the DUT's VmRSS and VmHWM once idle, per session and per session above the
//! same DUT's RSS with no peer (a separate short run); the DUT's CPU seconds per second over
//! an idle window (utime+stime of `/proc/PID/stat`, and the finer `schedstat` of its
//! threads); sessions that left Established during the window (must be 0). One line per
//! contender, then `ratio=bgpd/bird …` lines.
//!
//! The parts: `testbed` (namespaces, scratch directories, child processes and their cleanup
//! on Ctrl-C, also used by the BFD and chaos benches), `dut` (bgpd or BIRD under test and
//! what is read from it), `farend` (the far end, seen from the bench and inside its namespace).

pub(crate) mod dut;
pub(crate) mod farend;
mod testbed;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::args::Flags;
use dut::Dut;
use farend::{farend_main, FarEnd};
pub(crate) use testbed::{bgpd_show_json, install_signal_cleanup, reap, spawn_far_end, Netns, ScratchDir, Testbed};

const DUT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
pub(crate) const DUT_AS: u32 = 64512;
const FAR_AS: u32 = 65000;
const HOLD_SECS: u16 = 90;
const KEEPALIVE: Duration = Duration::from_secs(30);
const MAX_PEERS: usize = 50_000;
/// Time after the last session came up before the idle window opens (initial UPDATEs, End-of-RIB).
const SETTLE: Duration = Duration::from_secs(5);

/// The far end's address for session `i` (0-based): 10.250.(1+i/250).(i%250+1).
pub(crate) fn far_addr(i: usize) -> Ipv4Addr {
    // MAX_PEERS keeps 1 + i/250 ≤ 201 and i%250 + 1 ≤ 250: both fit a u8.
    Ipv4Addr::new(10, 250, (1 + i / 250) as u8, (i % 250 + 1) as u8)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contender {
    Bgpd,
    Bird,
}

impl Contender {
    /// `--contenders bgpd,bird`.
    pub(crate) fn list(value: &str) -> Result<Vec<Contender>, String> {
        value
            .split(',')
            .map(|c| match c {
                "bgpd" => Ok(Contender::Bgpd),
                "bird" => Ok(Contender::Bird),
                other => Err(format!("unknown contender {other:?}; known: bgpd, bird")),
            })
            .collect()
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Contender::Bgpd => "bgpd",
            Contender::Bird => "bird",
        }
    }
}

struct Options {
    peers: usize,
    contenders: Vec<Contender>,
    idle: Duration,
    budget: Duration,
    bgpd: Option<PathBuf>,
}

const USAGE: &str =
    "usage: sessions [--peers N] [--contenders bgpd,bird] [--idle-secs S] [--budget-secs B] [--bgpd PATH]";

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        peers: 1000,
        contenders: vec![Contender::Bgpd, Contender::Bird],
        idle: Duration::from_secs(30),
        budget: Duration::from_secs(180),
        bgpd: None,
    };
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next() {
        match flag {
            "--peers" => opts.peers = flags.number_in(1..=MAX_PEERS)?,
            "--idle-secs" => opts.idle = Duration::from_secs(flags.number_in(1..=3600)?),
            "--budget-secs" => opts.budget = Duration::from_secs(flags.number_in(1..=3600)?),
            "--bgpd" => opts.bgpd = Some(PathBuf::from(flags.value()?)),
            "--contenders" => opts.contenders = Contender::list(flags.value()?)?,
            _ => return Err(format!("{}; {USAGE}", flags.unknown())),
        }
    }
    Ok(opts)
}

/// Runs the sessions benchmark with the arguments after `sessions` (or, with `__farend`
/// first, the far end inside its namespace).
pub fn run(args: &[String]) -> Result<(), String> {
    if args.first().map(String::as_str) == Some("__farend") {
        return farend_main(&args[1..]);
    }
    let opts = parse_args(args)?;
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root (network namespaces, port 179)".into());
    }
    install_signal_cleanup("sessions bench")?;
    let bgpd = if opts.contenders.contains(&Contender::Bgpd) {
        Some(testgate::testbed::bgpd_binary(opts.bgpd.clone())?)
    } else {
        None
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let bird_version = Command::new("/usr/sbin/bird")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string() + String::from_utf8_lossy(&o.stdout).trim())
        .unwrap_or_else(|e| format!("bird: {e}"));
    println!(
        "# sessions benchmark: {} idle eBGP sessions (hold {HOLD_SECS} s, keepalive {} s), idle window {} s, \
         kernel {}, {} CPUs, {bird_version}",
        opts.peers,
        KEEPALIVE.as_secs(),
        opts.idle.as_secs(),
        kernel.trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let results = each_contender(&opts.contenders, |c| bench_one(c, &opts, bgpd.as_deref()), Outcome::line);
    if let Some((b, r)) = bgpd_and_bird(&results) {
        let ratio = |x: f64, y: f64| match (x > 0.0, y > 0.0) {
            (_, true) => format!("{:.3}", x / y),
            (true, false) => "inf".to_string(),
            (false, false) => "n/a".to_string(),
        };
        println!(
            "ratio=bgpd/bird seconds_to_establish={} kib_per_session={} kib_per_session_increment={} cpu_s_per_s_idle={} cpu_s_per_s_idle_sched={}",
            ratio(b.seconds, r.seconds),
            ratio(b.kib_per_session(), r.kib_per_session()),
            ratio(b.kib_increment(), r.kib_increment()),
            ratio(b.cpu_stat, r.cpu_stat),
            ratio(b.cpu_sched, r.cpu_sched),
        );
        let verdict = |ok: bool| if ok { "met" } else { "missed" };
        println!(
            "target memory={} cpu={} dropped={}",
            verdict(b.kib_per_session() <= r.kib_per_session()),
            verdict(b.cpu_sched <= r.cpu_sched.max(0.001)),
            verdict(b.dropped == 0 && b.established == b.peers),
        );
    }
    Ok(())
}

/// Runs `one` for each contender in turn, printing its figures (`line`) or why it failed;
/// the figures of those that ran.
pub(crate) fn each_contender<O>(
    contenders: &[Contender],
    mut one: impl FnMut(Contender) -> Result<O, String>,
    line: impl Fn(&O) -> String,
) -> Vec<(Contender, O)> {
    let mut results = Vec::new();
    for &c in contenders {
        match one(c) {
            Ok(r) => {
                println!("{}", line(&r));
                results.push((c, r));
            }
            Err(e) => println!("# contender={} failed: {e}", c.name()),
        }
    }
    results
}

/// bgpd's and BIRD's figures, when both ran.
pub(crate) fn bgpd_and_bird<O>(results: &[(Contender, O)]) -> Option<(&O, &O)> {
    let find = |c: Contender| results.iter().find(|(x, _)| *x == c).map(|(_, o)| o);
    Some((find(Contender::Bgpd)?, find(Contender::Bird)?))
}

/// The figures of one contender.
struct Outcome {
    contender: Contender,
    peers: usize,
    established: usize,
    dut_established_before: usize,
    dut_established_after: usize,
    seconds: f64,
    rss_established_kib: u64,
    rss_kib: u64,
    hwm_kib: u64,
    rss_zero_kib: u64,
    cpu_stat: f64,
    cpu_sched: f64,
    dropped: usize,
}

impl Outcome {
    fn kib_per_session(&self) -> f64 {
        self.rss_kib as f64 / self.peers as f64
    }

    fn kib_increment(&self) -> f64 {
        (self.rss_kib as f64 - self.rss_zero_kib as f64) / self.peers as f64
    }

    fn line(&self) -> String {
        let mut s = format!(
            "contender={} peers={} established={} seconds_to_establish={:.3} rss_kib={} hwm_kib={} \
             rss_0peers_kib={} kib_per_session={:.2} kib_per_session_increment={:.2} cpu_s_per_s_idle={:.5} \
             cpu_s_per_s_idle_sched={:.5} dropped={}",
            self.contender.name(),
            self.peers,
            self.established,
            self.seconds,
            self.rss_kib,
            self.hwm_kib,
            self.rss_zero_kib,
            self.kib_per_session(),
            self.kib_increment(),
            self.cpu_stat,
            self.cpu_sched,
            self.dropped,
        );
        let _ = write!(
            s,
            " rss_at_establishment_kib={} dut_established_before={} dut_established_after={}",
            self.rss_established_kib, self.dut_established_before, self.dut_established_after
        );
        s
    }
}

fn bench_one(c: Contender, opts: &Options, bgpd: Option<&Path>) -> Result<Outcome, String> {
    let n = opts.peers;
    let far: Vec<Ipv4Addr> = (0..n).map(far_addr).collect();
    let bed = Testbed::new("sess", c.name(), DUT_ADDR, &far)?;
    let files = ScratchDir::new(&format!("bgpd-bench-sessions-{}", c.name()))?;

    // The DUT's own footprint: the same program, same namespace, no peer.
    let rss_zero_kib = {
        let dut = Dut::start(c, &bed.dut, &files, 0, bgpd)?;
        dut.wait_ready(Duration::from_secs(20))?;
        std::thread::sleep(Duration::from_secs(2));
        dut.memory()?.0
    };

    let lifetime = opts.budget + opts.idle + SETTLE + Duration::from_secs(60);
    let mut far = FarEnd::spawn(&bed.far, n, lifetime, farend::Role::Idle)?;
    let t0 = Instant::now();
    let dut = Dut::start(c, &bed.dut, &files, n, bgpd)?;
    let all_up = far.wait_up(n, t0 + opts.budget);
    let seconds = all_up.unwrap_or_else(Instant::now).duration_since(t0).as_secs_f64();
    if all_up.is_none() {
        println!(
            "# contender={} only {} of {n} sessions up after {} s; measuring what is up",
            c.name(),
            far.up,
            opts.budget.as_secs()
        );
    }
    far.pump_until(Instant::now() + SETTLE);
    let established = far.up;
    let dut_established_before = dut.established()?;
    let rss_established_kib = dut.memory()?.0;

    let downs_before = far.downs;
    let cpu0 = dut.cpu()?;
    let w0 = Instant::now();
    far.pump_until(w0 + opts.idle);
    let cpu1 = dut.cpu()?;
    let window = w0.elapsed().as_secs_f64();
    let dropped = far.downs - downs_before;
    let (rss_kib, hwm_kib) = dut.memory()?;
    let dut_established_after = dut.established()?;
    drop(dut);
    drop(far);
    Ok(Outcome {
        contender: c,
        peers: n,
        established,
        dut_established_before,
        dut_established_after,
        seconds,
        rss_established_kib,
        rss_kib,
        hwm_kib,
        rss_zero_kib,
        cpu_stat: (cpu1.0 - cpu0.0) / window,
        cpu_sched: (cpu1.1 - cpu0.1) / window,
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_addresses_are_distinct_and_outside_the_dut_address() {
        let addrs: std::collections::HashSet<Ipv4Addr> = (0..MAX_PEERS).map(far_addr).collect();
        assert_eq!(addrs.len(), MAX_PEERS);
        assert!(!addrs.contains(&DUT_ADDR));
        assert_eq!(far_addr(0), Ipv4Addr::new(10, 250, 1, 1));
        assert_eq!(far_addr(249), Ipv4Addr::new(10, 250, 1, 250));
        assert_eq!(far_addr(250), Ipv4Addr::new(10, 250, 2, 1));
    }

    #[test]
    fn arguments_are_checked() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse_args(&args(&["--peers", "10", "--contenders", "bird", "--idle-secs", "5"])).unwrap();
        assert_eq!((o.peers, o.contenders, o.idle), (10, vec![Contender::Bird], Duration::from_secs(5)));
        assert!(parse_args(&args(&["--peers", "0"])).is_err());
        assert!(parse_args(&args(&["--contenders", "frr"])).is_err());
        assert!(parse_args(&args(&["--idle-secs"])).is_err());
    }
}

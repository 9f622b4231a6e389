//! Connection storm: `--storm-rate` TCP connection attempts per second to the DUT's port 179
//! for `--storm-secs`, from `--storm-sources` addresses of the peers' namespace that are not
//! configured peers (10.77.0.201…), while the good tester (holding `--routes` /24s) and the
//! monitor keep their sessions. Each attempt binds its source, connects (waiting at most
//! 1 s) and closes at once with a RST (SO_LINGER 0, so that no TIME_WAIT piles up); at most
//! [`MAX_IN_FLIGHT`] wait at a time, attempts beyond that are counted as not made.
//!
//! Measured: attempts made and how they ended (connected, refused, no answer); in the DUT's
//! namespace the kernel's TCP counters over the storm (`PassiveOpens`: handshakes completed
//! on the listening socket, which the DUT must then accept; `ListenOverflows`,
//! `ListenDrops`: dropped because the DUT did not accept fast enough); the DUT's CPU and
//! peak RSS; the good tester's routes at the monitor (fewest during, and after) and both
//! sessions' state at the end, as the DUT and the speakers see them.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::bench::routeserver::dut::DutKind;
use crate::bench::routeserver::{DUT_ADDR, INTERRUPTED};
use crate::lab::Ns;

use super::{
    dut_peer_state, good_load, good_peer, load_good_table, mib, monitor_peer, sampled, Bed, Figures, Options, Speakers,
    QUIET,
};

/// The most source addresses (10.77.0.201 to 10.77.0.250).
pub const MAX_SOURCES: usize = 50;
/// The most attempts waiting for an answer at once.
pub const MAX_IN_FLIGHT: u64 = 15_000;
/// How long an attempt waits for the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Source address `i` of the storm (0-based).
pub fn source_addr(i: usize) -> Ipv4Addr {
    // MAX_SOURCES keeps 201 + i ≤ 250.
    Ipv4Addr::new(10, 77, 0, 201 + i as u8)
}

/// How the storm's attempts ended.
#[derive(Debug, Default)]
pub struct StormCounts {
    /// Attempts started.
    pub attempts: AtomicU64,
    /// Handshakes completed.
    pub connected: AtomicU64,
    /// Refused (RST to the SYN).
    pub refused: AtomicU64,
    /// No answer within [`CONNECT_TIMEOUT`].
    pub timed_out: AtomicU64,
    /// Other errors (bind, socket).
    pub errors: AtomicU64,
    /// Attempts not made because [`MAX_IN_FLIGHT`] were waiting.
    pub capped: AtomicU64,
    in_flight: AtomicU64,
}

async fn attempt(src: Ipv4Addr, c: Arc<StormCounts>) {
    let counter = match connect(src).await {
        Ok(Some(_stream)) => &c.connected,
        Ok(None) => &c.timed_out,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => &c.refused,
        Err(_) => &c.errors,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    c.in_flight.fetch_sub(1, Ordering::Relaxed);
}

/// One connection from `src` to the DUT's port 179: `Ok(None)` when unanswered in time.
/// The stream closes with a RST when dropped.
async fn connect(src: Ipv4Addr) -> std::io::Result<Option<tokio::net::TcpStream>> {
    let s = tokio::net::TcpSocket::new_v4()?;
    // Deprecated because a non-zero linger blocks the thread on drop; a zero linger does
    // not block: the close is abortive (RST) and nothing is left in TIME_WAIT.
    #[allow(deprecated)]
    s.set_linger(Some(Duration::ZERO))?;
    s.bind(SocketAddrV4::new(src, 0).into())?;
    match tokio::time::timeout(CONNECT_TIMEOUT, s.connect(SocketAddrV4::new(DUT_ADDR, 179).into())).await {
        Ok(r) => r.map(Some),
        Err(_) => Ok(None),
    }
}

/// Runs the storm from `sources` in `ns`: `rate` attempts a second, paced every millisecond,
/// for `secs`, then waits for the last answers. Returns the counts and the seconds it took.
pub fn storm(ns: &Ns, sources: &[Ipv4Addr], rate: u64, secs: u64) -> Result<(StormCounts, f64), String> {
    // Each attempt waiting holds a descriptor: raise the soft limit to the hard one.
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit { current: lim.maximum, maximum: lim.maximum },
    );
    let counts = Arc::new(StormCounts::default());
    let c = counts.clone();
    let sources = sources.to_vec();
    let elapsed = ns
        .in_ns(move || -> Result<f64, String> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let total = rate * secs;
                let start = tokio::time::Instant::now();
                let end = start + Duration::from_secs(secs);
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut launched = 0u64;
                while launched < total && tokio::time::Instant::now() < end && !INTERRUPTED.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let due = ((rate as f64 * start.elapsed().as_secs_f64()) as u64).min(total);
                    while launched < due {
                        if c.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                            c.capped.fetch_add(due - launched, Ordering::Relaxed);
                            launched = due;
                            break;
                        }
                        let src = sources[(launched as usize) % sources.len()];
                        launched += 1;
                        c.attempts.fetch_add(1, Ordering::Relaxed);
                        c.in_flight.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(attempt(src, c.clone()));
                    }
                }
                let storm_secs = start.elapsed().as_secs_f64();
                let wait_until = tokio::time::Instant::now() + CONNECT_TIMEOUT + Duration::from_secs(1);
                while c.in_flight.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < wait_until {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(storm_secs)
            })
        })
        .map_err(|e| format!("entering {}: {e}", ns.name()))??;
    let counts = Arc::try_unwrap(counts).map_err(|_| "storm tasks still hold the counters".to_string())?;
    Ok((counts, elapsed))
}

/// The TCP counters of a namespace's `/proc/net/snmp` (`Tcp:` lines) and `/proc/net/netstat`
/// (`TcpExt:` lines), by name.
pub fn tcp_counters(ns: &Ns) -> Result<HashMap<String, u64>, String> {
    let mut out = HashMap::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let text = ns.run("cat", &[file]).map_err(|e| format!("{file}: {e}"))?;
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks_exact(2) {
            let (names, values) = (pair[0], pair[1]);
            let Some(prefix) = names.split_once(':').map(|(p, _)| p) else { continue };
            if prefix != "Tcp" && prefix != "TcpExt" {
                continue;
            }
            for (n, v) in names.split_whitespace().skip(1).zip(values.split_whitespace().skip(1)) {
                if let Ok(v) = v.parse() {
                    out.insert(n.to_string(), v);
                }
            }
        }
    }
    Ok(out)
}

/// Runs the scenario against `kind`.
pub fn run(kind: DutKind, bgpd: Option<&Path>, o: &Options) -> Result<Figures, String> {
    let load = good_load(o.routes, (o.routes / 1000).max(1))?;
    let sources: Vec<Ipv4Addr> = (0..o.storm_sources.min(MAX_SOURCES)).map(source_addr).collect();
    let peers = [good_peer(), monitor_peer()];
    let bed = Bed::new("storm", kind, &peers, &sources, bgpd, Duration::from_secs(o.storm_secs + 120))?;
    bed.peers_ns.sysctl("net.ipv4.ip_local_port_range=1024 65535").map_err(|e| format!("sysctl: {e}"))?;
    let speakers = Speakers::connect(&bed, &load)?;
    std::thread::sleep(QUIET);
    let control = &bed.control;
    let loaded = load_good_table(control, o.routes)?;
    let dut = bed.dut()?;
    let before = tcp_counters(&bed.dut_ns)?;
    let cpu_before = dut.cpu_seconds()?;
    let (rss_before, _) = dut.memory_kib()?;
    let (result, samples) = sampled(dut, control, || storm(&bed.peers_ns, &sources, o.storm_rate, o.storm_secs));
    let (counts, secs) = result?;
    let cpu = dut.cpu_seconds()? - cpu_before;
    let (_, hwm) = dut.memory_kib()?;
    let after = tcp_counters(&bed.dut_ns)?;
    std::thread::sleep(Duration::from_secs(2));
    let held = control.progress.load(Ordering::Relaxed);
    let states = format!(
        "t1 {}, monitor {}",
        dut_peer_state(&bed, kind, bgpd, "t1"),
        dut_peer_state(&bed, kind, bgpd, "monitor")
    );
    let speaker_error = bed.speaker_error();
    let alive = bed.alive();
    speakers.finish(control);

    let delta = |n: &str| after.get(n).copied().unwrap_or(0).saturating_sub(before.get(n).copied().unwrap_or(0));
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut f = Figures::default();
    f.num("source addresses", sources.len() as f64, 0);
    f.num("good routes", o.routes as f64, 0);
    f.num("seconds until the monitor held them (before the storm)", loaded, 3);
    f.num("attempts made", get(&counts.attempts) as f64, 0);
    f.num("attempts/s made", get(&counts.attempts) as f64 / secs.max(1e-9), 0);
    f.num(format!("attempts not made ({MAX_IN_FLIGHT} waiting)"), get(&counts.capped) as f64, 0);
    f.num("connected", get(&counts.connected) as f64, 0);
    f.num("refused", get(&counts.refused) as f64, 0);
    f.num(format!("no answer in {} s", CONNECT_TIMEOUT.as_secs()), get(&counts.timed_out) as f64, 0);
    f.num("other errors", get(&counts.errors) as f64, 0);
    f.num("DUT kernel: handshakes completed (PassiveOpens)/s", delta("PassiveOpens") as f64 / secs.max(1e-9), 0);
    f.num("DUT kernel: ListenOverflows", delta("ListenOverflows") as f64, 0);
    f.num("DUT kernel: ListenDrops", delta("ListenDrops") as f64, 0);
    f.num("DUT CPU s over the storm", cpu, 2);
    f.num("DUT CPU-s/s over the storm", cpu / secs.max(1e-9), 2);
    f.num("DUT RSS before, MiB", mib(rss_before), 1);
    f.num("DUT peak RSS (VmHWM), MiB", mib(hwm.max(samples.peak_rss_kib)), 1);
    f.num("good routes at the monitor: fewest during the storm", samples.min_progress.min(held) as f64, 0);
    f.num("good routes at the monitor 2 s after", held as f64, 0);
    f.text("sessions at the end (DUT's view)", states);
    f.text(
        "good tester and monitor sessions (speakers' view)",
        speaker_error.unwrap_or_else(|| "up throughout".into()),
    );
    f.text("DUT process", if alive { "running" } else { "exited" });
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_sources_are_not_peers() {
        let last = source_addr(MAX_SOURCES - 1);
        assert_eq!(last, Ipv4Addr::new(10, 77, 0, 250));
        assert!(source_addr(0) > super::super::malformed::flooder_addr(super::super::malformed::MAX_FLOODERS - 1));
    }
}

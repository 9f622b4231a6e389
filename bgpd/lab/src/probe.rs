//! The pods' listener and the reachability prober. Both run inside a pod's
//! (or host's) network namespace as `bgpd lab serve` / `bgpd lab probe`.
//! A probe is one TCP connection: the listener answers with its pod's name,
//! so a check knows not only that an address answered but who did.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long one probe waits to connect and for the answer.
const TIMEOUT: Duration = Duration::from_millis(1000);

/// Answers every connection with `name` and a newline, until killed.
pub fn serve(name: &str, port: u16) -> anyhow::Result<()> {
    // One dual-stack socket (IPv4 arrives mapped); IPv4 only where the
    // namespace has no IPv6.
    let listener = TcpListener::bind(("::", port)).or_else(|_| TcpListener::bind(("0.0.0.0", port)))?;
    let reply = format!("{name}\n");
    for conn in listener.incoming() {
        let Ok(mut c) = conn else { continue };
        let _ = c.set_write_timeout(Some(TIMEOUT));
        let _ = c.write_all(reply.as_bytes());
    }
    Ok(())
}

/// One probe's outcome.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Outcome {
    /// Where it went.
    pub target: SocketAddr,
    /// Who answered, or why nobody did.
    pub answer: Result<String, String>,
}

/// Connects once to `target` and reads the answer.
pub fn probe_once(target: SocketAddr) -> Outcome {
    let answer = (|| {
        let mut s = TcpStream::connect_timeout(&target, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 128];
        let mut got = 0;
        while got < buf.len() {
            match s.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        let text = String::from_utf8_lossy(&buf[..got]).trim().to_string();
        if text.is_empty() {
            Err("connected, but no answer".into())
        } else {
            Ok(text)
        }
    })();
    Outcome { target, answer }
}

/// Probes every target once (in parallel) and prints one JSON line per outcome.
pub fn probe(targets: &[SocketAddr]) -> anyhow::Result<()> {
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let hs: Vec<_> = targets.iter().map(|t| s.spawn(move || probe_once(*t))).collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Outcome { target: targets[0], answer: Err("prober panicked".into()) }))
            .collect()
    });
    for o in outcomes {
        println!("{}", serde_json::to_string(&o)?);
    }
    Ok(())
}

/// Counts from a probe loop.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoopCounts {
    /// Rounds run.
    pub rounds: u64,
    /// Probes sent.
    pub sent: u64,
    /// Probes that got no answer (or an unexpected one is still an answer: counted in `answers`).
    pub failed: u64,
    /// (target, answer) → count, for the answers received.
    pub answers: Vec<(SocketAddr, String, u64)>,
    /// (target, error) → count, for the failures.
    pub failures: Vec<(SocketAddr, String, u64)>,
    /// (target, ms): for each target with failures, the window over which
    /// its probes failed: from the start of the first failed probe to the
    /// start of the first answered one after the last failure (to the end,
    /// if none was).
    #[serde(default)]
    pub outages: Vec<(SocketAddr, u64)>,
}

fn bump(list: &mut Vec<(SocketAddr, String, u64)>, t: SocketAddr, what: String) {
    match list.iter_mut().find(|(a, b, _)| *a == t && *b == what) {
        Some(e) => e.2 += 1,
        None => list.push((t, what, 1)),
    }
}

/// The window over which `probes` (start time since the loop began,
/// answered) failed: from the first failed probe to the first answered one
/// after the last failure (or to `end`). Answers inside it are not gaps in
/// the outage: with ECMP each probe (a new connection) may take another path.
fn failure_window(probes: &mut [(Duration, bool)], end: Duration) -> Option<Duration> {
    probes.sort();
    let first = probes.iter().find(|(_, ok)| !ok)?.0;
    let last = probes.iter().rev().find(|(_, ok)| !ok)?.0;
    let answered = probes.iter().find(|(at, ok)| *ok && *at > last).map_or(end, |(at, _)| *at);
    Some(answered.saturating_sub(first))
}

/// Probes every target every `interval` until `stop` exists or `max` has
/// passed, then prints the counts as one JSON line. A probe starts on time
/// whether the ones before it have finished or not (one that gets no answer
/// takes [`TIMEOUT`]), so an outage is timed to about one `interval`.
pub fn probe_loop(targets: &[SocketAddr], interval: Duration, stop: &Path, max: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut counts = LoopCounts::default();
    let (tx, rx) = std::sync::mpsc::channel::<(Duration, Outcome)>();
    let mut in_flight = Vec::new();
    while !stop.exists() && start.elapsed() < max {
        let round = Instant::now();
        let at = round - start;
        for t in targets {
            let (tx, t) = (tx.clone(), *t);
            in_flight.push(std::thread::spawn(move || {
                let _ = tx.send((at, probe_once(t)));
            }));
        }
        in_flight.retain(|h| !h.is_finished());
        counts.rounds += 1;
        if let Some(rest) = interval.checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let end = start.elapsed();
    drop(tx);
    for h in in_flight {
        let _ = h.join();
    }
    let mut by_target: std::collections::BTreeMap<SocketAddr, Vec<(Duration, bool)>> = Default::default();
    for (at, o) in rx {
        counts.sent += 1;
        by_target.entry(o.target).or_default().push((at, o.answer.is_ok()));
        match o.answer {
            Ok(a) => bump(&mut counts.answers, o.target, a),
            Err(e) => {
                counts.failed += 1;
                bump(&mut counts.failures, o.target, e);
            }
        }
    }
    for (t, mut probes) in by_target {
        if let Some(d) = failure_window(&mut probes, end) {
            counts.outages.push((t, d.as_millis() as u64));
        }
    }
    // Whoever reads this may be gone (a drill that failed): not worth a panic.
    let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(&counts)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reads_the_listeners_name_and_reports_refusals() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().take(1) {
                c.unwrap().write_all(b"pod-a\n").unwrap();
            }
        });
        assert_eq!(probe_once(addr).answer, Ok("pod-a".to_string()));
        // Nothing listens on the now-closed port's neighbour 1 on loopback.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let o = probe_once(closed);
        assert!(o.answer.as_ref().is_err_and(|e| e.starts_with("connect")), "{o:?}");
    }

    #[test]
    fn the_failure_window_runs_from_the_first_failure_to_the_answer_after_the_last() {
        let ms = Duration::from_millis;
        // An answer between failures (another ECMP path) does not end it.
        let mut probes = vec![(ms(0), true), (ms(200), false), (ms(400), true), (ms(600), false), (ms(800), true)];
        assert_eq!(failure_window(&mut probes, ms(900)), Some(ms(600)));
        // Out of order (as the threads report), and failing to the end.
        let mut probes = vec![(ms(600), false), (ms(0), true), (ms(200), false), (ms(400), false)];
        assert_eq!(failure_window(&mut probes, ms(1000)), Some(ms(800)));
        assert_eq!(failure_window(&mut [(ms(0), true), (ms(200), true)], ms(300)), None);
    }
}

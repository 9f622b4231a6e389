//! The far end, seen from the bench: the process in the far namespace, its reports
//! followed and its counters kept, commands sent to it.

use std::io::Write;
use std::process::{Child, ChildStdin, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::lines::{self, DownCause, Report};
use crate::bench::sessions::{reap, spawn_far_end, Netns};

/// What a far end is started with.
pub(super) struct Plan {
    /// BFD sessions, one per far address.
    pub sessions: usize,
    /// How long it may live at most.
    pub lifetime: Duration,
    /// BGP load peers (0: none).
    pub bgp_peers: usize,
    /// Prefixes of the table the first load peer sends.
    pub table_prefixes: usize,
    /// A table round begins every this long.
    pub load_period: Duration,
}

/// The far-end process and what it said so far.
pub(super) struct FarEnd {
    child: Child,
    /// Held open: the far end exits when it closes.
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Sessions Up now, as the far end last said.
    pub up: usize,
    /// Sessions that left Up unasked, by cause.
    pub downs: Vec<(usize, DownCause)>,
    /// Load peers Established now.
    pub bgp_up: usize,
    /// Full-table rounds written.
    pub rounds: u64,
    /// Seconds the rounds took to write, all together.
    pub round_secs: f64,
    /// Errors it reported.
    pub errors: Vec<String>,
}

impl FarEnd {
    /// Starts the far end in `ns` and waits until it is ready.
    pub fn spawn(ns: &Netns, plan: &Plan) -> Result<FarEnd, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating the bench binary: {e}"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name()])
            .arg(exe)
            .args(["bfd", "__farend", "--sessions", &plan.sessions.to_string()])
            .args(["--lifetime-secs", &plan.lifetime.as_secs().to_string()])
            .args(["--bgp-peers", &plan.bgp_peers.to_string()])
            .args(["--table-prefixes", &plan.table_prefixes.to_string()])
            .args(["--load-period-ms", &plan.load_period.as_millis().to_string()]);
        let (child, stdin, lines) = spawn_far_end(cmd)?;
        let mut far = FarEnd {
            child,
            stdin,
            lines,
            up: 0,
            downs: Vec::new(),
            bgp_up: 0,
            rounds: 0,
            round_secs: 0.0,
            errors: Vec::new(),
        };
        // Building a table of a million prefixes takes a few seconds.
        match far.next_until(Instant::now() + Duration::from_secs(60)) {
            Some(Report::Ready) => Ok(far),
            Some(r) => Err(format!("far end said {r} instead of ready")),
            None => Err("far end not ready in 60 s".into()),
        }
    }

    /// Sends a command.
    pub fn send(&mut self, c: lines::Command) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("far end: stdin closed")?;
        writeln!(stdin, "{c}").and_then(|()| stdin.flush()).map_err(|e| format!("far end: {e}"))
    }

    /// The next report before `until`, counters updated; `None` at `until` or when the
    /// far end is gone.
    fn next_until(&mut self, until: Instant) -> Option<Report> {
        let left = until.checked_duration_since(Instant::now())?;
        let line = match self.lines.recv_timeout(left) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => return None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(left);
                return None;
            }
        };
        let r = match line.parse::<Report>() {
            Ok(r) => r,
            Err(_) => {
                println!("# far end: {line}");
                return self.next_until(until);
            }
        };
        match &r {
            Report::Up(k) => self.up = *k,
            Report::Down { index, cause, up } => {
                self.up = *up;
                self.downs.push((*index, *cause));
                // The first few by index; a mass drop shows in the counts anyway.
                if self.downs.len() <= 5 {
                    println!("# far end: session {index} left Up ({r})");
                }
            }
            Report::Bgp { up: true, .. } => self.bgp_up += 1,
            Report::Bgp { up: false, index } => {
                self.bgp_up = self.bgp_up.saturating_sub(1);
                println!("# far end: load peer {index} left Established");
            }
            Report::Round { rounds, secs } => {
                self.rounds = *rounds;
                self.round_secs += secs;
            }
            Report::Error(e) => {
                println!("# far end: {e}");
                self.errors.push(e.clone());
            }
            _ => {}
        }
        Some(r)
    }

    /// Follows the far end until `done` holds; when, or `None` at the deadline.
    pub fn wait(&mut self, deadline: Instant, mut done: impl FnMut(&FarEnd) -> bool) -> Option<Instant> {
        while !done(self) {
            self.next_until(deadline)?;
        }
        Some(Instant::now())
    }

    /// Follows the far end until `until`.
    pub fn pump_until(&mut self, until: Instant) {
        while Instant::now() < until {
            if self.next_until(until).is_none() {
                break;
            }
        }
    }

    /// Waits for the first report `pick` takes, until `deadline`; other reports only
    /// update the counters.
    fn answer<T>(&mut self, deadline: Instant, mut pick: impl FnMut(&Report) -> Option<T>) -> Option<T> {
        loop {
            if let Some(v) = pick(&self.next_until(deadline)?) {
                return Some(v);
            }
        }
    }

    /// (received, sent, discarded) packets so far.
    pub fn stats(&mut self) -> Result<(u64, u64, u64), String> {
        self.send(lines::Command::Stats)?;
        self.answer(Instant::now() + Duration::from_secs(10), |r| match r {
            Report::Stats { received, sent, discarded } => Some((*received, *sent, *discarded)),
            _ => None,
        })
        .ok_or_else(|| "far end: no stats".to_string())
    }

    /// The intervals the Up sessions negotiated: (tx ms, DUT's tx ms, detection ms, count).
    pub fn intervals(&mut self) -> Result<Vec<(u64, u64, u64, usize)>, String> {
        self.send(lines::Command::Intervals)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        loop {
            let r = self.answer(deadline, |r| match r {
                Report::Intervals { .. } | Report::IntervalsEnd => Some(r.clone()),
                _ => None,
            });
            match r {
                Some(Report::Intervals { tx_ms, rx_ms, detect_ms, count }) => {
                    out.push((tx_ms, rx_ms, detect_ms, count))
                }
                Some(_) => return Ok(out),
                None => return Err("far end: no intervals".into()),
            }
        }
    }

    /// One detection sample on session `i`: the DUT's detection as seen from here (ms),
    /// `None` if the DUT did not say Down in time; then waits until `all` sessions are
    /// Up again.
    pub fn sample(&mut self, i: usize, all: usize) -> Result<Option<f64>, String> {
        self.send(lines::Command::Silence(i))?;
        let detect = self
            .answer(Instant::now() + Duration::from_secs(15), |r| match r {
                Report::Detect { index, ms } if *index == i => Some(*ms),
                _ => None,
            })
            .ok_or_else(|| format!("far end: no answer to the silence of session {i}"))?;
        if self.wait(Instant::now() + Duration::from_secs(30), |f| f.up >= all).is_none() {
            println!("# only {} of {all} sessions Up 30 s after the detection sample of session {i}", self.up);
        }
        Ok(detect)
    }
}

impl Drop for FarEnd {
    fn drop(&mut self) {
        drop(self.stdin.take());
        reap(&mut self.child);
    }
}

//! `ip monitor route` in a namespace: the kernel's route notifications in the order the
//! kernel sent them, for tests that check the order of changes (a route installed before
//! another is removed) without timing anything.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use super::{CommandError, Ns, Process};

/// The sentinel route that marks where a monitor's watch begins and ends.
const SENTINEL: &str = "198.18.255.0/24";
/// How long to wait for a notification before giving up.
const PATIENCE: Duration = Duration::from_secs(30);
/// How long to wait for the first sentinel before trying another (the monitor may not
/// have subscribed yet when it was added).
const FIRST: Duration = Duration::from_millis(500);
/// Sentinels tried before giving up.
const ATTEMPTS: u32 = 60;

/// A running `ip -n NAME monitor route` (stopped and reaped on drop).
pub struct RouteMonitor {
    ns: Ns,
    lines: Receiver<String>,
    /// The metric of the sentinel the watch began with.
    sentinel: u32,
    _process: Process,
}

/// Whether `line` reports the sentinel at `metric`, deleted or added.
fn is_sentinel(line: &str, metric: u32, deleted: bool) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    line.contains(SENTINEL)
        && line.starts_with("Deleted") == deleted
        && words.windows(2).any(|w| w[0] == "metric" && w[1] == metric.to_string())
}

impl RouteMonitor {
    /// Starts the monitor in `ns` and returns once it reported a sentinel route added
    /// (table 254, protocol static), so that no change after this call is missed. Until
    /// the monitor has subscribed, a sentinel can pass unseen: each attempt adds one at a
    /// metric of its own (and removes it when it was not seen).
    pub fn start(ns: &Ns) -> Result<RouteMonitor, CommandError> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", ns.name(), "monitor", "route"]).stdout(Stdio::piped());
        let mut process = Process::spawn("ip monitor route", &mut cmd)?;
        let error = |detail: String| CommandError { command: format!("ip -n {} monitor route", ns.name()), detail };
        let stdout = process.child_mut().stdout.take().ok_or_else(|| error("no stdout".into()))?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut m = RouteMonitor { ns: ns.clone(), lines, sentinel: 0, _process: process };
        for metric in 1..=ATTEMPTS {
            let metric_text = metric.to_string();
            let route = ["blackhole", SENTINEL, "proto", "static", "metric", metric_text.as_str()];
            ns.ip(&[&["route", "add"][..], &route[..]].concat())?;
            if m.until(FIRST, |l| is_sentinel(l, metric, false)).is_ok() {
                m.sentinel = metric;
                return Ok(m);
            }
            ns.ip(&[&["route", "del"][..], &route[..]].concat())?;
        }
        Err(error(format!("none of {ATTEMPTS} sentinel routes was reported")))
    }

    /// Every line since [`RouteMonitor::start`] (the sentinel's excluded), up to the
    /// sentinel's removal, which this makes: so everything the kernel reported before
    /// this call is in.
    pub fn stop(mut self) -> Result<Vec<String>, CommandError> {
        let command = format!("ip -n {} monitor route", self.ns.name());
        let error = |detail: String| CommandError { command, detail };
        let metric = self.sentinel.to_string();
        self.ns.ip(&["route", "del", "blackhole", SENTINEL, "proto", "static", "metric", &metric])?;
        let sentinel = self.sentinel;
        let mut lines = self.until(PATIENCE, |l| is_sentinel(l, sentinel, true)).map_err(error)?;
        lines.pop();
        Ok(lines)
    }

    /// Lines up to and including the first that satisfies `last`, each within `patience`.
    fn until(&mut self, patience: Duration, last: impl Fn(&str) -> bool) -> Result<Vec<String>, String> {
        let mut seen = Vec::new();
        loop {
            let line =
                self.lines.recv_timeout(patience).map_err(|e| format!("no notification ({e}) after {seen:?}"))?;
            let done = last(&line);
            seen.push(line);
            if done {
                return Ok(seen);
            }
        }
    }
}

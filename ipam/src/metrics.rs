//! Metrics of the CNI plugin `bgpd-ipam`, for node-exporter's textfile
//! collector.
//!
//! The plugin lives for one command (milliseconds), so nothing can scrape it
//! and nothing it counts survives in memory. Each command therefore adds
//! itself to counts kept in a small state file (`bgpd_ipam.state.json`) in the
//! configured directory (`ipam.metrics_dir`) and writes them out again as
//! Prometheus text (`bgpd_ipam.prom`): both replaced whole (write a temporary
//! file, `rename`) under an exclusive `flock` of `bgpd_ipam.lock`, so concurrent
//! plugins (`CHECK` and `STATUS` take no host lock) lose no increment and the
//! collector never reads half a file. No `fsync`: it would add a disk flush to
//! every pod start, and what a power loss can cost is a state file that does not
//! parse, which is a counter reset. The lock is waited for at most
//! [`LOCK_WAIT`]: a plugin never hangs on its metrics. Counters thus count from the first
//! command on the node, across every invocation, as Prometheus counters must
//! (a removed or unreadable state file is a counter reset, which `rate()`
//! handles). Why not counters kept in the datastore: a write per command to
//! the cluster's store (etcd, the API server) would cost every pod start a
//! round trip and contend across nodes, for figures that are per node anyway.
//!
//! The gauges (free addresses per pool and per block of this node) are those
//! seen by the last `ADD` or `STATUS` (one more read of the blocks, made only
//! when metrics are on); `DEL` and `GC` do not read pools (see `docs/ipam.md`)
//! and `CHECK` need not, so they leave them as they were.
//!
//! This module is plain data and functions: [`State::record`] and
//! [`State::render`] do no I/O; [`write`] does the file work.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cni::{code, Command};

/// The Prometheus text file node-exporter's textfile collector reads.
pub const PROM_FILE: &str = "bgpd_ipam.prom";
/// The counts kept between invocations.
pub const STATE_FILE: &str = "bgpd_ipam.state.json";
/// Locked around each update.
pub const LOCK_FILE: &str = "bgpd_ipam.lock";
/// How long a command waits for the metrics lock before it gives up (and
/// logs it): the lock is held only to read and write two small files.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The state file's format tag; a state of another format is started afresh.
const FORMAT: &str = "bgpd-ipam-metrics/v1";

/// Upper bounds of the command duration histogram, seconds: from a file
/// store's few milliseconds to the default 60 s deadline.
pub const BUCKETS: [f64; 13] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A metric family's Prometheus type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (`_total`).
    Counter,
    /// A value now.
    Gauge,
    /// `_bucket`, `_sum`, `_count`.
    Histogram,
}

impl MetricType {
    fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// Every family `bgpd-ipam` exports: (name, type, help). The shipped
/// dashboard and alerts are checked against it (bgpd's `daemon::metrics`
/// tests).
pub const FAMILIES: &[(&str, MetricType, &str)] = &[
    ("bgpd_ipam_commands_total", MetricType::Counter, "CNI commands run, by command"),
    (
        "bgpd_ipam_allocations_total",
        MetricType::Counter,
        "ADD commands that succeeded (an attachment got its addresses)",
    ),
    (
        "bgpd_ipam_releases_total",
        MetricType::Counter,
        "DEL commands that succeeded (an attachment's addresses released)",
    ),
    (
        "bgpd_ipam_failures_total",
        MetricType::Counter,
        "CNI commands that failed, by command and reason (the CNI error)",
    ),
    ("bgpd_ipam_command_duration_seconds", MetricType::Histogram, "Time a CNI command took, lock wait included"),
    ("bgpd_ipam_pool_addresses", MetricType::Gauge, "Addresses in the pool"),
    ("bgpd_ipam_pool_free_addresses", MetricType::Gauge, "Addresses of the pool not assigned (claimed blocks or not)"),
    ("bgpd_ipam_block_addresses", MetricType::Gauge, "Addresses in a block affine to this node"),
    ("bgpd_ipam_block_free_addresses", MetricType::Gauge, "Addresses not assigned in a block affine to this node"),
    ("bgpd_ipam_last_command_timestamp_seconds", MetricType::Gauge, "Unix time of the last command (the figures' age)"),
];

/// The reason label of a failure: the CNI error code's meaning.
pub fn reason(c: u32) -> &'static str {
    match c {
        code::INCOMPATIBLE_VERSION => "incompatible_version",
        code::UNSUPPORTED_FIELD => "unsupported_field",
        code::INVALID_ENV => "invalid_environment",
        code::IO_FAILURE => "io_failure",
        code::DECODE => "decode",
        code::INVALID_CONFIG => "invalid_config",
        code::TRY_AGAIN => "try_again",
        code::NOT_AVAILABLE => "not_available",
        code::NO_ADDRESS => "no_address",
        code::BAD_REQUEST => "bad_request",
        code::CHECK_FAILED => "check_failed",
        _ => "other",
    }
}

/// The command label.
pub fn command_label(c: Option<Command>) -> &'static str {
    match c {
        Some(Command::Add) => "ADD",
        Some(Command::Del) => "DEL",
        Some(Command::Check) => "CHECK",
        Some(Command::Status) => "STATUS",
        Some(Command::Gc) => "GC",
        Some(Command::Version) => "VERSION",
        None => "unknown",
    }
}

/// One pool's figures as the last command saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolGauge {
    /// Pool CIDR.
    pub cidr: String,
    /// Addresses in it.
    pub addresses: u128,
    /// Addresses not assigned.
    pub free: u128,
}

/// One block's figures (a block affine to this node).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockGauge {
    /// Addresses in it.
    pub addresses: u64,
    /// Addresses not assigned.
    pub free: u64,
}

/// The gauges of one command: pools by name, this node's blocks by CIDR.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Per pool.
    pub pools: BTreeMap<String, PoolGauge>,
    /// Per block affine to the node.
    pub blocks: BTreeMap<IpNet, BlockGauge>,
}

impl Gauges {
    /// The gauges of `usage` for node `node`.
    pub fn of(usage: &crate::usage::Usage, node: &str) -> Gauges {
        let pools = usage
            .pools
            .iter()
            .map(|p| {
                let free = p.addresses_total.saturating_sub(p.addresses_used);
                (p.name.clone(), PoolGauge { cidr: p.cidr.to_string(), addresses: p.addresses_total, free })
            })
            .collect();
        let blocks = usage
            .blocks
            .iter()
            .filter(|b| b.node.as_deref() == Some(node))
            .map(|b| {
                let free = b.total.saturating_sub(b.used) as u64;
                (b.cidr, BlockGauge { addresses: b.total as u64, free })
            })
            .collect();
        Gauges { pools, blocks }
    }
}

/// What one command did.
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    /// The command (`None`: `CNI_COMMAND` not understood).
    pub command: Option<Command>,
    /// How long it took, seconds.
    pub seconds: f64,
    /// Its CNI error code when it failed.
    pub failure: Option<u32>,
    /// The gauges it saw, when it read the design.
    pub gauges: Option<Gauges>,
}

/// A histogram: counts per bucket of [`BUCKETS`] (not cumulative), count, sum.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Observations per bucket (index `BUCKETS.len()`: above the last bound).
    pub buckets: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        self.buckets.resize(BUCKETS.len() + 1, 0);
        let i = BUCKETS.iter().position(|b| v <= *b).unwrap_or(BUCKETS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += v;
    }
}

/// The counts kept between invocations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// [`FORMAT`].
    pub format: String,
    /// Commands run, by command label.
    pub commands: BTreeMap<String, u64>,
    /// Successful `ADD`s.
    pub allocations: u64,
    /// Successful `DEL`s.
    pub releases: u64,
    /// Failures by command label, then reason.
    pub failures: BTreeMap<String, BTreeMap<String, u64>>,
    /// Durations by command label.
    pub durations: BTreeMap<String, Histogram>,
    /// The last gauges seen.
    pub pools: BTreeMap<String, PoolGauge>,
    /// This node's blocks as last seen, by CIDR.
    pub blocks: BTreeMap<String, BlockGauge>,
    /// Unix time of the last command.
    pub last_command: f64,
}

/// A label value escaped for the text format (`\`, `"`, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A float as the text format writes it.
fn float(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

impl State {
    /// Adds one command at Unix time `now`.
    pub fn record(&mut self, inv: &Invocation, now: f64) {
        self.format = FORMAT.into();
        let command = command_label(inv.command);
        *self.commands.entry(command.into()).or_default() += 1;
        match (inv.command, inv.failure) {
            (Some(Command::Add), None) => self.allocations += 1,
            (Some(Command::Del), None) => self.releases += 1,
            (_, Some(c)) => {
                *self.failures.entry(command.into()).or_default().entry(reason(c).into()).or_default() += 1;
            }
            _ => {}
        }
        self.durations.entry(command.into()).or_default().observe(inv.seconds.max(0.0));
        if let Some(g) = &inv.gauges {
            self.pools = g.pools.clone();
            self.blocks = g.blocks.iter().map(|(c, b)| (c.to_string(), b.clone())).collect();
        }
        self.last_command = now;
    }

    /// The Prometheus text format (version 0.0.4) of every family, each
    /// with its `# HELP` and `# TYPE`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}", kind.name());
            let mut sample = |labels: &[(&str, &str)], value: String| {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
                let _ = writeln!(out, "{name}{labels} {value}");
            };
            match *name {
                "bgpd_ipam_commands_total" => {
                    for (c, n) in &self.commands {
                        sample(&[("command", c)], n.to_string());
                    }
                }
                "bgpd_ipam_allocations_total" => sample(&[], self.allocations.to_string()),
                "bgpd_ipam_releases_total" => sample(&[], self.releases.to_string()),
                "bgpd_ipam_failures_total" => {
                    for (c, reasons) in &self.failures {
                        for (r, n) in reasons {
                            sample(&[("command", c), ("reason", r)], n.to_string());
                        }
                    }
                }
                "bgpd_ipam_command_duration_seconds" => {}
                "bgpd_ipam_pool_addresses" | "bgpd_ipam_pool_free_addresses" => {
                    for (pool, g) in &self.pools {
                        let v = if *name == "bgpd_ipam_pool_addresses" { g.addresses } else { g.free };
                        sample(&[("pool", pool), ("cidr", &g.cidr)], v.to_string());
                    }
                }
                "bgpd_ipam_block_addresses" | "bgpd_ipam_block_free_addresses" => {
                    for (block, g) in &self.blocks {
                        let v = if *name == "bgpd_ipam_block_addresses" { g.addresses } else { g.free };
                        sample(&[("block", block)], v.to_string());
                    }
                }
                "bgpd_ipam_last_command_timestamp_seconds" => sample(&[], float(self.last_command)),
                _ => {}
            }
            if *kind == MetricType::Histogram {
                for (c, h) in &self.durations {
                    let mut cumulative = 0;
                    for (i, bound) in BUCKETS.iter().copied().chain([f64::INFINITY]).enumerate() {
                        cumulative += h.buckets.get(i).copied().unwrap_or(0);
                        let _ = writeln!(
                            out,
                            "{name}_bucket{{command=\"{}\",le=\"{}\"}} {cumulative}",
                            escape(c),
                            float(bound)
                        );
                    }
                    let _ = writeln!(out, "{name}_sum{{command=\"{}\"}} {}", escape(c), float(h.sum));
                    let _ = writeln!(out, "{name}_count{{command=\"{}\"}} {}", escape(c), h.count);
                }
            }
        }
        out
    }
}

/// Why the metrics could not be written (the command's answer is not changed
/// by it; the plugin logs this to stderr).
#[derive(Debug, thiserror::Error)]
#[error("metrics in {dir}: {what}: {source}")]
pub struct WriteError {
    dir: String,
    what: &'static str,
    source: std::io::Error,
}

/// Writes `text` to `dir/name` atomically: a temporary file, then `rename`.
fn replace(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    File::create(&tmp)?.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, dir.join(name))
}

/// Takes an exclusive `flock` of `lock`, waiting at most [`LOCK_WAIT`].
fn lock_within(lock: &File) -> std::io::Result<()> {
    use rustix::fs::{flock, FlockOperation};
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match flock(lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("held by another process for {LOCK_WAIT:?}; this command is not counted"),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Adds `inv` to the counts in `dir` (created if missing) at Unix time `now`
/// and writes them out again, under the directory's lock. A state file that
/// cannot be parsed (or of another format) is started afresh: a counter reset.
pub fn write(dir: &Path, inv: &Invocation, now: f64) -> Result<(), WriteError> {
    let err = |what| move |source| WriteError { dir: dir.display().to_string(), what, source };
    std::fs::create_dir_all(dir).map_err(err("creating the directory"))?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(err("opening the lock"))?;
    lock_within(&lock).map_err(err("locking"))?;
    let mut state: State = std::fs::read(dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|s: &State| s.format == FORMAT)
        .unwrap_or_default();
    state.record(inv, now);
    // Serialising maps of strings and numbers cannot fail.
    let json = serde_json::to_string(&state).unwrap_or_default();
    replace(dir, STATE_FILE, &json).map_err(err("writing the state"))?;
    replace(dir, PROM_FILE, &state.render()).map_err(err("writing the text file"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks `text` against the text format: every sample belongs to a family
    /// announced by `# TYPE` before it, counters end in `_total`, histogram
    /// buckets are cumulative and end with `+Inf` = `_count`. Returns the
    /// samples (name with labels → value).
    pub(crate) fn check_format(text: &str) -> BTreeMap<String, f64> {
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples = BTreeMap::new();
        let mut last_bucket: BTreeMap<String, f64> = BTreeMap::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').expect("# TYPE name kind");
                assert!(types.insert(name.into(), kind.into()).is_none(), "{name} announced twice");
                assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample is series value");
            let value: f64 = if value == "+Inf" { f64::INFINITY } else { value.parse().expect("a number") };
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|k| k == "histogram")))
                .unwrap_or(name);
            assert!(types.contains_key(family), "{series} has no # TYPE before it");
            if name.ends_with("_bucket") {
                let key = series.split(",le=").next().unwrap().to_string();
                let prev = last_bucket.insert(key, value).unwrap_or(0.0);
                assert!(value >= prev, "buckets not cumulative at {series}");
            }
            samples.insert(series.to_string(), value);
        }
        for (series, v) in &samples {
            if let Some(base) = series.strip_suffix(",le=\"+Inf\"}") {
                let count = base.replace("_bucket{", "_count{") + "}";
                assert_eq!(samples.get(&count), Some(v), "+Inf bucket and count differ for {series}");
            }
        }
        samples
    }

    fn inv(command: Command, seconds: f64, failure: Option<u32>) -> Invocation {
        Invocation { command: Some(command), seconds, failure, gauges: None }
    }

    #[test]
    fn counts_add_up_and_render_in_the_text_format() {
        let mut s = State::default();
        s.record(&inv(Command::Add, 0.003, None), 100.0);
        s.record(&inv(Command::Add, 0.2, None), 101.0);
        s.record(&inv(Command::Add, 90.0, Some(code::NO_ADDRESS)), 102.0);
        s.record(&inv(Command::Del, 0.01, None), 103.0);
        let mut g = Gauges::default();
        g.pools.insert("pods".into(), PoolGauge { cidr: "10.244.0.0/24".into(), addresses: 256, free: 250 });
        g.blocks.insert("10.244.0.0/28".parse().unwrap(), BlockGauge { addresses: 16, free: 10 });
        s.record(&Invocation { command: Some(Command::Status), seconds: 0.001, failure: None, gauges: Some(g) }, 104.0);
        let samples = check_format(&s.render());
        assert_eq!(samples["bgpd_ipam_allocations_total"], 2.0);
        assert_eq!(samples["bgpd_ipam_releases_total"], 1.0);
        assert_eq!(samples["bgpd_ipam_commands_total{command=\"ADD\"}"], 3.0);
        assert_eq!(samples["bgpd_ipam_failures_total{command=\"ADD\",reason=\"no_address\"}"], 1.0);
        assert_eq!(samples["bgpd_ipam_command_duration_seconds_bucket{command=\"ADD\",le=\"0.005\"}"], 1.0);
        assert_eq!(samples["bgpd_ipam_command_duration_seconds_bucket{command=\"ADD\",le=\"0.25\"}"], 2.0);
        assert_eq!(samples["bgpd_ipam_command_duration_seconds_bucket{command=\"ADD\",le=\"60\"}"], 2.0);
        assert_eq!(samples["bgpd_ipam_command_duration_seconds_bucket{command=\"ADD\",le=\"+Inf\"}"], 3.0);
        assert_eq!(samples["bgpd_ipam_pool_free_addresses{pool=\"pods\",cidr=\"10.244.0.0/24\"}"], 250.0);
        assert_eq!(samples["bgpd_ipam_block_free_addresses{block=\"10.244.0.0/28\"}"], 10.0);
        assert_eq!(samples["bgpd_ipam_last_command_timestamp_seconds"], 104.0);
        // A command without gauges keeps the last ones; one with replaces them.
        s.record(&inv(Command::Del, 0.01, None), 105.0);
        assert!(s.render().contains("block=\"10.244.0.0/28\""));
        s.record(
            &Invocation { command: Some(Command::Add), seconds: 0.0, failure: None, gauges: Some(Gauges::default()) },
            106.0,
        );
        assert!(!s.render().contains("bgpd_ipam_block_free_addresses{"), "a released block's gauge is gone");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = State::default();
        let mut g = Gauges::default();
        g.pools.insert("a\"b\\c\nd".into(), PoolGauge { cidr: "10.0.0.0/8".into(), addresses: 1, free: 1 });
        s.record(&Invocation { command: None, seconds: 0.0, failure: Some(code::INVALID_ENV), gauges: Some(g) }, 1.0);
        let text = s.render();
        assert!(text.contains(r#"pool="a\"b\\c\nd""#), "{text}");
        let samples = check_format(&text);
        assert_eq!(samples["bgpd_ipam_failures_total{command=\"unknown\",reason=\"invalid_environment\"}"], 1.0);
    }

    #[test]
    fn every_family_is_announced_with_its_type() {
        let text = State::default().render();
        for (name, kind, _) in FAMILIES {
            assert!(text.contains(&format!("# TYPE {name} {}\n", kind.name())), "{name}");
            assert_eq!(name.ends_with("_total"), *kind == MetricType::Counter, "{name}");
        }
        check_format(&text);
    }

    #[test]
    fn writes_survive_invocations_and_a_bad_state_is_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            write(dir.path(), &inv(Command::Add, 0.01, None), 1.0).unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join(PROM_FILE)).unwrap();
        assert_eq!(check_format(&text)["bgpd_ipam_allocations_total"], 3.0);
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        write(dir.path(), &inv(Command::Add, 0.01, None), 2.0).unwrap();
        let text = std::fs::read_to_string(dir.path().join(PROM_FILE)).unwrap();
        assert_eq!(check_format(&text)["bgpd_ipam_allocations_total"], 1.0);
        // Nothing but the three files.
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, [LOCK_FILE, PROM_FILE, STATE_FILE]);
    }

    #[test]
    fn a_lock_held_too_long_is_given_up_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let held = File::create(dir.path().join(LOCK_FILE)).unwrap();
        rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let e = write(dir.path(), &inv(Command::Add, 0.01, None), 1.0).unwrap_err().to_string();
        assert!(e.contains("locking") && e.contains("not counted"), "{e}");
        assert!(!dir.path().join(PROM_FILE).exists());
        drop(held);
        write(dir.path(), &inv(Command::Add, 0.01, None), 1.0).unwrap();
    }

    #[test]
    fn concurrent_writers_lose_no_increment() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        write(&d, &inv(Command::Status, 0.001, None), 1.0).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join(PROM_FILE)).unwrap();
        assert_eq!(check_format(&text)["bgpd_ipam_commands_total{command=\"STATUS\"}"], 200.0);
    }
}

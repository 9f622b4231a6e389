//! `bench latency`: how long a datastore change takes to reach a peer (issue 7).
//!
//! bgpd runs in a node namespace on one LAN with two peers: an in-process BGP
//! receiver (bgpd_proto's codec; it notes when each prefix first arrives on the wire)
//! and BIRD, which installs what it learns into its namespace's kernel table (an
//! `ip monitor route` there notes when each route appears). A third address of the
//! receiver's namespace serves as the new BGPPeer of the peer-change kind.
//!
//! Three kinds of change, `--changes N` of each, one at a time:
//!
//! - `block`: a new IPAMBlock affine to the node → its /26 in an UPDATE (a) and in
//!   BIRD's kernel (b);
//! - `endpoint`: an EndpointSlice endpoint of an `externalTrafficPolicy: Local` Service
//!   on the node turns ready → the cluster IP's /32, (a) and (b);
//! - `peer`: a new BGPPeer → (a) time to Established and to the first UPDATE on the new
//!   session; the peer is removed again (untimed) before the next.
//!
//! Datastores: `file` (write a temporary file, rename it over the datastore: time from
//! the rename; before each change the run waits a varying fraction of 20 ms, so that
//! the changes fall on every phase of a poll should bgpd poll: bgpd watches the file
//! with inotify and polls only as a fallback every 500 ms, but before it polled every
//! 20 ms, and the same spread keeps the figures comparable) and `etcd` (an etcd in the
//! node namespace; time from sending the put, through etcd's JSON gateway). Every wait is bounded (`--timeout`, default 10 s per
//! change); a change that times out is counted as missed. Namespaces and processes
//! belong to a [`Lab`] and go when it is dropped.
//!
//! The parts: `datastore` (the objects and how a change is written), `receiver` (the
//! in-process BGP receiver and what it and the kernel monitor saw), `kernel_monitor`
//! (`ip monitor route` in BIRD's namespace).

mod datastore;
mod kernel_monitor;
mod receiver;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::args::Flags;
use crate::lab::{bird, etcd, wait_for, Lab, ProcId};
use datastore::{block, block_object, cluster_ip, new_peer_object, slice_object, Model, Writer};
use kernel_monitor::KernelMonitor;
use receiver::{Receiver, Shared};

const NODE: &str = "node-1";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 9, 1);
/// The receiver (BGPPeer `rx`, AS 65001).
const RX_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 9, 2);
/// BIRD (BGPPeer `bird`, AS 65002).
const BIRD_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 9, 3);
/// The peer-change kind's new BGPPeer, in the receiver's namespace.
const NEW_PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 9, 4);
const CLUSTER_AS: u32 = 64512;
const RX_AS: u32 = 65001;
const BIRD_AS: u32 = 65002;
/// Blocks come from this pool: 16,384 /26s.
const POOL: &str = "10.240.0.0/12";
const SERVICE_RANGE: &str = "10.96.0.0/12";
const MAX_CHANGES: usize = 10_000;
/// The period whose phases the file changes are spread over: the file datastore's
/// poll period before it was watched with inotify.
const FILE_POLL: Duration = Duration::from_millis(20);

/// Which datastore bgpd reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    File,
    Etcd,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::File => "file",
            Store::Etcd => "etcd",
        }
    }
}

/// What changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Block,
    Endpoint,
    Peer,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Block => "new IPAMBlock",
            Kind::Endpoint => "endpoint turns ready (eTP=Local /32)",
            Kind::Peer => "new BGPPeer",
        }
    }
}

struct Opts {
    changes: usize,
    stores: Vec<Store>,
    kinds: Vec<Kind>,
    timeout: Duration,
    bgpd: Option<PathBuf>,
}

const USAGE: &str = "usage: bench latency [--changes N (1000)] [--datastore file|etcd|both (both)] \
                     [--kinds block,endpoint,peer] [--timeout SECS (10)] [--bgpd PATH]";

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        changes: 1000,
        stores: vec![Store::File, Store::Etcd],
        kinds: vec![Kind::Block, Kind::Endpoint, Kind::Peer],
        timeout: Duration::from_secs(10),
        bgpd: None,
    };
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next() {
        match flag {
            "--changes" => o.changes = flags.number_in(1..=MAX_CHANGES)?,
            "--datastore" => {
                o.stores = match flags.value()? {
                    "file" => vec![Store::File],
                    "etcd" => vec![Store::Etcd],
                    "both" => vec![Store::File, Store::Etcd],
                    other => return Err(format!("--datastore {other}: one of file, etcd, both")),
                }
            }
            "--kinds" => {
                o.kinds = flags
                    .value()?
                    .split(',')
                    .map(|k| match k {
                        "block" => Ok(Kind::Block),
                        "endpoint" => Ok(Kind::Endpoint),
                        "peer" => Ok(Kind::Peer),
                        other => Err(format!("--kinds: {other:?} is not one of block, endpoint, peer")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--timeout" => o.timeout = Duration::from_secs(flags.number::<u64>()?.clamp(1, 120)),
            "--bgpd" => o.bgpd = Some(PathBuf::from(flags.value()?)),
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("{}; {USAGE}", flags.unknown())),
        }
    }
    Ok(o)
}

/// Runs the benchmark and prints a Markdown table.
pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse_args(args)?;
    if !rustix::process::geteuid().is_root() {
        return Err("needs root (network namespaces, port 179)".into());
    }
    let bgpd = testgate::testbed::bgpd_binary(opts.bgpd.clone())?;
    super::routeserver::install_signal_handler()?;
    println!(
        "# datastore change latency: {} changes per kind, bgpd {}, {} CPUs",
        opts.changes,
        bgpd.display(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let mut rows = Vec::new();
    for &store in &opts.stores {
        let lab = Lab::new(&format!("latency-{}", store.name())).map_err(|e| format!("lab: {e}"))?;
        match bench_store(&lab, store, &opts, &bgpd) {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => {
                eprintln!("{}", lab.logs(30));
                return Err(format!("{} datastore: {e}", store.name()));
            }
        }
        if super::routeserver::INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
    }
    println!();
    println!("| datastore | change | n | (a) UPDATE at the peer: median | p99 | (b) route in the peer's kernel: median | p99 | missed |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{}", r.line());
    }
    Ok(())
}

/// One row of the result table.
struct Row {
    store: Store,
    kind: Kind,
    wire: Vec<Duration>,
    /// Kernel latencies, or for the peer kind the time to Established.
    second: Vec<Duration>,
    missed: usize,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The median and 99th percentile (nearest rank) of `v`.
fn quantiles(v: &[Duration]) -> Option<(Duration, Duration)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort();
    let rank = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    Some((rank(0.5), rank(0.99)))
}

impl Row {
    fn line(&self) -> String {
        let fmt = |v: &[Duration]| match quantiles(v) {
            Some((m, p)) => (ms(m), ms(p)),
            None => ("–".into(), "–".into()),
        };
        let (wm, wp) = fmt(&self.wire);
        let (sm, sp) = fmt(&self.second);
        let (sm, sp) = if self.kind == Kind::Peer {
            (format!("Established: {sm}"), format!("Established: {sp}"))
        } else {
            (sm, sp)
        };
        let (wm, wp) = if self.kind == Kind::Peer {
            (format!("first UPDATE: {wm}"), format!("first UPDATE: {wp}"))
        } else {
            (wm, wp)
        };
        format!(
            "| {} | {} | {} | {wm} | {wp} | {sm} | {sp} | {} |",
            self.store.name(),
            self.kind.name(),
            self.wire.len(),
            self.missed
        )
    }
}

// ----- one datastore ---------------------------------------------------------------------

fn bench_store(lab: &Lab, store: Store, opts: &Opts, bgpd: &std::path::Path) -> Result<Vec<Row>, String> {
    let io = |e: std::io::Error| format!("setup: {e}");
    let ns = lab.lan(9, &["node", "rx", "bird"]).map_err(io)?;
    let (node, rx, bird_ns) = (&ns[0], &ns[1], &ns[2]);
    rx.add_addr("veth0", &format!("{NEW_PEER_IP}/24")).map_err(|e| format!("setup: {e}"))?;

    let shared = Arc::new(Shared::default());
    let _receiver = Receiver::start(rx, shared.clone())?;
    let _monitor = KernelMonitor::start(bird_ns, shared.clone())?;

    let services = if opts.kinds.contains(&Kind::Endpoint) { opts.changes } else { 0 };
    let mut model = Model { services, blocks: 0, ready: 0, new_peer: None };
    let writer = match store {
        Store::File => {
            let path = lab.dir().join("datastore.yaml");
            std::fs::write(&path, model.yaml()).map_err(|e| format!("writing the datastore: {e}"))?;
            Writer::File { path }
        }
        Store::Etcd => {
            let w = Writer::Etcd { etcd: etcd::Etcd::start(node, "latency").map_err(io)? };
            w.apply(&model, &model.objects(), &[])?;
            w
        }
    };
    let datastore = match &writer {
        Writer::File { path } => format!("file:{}", path.display()),
        Writer::Etcd { .. } => format!("etcd:{}", etcd::URL),
    };
    let sock = lab.dir().join("bgpd.sock");
    let mut cmd = node.command(&bgpd.to_string_lossy());
    cmd.args(["run", "--datastore", &datastore, "--node", NODE, "--control-socket"])
        .arg(&sock)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", std::env::var("BGPDC_LOG").unwrap_or_else(|_| "info".into()));
    let _bgpd: ProcId = lab.spawn("bgpd", cmd).map_err(io)?;

    let conf = bird::BirdConfig {
        router_id: BIRD_IP.to_string(),
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: BIRD_IP.to_string(),
            local_as: BIRD_AS,
            neighbor: NODE_IP.to_string(),
            peer_as: CLUSTER_AS,
            ..Default::default()
        }],
        kernel: vec![bird::BirdKernel {
            name: Some("k4".into()),
            af: bird::Af::Ipv4,
            import: None,
            export: "where source = RTS_BGP".into(),
            merge_paths: false,
        }],
        ..Default::default()
    }
    .render();
    let bird = bird::Bird::start_conf(lab, bird_ns, "latency", &conf).map_err(io)?;
    wait_for("BIRD Established with bgpd", Duration::from_secs(60), || bird.established("bgpd"))?;
    let first = block(0);
    shared
        .wait(Instant::now() + Duration::from_secs(60), |s, k| {
            (s.announced.contains_key(&first) && k.contains_key(&first)).then_some(())
        })
        .ok_or_else(|| format!("the first block {first} did not reach the receiver and BIRD's kernel in 60 s"))?;
    eprintln!("# {}: sessions up, measuring", store.name());

    let mut rows = Vec::new();
    for &kind in &opts.kinds {
        let mut row = Row { store, kind, wire: Vec::new(), second: Vec::new(), missed: 0 };
        let started = Instant::now();
        for i in 0..opts.changes {
            if super::routeserver::INTERRUPTED.load(Ordering::Relaxed) {
                break;
            }
            if store == Store::File {
                std::thread::sleep(poll_phase(i));
            }
            one_change(kind, i, &mut model, &writer, &shared, opts.timeout, &mut row)?;
            if (i + 1) % 50 == 0 {
                eprintln!(
                    "# {} {}: {}/{} in {:.0} s",
                    store.name(),
                    kind.name(),
                    i + 1,
                    opts.changes,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        println!("{}", row.line());
        rows.push(row);
    }
    Ok(rows)
}

/// A file datastore that is polled (every 20 ms before inotify; now the fallback)
/// makes a change made right after bgpd noticed the previous one wait a whole
/// period. Before change `i` the run waits a fraction of the period that is spread
/// evenly over [0, 1) (multiples of the golden ratio, modulo 1), so the changes
/// sample every phase of the poll.
fn poll_phase(i: usize) -> Duration {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    Duration::from_secs_f64(((i as f64 + 1.0) * GOLDEN).fract() * FILE_POLL.as_secs_f64())
}

fn one_change(
    kind: Kind,
    i: usize,
    model: &mut Model,
    writer: &Writer,
    shared: &Shared,
    timeout: Duration,
    row: &mut Row,
) -> Result<(), String> {
    match kind {
        Kind::Block | Kind::Endpoint => {
            let (want, put) = if kind == Kind::Block {
                model.blocks += 1;
                (block(model.blocks), block_object(model.blocks))
            } else {
                model.ready = i + 1;
                (Ipv4Net::from(cluster_ip(i)), slice_object(i, true))
            };
            let t0 = writer.apply(model, &[put], &[])?;
            let got = shared.wait(t0 + timeout, |s, k| Some((*s.announced.get(&want)?, *k.get(&want)?)));
            match got {
                Some((wire, kernel)) => {
                    row.wire.push(wire.saturating_duration_since(t0));
                    row.second.push(kernel.saturating_duration_since(t0));
                }
                None => row.missed += 1,
            }
        }
        Kind::Peer => {
            let before = shared.seen.lock().unwrap_or_else(|e| e.into_inner()).sessions.len();
            model.new_peer = Some(i);
            let t0 = writer.apply(model, &[new_peer_object(i)], &[])?;
            let got = shared.wait(t0 + timeout, |s, _| {
                s.sessions[before..]
                    .iter()
                    .find(|x| x.local == NEW_PEER_IP && x.first_update.is_some())
                    .and_then(|x| Some((x.established?, x.first_update?)))
            });
            match got {
                Some((est, upd)) => {
                    row.second.push(est.saturating_duration_since(t0));
                    row.wire.push(upd.saturating_duration_since(t0));
                }
                None => row.missed += 1,
            }
            model.new_peer = None;
            writer.apply(model, &[], &[new_peer_object(i).0])?;
            shared
                .wait(Instant::now() + timeout, |s, _| {
                    s.sessions[before..].iter().all(|x| x.local != NEW_PEER_IP || x.closed.is_some()).then_some(())
                })
                .ok_or_else(|| format!("bgpd kept the session with new-{i} after it was removed"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantiles(&v), Some((Duration::from_millis(50), Duration::from_millis(99))));
        assert_eq!(quantiles(&[Duration::from_millis(7)]), Some((Duration::from_millis(7), Duration::from_millis(7))));
        assert_eq!(quantiles(&[]), None);
    }

    #[test]
    fn poll_phases_cover_the_period() {
        let mut deciles = [0usize; 10];
        for i in 0..100 {
            let p = poll_phase(i);
            assert!(p < FILE_POLL, "{p:?}");
            deciles[(p.as_secs_f64() / FILE_POLL.as_secs_f64() * 10.0) as usize] += 1;
        }
        assert!(deciles.iter().all(|&n| (5..=15).contains(&n)), "{deciles:?}");
    }

    #[test]
    fn arguments_are_checked() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o =
            parse_args(&args(&["--changes", "5", "--datastore", "etcd", "--kinds", "peer,block", "--timeout", "500"]))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((o.changes, o.stores), (5, vec![Store::Etcd]));
        assert_eq!((o.kinds, o.timeout), (vec![Kind::Peer, Kind::Block], Duration::from_secs(120)));
        let err = |a: &[&str]| parse_args(&args(a)).err().unwrap_or_default();
        assert_eq!(err(&["--changes", "0"]), format!("--changes must be 1 to {MAX_CHANGES}"));
        assert_eq!(err(&["--changes", "many"]), "--changes: not a number: many");
        assert_eq!(err(&["--timeout"]), "--timeout needs a value");
        assert!(err(&["--datastore", "zk"]).starts_with("--datastore zk:"));
        assert!(err(&["--frobnicate"]).starts_with("unknown option --frobnicate; usage:"));
    }
}

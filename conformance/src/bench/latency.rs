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

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bgpd_proto::wire::{Capability, Message, Open};
use bgpd_proto::{Family, WireContext};
use ipnet::Ipv4Net;

use crate::lab::bgpd::doc;
use crate::lab::{bird, etcd, wait_for, Lab, Ns, ProcId};

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
const KEEPALIVE: [u8; 19] = {
    let mut k = [0xFF; 19];
    k[16] = 0;
    k[17] = 19;
    k[18] = 4;
    k
};

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
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or_else(|| format!("{a} needs a value; {USAGE}"));
        match a.as_str() {
            "--changes" => {
                let v = val()?;
                o.changes = v.parse().map_err(|e| format!("--changes {v}: {e}"))?;
                if o.changes == 0 || o.changes > MAX_CHANGES {
                    return Err(format!("--changes {v}: must be 1..={MAX_CHANGES}"));
                }
            }
            "--datastore" => {
                o.stores = match val()?.as_str() {
                    "file" => vec![Store::File],
                    "etcd" => vec![Store::Etcd],
                    "both" => vec![Store::File, Store::Etcd],
                    other => return Err(format!("--datastore {other}: one of file, etcd, both")),
                }
            }
            "--kinds" => {
                o.kinds = val()?
                    .split(',')
                    .map(|k| match k {
                        "block" => Ok(Kind::Block),
                        "endpoint" => Ok(Kind::Endpoint),
                        "peer" => Ok(Kind::Peer),
                        other => Err(format!("--kinds: {other:?} is not one of block, endpoint, peer")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--timeout" => {
                let v = val()?;
                let s: u64 = v.parse().map_err(|e| format!("--timeout {v}: {e}"))?;
                o.timeout = Duration::from_secs(s.clamp(1, 120));
            }
            "--bgpd" => o.bgpd = Some(PathBuf::from(val()?)),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
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
    let bgpd = super::routeserver::bgpd_binary(opts.bgpd.clone())?;
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

// ----- the datastore ---------------------------------------------------------------------

fn block(i: usize) -> Ipv4Net {
    let base = u32::from(Ipv4Addr::new(10, 240, 0, 0));
    // i < MAX_CHANGES + 1 < 16,384: inside the pool.
    Ipv4Net::new(Ipv4Addr::from(base + (i as u32) * 64), 26).unwrap_or_default()
}

fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 16)) + i as u32)
}

fn peer_doc(name: &str, ip: Ipv4Addr, asn: u32) -> String {
    doc::peer(name, &[], &format!("  peerIP: {ip}\n  asNumber: {asn}\n  keepaliveTime: 3s\n"))
}

/// What the datastore holds: each object with the etcd key it is stored under.
struct Model {
    services: usize,
    blocks: usize,
    ready: usize,
    new_peer: Option<usize>,
}

impl Model {
    fn objects(&self) -> Vec<(String, String)> {
        let mut o = vec![
            ("bgpconfigurations/default".into(), doc::bgp_configuration_services(CLUSTER_AS, SERVICE_RANGE)),
            (format!("nodes/{NODE}"), doc::node_with_as(NODE, &format!("{NODE_IP}/24"), CLUSTER_AS)),
            ("ippools/pool-1".into(), doc::ip_pool("pool-1", POOL)),
            ("bgppeers/rx".into(), peer_doc("rx", RX_IP, RX_AS)),
            ("bgppeers/bird".into(), peer_doc("bird", BIRD_IP, BIRD_AS)),
        ];
        for i in 0..=self.blocks {
            o.push(block_object(i));
        }
        for i in 0..self.services {
            o.push(service_object(i));
            o.push(slice_object(i, i < self.ready));
        }
        if let Some(i) = self.new_peer {
            o.push(new_peer_object(i));
        }
        o
    }

    fn yaml(&self) -> String {
        let docs: Vec<String> = self.objects().into_iter().map(|(_, v)| v).collect();
        doc::stream(&docs)
    }
}

fn block_object(i: usize) -> (String, String) {
    let b = block(i);
    (format!("ipamblocks/{}", b.to_string().replace(['.', '/'], "-")), doc::ipam_block(&b.to_string(), NODE))
}

fn service_object(i: usize) -> (String, String) {
    (format!("services/default/svc-{i}"), doc::service_local(&format!("svc-{i}"), &cluster_ip(i).to_string()))
}

fn slice_object(i: usize, ready: bool) -> (String, String) {
    (
        format!("endpointslices/default/svc-{i}-1"),
        doc::endpoint_slice(&format!("svc-{i}"), &format!("10.240.0.{}", 2 + i % 60), NODE, ready),
    )
}

fn new_peer_object(i: usize) -> (String, String) {
    (format!("bgppeers/new-{i}"), peer_doc(&format!("new-{i}"), NEW_PEER_IP, RX_AS))
}

/// Writes changes to the datastore bgpd reads.
enum Writer {
    File { path: PathBuf },
    Etcd { etcd: etcd::Etcd },
}

impl Writer {
    /// Makes `model` the datastore's content; for etcd only `put` / `delete` go out.
    /// Returns the instant the change was made (the rename, or the put being sent).
    fn apply(&self, model: &Model, put: &[(String, String)], delete: &[String]) -> Result<Instant, String> {
        match self {
            Writer::File { path } => {
                let tmp = path.with_extension("yaml.tmp");
                std::fs::write(&tmp, model.yaml()).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
                let t0 = Instant::now();
                std::fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))?;
                Ok(t0)
            }
            Writer::Etcd { etcd } => {
                let t0 = Instant::now();
                for (k, v) in put {
                    etcd.put(k, v)?;
                }
                for k in delete {
                    etcd.delete(k)?;
                }
                Ok(t0)
            }
        }
    }
}

// ----- the receiver ------------------------------------------------------------------------

/// One session bgpd opened to the receiver.
#[derive(Clone, Debug)]
struct SessionLog {
    local: Ipv4Addr,
    established: Option<Instant>,
    first_update: Option<Instant>,
    closed: Option<Instant>,
}

#[derive(Default)]
struct Seen {
    /// Prefix → when it first arrived announced (any session).
    announced: HashMap<Ipv4Net, Instant>,
    sessions: Vec<SessionLog>,
}

/// What the receiver and the kernel monitor saw, and a condition variable to wait on.
#[derive(Default)]
struct Shared {
    seen: Mutex<Seen>,
    kernel: Mutex<HashMap<Ipv4Net, Instant>>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn notify(&self) {
        self.changed.notify_all();
    }

    /// Waits until `f` gives `Some` (re-checked on every change and every 20 ms), at most
    /// until `deadline`.
    fn wait<T>(
        &self,
        deadline: Instant,
        mut f: impl FnMut(&Seen, &HashMap<Ipv4Net, Instant>) -> Option<T>,
    ) -> Option<T> {
        loop {
            {
                let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                let kernel = self.kernel.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(v) = f(&seen, &kernel) {
                    return Some(v);
                }
            }
            if Instant::now() >= deadline || super::routeserver::INTERRUPTED.load(Ordering::Relaxed) {
                return None;
            }
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let _ = self.changed.wait_timeout(seen, Duration::from_millis(20));
        }
    }
}

/// The receiver's listener and sessions, stopped on `Drop`.
struct Receiver {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(ns: &Ns, shared: Arc<Shared>) -> Result<Receiver, String> {
        let listener = ns
            .in_ns(|| TcpListener::bind("0.0.0.0:179"))
            .map_err(|e| format!("entering {}: {e}", ns.name()))?
            .map_err(|e| format!("receiver: bind :179: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| format!("receiver: {e}"))?;
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name("latency-accept".into())
            .spawn(move || {
                let mut sessions = Vec::new();
                while !sh.stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let sh = sh.clone();
                            if let Ok(h) = std::thread::Builder::new().name("latency-session".into()).spawn(move || {
                                if let Err(e) = session(stream, &sh) {
                                    eprintln!("receiver session: {e}");
                                }
                            }) {
                                sessions.push(h);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                        Err(e) => {
                            eprintln!("receiver: accept: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
                for h in sessions {
                    let _ = h.join();
                }
            })
            .map_err(|e| format!("receiver thread: {e}"))?;
        Ok(Receiver { shared, accept: Some(accept) })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// One session: OPEN, KEEPALIVE, then every UPDATE noted until the peer closes, a
/// NOTIFICATION arrives, or the receiver stops.
fn session(mut stream: TcpStream, sh: &Shared) -> Result<(), String> {
    let local = match stream.local_addr() {
        Ok(SocketAddr::V4(a)) => *a.ip(),
        other => return Err(format!("not IPv4: {other:?}")),
    };
    let idx = {
        let mut seen = sh.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.sessions.push(SessionLog { local, established: None, first_update: None, closed: None });
        seen.sessions.len() - 1
    };
    let r = session_loop(&mut stream, sh, idx, local);
    sh.seen.lock().unwrap_or_else(|e| e.into_inner()).sessions[idx].closed = Some(Instant::now());
    sh.notify();
    r
}

fn session_loop(stream: &mut TcpStream, sh: &Shared, idx: usize, local: Ipv4Addr) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_millis(20))).map_err(|e| e.to_string())?;
    let caps =
        vec![Capability::Multiprotocol(Family::IPV4_UNICAST), Capability::RouteRefresh, Capability::FourOctetAs(RX_AS)];
    let open = Message::Open(Open::new(RX_AS as u16, 90, local, caps))
        .to_bytes(&WireContext::new(false))
        .map_err(|e| format!("encoding OPEN: {e}"))?;
    stream.write_all(&open).map_err(|e| format!("sending OPEN: {e}"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    let mut ctx = WireContext::new(false);
    let mut got_open = false;
    let mut last_keepalive = Instant::now();
    while !sh.stop.load(Ordering::Relaxed) {
        if last_keepalive.elapsed() >= Duration::from_secs(1) {
            stream.write_all(&KEEPALIVE).map_err(|e| format!("sending KEEPALIVE: {e}"))?;
            last_keepalive = Instant::now();
        }
        if filled == buf.len() {
            return Err("a message larger than the buffer".into());
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Ok(()),
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                continue
            }
            Err(e) => return Err(format!("read: {e}")),
        }
        let now = Instant::now();
        let mut at = 0;
        // One message at a time: the context changes once the OPEN is in.
        while let Some(frame) = Message::decode(&buf[at..filled], &ctx).map_err(|e| format!("decoding: {e}"))? {
            at += frame.len;
            match frame.message {
                Message::Open(o) => {
                    got_open = true;
                    ctx = WireContext::new(o.capabilities().any(|c| matches!(c, Capability::FourOctetAs(_))));
                    stream.write_all(&KEEPALIVE).map_err(|e| format!("sending KEEPALIVE: {e}"))?;
                }
                Message::Keepalive if got_open => {
                    let mut seen = sh.seen.lock().unwrap_or_else(|e| e.into_inner());
                    let s = &mut seen.sessions[idx];
                    s.established.get_or_insert(now);
                }
                Message::Update(u) => {
                    let mut seen = sh.seen.lock().unwrap_or_else(|e| e.into_inner());
                    seen.sessions[idx].first_update.get_or_insert(now);
                    if !frame.issues.iter().any(|i| i.action == bgpd_proto::error::ErrorAction::TreatAsWithdraw) {
                        for n in &u.nlri {
                            seen.announced.entry(n.prefix).or_insert(now);
                        }
                    }
                    for w in &u.withdrawn {
                        seen.announced.remove(&w.prefix);
                    }
                }
                Message::Notification(_) => {
                    sh.notify();
                    return Ok(());
                }
                _ => {}
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        sh.notify();
    }
    Ok(())
}

// ----- the kernel monitor --------------------------------------------------------------------

/// `ip -n NS monitor route`: notes when each route first appears; killed on `Drop`.
struct KernelMonitor {
    child: Child,
    reader: Option<JoinHandle<()>>,
}

impl KernelMonitor {
    fn start(ns: &Ns, shared: Arc<Shared>) -> Result<KernelMonitor, String> {
        let mut child = Command::new("ip")
            .args(["-n", ns.name(), "monitor", "route"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("ip monitor route: {e}"))?;
        let out = child.stdout.take().ok_or("ip monitor route: no stdout")?;
        let reader = std::thread::Builder::new()
            .name("latency-kernel".into())
            .spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let now = Instant::now();
                    let first = line.split_whitespace().next().unwrap_or_default();
                    if first == "Deleted" {
                        if let Some(p) = line.split_whitespace().nth(1).and_then(prefix) {
                            shared.kernel.lock().unwrap_or_else(|e| e.into_inner()).remove(&p);
                        }
                        continue;
                    }
                    if let Some(p) = prefix(first) {
                        shared.kernel.lock().unwrap_or_else(|e| e.into_inner()).entry(p).or_insert(now);
                        shared.notify();
                    }
                }
            })
            .map_err(|e| format!("kernel monitor thread: {e}"))?;
        Ok(KernelMonitor { child, reader: Some(reader) })
    }
}

/// A destination as `ip monitor` prints it (`10.96.0.16` is a /32).
fn prefix(s: &str) -> Option<Ipv4Net> {
    s.parse::<Ipv4Net>().ok().or_else(|| s.parse::<Ipv4Addr>().ok().map(Ipv4Net::from))
}

impl Drop for KernelMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

// ----- one datastore ---------------------------------------------------------------------

fn bench_store(lab: &Lab, store: Store, opts: &Opts, bgpd: &std::path::Path) -> Result<Vec<Row>, String> {
    let io = |e: std::io::Error| format!("setup: {e}");
    let ns = lab.lan(9, &["node", "rx", "bird"]).map_err(io)?;
    let (node, rx, bird_ns) = (&ns[0], &ns[1], &ns[2]);
    rx.add_addr("veth0", &format!("{NEW_PEER_IP}/24")).map_err(io)?;

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
            let w = Writer::Etcd { etcd: etcd::Etcd::start(lab, node, "latency").map_err(io)? };
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

    let mut conf = bird::Config {
        router_id: BIRD_IP.to_string(),
        sessions: vec![bird::Session {
            name: "bgpd".into(),
            local: BIRD_IP.to_string(),
            local_as: BIRD_AS,
            neighbor: NODE_IP.to_string(),
            peer_as: CLUSTER_AS,
            ..Default::default()
        }],
        ..Default::default()
    }
    .render();
    conf.push_str("protocol kernel k4 { ipv4 { export where source = RTS_BGP; }; }\n");
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
    fn blocks_and_addresses_stay_in_their_ranges() {
        let pool: Ipv4Net = POOL.parse().unwrap();
        let range: Ipv4Net = SERVICE_RANGE.parse().unwrap();
        assert_eq!(block(1).to_string(), "10.240.0.64/26");
        assert!(pool.contains(&block(MAX_CHANGES)));
        assert!(range.contains(&cluster_ip(MAX_CHANGES)));
    }
}

//! `bench nodestatus`: what CalicoNodeStatus costs on etcd when every node of a
//! cluster has one (`--nodes`, default 1,000) written every `--period` seconds
//! (default 10): bytes per write, etcd CPU per write, the writer's CPU per write,
//! and the CPU of one real `bgpd run` that watches the same prefix (every node
//! sees every other node's writes), then the load this makes at that scale.
//!
//! One etcd (Debian `etcd-server`) on loopback ports with a temporary data
//! directory; the datastore holds `--nodes` Nodes, a BGPConfiguration and one
//! CalicoNodeStatus per node. Node `node-0000` is a real `bgpd run --no-kernel`
//! (`$BGPD_BIN`, else `bgpd` beside this binary), writing its own status; the
//! other nodes' writes are made by this process with bgpd's own code
//! (`nodestatus::render` and the etcd `Target` the daemon uses) at the cluster's
//! rate (nodes / period per second), from the status of a typical node of the
//! ToR design: two ToR sessions up, and (profile `all`) the blocks of every node
//! learned from both ToRs (ECMP) plus its own. Two profiles, one after the other:
//! `bgp` (classes Agent and BGP) and `all` (Agent, BGP, Routes). Each runs a
//! warm-up (every object written once) then `--seconds` (default 20, at most
//! 300) of measurement. etcd's history is compacted every 2 s and its WAL kept
//! short (`--snapshot-count`), so the disk used stays bounded.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bgpd::daemon::nodestatus::render::{render, Snapshot};
use bgpd::daemon::nodestatus::request::{requests, Request};
use bgpd::daemon::nodestatus::writer::Target;
use bgpd::daemon::nodestatus::{Classes, PeerType};
use bgpd::daemon::status::Facts;
use bgpd::datastore::SourceText;
use serde_json::json;

use testgate::testbed::Process;

use crate::bench::args::Flags;
use crate::bench::routeserver::dut::proc_cpu_seconds;

const PREFIX: &str = "/bench/bgpd/";
const MAX_NODES: usize = 10_000;

/// A child killed (at once, no grace) and reaped on drop, and on Ctrl-C.
fn killed_on_drop(name: &str, child: Child) -> Process {
    Process::adopt(name, child).with_grace(Duration::ZERO)
}

struct Options {
    nodes: usize,
    period: u64,
    seconds: u64,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options { nodes: 1000, period: 10, seconds: 20 };
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next() {
        match flag {
            "--nodes" => o.nodes = flags.number()?,
            "--period" => o.period = flags.number()?,
            "--seconds" => o.seconds = flags.number()?,
            _ => {
                return Err(format!("{}: bench nodestatus [--nodes N] [--period SECS] [--seconds S]", flags.unknown()))
            }
        }
    }
    if !(2..=MAX_NODES).contains(&o.nodes) {
        return Err(format!("--nodes {}: between 2 and {MAX_NODES}", o.nodes));
    }
    if !(1..=3600).contains(&o.period) || !(1..=300).contains(&o.seconds) {
        return Err("--period is 1 to 3600 s, --seconds 1 to 300 s".into());
    }
    Ok(o)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("a free port: {e}"))
}

fn node_name(i: usize) -> String {
    format!("node-{i:04}")
}

/// etcd on loopback (the test bed's, in its own scratch directory), its history
/// kept short.
fn start_etcd() -> Result<testgate::testbed::Etcd, String> {
    let config = testgate::testbed::EtcdConfig::loopback("bench")?.args([
        "--snapshot-count=500",
        "--max-wals=2",
        "--max-snapshots=2",
    ]);
    Ok(testgate::testbed::Etcd::start(config)?)
}

async fn connect(url: &str) -> Result<bgpd_etcd::Client, String> {
    bgpd_etcd::Client::connect(&[url], bgpd_etcd::ConnectOptions::default()).await.map_err(|e| e.to_string())
}

/// The status objects' classes per profile.
fn classes_of(profile: &str) -> (Classes, &'static [&'static str]) {
    match profile {
        "bgp" => (Classes { agent: true, bgp: true, routes: false }, &["Agent", "BGP"]),
        _ => (Classes::ALL, &["Agent", "BGP", "Routes"]),
    }
}

/// The datastore: the nodes, a BGPConfiguration without the mesh, and a
/// CalicoNodeStatus per node asking for `classes` every `period` seconds.
async fn load(c: &bgpd_etcd::Client, nodes: usize, period: u64, classes: &[&str]) -> Result<Vec<SourceText>, String> {
    let cfg = json!({"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
                     "spec": {"nodeToNodeMeshEnabled": false, "asNumber": 64512, "listenPort": free_port()?}});
    c.put(format!("{PREFIX}bgpconfigurations/default"), cfg.to_string()).await.map_err(|e| e.to_string())?;
    let mut sources = Vec::new();
    for i in 0..nodes {
        let name = node_name(i);
        let ip = format!("10.{}.{}.{}", 1 + i / 65536, i / 256 % 256, i % 256);
        let node = json!({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name},
                          "spec": {"bgp": {"ipv4Address": format!("{ip}/16")}}});
        c.put(format!("{PREFIX}nodes/{name}"), node.to_string()).await.map_err(|e| e.to_string())?;
        let key = format!("{PREFIX}caliconodestatuses/{name}");
        let status = json!({"apiVersion": "projectcalico.org/v3", "kind": "CalicoNodeStatus", "metadata": {"name": name},
                            "spec": {"node": name, "classes": classes, "updatePeriodSeconds": period}});
        c.put(key.clone(), status.to_string()).await.map_err(|e| e.to_string())?;
        sources.push(SourceText { path: PathBuf::from(key), text: status.to_string() });
    }
    Ok(sources)
}

/// A typical node of the ToR design in a cluster of `nodes`: two ToR sessions
/// up, every node's /26 learned from both (ECMP), its own block.
fn typical(nodes: usize) -> Snapshot {
    use bgpd::daemon::status::{PeerView, RouteView};
    let mut facts = Facts {
        router_id: Some("10.1.0.1".parse().expect("an address")),
        families: (true, false),
        booted_at: Some(SystemTime::now()),
        ..Facts::default()
    };
    let mut peers = Vec::new();
    for (name, addr) in [("tor-a", "10.1.0.253:179"), ("tor-b", "10.1.0.254:179")] {
        let mut v = PeerView::new(name, addr.parse().expect("an address"), 65001, 64512);
        v.state = bgpd_proto::session::State::Established;
        v.established_since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs());
        peers.push(v);
        facts.peer_types.insert(name.into(), PeerType::GlobalPeer);
    }
    let block = |i: usize| format!("10.{}.{}.{}/26", 128 + i / 1024, i / 4 % 256, i % 4 * 64);
    let mut routes = Vec::new();
    for i in 1..nodes {
        for (peer, hop) in [("tor-a", "10.1.0.253"), ("tor-b", "10.1.0.254")] {
            routes.push(RouteView {
                prefix: block(i).parse().expect("a prefix"),
                path_id: None,
                peer: peer.into(),
                next_hop: Some(hop.into()),
                as_path: "65001".into(),
                origin: None,
                med: None,
                local_pref: None,
                communities: vec![],
                large_communities: vec![],
                best: peer == "tor-a",
                multipath: true,
                stale: false,
                lost: None,
            });
        }
    }
    Snapshot {
        facts,
        peers,
        routes,
        originations: vec![(block(0).parse().expect("a prefix"), true)],
        kernel_on: true,
        kernel_failing: Default::default(),
        running: true,
        reconfigured_at: Some(SystemTime::now()),
    }
}

/// One profile's figures.
struct Figures {
    writes: u64,
    bytes: u64,
    seconds: f64,
    etcd_cpu: f64,
    writer_cpu: f64,
    bgpd_cpu: f64,
}

/// Writes the statuses of nodes 1.. (node 0 is the real bgpd) at the cluster's
/// rate: once each (warm-up), then for `seconds`, measuring.
async fn profile(
    url: &str,
    reqs: &[Request],
    classes: Classes,
    o: &Options,
    etcd_pid: u32,
    bgpd_pid: u32,
) -> Result<Figures, String> {
    let access = bgpd_etcd::Access { endpoints: vec![url.to_string()], tls: None, credentials: None };
    let mut target = Target::Etcd { access, client: None };
    let snap = typical(o.nodes);
    let compactor = connect(url).await?;
    let interval = Duration::from_secs_f64(o.period as f64 / o.nodes as f64);
    for r in reqs {
        target.write(r, &render(&snap, classes, SystemTime::now())).await?;
    }
    let cpu = || -> Result<(f64, f64, f64), String> {
        Ok((
            proc_cpu_seconds(&etcd_pid.to_string())?,
            proc_cpu_seconds("self")?,
            proc_cpu_seconds(&bgpd_pid.to_string())?,
        ))
    };
    let (e0, w0, b0) = cpu()?;
    let start = Instant::now();
    let end = start + Duration::from_secs(o.seconds);
    let mut next = start;
    let (mut writes, mut bytes) = (0u64, 0u64);
    let mut last_compaction = start;
    let mut i = 0usize;
    while Instant::now() < end {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let req = &reqs[i % reqs.len()];
        match target.write(req, &render(&snap, classes, SystemTime::now())).await? {
            Some(n) => {
                writes += 1;
                bytes += n as u64;
            }
            None => return Err(format!("the status of {} was not written (object changed or gone)", req.name)),
        }
        i += 1;
        if last_compaction.elapsed() > Duration::from_secs(2) {
            last_compaction = Instant::now();
            let rev = compactor
                .get_prefix(format!("{PREFIX}bgpconfigurations/"), None)
                .await
                .map_err(|e| e.to_string())?
                .revision;
            compactor.compact(rev).await.map_err(|e| format!("compacting: {e}"))?;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let (e1, w1, b1) = cpu()?;
    Ok(Figures { writes, bytes, seconds, etcd_cpu: e1 - e0, writer_cpu: w1 - w0, bgpd_cpu: b1 - b0 })
}

pub fn run(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    if !testgate_have("etcd") {
        return Err("etcd is not installed (Debian etcd-server)".into());
    }
    // `target/release/bench` runs `target/release/bgpd` beside it; else the
    // lab's lookup (`$BGPD_BIN`, or beside a test binary's directory).
    let beside = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("bgpd")));
    let bgpd_bin = match beside.filter(|p| p.is_file() && std::env::var_os("BGPD_BIN").is_none()) {
        Some(p) => p,
        None => crate::lab::bgpd::binary(),
    };
    let tmp = tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    println!(
        "bench nodestatus: {} nodes, each writing its CalicoNodeStatus every {} s ({:.0} writes/s), {} s per profile, etcd {}",
        o.nodes,
        o.period,
        o.nodes as f64 / o.period as f64,
        o.seconds,
        etcd_version()
    );
    for name in ["bgp", "all"] {
        let dir = tmp.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let etcd = start_etcd()?;
        let url = etcd.url().to_string();
        let etcd_pid = etcd.pid().ok_or("etcd exited")?;
        let (classes, class_names) = classes_of(name);
        let sources = rt.block_on(async { load(&connect(&url).await?, o.nodes, o.period, class_names).await })?;
        let log = std::fs::File::create(dir.join("bgpd.log")).map_err(|e| e.to_string())?;
        let bgpd = killed_on_drop(
            "bgpd",
            Command::new(&bgpd_bin)
                .args(["run", "--node", &node_name(0), "--no-kernel", "--datastore"])
                .arg(format!("etcd:{url}?prefix={PREFIX}"))
                .arg("--control-socket")
                .arg(dir.join("bgpd.sock"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", bgpd_bin.display()))?,
        );
        let mut reqs = Vec::new();
        for i in 1..o.nodes {
            let (mut r, problems) = requests(&sources[i..=i], &node_name(i));
            if !problems.is_empty() || r.len() != 1 {
                return Err(format!("the status object of {}: {problems:?}", node_name(i)));
            }
            reqs.append(&mut r);
        }
        // bgpd reads everything and starts before the measurement.
        std::thread::sleep(Duration::from_secs(2));
        let f = rt.block_on(profile(&url, &reqs, classes, &o, etcd_pid, bgpd.pid()))?;
        report(name, class_names, &f, &o);
        drop(bgpd);
        drop(etcd);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn report(name: &str, classes: &[&str], f: &Figures, o: &Options) {
    let rate = f.writes as f64 / f.seconds;
    let per = |x: f64| x / f.writes.max(1) as f64 * 1e6;
    let cluster_rate = o.nodes as f64 / o.period as f64;
    println!("profile {name} (classes {}):", classes.join(", "));
    println!(
        "  {} writes in {:.1} s ({rate:.1}/s), {:.0} bytes per write",
        f.writes,
        f.seconds,
        f.bytes as f64 / f.writes.max(1) as f64
    );
    println!(
        "  etcd CPU {:.0} us per write; writer CPU {:.0} us per write (render + txn, bgpd's code); watching bgpd CPU {:.0} us per write seen",
        per(f.etcd_cpu),
        per(f.writer_cpu),
        per(f.bgpd_cpu)
    );
    println!(
        "  at {} nodes every {} s: {:.2} MB/s into etcd, etcd {:.1}% of a core, each bgpd {:.2}% of a core to watch the others + {:.3}% to write its own",
        o.nodes,
        o.period,
        f.bytes as f64 / f.writes.max(1) as f64 * cluster_rate / 1e6,
        per(f.etcd_cpu) * cluster_rate / 1e4,
        per(f.bgpd_cpu) * cluster_rate / 1e4,
        per(f.writer_cpu) / o.period as f64 / 1e4,
    );
}

fn testgate_have(program: &str) -> bool {
    testgate::have_cmd(program)
}

fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| "(version unknown)".into())
}

/// A fresh directory under the system's temporary directory.
fn tempdir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("bench-nodestatus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

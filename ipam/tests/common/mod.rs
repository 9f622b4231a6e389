//! Helpers shared by the process-level tests: worker processes and a real
//! etcd. Tests that need root or a program ask `testgate`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the load-generator binary.
pub fn bench_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ipam-bench")
}

/// A pool YAML for the process tests: one /16 pool in /26 blocks, no block limit.
pub const POOL_YAML: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool-a}
spec: {cidr: 10.20.0.0/16, blockSize: 26}
---
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata: {name: default}
spec: {maxBlocksPerHost: 0}
"#;

/// A running worker and the lines it printed.
pub struct Worker {
    pub child: Child,
    pub prefix: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Worker {
    /// Starts `ipam-bench worker`.
    pub fn start(datastore: &str, node: &str, prefix: &str, count: u32, release: bool) -> Worker {
        Worker::start_with(datastore, node, prefix, count, release, &[])
    }

    /// Starts `ipam-bench worker` with more arguments (`--compact-after N`).
    pub fn start_with(datastore: &str, node: &str, prefix: &str, count: u32, release: bool, extra: &[&str]) -> Worker {
        let mut cmd = Command::new(bench_bin());
        cmd.args(["worker", "--datastore", datastore, "--node", node]).args([
            "--handle-prefix",
            prefix,
            "--count",
            &count.to_string(),
        ]);
        if release {
            cmd.arg("--release");
        }
        cmd.args(extra);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start ipam-bench worker");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Worker { child, prefix: prefix.to_string(), lines: rx }
    }

    /// Waits (bounded) until the worker printed `n` assignments; returns them.
    pub fn wait_assigned(&self, n: usize, acc: &mut Vec<(IpAddr, String)>, limit: Duration) {
        let deadline = Instant::now() + limit;
        while acc.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(a) = parse_assigned(&l) {
                        acc.push(a);
                    }
                }
                Err(_) => panic!("worker {} printed only {} assignments", self.prefix, acc.len()),
            }
        }
    }

    /// Waits for exit (bounded) and returns every assignment printed, asserting success.
    pub fn finish(mut self, limit: Duration) -> Vec<(IpAddr, String)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                assert!(st.success(), "worker {} failed: {st}", self.prefix);
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("worker {} did not finish in {limit:?}", self.prefix);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.drain()
    }

    /// Every assignment line printed so far (after exit: all of them).
    pub fn drain(&self) -> Vec<(IpAddr, String)> {
        let mut v = Vec::new();
        // The reader thread ends at EOF, closing the channel.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(10)) {
            if let Some(a) = parse_assigned(&l) {
                v.push(a);
            }
        }
        v
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("live child pid");
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_assigned(line: &str) -> Option<(IpAddr, String)> {
    let mut it = line.split_whitespace();
    if it.next()? != "assigned" {
        return None;
    }
    Some((it.next()?.parse().ok()?, it.next()?.to_string()))
}

/// Runs `ipam-bench release` to completion.
pub fn release_all(datastore: &str, prefix: &str, count: u32) {
    let st = Command::new(bench_bin())
        .args(["release", "--datastore", datastore, "--handle-prefix", prefix])
        .args(["--count", &count.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("run ipam-bench release");
    assert!(st.success(), "release {prefix} failed: {st}");
}

/// Asserts that no address appears twice.
pub fn assert_unique(all: &[(IpAddr, String)]) {
    let mut seen: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for (ip, h) in all {
        if let Some(prev) = seen.insert(*ip, h) {
            panic!("address {ip} handed to both {prev} and {h}");
        }
    }
}

/// Handles seen in assignment lines.
pub fn handles(all: &[(IpAddr, String)]) -> BTreeSet<String> {
    all.iter().map(|(_, h)| h.clone()).collect()
}

/// A real etcd from Debian's `etcd-server`, started by the test bed
/// (`testgate::testbed::Etcd`: free loopback ports, a scratch data directory,
/// ready once it has a leader, gone on drop).
pub struct Etcd {
    _etcd: testgate::testbed::Etcd,
    pub url: String,
}

impl Etcd {
    /// Starts etcd and waits until it is ready.
    pub fn start() -> Etcd {
        let config = testgate::testbed::EtcdConfig::loopback("ipam-test").expect("free loopback ports");
        let etcd = testgate::testbed::Etcd::start(config).unwrap_or_else(|e| panic!("{e}"));
        Etcd { url: etcd.url().to_string(), _etcd: etcd }
    }

    /// Writes the pool design into etcd at Calico's v3 resource keys.
    pub fn put_design(&self, pools: &[(&str, &str, u8)], max_blocks: u32) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let s = ipam::store::etcd::EtcdStore::connect(&self.url).await.expect("connect");
            for (name, cidr, bs) in pools {
                let v = serde_json::json!({
                    "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                    "metadata": {"name": name},
                    "spec": {"cidr": cidr, "blockSize": bs}
                });
                s.put_resource("ippools", name, &v).await.expect("put pool");
            }
            let cfg = serde_json::json!({
                "apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration",
                "metadata": {"name": "default"},
                "spec": {"maxBlocksPerHost": max_blocks}
            });
            s.put_resource("ipamconfigurations", "default", &cfg).await.expect("put config");
        });
    }
}

/// A temporary datastore directory holding `yaml` as `design.yaml`.
pub fn datastore_dir(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("design.yaml"), yaml).expect("write design");
    dir
}

/// `file:DIR`.
pub fn file_spec(dir: &Path) -> String {
    format!("file:{}", dir.display())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Opens the datastore in-process for checks (inside the caller's runtime).
async fn open(spec: &str) -> ipam::Allocator<ipam::store::any::AnyStore> {
    let spec: ipam::store::any::DatastoreSpec = spec.parse().expect("datastore spec");
    let (store, design) = ipam::store::any::open(&spec).await.expect("open datastore");
    ipam::Allocator::new(store, design)
}

/// Consistency problems and allocated addresses of a datastore.
pub fn inspect(spec: &str) -> (Vec<String>, Vec<(IpAddr, String)>) {
    rt().block_on(async {
        let a = open(spec).await;
        (
            ipam::allocator::check_consistency(a.store()).await.expect("check"),
            ipam::allocator::allocated_addresses(a.store()).await.expect("list"),
        )
    })
}

/// Runs GC with the given live handles, then releases empty blocks; returns
/// the addresses GC freed.
pub fn gc(spec: &str, live: &BTreeSet<String>) -> Vec<IpAddr> {
    rt().block_on(async {
        let a = open(spec).await;
        let r = a.gc(live).await.expect("gc");
        a.release_empty_blocks(None).await.expect("release empty blocks");
        r.released
    })
}

/// Number of blocks, affinities and handles left in a datastore.
pub fn object_counts(spec: &str) -> (usize, usize, usize) {
    use ipam::store::{Scope, Store};
    rt().block_on(async {
        let a = open(spec).await;
        let s = a.store();
        (
            s.list(&Scope::Blocks).await.expect("list").len(),
            s.list(&Scope::Affinities(None)).await.expect("list").len(),
            s.list(&Scope::Handles).await.expect("list").len(),
        )
    })
}

/// `workers` processes × `count` assignments over 4 nodes, then concurrent
/// release: every address unique, the store matching what the workers were
/// told, and nothing left afterwards.
pub fn concurrency_scenario(spec: &str, workers: u32, count: u32, limit: Duration) {
    let ws: Vec<Worker> =
        (0..workers).map(|i| Worker::start(spec, &format!("node-{}", i % 4), &format!("w{i}"), count, false)).collect();
    let mut all = Vec::new();
    for w in ws {
        all.extend(w.finish(limit));
    }
    assert_eq!(all.len(), (workers * count) as usize);
    assert_unique(&all);
    let (problems, allocated) = inspect(spec);
    assert!(problems.is_empty(), "inconsistent store: {problems:?}");
    let expected: BTreeMap<IpAddr, String> = all.iter().cloned().collect();
    let actual: BTreeMap<IpAddr, String> = allocated.into_iter().collect();
    assert_eq!(actual, expected, "store disagrees with what workers were given");
    // Release concurrently too.
    let releasers: Vec<std::thread::JoinHandle<()>> = (0..workers)
        .map(|i| {
            let spec = spec.to_string();
            std::thread::spawn(move || release_all(&spec, &format!("w{i}"), count))
        })
        .collect();
    for r in releasers {
        r.join().expect("releaser thread");
    }
    let (problems, allocated) = inspect(spec);
    assert!(problems.is_empty(), "inconsistent after release: {problems:?}");
    assert!(allocated.is_empty(), "{} addresses left after release", allocated.len());
    let (_, _, handles) = object_counts(spec);
    assert_eq!(handles, 0, "handles left after release");
    gc(spec, &BTreeSet::new());
    let (blocks, affs, _) = object_counts(spec);
    assert_eq!((blocks, affs), (0, 0), "empty blocks not released");
}

/// Three workers; one is killed with SIGKILL mid-run. The store stays
/// consistent, the survivors finish, and GC (with the survivors' handles as
/// live) reclaims exactly the dead worker's addresses. Then a few more
/// workers are killed at random moments, each time leaving a consistent store.
pub fn crash_scenario(spec: &str, count: u32, limit: Duration) {
    let mut victim = Worker::start(spec, "node-0", "victim", count * 4, false);
    let a = Worker::start(spec, "node-0", "a", count, false);
    let b = Worker::start(spec, "node-1", "b", count, false);
    let mut seen = Vec::new();
    victim.wait_assigned((count / 2).max(1) as usize, &mut seen, limit);
    victim.kill9();
    let mut survivors = a.finish(limit);
    survivors.extend(b.finish(limit));
    let (problems, allocated) = inspect(spec);
    assert!(problems.is_empty(), "inconsistent after kill -9: {problems:?}");
    let victim_ips: BTreeSet<IpAddr> =
        allocated.iter().filter(|(_, h)| h.starts_with("victim-")).map(|(ip, _)| *ip).collect();
    for (ip, _) in &seen {
        assert!(victim_ips.contains(ip), "victim's acknowledged {ip} lost");
    }
    let live = handles(&survivors);
    let freed: BTreeSet<IpAddr> = gc(spec, &live).into_iter().collect();
    assert_eq!(freed, victim_ips, "GC must reclaim exactly the dead worker's addresses");
    let (problems, allocated) = inspect(spec);
    assert!(problems.is_empty(), "inconsistent after GC: {problems:?}");
    let expected: BTreeMap<IpAddr, String> = survivors.iter().cloned().collect();
    assert_eq!(allocated.into_iter().collect::<BTreeMap<_, _>>(), expected);
    // Kill at (pseudo-)random points: start, a few ms in, mid-claim …
    for (i, delay_ms) in [0u64, 3, 7, 15, 30, 60].into_iter().enumerate() {
        let mut w = Worker::start(spec, &format!("node-{}", i % 4), &format!("k{i}"), 10_000, false);
        std::thread::sleep(Duration::from_millis(delay_ms));
        w.kill9();
        let (problems, _) = inspect(spec);
        assert!(problems.is_empty(), "inconsistent after kill at {delay_ms} ms: {problems:?}");
    }
    gc(spec, &live);
    let (problems, allocated) = inspect(spec);
    assert!(problems.is_empty(), "inconsistent after final GC: {problems:?}");
    assert_eq!(allocated.len(), survivors.len());
}

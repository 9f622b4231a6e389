//! Load generator for the IPAM stores: the benchmark, and the allocator
//! process that the multi-process concurrency and crash tests start.
//!
//! * `ipam-bench worker --datastore SPEC --node N --handle-prefix P --count K [--release] [--compact-after R]`
//!   assigns K IPv4 addresses one at a time (handle `P-i` each), printing
//!   `assigned IP HANDLE` per address once it is acknowledged (on disk, for
//!   the file store), then optionally releases them all, and prints a
//!   `done …` summary line (for the file store with how many of its commits
//!   flushed the journal themselves: `flushes=`).
//! * `ipam-bench run --datastore SPEC --clients C --count K [--nodes 4]`
//!   starts C worker processes (node `node-(i mod nodes)`) and prints the
//!   aggregate assignments/s and releases/s.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Instant;

use clap::{Parser, Subcommand};
use ipam::allocator::{Allocator, AssignRequest};
use ipam::store::any::{AnyStore, DatastoreSpec};

#[derive(Parser)]
#[command(about = "IPAM load generator and benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One allocating client.
    Worker {
        /// `file:DIR` or `etcd:http://HOST:PORT`.
        #[arg(long)]
        datastore: String,
        /// Node name to allocate for.
        #[arg(long)]
        node: String,
        /// Handles are `PREFIX-0` … `PREFIX-(count-1)`.
        #[arg(long)]
        handle_prefix: String,
        /// Number of assignments (each one address).
        #[arg(long)]
        count: u32,
        /// Release every handle afterwards.
        #[arg(long)]
        release: bool,
        /// For `file:` datastores: compact the journal after this many
        /// commits instead of the default (the crash tests compact often).
        #[arg(long)]
        compact_after: Option<u64>,
    },
    /// Release handles `PREFIX-0` … `PREFIX-(count-1)`.
    Release {
        /// `file:DIR` or `etcd:http://HOST:PORT`.
        #[arg(long)]
        datastore: String,
        /// Handle prefix.
        #[arg(long)]
        handle_prefix: String,
        /// Number of handles.
        #[arg(long)]
        count: u32,
    },
    /// Start several workers and report throughput.
    Run {
        /// `file:DIR` or `etcd:http://HOST:PORT`.
        #[arg(long)]
        datastore: String,
        /// Concurrent client processes.
        #[arg(long, default_value_t = 1)]
        clients: u32,
        /// Assignments per client.
        #[arg(long, default_value_t = 1000)]
        count: u32,
        /// Distinct node names the clients allocate for.
        #[arg(long, default_value_t = 4)]
        nodes: u32,
        /// For `etcd:` datastores: a YAML file whose IPPools and
        /// IPAMConfiguration are first written to Calico's resource keys.
        #[arg(long)]
        seed: Option<std::path::PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ipam-bench: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.cmd {
        Cmd::Worker { datastore, node, handle_prefix, count, release, compact_after } => {
            rt.block_on(worker(&datastore, &node, &handle_prefix, count, release, compact_after))
        }
        Cmd::Release { datastore, handle_prefix, count } => rt.block_on(release(&datastore, &handle_prefix, count)),
        Cmd::Run { datastore, clients, count, nodes, seed } => match seed {
            Some(path) => rt.block_on(seed_etcd(&datastore, &path)),
            None => Ok(()),
        }
        .and_then(|()| run(&datastore, clients, count, nodes)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipam-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn worker(
    datastore: &str,
    node: &str,
    prefix: &str,
    count: u32,
    release: bool,
    compact_after: Option<u64>,
) -> Result<(), String> {
    let spec: DatastoreSpec = datastore.parse().map_err(|e| format!("{e}"))?;
    let (store, design) = ipam::store::any::open(&spec).await.map_err(|e| e.to_string())?;
    let store = match (store, compact_after) {
        (AnyStore::File(s), Some(n)) => AnyStore::File(s.with_compact_after(n)),
        (store, _) => store,
    };
    let alloc = Allocator::new(store, design);
    let mut out = std::io::stdout().lock();
    let t0 = Instant::now();
    for i in 0..count {
        let handle = format!("{prefix}-{i}");
        let req = AssignRequest {
            handle: handle.clone(),
            node: node.to_string(),
            namespace: Some("bench".into()),
            pod: Some(handle.clone()),
            num_v4: 1,
            ..AssignRequest::default()
        };
        let ips = alloc.auto_assign(&req).await.map_err(|e| format!("assign {handle}: {e}"))?;
        for a in ips {
            writeln!(out, "assigned {} {handle}", a.ip).map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
    }
    let assign_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    if release {
        for i in 0..count {
            let handle = format!("{prefix}-{i}");
            alloc.release_handle(&handle).await.map_err(|e| format!("release {handle}: {e}"))?;
        }
    }
    let release_secs = t1.elapsed().as_secs_f64();
    let conflicts = alloc.stats.conflicts.load(Ordering::Relaxed);
    let flushes = match alloc.store() {
        AnyStore::File(s) => {
            let f = s.flush_stats();
            format!(
                " flushes={} covered={} compacted={}",
                f.led.load(Ordering::Relaxed),
                f.covered.load(Ordering::Relaxed),
                f.compacted.load(Ordering::Relaxed)
            )
        }
        _ => String::new(),
    };
    writeln!(
        out,
        "done assigned={count} released={} assign_secs={assign_secs:.4} release_secs={release_secs:.4} conflicts={conflicts}{flushes}",
        if release { count } else { 0 }
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

async fn release(datastore: &str, prefix: &str, count: u32) -> Result<(), String> {
    let spec: DatastoreSpec = datastore.parse().map_err(|e| format!("{e}"))?;
    let (store, design) = ipam::store::any::open(&spec).await.map_err(|e| e.to_string())?;
    let alloc = Allocator::new(store, design);
    let mut freed = 0;
    for i in 0..count {
        let handle = format!("{prefix}-{i}");
        freed += alloc.release_handle(&handle).await.map_err(|e| format!("release {handle}: {e}"))?.len();
    }
    println!("done released={freed}");
    Ok(())
}

/// Writes the IPPools and IPAMConfiguration of a YAML file into etcd.
async fn seed_etcd(datastore: &str, path: &std::path::Path) -> Result<(), String> {
    let url = datastore.strip_prefix("etcd:").ok_or("--seed needs an etcd: datastore")?;
    let store = ipam::store::etcd::EtcdStore::connect(url).await.map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_json::Value =
            serde::Deserialize::deserialize(doc).map_err(|e| format!("{}: {e}", path.display()))?;
        let plural = match v["kind"].as_str() {
            Some("IPPool") => "ippools",
            Some("IPAMConfiguration") => "ipamconfigurations",
            _ => continue,
        };
        let name = v["metadata"]["name"].as_str().unwrap_or("default").to_string();
        store.put_resource(plural, &name, &v).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn field(line: &str, name: &str) -> Option<f64> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

fn run(datastore: &str, clients: u32, count: u32, nodes: u32) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut children = Vec::new();
    for i in 0..clients {
        let child = Command::new(&exe)
            .args(["worker", "--datastore", datastore])
            .args(["--node", &format!("node-{}", i % nodes.max(1))])
            .args(["--handle-prefix", &format!("bench-{}-c{i}", std::process::id())])
            .args(["--count", &count.to_string(), "--release"])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting worker: {e}"))?;
        children.push(child);
    }
    let (mut max_assign, mut max_release, mut conflicts) = (0f64, 0f64, 0f64);
    let (mut flushes, mut covered, mut file_store) = (0f64, 0f64, false);
    for c in children {
        let out = c.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("worker failed: {}", out.status));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let done = text.lines().find(|l| l.starts_with("done ")).ok_or("worker printed no summary")?;
        max_assign = max_assign.max(field(done, "assign_secs").unwrap_or(0.0));
        max_release = max_release.max(field(done, "release_secs").unwrap_or(0.0));
        conflicts += field(done, "conflicts").unwrap_or(0.0);
        if let (Some(f), Some(c)) = (field(done, "flushes"), field(done, "covered")) {
            (flushes, covered, file_store) = (flushes + f, covered + c, true);
        }
    }
    // Commits (assignments, releases, block claims) per journal flush.
    let per_flush = if file_store {
        format!(" commits_per_flush={:.2}", (flushes + covered) / flushes.max(1.0))
    } else {
        String::new()
    };
    let total = clients as f64 * count as f64;
    println!(
        "datastore={datastore} clients={clients} assignments={total} assign_per_sec={:.0} release_per_sec={:.0} conflicts={conflicts}{per_flush} wall_secs={:.2}",
        total / max_assign.max(1e-9),
        total / max_release.max(1e-9),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

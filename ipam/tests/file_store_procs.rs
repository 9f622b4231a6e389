//! The file store under several allocator processes on one machine, and
//! under `kill -9` at arbitrary points.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use common::*;

#[test]
fn file_store_8_processes_4_nodes_unique_and_released() {
    let dir = datastore_dir(POOL_YAML);
    // 8 × 150 keeps the file store's share of the CI time small on 2 cores.
    concurrency_scenario(&file_spec(dir.path()), 8, 150, Duration::from_secs(240));
}

#[test]
fn file_store_kill_9_leaves_consistent_state_and_gc_reclaims() {
    let dir = datastore_dir(POOL_YAML);
    crash_scenario(&file_spec(dir.path()), 100, Duration::from_secs(240));
}

/// Group commit under `kill -9`: six writers on three nodes, compacting every
/// 40 commits, are killed one after another while the others keep writing,
/// three rounds over one store. A killed writer may die holding the commit
/// lock, mid-append, after its append but before its flush, or while leading
/// a flush for others. Every assignment a writer printed (it prints only once
/// its commit is acknowledged) must be in the store with its handle, no
/// address may be held twice, and the store must stay consistent.
#[test]
fn file_store_kill_9_writers_mid_load_lose_no_acknowledged_assignment() {
    let dir = datastore_dir(POOL_YAML);
    let spec = file_spec(dir.path());
    let limit = Duration::from_secs(120);
    let mut acked: Vec<(IpAddr, String)> = Vec::new();
    for round in 0..3 {
        let mut workers: Vec<Worker> = (0..6)
            .map(|i| {
                let (node, prefix) = (format!("node-{}", i % 3), format!("r{round}w{i}"));
                Worker::start_with(&spec, &node, &prefix, 10_000, false, &["--compact-after", "40"])
            })
            .collect();
        for (i, w) in workers.iter_mut().enumerate() {
            // Staggered: the first is killed early, the last after the others died.
            let mut printed = Vec::new();
            w.wait_assigned(5 + 7 * i, &mut printed, limit);
            w.kill9();
            printed.extend(w.drain());
            acked.extend(printed);
        }
        assert_unique(&acked);
        let (problems, allocated) = inspect(&spec);
        assert!(problems.is_empty(), "round {round}: inconsistent after kill -9: {problems:?}");
        assert_unique(&allocated);
        let held: BTreeMap<IpAddr, String> = allocated.into_iter().collect();
        for (ip, handle) in &acked {
            assert_eq!(held.get(ip), Some(handle), "round {round}: acknowledged {ip} of {handle} lost");
        }
    }
    // 3 rounds of at least 135 acknowledged commits: compacted more than once.
    assert!(dir.path().join(ipam::store::file::STATE_FILE).exists(), "the journal was never compacted");
    // Nothing the dead writers held is live: GC frees it all.
    let freed = gc(&spec, &Default::default());
    assert!(freed.len() >= acked.len(), "GC freed {} of at least {}", freed.len(), acked.len());
    let (problems, allocated) = inspect(&spec);
    assert!(problems.is_empty(), "inconsistent after GC: {problems:?}");
    assert!(allocated.is_empty(), "{} addresses left after GC", allocated.len());
}

//! The file store under several allocator processes on one machine, and
//! under `kill -9` at arbitrary points.

mod common;

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

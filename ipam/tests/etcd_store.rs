//! The etcd store against a real etcd (Debian `etcd-server`): 8 allocator
//! processes across 4 nodes, and `kill -9` of an allocator mid-run.

mod common;

use std::time::Duration;

use common::*;

fn etcd_or_skip(test: &str) -> Option<Etcd> {
    if !testgate::require_cmd(test, "etcd") {
        return None;
    }
    let e = Etcd::start();
    e.put_design(&[("pool-a", "10.20.0.0/16", 26)], 0);
    Some(e)
}

#[test]
fn etcd_8_processes_4_nodes_unique_and_released() {
    let Some(etcd) = etcd_or_skip("etcd_8_processes_4_nodes_unique_and_released") else { return };
    let count: u32 = std::env::var("IPAM_ETCD_ASSIGNMENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(250);
    concurrency_scenario(&format!("etcd:{}", etcd.url), 8, count, Duration::from_secs(280));
}

#[test]
fn etcd_kill_9_leaves_consistent_state_and_gc_reclaims() {
    let Some(etcd) = etcd_or_skip("etcd_kill_9_leaves_consistent_state_and_gc_reclaims") else { return };
    crash_scenario(&format!("etcd:{}", etcd.url), 100, Duration::from_secs(240));
}

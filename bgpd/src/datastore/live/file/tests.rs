use super::*;
use crate::datastore::live::{spawn, DatastoreSpec, Feed};
use crate::datastore::parse_input;
use std::io::Write;
use tokio::sync::watch;

const YAML: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\n\
                    spec: {cidr: 10.244.0.0/16, blockSize: 26}\n";

/// The datastore with IP pools `pool-0` … `pool-{n-1}` (the count tells versions apart).
fn pools(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool-{i}}}\n\
                 spec: {{cidr: 10.{i}.0.0/16}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The YAML text (the first source) of the feed, once `done` holds for it (10 s at most).
async fn wait_text(rx: &mut watch::Receiver<Feed>, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = rx.borrow_and_update().sources.as_deref().and_then(|s| s.first()).map(|s| s.text.clone());
        if let Some(t) = text.as_deref().filter(|t| done(t)) {
            return t.to_string();
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("{what}: no such feed within 10 s; last text: {text:?}"),
        }
    }
}

/// An allocator over the store beside `yaml`, as `bgpd-ipam` runs one, but
/// folding its journal into a new snapshot every 3 commits: the watcher sees
/// journal lines, new snapshots and journals removed.
fn allocator(yaml: &Path) -> ipam::Allocator<FileStore> {
    let design = ipam::Design::load(yaml).expect("the test's pool is valid");
    ipam::Allocator::new(FileStore::open(yaml).unwrap().with_compact_after(3), design)
}

fn request(node: &str, handle: &str) -> ipam::AssignRequest {
    ipam::AssignRequest { node: node.into(), handle: handle.into(), num_v4: 1, ..Default::default() }
}

/// The blocks of node `node` in the feed, once `done` holds for them (10 s at most).
async fn wait_for(rx: &mut watch::Receiver<Feed>, node: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let blocks: Option<Vec<String>> = {
            let feed = rx.borrow_and_update();
            feed.sources.as_deref().map(|sources| {
                let (m, _) = parse_input(sources, &feed.ipam).expect("the feed parses");
                m.blocks_for_node(node).iter().map(|b| b.cidr.to_string()).collect()
            })
        };
        if let Some(blocks) = blocks.as_ref().filter(|b| done(b)) {
            return blocks.clone();
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("no feed with the expected blocks of {node} within 10 s; last: {blocks:?}"),
        }
    }
}

#[tokio::test]
async fn the_live_file_source_sees_allocations_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("cluster.yaml");
    std::fs::write(&yaml, YAML).unwrap();
    let mut rx = spawn(&DatastoreSpec::File(yaml.clone()), "kube-system", "node-1");
    // Started before the store exists: the YAML alone, no block.
    assert!(wait_for(&mut rx, "node-1", |_| true).await.is_empty());
    let alloc = allocator(&yaml);
    let got = alloc.auto_assign(&request("node-1", "pod-a")).await.unwrap();
    let block = got[0].block.to_string();
    let seen = wait_for(&mut rx, "node-1", |b| !b.is_empty()).await;
    assert_eq!(seen, [block.as_str()]);
    // Another node's block, claimed after a compaction.
    let other = alloc.auto_assign(&request("node-2", "pod-b")).await.unwrap()[0].block.to_string();
    assert!(dir.path().join(ipam::store::file::STATE_FILE).exists(), "compacted into a snapshot");
    assert_eq!(wait_for(&mut rx, "node-2", |b| !b.is_empty()).await, [other.as_str()]);
    alloc.release_handle("pod-a").await.unwrap();
    alloc.release_empty_blocks(Some("node-1")).await.unwrap();
    assert!(wait_for(&mut rx, "node-1", |b| b.is_empty()).await.is_empty(), "{block} withdrawn");
}

#[tokio::test]
async fn an_edit_in_place_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("cluster.yaml");
    std::fs::write(&yaml, pools(1)).unwrap();
    let mut rx = spawn(&DatastoreSpec::File(yaml.clone()), "kube-system", "node-1");
    wait_text(&mut rx, "first read", |t| t == pools(1)).await;
    // Same length, same second: only the notification tells it changed.
    let edited = pools(1).replace("10.0.0.0/16", "10.9.0.0/16");
    std::fs::write(&yaml, &edited).unwrap();
    wait_text(&mut rx, "after the edit", |t| t == edited).await;
    // Opened, written in two parts and closed.
    let mut f = std::fs::File::create(&yaml).unwrap();
    let two = pools(2);
    f.write_all(&two.as_bytes()[..10]).unwrap();
    f.write_all(&two.as_bytes()[10..]).unwrap();
    drop(f);
    wait_text(&mut rx, "after the second edit", |t| t == two).await;
}

#[tokio::test]
async fn a_file_renamed_over_the_datastore_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("cluster.yaml");
    std::fs::write(&yaml, pools(1)).unwrap();
    let mut rx = spawn(&DatastoreSpec::File(yaml.clone()), "kube-system", "node-1");
    wait_text(&mut rx, "first read", |t| t == pools(1)).await;
    for n in 2..5 {
        let tmp = dir.path().join(".cluster.yaml.swp");
        std::fs::write(&tmp, pools(n)).unwrap();
        std::fs::rename(&tmp, &yaml).unwrap();
        wait_text(&mut rx, &format!("after rename {n}"), |t| t == pools(n)).await;
    }
}

#[tokio::test]
async fn a_file_deleted_and_created_again_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("cluster.yaml");
    std::fs::write(&yaml, pools(1)).unwrap();
    let mut rx = spawn(&DatastoreSpec::File(yaml.clone()), "kube-system", "node-1");
    wait_text(&mut rx, "first read", |t| t == pools(1)).await;
    std::fs::remove_file(&yaml).unwrap();
    // Gone: unreachable, the content read last is kept.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rx.borrow_and_update().unreachable.is_none() {
        assert!(tokio::time::timeout_at(deadline, rx.changed()).await.is_ok(), "a missing file is unreachable");
    }
    assert_eq!(rx.borrow().sources.as_deref().unwrap()[0].text, pools(1));
    std::fs::write(&yaml, pools(3)).unwrap();
    wait_text(&mut rx, "after the file came back", |t| t == pools(3)).await;
    assert!(rx.borrow().unreachable.is_none());
}

#[tokio::test]
async fn a_directory_datastore_sees_new_and_renamed_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), pools(1)).unwrap();
    let mut rx = spawn(&DatastoreSpec::File(dir.path().to_path_buf()), "kube-system", "node-1");
    let count = |rx: &watch::Receiver<Feed>| rx.borrow().sources.as_ref().map_or(0, |s| s.len());
    wait_text(&mut rx, "first read", |t| t == pools(1)).await;
    std::fs::write(dir.path().join("b.yaml"), YAML).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count(&rx) != 2 {
        assert!(tokio::time::timeout_at(deadline, rx.changed()).await.is_ok(), "b.yaml read");
    }
    std::fs::rename(dir.path().join("b.yaml"), dir.path().join("b.txt")).unwrap();
    while count(&rx) != 1 {
        assert!(tokio::time::timeout_at(deadline, rx.changed()).await.is_ok(), "b.yaml renamed away");
    }
}

/// A file being written (opened, part written, not closed) is not read until
/// its writer closes it; meanwhile the IPAM store's change is published with
/// the YAML read before. The settle time is long here (10 s), so that only the
/// close can make the watcher read the file.
#[tokio::test]
async fn a_half_written_file_is_not_read_as_whole() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("cluster.yaml");
    std::fs::write(&yaml, YAML).unwrap();
    let (tx, mut rx) = watch::channel(Feed::default());
    tokio::spawn(run_with(yaml.clone(), Publisher { tx }, Duration::from_secs(10)));
    wait_text(&mut rx, "first read", |t| t == YAML).await;
    let whole = format!("{YAML}---\n{}", pools(3));
    let alloc = allocator(&yaml);
    let mut f = std::fs::File::create(&yaml).unwrap();
    f.write_all(&whole.as_bytes()[..whole.len() / 2]).unwrap();
    f.flush().unwrap();
    // The allocation is read at once; the YAML stays the one read before.
    alloc.auto_assign(&request("node-1", "pod-a")).await.unwrap();
    wait_for(&mut rx, "node-1", |b| !b.is_empty()).await;
    assert_eq!(rx.borrow().sources.as_deref().unwrap()[0].text, YAML, "the half-written file was read");
    f.write_all(&whole.as_bytes()[whole.len() / 2..]).unwrap();
    drop(f);
    wait_text(&mut rx, "once closed", |t| t == whole).await;
}

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

#[test]
fn settle_reads_a_closed_or_renamed_file_at_once() {
    let t0 = Instant::now();
    let mut s = Settle::new(SETTLE);
    assert!(!s.take(t0), "nothing wanted");
    s.note(OsStr::new("a.yaml"), Change::Unsettled, t0);
    s.note(OsStr::new("a.yaml"), Change::Whole, at(t0, 1));
    assert!(s.take(at(t0, 1)), "closed after writing: read at once");
    assert_eq!(s.due(), None, "and no more");
    s.note(OsStr::new("a.yaml"), Change::Whole, at(t0, 5));
    assert!(s.take(at(t0, 5)), "renamed into place: read at once");
}

#[test]
fn settle_waits_while_a_file_is_being_written() {
    let t0 = Instant::now();
    let mut s = Settle::new(SETTLE);
    s.note(OsStr::new("a.yaml"), Change::Unsettled, t0);
    assert_eq!(s.due(), Some(t0 + SETTLE));
    assert!(!s.take(at(t0, 19)));
    // Written again: the wait starts over.
    s.note(OsStr::new("a.yaml"), Change::Unsettled, at(t0, 15));
    assert!(!s.take(at(t0, 21)));
    assert!(s.take(at(t0, 15) + SETTLE));
}

#[test]
fn settle_a_whole_file_does_not_hide_one_being_written() {
    let t0 = Instant::now();
    let mut s = Settle::new(SETTLE);
    s.note(OsStr::new("a.yaml"), Change::Unsettled, t0);
    s.note(OsStr::new("b.yaml"), Change::Whole, at(t0, 2));
    assert!(!s.take(at(t0, 2)), "a.yaml is still being written");
    assert!(s.take(t0 + SETTLE));
    // Deleted, then created and closed: whole.
    s.note(OsStr::new("a.yaml"), Change::Unsettled, at(t0, 50));
    s.note(OsStr::new("a.yaml"), Change::Unsettled, at(t0, 51));
    s.note(OsStr::new("a.yaml"), Change::Whole, at(t0, 52));
    assert!(s.take(at(t0, 52)));
    // Renamed from one datastore name to another: the old name is not half written.
    s.note(OsStr::new("old.yaml"), Change::Unsettled, at(t0, 60));
    s.renamed_away(OsStr::new("old.yaml"));
    s.note(OsStr::new("new.yaml"), Change::Whole, at(t0, 60));
    assert!(s.take(at(t0, 60)));
}

#[test]
fn notifications_concern_the_datastore_files_only() {
    let file = Dir { path: "/d".into(), file: Some("cluster.yaml".into()), ipam: true };
    assert!(file.yaml(OsStr::new("cluster.yaml")));
    assert!(file.yaml(OsStr::new("..data")), "a ConfigMap volume's update");
    assert!(!file.yaml(OsStr::new("cluster.yaml.tmp")));
    assert!(!file.yaml(OsStr::new("other.yaml")));
    assert!(file.ipam(OsStr::new("ipam-state.json")));
    assert!(file.ipam(OsStr::new("ipam-journal.3.log")));
    assert!(!file.ipam(OsStr::new("ipam-state.lock")));
    assert!(!file.ipam(OsStr::new("ipam-state.json.tmp")));
    let dir = Dir { path: "/d".into(), file: None, ipam: true };
    assert!(dir.yaml(OsStr::new("a.yaml")) && dir.yaml(OsStr::new("b.yml")) && dir.yaml(OsStr::new("c.json")));
    assert!(!dir.yaml(OsStr::new(".a.yaml")) && !dir.yaml(OsStr::new("a.yaml~")));
    assert!(!dir.yaml(OsStr::new("ipam-state.json")), "the IPAM store is not YAML");
    let target = Dir { path: "/t".into(), file: Some("c.yaml".into()), ipam: false };
    assert!(!target.ipam(OsStr::new("ipam-state.json")), "the store is beside the datastore path only");
}

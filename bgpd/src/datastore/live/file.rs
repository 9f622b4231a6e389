//! The file datastore, polled: every 20 ms the files' lengths and modification
//! times are compared with the last read (a `stat` per file: negligible work), and
//! the files are read again once they differ and have stayed the same for one more
//! poll (so a file caught half written is not taken for the whole). A file that
//! cannot be read marks the datastore unreachable.
//!
//! The `bgpd-ipam` file store in the same directory (`ipam-state.json` and its
//! journal, see [`ipam_store`]) is polled alike, but read at once when it changed:
//! its snapshot is only ever replaced whole (rename), and its reader ignores a
//! journal line not yet complete, so there is nothing half written to wait out. An
//! allocation thus reaches the model within one poll (20 ms) plus the read. A store
//! that cannot be read keeps the blocks last read and says why in the feed's notes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipam::store::file::FileStore;

use super::Publisher;
use crate::datastore::{ipam_store, source, Source};

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// Fingerprint of the datastore files (path, length, modification time), to notice
/// edits. The IPAM store's files are not part of it ([`IpamWatch`] has its own).
fn fingerprint(path: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut add = |p: PathBuf| {
        if let Ok(m) = std::fs::metadata(&p) {
            out.push((p, m.len(), m.modified().ok()));
        }
    };
    if path.is_dir() {
        if let Ok(rd) = std::fs::read_dir(path) {
            let mut v: Vec<PathBuf> =
                rd.flatten().filter(|e| !ipam_store::is_store_file(&e.file_name())).map(|e| e.path()).collect();
            v.sort();
            v.into_iter().for_each(&mut add);
        }
    } else {
        add(path.to_path_buf());
    }
    out
}

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(20);

/// The IPAM file store beside the YAML, as last read.
struct IpamWatch {
    dir: PathBuf,
    /// Opened on first sight of a store; keeps its cache, so a new journal line
    /// costs reading that line.
    store: Option<FileStore>,
    last: Option<Fingerprint>,
    /// The blocks last read; `None` while the directory holds no store.
    source: Option<Source>,
    /// Why the last read failed, if it did.
    note: Option<String>,
}

impl IpamWatch {
    fn new(datastore: &Path) -> IpamWatch {
        IpamWatch { dir: ipam_store::store_dir(datastore), store: None, last: None, source: None, note: None }
    }

    /// Reads the store again if its files changed; returns whether the source or
    /// the note changed.
    fn poll(&mut self) -> bool {
        let now = ipam_store::fingerprint(&self.dir);
        if self.last.as_ref() == Some(&now) {
            return false;
        }
        let gone = now.is_empty();
        self.last = Some(now);
        if gone {
            self.store = None;
            let had = self.source.take().is_some() | self.note.take().is_some();
            return had;
        }
        let read = match &self.store {
            Some(store) => ipam_store::read(store, &self.dir),
            None => FileStore::open(&self.dir).and_then(|store| {
                let s = ipam_store::read(&store, &self.dir);
                self.store = Some(store);
                s
            }),
        };
        let before = (self.source.clone(), self.note.clone());
        match read {
            Ok(source) => {
                self.source = Some(source);
                self.note = None;
            }
            Err(e) => {
                // Read again once the files change; the last blocks read stay.
                tracing::warn!(dir = %self.dir.display(), error = %e, "IPAM file store unreadable");
                self.note = Some(format!(
                    "IPAM file store in {}: {e}; the blocks last read from it are kept",
                    self.dir.display()
                ));
            }
        }
        (self.source.clone(), self.note.clone()) != before
    }
}

pub(super) async fn run(path: PathBuf, out: Publisher) {
    let mut tick = tokio::time::interval(POLL);
    let mut last = None;
    let mut seen = None;
    let mut yaml: Option<Vec<Source>> = None;
    let mut ipam = IpamWatch::new(&path);
    while !out.closed() {
        tick.tick().await;
        let mut changed = ipam.poll();
        let now = fingerprint(&path);
        if last.as_ref() != Some(&now) {
            if seen.as_ref() != Some(&now) {
                // Changed: read once it holds still for one poll.
                seen = Some(now);
            } else {
                match source::read(&path) {
                    Ok(sources) => {
                        last = Some(now);
                        yaml = Some(sources);
                        changed = true;
                    }
                    Err(e) => {
                        // Read again next time, whatever the fingerprint says.
                        last = None;
                        out.unreachable(e.to_string());
                        continue;
                    }
                }
            }
        }
        // Published only while the YAML was read completely last time.
        if let (true, Some(yaml), Some(_)) = (changed, &yaml, &last) {
            let mut sources = yaml.clone();
            sources.extend(ipam.source.clone());
            out.content(sources, ipam.note.iter().cloned().collect());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::live::{spawn, DatastoreSpec};
    use crate::datastore::parse_sources;

    const YAML: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\n\
                        spec: {cidr: 10.244.0.0/16, blockSize: 26}\n";

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
    async fn wait_for(
        rx: &mut tokio::sync::watch::Receiver<super::super::Feed>,
        node: &str,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let blocks: Option<Vec<String>> = rx.borrow_and_update().sources.as_deref().map(|sources| {
                let (m, _) = parse_sources(sources).expect("the feed parses");
                m.blocks_for_node(node).iter().map(|b| b.cidr.to_string()).collect()
            });
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
        let mut rx = spawn(&DatastoreSpec::File(yaml.clone()));
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
}

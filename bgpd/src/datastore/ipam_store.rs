//! The `bgpd-ipam` file store beside the YAML (`docs/ipam.md`): the blocks the CNI
//! plugin claims, read with the `ipam` crate's [`FileStore`] and handed on typed, as
//! the store decoded them ([`IpamObjects`]: the model's `AllocationBlock`s and
//! `IpamHandle`s), not as text. The model reads each block and each handle with
//! floating IPs by the rules the YAML's IPAMBlocks and IPAMHandles are read by
//! (`ipam_block::from_store`, `ipam_handle::from_store`), with the same findings. The
//! etcd datastore hands on the same objects, read from Calico's etcdv3 IPAM keys.
//!
//! Reading takes no lock and writes nothing: the store's readers never `flock` (its
//! snapshot is replaced by rename, and a journal line cut short is ignored until it
//! is whole). A block that the YAML defines too (same name or same CIDR) is taken
//! from the YAML: the operator's explicit word wins over the plugin's state.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use bgpd_model::calico::{AffinityState, AllocationBlock, BlockAffinity, IpamHandle};
use ipam::store::file::{FileStore, LOCK_FILE, STATE_FILE};
use ipam::store::{Object, Scope, Store, StoreError};
use ipnet::IpNet;

use super::problem::Location;

/// What routing reads of an IPAM store (the file store, etcd's IPAM keys), typed:
/// its blocks, and its handles that carry floating IPs, each with where it came
/// from (named in the findings about it). Read after the YAML; a block the YAML
/// defines too is the YAML's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpamObjects {
    /// The blocks, in the store's order.
    pub blocks: Vec<StoredBlock>,
    /// The handles with floating IPs (routing has no use for the others).
    pub handles: Vec<StoredHandle>,
}

/// A block of an IPAM store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlock {
    /// Where it was read (the store's snapshot file, an etcd key).
    pub location: Location,
    /// The block.
    pub block: AllocationBlock,
    /// Being released (Calico's `deleted`, or its affinity `pendingDeletion`):
    /// withdrawn.
    pub deleted: bool,
}

/// A handle of an IPAM store that carries floating IPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredHandle {
    /// Where it was read.
    pub location: Location,
    /// The handle.
    pub handle: IpamHandle,
}

impl IpamObjects {
    /// The objects of one store read whole from `source` (a block releasing when its
    /// affinity is `pendingDeletion`), numbered as documents of it: the blocks
    /// first, then the handles with floating IPs.
    pub fn of_store(
        source: &Path,
        blocks: Vec<AllocationBlock>,
        affinities: &[BlockAffinity],
        handles: Vec<IpamHandle>,
    ) -> IpamObjects {
        let releasing = releasing(affinities.iter());
        let mut document = 0;
        let mut at = || {
            document += 1;
            Location { file: source.to_path_buf(), document, item: None }
        };
        let blocks = blocks
            .into_iter()
            .map(|block| StoredBlock { location: at(), deleted: is_releasing(&block, &releasing), block })
            .collect();
        let handles = handles
            .into_iter()
            .filter(|h| !h.floating_ips.is_empty())
            .map(|handle| StoredHandle { location: at(), handle })
            .collect();
        IpamObjects { blocks, handles }
    }
}

/// The directory whose IPAM file store belongs to the datastore at `path`: `path`
/// itself if it is a directory, else the directory of the file (as
/// [`FileStore::open`] decides).
pub fn store_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether a file of the datastore directory belongs to the IPAM file store (the
/// snapshot, its temporary copy, the lock, a journal) rather than to the YAML.
pub fn is_store_file(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else { return false };
    name == STATE_FILE
        || name == LOCK_FILE
        || name.strip_prefix(STATE_FILE).is_some_and(|rest| rest == ".tmp")
        || is_journal(name)
}

/// `ipam-journal.R.log`.
fn is_journal(name: &str) -> bool {
    name.strip_prefix("ipam-journal.")
        .and_then(|rest| rest.strip_suffix(".log"))
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
}

/// The snapshot and journal files of the store in `dir` (what changes when the
/// plugin commits), with their lengths and modification times, in name order. Empty
/// when `dir` holds no store.
pub fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<_> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n == STATE_FILE || is_journal(n)))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.len(), m.modified().ok()))
        })
        .collect();
    out.sort();
    out
}

/// Calico's IPAMBlock name for a block: the CIDR with `.`, `:` and `/` as `-`
/// (`10.244.1.0/26` → `10-244-1-0-26`).
pub fn block_name(cidr: &IpNet) -> String {
    cidr.to_string().replace(['.', ':', '/'], "-")
}

/// Reads the blocks of `store` (kept in `dir`), and its handles that carry
/// floating IPs ([`IpamObjects::of_store`]), named `DIR/ipam-state.json`.
pub fn read(store: &FileStore, dir: &Path) -> Result<IpamObjects, StoreError> {
    // The file store's futures do their (synchronous) file I/O on first poll.
    let (blocks, affinities, handles) = futures::executor::block_on(async {
        (
            store.list(&Scope::Blocks).await,
            store.list(&Scope::Affinities(None)).await,
            store.list(&Scope::Handles).await,
        )
    });
    let (mut bs, mut afs, mut hs) = (Vec::new(), Vec::new(), Vec::new());
    for v in blocks?.into_iter().chain(affinities?).chain(handles?) {
        match v.value {
            Object::Block(b) => bs.push(b),
            Object::Affinity(a) => afs.push(a),
            Object::Handle(h) => hs.push(h),
        }
    }
    Ok(IpamObjects::of_store(&dir.join(STATE_FILE), bs, &afs, hs))
}

/// [`read`] for the datastore at `path`, opening its store: `None` when the
/// directory holds no store (neither snapshot nor journal).
pub fn read_beside(path: &Path) -> Result<Option<IpamObjects>, StoreError> {
    let dir = store_dir(path);
    if fingerprint(&dir).is_empty() {
        return Ok(None);
    }
    read(&FileStore::open(&dir)?, &dir).map(Some)
}

/// The blocks being released: (node, CIDR) of each BlockAffinity in state
/// `pendingDeletion`.
pub fn releasing<'a>(affinities: impl Iterator<Item = &'a BlockAffinity>) -> BTreeSet<(String, IpNet)> {
    affinities.filter(|a| a.state == AffinityState::PendingDeletion).map(|a| (a.node.clone(), a.cidr)).collect()
}

/// Whether block `b` is being released (its affinity is in `releasing`): it reads
/// as `deleted: true` and is withdrawn.
pub fn is_releasing(b: &AllocationBlock, releasing: &BTreeSet<(String, IpNet)>) -> bool {
    b.node().is_some_and(|n| releasing.contains(&(n.to_string(), b.cidr)))
}

/// Whether `key` is where Calico's etcdv3 layout keeps an IPAM block, whatever the
/// prefix: `…/assignment/ipv4/block/10.0.0.0-26` (or `ipv6`). The etcd datastore
/// names each block's source by its key.
pub(crate) fn is_etcd_block_key(key: &Path) -> bool {
    let mut c = key.components().rev().map(|c| c.as_os_str().to_str());
    let (Some(Some(seg)), Some(Some("block")), Some(Some(family)), Some(Some("assignment"))) =
        (c.next(), c.next(), c.next(), c.next())
    else {
        return false;
    };
    !seg.is_empty() && matches!(family, "ipv4" | "ipv6")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::{load, Affinity, Severity};
    use ipam::store::{Expect, Key, Write};
    use ipam::{Allocator, AssignRequest, Design};

    /// One IPv4 pool of `cidr` cut into /26 blocks.
    fn pool(cidr: &str) -> String {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pods}}\n\
             spec: {{cidr: {cidr}, blockSize: 26}}\n"
        )
    }

    /// A datastore file `cluster.yaml` holding `yaml`, in a fresh directory.
    fn datastore(yaml: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.yaml");
        std::fs::write(&path, yaml).unwrap();
        (dir, path)
    }

    /// An allocator over the store beside `path`, as `bgpd-ipam` runs one.
    fn allocator(path: &Path) -> Allocator<FileStore> {
        Allocator::new(FileStore::open(path).unwrap(), Design::load(path).unwrap())
    }

    fn request(node: &str, handle: &str) -> AssignRequest {
        AssignRequest { node: node.into(), handle: handle.into(), num_v4: 1, ..AssignRequest::default() }
    }

    fn blocks_of(path: &Path, node: &str) -> Vec<String> {
        let (m, problems) = load(path).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        m.blocks_for_node(node).iter().map(|b| b.cidr.to_string()).collect()
    }

    #[tokio::test]
    async fn store_blocks_join_the_model_and_leave_when_released() {
        let (_dir, path) = datastore(&pool("10.244.0.0/16"));
        assert!(read_beside(&path).unwrap().is_none(), "no store yet: no source");
        let alloc = allocator(&path);
        let a = alloc.auto_assign(&request("node-1", "pod-a")).await.unwrap();
        let b = alloc.auto_assign(&request("node-2", "pod-b")).await.unwrap();
        assert_ne!(a[0].block, b[0].block);
        assert_eq!(blocks_of(&path, "node-1"), [a[0].block.to_string()]);
        assert_eq!(blocks_of(&path, "node-2"), [b[0].block.to_string()]);
        let (m, _) = load(&path).unwrap();
        let block = &m.ipam_blocks[&block_name(&a[0].block)];
        assert_eq!(block.affinity, Some(Affinity::Host("node-1".into())));
        assert!(block.borrowed.is_empty());

        // A release in progress (the affinity marked pendingDeletion): withdrawn.
        alloc.release_handle("pod-a").await.unwrap();
        let store = FileStore::open(&path).unwrap();
        let key = Key::Affinity { node: "node-1".into(), cidr: a[0].block };
        let aff = futures::executor::block_on(store.get(&key)).unwrap().unwrap();
        let marking = BlockAffinity { node: "node-1".into(), cidr: a[0].block, state: AffinityState::PendingDeletion };
        let w = Write::put(Expect::Revision(aff.revision), Object::Affinity(marking));
        futures::executor::block_on(store.commit(vec![w])).unwrap();
        let (m, _) = load(&path).unwrap();
        assert!(m.ipam_blocks[&block_name(&a[0].block)].deleted);
        assert!(blocks_of(&path, "node-1").is_empty());

        // Released: gone from the model; node-2's block stays.
        assert_eq!(alloc.release_empty_blocks(Some("node-1")).await.unwrap(), [a[0].block]);
        let (m, _) = load(&path).unwrap();
        assert!(!m.ipam_blocks.contains_key(&block_name(&a[0].block)));
        assert_eq!(blocks_of(&path, "node-2"), [b[0].block.to_string()]);
    }

    #[tokio::test]
    async fn borrowed_address_is_the_borrowing_nodes() {
        // One block in the pool: node-1 claims it, node-2 can only borrow from it.
        let (_dir, path) = datastore(&pool("10.244.0.0/26"));
        let alloc = allocator(&path);
        alloc.auto_assign(&request("node-1", "pod-a")).await.unwrap();
        let b = alloc.auto_assign(&request("node-2", "pod-b")).await.unwrap();
        assert!(b[0].borrowed, "{b:?}");
        let (m, problems) = load(&path).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(blocks_of(&path, "node-1"), ["10.244.0.0/26"]);
        assert!(blocks_of(&path, "node-2").is_empty());
        let borrowed: Vec<_> = m.borrowed_by_node("node-2").map(|(blk, a)| (blk.name.clone(), a.clone())).collect();
        assert_eq!(borrowed.len(), 1, "{borrowed:?}");
        assert_eq!(borrowed[0].0, "10-244-0-0-26");
        assert_eq!((borrowed[0].1.ip, borrowed[0].1.handle.as_deref()), (b[0].ip, Some("pod-b")));
        assert_eq!(m.borrowed_by_node("node-1").count(), 0, "node-1's own pod is not borrowed");
    }

    #[tokio::test]
    async fn floating_ips_recorded_on_a_handle_join_the_model() {
        let (_dir, path) = datastore(&pool("10.244.0.0/16"));
        let alloc = allocator(&path);
        let a = alloc.auto_assign(&request("node-1", "pod-a")).await.unwrap();
        alloc.auto_assign(&request("node-2", "pod-b")).await.unwrap();
        let (m, _) = load(&path).unwrap();
        assert!(m.ipam_handles.is_empty(), "a handle without floating IPs is no document");
        let floating: std::net::IpAddr = "10.244.200.1".parse().unwrap();
        alloc.record_floating_ips("pod-a", "node-1", &[floating], &[a[0].ip]).await.unwrap();
        let (m, problems) = load(&path).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        let got: Vec<_> =
            m.floating_ips_for_node("node-1").map(|(h, f)| (h.handle_id.clone(), f.ip, f.target)).collect();
        assert_eq!(got, [("pod-a".to_string(), floating, a[0].ip)]);
        assert_eq!(m.floating_ips_for_node("node-2").count(), 0);
        // The handle released: the floating IP is gone with it.
        alloc.release_handle("pod-a").await.unwrap();
        let (m, _) = load(&path).unwrap();
        assert_eq!(m.floating_ips_for_node("node-1").count(), 0);
    }

    #[tokio::test]
    async fn a_block_the_yaml_defines_too_is_the_yamls() {
        let (_dir, path) = datastore(&pool("10.244.0.0/16"));
        let alloc = allocator(&path);
        let a = alloc.auto_assign(&request("node-1", "pod-a")).await.unwrap();
        let cidr = a[0].block;
        let yaml_block = |affinity: &str| {
            format!(
                "---\napiVersion: crd.projectcalico.org/v1\nkind: IPAMBlock\nmetadata: {{name: by-hand}}\n\
                 spec: {{cidr: {cidr}, affinity: '{affinity}'}}\n"
            )
        };
        // They agree: one block (the YAML's), no problem.
        std::fs::write(&path, pool("10.244.0.0/16") + &yaml_block("host:node-1")).unwrap();
        let (m, problems) = load(&path).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(m.ipam_blocks.keys().collect::<Vec<_>>(), ["by-hand"]);
        // They differ: the YAML's, and a warning naming both.
        std::fs::write(&path, pool("10.244.0.0/16") + &yaml_block("host:node-9")).unwrap();
        let (m, problems) = load(&path).unwrap();
        assert_eq!(m.ipam_blocks.keys().collect::<Vec<_>>(), ["by-hand"]);
        assert_eq!(m.blocks_for_node("node-9").len(), 1);
        assert!(m.blocks_for_node("node-1").is_empty());
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].severity, Severity::Warning);
        let text = problems[0].to_string();
        assert!(text.contains(&block_name(&cidr)) && text.contains("\"by-hand\""), "{text}");
    }

    #[tokio::test]
    async fn directory_datastore_reads_the_snapshot_not_as_yaml() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pools.yaml"), pool("10.244.0.0/16")).unwrap();
        // Compacting after every commit: the state lives in ipam-state.json.
        let store = FileStore::open(dir.path()).unwrap().with_compact_after(1);
        let alloc = Allocator::new(store, Design::load(dir.path()).unwrap());
        let a = alloc.auto_assign(&request("node-1", "pod-a")).await.unwrap();
        assert!(dir.path().join(STATE_FILE).exists());
        assert_eq!(blocks_of(dir.path(), "node-1"), [a[0].block.to_string()]);
    }

    /// A stored block or handle that breaks a rule is reported as a YAML one would
    /// be: by kind, name and field, at the document of the store it was read as.
    #[test]
    fn faults_of_stored_objects_name_their_field_and_place() {
        use bgpd_model::calico::{AllocationAttribute, FloatingIp, ATTR_NODE};
        let mut bad = AllocationBlock::new("10.0.0.0/30".parse().unwrap(), None, false);
        bad.affinity = Some("n1".into());
        // A fifth slot in a /30, held by node b's pod: outside the block.
        let mut long = AllocationBlock::new("10.0.1.0/30".parse().unwrap(), Some("a"), false);
        long.allocations.push(Some(0));
        long.attributes.push(AllocationAttribute {
            handle_id: Some("h".into()),
            secondary: [(ATTR_NODE.to_string(), "b".to_string())].into(),
        });
        let entry = |ip: &str, target: &str| FloatingIp {
            ip: ip.parse().unwrap(),
            target: target.parse().unwrap(),
            node: "a".into(),
        };
        let handle = IpamHandle {
            handle_id: "k8s.c1".into(),
            floating_ips: vec![entry("192.0.2.1", "fd00::1"), entry("192.0.2.2", "10.0.1.1")],
            ..IpamHandle::default()
        };
        let store = Path::new("/s/ipam-state.json");
        let ipam = IpamObjects::of_store(store, vec![bad, long], &[], vec![handle]);
        let (m, problems) = crate::datastore::parse_input(&[], &ipam).unwrap();
        let got: Vec<_> = problems
            .iter()
            .map(|p| {
                let name = p.object.as_ref().and_then(|o| o.name.clone()).unwrap_or_default();
                (p.severity, name, p.field.as_str(), p.location.document)
            })
            .collect();
        assert_eq!(
            got,
            [
                (Severity::Warning, "k8s.c1".to_string(), "spec.floatingIPs[0].target", 3),
                (Severity::Error, "10-0-0-0-30".to_string(), "spec.affinity", 1),
                (Severity::Warning, "10-0-1-0-30".to_string(), "spec.allocations[4]", 2),
            ],
            "{problems:#?}"
        );
        assert!(problems.iter().all(|p| p.location.file == store));
        assert_eq!(problems[2].reason, "ordinal 4 is outside the block 10.0.1.0/30");
        assert_eq!(
            m.ipam_blocks.keys().collect::<Vec<_>>(),
            ["10-0-1-0-30"],
            "the block with a bad affinity is not read"
        );
        assert_eq!(m.floating_ips_for_node("a").map(|(_, f)| f.ip.to_string()).collect::<Vec<_>>(), ["192.0.2.2"]);
    }

    #[test]
    fn store_files_and_block_names() {
        for f in
            ["ipam-state.json", "ipam-state.json.tmp", "ipam-state.lock", "ipam-journal.0.log", "ipam-journal.42.log"]
        {
            assert!(is_store_file(OsStr::new(f)), "{f}");
        }
        for f in ["cluster.yaml", "ipam-journal..log", "ipam-journal.x.log", "ipam-state.yaml", "state.json"] {
            assert!(!is_store_file(OsStr::new(f)), "{f}");
        }
        assert_eq!(block_name(&"10.244.1.0/26".parse().unwrap()), "10-244-1-0-26");
        assert_eq!(block_name(&"fd00:244::/122".parse().unwrap()), "fd00-244---122");
        for k in ["/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26", "/p/assignment/ipv6/block/fd00::-122"] {
            assert!(is_etcd_block_key(Path::new(k)), "{k}");
        }
        for k in ["/calico/bgpd/ipamblocks/10-0-0-0-26", "/p/assignment/ipv5/block/x", "/p/assignment/ipv4/blocks/x"] {
            assert!(!is_etcd_block_key(Path::new(k)), "{k}");
        }
    }
}

//! The IPAM state that `bgpd-ipam` (or Calico) keeps in etcd, in Calico's etcdv3
//! layout under a prefix (`/calico/ipam/v2/` by default; `ipam::store::etcd`):
//!
//! * `assignment/ipv4/block/10.0.0.0-26` (and `ipv6`): a block, JSON;
//! * `host/NODE/ipv4/block/10.0.0.0-26`: a node's affinity to the block;
//! * `handle/ID`: a handle, with its floating IPs.
//!
//! Values are decoded with the model's types (`bgpd_model::calico`) and handed on
//! typed, as the file datastore hands on its IPAM file store's
//! ([`IpamObjects`]): each block named by its key (a block the operator's keys
//! define too is theirs), and each handle with floating IPs. A block whose affinity
//! is `pendingDeletion` reads as `deleted: true`. Other keys under the prefix
//! (Calico's `config`) are not read.

use std::collections::{BTreeMap, BTreeSet};

use bgpd_model::calico::{AffinityState, AllocationBlock, IpamHandle};
use ipnet::IpNet;
use serde::Deserialize;
use tracing::warn;

use crate::datastore::ipam_store::{self, IpamObjects, StoredBlock, StoredHandle};
use crate::datastore::Location;

/// A block value: the `ipam` crate's block, plus Calico's `deleted` flag, which
/// Calico sets on a block it is releasing (`bgpd-ipam` marks the affinity instead).
#[derive(Clone, Debug, Deserialize)]
pub(super) struct BlockValue {
    #[serde(flatten)]
    block: AllocationBlock,
    #[serde(default)]
    deleted: bool,
}

/// An affinity value: only its state is read (node and block are in the key, which
/// is all Calico's own affinity values hold besides the state).
#[derive(Clone, Copy, Debug, Deserialize)]
struct AffinityValue {
    state: AffinityState,
}

/// One decoded value of an IPAM key.
#[derive(Clone, Debug)]
pub(super) enum Value {
    Block(Box<BlockValue>),
    Affinity { node: String, cidr: IpNet, state: AffinityState },
    Handle(IpamHandle),
}

/// The IPAM keys read so far: the accepted value per key, and the notes about
/// rejected ones.
#[derive(Default)]
pub(super) struct IpamEntries {
    prefix: String,
    values: BTreeMap<String, Value>,
    notes: BTreeMap<String, String>,
}

impl IpamEntries {
    /// No keys yet, for the IPAM prefix `prefix` (ends with `/`).
    pub(super) fn new(prefix: &str) -> IpamEntries {
        IpamEntries { prefix: prefix.to_string(), ..IpamEntries::default() }
    }

    /// Whether `key` is an IPAM block, affinity or handle key (read here rather
    /// than as a YAML object).
    pub(super) fn owns(&self, key: &str) -> bool {
        key.strip_prefix(&self.prefix)
            .is_some_and(|rest| ["assignment/", "host/", "handle/"].iter().any(|p| rest.starts_with(p)))
    }

    /// Starts a full read: the values read so far, to keep for keys whose new value
    /// is bad.
    pub(super) fn begin_resync(&mut self) -> BTreeMap<String, Value> {
        self.notes.clear();
        std::mem::take(&mut self.values)
    }

    /// Takes `value` for `key` (one [`IpamEntries::owns`]) if it decodes; otherwise
    /// keeps the previous value (from `old` during a resync) and notes why.
    pub(super) fn put(&mut self, key: String, value: &[u8], old: Option<&BTreeMap<String, Value>>) {
        match self.decode(&key, value) {
            Ok(v) => {
                self.notes.remove(&key);
                self.values.insert(key, v);
            }
            Err(reason) => {
                let kept = old.unwrap_or(&self.values).get(&key).cloned();
                let what = if kept.is_some() { "its previous value is kept" } else { "ignored" };
                warn!("etcd key {key}: {reason}; {what}");
                self.notes.insert(key.clone(), format!("etcd key {key}: {reason}; {what}"));
                match kept {
                    Some(v) => {
                        self.values.insert(key, v);
                    }
                    None => {
                        self.values.remove(&key);
                    }
                }
            }
        }
    }

    /// Forgets `key`: a deleted block is withdrawn.
    pub(super) fn delete(&mut self, key: &str) {
        self.values.remove(key);
        self.notes.remove(key);
    }

    /// The notes about rejected values, in key order.
    pub(super) fn notes(&self) -> impl Iterator<Item = &String> {
        self.notes.values()
    }

    /// The blocks and the handles with floating IPs, each named by its key, in key
    /// order.
    pub(super) fn objects(&self) -> IpamObjects {
        let releasing: BTreeSet<(String, IpNet)> = self
            .values
            .values()
            .filter_map(|v| match v {
                Value::Affinity { node, cidr, state: AffinityState::PendingDeletion } => Some((node.clone(), *cidr)),
                _ => None,
            })
            .collect();
        let at = |key: &String| Location { file: key.into(), document: 1, item: None };
        let mut out = IpamObjects::default();
        for (key, v) in &self.values {
            match v {
                Value::Block(b) => out.blocks.push(StoredBlock {
                    location: at(key),
                    block: b.block.clone(),
                    deleted: b.deleted || ipam_store::is_releasing(&b.block, &releasing),
                }),
                Value::Handle(h) if !h.floating_ips.is_empty() => {
                    out.handles.push(StoredHandle { location: at(key), handle: h.clone() })
                }
                Value::Handle(_) | Value::Affinity { .. } => {}
            }
        }
        out
    }

    fn decode(&self, key: &str, value: &[u8]) -> Result<Value, String> {
        let rest = key.strip_prefix(&self.prefix).unwrap_or(key);
        let json = |e: serde_json::Error| format!("not a value of Calico's etcd IPAM layout ({e})");
        if rest.starts_with("assignment/") {
            let b: BlockValue = serde_json::from_slice(value).map_err(json)?;
            // The key names the block: a value for another CIDR is someone's mistake.
            let named = key.ends_with(&format!("/{}", cidr_segment(&b.block.cidr)));
            if !named || !ipam_store::is_etcd_block_key(std::path::Path::new(key)) {
                return Err(format!("the block's cidr {} does not match its key", b.block.cidr));
            }
            Ok(Value::Block(Box::new(b)))
        } else if let Some(host) = rest.strip_prefix("host/") {
            let (node, cidr) = affinity_key(host).ok_or("not an affinity key (host/NODE/ipv4/block/CIDR)")?;
            let a: AffinityValue = serde_json::from_slice(value).map_err(json)?;
            Ok(Value::Affinity { node, cidr, state: a.state })
        } else {
            Ok(Value::Handle(serde_json::from_slice(value).map_err(json)?))
        }
    }
}

/// `10.0.0.0/26` → `10.0.0.0-26`, as Calico writes CIDRs in keys
/// (`ipam::store::etcd`).
fn cidr_segment(cidr: &IpNet) -> String {
    format!("{}-{}", cidr.addr(), cidr.prefix_len())
}

/// `NODE/ipv4/block/10.0.0.0-26` → (NODE, 10.0.0.0/26).
fn affinity_key(rest: &str) -> Option<(String, IpNet)> {
    let mut parts = rest.split('/');
    let (node, family, block, seg) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || node.is_empty() || !matches!(family, "ipv4" | "ipv6") || block != "block" {
        return None;
    }
    let (addr, len) = seg.rsplit_once('-')?;
    let cidr: IpNet = format!("{addr}/{len}").parse().ok()?;
    Some((node.to_string(), cidr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::parse_input;
    use ipam::block::{AllocationAttribute, BlockAffinity, FloatingIp, ATTR_NODE};

    const P: &str = "/calico/ipam/v2/";

    fn block_value(cidr: &str, node: &str) -> Vec<u8> {
        serde_json::to_vec(&AllocationBlock::new(cidr.parse().unwrap(), Some(node), false)).unwrap()
    }

    #[test]
    fn keys_of_the_layout_are_owned_and_others_are_not() {
        let e = IpamEntries::new(P);
        for k in ["assignment/ipv4/block/10.0.0.0-26", "host/n1/ipv6/block/fd00---122", "handle/k8s.c1"] {
            assert!(e.owns(&format!("{P}{k}")), "{k}");
        }
        for k in ["/calico/ipam/v2/config", "/calico/bgpd/assignment/x", "/calico/ipam/v2assignment/"] {
            assert!(!e.owns(k), "{k}");
        }
        assert_eq!(affinity_key("n1/ipv4/block/10.0.0.0-26"), Some(("n1".into(), "10.0.0.0/26".parse().unwrap())));
        assert_eq!(affinity_key("n1/ipv6/block/fd00::-122"), Some(("n1".into(), "fd00::/122".parse().unwrap())));
        for bad in ["n1/ipv4/block", "/ipv4/block/10.0.0.0-26", "n1/ipv4/blocks/10.0.0.0-26", "n1/ipv4/block/x-26"] {
            assert_eq!(affinity_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn blocks_are_handed_on_typed_and_a_releasing_affinity_deletes_them() {
        let mut e = IpamEntries::new(P);
        let key = format!("{P}assignment/ipv4/block/10.244.0.0-26");
        let mut b = AllocationBlock::new("10.244.0.0/26".parse().unwrap(), Some("n1"), false);
        let attr = AllocationAttribute {
            handle_id: Some("h2".into()),
            secondary: [(ATTR_NODE.to_string(), "n2".to_string())].into(),
        };
        b.allocate(1, attr, |_| true);
        e.put(key.clone(), &serde_json::to_vec(&b).unwrap(), None);
        let o = e.objects();
        assert_eq!(o.blocks.len(), 1);
        assert_eq!(o.blocks[0].location.file, std::path::Path::new(&key));
        assert_eq!((&o.blocks[0].block, o.blocks[0].deleted), (&b, false));
        let (m, problems) = parse_input(&[], &o).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(m.blocks_for_node("n1").len(), 1);
        assert_eq!(m.borrowed_by_node("n2").count(), 1);

        let aff = |state| BlockAffinity { node: "n1".into(), cidr: b.cidr, state };
        let akey = format!("{P}host/n1/ipv4/block/10.244.0.0-26");
        e.put(akey.clone(), &serde_json::to_vec(&aff(AffinityState::Confirmed)).unwrap(), None);
        assert_eq!(e.objects().blocks.len(), 1, "an affinity is no block");
        assert!(!e.objects().blocks[0].deleted);
        e.put(akey.clone(), &serde_json::to_vec(&aff(AffinityState::PendingDeletion)).unwrap(), None);
        assert!(e.objects().blocks[0].deleted);
        // Calico's own affinity value holds only the state (and `deleted`).
        e.put(akey, br#"{"state":"confirmed","deleted":"false"}"#, None);
        assert!(!e.objects().blocks[0].deleted);
        e.delete(&key);
        assert_eq!(e.objects(), IpamObjects::default());
    }

    #[test]
    fn calicos_deleted_flag_is_read() {
        let mut e = IpamEntries::new(P);
        let mut v: serde_json::Value = serde_json::from_slice(&block_value("10.0.0.0/26", "n1")).unwrap();
        v["deleted"] = true.into();
        e.put(format!("{P}assignment/ipv4/block/10.0.0.0-26"), v.to_string().as_bytes(), None);
        let (m, _) = parse_input(&[], &e.objects()).unwrap();
        assert!(m.ipam_blocks["10-0-0-0-26"].deleted);
    }

    #[test]
    fn handles_with_floating_ips_only() {
        let mut e = IpamEntries::new(P);
        let mut h = IpamHandle { handle_id: "k8s.c1".into(), ..IpamHandle::default() };
        e.put(format!("{P}handle/k8s.c1"), &serde_json::to_vec(&h).unwrap(), None);
        assert!(e.objects().handles.is_empty(), "routing has no use for a handle without floating IPs");
        h.floating_ips = vec![FloatingIp {
            ip: "10.9.0.1".parse().unwrap(),
            target: "10.0.0.5".parse().unwrap(),
            node: "n1".into(),
        }];
        e.put(format!("{P}handle/k8s.c1"), &serde_json::to_vec(&h).unwrap(), None);
        let (m, problems) = parse_input(&[], &e.objects()).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(
            m.floating_ips_for_node("n1").map(|(h, f)| (h.handle_id.as_str(), f.ip)).collect::<Vec<_>>(),
            [("k8s.c1", "10.9.0.1".parse().unwrap())]
        );
    }

    #[test]
    fn a_bad_value_keeps_the_previous_one_and_is_noted() {
        let mut e = IpamEntries::new(P);
        let key = format!("{P}assignment/ipv4/block/10.0.0.0-26");
        e.put(key.clone(), &block_value("10.0.0.0/26", "n1"), None);
        e.put(key.clone(), b"{not json", None);
        assert_eq!(e.objects().blocks.len(), 1);
        assert!(e.notes().next().unwrap().contains("previous value is kept"));
        // A value whose CIDR is not its key's.
        e.put(format!("{P}assignment/ipv4/block/10.0.1.0-26"), &block_value("10.0.2.0/26", "n1"), None);
        assert!(e.notes().any(|n| n.contains("does not match its key")), "{:?}", e.notes().collect::<Vec<_>>());
        // A resync keeps the previous value of a key that went bad meanwhile; the
        // notes are those of the values read again.
        let old = e.begin_resync();
        e.put(key.clone(), b"[]", Some(&old));
        assert_eq!(e.objects().blocks.len(), 1);
        assert_eq!(e.notes().count(), 1);
        // A good value clears the note.
        e.put(key, &block_value("10.0.0.0/26", "n2"), None);
        assert_eq!(e.notes().count(), 0);
        let (m, _) = parse_input(&[], &e.objects()).unwrap();
        assert_eq!(m.blocks_for_node("n2").len(), 1);
    }
}

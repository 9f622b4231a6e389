//! Which IPAM wrote a stored object: bgpd-ipam's own, or Calico's.
//!
//! bgpd-ipam and Calico's IPAM cannot share a store (`docs/ipam.md`, "One IPAM
//! per store"): bgpd-ipam does not keep every field Calico's IPAM relies on, so
//! a block it rewrote could make Calico hand out an address twice. The etcd
//! and Kubernetes stores therefore judge every object they read, and refuse
//! one that Calico's IPAM wrote ([`StoreError::Calico`]) before anything can
//! be decided from it, let alone written back.
//!
//! The verdict rests on fields only Calico's IPAM writes ([`calico_sign`]).
//! Calico's Go types serialise `deleted` and `sequenceNumberForAllocation`
//! on every block, with no `omitempty` (libcalico-go's `AllocationBlockSpec`
//! and its etcd model `AllocationBlock`), and a store Calico's IPAM uses holds
//! at least one block, so the signs cannot all be missing. Every object
//! bgpd-ipam writes also carries the marker `bgpd.io/ipam-owner: bgpd-ipam`
//! ([`OWNER_KEY`], [`OWNER`]: a label on Kubernetes, a field of the JSON value
//! on etcd, which Calico's decoder ignores), so an operator can list what is
//! not bgpd-ipam's. An unmarked object without a sign is one bgpd-ipam wrote
//! before the marker existed: accepted, and marked when next written.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::{Scope, Store, StoreError};

/// The label (Kubernetes) or JSON field (etcd) that marks an object bgpd-ipam wrote.
pub const OWNER_KEY: &str = "bgpd.io/ipam-owner";
/// The value of [`OWNER_KEY`].
pub const OWNER: &str = "bgpd-ipam";
/// Where `docs/ipam.md` says why, and what to do.
pub const DOCS: &str = "docs/ipam.md#one-ipam-per-store";

/// The three kinds of IPAM object, named as Calico's CRDs name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// `IPAMBlock`.
    Block,
    /// `BlockAffinity`.
    Affinity,
    /// `IPAMHandle`.
    Handle,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Block => "IPAMBlock",
            ObjectKind::Affinity => "BlockAffinity",
            ObjectKind::Handle => "IPAMHandle",
        })
    }
}

/// An object Calico's IPAM wrote, and the sign that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalicoObject {
    /// Its kind.
    pub kind: ObjectKind,
    /// Its name: the Kubernetes object name, or the etcd key.
    pub name: String,
    /// What gave it away, e.g. "it has sequenceNumberForAllocation".
    pub sign: String,
}

impl fmt::Display for CalicoObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} was written by Calico's IPAM ({}); bgpd-ipam and Calico's IPAM cannot share a store: see {DOCS}",
            self.kind, self.name, self.sign
        )
    }
}

/// Fields of an IPAMBlock spec (or etcd block value) only Calico's IPAM writes.
const CALICO_BLOCK_FIELDS: &[&str] = &["sequenceNumberForAllocation", "deleted", "affinityClaimTime", "hostAffinity"];
/// Fields of a block's allocation attribute only Calico's IPAM writes.
const CALICO_ATTRIBUTE_FIELDS: &[&str] = &["releasedAt", "alternateOwnerAttrs", "alternate"];
/// Labels Calico's IPAM puts on every BlockAffinity it writes (libcalico-go's
/// `EnsureBlockAffinityLabels`).
const CALICO_AFFINITY_LABELS: &[&str] =
    &["projectcalico.org/hostname-hash", "projectcalico.org/affinity-type", "projectcalico.org/ip-version"];
/// Fields of a BlockAffinity spec only Calico's IPAM writes. (`deleted` is
/// also the v1 CRD's required field, which bgpd-ipam writes as `"false"` on
/// Kubernetes: the Kubernetes store takes its own value out before judging.)
const CALICO_AFFINITY_FIELDS: &[&str] = &["deleted", "type"];
/// Fields of an IPAMHandle spec only Calico's IPAM writes.
const CALICO_HANDLE_FIELDS: &[&str] = &["deleted"];
/// Prefixes of the handles Calico's node agent gives its tunnel addresses.
const CALICO_HANDLE_PREFIXES: &[&str] = &[
    "ipip-tunnel-addr-",
    "vxlan-tunnel-addr-",
    "vxlan-v6-tunnel-addr-",
    "wireguard-tunnel-addr-",
    "wireguard-v6-tunnel-addr-",
];

/// The sign that Calico's IPAM wrote an object of `kind` with this `spec`
/// (the Kubernetes object's spec, or the etcd value) and these `labels`, if
/// there is one.
pub fn calico_sign(kind: ObjectKind, spec: &Value, labels: &BTreeMap<String, String>) -> Option<String> {
    let has = |fields: &[&str]| fields.iter().find(|f| spec.get(**f).is_some()).map(|f| format!("it has {f}"));
    match kind {
        ObjectKind::Block => has(CALICO_BLOCK_FIELDS).or_else(|| {
            let attrs = spec.get("attributes").and_then(Value::as_array)?;
            attrs.iter().find_map(|a| {
                let f = CALICO_ATTRIBUTE_FIELDS.iter().find(|f| a.get(**f).is_some())?;
                Some(format!("an allocation attribute has {f}"))
            })
        }),
        ObjectKind::Affinity => CALICO_AFFINITY_LABELS
            .iter()
            .find(|l| labels.contains_key(**l))
            .map(|l| format!("it has the label {l}"))
            .or_else(|| has(CALICO_AFFINITY_FIELDS)),
        ObjectKind::Handle => has(CALICO_HANDLE_FIELDS).or_else(|| {
            let id = spec.get("handleID").and_then(Value::as_str)?;
            let prefix = CALICO_HANDLE_PREFIXES.iter().find(|p| id.starts_with(**p))?;
            Some(format!("its handle {id:?} is the {prefix}NODE handle of Calico's node agent"))
        }),
    }
}

/// Takes bgpd-ipam's marker out of an etcd value before it is decoded.
pub fn take_marker(value: &mut Value) {
    if let Some(m) = value.as_object_mut() {
        m.remove(OWNER_KEY);
    }
}

/// Refuses a store Calico's IPAM uses: one read of every block, each judged
/// as it is decoded ([`StoreError::Calico`] for the first of Calico's). A
/// store Calico's IPAM uses holds at least one block of its own, since its
/// every address lives in one.
pub async fn refuse_shared<S: Store>(store: &S) -> Result<(), StoreError> {
    store.list(&Scope::Blocks).await.map(drop)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn no_labels() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// A block as libcalico-go's `AllocationBlockSpec` serialises it (every
    /// field without `omitempty` present) is Calico's; bgpd-ipam's is not.
    #[test]
    fn calicos_block_has_its_sequence_numbers() {
        let calico = json!({"cidr": "10.244.1.0/26", "affinity": "host:n1", "strictAffinity": false,
            "allocations": [0, null], "unallocated": [1], "attributes": [{"handle_id": "k8s-pod-network.c1"}],
            "sequenceNumber": 3, "sequenceNumberForAllocation": {"0": 2}, "deleted": false});
        assert_eq!(
            calico_sign(ObjectKind::Block, &calico, &no_labels()).as_deref(),
            Some("it has sequenceNumberForAllocation")
        );
        let ours = json!({"cidr": "10.244.1.0/26", "affinity": "host:n1", "strictAffinity": false,
            "allocations": [0, null], "unallocated": [1], "attributes": [{"handle_id": "podnet.c1.eth0"}],
            "sequenceNumber": 3});
        assert_eq!(calico_sign(ObjectKind::Block, &ours, &no_labels()), None);
        let released = json!({"attributes": [{"handle_id": "x", "releasedAt": "2026-01-01T00:00:00Z"}]});
        assert_eq!(
            calico_sign(ObjectKind::Block, &released, &no_labels()).as_deref(),
            Some("an allocation attribute has releasedAt")
        );
    }

    #[test]
    fn calicos_affinities_and_handles() {
        let labels: BTreeMap<String, String> = [("projectcalico.org/ip-version".to_string(), "4".to_string())].into();
        let spec = json!({"node": "n1", "cidr": "10.244.1.0/26", "state": "confirmed"});
        assert_eq!(
            calico_sign(ObjectKind::Affinity, &spec, &labels).as_deref(),
            Some("it has the label projectcalico.org/ip-version")
        );
        assert_eq!(calico_sign(ObjectKind::Affinity, &spec, &no_labels()), None);
        // Calico's etcd value of an affinity.
        let etcd = json!({"state": "confirmed", "deleted": false});
        assert_eq!(calico_sign(ObjectKind::Affinity, &etcd, &no_labels()).as_deref(), Some("it has deleted"));
        let tunnel = json!({"handleID": "ipip-tunnel-addr-n1", "block": {"10.244.1.0/26": 1}});
        assert!(calico_sign(ObjectKind::Handle, &tunnel, &no_labels()).unwrap().contains("ipip-tunnel-addr-"));
        let ours = json!({"handleID": "podnet.c1.eth0", "block": {"10.244.1.0/26": 1}});
        assert_eq!(calico_sign(ObjectKind::Handle, &ours, &no_labels()), None);
    }

    #[test]
    fn the_refusal_names_object_sign_and_docs() {
        let o = CalicoObject {
            kind: ObjectKind::Block,
            name: "10-244-1-0-26".into(),
            sign: "it has sequenceNumberForAllocation".into(),
        };
        assert_eq!(
            o.to_string(),
            "IPAMBlock 10-244-1-0-26 was written by Calico's IPAM (it has sequenceNumberForAllocation); \
             bgpd-ipam and Calico's IPAM cannot share a store: see docs/ipam.md#one-ipam-per-store"
        );
    }
}

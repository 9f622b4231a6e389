//! `IPAMBlock` (`crd.projectcalico.org/v1`): a block cut from an IP pool, with
//! the state of each of its addresses, in Calico's field names. Stored by
//! `ipam`'s stores and changed by its allocator through the methods here (an
//! inherent method must live with its type); read by bgpd for what it
//! advertises: the block of the node it is affine to ([`Affinity`]), and the
//! addresses other nodes borrowed from it.
//!
//! Validated here only: [`AllocationBlock::validate`] (what the allocator
//! relies on, refusals as [`InvalidBlock`] naming the field), and the one
//! affinity rule ([`Affinity`]) that both programs read `spec.affinity` by.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{addr_from, addr_value, net_base, null_as_default, quoted, IpFamily};

/// Key of the `secondary` attribute holding the pod's namespace.
pub const ATTR_NAMESPACE: &str = "namespace";
/// Key of the `secondary` attribute holding the pod's name.
pub const ATTR_POD: &str = "pod";
/// Key of the `secondary` attribute holding the node name.
pub const ATTR_NODE: &str = "node";

/// Per-allocation attributes (Calico `AllocationAttribute`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationAttribute {
    /// The handle that owns the address (one per pod interface).
    #[serde(rename = "handle_id", default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    /// Namespace, pod, node. (Calico's Go client writes `null` for none.)
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub secondary: BTreeMap<String, String>,
}

/// An allocation block: a CIDR cut from a pool, with per-address state
/// (Calico `IPAMBlock` spec).
///
/// Invariants (checked by [`AllocationBlock::validate`], which the allocator
/// applies to every block it reads from a store): the CIDR is a block (no host
/// bits, a Calico block size); `allocations` has one slot per address;
/// `unallocated` lists exactly the empty slots, each once; every slot refers to
/// an existing attribute; the affinity is `host:NODE` or `virtual:NAME`; the
/// sequence number can still be incremented. [`AllocationBlock::check`] also
/// requires every attribute to be referenced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationBlock {
    /// The block's CIDR.
    pub cidr: IpNet,
    /// `host:NODE` when affine to a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// Copied from the IPAM configuration when the block was claimed.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Per ordinal: index into `attributes`, or `null` when free.
    pub allocations: Vec<Option<u32>>,
    /// Free ordinals, in the order they will be handed out.
    pub unallocated: Vec<u32>,
    /// Attributes shared by the allocations that refer to them (always
    /// written: the CRD requires it; `null`, as Calico's Go client may write
    /// it to etcd, reads as none).
    #[serde(default, deserialize_with = "null_as_default")]
    pub attributes: Vec<AllocationAttribute>,
    /// Incremented on every change (Calico `sequenceNumber`).
    #[serde(default)]
    pub sequence_number: u64,
}

/// Calico's `host:` affinity prefix.
pub fn host_affinity(node: &str) -> String {
    format!("host:{node}")
}

impl AllocationBlock {
    /// An empty block, affine to `node` if given.
    pub fn new(cidr: IpNet, node: Option<&str>, strict_affinity: bool) -> AllocationBlock {
        let n = block_len(&cidr);
        AllocationBlock {
            cidr,
            affinity: node.map(host_affinity),
            strict_affinity,
            allocations: vec![None; n as usize],
            unallocated: (0..n).collect(),
            attributes: Vec::new(),
            sequence_number: 0,
        }
    }

    /// The node the block is affine to, if any.
    pub fn node(&self) -> Option<&str> {
        self.affinity.as_deref().and_then(|a| a.strip_prefix("host:"))
    }

    /// The address at `ordinal`.
    pub fn addr(&self, ordinal: u32) -> Option<IpAddr> {
        addr_from(IpFamily::of_net(&self.cidr), net_base(&self.cidr).checked_add(ordinal as u128)?)
    }

    /// The ordinal of `ip`, if the block contains it.
    pub fn ordinal(&self, ip: IpAddr) -> Option<u32> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        u32::try_from(addr_value(ip) - net_base(&self.cidr)).ok()
    }

    /// Number of addresses in use (of a valid block; never underflows).
    pub fn used(&self) -> usize {
        self.allocations.len().saturating_sub(self.unallocated.len())
    }

    /// Whether no address is in use.
    pub fn is_empty(&self) -> bool {
        self.unallocated.len() == self.allocations.len()
    }

    /// The handle owning `ip`, if allocated.
    pub fn handle_of(&self, ip: IpAddr) -> Option<&str> {
        let ord = self.ordinal(ip)?;
        let attr = (*self.allocations.get(ord as usize)?)?;
        self.attributes.get(attr as usize)?.handle_id.as_deref()
    }

    /// Allocates up to `n` free addresses for which `usable` holds, all with one
    /// attribute. Returns the addresses allocated (possibly fewer than `n`).
    pub fn allocate(&mut self, n: usize, attr: AllocationAttribute, usable: impl Fn(IpAddr) -> bool) -> Vec<IpAddr> {
        let mut taken = Vec::new();
        let mut keep = Vec::with_capacity(self.unallocated.len());
        for &ord in &self.unallocated {
            // Only ordinals with an empty slot (always so in a valid block).
            let empty_slot = matches!(self.allocations.get(ord as usize), Some(None));
            if taken.len() < n && empty_slot {
                if let Some(ip) = self.addr(ord).filter(|ip| usable(*ip)) {
                    taken.push((ord, ip));
                    continue;
                }
            }
            keep.push(ord);
        }
        if taken.is_empty() {
            return Vec::new();
        }
        self.unallocated = keep;
        let idx = self.attributes.len() as u32;
        self.attributes.push(attr);
        for (ord, _) in &taken {
            if let Some(slot) = self.allocations.get_mut(*ord as usize) {
                *slot = Some(idx);
            }
        }
        self.sequence_number = self.sequence_number.saturating_add(1);
        taken.into_iter().map(|(_, ip)| ip).collect()
    }

    /// Allocates one specific address. Returns false if it is in use or not in the block.
    pub fn allocate_ip(&mut self, ip: IpAddr, attr: AllocationAttribute) -> bool {
        let Some(ord) = self.ordinal(ip) else {
            return false;
        };
        let Some(pos) = self.unallocated.iter().position(|&o| o == ord) else {
            return false;
        };
        let idx = self.attributes.len() as u32;
        let Some(slot @ None) = self.allocations.get_mut(ord as usize) else {
            return false;
        };
        *slot = Some(idx);
        self.unallocated.remove(pos);
        self.attributes.push(attr);
        self.sequence_number = self.sequence_number.saturating_add(1);
        true
    }

    /// Frees every address whose handle satisfies `pred`; returns the freed
    /// addresses with their handles. Freed ordinals go to the back of the free
    /// list, so a released address is reused last (as in Calico).
    pub fn release_where(&mut self, pred: impl Fn(Option<&str>) -> bool) -> Vec<(IpAddr, String)> {
        let mut freed = Vec::new();
        for ord in 0..self.allocations.len() {
            let Some(idx) = self.allocations[ord] else {
                continue;
            };
            let handle = self.attributes.get(idx as usize).and_then(|a| a.handle_id.as_deref());
            if pred(handle) {
                let h = handle.unwrap_or_default().to_string();
                self.allocations[ord] = None;
                self.unallocated.push(ord as u32);
                if let Some(ip) = self.addr(ord as u32) {
                    freed.push((ip, h));
                }
            }
        }
        if !freed.is_empty() {
            self.compact_attributes();
            self.sequence_number = self.sequence_number.saturating_add(1);
        }
        freed
    }

    /// Frees specific addresses; returns those that were allocated, with handles.
    pub fn release_ips(&mut self, ips: &[IpAddr]) -> Vec<(IpAddr, String)> {
        let mut freed = Vec::new();
        for ip in ips {
            let Some(ord) = self.ordinal(*ip) else {
                continue;
            };
            if let Some(idx) = self.allocations.get_mut(ord as usize).and_then(Option::take) {
                let h = self.attributes.get(idx as usize).and_then(|a| a.handle_id.clone()).unwrap_or_default();
                self.unallocated.push(ord);
                freed.push((*ip, h));
            }
        }
        if !freed.is_empty() {
            self.compact_attributes();
            self.sequence_number = self.sequence_number.saturating_add(1);
        }
        freed
    }

    /// Drops attributes no allocation refers to, renumbering the rest.
    fn compact_attributes(&mut self) {
        let mut used = vec![false; self.attributes.len()];
        for idx in self.allocations.iter().flatten() {
            if let Some(u) = used.get_mut(*idx as usize) {
                *u = true;
            }
        }
        let mut remap = vec![0u32; self.attributes.len()];
        let mut next = 0u32;
        for (i, u) in used.iter().enumerate() {
            if *u {
                remap[i] = next;
                next += 1;
            }
        }
        let mut i = 0;
        self.attributes.retain(|_| {
            let keep = used[i];
            i += 1;
            keep
        });
        for idx in self.allocations.iter_mut().flatten() {
            if let Some(new) = remap.get(*idx as usize) {
                *idx = *new;
            }
        }
    }

    /// Counts allocations per handle.
    pub fn handle_counts(&self) -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        for idx in self.allocations.iter().flatten() {
            let h = self.attributes.get(*idx as usize).and_then(|a| a.handle_id.clone()).unwrap_or_default();
            *counts.entry(h).or_insert(0) += 1;
        }
        counts
    }

    /// Allocated addresses with their attributes.
    pub fn allocated(&self) -> impl Iterator<Item = (IpAddr, &AllocationAttribute)> + '_ {
        self.allocations.iter().enumerate().filter_map(move |(ord, idx)| {
            let attr = self.attributes.get((*idx)? as usize)?;
            Some((self.addr(ord as u32)?, attr))
        })
    }

    /// Its allocations as routing reads them (for [`borrowed`]): each allocated
    /// ordinal whose attribute names a node (`secondary.node`), in ordinal order.
    pub fn allocations_with_node(&self) -> impl Iterator<Item = Allocated<'_>> + '_ {
        self.allocations.iter().enumerate().filter_map(move |(ordinal, index)| {
            let attribute = self.attributes.get((*index)? as usize)?;
            let node = attribute.secondary.get(ATTR_NODE)?;
            Some(Allocated { ordinal, node, handle: attribute.handle_id.as_deref() })
        })
    }

    /// Checks every invariant the allocator relies on (see the type's docs);
    /// returns the first problem found, naming the block. A block read from a
    /// store that fails this is not used: the store holds something bgpd-ipam
    /// did not write, and acting on it could hand an address out twice.
    pub fn validate(&self) -> Result<(), InvalidBlock> {
        let invalid = |problem| InvalidBlock { cidr: self.cidr, problem };
        let family = IpFamily::of_net(&self.cidr);
        let prefix = self.cidr.prefix_len();
        if prefix < family.min_block_size() || prefix > family.max_prefix() {
            return Err(invalid(BlockProblem::NotABlockSize {
                prefix,
                family,
                min: family.min_block_size(),
                max: family.max_prefix(),
            }));
        }
        if self.cidr.trunc() != self.cidr {
            return Err(invalid(BlockProblem::HostBitsSet { network: self.cidr.trunc() }));
        }
        if let Some(a) = &self.affinity {
            if a.parse::<Affinity>().is_err() {
                return Err(invalid(BlockProblem::BadAffinity(a.clone())));
            }
        }
        if self.sequence_number == u64::MAX {
            return Err(invalid(BlockProblem::SequenceNumberExhausted));
        }
        // The prefix is at most 12 bits short of the address, so this is small.
        let n = block_len(&self.cidr) as usize;
        if self.allocations.len() != n {
            return Err(invalid(BlockProblem::AllocationSlots { found: self.allocations.len(), expected: n }));
        }
        let mut free = vec![false; n];
        for &o in &self.unallocated {
            let slot = free
                .get_mut(o as usize)
                .ok_or(invalid(BlockProblem::FreeOrdinalOutOfRange { ordinal: o, slots: n }))?;
            if *slot {
                return Err(invalid(BlockProblem::FreeOrdinalTwice(o)));
            }
            *slot = true;
        }
        for (ord, (a, is_free)) in self.allocations.iter().zip(&free).enumerate() {
            let ordinal = ord as u32;
            match (a, is_free) {
                (Some(_), true) => return Err(invalid(BlockProblem::AllocatedAndFree(ordinal))),
                (None, false) => return Err(invalid(BlockProblem::Leaked(ordinal))),
                (Some(index), false) if *index as usize >= self.attributes.len() => {
                    return Err(invalid(BlockProblem::AttributeOutOfRange {
                        ordinal,
                        index: *index,
                        attributes: self.attributes.len(),
                    }))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// [`AllocationBlock::validate`], and also no attribute left unreferenced
    /// (harmless to the allocator, which drops such attributes on the next
    /// release, but never left by it).
    pub fn check(&self) -> Result<(), InvalidBlock> {
        self.validate()?;
        let mut referenced = vec![false; self.attributes.len()];
        for idx in self.allocations.iter().flatten() {
            if let Some(r) = referenced.get_mut(*idx as usize) {
                *r = true;
            }
        }
        match referenced.iter().position(|r| !r) {
            Some(i) => Err(InvalidBlock { cidr: self.cidr, problem: BlockProblem::UnreferencedAttribute(i) }),
            None => Ok(()),
        }
    }
}

/// `spec.affinity` of an IPAM block, typed: who owns the block.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affinity {
    /// `host:NAME`: affine to that node, which advertises it.
    Host(String),
    /// `virtual:NAME`: owned by a virtual entity (Calico's LoadBalancer IPAM), not a node.
    Virtual(String),
}

impl std::str::FromStr for Affinity {
    type Err = String;

    /// The one rule for an affinity, bgpd's and the allocator's: `host:NODE` or
    /// `virtual:NAME`, the name one that can be part of a store key
    /// ([`check_name`]). `Err` is the reason.
    fn from_str(s: &str) -> Result<Affinity, String> {
        let (make, name): (fn(String) -> Affinity, &str) = if let Some(n) = s.strip_prefix("host:") {
            (Affinity::Host, n)
        } else if let Some(n) = s.strip_prefix("virtual:") {
            (Affinity::Virtual, n)
        } else {
            return Err(format!("{} is not an affinity (expected host:NODE or virtual:NAME)", quoted(s)));
        };
        check_name(name).map_err(|e| format!("{}: {e}", quoted(s)))?;
        Ok(make(name.to_string()))
    }
}

/// An address of a block allocated to a pod on another node than the block's
/// (Calico's borrowed address, when `strictAffinity` is off): that node
/// advertises it as a /32 (/128), the block's owner the block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BorrowedAddress {
    /// The address.
    pub ip: IpAddr,
    /// `secondary.node` of its allocation attribute: the node of the pod.
    pub node: String,
    /// `handle_id` of its allocation attribute (one per pod interface), if any.
    pub handle: Option<String>,
}

/// An allocation as routing reads it: its ordinal in `allocations`, and the
/// node and handle of the attribute it refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocated<'a> {
    /// Index in `allocations`: the address's offset in the block.
    pub ordinal: usize,
    /// `secondary.node` of its attribute.
    pub node: &'a str,
    /// `handle_id` of its attribute.
    pub handle: Option<&'a str>,
}

/// The borrowed addresses among `allocated` (in their order), of a block of
/// `cidr` with `affinity`: those whose node is not the block's host (every one
/// when the block is affine to no node, or to a virtual owner). Stops at the
/// first allocation outside the block, whose ordinal comes back second: what
/// follows it cannot be trusted to be in place.
pub fn borrowed<'a>(
    cidr: &IpNet,
    affinity: Option<&Affinity>,
    allocated: impl IntoIterator<Item = Allocated<'a>>,
) -> (Vec<BorrowedAddress>, Option<usize>) {
    let host = match affinity {
        Some(Affinity::Host(h)) => Some(h.as_str()),
        _ => None,
    };
    let mut out = Vec::new();
    for a in allocated {
        if Some(a.node) == host {
            continue;
        }
        let ip = u128::try_from(a.ordinal)
            .ok()
            .and_then(|n| net_base(cidr).checked_add(n))
            .and_then(|v| addr_from(IpFamily::of_net(cidr), v))
            .filter(|ip| cidr.contains(ip));
        let Some(ip) = ip else { return (out, Some(a.ordinal)) };
        out.push(BorrowedAddress { ip, node: a.node.to_string(), handle: a.handle.map(str::to_string) });
    }
    (out, None)
}

/// Whether `s` can name a resource (and be part of a store key): 1 to 253
/// letters, digits, `.`, `_` and `-`. `Err` is the reason.
pub fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the name is empty".into());
    }
    if s.len() > 253 {
        return Err(format!("{} is longer than 253 characters", quoted(s)));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("{} contains {c:?}; names may hold letters, digits, '.', '_' and '-'", quoted(s)));
    }
    Ok(())
}

/// A block read from a store that breaks an invariant the allocator relies on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("IPAM block {cidr}: {problem}")]
pub struct InvalidBlock {
    /// The block (its `cidr` field, or the key it was read under).
    pub cidr: IpNet,
    /// What is wrong.
    pub problem: BlockProblem,
}

/// What is wrong with a block: each kind of malformation the allocator
/// refuses, with the field it is in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockProblem {
    /// `cidr` has a prefix length no pool can have as its `blockSize`.
    #[error("cidr: /{prefix} is not a block size ({family} blocks are /{min} to /{max})")]
    NotABlockSize {
        /// The prefix length.
        prefix: u8,
        /// The CIDR's family.
        family: IpFamily,
        /// Widest block.
        min: u8,
        /// Narrowest block.
        max: u8,
    },
    /// `cidr` has host bits set.
    #[error("cidr: host bits set (the block would be {network})")]
    HostBitsSet {
        /// The CIDR with its host bits cleared.
        network: IpNet,
    },
    /// `cidr` lies in a pool but is not of that pool's `blockSize`.
    #[error("cidr: not of the blockSize /{block_size} of IPPool {pool:?} that contains it")]
    NotThePoolsBlockSize {
        /// The pool.
        pool: String,
        /// Its `blockSize`.
        block_size: u8,
    },
    /// The block was stored under another block's key.
    #[error("cidr: the block is stored under this key but says it is {stored}")]
    StoredUnderOtherKey {
        /// The `cidr` field of the stored block.
        stored: IpNet,
    },
    /// `allocations` does not have one slot per address.
    #[error("allocations: {found} slots, the block has {expected} addresses")]
    AllocationSlots {
        /// Slots present.
        found: usize,
        /// Addresses in the block.
        expected: usize,
    },
    /// `unallocated` names an ordinal outside the block.
    #[error("unallocated: ordinal {ordinal} is outside the block's {slots} addresses")]
    FreeOrdinalOutOfRange {
        /// The ordinal.
        ordinal: u32,
        /// Addresses in the block.
        slots: usize,
    },
    /// `unallocated` names an ordinal twice.
    #[error("unallocated: ordinal {0} is listed twice")]
    FreeOrdinalTwice(u32),
    /// An ordinal is both allocated and listed as free.
    #[error("allocations: ordinal {0} is allocated and also listed in unallocated")]
    AllocatedAndFree(u32),
    /// An ordinal is neither allocated nor listed as free.
    #[error("unallocated: ordinal {0} is neither allocated nor listed (leaked)")]
    Leaked(u32),
    /// An allocation refers to an attribute that does not exist.
    #[error("allocations: ordinal {ordinal} refers to attribute {index}, but there are {attributes} attributes")]
    AttributeOutOfRange {
        /// The ordinal.
        ordinal: u32,
        /// The attribute index it holds.
        index: u32,
        /// Attributes present.
        attributes: usize,
    },
    /// An attribute no allocation refers to (only [`AllocationBlock::check`]).
    #[error("attributes: attribute {0} is referenced by no allocation")]
    UnreferencedAttribute(usize),
    /// `sequenceNumber` cannot be incremented on the next change.
    #[error("sequenceNumber: {}, the largest value, cannot be incremented", u64::MAX)]
    SequenceNumberExhausted,
    /// `affinity` is not `host:NODE` or `virtual:NAME`.
    #[error("affinity: {0:?} is not \"host:NODE\" or \"virtual:NAME\"")]
    BadAffinity(String),
}

/// Number of addresses in a block CIDR (blocks are at most 2^12 addresses).
pub fn block_len(cidr: &IpNet) -> u32 {
    let bits = cidr.max_prefix_len() - cidr.prefix_len();
    1u32 << bits.min(31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calico::{AffinityState, BlockAffinity, IpamHandle};
    use proptest::prelude::*;

    fn attr(h: &str) -> AllocationAttribute {
        AllocationAttribute { handle_id: Some(h.into()), secondary: BTreeMap::new() }
    }

    #[test]
    fn test_allocate_release_keeps_invariants() {
        let mut b = AllocationBlock::new("10.0.0.0/29".parse().unwrap(), Some("n1"), false);
        let a = b.allocate(3, attr("h1"), |_| true);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0], "10.0.0.0".parse::<IpAddr>().unwrap());
        let c = b.allocate(2, attr("h2"), |ip| ip != "10.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(c, vec!["10.0.0.4".parse::<IpAddr>().unwrap(), "10.0.0.5".parse().unwrap()]);
        b.check().unwrap();
        assert_eq!(b.handle_of("10.0.0.4".parse().unwrap()), Some("h2"));
        let freed = b.release_where(|h| h == Some("h1"));
        assert_eq!(freed.len(), 3);
        b.check().unwrap();
        assert_eq!(b.attributes.len(), 1);
        assert_eq!(b.handle_of("10.0.0.5".parse().unwrap()), Some("h2"));
        assert!(b.allocate_ip("10.0.0.7".parse().unwrap(), attr("h3")));
        assert!(!b.allocate_ip("10.0.0.7".parse().unwrap(), attr("h3")));
        b.check().unwrap();
        assert_eq!(b.used(), 3);
        assert_eq!(b.handle_counts().get("h2"), Some(&2));
    }

    fn arb_garbage_block() -> impl Strategy<Value = AllocationBlock> {
        let cidrs = ["10.0.0.0/30", "10.0.0.8/29", "10.0.0.1/30", "fd00::/126", "10.0.0.0/8", "::/0"];
        let affinities = [None, Some("host:n1"), Some("host:"), Some("n1"), Some("virtual:lb"), Some("host:a/b")];
        (
            prop::sample::select(cidrs.to_vec()),
            prop::collection::vec(prop::option::of(0u32..4), 0..10),
            prop::collection::vec(0u32..12, 0..10),
            0usize..4,
            prop::sample::select(affinities.to_vec()),
            prop::sample::select(vec![0u64, 7, u64::MAX]),
        )
            .prop_map(|(cidr, allocations, unallocated, n_attrs, affinity, sequence_number)| AllocationBlock {
                cidr: cidr.parse().unwrap(),
                affinity: affinity.map(str::to_string),
                strict_affinity: false,
                allocations,
                unallocated,
                attributes: (0..n_attrs).map(|i| attr(&format!("h{i}"))).collect(),
                sequence_number,
            })
    }

    /// Allocations and releases in any order, from an empty block.
    fn arb_valid_block() -> impl Strategy<Value = AllocationBlock> {
        let op = (0u8..4, 0usize..5, 0u32..8);
        (prop::sample::select(vec!["10.0.0.0/29", "fd00::/125"]), prop::collection::vec(op, 0..12)).prop_map(
            |(cidr, ops)| {
                let mut b = AllocationBlock::new(cidr.parse().unwrap(), Some("n1"), false);
                for (kind, n, ord) in ops {
                    let h = format!("h{}", ord % 3);
                    let ip = b.addr(ord).unwrap();
                    match kind {
                        0 => drop(b.allocate(n, attr(&h), |_| true)),
                        1 => drop(b.allocate_ip(ip, attr(&h))),
                        2 => drop(b.release_where(|x| x == Some(h.as_str()))),
                        _ => drop(b.release_ips(&[ip])),
                    }
                }
                b
            },
        )
    }

    fn exercise(b: &mut AllocationBlock, n: usize) {
        let _ = (b.used(), b.is_empty(), b.handle_counts(), b.allocated().count(), b.validate(), b.check());
        let ip = b.addr(1);
        b.allocate(n, attr("x"), |_| true);
        if let Some(ip) = ip {
            b.allocate_ip(ip, attr("y"));
            b.release_ips(&[ip]);
        }
        b.release_where(|h| h == Some("h0"));
        let _ = (b.used(), b.is_empty(), b.handle_counts(), b.allocated().count());
    }

    proptest! {
        #[test]
        fn prop_block_operations_never_panic_on_garbage(mut b in arb_garbage_block(), n in 0usize..5) {
            exercise(&mut b, n);
        }

        #[test]
        fn prop_operations_keep_a_valid_block_valid(mut b in arb_valid_block(), n in 0usize..5) {
            prop_assert_eq!(b.check(), Ok(()));
            exercise(&mut b, n);
            prop_assert_eq!(b.check(), Ok(()));
        }
    }

    #[test]
    fn affinity_syntax() {
        assert_eq!("host:node-1".parse::<Affinity>().unwrap(), Affinity::Host("node-1".into()));
        assert_eq!("virtual:lb".parse::<Affinity>().unwrap(), Affinity::Virtual("lb".into()));
        for bad in ["node-1", "host:", "host:a b", "hostnode-1", "Host:node-1", "pool:x"] {
            assert!(bad.parse::<Affinity>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            "host:a/b".parse::<Affinity>().unwrap_err(),
            "\"host:a/b\": \"a/b\" contains '/'; names may hold letters, digits, '.', '_' and '-'"
        );
        assert!(check_name("tor-1.rack_a").is_ok());
        assert!(check_name(&"a".repeat(254)).is_err());
    }

    #[test]
    fn a_block_breaking_an_invariant_is_refused_naming_the_field() {
        let mut b = AllocationBlock::new("10.0.0.0/30".parse().unwrap(), Some("n1"), false);
        b.affinity = Some("n1".into());
        assert_eq!(
            b.validate().unwrap_err().to_string(),
            "IPAM block 10.0.0.0/30: affinity: \"n1\" is not \"host:NODE\" or \"virtual:NAME\""
        );
        b.affinity = Some("virtual:lb".into());
        b.validate().unwrap();
        b.unallocated.push(1);
        assert_eq!(b.validate().unwrap_err().problem, BlockProblem::FreeOrdinalTwice(1));
        let mut b = AllocationBlock::new("10.0.0.1/30".parse().unwrap(), None, false);
        let network = "10.0.0.0/30".parse().unwrap();
        assert_eq!(b.validate().unwrap_err().problem, BlockProblem::HostBitsSet { network });
        b.cidr = "10.0.0.0/8".parse().unwrap();
        assert!(b.validate().unwrap_err().to_string().contains("cidr: /8 is not a block size"));
    }

    #[test]
    fn borrowed_addresses_are_other_nodes_and_stop_outside_the_block() {
        let cidr: IpNet = "fd00::/126".parse().unwrap();
        let host = Affinity::Host("a".into());
        let at = |ordinal, node| Allocated { ordinal, node, handle: Some("h") };
        let (got, outside) = borrowed(&cidr, Some(&host), [at(0, "a"), at(2, "b"), at(4, "b"), at(3, "b")]);
        assert_eq!(
            got,
            [BorrowedAddress { ip: "fd00::2".parse().unwrap(), node: "b".into(), handle: Some("h".into()) }]
        );
        assert_eq!(outside, Some(4), "ordinal 4 is outside a /126; ordinal 3 after it is not read");
        let mut b = AllocationBlock::new(cidr, Some("a"), false);
        let on = |node: &str| AllocationAttribute {
            handle_id: Some("h".into()),
            secondary: [(ATTR_NODE.to_string(), node.to_string())].into(),
        };
        b.allocate(1, on("a"), |_| true);
        b.allocate(1, AllocationAttribute::default(), |_| true);
        b.allocate(1, on("b"), |_| true);
        let got: Vec<(usize, &str)> = b.allocations_with_node().map(|a| (a.ordinal, a.node)).collect();
        assert_eq!(got, [(0, "a"), (2, "b")], "an allocation whose attribute names no node is none");
        let (got, _) = borrowed(&cidr, Some(&host), b.allocations_with_node());
        assert_eq!(got.iter().map(|a| a.ip.to_string()).collect::<Vec<_>>(), ["fd00::2"]);
        let virtual_owner = Affinity::Virtual("lb".into());
        let (got, outside) = borrowed(&cidr, Some(&virtual_owner), [at(1, "a")]);
        assert_eq!((got.len(), outside), (1, None), "a virtual owner advertises nothing: every pod's is borrowed");
    }

    #[test]
    fn test_calico_json_field_names() {
        let b = AllocationBlock::new("fd00::/126".parse().unwrap(), Some("n1"), true);
        let v = serde_json::to_value(&b).unwrap();
        for k in ["cidr", "affinity", "strictAffinity", "allocations", "unallocated", "attributes", "sequenceNumber"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["affinity"], "host:n1");
        let back: AllocationBlock = serde_json::from_value(v).unwrap();
        assert_eq!(back, b);
    }

    /// What Calico's Go client writes (nil slices and maps as `null`, fields
    /// bgpd-ipam does not keep) still reads.
    #[test]
    fn test_calico_written_objects_decode() {
        let block: AllocationBlock = serde_json::from_value(serde_json::json!({
            "cidr": "10.0.0.0/30", "affinity": "host:n1", "strictAffinity": false, "deleted": false,
            "allocations": [0, null, null, null], "unallocated": [1, 2, 3], "sequenceNumber": 4,
            "sequenceNumberForAllocation": {"0": 3}, "affinityClaimTime": "2026-11-30T04:33:20Z",
            "attributes": [{"handle_id": "h", "secondary": null, "alternateOwnerAttrs": {}}],
        }))
        .unwrap();
        assert_eq!(
            block.attributes,
            vec![AllocationAttribute { handle_id: Some("h".into()), secondary: BTreeMap::new() }]
        );
        block.check().unwrap();
        let empty: AllocationBlock = serde_json::from_value(serde_json::json!({
            "cidr": "10.0.0.0/30", "strictAffinity": false, "allocations": [null, null, null, null],
            "unallocated": [0, 1, 2, 3], "attributes": null,
        }))
        .unwrap();
        empty.check().unwrap();
        for deleted in [serde_json::json!("false"), serde_json::json!(false)] {
            let a: BlockAffinity = serde_json::from_value(serde_json::json!({
                "cidr": "10.0.0.0/30", "node": "n1", "state": "confirmed", "deleted": deleted, "type": "host",
            }))
            .unwrap();
            assert_eq!(a.state, AffinityState::Confirmed);
        }
        let h: IpamHandle =
            serde_json::from_value(serde_json::json!({"handleID": "h", "block": null, "deleted": false})).unwrap();
        assert!(h.block.is_empty());
    }
}

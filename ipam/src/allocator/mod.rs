//! The allocator: Calico's block IPAM operations over any [`Store`].
//!
//! Assignment order for a pod on node N (as Calico's `AutoAssign`):
//! 1. free addresses in blocks affine to N, in the eligible pools;
//! 2. a new block claimed for N from an eligible pool (unless
//!    `autoAllocateBlocks` is off or N already has `maxBlocksPerHost` blocks);
//! 3. a free address borrowed from another node's block (unless `strictAffinity`);
//! 4. else [`IpamError::PoolsExhausted`], naming the pools tried.
//!
//! Each step reads objects with their revisions and commits conditional
//! writes; a conflict means another allocator got there first, and the step is
//! retried from fresh reads after a randomised backoff. An address is only
//! ever handed out by a successful conditional write of its block, so no
//! address is handed out twice.
//!
//! A block is claimed in three writes (affinity `pending`, block created,
//! affinity `confirmed`), and released in two (affinity `pendingDeletion`,
//! then block and affinity deleted together), so a process that dies between
//! writes leaves a state that the next claim, release or [`Allocator::gc`]
//! completes or undoes.
//!
//! Every block read from the store is validated first
//! ([`AllocationBlock::validate`], and its size against its pool's
//! `blockSize`). A block that fails is never used: assignment skips it (and
//! never claims a block overlapping it), an operation that needs that very
//! block fails with [`IpamError::InvalidBlock`] naming it and the problem, and
//! release and GC leave it and what refers to it untouched, so that nothing is
//! lost before an operator repairs it. [`Stats::invalid_blocks`] counts them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipnet::IpNet;

use crate::block::{
    AffinityState, AllocationAttribute, AllocationBlock, BlockAffinity, BlockProblem, FloatingIp, InvalidBlock,
    IpamHandle, ATTR_NAMESPACE, ATTR_NODE, ATTR_POD,
};
use crate::design::Design;
use crate::model::{AssignmentMode, IpFamily, IpPool};
use crate::store::{Expect, Key, Object, Scope, Store, StoreError, Versioned, Write};

mod assign;
mod floating;
mod release;

/// How many conflicting commits one operation tolerates before giving up.
pub const MAX_CONFLICTS: u32 = 500;

/// Errors of IPAM operations.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// No eligible pool has a free address (after claiming and borrowing).
    #[error("{family} pools exhausted for node {node:?}: tried {}", pools.join(", "))]
    PoolsExhausted {
        /// The family requested.
        family: IpFamily,
        /// The node.
        node: String,
        /// Names of the pools tried.
        pools: Vec<String>,
    },
    /// No pool of the family is eligible for this pod on this node.
    #[error("no enabled {family} pool selects node {node:?}{}", namespace.as_ref().map(|n| format!(" and namespace {n:?}")).unwrap_or_default())]
    NoEligiblePool {
        /// The family requested.
        family: IpFamily,
        /// The node.
        node: String,
        /// The pod's namespace.
        namespace: Option<String>,
    },
    /// A requested pool (by name or CIDR) does not exist.
    #[error("requested {family} pool {pool:?} does not exist")]
    UnknownPool {
        /// The family requested.
        family: IpFamily,
        /// Name or CIDR as requested.
        pool: String,
    },
    /// A requested pool exists but cannot be used.
    #[error("requested pool {pool:?} cannot be used: {reason}")]
    PoolUnusable {
        /// Pool name.
        pool: String,
        /// Why.
        reason: String,
    },
    /// A requested address is in no pool.
    #[error("address {0} is not in any IP pool")]
    AddressNotInPool(IpAddr),
    /// A requested address is in a disabled pool.
    #[error("address {ip} is in disabled pool {pool:?}")]
    AddressInDisabledPool {
        /// The address.
        ip: IpAddr,
        /// The pool.
        pool: String,
    },
    /// A requested address is already assigned.
    #[error("address {ip} is already assigned to handle {handle:?}")]
    AddressInUse {
        /// The address.
        ip: IpAddr,
        /// Its current handle.
        handle: String,
    },
    /// A requested address is reserved by an IPReservation.
    #[error("address {0} is reserved by an IPReservation")]
    AddressReserved(IpAddr),
    /// A floating IP could not be mapped.
    #[error("floating IP {0}: no assigned address of the same family to map it to")]
    FloatingIpWithoutTarget(IpAddr),
    /// A floating IP is another handle's (another pod's) address: advertising
    /// it from this pod's node would take that pod's traffic.
    #[error("floating IP {ip} is the address of handle {handle:?} (another pod); it cannot float to this pod")]
    FloatingIpIsAnotherPodsAddress {
        /// The floating IP.
        ip: IpAddr,
        /// The handle it is assigned to.
        handle: String,
    },
    /// A floating IP (or a requested address) is already a floating IP of
    /// another handle.
    #[error("{ip} is already a floating IP of handle {handle:?}")]
    FloatingIpTaken {
        /// The address.
        ip: IpAddr,
        /// The handle that records it.
        handle: String,
    },
    /// A retried assignment found the handle holding an address the request
    /// does not ask for (the request changed between attempts).
    #[error("handle {handle:?} already holds {ip}, which this request does not ask for")]
    HandleHoldsOther {
        /// The handle.
        handle: String,
        /// The address it holds.
        ip: IpAddr,
    },
    /// The handle does not exist.
    #[error("handle {0:?} not found")]
    HandleNotFound(String),
    /// A block in the store breaks an invariant; it is not used.
    #[error("{0}; the block is not used until it is repaired")]
    InvalidBlock(InvalidBlock),
    /// Too many concurrent writers kept winning.
    #[error("gave up after {0} conflicting writes")]
    TooManyConflicts(u32),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for IpamError {
    fn from(e: StoreError) -> Self {
        IpamError::Store(e)
    }
}

/// What to assign and for whom.
#[derive(Clone, Debug, Default)]
pub struct AssignRequest {
    /// Handle owning the addresses (Calico: `k8s-pod-network.CONTAINERID`).
    pub handle: String,
    /// Node the pod runs on.
    pub node: String,
    /// Pod namespace, for `namespaceSelector` and attributes.
    pub namespace: Option<String>,
    /// Pod name, for attributes.
    pub pod: Option<String>,
    /// How many IPv4 addresses.
    pub num_v4: u32,
    /// How many IPv6 addresses.
    pub num_v6: u32,
    /// IPv4 pools to use (names or CIDRs); empty means every eligible pool.
    pub ipv4_pools: Vec<String>,
    /// IPv6 pools to use (names or CIDRs); empty means every eligible pool.
    pub ipv6_pools: Vec<String>,
    /// Never hand out a block's first address: the CNI plugin uses it as the
    /// pods' gateway (interface plugins such as ptp put it on the host side).
    pub skip_first_address: bool,
    /// The CNI attachment the addresses are for, recorded in each
    /// allocation's attributes (see [`Attachment`]).
    pub attachment: Option<Attachment>,
}

/// Attribute key: the CNI network an address was assigned on.
pub const ATTR_NETWORK: &str = "network";
/// Attribute key: the CNI container ID an address was assigned to.
pub const ATTR_CONTAINER_ID: &str = "containerID";
/// Attribute key: the interface inside the container (`CNI_IFNAME`).
pub const ATTR_IFNAME: &str = "ifname";

/// A CNI attachment: the key under which the CNI specification says a plugin
/// keeps its state (network name, container ID, interface name). Written into
/// every allocation's attributes so that CNI `GC` can tell whose an address
/// is without parsing the handle's name, which cannot be split unambiguously
/// (all three parts may contain dots).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attachment {
    /// Network name (the network configuration's `name`).
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

impl Attachment {
    /// The attachment recorded in an allocation's attributes, if all three
    /// parts are there (allocations made before attachments were recorded
    /// have none).
    pub fn of(attr: &AllocationAttribute) -> Option<Attachment> {
        let get = |k: &str| attr.secondary.get(k).cloned();
        Some(Attachment {
            network: get(ATTR_NETWORK)?,
            container_id: get(ATTR_CONTAINER_ID)?,
            ifname: get(ATTR_IFNAME)?,
        })
    }
}

/// One assigned address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignedIp {
    /// The address.
    pub ip: IpAddr,
    /// Its block.
    pub block: IpNet,
    /// Name of its pool.
    pub pool: String,
    /// Whether it was borrowed from a block affine to another node.
    pub borrowed: bool,
}

/// Outcome of [`Allocator::gc`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blocks left alone because they are invalid (with what is wrong): their
    /// addresses, affinities and handles are not touched.
    pub invalid_blocks: Vec<InvalidBlock>,
    /// Addresses freed because their handle was not live.
    pub released: Vec<IpAddr>,
    /// Handle objects deleted.
    pub handles_deleted: Vec<String>,
    /// Affinities removed (stale pending claims, finished releases).
    pub affinities_deleted: Vec<(String, IpNet)>,
    /// Affinities recreated for blocks that had none.
    pub affinities_repaired: Vec<(String, IpNet)>,
}

/// Counters an operator would graph.
#[derive(Debug, Default)]
pub struct Stats {
    /// Addresses assigned.
    pub assigned: AtomicU64,
    /// Addresses released.
    pub released: AtomicU64,
    /// Addresses assigned from another node's block.
    pub borrowed: AtomicU64,
    /// Blocks claimed.
    pub blocks_claimed: AtomicU64,
    /// Blocks released.
    pub blocks_released: AtomicU64,
    /// Conflicting commits retried.
    pub conflicts: AtomicU64,
    /// Times an invalid block was read and refused (see [`IpamError::InvalidBlock`]).
    pub invalid_blocks: AtomicU64,
}

/// Block IPAM over a store, for one network design.
pub struct Allocator<S> {
    store: S,
    design: Design,
    /// Counters.
    pub stats: Stats,
    /// Per node: the block this allocator last assigned from, tried first
    /// next time so that a node with many blocks is not scanned block by
    /// block on every assignment. Only a hint: the store decides.
    last_block: std::sync::Mutex<BTreeMap<String, IpNet>>,
}

enum Claim {
    Claimed,
    NoFreeBlock,
    Conflict,
}

fn block_of(v: Versioned<Object>) -> Option<Versioned<AllocationBlock>> {
    match v.value {
        Object::Block(b) => Some(Versioned { value: b, revision: v.revision }),
        _ => None,
    }
}

fn affinity_of(v: Versioned<Object>) -> Option<Versioned<BlockAffinity>> {
    match v.value {
        Object::Affinity(a) => Some(Versioned { value: a, revision: v.revision }),
        _ => None,
    }
}

fn handle_of(v: Versioned<Object>) -> Option<Versioned<IpamHandle>> {
    match v.value {
        Object::Handle(h) => Some(Versioned { value: h, revision: v.revision }),
        _ => None,
    }
}

/// A stable hash of a node name, so that nodes start their block search at
/// different places in a pool (fewer claim conflicts).
fn node_hash(node: &str) -> u64 {
    // FNV-1a.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in node.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl<S: Store> Allocator<S> {
    /// An allocator for a design over a store.
    pub fn new(store: S, design: Design) -> Allocator<S> {
        Allocator { store, design, stats: Stats::default(), last_block: std::sync::Mutex::new(BTreeMap::new()) }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The design.
    pub fn design(&self) -> &Design {
        &self.design
    }

    async fn backoff(&self, conflicts: &mut u32) -> Result<(), IpamError> {
        *conflicts += 1;
        self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
        if *conflicts > MAX_CONFLICTS {
            return Err(IpamError::TooManyConflicts(*conflicts));
        }
        let cap_us = 100u64 << (*conflicts).min(6);
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=cap_us))).await;
        Ok(())
    }

    /// Reads the block at `cidr`, validated: [`IpamError::InvalidBlock`] if it
    /// breaks an invariant (see [`Allocator::validate_block`]).
    async fn get_block(&self, cidr: IpNet) -> Result<Option<Versioned<AllocationBlock>>, IpamError> {
        let Some(block) = self.store.get(&Key::Block(cidr)).await?.and_then(block_of) else {
            return Ok(None);
        };
        let checked = if block.value.cidr != cidr {
            Err(InvalidBlock { cidr, problem: BlockProblem::StoredUnderOtherKey { stored: block.value.cidr } })
        } else {
            self.validate_block(&block.value)
        };
        match checked {
            Ok(()) => Ok(Some(block)),
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// Checks a block read from the store: its own invariants, and a size
    /// equal to the `blockSize` of the pool that contains it (Calico never
    /// changes a pool's block size, and [`IpPool::block_of`] relies on it).
    pub fn validate_block(&self, block: &AllocationBlock) -> Result<(), InvalidBlock> {
        block.validate()?;
        if let Some(pool) = self.design.pool_of_block(&block.cidr) {
            if pool.block_size != block.cidr.prefix_len() {
                return Err(InvalidBlock {
                    cidr: block.cidr,
                    problem: BlockProblem::NotThePoolsBlockSize {
                        pool: pool.name.clone(),
                        block_size: pool.block_size,
                    },
                });
            }
        }
        Ok(())
    }

    /// Logs and counts an invalid block; the error to return or skip.
    fn refuse(&self, e: InvalidBlock) -> IpamError {
        self.stats.invalid_blocks.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(block = %e.cidr, problem = %e.problem, "invalid IPAM block in the store: not used");
        IpamError::InvalidBlock(e)
    }

    async fn get_handle(&self, h: &str) -> Result<Option<Versioned<IpamHandle>>, IpamError> {
        Ok(self.store.get(&Key::Handle(h.to_string())).await?.and_then(handle_of))
    }

    async fn get_affinity(&self, node: &str, cidr: IpNet) -> Result<Option<Versioned<BlockAffinity>>, IpamError> {
        let key = Key::Affinity { node: node.to_string(), cidr };
        Ok(self.store.get(&key).await?.and_then(affinity_of))
    }

    async fn affinities(&self, node: Option<&str>) -> Result<Vec<Versioned<BlockAffinity>>, IpamError> {
        Ok(self
            .store
            .list(&Scope::Affinities(node.map(str::to_string)))
            .await?
            .into_iter()
            .filter_map(affinity_of)
            .collect())
    }

    /// Every block in the store: the valid ones, and what is wrong with the others.
    async fn blocks(&self) -> Result<(Vec<Versioned<AllocationBlock>>, Vec<InvalidBlock>), IpamError> {
        let mut valid = Vec::new();
        let mut invalid = Vec::new();
        for block in self.store.list(&Scope::Blocks).await?.into_iter().filter_map(block_of) {
            match self.validate_block(&block.value) {
                Ok(()) => valid.push(block),
                Err(e) => {
                    self.refuse(e.clone());
                    invalid.push(e);
                }
            }
        }
        Ok((valid, invalid))
    }

    /// The pools a request may use for one family.
    pub fn eligible_pools(
        &self,
        family: IpFamily,
        requested: &[String],
        node: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<&IpPool>, IpamError> {
        if !requested.is_empty() {
            // Explicitly requested pools are used whatever their selectors say
            // (as in Calico), but they must exist, match the family and be enabled.
            let mut out = Vec::new();
            for r in requested {
                let pool = self
                    .design
                    .pool(r)
                    .or_else(|| {
                        let net: IpNet = r.parse().ok()?;
                        self.design.pools.iter().find(|p| p.cidr == net)
                    })
                    .ok_or_else(|| IpamError::UnknownPool { family, pool: r.clone() })?;
                if pool.family() != family {
                    return Err(IpamError::PoolUnusable {
                        pool: pool.name.clone(),
                        reason: format!("it is an {} pool, {family} was requested", pool.family()),
                    });
                }
                if !pool.usable_for_workloads() {
                    return Err(IpamError::PoolUnusable {
                        pool: pool.name.clone(),
                        reason: "it is disabled or does not allow Workload use".into(),
                    });
                }
                out.push(pool);
            }
            return Ok(out);
        }
        let node_labels = self.design.node_labels(node);
        let ns_labels = namespace.map(|n| self.design.namespace_labels(n));
        let pools: Vec<&IpPool> = self
            .design
            .pools_of(family)
            .filter(|p| p.usable_for_workloads())
            .filter(|p| p.assignment_mode == AssignmentMode::Automatic)
            .filter(|p| p.node_selector.matches(&node_labels))
            .filter(|p| ns_labels.as_ref().is_none_or(|l| p.namespace_selector.matches(l)))
            .collect();
        if pools.is_empty() {
            return Err(IpamError::NoEligiblePool {
                family,
                node: node.to_string(),
                namespace: namespace.map(str::to_string),
            });
        }
        Ok(pools)
    }

    fn attribute(req: &AssignRequest) -> AllocationAttribute {
        let mut secondary = BTreeMap::new();
        secondary.insert(ATTR_NODE.to_string(), req.node.clone());
        if let Some(ns) = &req.namespace {
            secondary.insert(ATTR_NAMESPACE.to_string(), ns.clone());
        }
        if let Some(pod) = &req.pod {
            secondary.insert(ATTR_POD.to_string(), pod.clone());
        }
        if let Some(a) = &req.attachment {
            secondary.insert(ATTR_NETWORK.to_string(), a.network.clone());
            secondary.insert(ATTR_CONTAINER_ID.to_string(), a.container_id.clone());
            secondary.insert(ATTR_IFNAME.to_string(), a.ifname.clone());
        }
        AllocationAttribute { handle_id: Some(req.handle.clone()), secondary }
    }

    /// Commits a changed block together with the handle's new count for it.
    async fn commit_block_and_handle(
        &self,
        block: AllocationBlock,
        block_rev: u64,
        handle: &str,
        added: u32,
    ) -> Result<(), StoreError> {
        let current = self.store.get(&Key::Handle(handle.to_string())).await?.and_then(handle_of);
        let expect = Expect::from_read(&current);
        let mut h = current
            .map(|v| v.value)
            .unwrap_or_else(|| IpamHandle { handle_id: handle.to_string(), ..IpamHandle::default() });
        *h.block.entry(block.cidr.to_string()).or_insert(0) += added;
        self.store
            .commit(vec![
                Write::put(Expect::Revision(block_rev), Object::Block(block)),
                Write::put(expect, Object::Handle(h)),
            ])
            .await
    }
}

/// Passes a conflict through as `Ok(())` (the caller retries) and any other
/// store error up.
fn conflict_or(e: StoreError) -> Result<(), IpamError> {
    match e {
        StoreError::Conflict(_) => Ok(()),
        other => Err(IpamError::Store(other)),
    }
}

/// Blocks affine to `node` (confirmed affinity, block present and affine to
/// it): the aggregates bgpd advertises for the node's pods.
pub async fn affine_blocks<S: Store>(store: &S, node: &str) -> Result<Vec<IpNet>, StoreError> {
    let mut out = Vec::new();
    for v in store.list(&Scope::Affinities(Some(node.to_string()))).await? {
        let Some(aff) = affinity_of(v) else { continue };
        if aff.value.state != AffinityState::Confirmed {
            continue;
        }
        if let Some(b) = store.get(&Key::Block(aff.value.cidr)).await?.and_then(block_of) {
            if b.value.node() == Some(node) {
                out.push(aff.value.cidr);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every floating IP recorded in the store (bgpd advertises each from its node).
pub async fn floating_ips<S: Store>(store: &S) -> Result<Vec<FloatingIp>, StoreError> {
    let mut out = Vec::new();
    for v in store.list(&Scope::Handles).await? {
        if let Some(h) = handle_of(v) {
            out.extend(h.value.floating_ips);
        }
    }
    Ok(out)
}

/// Checks the store's invariants: each block well-formed, no address in two
/// blocks, handle counts equal to the blocks' allocations. Returns every
/// problem found (empty when consistent).
pub async fn check_consistency<S: Store>(store: &S) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    let blocks: Vec<AllocationBlock> =
        store.list(&Scope::Blocks).await?.into_iter().filter_map(block_of).map(|v| v.value).collect();
    let mut from_blocks: BTreeMap<(String, String), u32> = BTreeMap::new();
    for (i, b) in blocks.iter().enumerate() {
        if let Err(e) = b.check() {
            problems.push(e.to_string());
        }
        for other in &blocks[i + 1..] {
            if b.cidr.contains(&other.cidr) || other.cidr.contains(&b.cidr) {
                problems.push(format!("blocks {} and {} overlap", b.cidr, other.cidr));
            }
        }
        for (h, n) in b.handle_counts() {
            from_blocks.insert((h, b.cidr.to_string()), n);
        }
    }
    let mut from_handles: BTreeMap<(String, String), u32> = BTreeMap::new();
    for v in store.list(&Scope::Handles).await? {
        if let Some(h) = handle_of(v) {
            for (cidr, n) in &h.value.block {
                if *n > 0 {
                    from_handles.insert((h.value.handle_id.clone(), cidr.clone()), *n);
                }
            }
        }
    }
    if from_blocks != from_handles {
        for (k, n) in &from_blocks {
            if from_handles.get(k) != Some(n) {
                problems.push(format!(
                    "handle {:?} has {n} addresses in block {} but its handle records {:?}",
                    k.0,
                    k.1,
                    from_handles.get(k)
                ));
            }
        }
        for (k, n) in &from_handles {
            if !from_blocks.contains_key(k) {
                problems.push(format!("handle {:?} records {n} addresses in block {} that holds none", k.0, k.1));
            }
        }
    }
    Ok(problems)
}

/// Every allocated address with its handle (for tests, `show` and GC tooling).
pub async fn allocated_addresses<S: Store>(store: &S) -> Result<Vec<(IpAddr, String)>, StoreError> {
    let mut out = Vec::new();
    for v in store.list(&Scope::Blocks).await? {
        if let Some(b) = block_of(v) {
            out.extend(b.value.allocated().map(|(ip, a)| (ip, a.handle_id.clone().unwrap_or_default())));
        }
    }
    Ok(out)
}

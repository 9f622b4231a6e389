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
use crate::model::{AssignmentMode, Family, IpPool};
use crate::store::{Expect, Key, Object, Scope, Store, StoreError, Versioned, Write};

/// How many conflicting commits one operation tolerates before giving up.
pub const MAX_CONFLICTS: u32 = 500;

/// Errors of IPAM operations.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// No eligible pool has a free address (after claiming and borrowing).
    #[error("{family} pools exhausted for node {node:?}: tried {}", pools.join(", "))]
    PoolsExhausted {
        /// The family requested.
        family: Family,
        /// The node.
        node: String,
        /// Names of the pools tried.
        pools: Vec<String>,
    },
    /// No pool of the family is eligible for this pod on this node.
    #[error("no enabled {family} pool selects node {node:?}{}", namespace.as_ref().map(|n| format!(" and namespace {n:?}")).unwrap_or_default())]
    NoEligiblePool {
        /// The family requested.
        family: Family,
        /// The node.
        node: String,
        /// The pod's namespace.
        namespace: Option<String>,
    },
    /// A requested pool (by name or CIDR) does not exist.
    #[error("requested {family} pool {pool:?} does not exist")]
    UnknownPool {
        /// The family requested.
        family: Family,
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
        family: Family,
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

    /// Assigns addresses to a pod: `num_v4` IPv4 then `num_v6` IPv6. On
    /// failure nothing stays assigned by this call.
    pub async fn auto_assign(&self, req: &AssignRequest) -> Result<Vec<AssignedIp>, IpamError> {
        let mut out = self.assign_family(req, Family::V4, req.num_v4 as usize).await?;
        match self.assign_family(req, Family::V6, req.num_v6 as usize).await {
            Ok(v6) => out.extend(v6),
            Err(e) => {
                let ips: Vec<IpAddr> = out.iter().map(|a| a.ip).collect();
                self.release_ips(&ips).await?;
                return Err(e);
            }
        }
        Ok(out)
    }

    /// What a CNI ADD does, idempotently: makes the handle hold `num_v4` IPv4
    /// and `num_v6` IPv6 addresses (or exactly `ip_addrs` when given, as
    /// `cni.projectcalico.org/ipAddrs`) and records `floating` on it, then
    /// returns every address it holds (IPv4 first).
    ///
    /// A retry after a crash completes what the earlier attempt left undone:
    /// the family not yet assigned, the requested addresses not yet held, the
    /// floating IPs not yet recorded. The result is complete or an error; on
    /// an error the handle is released (everything it held, whichever attempt
    /// assigned it), so a failed ADD leaves nothing behind.
    pub async fn assign_handle(
        &self,
        req: &AssignRequest,
        ip_addrs: &[IpAddr],
        floating: &[IpAddr],
    ) -> Result<Vec<AssignedIp>, IpamError> {
        let held = self.addresses_of(&req.handle).await?;
        match self.complete_handle(req, ip_addrs, floating, held).await {
            Ok(all) => Ok(all),
            Err(e) => {
                if let Err(release) = self.release_handle(&req.handle).await {
                    tracing::warn!(handle = %req.handle, error = %release, "could not release after a failed assignment");
                }
                Err(e)
            }
        }
    }

    async fn complete_handle(
        &self,
        req: &AssignRequest,
        ip_addrs: &[IpAddr],
        floating: &[IpAddr],
        mut held: Vec<AssignedIp>,
    ) -> Result<Vec<AssignedIp>, IpamError> {
        let other = |ip: IpAddr| IpamError::HandleHoldsOther { handle: req.handle.clone(), ip };
        if ip_addrs.is_empty() {
            for (family, want) in [(Family::V4, req.num_v4 as usize), (Family::V6, req.num_v6 as usize)] {
                let have: Vec<IpAddr> = held.iter().map(|a| a.ip).filter(|ip| Family::of(*ip) == family).collect();
                if let Some(extra) = have.get(want) {
                    return Err(other(*extra));
                }
                let more = self.assign_family(req, family, want - have.len()).await?;
                held.extend(more);
            }
        } else {
            if let Some(extra) = held.iter().find(|a| !ip_addrs.contains(&a.ip)) {
                return Err(other(extra.ip));
            }
            for ip in ip_addrs {
                if !held.iter().any(|a| a.ip == *ip) {
                    held.push(self.assign_ip(*ip, req).await?);
                }
            }
        }
        held.sort_by_key(|a| (Family::of(a.ip), a.ip));
        if !floating.is_empty() {
            let ips: Vec<IpAddr> = held.iter().map(|a| a.ip).collect();
            self.record_floating_ips(&req.handle, &req.node, floating, &ips).await?;
        }
        Ok(held)
    }

    async fn assign_family(&self, req: &AssignRequest, family: Family, n: usize) -> Result<Vec<AssignedIp>, IpamError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let requested = match family {
            Family::V4 => &req.ipv4_pools,
            Family::V6 => &req.ipv6_pools,
        };
        let pools = self.eligible_pools(family, requested, &req.node, req.namespace.as_deref())?;
        let mut got = Vec::new();
        match self.assign_loop(req, family, n, &pools, &mut got).await {
            Ok(()) => Ok(got),
            Err(e) => {
                let ips: Vec<IpAddr> = got.iter().map(|a| a.ip).collect();
                self.release_ips(&ips).await?;
                Err(e)
            }
        }
    }

    async fn assign_loop(
        &self,
        req: &AssignRequest,
        family: Family,
        n: usize,
        pools: &[&IpPool],
        got: &mut Vec<AssignedIp>,
    ) -> Result<(), IpamError> {
        let node = req.node.as_str();
        let pool_of = |cidr: &IpNet| pools.iter().find(|p| p.cidr.contains(cidr)).copied();
        let skip_first = req.skip_first_address;
        let usable =
            |cidr: IpNet| move |ip: IpAddr| !(self.design.is_reserved(ip) || (skip_first && ip == cidr.network()));
        let mut conflicts = 0;
        'retry: while got.len() < n {
            // 1. Blocks affine to this node.
            let mut affs = self.affinities(Some(node)).await?;
            let hint = self.last_block.lock().ok().and_then(|m| m.get(node).copied());
            if let Some(pos) = hint.and_then(|h| affs.iter().position(|a| a.value.cidr == h)) {
                let hinted = affs.remove(pos);
                affs.insert(0, hinted);
            }
            let affs_in_family = affs.iter().filter(|a| Family::of_net(&a.value.cidr) == family).count();
            for aff in &affs {
                let Some(pool) = pool_of(&aff.value.cidr) else {
                    continue;
                };
                if aff.value.state == AffinityState::PendingDeletion {
                    continue;
                }
                let block = match self.get_block(aff.value.cidr).await {
                    Ok(Some(block)) => block,
                    // Not there, or invalid (logged): try the node's other blocks.
                    Ok(None) | Err(IpamError::InvalidBlock(_)) => continue,
                    Err(e) => return Err(e),
                };
                if block.value.node() != Some(node) {
                    continue;
                }
                if aff.value.state == AffinityState::Pending {
                    // A claim that died before confirming: the block is ours.
                    let confirmed = BlockAffinity { state: AffinityState::Confirmed, ..aff.value.clone() };
                    let w = Write::put(Expect::Revision(aff.revision), Object::Affinity(confirmed));
                    if let Err(e) = self.store.commit(vec![w]).await {
                        conflict_or(e)?;
                        self.backoff(&mut conflicts).await?;
                        continue 'retry;
                    }
                }
                if block.value.unallocated.is_empty() {
                    continue;
                }
                let mut b = block.value.clone();
                let ips = b.allocate(n - got.len(), Self::attribute(req), usable(b.cidr));
                if ips.is_empty() {
                    continue;
                }
                match self.commit_block_and_handle(b, block.revision, &req.handle, ips.len() as u32).await {
                    Ok(()) => {
                        self.stats.assigned.fetch_add(ips.len() as u64, Ordering::Relaxed);
                        if let Ok(mut m) = self.last_block.lock() {
                            m.insert(node.to_string(), block.value.cidr);
                        }
                        got.extend(ips.into_iter().map(|ip| AssignedIp {
                            ip,
                            block: block.value.cidr,
                            pool: pool.name.clone(),
                            borrowed: false,
                        }));
                        continue 'retry;
                    }
                    Err(e) => {
                        conflict_or(e)?;
                        self.backoff(&mut conflicts).await?;
                        continue 'retry;
                    }
                }
            }
            // 2. Claim a new block.
            let cfg = self.design.config;
            let under_limit = cfg.max_blocks_per_host.is_none_or(|m| (affs_in_family as u64) < m as u64);
            if cfg.auto_allocate_blocks && under_limit {
                match self.claim_free_block(pools, node).await? {
                    Claim::Claimed => continue 'retry,
                    Claim::Conflict => {
                        self.backoff(&mut conflicts).await?;
                        continue 'retry;
                    }
                    Claim::NoFreeBlock => {}
                }
            }
            // 3. Borrow from another node's block.
            if !cfg.strict_affinity {
                for block in self.blocks().await?.0 {
                    let Some(pool) = pool_of(&block.value.cidr) else {
                        continue;
                    };
                    if block.value.unallocated.is_empty() || block.value.node() == Some(node) {
                        continue;
                    }
                    let mut b = block.value.clone();
                    let ips = b.allocate(n - got.len(), Self::attribute(req), usable(b.cidr));
                    if ips.is_empty() {
                        continue;
                    }
                    match self.commit_block_and_handle(b, block.revision, &req.handle, ips.len() as u32).await {
                        Ok(()) => {
                            let k = ips.len() as u64;
                            self.stats.assigned.fetch_add(k, Ordering::Relaxed);
                            self.stats.borrowed.fetch_add(k, Ordering::Relaxed);
                            got.extend(ips.into_iter().map(|ip| AssignedIp {
                                ip,
                                block: block.value.cidr,
                                pool: pool.name.clone(),
                                borrowed: true,
                            }));
                            continue 'retry;
                        }
                        Err(e) => {
                            conflict_or(e)?;
                            self.backoff(&mut conflicts).await?;
                            continue 'retry;
                        }
                    }
                }
            }
            return Err(IpamError::PoolsExhausted {
                family,
                node: node.to_string(),
                pools: pools.iter().map(|p| p.name.clone()).collect(),
            });
        }
        Ok(())
    }

    /// Finds an unclaimed block in the pools and claims it for `node`.
    async fn claim_free_block(&self, pools: &[&IpPool], node: &str) -> Result<Claim, IpamError> {
        // Every stored block, valid or not, occupies its space: an invalid one
        // is left for an operator, never claimed over.
        let mut existing: BTreeSet<IpNet> = BTreeSet::new();
        // Blocks that are not one of a pool's blocks (other size, host bits):
        // checked for overlap rather than equality.
        let mut odd: Vec<IpNet> = Vec::new();
        for v in self.store.list(&Scope::Blocks).await? {
            let cidr = match v.value.key() {
                Key::Block(c) => c,
                other => {
                    return Err(IpamError::Store(StoreError::Corrupt {
                        location: format!("{other:?}"),
                        reason: "non-block object listed as block".into(),
                    }))
                }
            };
            let regular = cidr.trunc() == cidr
                && self.design.pool_of_block(&cidr).is_some_and(|p| p.block_size == cidr.prefix_len());
            if !regular {
                odd.push(cidr);
            }
            existing.insert(cidr);
        }
        for pool in pools {
            let count = pool.block_count();
            let start = node_hash(node) as u128 % count;
            // Bounded: at most every block of the pool, and at most 2^20 probes.
            for i in 0..count.min(1 << 20) {
                let Some(cidr) = pool.block_at((start + i) % count) else {
                    continue;
                };
                let overlaps_odd = odd.iter().any(|o| o.contains(&cidr) || cidr.contains(o));
                if existing.contains(&cidr) || overlaps_odd || self.fully_reserved(&cidr) {
                    continue;
                }
                return self.claim_block(cidr, node).await;
            }
        }
        Ok(Claim::NoFreeBlock)
    }

    /// Before claiming `cidr` by itself: an invalid block overlapping it (of
    /// another size, or with host bits set) is refused rather than claimed over.
    async fn refuse_overlapping(&self, cidr: IpNet) -> Result<(), IpamError> {
        for block in self.store.list(&Scope::Blocks).await?.into_iter().filter_map(block_of) {
            let other = block.value.cidr;
            if other != cidr && (other.contains(&cidr) || cidr.contains(&other)) {
                if let Err(e) = self.validate_block(&block.value) {
                    return Err(self.refuse(e));
                }
            }
        }
        Ok(())
    }

    fn fully_reserved(&self, cidr: &IpNet) -> bool {
        self.design.reservations.iter().any(|r| r.cidrs.iter().any(|c| c.contains(cidr)))
    }

    /// Claims a specific block for `node`: affinity `pending`, block created,
    /// affinity `confirmed`.
    async fn claim_block(&self, cidr: IpNet, node: &str) -> Result<Claim, IpamError> {
        let existing_aff = self.get_affinity(node, cidr).await?;
        let pending = BlockAffinity { node: node.to_string(), cidr, state: AffinityState::Pending };
        let w = Write::put(Expect::from_read(&existing_aff), Object::Affinity(pending));
        if let Err(e) = self.store.commit(vec![w]).await {
            conflict_or(e)?;
            return Ok(Claim::Conflict);
        }
        let block = AllocationBlock::new(cidr, Some(node), self.design.config.strict_affinity);
        if let Err(e) = self.store.commit(vec![Write::put(Expect::Absent, Object::Block(block))]).await {
            conflict_or(e)?;
            // Someone else created the block first: withdraw our claim.
            if let Some(a) = self.get_affinity(node, cidr).await? {
                if a.value.state == AffinityState::Pending {
                    let del = Write::delete(Key::Affinity { node: node.to_string(), cidr }, a.revision);
                    if let Err(e) = self.store.commit(vec![del]).await {
                        conflict_or(e)?;
                    }
                }
            }
            return Ok(Claim::Conflict);
        }
        self.stats.blocks_claimed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%cidr, node, "claimed block");
        let current = self.get_affinity(node, cidr).await?;
        let confirmed = BlockAffinity { node: node.to_string(), cidr, state: AffinityState::Confirmed };
        let w = Write::put(Expect::from_read(&current), Object::Affinity(confirmed));
        if let Err(e) = self.store.commit(vec![w]).await {
            // The block is ours; step 1 of the next attempt confirms a pending
            // affinity, and GC recreates a missing one.
            conflict_or(e)?;
        }
        Ok(Claim::Claimed)
    }

    /// Assigns one requested address (`cni.projectcalico.org/ipAddrs`). Its
    /// block is claimed for the node if no one holds it yet.
    pub async fn assign_ip(&self, ip: IpAddr, req: &AssignRequest) -> Result<AssignedIp, IpamError> {
        let pool = self.design.pool_containing(ip).ok_or(IpamError::AddressNotInPool(ip))?;
        if pool.disabled {
            return Err(IpamError::AddressInDisabledPool { ip, pool: pool.name.clone() });
        }
        if self.design.is_reserved(ip) {
            return Err(IpamError::AddressReserved(ip));
        }
        let cidr = pool.block_of(ip).ok_or(IpamError::AddressNotInPool(ip))?;
        if req.skip_first_address && ip == cidr.network() {
            return Err(IpamError::AddressReserved(ip));
        }
        // A pod asking for an address that floats to another pod would have
        // that pod's node draw its traffic.
        if let Some(handle) = self.floating_ips_of_others(&req.handle).await?.remove(&ip) {
            return Err(IpamError::FloatingIpTaken { ip, handle });
        }
        let mut conflicts = 0;
        loop {
            let Some(block) = self.get_block(cidr).await? else {
                self.refuse_overlapping(cidr).await?;
                match self.claim_block(cidr, &req.node).await? {
                    Claim::Claimed => {}
                    _ => self.backoff(&mut conflicts).await?,
                }
                continue;
            };
            if let Some(h) = block.value.handle_of(ip) {
                return Err(IpamError::AddressInUse { ip, handle: h.to_string() });
            }
            let mut b = block.value.clone();
            let borrowed = b.node() != Some(req.node.as_str());
            if !b.allocate_ip(ip, Self::attribute(req)) {
                return Err(IpamError::AddressInUse { ip, handle: String::new() });
            }
            match self.commit_block_and_handle(b, block.revision, &req.handle, 1).await {
                Ok(()) => {
                    self.stats.assigned.fetch_add(1, Ordering::Relaxed);
                    return Ok(AssignedIp { ip, block: cidr, pool: pool.name.clone(), borrowed });
                }
                Err(e) => {
                    conflict_or(e)?;
                    self.backoff(&mut conflicts).await?;
                }
            }
        }
    }

    /// Records floating IPs for a handle, each mapped to the handle's first
    /// address of the same family, so that bgpd advertises them from `node`.
    /// Recording what is already recorded writes nothing.
    ///
    /// Refused, so that a pod cannot make its node advertise a `/32` (`/128`)
    /// that draws another pod's traffic: a floating IP that is allocated in a
    /// block to another handle ([`IpamError::FloatingIpIsAnotherPodsAddress`])
    /// or recorded as a floating IP by another handle
    /// ([`IpamError::FloatingIpTaken`]; checked again after the write, so that
    /// of two racing handles at most one keeps it), or that lies in an invalid
    /// block. [`Allocator::assign_ip`] in turn refuses to hand out a recorded
    /// floating IP. A free address of a pool that still hands out pod
    /// addresses could be given to a pod later: keep floating IPs in a pool of
    /// their own (a warning is logged otherwise).
    pub async fn record_floating_ips(
        &self,
        handle: &str,
        node: &str,
        floating: &[IpAddr],
        assigned: &[IpAddr],
    ) -> Result<Vec<FloatingIp>, IpamError> {
        let mut list: Vec<FloatingIp> = Vec::new();
        for f in floating {
            if list.iter().any(|x| x.ip == *f) {
                continue;
            }
            let target = assigned
                .iter()
                .find(|a| Family::of(**a) == Family::of(*f))
                .ok_or(IpamError::FloatingIpWithoutTarget(*f))?;
            list.push(FloatingIp { ip: *f, target: *target, node: node.to_string() });
        }
        self.check_floating_ips(handle, &list).await?;
        let before = self.put_floating_ips(handle, list.clone()).await?;
        // Another handle may have recorded one of them between the check and
        // the write: then neither may keep it, and this one gives it back.
        if let Err(e) = self.check_taken(handle, &list).await {
            self.put_floating_ips(handle, before).await?;
            return Err(e);
        }
        Ok(list)
    }

    /// Refuses floating IPs that are another handle's address or floating IP.
    async fn check_floating_ips(&self, handle: &str, list: &[FloatingIp]) -> Result<(), IpamError> {
        if list.is_empty() {
            return Ok(());
        }
        let (valid, invalid) = self.blocks().await?;
        for f in list {
            if let Some(e) = invalid.iter().find(|e| e.cidr.contains(&f.ip)) {
                return Err(IpamError::InvalidBlock(e.clone()));
            }
            for b in valid.iter().filter(|b| b.value.cidr.contains(&f.ip)) {
                let owner = b.value.ordinal(f.ip).and_then(|o| b.value.allocations.get(o as usize).copied().flatten());
                if let Some(idx) = owner {
                    let owner = b.value.attributes.get(idx as usize).and_then(|a| a.handle_id.as_deref());
                    if owner != Some(handle) {
                        let handle = owner.unwrap_or_default().to_string();
                        return Err(IpamError::FloatingIpIsAnotherPodsAddress { ip: f.ip, handle });
                    }
                }
            }
            if let Some(pool) = self.design.pool_containing(f.ip).filter(|p| p.usable_for_workloads()) {
                tracing::warn!(
                    ip = %f.ip, pool = %pool.name, handle,
                    "floating IP lies in a pool that hands out pod addresses: a pod given it later would lose its traffic"
                );
            }
        }
        self.check_taken(handle, list).await
    }

    async fn check_taken(&self, handle: &str, list: &[FloatingIp]) -> Result<(), IpamError> {
        if list.is_empty() {
            return Ok(());
        }
        let mut others = self.floating_ips_of_others(handle).await?;
        match list.iter().find_map(|f| others.remove(&f.ip).map(|h| (f.ip, h))) {
            Some((ip, handle)) => Err(IpamError::FloatingIpTaken { ip, handle }),
            None => Ok(()),
        }
    }

    /// The floating IPs recorded by handles other than `handle`, with theirs.
    async fn floating_ips_of_others(&self, handle: &str) -> Result<BTreeMap<IpAddr, String>, IpamError> {
        let mut out = BTreeMap::new();
        for v in self.store.list(&Scope::Handles).await? {
            if let Some(h) = handle_of(v).filter(|h| h.value.handle_id != handle) {
                for f in h.value.floating_ips {
                    out.insert(f.ip, h.value.handle_id.clone());
                }
            }
        }
        Ok(out)
    }

    /// Sets a handle's floating IPs (no write when unchanged); returns the
    /// ones it had.
    async fn put_floating_ips(&self, handle: &str, list: Vec<FloatingIp>) -> Result<Vec<FloatingIp>, IpamError> {
        let mut conflicts = 0;
        loop {
            let h = self.get_handle(handle).await?.ok_or_else(|| IpamError::HandleNotFound(handle.to_string()))?;
            if h.value.floating_ips == list {
                return Ok(list);
            }
            let mut v = h.value.clone();
            v.floating_ips = list.clone();
            match self.store.commit(vec![Write::put(Expect::Revision(h.revision), Object::Handle(v))]).await {
                Ok(()) => return Ok(h.value.floating_ips),
                Err(e) => {
                    conflict_or(e)?;
                    self.backoff(&mut conflicts).await?;
                }
            }
        }
    }

    /// The addresses a handle holds, with their blocks and pools.
    pub async fn addresses_of(&self, handle: &str) -> Result<Vec<AssignedIp>, IpamError> {
        let Some(h) = self.get_handle(handle).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for cidr_text in h.value.block.keys() {
            let Ok(cidr) = cidr_text.parse::<IpNet>() else {
                continue;
            };
            let Some(block) = self.get_block(cidr).await? else {
                continue;
            };
            let pool = self.design.pool_of_block(&cidr).map(|p| p.name.clone()).unwrap_or_default();
            let node = block.value.node().map(str::to_string);
            for (ip, attr) in block.value.allocated() {
                if attr.handle_id.as_deref() == Some(handle) {
                    let owner = attr.secondary.get(ATTR_NODE);
                    out.push(AssignedIp {
                        ip,
                        block: cidr,
                        pool: pool.clone(),
                        borrowed: owner.is_some() && owner != node.as_ref(),
                    });
                }
            }
        }
        out.sort_by_key(|a| (Family::of(a.ip), a.ip));
        Ok(out)
    }

    /// Releases every address of a handle and deletes the handle. Releasing an
    /// unknown handle is not an error (CNI DEL must be idempotent).
    ///
    /// Addresses in an invalid block cannot be released: the rest are, the
    /// handle is kept holding only that block's count (and no floating IPs,
    /// since the pod is gone), and the result is [`IpamError::InvalidBlock`].
    pub async fn release_handle(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let mut conflicts = 0;
        loop {
            let Some(h) = self.get_handle(handle).await? else {
                return Ok(Vec::new());
            };
            let mut writes = Vec::new();
            let mut freed = Vec::new();
            let mut kept = IpamHandle { handle_id: handle.to_string(), ..IpamHandle::default() };
            let mut invalid = None;
            for (cidr_text, count) in &h.value.block {
                let Ok(cidr) = cidr_text.parse::<IpNet>() else {
                    continue;
                };
                let block = match self.get_block(cidr).await {
                    Ok(Some(block)) => block,
                    Ok(None) => continue,
                    Err(IpamError::InvalidBlock(e)) => {
                        kept.block.insert(cidr_text.clone(), *count);
                        invalid.get_or_insert(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let mut b = block.value.clone();
                let f = b.release_where(|x| x == Some(handle));
                if !f.is_empty() {
                    freed.extend(f.into_iter().map(|(ip, _)| ip));
                    writes.push(Write::put(Expect::Revision(block.revision), Object::Block(b)));
                }
            }
            writes.push(if kept.block.is_empty() {
                Write::delete(Key::Handle(handle.to_string()), h.revision)
            } else {
                Write::put(Expect::Revision(h.revision), Object::Handle(kept))
            });
            match self.store.commit(writes).await {
                Ok(()) => {
                    self.stats.released.fetch_add(freed.len() as u64, Ordering::Relaxed);
                    return match invalid {
                        None => Ok(freed),
                        Some(e) => Err(IpamError::InvalidBlock(e)),
                    };
                }
                Err(e) => {
                    conflict_or(e)?;
                    self.backoff(&mut conflicts).await?;
                }
            }
        }
    }

    /// Releases specific addresses (whatever their handle); returns those that
    /// were assigned. Those in an invalid block stay assigned, and the result
    /// is then [`IpamError::InvalidBlock`] (after releasing the others).
    pub async fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<IpAddr>, IpamError> {
        let mut by_block: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
        for ip in ips {
            if let Some(cidr) = self.design.pool_containing(*ip).and_then(|p| p.block_of(*ip)) {
                by_block.entry(cidr).or_default().push(*ip);
            }
        }
        let mut freed_all = Vec::new();
        let mut invalid = None;
        for (cidr, ips) in by_block {
            let mut conflicts = 0;
            loop {
                let block = match self.get_block(cidr).await {
                    Ok(Some(block)) => block,
                    Ok(None) => break,
                    Err(IpamError::InvalidBlock(e)) => {
                        invalid.get_or_insert(e);
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let mut b = block.value.clone();
                let freed = b.release_ips(&ips);
                if freed.is_empty() {
                    break;
                }
                let mut per_handle: BTreeMap<String, u32> = BTreeMap::new();
                for (_, h) in &freed {
                    *per_handle.entry(h.clone()).or_insert(0) += 1;
                }
                let mut writes = vec![Write::put(Expect::Revision(block.revision), Object::Block(b))];
                for (h, n) in per_handle {
                    if let Some(w) = self.handle_decrement(&h, &cidr, n).await? {
                        writes.push(w);
                    }
                }
                match self.store.commit(writes).await {
                    Ok(()) => {
                        self.stats.released.fetch_add(freed.len() as u64, Ordering::Relaxed);
                        freed_all.extend(freed.into_iter().map(|(ip, _)| ip));
                        break;
                    }
                    Err(e) => {
                        conflict_or(e)?;
                        self.backoff(&mut conflicts).await?;
                    }
                }
            }
        }
        match invalid {
            None => Ok(freed_all),
            Some(e) => Err(IpamError::InvalidBlock(e)),
        }
    }

    /// The write that removes `n` addresses of `cidr` from a handle (deleting
    /// the handle when it holds nothing more), if the handle exists.
    async fn handle_decrement(&self, handle: &str, cidr: &IpNet, n: u32) -> Result<Option<Write>, IpamError> {
        let Some(h) = self.get_handle(handle).await? else {
            return Ok(None);
        };
        let mut v = h.value.clone();
        let key = cidr.to_string();
        if let Some(c) = v.block.get_mut(&key) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                v.block.remove(&key);
            }
        }
        Ok(Some(if v.block.is_empty() {
            Write::delete(Key::Handle(handle.to_string()), h.revision)
        } else {
            Write::put(Expect::Revision(h.revision), Object::Handle(v))
        }))
    }

    /// Releases the affinity of empty blocks (of one node, or of all nodes)
    /// and deletes those blocks, so their space returns to the pool.
    /// Also finishes releases that a dead process left in `pendingDeletion`.
    pub async fn release_empty_blocks(&self, node: Option<&str>) -> Result<Vec<IpNet>, IpamError> {
        let mut released = Vec::new();
        for aff in self.affinities(node).await? {
            if aff.value.state == AffinityState::Pending {
                continue;
            }
            let mut conflicts = 0;
            loop {
                match self.release_one_block(&aff.value.node, aff.value.cidr).await {
                    Ok(true) => {
                        released.push(aff.value.cidr);
                        break;
                    }
                    // Invalid (logged): left for an operator; go on with the others.
                    Ok(false) | Err(IpamError::InvalidBlock(_)) => break,
                    Err(IpamError::Store(StoreError::Conflict(_))) => self.backoff(&mut conflicts).await?,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(released)
    }

    async fn release_one_block(&self, node: &str, cidr: IpNet) -> Result<bool, IpamError> {
        let Some(aff) = self.get_affinity(node, cidr).await? else {
            return Ok(false);
        };
        let key = Key::Affinity { node: node.to_string(), cidr };
        let block = self.get_block(cidr).await?;
        let ours_and_empty = block.as_ref().is_some_and(|b| b.value.node() == Some(node) && b.value.is_empty());
        if !ours_and_empty {
            if aff.value.state == AffinityState::PendingDeletion {
                // A release that found the block in use (or died): undo it.
                let back = BlockAffinity { state: AffinityState::Confirmed, ..aff.value.clone() };
                self.store.commit(vec![Write::put(Expect::Revision(aff.revision), Object::Affinity(back))]).await?;
            }
            return Ok(false);
        }
        let Some(block) = block else {
            return Ok(false);
        };
        let aff_rev = if aff.value.state == AffinityState::PendingDeletion {
            aff.revision
        } else {
            let marking = BlockAffinity { state: AffinityState::PendingDeletion, ..aff.value.clone() };
            self.store.commit(vec![Write::put(Expect::Revision(aff.revision), Object::Affinity(marking))]).await?;
            match self.get_affinity(node, cidr).await? {
                Some(a) => a.revision,
                None => return Ok(false),
            }
        };
        // Deleting the block is conditional on the revision at which it was
        // seen empty: an assignment in between makes this a conflict, and the
        // retry finds the block in use and restores the affinity.
        self.store.commit(vec![Write::delete(Key::Block(cidr), block.revision), Write::delete(key, aff_rev)]).await?;
        self.stats.blocks_released.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%cidr, node, "released empty block");
        Ok(true)
    }

    /// Garbage collection: frees addresses whose handle is not in `live`
    /// (e.g. the pods that still exist), deletes dead handles, removes stale
    /// pending affinities, recreates missing affinities of existing blocks and
    /// finishes interrupted block releases.
    pub async fn gc(&self, live: &BTreeSet<String>) -> Result<GcReport, IpamError> {
        let mut report = GcReport::default();
        // Leaked addresses (of valid blocks only).
        let (valid, invalid) = self.blocks().await?;
        let invalid_cidrs: BTreeSet<IpNet> = invalid.iter().map(|e| e.cidr).collect();
        report.invalid_blocks = invalid;
        for block in valid {
            let cidr = block.value.cidr;
            let mut conflicts = 0;
            let mut current = Some(block);
            while let Some(block) = current.take() {
                let mut b = block.value.clone();
                let freed = b.release_where(|h| !h.is_some_and(|h| live.contains(h)));
                if freed.is_empty() {
                    break;
                }
                let mut per_handle: BTreeMap<String, u32> = BTreeMap::new();
                for (_, h) in &freed {
                    *per_handle.entry(h.clone()).or_insert(0) += 1;
                }
                let mut writes = vec![Write::put(Expect::Revision(block.revision), Object::Block(b))];
                let mut deleted = Vec::new();
                for (h, n) in &per_handle {
                    if let Some(w) = self.handle_decrement(h, &cidr, *n).await? {
                        if w.value.is_none() {
                            deleted.push(h.clone());
                        }
                        writes.push(w);
                    }
                }
                match self.store.commit(writes).await {
                    Ok(()) => {
                        self.stats.released.fetch_add(freed.len() as u64, Ordering::Relaxed);
                        report.released.extend(freed.into_iter().map(|(ip, _)| ip));
                        report.handles_deleted.extend(deleted);
                    }
                    Err(e) => {
                        conflict_or(e)?;
                        self.backoff(&mut conflicts).await?;
                        current = match self.get_block(cidr).await {
                            Ok(b) => b,
                            Err(IpamError::InvalidBlock(e)) => {
                                report.invalid_blocks.push(e);
                                None
                            }
                            Err(e) => return Err(e),
                        };
                    }
                }
            }
        }
        // Dead handles that hold nothing any more (or whose blocks are gone).
        let handles: Vec<Versioned<IpamHandle>> =
            self.store.list(&Scope::Handles).await?.into_iter().filter_map(handle_of).collect();
        for h in handles {
            if live.contains(&h.value.handle_id) {
                continue;
            }
            // A handle with addresses in an invalid block is what records
            // them; it stays until the block is repaired.
            let in_invalid = h.value.block.keys().any(|c| c.parse::<IpNet>().is_ok_and(|c| invalid_cidrs.contains(&c)));
            if in_invalid {
                continue;
            }
            let del = Write::delete(Key::Handle(h.value.handle_id.clone()), h.revision);
            match self.store.commit(vec![del]).await {
                Ok(()) => report.handles_deleted.push(h.value.handle_id.clone()),
                Err(e) => conflict_or(e)?,
            }
        }
        // Affinities: stale pending claims, interrupted releases. Those of
        // invalid blocks are left alone.
        let (valid, invalid) = self.blocks().await?;
        let invalid_cidrs: BTreeSet<IpNet> = invalid.iter().map(|e| e.cidr).chain(invalid_cidrs).collect();
        let blocks: BTreeMap<IpNet, Versioned<AllocationBlock>> =
            valid.into_iter().map(|b| (b.value.cidr, b)).collect();
        let affs = self.affinities(None).await?;
        for aff in &affs {
            if invalid_cidrs.iter().any(|c| c.contains(&aff.value.cidr) || aff.value.cidr.contains(c)) {
                continue;
            }
            let block = blocks.get(&aff.value.cidr);
            let ours = block.is_some_and(|b| b.value.node() == Some(aff.value.node.as_str()));
            match aff.value.state {
                AffinityState::Pending | AffinityState::Confirmed if !ours => {
                    let key = Key::Affinity { node: aff.value.node.clone(), cidr: aff.value.cidr };
                    match self.store.commit(vec![Write::delete(key, aff.revision)]).await {
                        Ok(()) => report.affinities_deleted.push((aff.value.node.clone(), aff.value.cidr)),
                        Err(e) => conflict_or(e)?,
                    }
                }
                AffinityState::PendingDeletion => {
                    if let Ok(true) = self.release_one_block(&aff.value.node, aff.value.cidr).await {
                        report.affinities_deleted.push((aff.value.node.clone(), aff.value.cidr));
                    }
                }
                _ => {}
            }
        }
        // Blocks affine to a node that has no affinity object for them.
        for (cidr, b) in &blocks {
            let Some(node) = b.value.node() else {
                continue;
            };
            if affs.iter().any(|a| a.value.cidr == *cidr && a.value.node == node) {
                continue;
            }
            let aff = BlockAffinity { node: node.to_string(), cidr: *cidr, state: AffinityState::Confirmed };
            match self.store.commit(vec![Write::put(Expect::Absent, Object::Affinity(aff))]).await {
                Ok(()) => report.affinities_repaired.push((node.to_string(), *cidr)),
                Err(e) => conflict_or(e)?,
            }
        }
        Ok(report)
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

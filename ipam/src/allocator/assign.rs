//! Handing out addresses: automatic assignment (affine blocks, a new
//! block, borrowing), a handle's addresses, and one chosen address.

use super::*;

impl<S: Store> Allocator<S> {
    /// Assigns addresses to a pod: `num_v4` IPv4 then `num_v6` IPv6. On
    /// failure nothing stays assigned by this call.
    pub async fn auto_assign(&self, req: &AssignRequest) -> Result<Vec<AssignedIp>, IpamError> {
        let mut out = self.assign_family(req, IpFamily::V4, req.num_v4 as usize).await?;
        match self.assign_family(req, IpFamily::V6, req.num_v6 as usize).await {
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

    pub(super) async fn complete_handle(
        &self,
        req: &AssignRequest,
        ip_addrs: &[IpAddr],
        floating: &[IpAddr],
        mut held: Vec<AssignedIp>,
    ) -> Result<Vec<AssignedIp>, IpamError> {
        let other = |ip: IpAddr| IpamError::HandleHoldsOther { handle: req.handle.clone(), ip };
        if ip_addrs.is_empty() {
            for (family, want) in [(IpFamily::V4, req.num_v4 as usize), (IpFamily::V6, req.num_v6 as usize)] {
                let have: Vec<IpAddr> = held.iter().map(|a| a.ip).filter(|ip| IpFamily::of(*ip) == family).collect();
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
        held.sort_by_key(|a| (IpFamily::of(a.ip), a.ip));
        if !floating.is_empty() {
            let ips: Vec<IpAddr> = held.iter().map(|a| a.ip).collect();
            self.record_floating_ips(&req.handle, &req.node, floating, &ips).await?;
        }
        Ok(held)
    }

    pub(super) async fn assign_family(
        &self,
        req: &AssignRequest,
        family: IpFamily,
        n: usize,
    ) -> Result<Vec<AssignedIp>, IpamError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let requested = match family {
            IpFamily::V4 => &req.ipv4_pools,
            IpFamily::V6 => &req.ipv6_pools,
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

    pub(super) async fn assign_loop(
        &self,
        req: &AssignRequest,
        family: IpFamily,
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
            let affs_in_family = affs.iter().filter(|a| IpFamily::of_net(&a.value.cidr) == family).count();
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
    pub(super) async fn claim_free_block(&self, pools: &[&IpPool], node: &str) -> Result<Claim, IpamError> {
        // Every stored block, valid or not, occupies its space: an invalid one
        // is left for an operator, never claimed over.
        let mut existing: BTreeSet<IpNet> = BTreeSet::new();
        // Blocks that are not one of a pool's blocks (other size, host bits):
        // checked for overlap rather than equality.
        let mut odd: Vec<IpNet> = Vec::new();
        for key in self.store.list_keys(&Scope::Blocks).await? {
            let cidr = match key {
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
    pub(super) async fn refuse_overlapping(&self, cidr: IpNet) -> Result<(), IpamError> {
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

    pub(super) fn fully_reserved(&self, cidr: &IpNet) -> bool {
        self.design.reservations.iter().any(|r| r.cidrs.iter().any(|c| c.contains(cidr)))
    }

    /// Claims a specific block for `node`: affinity `pending`, block created,
    /// affinity `confirmed`.
    pub(super) async fn claim_block(&self, cidr: IpNet, node: &str) -> Result<Claim, IpamError> {
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
}

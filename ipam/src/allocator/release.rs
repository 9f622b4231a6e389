//! Giving addresses and blocks back: by handle, by address, empty blocks,
//! and garbage collection of what dead pods and nodes left.

use super::*;

impl<S: Store> Allocator<S> {
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
    pub(super) async fn handle_decrement(
        &self,
        handle: &str,
        cidr: &IpNet,
        n: u32,
    ) -> Result<Option<Write>, IpamError> {
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

    pub(super) async fn release_one_block(&self, node: &str, cidr: IpNet) -> Result<bool, IpamError> {
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

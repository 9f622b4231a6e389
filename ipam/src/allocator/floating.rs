//! Floating IPs: recorded on a handle, checked against the pools and
//! against other handles' floating IPs, and listed.

use super::*;

impl<S: Store> Allocator<S> {
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
                .find(|a| IpFamily::of(**a) == IpFamily::of(*f))
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
    pub(super) async fn check_floating_ips(&self, handle: &str, list: &[FloatingIp]) -> Result<(), IpamError> {
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

    pub(super) async fn check_taken(&self, handle: &str, list: &[FloatingIp]) -> Result<(), IpamError> {
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
    pub(super) async fn floating_ips_of_others(&self, handle: &str) -> Result<BTreeMap<IpAddr, String>, IpamError> {
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
    pub(super) async fn put_floating_ips(
        &self,
        handle: &str,
        list: Vec<FloatingIp>,
    ) -> Result<Vec<FloatingIp>, IpamError> {
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
        out.sort_by_key(|a| (IpFamily::of(a.ip), a.ip));
        Ok(out)
    }
}

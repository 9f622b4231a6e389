//! Utilisation per pool, block and node, and an exhaustion forecast
//! (`bgpd-ipam show`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;
use serde::Serialize;

use crate::block::{AffinityState, AllocationBlock, BlockAffinity};
use crate::design::Design;
use crate::store::{Object, Scope, Store, StoreError};

/// One pool's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    /// Pool name.
    pub name: String,
    /// Pool CIDR.
    pub cidr: IpNet,
    /// Block prefix length.
    pub block_size: u8,
    /// Whether the pool is disabled.
    pub disabled: bool,
    /// Blocks the pool holds.
    pub blocks_total: u128,
    /// Blocks claimed by nodes.
    pub blocks_claimed: u128,
    /// Addresses in the pool.
    pub addresses_total: u128,
    /// Addresses assigned.
    pub addresses_used: u128,
    /// Free addresses inside claimed blocks.
    pub free_in_claimed_blocks: u128,
    /// Forecast: how many more nodes can claim a first block.
    pub more_nodes: u128,
    /// Forecast: how many more pods fit (free addresses in claimed blocks
    /// plus unclaimed blocks; with strict affinity only the nodes that own
    /// them can use the former).
    pub more_pods: u128,
}

/// One block's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockUsage {
    /// Block CIDR.
    pub cidr: IpNet,
    /// Node it is affine to.
    pub node: Option<String>,
    /// Affinity state (`None` when no affinity object exists).
    pub state: Option<AffinityState>,
    /// Addresses assigned.
    pub used: usize,
    /// Addresses in the block.
    pub total: usize,
}

/// One node's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeUsage {
    /// Node name.
    pub node: String,
    /// Blocks affine to it.
    pub blocks: usize,
    /// Addresses assigned in its blocks (to any node).
    pub used: usize,
    /// Addresses in its blocks.
    pub capacity: usize,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Per pool.
    pub pools: Vec<PoolUsage>,
    /// Per block.
    pub blocks: Vec<BlockUsage>,
    /// Per node.
    pub nodes: Vec<NodeUsage>,
    /// `strictAffinity` in force.
    pub strict_affinity: bool,
    /// `maxBlocksPerHost` in force (`None`: unlimited).
    pub max_blocks_per_host: Option<u32>,
}

/// Computes utilisation and forecast from the store and the design.
pub async fn usage<S: Store>(store: &S, design: &Design) -> Result<Usage, StoreError> {
    let mut blocks: Vec<AllocationBlock> = Vec::new();
    for v in store.list(&Scope::Blocks).await? {
        if let Object::Block(b) = v.value {
            blocks.push(b);
        }
    }
    let mut affs: Vec<BlockAffinity> = Vec::new();
    for v in store.list(&Scope::Affinities(None)).await? {
        if let Object::Affinity(a) = v.value {
            affs.push(a);
        }
    }
    let mut pools = Vec::new();
    for p in &design.pools {
        let mine: Vec<&AllocationBlock> = blocks.iter().filter(|b| p.cidr.contains(&b.cidr)).collect();
        let claimed = mine.len() as u128;
        let used: u128 = mine.iter().map(|b| b.used() as u128).sum();
        let free_in: u128 = mine.iter().map(|b| b.unallocated.len() as u128).sum();
        let free_blocks = p.block_count().saturating_sub(claimed);
        let (more_nodes, more_pods) =
            if p.disabled { (0, 0) } else { (free_blocks, free_in + free_blocks * p.block_len()) };
        pools.push(PoolUsage {
            name: p.name.clone(),
            cidr: p.cidr,
            block_size: p.block_size,
            disabled: p.disabled,
            blocks_total: p.block_count(),
            blocks_claimed: claimed,
            addresses_total: p.block_count() * p.block_len(),
            addresses_used: used,
            free_in_claimed_blocks: free_in,
            more_nodes,
            more_pods,
        });
    }
    let mut block_rows = Vec::new();
    let mut nodes: BTreeMap<String, NodeUsage> = BTreeMap::new();
    for b in &blocks {
        let node = b.node().map(str::to_string);
        let state = affs.iter().find(|a| a.cidr == b.cidr && Some(&a.node) == node.as_ref()).map(|a| a.state);
        if let Some(n) = &node {
            let e = nodes.entry(n.clone()).or_insert_with(|| NodeUsage {
                node: n.clone(),
                blocks: 0,
                used: 0,
                capacity: 0,
            });
            e.blocks += 1;
            e.used += b.used();
            e.capacity += b.allocations.len();
        }
        block_rows.push(BlockUsage { cidr: b.cidr, node, state, used: b.used(), total: b.allocations.len() });
    }
    Ok(Usage {
        pools,
        blocks: block_rows,
        nodes: nodes.into_values().collect(),
        strict_affinity: design.config.strict_affinity,
        max_blocks_per_host: design.config.max_blocks_per_host,
    })
}

fn pct(used: u128, total: u128) -> String {
    if total == 0 {
        "-".into()
    } else {
        format!("{:.1}%", used as f64 * 100.0 / total as f64)
    }
}

impl Usage {
    /// Human-readable tables.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "{:<20} {:<20} {:>5} {:>14} {:>16} {:>7} {:>12} {:>12}",
            "POOL", "CIDR", "BLOCK", "BLOCKS USED", "ADDRESSES USED", "USE", "MORE NODES", "MORE PODS"
        );
        for p in &self.pools {
            let _ = writeln!(
                s,
                "{:<20} {:<20} {:>5} {:>14} {:>16} {:>7} {:>12} {:>12}{}",
                p.name,
                p.cidr.to_string(),
                format!("/{}", p.block_size),
                format!("{}/{}", p.blocks_claimed, p.blocks_total),
                format!("{}/{}", p.addresses_used, p.addresses_total),
                pct(p.addresses_used, p.addresses_total),
                p.more_nodes,
                p.more_pods,
                if p.disabled { "  (disabled)" } else { "" }
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "{:<24} {:<20} {:<16} {:>10}", "BLOCK", "NODE", "AFFINITY", "USED");
        for b in &self.blocks {
            let state = match b.state {
                Some(AffinityState::Pending) => "pending",
                Some(AffinityState::Confirmed) => "confirmed",
                Some(AffinityState::PendingDeletion) => "pendingDeletion",
                None => "-",
            };
            let _ = writeln!(
                s,
                "{:<24} {:<20} {:<16} {:>10}",
                b.cidr.to_string(),
                b.node.as_deref().unwrap_or("-"),
                state,
                format!("{}/{}", b.used, b.total)
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "{:<20} {:>7} {:>14} {:>7}", "NODE", "BLOCKS", "USED", "USE");
        for n in &self.nodes {
            let _ = writeln!(
                s,
                "{:<20} {:>7} {:>14} {:>7}",
                n.node,
                n.blocks,
                format!("{}/{}", n.used, n.capacity),
                pct(n.used as u128, n.capacity as u128)
            );
        }
        let _ = writeln!(
            s,
            "\nstrictAffinity={} maxBlocksPerHost={}",
            self.strict_affinity,
            self.max_blocks_per_host.map(|m| m.to_string()).unwrap_or("unlimited".into())
        );
        s
    }
}

//! Where the template's pods get their addresses: the `ipam` crate's
//! allocator, run as the lab runs `bgpd-ipam` (node by node in name order,
//! pods in order, one IPv4 and, in a dual-stack lab, one IPv6 address each,
//! the block's first address skipped for ptp's gateway), over a store kept in
//! memory. The blocks it claims become the same `IPAMBlock` documents the
//! daemon reads from the file store ([`bgpd::datastore::ipam_store`]).
//!
//! The `ipam` crate has stores on disk, etcd and Kubernetes only; the
//! allocator needs just the compare-and-swap [`Store`] interface, so a map in
//! memory is enough here and `verify` writes no file.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use ipam::allocator::{Allocator, AssignRequest};
use ipam::design::Design;
use ipam::model::IpFamily;
use ipam::store::{in_scope, Expect, Key, Object, Revision, Scope, Store, StoreError, Versioned, Write};
use ipnet::IpNet;

use crate::spec::{Role, Topology};
use bgpd::datastore::IpamObjects;

use super::report::{Class, Finding, Kind, Object as Obj};

/// IPAM objects in memory, with revisions, behind the allocator's store interface.
#[derive(Default)]
struct MemoryStore {
    state: Mutex<(Revision, BTreeMap<Key, Versioned<Object>>)>,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut (Revision, BTreeMap<Key, Versioned<Object>>)) -> T) -> T {
        // A panic while the lock was held cannot leave a half-applied commit:
        // `commit` checks every expectation before it changes anything.
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        Ok(self.with(|(_, m)| m.get(key).cloned()))
    }

    async fn list(&self, scope: &Scope) -> Result<Vec<Versioned<Object>>, StoreError> {
        Ok(self.with(|(_, m)| m.iter().filter(|(k, _)| in_scope(k, scope)).map(|(_, v)| v.clone()).collect()))
    }

    async fn list_keys(&self, scope: &Scope) -> Result<Vec<Key>, StoreError> {
        Ok(self.with(|(_, m)| m.keys().filter(|k| in_scope(k, scope)).cloned().collect()))
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.with(|(rev, m)| {
            for w in &writes {
                let ok = match (w.expect, m.get(&w.key)) {
                    (Expect::Absent, None) => true,
                    (Expect::Revision(r), Some(v)) => v.revision == r,
                    _ => false,
                };
                if !ok {
                    return Err(StoreError::Conflict(w.key.clone()));
                }
            }
            *rev += 1;
            for w in writes {
                match w.value {
                    Some(value) => m.insert(w.key, Versioned { value, revision: *rev }),
                    None => m.remove(&w.key),
                };
            }
            Ok(())
        })
    }
}

/// One pod of the template with the addresses the allocator gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PredictedPod {
    /// `NODE-pN`, as the lab names it.
    pub name: String,
    /// Its node.
    pub node: String,
    /// Its addresses (IPv4 first).
    pub addresses: Vec<IpAddr>,
    /// The block of each address, in the same order.
    pub blocks: Vec<IpNet>,
}

/// What the allocator did with the template's pods.
#[derive(Debug, Default)]
pub struct Prediction {
    /// Per cluster, the IPAM state as the daemon reads a store's (typed).
    pub ipam: BTreeMap<String, IpamObjects>,
    /// The pods that got addresses.
    pub pods: Vec<PredictedPod>,
    /// What is wrong or worth knowing.
    pub findings: Vec<Finding>,
}

/// The handle `bgpd-ipam` uses for a lab pod (network `k8s-pod-network`,
/// container ID the pod's name).
fn handle(pod: &str) -> String {
    format!("k8s-pod-network.{pod}")
}

/// Runs the allocator for every pod of the template.
pub fn predict(topo: &Topology) -> Prediction {
    let mut out = Prediction::default();
    let dual = topo.dual_stack();
    for (cluster, yaml) in &topo.clusters {
        let origin = format!("cluster {cluster}");
        let design = match Design::parse(&[(Path::new(&origin), yaml.as_str())]) {
            Ok(d) => d,
            Err(e) => {
                out.findings.push(
                    Finding::problem(Class::Ipam, Vec::new(), format!("cluster {cluster}: IPAM cannot read it: {e}"))
                        .fix("correct the IPPool or IPAMConfiguration named"),
                );
                continue;
            }
        };
        out.findings.extend(forecast(topo, cluster, &design, dual));
        let alloc = Allocator::new(MemoryStore::default(), design);
        let nodes = topo.nodes().filter(|n| matches!(&n.role, Role::Node { cluster: c, .. } if c == cluster));
        for node in nodes {
            let mut unselected = false;
            for pod in topo.pods(node) {
                let req = AssignRequest {
                    handle: handle(&pod),
                    node: node.name.clone(),
                    namespace: Some("default".into()),
                    pod: Some(pod.clone()),
                    num_v4: 1,
                    num_v6: u32::from(dual),
                    skip_first_address: true,
                    ..AssignRequest::default()
                };
                // The memory store's futures are ready at once; the allocator
                // waits only after a conflict, which one writer never has.
                match futures::executor::block_on(alloc.assign_handle(&req, &[], &[])) {
                    Ok(assigned) => {
                        for a in assigned.iter().filter(|a| a.borrowed) {
                            out.findings.push(borrowed(&node.name, &pod, a.ip, a.block, &a.pool));
                        }
                        out.pods.push(PredictedPod {
                            name: pod.clone(),
                            node: node.name.clone(),
                            addresses: assigned.iter().map(|a| a.ip).collect(),
                            blocks: assigned.iter().map(|a| a.block).collect(),
                        });
                    }
                    Err(ipam::allocator::IpamError::NoEligiblePool { family, .. }) => {
                        if !unselected {
                            out.findings.push(no_pool(alloc.design(), &node.name, family, cluster));
                        }
                        unselected = true;
                    }
                    Err(e) => out.findings.push(
                        Finding::problem(
                            Class::Ipam,
                            vec![Obj::new(Kind::Node, &node.name), Obj::new(Kind::Pod, &pod)],
                            format!("pod {pod} on {} gets no address: {e}", node.name),
                        )
                        .fix("make the pools that select the node larger, or add one"),
                    ),
                }
            }
        }
        out.ipam.insert(cluster.clone(), state(&alloc, cluster));
    }
    out
}

/// The store's blocks (and handles with floating IPs) as the daemon reads them.
fn state(alloc: &Allocator<MemoryStore>, cluster: &str) -> IpamObjects {
    let objects = futures::executor::block_on(async {
        let mut all = Vec::new();
        for scope in [Scope::Blocks, Scope::Affinities(None), Scope::Handles] {
            all.extend(alloc.store().list(&scope).await.unwrap_or_default());
        }
        all
    });
    let (mut blocks, mut affinities, mut handles) = (Vec::new(), Vec::new(), Vec::new());
    for v in objects {
        match v.value {
            Object::Block(b) => blocks.push(b),
            Object::Affinity(a) => affinities.push(a),
            Object::Handle(h) => handles.push(h),
        }
    }
    let source = format!("cluster {cluster}: IPAM state predicted by verify");
    IpamObjects::of_store(std::path::Path::new(&source), blocks, &affinities, handles)
}

fn family_name(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

fn family_of(f: IpFamily) -> bool {
    f == IpFamily::V6
}

/// A node that no pool of `family` selects.
fn no_pool(design: &Design, node: &str, family: IpFamily, cluster: &str) -> Finding {
    let labels = design.node_labels(node);
    let pools: Vec<&ipam::model::IpPool> = design.pools_of(family).collect();
    let mut objects = vec![Obj::new(Kind::Node, node)];
    objects.extend(pools.iter().map(|p| Obj::new(Kind::IpPool, &p.name)));
    let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut f = Finding::problem(
        Class::Ipam,
        objects,
        format!("no {} IPPool selects node {node} (cluster {cluster}): its pods get no address", family_name(family)),
    )
    .detail(format!("node labels: {}", if shown.is_empty() { "none".to_string() } else { shown.join(", ") }));
    for p in &pools {
        let why = if !p.usable_for_workloads() {
            "disabled or not for workloads".to_string()
        } else {
            format!("nodeSelector {}", p.node_selector)
        };
        f = f.detail(format!("IPPool {} ({}): {why}", p.name, p.cidr));
    }
    f.fix(format!(
        "give an IPPool of the family a nodeSelector that matches {node}'s labels (or label the node so that one does)"
    ))
}

fn borrowed(node: &str, pod: &str, ip: IpAddr, block: IpNet, pool: &str) -> Finding {
    Finding::note(
        Class::Ipam,
        vec![Obj::new(Kind::IpPool, pool), Obj::new(Kind::Node, node)],
        format!(
            "IPPool {pool} has no free block for {node}: pod {pod} borrows {ip} from block {block} of another node"
        ),
    )
    .detail(format!("{node} advertises {ip} as a single address; the block's owner advertises the block"))
    .fix(format!("enlarge IPPool {pool} or make its blocks smaller"))
}

/// Per pool: how many pods per node its nodes can have before its blocks run
/// out (nodes then borrow single addresses) and before it is exhausted (pods
/// get no address). Assumes every node it selects takes the same number of
/// pods from it alone, and no IPReservation.
fn forecast(topo: &Topology, cluster: &str, design: &Design, dual: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let nodes: Vec<(&str, u32)> = topo
        .nodes()
        .filter_map(|n| match &n.role {
            Role::Node { cluster: c, pods, .. } if c == cluster => Some((n.name.as_str(), *pods)),
            _ => None,
        })
        .collect();
    for pool in &design.pools {
        if !pool.usable_for_workloads() || (family_of(pool.family()) && !dual) {
            continue;
        }
        let selected: Vec<(&str, u32)> =
            nodes.iter().copied().filter(|(n, _)| pool.node_selector.matches(&design.node_labels(n))).collect();
        let obj = vec![Obj::new(Kind::IpPool, &pool.name)];
        if selected.is_empty() {
            out.push(
                Finding::note(
                    Class::Ipam,
                    obj,
                    format!("IPPool {} ({}) selects no node of cluster {cluster}", pool.name, pool.cidr),
                )
                .detail(format!("nodeSelector {}", pool.node_selector))
                .fix("correct its nodeSelector, or remove the pool"),
            );
            continue;
        }
        let k = selected.len() as u128;
        let blocks = pool.block_count();
        let per_block = (1u128 << (pool.family().max_prefix() - pool.block_size)).saturating_sub(1);
        let blocks_per_node = blocks / k;
        let borrow_at = blocks_per_node.saturating_mul(per_block).saturating_add(1);
        let exhausted_at = blocks.saturating_mul(per_block) / k + 1;
        let most = selected.iter().map(|(_, p)| u128::from(*p)).max().unwrap_or(0);
        let total: u128 = selected.iter().map(|(_, p)| u128::from(*p)).sum();
        let summary = format!(
            "IPPool {} ({}, {blocks} blocks of /{}, {k} nodes): blocks run out at {} pods per node, addresses at {}",
            pool.name,
            pool.cidr,
            pool.block_size,
            count(borrow_at),
            count(exhausted_at)
        );
        let f = if total > blocks.saturating_mul(per_block) {
            Finding::problem(Class::Ipam, obj, summary)
                .detail(format!("the template has {total} pods on these nodes, the pool {}", count(blocks * per_block)))
                .fix(format!("enlarge IPPool {} or add a pool for these nodes", pool.name))
        } else if most >= borrow_at {
            Finding::note(Class::Ipam, obj, summary)
                .detail(format!("the template's {most} pods per node already borrow"))
                .fix(format!("enlarge IPPool {} or make its blocks smaller", pool.name))
        } else {
            Finding::note(Class::Ipam, obj, summary)
        };
        out.push(f);
    }
    out
}

fn count(n: u128) -> String {
    if n > 1_000_000_000 {
        "more than 10^9".into()
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::block::{AffinityState, AllocationBlock, BlockAffinity, IpamHandle};

    #[test]
    fn memory_store_lists_the_keys_it_lists_objects_of() {
        let store = MemoryStore::default();
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let writes = vec![
            Write::put(Expect::Absent, Object::Block(AllocationBlock::new(net("10.0.0.0/26"), Some("n1"), false))),
            Write::put(Expect::Absent, Object::Block(AllocationBlock::new(net("10.0.0.64/26"), None, false))),
            Write::put(
                Expect::Absent,
                Object::Affinity(BlockAffinity {
                    node: "n1".into(),
                    cidr: net("10.0.0.0/26"),
                    state: AffinityState::Confirmed,
                }),
            ),
            Write::put(Expect::Absent, Object::Handle(IpamHandle { handle_id: "h".into(), ..IpamHandle::default() })),
        ];
        futures::executor::block_on(store.commit(writes)).unwrap();
        for scope in [Scope::Blocks, Scope::Affinities(None), Scope::Affinities(Some("n2".into())), Scope::Handles] {
            let listed: Vec<Key> =
                futures::executor::block_on(store.list(&scope)).unwrap().iter().map(|v| v.value.key()).collect();
            assert_eq!(futures::executor::block_on(store.list_keys(&scope)).unwrap(), listed, "{scope:?}");
        }
        let blocks = futures::executor::block_on(store.list_keys(&Scope::Blocks)).unwrap();
        assert_eq!(blocks.len(), 2);
    }
}

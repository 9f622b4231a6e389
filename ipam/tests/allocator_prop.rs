//! Property tests: random sequences of assign, release, claim (implicit in
//! assign), borrow, empty-block release and GC over several nodes, checked
//! against a simple model (handle → addresses) after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use ipam::allocator::{allocated_addresses, check_consistency, AssignRequest, IpamError};
use ipam::block::AffinityState;
use ipam::store::file::FileStore;
use ipam::store::{Object, Scope, Store};
use ipam::{Allocator, Design};
use proptest::prelude::*;

const NODES: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Assign {
        node: usize,
        handle: u8,
        n: u32,
    },
    Release {
        handle: u8,
    },
    ReleaseEmptyBlocks {
        node: Option<usize>,
    },
    /// The pod of a handle vanished without DEL: only GC can reclaim it.
    Forget {
        handle: u8,
    },
    Gc,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..NODES, 0u8..24, 1u32..4).prop_map(|(node, handle, n)| Op::Assign { node, handle, n }),
        3 => (0u8..24).prop_map(|handle| Op::Release { handle }),
        1 => prop::option::of(0..NODES).prop_map(|node| Op::ReleaseEmptyBlocks { node }),
        1 => (0u8..24).prop_map(|handle| Op::Forget { handle }),
        1 => Just(Op::Gc),
    ]
}

/// A /27 pool in /29 blocks: 4 blocks of 8 addresses, 32 addresses in all,
/// plus one reserved address.
fn design(strict: bool, max_blocks: u32) -> Design {
    let text = format!(
        r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: pool-a}}
spec: {{cidr: 10.9.0.0/27, blockSize: 29}}
---
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata: {{name: default}}
spec: {{strictAffinity: {strict}, maxBlocksPerHost: {max_blocks}}}
---
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {{name: r}}
spec: {{reservedCIDRs: [10.9.0.13]}}
"#
    );
    Design::parse(&[(Path::new("prop.yaml"), &text)]).expect("test design parses")
}

const CAPACITY: usize = 31;

async fn check_invariants(
    alloc: &Allocator<FileStore>,
    model: &BTreeMap<String, (usize, BTreeSet<IpAddr>)>,
    strict: bool,
    max_blocks: u32,
) -> Result<(), TestCaseError> {
    let store = alloc.store();
    let problems = check_consistency(store).await.unwrap();
    prop_assert!(problems.is_empty(), "inconsistent: {problems:?}");
    let allocated = allocated_addresses(store).await.unwrap();
    let mut seen = BTreeSet::new();
    for (ip, _) in &allocated {
        prop_assert!(seen.insert(*ip), "duplicate address {ip}");
        prop_assert!(*ip != "10.9.0.13".parse::<IpAddr>().unwrap(), "reserved address handed out");
    }
    let expected: BTreeMap<IpAddr, String> =
        model.iter().flat_map(|(h, (_, ips))| ips.iter().map(move |ip| (*ip, h.clone()))).collect();
    let actual: BTreeMap<IpAddr, String> = allocated.into_iter().collect();
    prop_assert_eq!(&actual, &expected, "store and model disagree (leak or loss)");

    // Affinity invariants.
    let blocks: Vec<_> = store
        .list(&Scope::Blocks)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|v| match v.value {
            Object::Block(b) => Some(b),
            _ => None,
        })
        .collect();
    let affs: Vec<_> = store
        .list(&Scope::Affinities(None))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|v| match v.value {
            Object::Affinity(a) => Some(a),
            _ => None,
        })
        .collect();
    for a in &affs {
        prop_assert_eq!(a.state, AffinityState::Confirmed, "left-over claim state {:?}", a);
        let b = blocks.iter().find(|b| b.cidr == a.cidr);
        prop_assert!(b.is_some_and(|b| b.node() == Some(a.node.as_str())), "affinity without its block: {a:?}");
    }
    for b in &blocks {
        let node = b.node().expect("every block is claimed by a node");
        prop_assert!(affs.iter().any(|a| a.cidr == b.cidr && a.node == node), "block {} without affinity", b.cidr);
    }
    for n in 0..NODES {
        let name = format!("node-{n}");
        let count = affs.iter().filter(|a| a.node == name).count();
        prop_assert!(count <= max_blocks as usize, "{name} holds {count} blocks > {max_blocks}");
    }
    if strict {
        for (h, (node, ips)) in model {
            if *node == usize::MAX {
                continue;
            }
            for ip in ips {
                let b = blocks.iter().find(|b| b.cidr.contains(ip)).unwrap();
                let want = format!("node-{node}");
                prop_assert_eq!(b.node(), Some(want.as_str()), "strict affinity: {} of {} borrowed", ip, h);
            }
        }
    }
    Ok(())
}

fn run(ops: Vec<Op>, strict: bool, max_blocks: u32) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let alloc = Allocator::new(FileStore::open(dir.path()).unwrap(), design(strict, max_blocks));
        // handle → (node, addresses)
        let mut model: BTreeMap<String, (usize, BTreeSet<IpAddr>)> = BTreeMap::new();
        let mut forgotten: BTreeSet<String> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Assign { node, handle, n } => {
                    let h = format!("h{handle}");
                    if forgotten.contains(&h) || model.get(&h).is_some_and(|(nd, _)| *nd != node) {
                        continue;
                    }
                    let used: usize =
                        model.values().map(|(_, s)| s.len()).sum::<usize>() + forgotten_len(&alloc, &forgotten).await;
                    let req = AssignRequest {
                        handle: h.clone(),
                        node: format!("node-{node}"),
                        namespace: Some("default".into()),
                        pod: Some(h.clone()),
                        num_v4: n,
                        ..Default::default()
                    };
                    match alloc.auto_assign(&req).await {
                        Ok(ips) => {
                            prop_assert_eq!(ips.len(), n as usize);
                            let entry = model.entry(h).or_insert((node, BTreeSet::new()));
                            for a in ips {
                                prop_assert!(entry.1.insert(a.ip));
                            }
                        }
                        Err(IpamError::PoolsExhausted { pools, .. }) => {
                            prop_assert_eq!(pools, vec!["pool-a".to_string()]);
                            if !strict && max_blocks >= 4 {
                                prop_assert!(
                                    used + n as usize > CAPACITY,
                                    "exhausted with {used} of {CAPACITY} used, asked {n}"
                                );
                            }
                        }
                        Err(e) => return Err(TestCaseError::fail(format!("assign: {e}"))),
                    }
                }
                Op::Release { handle } => {
                    let h = format!("h{handle}");
                    let freed = alloc.release_handle(&h).await.unwrap();
                    let want = if forgotten.remove(&h) {
                        // Releasing a forgotten handle is what GC would do; fine.
                        None
                    } else {
                        model.remove(&h).map(|(_, s)| s)
                    };
                    if let Some(want) = want {
                        prop_assert_eq!(freed.into_iter().collect::<BTreeSet<_>>(), want);
                    }
                }
                Op::ReleaseEmptyBlocks { node } => {
                    let name = node.map(|n| format!("node-{n}"));
                    alloc.release_empty_blocks(name.as_deref()).await.unwrap();
                }
                Op::Forget { handle } => {
                    let h = format!("h{handle}");
                    if model.remove(&h).is_some() {
                        forgotten.insert(h);
                    }
                }
                Op::Gc => {
                    let live: BTreeSet<String> = model.keys().cloned().collect();
                    let report = alloc.gc(&live).await.unwrap();
                    for ip in &report.released {
                        prop_assert!(!model.values().any(|(_, s)| s.contains(ip)), "GC freed live {ip}");
                    }
                    forgotten.clear();
                }
            }
            // Forgotten handles still hold addresses until GC: fold them into
            // the model view for the leak check.
            let mut view = model.clone();
            for h in &forgotten {
                let ips: BTreeSet<IpAddr> = allocated_addresses(alloc.store())
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|(_, hh)| hh == h)
                    .map(|(ip, _)| ip)
                    .collect();
                view.insert(h.clone(), (usize::MAX, ips));
            }
            check_invariants(&alloc, &view, strict, max_blocks).await?;
        }
        // Final: release everything, GC, then no address remains.
        let all: Vec<String> = model.keys().cloned().collect();
        for h in all {
            alloc.release_handle(&h).await.unwrap();
        }
        alloc.gc(&BTreeSet::new()).await.unwrap();
        alloc.release_empty_blocks(None).await.unwrap();
        prop_assert!(allocated_addresses(alloc.store()).await.unwrap().is_empty());
        prop_assert!(alloc.store().list(&Scope::Blocks).await.unwrap().is_empty(), "empty blocks not released");
        prop_assert!(alloc.store().list(&Scope::Handles).await.unwrap().is_empty());
        Ok(())
    })
}

async fn forgotten_len(alloc: &Allocator<FileStore>, forgotten: &BTreeSet<String>) -> usize {
    allocated_addresses(alloc.store()).await.unwrap().iter().filter(|(_, h)| forgotten.contains(h)).count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn prop_allocator_borrowing(ops in prop::collection::vec(arb_op(), 1..40)) {
        run(ops, false, 20)?;
    }

    #[test]
    fn prop_allocator_block_limit(ops in prop::collection::vec(arb_op(), 1..40)) {
        run(ops, false, 1)?;
    }

    #[test]
    fn prop_allocator_strict_affinity(ops in prop::collection::vec(arb_op(), 1..40)) {
        run(ops, true, 2)?;
    }
}

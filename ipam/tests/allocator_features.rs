//! Allocator features on the file store: dual stack, node and namespace
//! selectors, requested pools and addresses, floating IPs, reservations,
//! strict affinity, block limits and crash leftovers.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use ipam::allocator::{check_consistency, floating_ips, AssignRequest, IpamError};
use ipam::block::{AffinityState, AllocationBlock, BlockAffinity};
use ipam::model::Family;
use ipam::store::file::FileStore;
use ipam::store::{Expect, Object, Scope, Store, Write};
use ipam::{affine_blocks, Allocator, Design};

const DESIGN: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rack1-v4}
spec: {cidr: 10.1.0.0/24, blockSize: 28, nodeSelector: "rack == 'r1'"}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rack2-v4}
spec: {cidr: 10.2.0.0/24, blockSize: 28, nodeSelector: "rack == 'r2'"}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: blue-ns}
spec: {cidr: 10.3.0.0/24, blockSize: 28, namespaceSelector: "team == 'blue'", nodeSelector: "has(rack)"}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: manual}
spec: {cidr: 10.4.0.0/24, blockSize: 28, assignmentMode: Manual}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: off}
spec: {cidr: 10.5.0.0/24, disabled: true}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v6}
spec: {cidr: "fd00:10::/120", blockSize: 124}
---
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: res}
spec: {reservedCIDRs: [10.1.0.0/30]}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1, labels: {rack: r1}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n2, labels: {rack: r2}}
---
apiVersion: v1
kind: Namespace
metadata: {name: blue, labels: {team: blue}}
"#;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime")
}

fn setup(yaml: &str) -> (tempfile::TempDir, Allocator<FileStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let design = Design::parse(&[(Path::new("t.yaml"), yaml)]).expect("design");
    let store = FileStore::open(dir.path()).expect("store");
    (dir, Allocator::new(store, design))
}

fn req(handle: &str, node: &str, ns: &str, v4: u32, v6: u32) -> AssignRequest {
    AssignRequest {
        handle: handle.into(),
        node: node.into(),
        namespace: Some(ns.into()),
        pod: Some(handle.into()),
        num_v4: v4,
        num_v6: v6,
        ..AssignRequest::default()
    }
}

#[test]
fn dual_stack_uses_node_and_namespace_selected_pools() {
    let (_d, a) = setup(DESIGN);
    rt().block_on(async {
        let got = a.auto_assign(&req("h1", "n1", "default", 1, 1)).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].pool, "rack1-v4");
        assert_eq!(Family::of(got[0].ip), Family::V4);
        assert_eq!(got[1].pool, "v6");
        // The reservation keeps 10.1.0.0/30 out of automatic assignment.
        assert!(!"10.1.0.0/30".parse::<ipnet::IpNet>().unwrap().contains(&got[0].ip));
        let got = a.auto_assign(&req("h2", "n2", "default", 1, 0)).await.unwrap();
        assert_eq!(got[0].pool, "rack2-v4");
        // Namespace blue may use blue-ns as well as the rack pool.
        let pools: Vec<String> =
            a.eligible_pools(Family::V4, &[], "n2", Some("blue")).unwrap().iter().map(|p| p.name.clone()).collect();
        assert_eq!(pools, vec!["blue-ns", "rack2-v4"]);
        // A node no pool selects: clear error.
        let err = a.auto_assign(&req("h3", "n9", "default", 1, 0)).await.unwrap_err();
        assert!(matches!(err, IpamError::NoEligiblePool { .. }), "{err}");
        // Blocks are affine to the nodes that claimed them.
        let b1 = affine_blocks(a.store(), "n1").await.unwrap();
        assert_eq!(b1.len(), 2, "one v4 and one v6 block: {b1:?}");
        assert!(check_consistency(a.store()).await.unwrap().is_empty());
    });
}

#[test]
fn requested_pools_addresses_and_floating_ips() {
    let (_d, a) = setup(DESIGN);
    rt().block_on(async {
        // A Manual pool is used only when requested, whatever the selectors.
        let mut r = req("h1", "n2", "default", 1, 0);
        r.ipv4_pools = vec!["manual".into()];
        let got = a.auto_assign(&r).await.unwrap();
        assert_eq!(got[0].pool, "manual");
        r.ipv4_pools = vec!["10.4.0.0/24".into()];
        r.handle = "h1b".into();
        assert_eq!(a.auto_assign(&r).await.unwrap()[0].pool, "manual");
        for (pools, want) in [(vec!["nope"], "nope"), (vec!["off"], "off"), (vec!["v6"], "v6")] {
            r.ipv4_pools = pools.into_iter().map(String::from).collect();
            let err = a.auto_assign(&r).await.unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
        // A specific address (cni.projectcalico.org/ipAddrs).
        let ip: IpAddr = "10.2.0.77".parse().unwrap();
        let got = a.assign_ip(ip, &req("h2", "n2", "default", 0, 0)).await.unwrap();
        assert_eq!(got.ip, ip);
        let err = a.assign_ip(ip, &req("h3", "n2", "default", 0, 0)).await.unwrap_err();
        assert!(matches!(err, IpamError::AddressInUse { .. }), "{err}");
        let err = a.assign_ip("10.9.9.9".parse().unwrap(), &req("h3", "n2", "default", 0, 0)).await.unwrap_err();
        assert!(matches!(err, IpamError::AddressNotInPool(_)), "{err}");
        let err = a.assign_ip("10.1.0.1".parse().unwrap(), &req("h3", "n1", "default", 0, 0)).await.unwrap_err();
        assert!(matches!(err, IpamError::AddressReserved(_)), "{err}");
        // Floating IPs are recorded against the handle for advertisement.
        let fip: IpAddr = "192.0.2.10".parse().unwrap();
        a.record_floating_ips("h2", "n2", &[fip], &[ip]).await.unwrap();
        let f = floating_ips(a.store()).await.unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].ip, f[0].target, f[0].node.as_str()), (fip, ip, "n2"));
        let err = a.record_floating_ips("h2", "n2", &["2001:db8::1".parse().unwrap()], &[ip]).await.unwrap_err();
        assert!(matches!(err, IpamError::FloatingIpWithoutTarget(_)));
        a.release_handle("h2").await.unwrap();
        assert!(floating_ips(a.store()).await.unwrap().is_empty());
        assert!(check_consistency(a.store()).await.unwrap().is_empty());
    });
}

const SMALL: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: small}
spec: {cidr: 10.7.0.0/28, blockSize: 30}
---
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata: {name: default}
spec: {strictAffinity: STRICT, maxBlocksPerHost: MAX}
"#;

#[test]
fn borrowing_limits_and_strict_affinity() {
    // maxBlocksPerHost 1, borrowing allowed: n1 claims one block, n2 one block;
    // when n1's block is full it borrows from n2's.
    let (_d, a) = setup(&SMALL.replace("STRICT", "false").replace("MAX", "1"));
    rt().block_on(async {
        a.auto_assign(&req("x", "n2", "d", 1, 0)).await.unwrap();
        let got = a.auto_assign(&req("a", "n1", "d", 5, 0)).await.unwrap();
        assert_eq!(got.iter().filter(|g| g.borrowed).count(), 1, "{got:?}");
        assert_eq!(affine_blocks(a.store(), "n1").await.unwrap().len(), 1);
    });
    let (_d, a) = setup(&SMALL.replace("STRICT", "true").replace("MAX", "1"));
    rt().block_on(async {
        a.auto_assign(&req("x", "n2", "d", 1, 0)).await.unwrap();
        let err = a.auto_assign(&req("a", "n1", "d", 5, 0)).await.unwrap_err();
        match err {
            IpamError::PoolsExhausted { pools, .. } => assert_eq!(pools, vec!["small"]),
            other => panic!("{other}"),
        }
        // All or nothing: the four that fitted were rolled back.
        let left: Vec<_> = ipam::allocator::allocated_addresses(a.store()).await.unwrap();
        assert_eq!(left.len(), 1);
    });
}

#[test]
fn release_empty_blocks_and_gc_of_crash_leftovers() {
    let (_d, a) = setup(&SMALL.replace("STRICT", "false").replace("MAX", "4"));
    rt().block_on(async {
        a.auto_assign(&req("a", "n1", "d", 5, 0)).await.unwrap();
        assert_eq!(affine_blocks(a.store(), "n1").await.unwrap().len(), 2);
        a.release_handle("a").await.unwrap();
        let released = a.release_empty_blocks(Some("n1")).await.unwrap();
        assert_eq!(released.len(), 2);
        assert!(a.store().list(&Scope::Blocks).await.unwrap().is_empty());

        // Leftovers of processes killed between writes: a pending affinity
        // without a block, a block without an affinity, an interrupted
        // release, and an address whose pod is gone.
        let s = a.store();
        let put = |o: Object| s.commit(vec![Write::put(Expect::Absent, o)]);
        put(Object::Affinity(BlockAffinity {
            node: "n1".into(),
            cidr: "10.7.0.0/30".parse().unwrap(),
            state: AffinityState::Pending,
        }))
        .await
        .unwrap();
        put(Object::Block(AllocationBlock::new("10.7.0.4/30".parse().unwrap(), Some("n2"), false))).await.unwrap();
        put(Object::Block(AllocationBlock::new("10.7.0.8/30".parse().unwrap(), Some("n3"), false))).await.unwrap();
        put(Object::Affinity(BlockAffinity {
            node: "n3".into(),
            cidr: "10.7.0.8/30".parse().unwrap(),
            state: AffinityState::PendingDeletion,
        }))
        .await
        .unwrap();
        a.auto_assign(&req("dead", "n2", "d", 1, 0)).await.unwrap();
        a.auto_assign(&req("live", "n2", "d", 1, 0)).await.unwrap();
        let live: BTreeSet<String> = ["live".to_string()].into();
        let report = a.gc(&live).await.unwrap();
        assert_eq!(report.released.len(), 1);
        assert_eq!(report.handles_deleted, vec!["dead".to_string()]);
        assert!(report.affinities_deleted.iter().any(|(n, _)| n == "n1"), "{report:?}");
        assert!(report.affinities_deleted.iter().any(|(n, _)| n == "n3"), "{report:?}");
        assert_eq!(report.affinities_repaired.len(), 1, "{report:?}");
        // n2 could not see the block without an affinity, so it claimed
        // another; GC gave it back its orphaned one.
        assert_eq!(affine_blocks(s, "n2").await.unwrap().len(), 2);
        assert!(affine_blocks(s, "n3").await.unwrap().is_empty());
        assert!(check_consistency(s).await.unwrap().is_empty());
    });
}

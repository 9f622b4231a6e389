//! Allocator features on the file store: dual stack, node and namespace
//! selectors, requested pools and addresses, floating IPs, reservations,
//! strict affinity, block limits and crash leftovers.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use ipam::allocator::{check_consistency, floating_ips, AssignRequest, IpamError};
use ipam::block::{AffinityState, AllocationBlock, BlockAffinity};
use ipam::model::IpFamily;
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
metadata: {name: 'off'}
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
        assert_eq!(IpFamily::of(got[0].ip), IpFamily::V4);
        assert_eq!(got[1].pool, "v6");
        // The reservation keeps 10.1.0.0/30 out of automatic assignment.
        assert!(!"10.1.0.0/30".parse::<ipnet::IpNet>().unwrap().contains(&got[0].ip));
        let got = a.auto_assign(&req("h2", "n2", "default", 1, 0)).await.unwrap();
        assert_eq!(got[0].pool, "rack2-v4");
        // Namespace blue may use blue-ns as well as the rack pool.
        let pools: Vec<String> =
            a.eligible_pools(IpFamily::V4, &[], "n2", Some("blue")).unwrap().iter().map(|p| p.name.clone()).collect();
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

/// IPv4 and IPv6 pod pools, and a pool of floating IPs that pods never get
/// automatically (`Manual`).
const DUAL: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods-v4}
spec: {cidr: 10.8.0.0/24, blockSize: 28}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods-v6}
spec: {cidr: "fd00:8::/120", blockSize: 124}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: floating}
spec: {cidr: 10.9.0.0/24, blockSize: 28, assignmentMode: Manual}
"#;

#[test]
fn assign_handle_completes_what_a_crashed_attempt_left_and_is_idempotent() {
    let (_d, a) = setup(DUAL);
    rt().block_on(async {
        let fip: IpAddr = "10.9.0.9".parse().unwrap();
        let r = req("h1", "n1", "default", 1, 1);
        // The first attempt died after its IPv4 commit: no IPv6, no floating IP.
        let v4 = a.auto_assign(&req("h1", "n1", "default", 1, 0)).await.unwrap();
        let got = a.assign_handle(&r, &[], &[fip]).await.unwrap();
        let ips: Vec<IpAddr> = got.iter().map(|g| g.ip).collect();
        assert_eq!(ips.len(), 2, "{got:?}");
        assert_eq!(ips[0], v4[0].ip, "the address already held is kept");
        assert_eq!(IpFamily::of(ips[1]), IpFamily::V6);
        let f = floating_ips(a.store()).await.unwrap();
        assert_eq!((f.len(), f[0].ip, f[0].target), (1, fip, v4[0].ip));
        // Once more: the same, and nothing written.
        let key = ipam::store::Key::Handle("h1".into());
        let before = a.store().get(&key).await.unwrap().unwrap().revision;
        assert_eq!(a.assign_handle(&r, &[], &[fip]).await.unwrap(), got);
        let after = a.store().get(&key).await.unwrap().unwrap().revision;
        assert_eq!(after, before, "an idempotent retry writes nothing");
        assert!(check_consistency(a.store()).await.unwrap().is_empty());

        // Requested addresses (ipAddrs): the one not yet held is assigned.
        let want: [IpAddr; 2] = ["10.9.0.20".parse().unwrap(), "fd00:8::20".parse().unwrap()];
        a.assign_ip(want[0], &req("h2", "n1", "default", 0, 0)).await.unwrap();
        let got = a.assign_handle(&req("h2", "n1", "default", 0, 0), &want, &[]).await.unwrap();
        assert_eq!(got.iter().map(|g| g.ip).collect::<Vec<_>>(), want);
    });
}

#[test]
fn assign_handle_that_cannot_complete_fails_and_releases_everything() {
    let (_d, a) = setup(DUAL);
    rt().block_on(async {
        // Dual stack asked for, after the IPv4 commit, with an IPv6 pool that
        // does not exist: the retry cannot complete.
        a.auto_assign(&req("h1", "n1", "default", 1, 0)).await.unwrap();
        let mut r = req("h1", "n1", "default", 1, 1);
        r.ipv6_pools = vec!["nope".into()];
        let err = a.assign_handle(&r, &[], &[]).await.unwrap_err();
        assert!(matches!(err, IpamError::UnknownPool { .. }), "{err}");
        assert!(a.addresses_of("h1").await.unwrap().is_empty(), "the partial IPv4 assignment was released");
        // A retry whose request no longer matches what the handle holds.
        a.auto_assign(&req("h2", "n1", "default", 1, 1)).await.unwrap();
        let err = a.assign_handle(&req("h2", "n1", "default", 1, 0), &[], &[]).await.unwrap_err();
        assert!(matches!(err, IpamError::HandleHoldsOther { .. }), "{err}");
        assert!(err.to_string().contains("h2"), "{err}");
        assert!(ipam::allocator::allocated_addresses(a.store()).await.unwrap().is_empty());
        assert!(check_consistency(a.store()).await.unwrap().is_empty());
    });
}

#[test]
fn floating_ips_that_would_take_another_pods_traffic_are_refused() {
    let (_d, a) = setup(DUAL);
    rt().block_on(async {
        let pod_a = a.auto_assign(&req("a", "n1", "default", 1, 0)).await.unwrap()[0].ip;
        let pod_b = a.auto_assign(&req("b", "n2", "default", 1, 0)).await.unwrap()[0].ip;
        // Another pod's address (in a pod pool, or requested from the floating pool).
        let err = a.record_floating_ips("b", "n2", &[pod_a], &[pod_b]).await.unwrap_err();
        match &err {
            IpamError::FloatingIpIsAnotherPodsAddress { ip, handle } => {
                assert_eq!((*ip, handle.as_str()), (pod_a, "a"))
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains(&pod_a.to_string()) && err.to_string().contains("\"a\""), "{err}");
        let manual: IpAddr = "10.9.0.30".parse().unwrap();
        a.assign_ip(manual, &req("c", "n1", "default", 0, 0)).await.unwrap();
        let err = a.record_floating_ips("b", "n2", &[manual], &[pod_b]).await.unwrap_err();
        assert!(matches!(err, IpamError::FloatingIpIsAnotherPodsAddress { .. }), "{err}");
        // A floating IP another handle already records.
        let fip: IpAddr = "10.9.0.9".parse().unwrap();
        a.record_floating_ips("a", "n1", &[fip], &[pod_a]).await.unwrap();
        let err = a.record_floating_ips("b", "n2", &[fip], &[pod_b]).await.unwrap_err();
        match &err {
            IpamError::FloatingIpTaken { ip, handle } => assert_eq!((*ip, handle.as_str()), (fip, "a")),
            other => panic!("{other}"),
        }
        // Nor may a pod ask for it as its own address.
        let err = a.assign_ip(fip, &req("d", "n2", "default", 0, 0)).await.unwrap_err();
        assert!(matches!(err, IpamError::FloatingIpTaken { .. }), "{err}");
        // Nothing was recorded for b; a's stands, and its own address may float to it.
        let f = floating_ips(a.store()).await.unwrap();
        assert_eq!(f.iter().map(|f| f.ip).collect::<Vec<_>>(), [fip]);
        a.record_floating_ips("a", "n1", &[fip, pod_a], &[pod_a]).await.unwrap();
        // Released with its pod, the floating IP is free for another.
        a.release_handle("a").await.unwrap();
        a.record_floating_ips("b", "n2", &[fip], &[pod_b]).await.unwrap();
        assert!(check_consistency(a.store()).await.unwrap().is_empty());
    });
}

//! Malformed blocks in the store (written by something other than bgpd-ipam,
//! or damaged): every kind of malformation is refused with an error naming the
//! block and the problem, the allocator keeps working with the other blocks,
//! and nothing about the bad block is lost or panicked on.
//!
//! The blocks are damaged through the file store's own conditional writes,
//! which take any block as given: what a store holds after a foreign writer.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering;

use ipam::allocator::{check_consistency, AssignRequest, IpamError};
use ipam::block::{AffinityState, AllocationBlock, BlockAffinity, BlockProblem, IpamHandle};
use ipam::store::file::FileStore;
use ipam::store::{Expect, Key, Object, Scope, Store, Versioned, Write};
use ipam::{Allocator, Design};
use ipnet::IpNet;

/// A /28 pool of four /30 blocks; no block limit.
const POOL: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: small}
spec: {cidr: 10.7.0.0/28, blockSize: 30}
---
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata: {name: default}
spec: {maxBlocksPerHost: 0}
"#;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime")
}

fn setup() -> (tempfile::TempDir, Allocator<FileStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let design = Design::parse(&[(Path::new("pool.yaml"), POOL)]).expect("design");
    let store = FileStore::open(dir.path()).expect("store");
    (dir, Allocator::new(store, design))
}

fn req(handle: &str, node: &str) -> AssignRequest {
    AssignRequest { handle: handle.into(), node: node.into(), num_v4: 1, ..AssignRequest::default() }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("a CIDR")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

async fn raw_block(a: &Allocator<FileStore>, cidr: IpNet) -> Versioned<AllocationBlock> {
    match a.store().get(&Key::Block(cidr)).await.expect("get") {
        Some(Versioned { value: Object::Block(b), revision }) => Versioned { value: b, revision },
        other => panic!("no block {cidr}: {other:?}"),
    }
}

async fn raw_handle(a: &Allocator<FileStore>, h: &str) -> Option<IpamHandle> {
    match a.store().get(&Key::Handle(h.into())).await.expect("get") {
        Some(Versioned { value: Object::Handle(h), .. }) => Some(h),
        _ => None,
    }
}

/// Rewrites a stored block as a foreign writer would.
async fn tamper(a: &Allocator<FileStore>, cidr: IpNet, f: impl FnOnce(&mut AllocationBlock)) {
    let v = raw_block(a, cidr).await;
    let mut b = v.value;
    f(&mut b);
    a.store().commit(vec![Write::put(Expect::Revision(v.revision), Object::Block(b))]).await.expect("tamper");
}

/// Stores a block (and a confirmed affinity for `node`) as given.
async fn put_foreign(a: &Allocator<FileStore>, b: AllocationBlock, node: &str) {
    let aff = BlockAffinity { node: node.into(), cidr: b.cidr, state: AffinityState::Confirmed };
    let writes = vec![Write::put(Expect::Absent, Object::Block(b)), Write::put(Expect::Absent, Object::Affinity(aff))];
    a.store().commit(writes).await.expect("put a foreign block");
}

fn expect_invalid(r: Result<impl std::fmt::Debug, IpamError>, cidr: IpNet, want: &dyn Fn(&BlockProblem) -> bool) {
    match r {
        Err(IpamError::InvalidBlock(e)) => {
            assert_eq!(e.cidr, cidr, "names the block: {e}");
            assert!(want(&e.problem), "unexpected problem: {e}");
            let msg = IpamError::InvalidBlock(e).to_string();
            assert!(msg.contains(&cidr.to_string()), "{msg}");
        }
        other => panic!("expected the invalid block {cidr} to be refused, got {other:?}"),
    }
}

type Damage = Box<dyn Fn(&mut AllocationBlock, u32)>;

/// Whether a refusal names the expected problem.
type Names = fn(&BlockProblem) -> bool;

/// Each malformation of a block's contents: the damage (given the block and
/// the ordinal of an allocated address) and the problem it must be named as.
fn damages() -> Vec<(&'static str, Damage, Names)> {
    vec![
        (
            "allocations shorter than the block",
            Box::new(|b, _| {
                b.allocations.pop();
            }),
            |p| matches!(p, BlockProblem::AllocationSlots { found: 3, expected: 4 }),
        ),
        ("allocations longer than the block", Box::new(|b, _| b.allocations.push(None)), |p| {
            matches!(p, BlockProblem::AllocationSlots { found: 5, expected: 4 })
        }),
        ("attribute index out of range", Box::new(|b, ord| b.allocations[ord as usize] = Some(7)), |p| {
            matches!(p, BlockProblem::AttributeOutOfRange { index: 7, .. })
        }),
        ("unallocated ordinal out of range", Box::new(|b, _| b.unallocated.push(99)), |p| {
            matches!(p, BlockProblem::FreeOrdinalOutOfRange { ordinal: 99, slots: 4 })
        }),
        (
            "unallocated ordinal listed twice",
            Box::new(|b, _| {
                let first = b.unallocated[0];
                b.unallocated.push(first);
            }),
            |p| matches!(p, BlockProblem::FreeOrdinalTwice(_)),
        ),
        ("allocated ordinal also listed as free", Box::new(|b, ord| b.unallocated.push(ord)), |p| {
            matches!(p, BlockProblem::AllocatedAndFree(_))
        }),
        (
            "free ordinal missing from unallocated",
            Box::new(|b, _| {
                b.unallocated.remove(0);
            }),
            |p| matches!(p, BlockProblem::Leaked(_)),
        ),
        ("sequence number at its maximum", Box::new(|b, _| b.sequence_number = u64::MAX), |p| {
            matches!(p, BlockProblem::SequenceNumberExhausted)
        }),
        ("affinity without a kind", Box::new(|b, _| b.affinity = Some("n1".into())), |p| {
            matches!(p, BlockProblem::BadAffinity(_))
        }),
        ("affinity with an empty node", Box::new(|b, _| b.affinity = Some("host:".into())), |p| {
            matches!(p, BlockProblem::BadAffinity(_))
        }),
        ("affinity naming a path", Box::new(|b, _| b.affinity = Some("host:../../etc".into())), |p| {
            matches!(p, BlockProblem::BadAffinity(_))
        }),
    ]
}

#[test]
fn each_malformed_block_is_refused_and_the_allocator_goes_on() {
    for (what, damage, want) in damages() {
        let (_dir, a) = setup();
        rt().block_on(async {
            // h1 and h2 on n1 share n1's first block.
            let first = a.auto_assign(&req("h1", "n1")).await.expect("h1");
            a.auto_assign(&req("h2", "n1")).await.expect("h2");
            let bad = first[0].block;
            let ord = raw_block(&a, bad).await.value.ordinal(first[0].ip).expect("ordinal");
            tamper(&a, bad, |b| damage(b, ord)).await;
            let before = raw_block(&a, bad).await;

            // The block's own addresses: refused, naming the block and problem.
            let free = bad.hosts().last().expect("an address of the block");
            expect_invalid(a.assign_ip(free, &req("h3", "n1")).await, bad, &want);
            expect_invalid(a.addresses_of("h1").await, bad, &want);

            // The allocator goes on with the pool's other blocks.
            let got = a.auto_assign(&req("h4", "n1")).await.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(!bad.contains(&got[0].ip), "{what}: assigned {} from the invalid block", got[0].ip);

            // Releasing: nothing in the bad block is lost; the handle keeps it.
            expect_invalid(a.release_handle("h1").await, bad, &want);
            let h1 = raw_handle(&a, "h1").await.unwrap_or_else(|| panic!("{what}: handle h1 deleted"));
            assert_eq!(h1.block.get(&bad.to_string()), Some(&1), "{what}: {h1:?}");
            expect_invalid(a.release_ips(&[first[0].ip]).await, bad, &want);

            // GC and block release leave it, its affinity and its handles alone.
            let report = a.gc(&BTreeSet::new()).await.unwrap_or_else(|e| panic!("{what}: gc: {e}"));
            assert!(report.invalid_blocks.iter().any(|e| e.cidr == bad && want(&e.problem)), "{what}: {report:?}");
            assert!(!report.affinities_deleted.iter().any(|(_, c)| *c == bad), "{what}: {report:?}");
            assert!(!report.handles_deleted.iter().any(|h| h == "h1" || h == "h2"), "{what}: {report:?}");
            a.release_empty_blocks(None).await.unwrap_or_else(|e| panic!("{what}: {e}"));
            let after = raw_block(&a, bad).await;
            assert_eq!((after.value, after.revision), (before.value, before.revision), "{what}: block changed");
            assert!(a.store().get(&Key::Affinity { node: "n1".into(), cidr: bad }).await.unwrap().is_some());

            // Reports name it; `bgpd-ipam show` does not fall over.
            let problems = check_consistency(a.store()).await.expect("check");
            assert!(problems.iter().any(|p| p.contains(&bad.to_string())), "{what}: {problems:?}");
            ipam::usage::usage(a.store(), a.design()).await.expect("usage");
            assert!(a.stats.invalid_blocks.load(Ordering::Relaxed) > 0, "{what}: not counted");
        });
    }
}

#[test]
fn blocks_with_a_cidr_that_is_no_block_are_never_used_nor_claimed_over() {
    let (_dir, a) = setup();
    rt().block_on(async {
        // Host bits set (covering 10.7.0.4/30), a /29 in a pool of /30 blocks
        // (covering 10.7.0.8/30 and 10.7.0.12/30), a /8 and an IPv6 /64 (no
        // block size at all): only 10.7.0.0/30 is left to claim. Each under
        // the key of its own (odd) CIDR, as a foreign writer would store it.
        let host_bits =
            AllocationBlock { cidr: net("10.7.0.5/30"), ..AllocationBlock::new(net("10.7.0.4/30"), None, false) };
        put_foreign(&a, host_bits, "n2").await;
        put_foreign(&a, AllocationBlock::new(net("10.7.0.8/29"), Some("n1"), false), "n9").await;
        let huge = AllocationBlock {
            cidr: net("11.0.0.0/8"),
            affinity: Some("host:n1".into()),
            strict_affinity: false,
            allocations: vec![None; 4],
            unallocated: (0..4).collect(),
            attributes: Vec::new(),
            sequence_number: 0,
        };
        put_foreign(&a, huge, "n8").await;
        let v6 = AllocationBlock { cidr: net("fd00::/64"), ..AllocationBlock::new(net("fd00::/126"), None, false) };
        put_foreign(&a, v6, "n7").await;

        let got = a.auto_assign(&AssignRequest { num_v4: 4, ..req("h1", "n1") }).await.expect("h1");
        let ips: Vec<IpAddr> = got.iter().map(|g| g.ip).collect();
        assert_eq!(ips, [ip("10.7.0.0"), ip("10.7.0.1"), ip("10.7.0.2"), ip("10.7.0.3")]);
        assert!(got.iter().all(|g| g.block == net("10.7.0.0/30")), "{got:?}");
        // Full: the invalid blocks are neither borrowed from nor claimed over.
        let err = a.auto_assign(&req("h2", "n1")).await.expect_err("pool exhausted");
        assert!(matches!(err, IpamError::PoolsExhausted { .. }), "{err}");
        // A requested address under an invalid block: refused, naming it.
        expect_invalid(a.assign_ip(ip("10.7.0.9"), &req("h3", "n1")).await, net("10.7.0.8/29"), &|p| {
            matches!(p, BlockProblem::NotThePoolsBlockSize { block_size: 30, .. })
        });
        expect_invalid(a.assign_ip(ip("10.7.0.6"), &req("h3", "n1")).await, net("10.7.0.5/30"), &|p| {
            matches!(p, BlockProblem::HostBitsSet { .. })
        });
        let blocks = a.store().list(&Scope::Blocks).await.expect("list");
        assert_eq!(blocks.len(), 5, "no block was claimed over an invalid one");

        let report = a.gc(&["h1".to_string()].into()).await.expect("gc");
        let named: BTreeSet<String> = report.invalid_blocks.iter().map(|e| e.to_string()).collect();
        for (cidr, what) in [
            ("10.7.0.5/30", "host bits set"),
            ("10.7.0.8/29", "blockSize /30 of IPPool \"small\""),
            ("11.0.0.0/8", "/8 is not a block size"),
            ("fd00::/64", "/64 is not a block size"),
        ] {
            assert!(named.iter().any(|n| n.contains(cidr) && n.contains(what)), "{cidr} {what}: {named:?}");
        }
        assert!(report.affinities_deleted.is_empty(), "{report:?}");
        ipam::usage::usage(a.store(), a.design()).await.expect("usage");
    });
}

#[test]
fn a_block_stored_under_another_key_is_refused() {
    // The file store keys a block by its own CIDR, so a misfiled block is what
    // another store (etcd, the API server) can hold: a wrapper serves one.
    struct Misfiled(FileStore);
    impl Store for Misfiled {
        async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, ipam::store::StoreError> {
            match key {
                Key::Block(c) if *c == net("10.7.0.4/30") => self.0.get(&Key::Block(net("10.7.0.0/30"))).await,
                _ => self.0.get(key).await,
            }
        }
        async fn list(&self, scope: &Scope) -> Result<Vec<Versioned<Object>>, ipam::store::StoreError> {
            self.0.list(scope).await
        }
        async fn commit(&self, writes: Vec<Write>) -> Result<(), ipam::store::StoreError> {
            self.0.commit(writes).await
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let design = Design::parse(&[(Path::new("pool.yaml"), POOL)]).expect("design");
    let a = Allocator::new(Misfiled(FileStore::open(dir.path()).expect("store")), design);
    rt().block_on(async {
        a.assign_ip(ip("10.7.0.1"), &req("h1", "n1")).await.expect("h1");
        match a.assign_ip(ip("10.7.0.5"), &req("h2", "n1")).await {
            Err(IpamError::InvalidBlock(e)) => {
                assert_eq!(e.cidr, net("10.7.0.4/30"));
                assert_eq!(e.problem, BlockProblem::StoredUnderOtherKey { stored: net("10.7.0.0/30") });
            }
            other => panic!("{other:?}"),
        }
    });
}

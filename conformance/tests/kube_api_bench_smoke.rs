//! `bench kube-api` (`conformance/src/bench/kube_api.rs`) at a small size, as a
//! correctness test (no rate or byte count is asserted beyond what the model
//! implies): 20 nodes, 5 s at 60x (5 minutes of the cluster, so every kubelet
//! posts its status once), with Service advertisement and pod churn. The one
//! bgpd datastore lists everything once, receives every Node status post and
//! every IPAM change on its watches, renews its watches as they time out
//! without listing again, and publishes nothing for the status posts alone.

use conformance::bench::kube_api::{measure, Options};

#[test]
fn one_bgpd_receives_every_change_and_only_renews_its_watches() {
    let o =
        Options { nodes: 20, seconds: 5, speed_up: 60, pods_per_node: 4, services: 5, status_changes: 0, pod_churn: 6 };
    let f = measure(&o).unwrap_or_else(|e| panic!("{e}"));
    // Nodes, BGPConfiguration, BGPPeers, BGPFilters, IPPools, IPAMBlocks,
    // IPAMHandles, BlockAffinities, Services and EndpointSlices: one list each
    // (everything fits a page), one watch each.
    assert_eq!(f.start.lists, 10, "{f:#?}");
    assert!(f.start.watches >= 10, "{f:#?}");
    assert!(f.node_updates >= 15, "20 nodes posting every 5 minutes of the cluster: {f:#?}");
    let nodes = f.sent.get("/api/v1/nodes").copied().unwrap_or_default();
    assert!(nodes.events >= f.node_updates, "every Node status post reaches the watch: {f:#?}");
    assert!(f.pod_changes > 0, "{f:#?}");
    let blocks = f.sent.get("/apis/crd.projectcalico.org/v1/ipamblocks").copied().unwrap_or_default();
    assert!(blocks.events >= f.pod_changes, "each pod start and stop rewrites a block: {f:#?}");
    assert_eq!(f.window.lists, 0, "no relist while the watches are renewed: {f:#?}");
    assert!(f.window.watches >= 10, "5 minutes of the cluster renew each 290 s watch: {f:#?}");
    assert_eq!(f.window.throttled, 0);
}

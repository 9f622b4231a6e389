//! What each node of `datastore/testdata/advertise.yaml` advertises (the fixture's
//! comments say which case each Service is).

use std::path::Path;

use super::*;
use crate::datastore::{load, Severity};

fn model() -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/datastore/testdata/advertise.yaml");
    let (m, problems) = load(&path).unwrap();
    assert!(problems.iter().all(|p| p.severity < Severity::Warning), "{problems:#?}");
    m
}

fn prefixes(o: &[Origination]) -> Vec<String> {
    o.iter().map(|o| o.prefix.to_string()).collect()
}

fn find<'a>(o: &'a [Origination], prefix: &str) -> &'a Origination {
    let p: IpNet = prefix.parse().unwrap();
    o.iter().find(|o| o.prefix == p).unwrap_or_else(|| panic!("{prefix} not originated: {:?}", prefixes(o)))
}

#[test]
fn node_with_local_endpoints_advertises_blocks_ranges_and_its_local_services() {
    let o = originations(&model(), "node-1");
    assert_eq!(
        prefixes(&o),
        [
            "10.96.0.0/12",
            "10.96.0.10/32",
            "10.96.0.50/32",
            "10.96.0.60/32",
            "10.244.0.0/26",
            "192.0.2.250/32",
            "198.51.100.0/24",
            "198.51.100.10/32",
            "203.0.113.0/24",
            "203.0.113.10/32",
            "fd00:96::/112",
            "fd00:96::10/128",
            "fd00:244::/122",
        ]
    );
    // Only the node's own blocks are blackholed.
    let holes: Vec<_> = o.iter().filter(|o| o.blackhole).map(|o| o.prefix.to_string()).collect();
    assert_eq!(holes, ["10.244.0.0/26", "fd00:244::/122"]);
    assert_eq!(find(&o, "10.244.0.0/26").cause, "IPAMBlock 10-244-0-0-26 (affinity host:node-1, IPPool pods-v4)");
    assert_eq!(
        find(&o, "198.51.100.10/32").cause,
        "Service default/web LoadBalancer IP: externalTrafficPolicy=Local, ready endpoint on this node"
    );
    assert!(find(&o, "192.0.2.250/32")
        .cause
        .starts_with("Service default/single LoadBalancer IP: externalTrafficPolicy=Cluster"));
}

#[test]
fn pool_with_bgp_export_disabled_is_not_advertised() {
    let o = originations(&model(), "node-1");
    assert!(!prefixes(&o).iter().any(|p| p.starts_with("10.250.")), "{:?}", prefixes(&o));
}

#[test]
fn a_block_in_no_pool_is_still_advertised_and_says_so() {
    let mut m = model();
    m.ip_pools.clear();
    let o = originations(&m, "node-1");
    assert!(find(&o, "10.250.0.0/26").cause.contains("in no IPPool"));
}

#[test]
fn local_services_follow_ready_endpoints_on_this_node() {
    let m = model();
    let o2 = originations(&m, "node-2");
    let p2 = prefixes(&o2);
    // metrics (Local) has its ready endpoint on node-2.
    assert!(p2.contains(&"10.96.0.30/32".to_string()), "{p2:?}");
    // web's endpoint on node-2 is not ready: neither its cluster IP nor its LB IP.
    for not in ["10.96.0.10/32", "198.51.100.10/32", "203.0.113.10/32", "fd00:96::10/128"] {
        assert!(!p2.contains(&not.to_string()), "{not} advertised by node-2");
    }
    // Endpoint on another node: metrics is not advertised by node-1.
    let p1 = prefixes(&originations(&m, "node-1"));
    assert!(!p1.contains(&"10.96.0.30/32".to_string()));
    // An unready endpoint on node-1 (unready) does not count; Cluster policy (api) is left to the ranges.
    for not in ["10.96.0.40/32", "198.51.100.40/32", "10.96.0.20/32", "198.51.100.20/32", "100.64.0.1/32"] {
        assert!(!p1.contains(&not.to_string()), "{not} advertised by node-1");
    }
}

#[test]
fn a_missing_ready_condition_counts_as_ready() {
    let mut m = model();
    // node-1's web endpoint has no conditions at all; make it the only endpoint.
    let slice = m.endpoint_slices.get_mut("default/web-v4").unwrap();
    slice.endpoints.retain(|e| e.node_name.as_deref() == Some("node-1"));
    m.endpoint_slices.remove("default/web-v6");
    let p = prefixes(&originations(&m, "node-1"));
    assert!(p.contains(&"10.96.0.10/32".to_string()), "{p:?}");
}

#[test]
fn endpoints_of_another_family_do_not_make_a_service_local() {
    let mut m = model();
    m.endpoint_slices.remove("default/web-v4");
    m.endpoint_slices.remove("default/web-v6");
    assert!(!prefixes(&originations(&m, "node-1")).contains(&"10.96.0.10/32".to_string()));
    // A single-stack IPv4 Service does not take an IPv6 slice as its own.
    let mut m = model();
    m.endpoint_slices.remove("default/web-v4");
    let web = m.services.get_mut("default/web").unwrap();
    web.ip_families = vec![crate::datastore::IpFamily::V4];
    assert!(!prefixes(&originations(&m, "node-1")).contains(&"10.96.0.10/32".to_string()));
}

#[test]
fn excluded_node_advertises_no_service_address_not_even_the_ranges() {
    let mut m = model();
    let o = originations(&m, "node-3");
    assert!(o.is_empty(), "{:?}", prefixes(&o));
    // Its blocks are still advertised.
    let b = m.ipam_blocks.get_mut("10-244-0-64-26").unwrap();
    b.affinity = Some(crate::datastore::Affinity::Host("node-3".into()));
    assert_eq!(prefixes(&originations(&m, "node-3")), ["10.244.0.64/26"]);
}

#[test]
fn load_balancer_aggregation_disabled_gives_single_addresses_instead_of_the_range() {
    let mut m = model();
    m.bgp_configuration.service_load_balancer_aggregation = false;
    let p1 = prefixes(&originations(&m, "node-1"));
    assert!(!p1.contains(&"198.51.100.0/24".to_string()), "{p1:?}");
    // The other ranges stay.
    assert!(p1.contains(&"203.0.113.0/24".to_string()) && p1.contains(&"10.96.0.0/12".to_string()));
    // api (Cluster) has a ready endpoint somewhere (node-2): every node advertises it.
    for want in ["10.96.0.20/32", "198.51.100.20/32", "198.51.100.10/32"] {
        assert!(p1.contains(&want.to_string()), "{want} missing: {p1:?}");
    }
    // unready has no ready endpoint anywhere; an address outside the ranges never goes out.
    assert!(!p1.contains(&"198.51.100.40/32".to_string()));
    assert!(!p1.contains(&"100.64.0.1/32".to_string()));
}

#[test]
fn communities_come_from_every_containing_prefix_advertisement() {
    let o = originations(&model(), "node-1");
    let lb = [ConfiguredCommunity::Large(64512, 300, 1), ConfiguredCommunity::Standard(64512, 120)];
    assert_eq!(find(&o, "198.51.100.0/24").communities, lb);
    assert_eq!(find(&o, "198.51.100.10/32").communities, lb, "a /32 inside the entry's CIDR");
    assert_eq!(
        find(&o, "10.244.0.0/26").communities,
        [ConfiguredCommunity::Standard(64512, 100), ConfiguredCommunity::Standard(64512, 101)],
        "both entries apply, 64512:100 once"
    );
    assert!(find(&o, "10.96.0.0/12").communities.is_empty());
}

#[test]
fn a_prefix_with_two_causes_is_originated_once() {
    let mut m = model();
    // The web external IP is also the cluster IP of another service (Kubernetes allows it).
    let web = m.services["default/web"].clone();
    let mut twin = web.clone();
    twin.name = "twin".into();
    m.services.insert(twin.key(), twin);
    let s = m.endpoint_slices["default/web-v4"].clone();
    let mut s2 = s.clone();
    s2.name = "twin-v4".into();
    s2.service = Some("twin".into());
    m.endpoint_slices.insert(s2.key(), s2);
    let o = originations(&m, "node-1");
    let n = o.iter().filter(|o| o.prefix.to_string() == "10.96.0.10/32").count();
    assert_eq!(n, 1);
    let cause = &find(&o, "10.96.0.10/32").cause;
    assert!(cause.contains("default/web") && cause.contains("default/twin"), "{cause}");
    // Deterministic: the same model gives the same list.
    assert_eq!(o, originations(&m, "node-1"));
}

#[test]
fn no_services_configured_means_blocks_only() {
    let mut m = model();
    m.bgp_configuration = crate::datastore::BgpConfiguration::default();
    assert_eq!(prefixes(&originations(&m, "node-1")), ["10.244.0.0/26", "fd00:244::/122"]);
}

#[test]
fn borrowed_address_is_advertised_by_the_pods_node_and_the_block_by_its_owner() {
    let mut m = model();
    let b = m.ipam_blocks.get_mut("10-244-0-0-26").unwrap();
    b.borrowed.push(crate::datastore::BorrowedAddress {
        ip: "10.244.0.5".parse().unwrap(),
        node: "node-3".into(),
        handle: Some("k8s-pod-network.abc".into()),
    });
    // node-3 is excluded from service advertisement, not from its pods' addresses.
    let o = originations(&m, "node-3");
    assert_eq!(prefixes(&o), ["10.244.0.5/32"]);
    assert_eq!(
        o[0].cause,
        "borrowed from IPAMBlock 10-244-0-0-26 (affinity host:node-1, IPPool pods-v4) by handle \
         k8s-pod-network.abc on this node"
    );
    assert!(!o[0].blackhole, "the pod's own route, not a blackhole");
    let o1 = originations(&m, "node-1");
    assert!(find(&o1, "10.244.0.0/26").blackhole, "the owner keeps the block");
    assert!(!prefixes(&o1).contains(&"10.244.0.5/32".to_string()));
    // A pool with BGP export disabled exports no borrowed address either.
    m.ip_pools.values_mut().for_each(|p| p.disable_bgp_export = true);
    assert!(originations(&m, "node-3").is_empty());
}

/// The fixture's model with an IPAMHandle carrying `floating` (`{ip, target, node}`
/// flow mappings), read through the datastore parser as a store would hand it over.
fn with_floating_ips(floating: &str) -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/datastore/testdata/advertise.yaml");
    let yaml = std::fs::read_to_string(path).unwrap();
    let handle = format!(
        "---\napiVersion: crd.projectcalico.org/v1\nkind: IPAMHandle\nmetadata: {{name: k8s-pod-network.c1}}\n\
         spec: {{handleID: k8s-pod-network.c1, floatingIPs: [{floating}]}}\n"
    );
    let sources = [crate::datastore::SourceText { path: "ds.yaml".into(), text: yaml + &handle }];
    let (m, problems) = crate::datastore::parse_sources(&sources).unwrap();
    assert!(problems.iter().all(|p| p.severity < Severity::Warning), "{problems:#?}");
    m
}

#[test]
fn floating_ip_is_advertised_by_the_pods_node_from_inside_a_pool() {
    let m = with_floating_ips(
        "{ip: 10.244.200.7, target: 10.244.0.5, node: node-3}, \
         {ip: 'fd00:244:0:ff::7', target: 'fd00:244::5', node: node-3}, \
         {ip: 10.244.200.8, target: 10.244.0.6, node: node-2}",
    );
    // node-3 is excluded from service advertisement, not from its pods' floating IPs.
    let o = originations(&m, "node-3");
    assert_eq!(prefixes(&o), ["10.244.200.7/32", "fd00:244:0:ff::7/128"]);
    assert_eq!(
        o[0].cause,
        "floating IP of handle k8s-pod-network.c1 \u{2192} pod address 10.244.0.5 (IPPool pods-v4) on this node"
    );
    assert!(!o[0].blackhole);
    let o2 = originations(&m, "node-2");
    assert_eq!(find(&o2, "10.244.200.8/32").cause.matches("floating IP").count(), 1);
    assert!(!prefixes(&originations(&m, "node-1")).iter().any(|p| p.starts_with("10.244.200.")));
}

#[test]
fn floating_ip_outside_any_pool_or_in_a_pool_not_exported_is_not_advertised() {
    // 192.0.2.0/24 is in no pool; 10.250.0.0/16 is the quarantine pool (disableBGPExport).
    let m = with_floating_ips(
        "{ip: 192.0.2.77, target: 10.244.0.5, node: node-3}, {ip: 10.250.1.1, target: 10.244.0.5, node: node-3}, \
         {ip: 10.244.200.7, target: 10.244.0.5, node: node-3}",
    );
    assert_eq!(prefixes(&originations(&m, "node-3")), ["10.244.200.7/32"]);
    let mut m = m;
    m.ip_pools.values_mut().for_each(|p| p.disable_bgp_export = true);
    assert!(originations(&m, "node-3").is_empty());
}

#[test]
fn floating_ip_that_is_also_a_service_address_is_originated_once_with_both_causes() {
    // 10.96.0.10 is a cluster IP that every node advertises (see the first test).
    let mut m = with_floating_ips("{ip: 10.96.0.10, target: 10.244.0.5, node: node-1}");
    let o = originations(&m, "node-1");
    assert!(!find(&o, "10.96.0.10/32").cause.contains("floating IP"), "10.96.0.0/12 is in no pool");
    let pool = crate::datastore::IpPool {
        name: "floating".into(),
        cidr: "10.96.0.0/24".parse().unwrap(),
        ..m.ip_pools["pods-v4"].clone()
    };
    m.ip_pools.insert("floating".into(), pool);
    let o = originations(&m, "node-1");
    let cause = &find(&o, "10.96.0.10/32").cause;
    assert!(cause.contains("floating IP of handle k8s-pod-network.c1") && cause.contains("cluster IP"), "{cause}");
}

use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn fr(prefix: &str, hops: &[&str]) -> FibRoute {
    FibRoute { prefix: net(prefix), next_hops: hops.iter().map(|h| ip(h)).collect(), priority: None }
}

fn unicast(prefix: &str, hops: &[&str]) -> RouteChange {
    RouteChange::Upsert(Route::unicast(net(prefix), hops.iter().map(|h| NextHop::via(ip(h))).collect()))
}

#[test]
fn queued_forwarding_batches_coalesce_to_the_last_change_per_prefix() {
    let mut d = Desired::default();
    let mut changes = d.forwarding(vec![fr("10.1.0.0/24", &["10.0.0.2"]), fr("10.2.0.0/24", &["10.0.0.2"])]);
    changes.extend(d.forwarding(vec![fr("10.1.0.0/24", &[])]));
    changes.extend(d.forwarding(vec![fr("10.3.0.0/24", &["10.0.0.3"]), fr("10.1.0.0/24", &["10.0.0.4"])]));
    assert_eq!(
        coalesce(changes),
        vec![
            unicast("10.2.0.0/24", &["10.0.0.2"]),
            unicast("10.3.0.0/24", &["10.0.0.3"]),
            unicast("10.1.0.0/24", &["10.0.0.4"]),
        ],
        "one change per prefix, its last"
    );
}

#[test]
fn learned_routes_become_unicast_with_every_next_hop_and_leave_when_empty() {
    let mut d = Desired::default();
    let c = d.forwarding(vec![fr("10.1.0.0/24", &["10.0.0.2", "10.0.0.3"]), fr("fd00:1::/64", &["fd00::2"])]);
    assert_eq!(c, vec![unicast("10.1.0.0/24", &["10.0.0.2", "10.0.0.3"]), unicast("fd00:1::/64", &["fd00::2"])]);
    let c = d.forwarding(vec![fr("10.1.0.0/24", &[])]);
    assert_eq!(c, vec![RouteChange::Remove(net("10.1.0.0/24"))]);
    assert!(!d.learned.contains_key(&net("10.1.0.0/24")));
}

#[test]
fn a_priority_is_the_routes_metric_and_none_leaves_the_fibs_default() {
    let mut d = Desired::default();
    let with = |p: &str, priority: Option<u32>| FibRoute { priority, ..fr(p, &["10.0.0.2"]) };
    let metric_of = |c: &RouteChange| match c {
        RouteChange::Upsert(r) => r.metric,
        RouteChange::Remove(p) => panic!("{p} removed"),
    };
    let c = d.forwarding(vec![with("10.1.0.0/24", Some(512)), with("10.2.0.0/24", None)]);
    assert_eq!(c.iter().map(metric_of).collect::<Vec<_>>(), vec![Some(512), None]);
    // A new priority alone is a new route.
    let c = d.forwarding(vec![with("10.1.0.0/24", Some(300))]);
    assert_eq!(c.iter().map(metric_of).collect::<Vec<_>>(), vec![Some(300)]);
    // Through tunl0 (an IPIP pool) the metric stays.
    d.tunnel = true;
    d.set_encap(Encap { pools: vec![(net("10.1.0.0/16"), PoolForm::IpipAlways)], subnet: None });
    let c = d.forwarding(vec![with("10.1.0.0/24", Some(300))]);
    let RouteChange::Upsert(r) = &c[0] else { panic!("{c:?}") };
    assert_eq!(
        (r.metric, r.target.clone()),
        (Some(300), fib::Target::Unicast(vec![NextHop::via_dev(ip("10.0.0.2"), IPIP_DEVICE).onlink()]))
    );
    // A block for the prefix wins: a blackhole, at the default metric.
    let c = d.set_blackholes(vec![net("10.1.0.0/24")]);
    assert_eq!(c, vec![RouteChange::Upsert(Route::blackhole(net("10.1.0.0/24")))]);
}

#[test]
fn ipv4_goes_through_ipv6_next_hops_but_ipv6_never_through_ipv4() {
    let mut d = Desired::default();
    // RFC 8950: the FIB writes these with RTA_VIA.
    let c = d.forwarding(vec![fr("10.1.0.0/24", &["fd00::2"])]);
    assert_eq!(c, vec![unicast("10.1.0.0/24", &["fd00::2"])]);
    let c = d.forwarding(vec![fr("fd10::/64", &["10.0.0.2"])]);
    assert_eq!(c, vec![RouteChange::Remove(net("fd10::/64"))]);
    let c = d.forwarding(vec![fr("fd11::/64", &["10.0.0.2", "fd00::2"])]);
    assert_eq!(c, vec![unicast("fd11::/64", &["fd00::2"])]);
}

#[test]
fn a_block_is_a_blackhole_and_wins_over_a_learned_route() {
    let mut d = Desired::default();
    let c = d.set_blackholes(vec![net("10.244.0.0/26")]);
    assert_eq!(c, vec![RouteChange::Upsert(Route::blackhole(net("10.244.0.0/26")))]);
    // Learned for the block's prefix: remembered, not installed.
    assert!(d.forwarding(vec![fr("10.244.0.0/26", &["10.0.0.2"])]).is_empty());
    // The block goes: the learned route takes its place.
    let c = d.set_blackholes(vec![net("10.244.1.0/26")]);
    assert_eq!(
        c,
        vec![unicast("10.244.0.0/26", &["10.0.0.2"]), RouteChange::Upsert(Route::blackhole(net("10.244.1.0/26")))]
    );
    // A block that goes without a learned route is removed; an unchanged set changes nothing.
    assert_eq!(d.set_blackholes(vec![]), vec![RouteChange::Remove(net("10.244.1.0/26"))]);
    assert!(d.set_blackholes(vec![]).is_empty());
}

#[test]
fn block_prefixes_are_truncated_to_their_network() {
    let mut d = Desired::default();
    let c = d.set_blackholes(vec![net("10.244.0.5/26")]);
    assert_eq!(c, vec![RouteChange::Upsert(Route::blackhole(net("10.244.0.0/26")))]);
}

#[test]
fn a_peer_reached_by_a_gateway_gets_a_static_route_that_bgp_does_not_override() {
    let mut d = Desired::default();
    let c = d.set_statics(vec![(net("192.0.2.1/32"), ip("10.0.0.254"))]);
    assert_eq!(c, vec![unicast("192.0.2.1/32", &["10.0.0.254"])]);
    // The peer's address learned over BGP does not replace the static route.
    assert!(d.forwarding(vec![fr("192.0.2.1/32", &["10.0.0.9"])]).is_empty());
    assert!(d.set_statics(vec![(net("192.0.2.1/32"), ip("10.0.0.254"))]).is_empty(), "unchanged");
    // Gateway changed, then the peer's reachableBy removed: the learned route takes over.
    assert_eq!(
        d.set_statics(vec![(net("192.0.2.1/32"), ip("10.0.0.253"))]),
        vec![unicast("192.0.2.1/32", &["10.0.0.253"])]
    );
    assert_eq!(d.set_statics(vec![]), vec![unicast("192.0.2.1/32", &["10.0.0.9"])]);
}

// ----- encapsulation per IP pool --------------------------------------------------

fn tunnel(prefix: &str, hops: &[&str]) -> RouteChange {
    RouteChange::Upsert(Route::unicast(
        net(prefix),
        hops.iter().map(|h| NextHop::via_dev(ip(h), IPIP_DEVICE).onlink()).collect(),
    ))
}

/// bgpd programs every pool's routes here (`programClusterRoutes: Enabled`),
/// the IPIP ones included.
const NODE_AND_POOLS: &str = "\
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {programClusterRoutes: Enabled}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1}
spec: {bgp: {ipv4Address: 192.168.1.10/24}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: always}
spec: {cidr: 10.244.0.0/16, ipipMode: Always}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: plain-inside-always}
spec: {cidr: 10.244.128.0/20, ipipMode: Never}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: cross}
spec: {cidr: 10.245.0.0/16, ipipMode: CrossSubnet}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: never}
spec: {cidr: 10.246.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: vxlan}
spec: {cidr: 10.247.0.0/16, vxlanMode: CrossSubnet}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v6}
spec: {cidr: 'fd00:244::/48'}
";

fn model_of(yaml: &str) -> Model {
    let (m, problems) =
        crate::datastore::parse_sources(&[crate::datastore::SourceText { path: "ds.yaml".into(), text: yaml.into() }])
            .unwrap();
    assert!(problems.iter().all(|p| p.severity != crate::datastore::Severity::Error), "{problems:?}");
    m
}

/// Desired with the pools above for node n1, tunl0 present.
fn with_pools() -> Desired {
    let mut d = Desired { tunnel: true, ..Desired::default() };
    assert!(d.set_encap(encap(&model_of(NODE_AND_POOLS), "n1")).is_empty(), "nothing learned yet");
    d
}

#[test]
fn the_node_subnet_and_ipv4_pools_are_read_from_the_model() {
    let e = encap(&model_of(NODE_AND_POOLS), "n1");
    assert_eq!(e.subnet, Some("192.168.1.0/24".parse().unwrap()));
    let pools: Vec<(String, PoolForm)> = e.pools.iter().map(|(c, f)| (c.to_string(), *f)).collect();
    assert_eq!(
        pools,
        [
            ("fd00:244::/48", PoolForm::Plain),
            ("10.244.128.0/20", PoolForm::Plain),
            ("10.244.0.0/16", PoolForm::IpipAlways),
            ("10.245.0.0/16", PoolForm::IpipCrossSubnet),
            ("10.246.0.0/16", PoolForm::Plain),
            ("10.247.0.0/16", PoolForm::Felix),
        ]
        .map(|(c, f)| (c.to_string(), f))
    );
    // Another node name has no Node object: no IPv4 subnet, no IPv4 pool rules
    // (Calico's template writes them only for a node with an IPv4 network).
    let other = encap(&model_of(NODE_AND_POOLS), "n2");
    assert_eq!((other.subnet, other.pools), (None, vec![(net("fd00:244::/48"), PoolForm::Plain)]));
}

#[test]
fn program_cluster_routes_leaves_the_pools_it_does_not_name_to_felix() {
    // (value, IPIP pool, unencapsulated IPv4 pool, unencapsulated IPv6 pool); a
    // VXLAN pool is Felix's whatever the value. Absent: Calico's default,
    // EnabledNoEncapOnly (as is a value Calico does not know).
    let cases: [(&str, PoolForm, PoolForm, PoolForm); 6] = [
        ("Enabled", PoolForm::IpipAlways, PoolForm::Plain, PoolForm::Plain),
        ("Disabled", PoolForm::Felix, PoolForm::Felix, PoolForm::Felix),
        ("EnabledIPIPOnly", PoolForm::IpipAlways, PoolForm::Felix, PoolForm::Felix),
        ("EnabledNoEncapOnly", PoolForm::Felix, PoolForm::Plain, PoolForm::Plain),
        ("", PoolForm::Felix, PoolForm::Plain, PoolForm::Plain),
        ("Sometimes", PoolForm::Felix, PoolForm::Plain, PoolForm::Plain),
    ];
    for (value, ipip, plain, plain6) in cases {
        let field = if value.is_empty() { String::new() } else { format!("programClusterRoutes: {value}") };
        let yaml = NODE_AND_POOLS.replace("programClusterRoutes: Enabled", &field);
        let e = encap(&model_of(&yaml), "n1");
        let form = |c: &str| e.pools.iter().find(|(p, _)| *p == net(c)).map(|(_, f)| *f);
        assert_eq!(form("10.244.0.0/16"), Some(ipip), "{value:?}: the IPIP pool");
        assert_eq!(form("10.246.0.0/16"), Some(plain), "{value:?}: the unencapsulated pool");
        assert_eq!(form("fd00:244::/48"), Some(plain6), "{value:?}: the IPv6 pool");
        assert_eq!(form("10.247.0.0/16"), Some(PoolForm::Felix), "{value:?}: the VXLAN pool");
    }
    // Felix's routes are not installed, and are counted for `show fib`.
    let yaml = NODE_AND_POOLS.replace("programClusterRoutes: Enabled", "programClusterRoutes: Disabled");
    let mut d = Desired { tunnel: true, ..Desired::default() };
    d.set_encap(encap(&model_of(&yaml), "n1"));
    let c = d.forwarding(vec![fr("10.246.1.0/26", &["10.0.0.2"]), fr("172.16.0.0/24", &["10.0.0.2"])]);
    assert_eq!(c, vec![RouteChange::Remove(net("10.246.1.0/26")), unicast("172.16.0.0/24", &["10.0.0.2"])]);
    assert_eq!(d.felix.len(), 1, "a route outside every pool is no cluster route: bgpd's");
}

#[test]
fn ipip_always_goes_through_tunl0_onlink_for_every_next_hop() {
    let mut d = with_pools();
    let c = d.forwarding(vec![fr("10.244.1.0/26", &["192.168.1.11"]), fr("10.244.2.0/26", &["10.0.0.2", "10.0.0.3"])]);
    assert_eq!(c, vec![tunnel("10.244.1.0/26", &["192.168.1.11"]), tunnel("10.244.2.0/26", &["10.0.0.2", "10.0.0.3"])]);
    assert_eq!(d.ipip.len(), 2);
    // An IPv6 next hop (RFC 8950) cannot be a tunl0 endpoint: reached directly.
    let c = d.forwarding(vec![fr("10.244.3.0/26", &["fd00::11"])]);
    assert_eq!(c, vec![unicast("10.244.3.0/26", &["fd00::11"])]);
}

#[test]
fn ipip_cross_subnet_tunnels_only_next_hops_off_this_nodes_subnet() {
    let mut d = with_pools();
    let c = d.forwarding(vec![
        fr("10.245.1.0/26", &["192.168.1.11"]),
        fr("10.245.2.0/26", &["192.168.2.11"]),
        fr("10.245.3.0/26", &["192.168.1.12", "192.168.2.12"]),
    ]);
    assert_eq!(
        c,
        vec![
            unicast("10.245.1.0/26", &["192.168.1.11"]),
            tunnel("10.245.2.0/26", &["192.168.2.11"]),
            RouteChange::Upsert(Route::unicast(
                net("10.245.3.0/26"),
                vec![NextHop::via(ip("192.168.1.12")), NextHop::via_dev(ip("192.168.2.12"), IPIP_DEVICE).onlink()],
            )),
        ]
    );
    assert!(!d.ipip.contains(&net("10.245.1.0/26")));
    assert!(d.ipip.contains(&net("10.245.2.0/26")) && d.ipip.contains(&net("10.245.3.0/26")));
}

#[test]
fn never_pools_and_routes_outside_any_pool_stay_plain() {
    let mut d = with_pools();
    let c = d.forwarding(vec![
        fr("10.246.1.0/26", &["10.0.0.2"]),
        fr("10.244.130.0/26", &["10.0.0.2"]),
        fr("172.16.0.0/24", &["10.0.0.2"]),
        fr("fd00:244::/122", &["fd00::2"]),
    ]);
    assert_eq!(
        c,
        vec![
            unicast("10.246.1.0/26", &["10.0.0.2"]),
            unicast("10.244.130.0/26", &["10.0.0.2"]),
            unicast("172.16.0.0/24", &["10.0.0.2"]),
            unicast("fd00:244::/122", &["fd00::2"]),
        ]
    );
    assert!(d.ipip.is_empty());
}

#[test]
fn a_prefix_wider_than_an_ipip_pool_is_not_in_it() {
    let mut d = with_pools();
    assert_eq!(d.forwarding(vec![fr("10.0.0.0/8", &["10.0.0.2"])]), vec![unicast("10.0.0.0/8", &["10.0.0.2"])]);
}

#[test]
fn vxlan_pool_routes_are_left_to_felix() {
    let mut d = with_pools();
    let c = d.forwarding(vec![fr("10.247.1.0/26", &["192.168.2.11"])]);
    assert_eq!(c, vec![RouteChange::Remove(net("10.247.1.0/26"))]);
    assert!(d.felix.contains(&net("10.247.1.0/26")));
    // Withdrawn: nothing left to track.
    d.forwarding(vec![fr("10.247.1.0/26", &[])]);
    assert!(d.felix.is_empty());
}

#[test]
fn without_tunl0_ipip_routes_go_plain_and_return_to_the_tunnel_when_it_appears() {
    let mut d = with_pools();
    assert_eq!(d.set_tunnel(false), vec![], "nothing learned yet");
    let c = d.forwarding(vec![fr("10.244.1.0/26", &["10.0.0.2"]), fr("10.246.1.0/26", &["10.0.0.2"])]);
    assert_eq!(c, vec![unicast("10.244.1.0/26", &["10.0.0.2"]), unicast("10.246.1.0/26", &["10.0.0.2"])]);
    assert!(d.tunnel_wanted_but_missing());
    // tunl0 appears: only the IPIP pool's route changes.
    assert_eq!(d.set_tunnel(true), vec![tunnel("10.244.1.0/26", &["10.0.0.2"])]);
    assert!(!d.tunnel_wanted_but_missing());
    assert!(d.set_tunnel(true).is_empty(), "unchanged");
    assert_eq!(d.set_tunnel(false), vec![unicast("10.244.1.0/26", &["10.0.0.2"])]);
}

#[test]
fn a_pool_edit_rewrites_only_the_routes_whose_form_changes() {
    let mut d = with_pools();
    d.forwarding(vec![
        fr("10.244.1.0/26", &["192.168.1.11"]),
        fr("10.246.1.0/26", &["192.168.1.11"]),
        fr("10.246.2.0/26", &["192.168.2.11"]),
    ]);
    // Pool "never" becomes CrossSubnet: the route over a next hop off the subnet moves
    // into the tunnel, the one on the subnet stays as it is.
    let edited = NODE_AND_POOLS.replace("{cidr: 10.246.0.0/16}", "{cidr: 10.246.0.0/16, ipipMode: CrossSubnet}");
    let c = d.set_encap(encap(&model_of(&edited), "n1"));
    assert_eq!(c, vec![tunnel("10.246.2.0/26", &["192.168.2.11"])]);
    // Pool "always" becomes Never: its route leaves the tunnel.
    let edited = edited.replace("{cidr: 10.244.0.0/16, ipipMode: Always}", "{cidr: 10.244.0.0/16}");
    let c = d.set_encap(encap(&model_of(&edited), "n1"));
    assert_eq!(c, vec![unicast("10.244.1.0/26", &["192.168.1.11"])]);
    assert_eq!(d.ipip.iter().copied().collect::<Vec<_>>(), vec![net("10.246.2.0/26")]);
    // The same again: nothing.
    assert!(d.set_encap(encap(&model_of(&edited), "n1")).is_empty());
}

#[test]
fn blackholes_and_statics_are_never_encapsulated() {
    let mut d = with_pools();
    d.forwarding(vec![fr("10.244.1.0/26", &["10.0.0.2"])]);
    assert_eq!(
        d.set_blackholes(vec![net("10.244.1.0/26")]),
        vec![RouteChange::Upsert(Route::blackhole(net("10.244.1.0/26")))]
    );
    assert!(d.ipip.is_empty(), "a blackholed prefix is not an IPIP route");
    let c = d.set_statics(vec![(net("10.244.9.9/32"), ip("10.0.0.254"))]);
    assert_eq!(c, vec![unicast("10.244.9.9/32", &["10.0.0.254"])]);
    assert_eq!(d.set_blackholes(vec![]), vec![tunnel("10.244.1.0/26", &["10.0.0.2"])]);
    assert_eq!(d.ipip.len(), 1);
}

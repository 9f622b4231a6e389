//! The FIB against the real kernel, each test in a network namespace of its own, checked
//! with `ip -j route show table N`. Needs root (CI runs as root with CI=true).

mod common;

use std::net::IpAddr;
use std::num::NonZeroU8;

use common::{gateways, TestNs};
use fib::{Fib, FibConfig, FibEvent, FibMetrics, NextHop, Route, RouteChange, RouteErrorKind};
use ipnet::IpNet;
use testgate::testbed::RouteMonitor;

const TABLE: u32 = 100;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn config(ns: &TestNs) -> FibConfig {
    FibConfig { table: TABLE, netns: Some(ns.path()), ..FibConfig::default() }
}

fn upserts(routes: Vec<Route>) -> Vec<RouteChange> {
    routes.into_iter().map(RouteChange::Upsert).collect()
}

fn w(n: u8) -> NonZeroU8 {
    NonZeroU8::new(n).unwrap()
}

fn sorted(mut v: Vec<(String, String, u64)>) -> Vec<(String, String, u64)> {
    v.sort();
    v
}

fn hop(gw: &str, dev: &str, weight: u64) -> (String, String, u64) {
    (gw.to_owned(), dev.to_owned(), weight)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_replace_delete_ecmp_blackhole_unreachable() {
    if !testgate::require_root_and_cmds("add_replace_delete_ecmp_blackhole_unreachable", &["ip"]) {
        return;
    }
    let ns = TestNs::new("basic");
    let fib = Fib::spawn(config(&ns), FibMetrics::unregistered()).unwrap();
    let h = fib.handle.clone();
    let mut with_src = Route::unicast(net("10.1.0.0/24"), vec![NextHop::via(ip("192.0.2.2"))]);
    with_src.pref_src = Some(ip("192.0.2.1"));
    h.apply(upserts(vec![
        with_src,
        Route::unicast(
            net("10.2.0.0/24"),
            vec![NextHop::via(ip("192.0.2.2")), NextHop::via(ip("198.51.100.2")).weight(w(3))],
        ),
        Route::blackhole(net("10.3.0.0/26")),
        Route::unreachable(net("10.4.0.0/24")),
        Route::unicast(net("10.6.0.0/24"), vec![NextHop::dev("veth2")]),
        Route::unicast(net("2001:db8:100::/64"), vec![NextHop::via(ip("2001:db8:1::2"))]),
        Route::unicast(
            net("2001:db8:200::/64"),
            vec![
                NextHop::via_dev(ip("2001:db8:1::2"), "veth0"),
                NextHop::via_dev(ip("2001:db8:2::2"), "veth2").weight(w(2)),
            ],
        ),
        Route::blackhole(net("2001:db8:300::/56")),
    ]))
    .await
    .unwrap();
    let failures = h.settled().await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");

    let r = ns.route(TABLE, "10.1.0.0/24").expect("10.1.0.0/24 installed");
    assert_eq!(r["protocol"], "bgp");
    assert_eq!(r["metric"], 20);
    assert_eq!(r["prefsrc"], "192.0.2.1");
    assert_eq!(gateways(&r), vec![hop("192.0.2.2", "veth0", 1)]);

    let r = ns.route(TABLE, "10.2.0.0/24").expect("ECMP route installed");
    assert_eq!(sorted(gateways(&r)), vec![hop("192.0.2.2", "veth0", 1), hop("198.51.100.2", "veth2", 3)]);
    let r = ns.route(TABLE, "10.3.0.0/26").expect("blackhole installed");
    assert_eq!(r["type"], "blackhole");
    assert_eq!(r["protocol"], "bgp");
    let r = ns.route(TABLE, "10.4.0.0/24").expect("unreachable installed");
    assert_eq!(r["type"], "unreachable");
    let r = ns.route(TABLE, "10.6.0.0/24").expect("device route installed");
    assert_eq!(r["dev"], "veth2");
    assert_eq!(r["scope"], "link");

    let r = ns.route(TABLE, "2001:db8:100::/64").expect("IPv6 route");
    assert_eq!(gateways(&r), vec![hop("2001:db8:1::2", "veth0", 1)]);
    assert_eq!(r["protocol"], "bgp");
    let r = ns.route(TABLE, "2001:db8:200::/64").expect("IPv6 ECMP route");
    assert_eq!(sorted(gateways(&r)), vec![hop("2001:db8:1::2", "veth0", 1), hop("2001:db8:2::2", "veth2", 2)]);
    let r = ns.route(TABLE, "2001:db8:300::/56").expect("IPv6 blackhole");
    assert_eq!(r["type"], "blackhole");

    // Replace one, delete two, then check the rest is untouched.
    h.apply(vec![
        RouteChange::Upsert(Route::unicast(net("10.1.0.0/24"), vec![NextHop::via(ip("198.51.100.2"))])),
        RouteChange::Remove(net("10.4.0.0/24")),
        RouteChange::Remove(net("2001:db8:200::/64")),
    ])
    .await
    .unwrap();
    let failures = h.settled().await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let r = ns.route(TABLE, "10.1.0.0/24").expect("replaced route");
    assert_eq!(gateways(&r), vec![hop("198.51.100.2", "veth2", 1)]);
    assert!(r.get("prefsrc").is_none(), "pref_src dropped on replace: {r}");
    assert!(ns.route(TABLE, "10.4.0.0/24").is_none());
    assert!(ns.route(TABLE, "2001:db8:200::/64").is_none());
    assert_eq!(ns.routes(TABLE).len(), 6);

    // Shutdown without graceful restart removes our routes.
    h.shutdown().await.unwrap();
    assert!(ns.routes(TABLE).is_empty(), "{:?}", ns.routes(TABLE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onlink_through_tunnel_devices() {
    if !testgate::require_root_and_cmds("onlink_through_tunnel_devices", &["ip"]) {
        return;
    }
    let ns = TestNs::new("tunnel");
    ns.ip(&[
        "link",
        "add",
        "vxlan.calico",
        "type",
        "vxlan",
        "id",
        "4096",
        "dstport",
        "4789",
        "local",
        "192.0.2.1",
        "dev",
        "veth0",
    ]);
    ns.ip(&["addr", "add", "10.244.0.1/32", "dev", "vxlan.calico"]);
    ns.ip(&["link", "set", "vxlan.calico", "up"]);
    // An IPIP device where the kernel has the module; else a second VXLAN
    // device under the same name: the FIB writes the same onlink route either way.
    if let Err(e) = ns.try_ip(&["link", "add", "name", "tunl1", "type", "ipip", "remote", "any"]) {
        testgate::note(
            "onlink_through_tunnel_devices",
            format_args!("this kernel has no ipip module ({e}); tunl1 is a VXLAN device"),
        );
        ns.ip(&["link", "add", "tunl1", "type", "vxlan", "id", "4097", "dstport", "4790", "dev", "veth2"]);
    }
    ns.ip(&["link", "set", "tunl1", "up"]);
    let fib = Fib::spawn(config(&ns), FibMetrics::unregistered()).unwrap();
    let h = fib.handle.clone();
    let routes = vec![
        Route::unicast(net("10.244.1.0/26"), vec![NextHop::via_dev(ip("10.244.1.0"), "vxlan.calico").onlink()]),
        Route::unicast(net("10.244.2.0/26"), vec![NextHop::via_dev(ip("172.16.2.2"), "tunl1").onlink()]),
    ];
    h.apply(upserts(routes)).await.unwrap();
    let failures = h.settled().await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let r = ns.route(TABLE, "10.244.1.0/26").expect("vxlan route");
    assert_eq!(gateways(&r), vec![hop("10.244.1.0", "vxlan.calico", 1)]);
    let flags: Vec<&str> =
        r["flags"].as_array().map(|f| f.iter().filter_map(|x| x.as_str()).collect()).unwrap_or_default();
    assert!(flags.contains(&"onlink"), "{r}");
    let r = ns.route(TABLE, "10.244.2.0/26").expect("tunl1 route");
    assert_eq!(r["dev"], "tunl1");
    assert!(r["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "onlink")), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn externally_deleted_or_replaced_route_is_repaired() {
    if !testgate::require_root_and_cmds("externally_deleted_or_replaced_route_is_repaired", &["ip"]) {
        return;
    }
    let ns = TestNs::new("repair");
    let metrics = FibMetrics::unregistered();
    let fib = Fib::spawn(config(&ns), metrics.clone()).unwrap();
    let h = fib.handle.clone();
    h.apply(upserts(vec![
        Route::unicast(net("10.1.0.0/24"), vec![NextHop::via(ip("192.0.2.2"))]),
        Route::unicast(net("2001:db8:100::/64"), vec![NextHop::via(ip("2001:db8:1::2"))]),
    ]))
    .await
    .unwrap();
    assert!(h.settled().await.unwrap().is_empty());
    assert_eq!(metrics.repairs.get(), 0);

    ns.ip(&["route", "del", "10.1.0.0/24", "table", "100", "proto", "bgp"]);
    ns.wait_route(TABLE, "10.1.0.0/24", "repair of deleted route", |r| r.is_some()).await;
    ns.ip(&["-6", "route", "del", "2001:db8:100::/64", "table", "100"]);
    ns.wait_route(TABLE, "2001:db8:100::/64", "repair of deleted IPv6 route", |r| r.is_some()).await;

    ns.ip(&["route", "replace", "10.1.0.0/24", "via", "198.51.100.9", "table", "100", "proto", "bgp", "metric", "20"]);
    ns.wait_route(TABLE, "10.1.0.0/24", "repair of replaced route", |r| r.is_some_and(|r| r["gateway"] == "192.0.2.2"))
        .await;
    h.settled().await.unwrap();
    assert_eq!(metrics.repairs.get(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reconciles_and_never_touches_other_protocols() {
    if !testgate::require_root_and_cmds("restart_reconciles_and_never_touches_other_protocols", &["ip"]) {
        return;
    }
    let ns = TestNs::new("restart");
    let graceful = FibConfig { graceful_restart: true, ..config(&ns) };
    let keep = Route::unicast(net("10.1.0.0/24"), vec![NextHop::via(ip("192.0.2.2"))]);
    let stale = Route::unicast(net("10.2.0.0/24"), vec![NextHop::via(ip("192.0.2.2"))]);
    let stale6 = Route::blackhole(net("2001:db8:900::/64"));
    {
        let fib = Fib::spawn(graceful.clone(), FibMetrics::unregistered()).unwrap();
        fib.handle.apply(upserts(vec![keep.clone(), stale.clone(), stale6])).await.unwrap();
        assert!(fib.handle.settled().await.unwrap().is_empty());
        fib.handle.shutdown().await.unwrap();
    }
    // Graceful restart: routes stay while nobody programs them.
    assert_eq!(ns.routes(TABLE).len(), 3);
    // Routes of other owners, one of them in the slot of a route we will want.
    ns.ip(&["route", "add", "10.9.0.0/24", "via", "192.0.2.7", "table", "100", "proto", "static"]);
    ns.ip(&["route", "add", "10.8.0.0/24", "via", "192.0.2.8", "table", "100", "proto", "static", "metric", "20"]);
    ns.ip(&["route", "add", "10.2.0.0/24", "via", "192.0.2.9", "table", "100", "proto", "static"]);

    let metrics = FibMetrics::unregistered();
    let mut fib = Fib::spawn(graceful, metrics.clone()).unwrap();
    let h = fib.handle.clone();
    let new = Route::blackhole(net("10.3.0.0/24"));
    let contested = Route::blackhole(net("10.8.0.0/24"));
    h.apply(upserts(vec![keep.clone(), new, contested])).await.unwrap();
    let failures = h.settled().await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].prefix, net("10.8.0.0/24"));
    assert_eq!(failures[0].kind, RouteErrorKind::Conflict { protocol: 4 });
    // Before the sweep, stale routes of ours stay (forwarding continues meanwhile).
    assert!(ns.routes(TABLE).iter().any(|r| r["dst"] == "10.2.0.0/24" && r["protocol"] == "bgp"));
    h.sweep_stale().await.unwrap();
    assert_eq!(h.settled().await.unwrap().len(), 1);

    let routes = ns.routes(TABLE);
    let ours: Vec<&str> = routes.iter().filter(|r| r["protocol"] == "bgp").filter_map(|r| r["dst"].as_str()).collect();
    assert_eq!(ours.len(), 2, "{routes:?}");
    assert!(ours.contains(&"10.1.0.0/24") && ours.contains(&"10.3.0.0/24"), "{ours:?}");
    let statics: Vec<&str> =
        routes.iter().filter(|r| r["protocol"] == "static").filter_map(|r| r["dst"].as_str()).collect();
    assert_eq!(statics.len(), 3, "{routes:?}");
    // The route that was already right was not rewritten: one install (10.3.0.0/24),
    // two removes (the stale IPv4 and IPv6 routes).
    assert_eq!(metrics.operations.with_label_values(&["install"]).get(), 1);
    assert_eq!(metrics.operations.with_label_values(&["remove"]).get(), 2);
    assert_eq!(metrics.routes_installed.with_label_values(&["ipv4"]).get(), 2);
    assert_eq!(metrics.routes_installed.with_label_values(&["ipv6"]).get(), 0);
    assert!(metrics.last_reconcile.get() > 0);

    // The conflict clears when the other owner leaves.
    ns.ip(&["route", "del", "10.8.0.0/24", "table", "100", "proto", "static", "metric", "20"]);
    ns.wait_route(TABLE, "10.8.0.0/24", "install after the slot was freed", |r| {
        r.is_some_and(|r| r["protocol"] == "bgp")
    })
    .await;
    let mut recovered = false;
    while let Ok(ev) = fib.events.try_recv() {
        recovered |= ev == FibEvent::Recovered(net("10.8.0.0/24"));
    }
    assert!(recovered);

    // An explicit flush removes ours even with graceful restart, and only ours (the two
    // static routes left).
    h.flush().await.unwrap();
    h.settled().await.unwrap();
    let routes = ns.routes(TABLE);
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert!(routes.iter().all(|r| r["protocol"] == "static"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_next_hop_follows_the_underlying_route() {
    if !testgate::require_root_and_cmds("recursive_next_hop_follows_the_underlying_route", &["ip"]) {
        return;
    }
    let ns = TestNs::new("recursive");
    // An iBGP peer's address across the fabric, reached through the main table.
    ns.ip(&["route", "add", "10.200.0.0/24", "via", "192.0.2.2", "proto", "static"]);
    let mut fib = Fib::spawn(config(&ns), FibMetrics::unregistered()).unwrap();
    let h = fib.handle.clone();
    h.apply(upserts(vec![Route::unicast(net("10.50.0.0/24"), vec![NextHop::via(ip("10.200.0.1"))])])).await.unwrap();
    assert!(h.settled().await.unwrap().is_empty());
    let r = ns.route(TABLE, "10.50.0.0/24").expect("resolved route");
    assert_eq!(gateways(&r), vec![hop("192.0.2.2", "veth0", 1)]);

    ns.ip(&["route", "replace", "10.200.0.0/24", "via", "198.51.100.2", "proto", "static"]);
    ns.wait_route(TABLE, "10.50.0.0/24", "re-resolution", |r| {
        r.is_some_and(|r| r["gateway"] == "198.51.100.2" && r["dev"] == "veth2")
    })
    .await;

    ns.ip(&["route", "del", "10.200.0.0/24", "proto", "static"]);
    ns.wait_route(TABLE, "10.50.0.0/24", "withdrawal of the unresolvable route", |r| r.is_none()).await;
    let failures = h.settled().await.unwrap();
    assert_eq!(failures.len(), 1);
    assert!(
        matches!(&failures[0].kind, RouteErrorKind::NextHopUnreachable { gateway, .. } if *gateway == ip("10.200.0.1")),
        "{failures:?}"
    );
    let mut failed = false;
    while let Ok(ev) = fib.events.try_recv() {
        failed |= matches!(ev, FibEvent::Failed(e) if e.prefix == net("10.50.0.0/24"));
    }
    assert!(failed);

    ns.ip(&["route", "add", "10.200.0.0/24", "via", "192.0.2.2", "proto", "static"]);
    ns.wait_route(TABLE, "10.50.0.0/24", "reinstall after re-resolution", |r| {
        r.is_some_and(|r| r["gateway"] == "192.0.2.2")
    })
    .await;
}

/// RFC 8950: IPv4 routes learned with IPv6 next hops go in through the IPv6
/// gateway (`RTA_VIA`), resolved through the IPv6 routes, alone and in ECMP,
/// and a resync reads them back as written (no rewrite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_routes_through_ipv6_gateways() {
    if !testgate::require_root_and_cmds("ipv4_routes_through_ipv6_gateways", &["ip"]) {
        return;
    }
    let ns = TestNs::new("via6");
    let fib = Fib::spawn(config(&ns), FibMetrics::unregistered()).unwrap();
    let h = fib.handle.clone();
    h.apply(upserts(vec![
        Route::unicast(net("10.60.0.0/26"), vec![NextHop::via(ip("2001:db8:1::2"))]),
        Route::unicast(
            net("10.60.1.0/26"),
            vec![NextHop::via(ip("2001:db8:1::2")), NextHop::via_dev(ip("2001:db8:2::2"), "veth2")],
        ),
    ]))
    .await
    .unwrap();
    let failures = h.settled().await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let r = ns.route(TABLE, "10.60.0.0/26").expect("IPv4 via IPv6 installed");
    assert_eq!(r["via"]["family"], "inet6", "{r}");
    assert_eq!(gateways(&r), vec![hop("2001:db8:1::2", "veth0", 1)]);
    let r = ns.route(TABLE, "10.60.1.0/26").expect("IPv4 ECMP via IPv6 installed");
    assert_eq!(sorted(gateways(&r)), vec![hop("2001:db8:1::2", "veth0", 1), hop("2001:db8:2::2", "veth2", 1)]);

    // A resync compares the kernel's view with what we want: equal, so
    // nothing is rewritten and nothing fails.
    h.resync().await.unwrap();
    assert!(h.settled().await.unwrap().is_empty());
    assert_eq!(ns.routes(TABLE).len(), 2);
    h.apply(vec![RouteChange::Remove(net("10.60.0.0/26"))]).await.unwrap();
    assert!(h.settled().await.unwrap().is_empty());
    assert!(ns.route(TABLE, "10.60.0.0/26").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_routes_fail_clearly_and_the_others_go_in() {
    if !testgate::require_root_and_cmds("bad_routes_fail_clearly_and_the_others_go_in", &["ip"]) {
        return;
    }
    let ns = TestNs::new("errors");
    let fib = Fib::spawn(config(&ns), FibMetrics::unregistered()).unwrap();
    let h = fib.handle.clone();
    h.apply(upserts(vec![
        Route::unicast(net("10.1.0.0/24"), vec![NextHop::via(ip("192.0.2.2"))]),
        Route::unicast(net("10.2.0.0/24"), vec![NextHop::dev("nosuchdev0")]),
        Route::unicast(net("10.3.0.0/24"), vec![NextHop::via(ip("203.0.113.9"))]),
        // A gateway outside veth0's subnet, without onlink: the kernel refuses it.
        Route::unicast(net("10.4.0.0/24"), vec![NextHop::via_dev(ip("203.0.113.9"), "veth0")]),
        Route::blackhole(net("10.5.0.1/24")),
        Route::blackhole(net("10.6.0.0/24")),
    ]))
    .await
    .unwrap();
    let failures = h.settled().await.unwrap();
    let by: std::collections::HashMap<IpNet, &RouteErrorKind> = failures.iter().map(|e| (e.prefix, &e.kind)).collect();
    assert_eq!(failures.len(), 4, "{failures:?}");
    assert_eq!(by[&net("10.2.0.0/24")], &RouteErrorKind::NoSuchDevice { device: "nosuchdev0".into() });
    assert!(matches!(by[&net("10.3.0.0/24")], RouteErrorKind::NextHopUnreachable { .. }));
    let RouteErrorKind::Kernel { errno, .. } = by[&net("10.4.0.0/24")] else {
        panic!("{failures:?}");
    };
    assert_eq!(fib::errno_name(*errno), "ENETUNREACH");
    let text = failures.iter().find(|e| e.prefix == net("10.4.0.0/24")).unwrap().to_string();
    assert!(text.contains("10.4.0.0/24") && text.contains("ENETUNREACH"), "{text}");
    assert!(matches!(by[&net("10.5.0.1/24")], RouteErrorKind::Invalid { .. }));
    assert!(ns.route(TABLE, "10.1.0.0/24").is_some());
    assert!(ns.route(TABLE, "10.6.0.0/24").is_some());
    assert_eq!(ns.routes(TABLE).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_down_drops_the_next_hop_and_link_up_restores_it() {
    if !testgate::require_root_and_cmds("link_down_drops_the_next_hop_and_link_up_restores_it", &["ip"]) {
        return;
    }
    let ns = TestNs::new("link");
    let fib = Fib::spawn(config(&ns), FibMetrics::unregistered()).unwrap();
    let h = fib.handle.clone();
    h.apply(upserts(vec![
        Route::unicast(
            net("10.2.0.0/24"),
            vec![NextHop::via(ip("192.0.2.2")), NextHop::via_dev(ip("198.51.100.2"), "veth2")],
        ),
        Route::unicast(net("10.3.0.0/24"), vec![NextHop::via_dev(ip("198.51.100.2"), "veth2")]),
    ]))
    .await
    .unwrap();
    assert!(h.settled().await.unwrap().is_empty());
    assert_eq!(gateways(&ns.route(TABLE, "10.2.0.0/24").unwrap()).len(), 2);

    // Carrier loss on the peer end: the kernel keeps the route, marked linkdown; we drop
    // the next hop from the ECMP set.
    ns.ip(&["link", "set", "veth3", "down"]);
    ns.wait_route(TABLE, "10.2.0.0/24", "next hop over veth2 dropped", |r| {
        r.is_some_and(|r| gateways(r) == vec![hop("192.0.2.2", "veth0", 1)])
    })
    .await;
    ns.wait_route(TABLE, "10.3.0.0/24", "single-path route withdrawn", |r| r.is_none()).await;
    ns.ip(&["link", "set", "veth3", "up"]);
    ns.wait_route(TABLE, "10.2.0.0/24", "next hop over veth2 restored", |r| r.is_some_and(|r| gateways(r).len() == 2))
        .await;
    ns.wait_route(TABLE, "10.3.0.0/24", "single-path route restored", |r| r.is_some()).await;

    // Administrative down: the kernel flushes IPv4 routes over the link without a word.
    ns.ip(&["link", "set", "veth2", "down"]);
    ns.wait_route(TABLE, "10.2.0.0/24", "next hop dropped (admin down)", |r| r.is_some_and(|r| gateways(r).len() == 1))
        .await;
    ns.ip(&["link", "set", "veth2", "up"]);
    ns.wait_route(TABLE, "10.2.0.0/24", "next hop restored (admin up)", |r| r.is_some_and(|r| gateways(r).len() == 2))
        .await;
    ns.wait_route(TABLE, "10.3.0.0/24", "route restored (admin up)", |r| r.is_some()).await;
    assert!(h.settled().await.unwrap().is_empty());
}

// A current-thread runtime: while the test blocks in `ip`, the FIB task cannot read, so
// its small receive buffer overflows for certain.
#[tokio::test(flavor = "current_thread")]
async fn receive_overrun_leads_to_resync_not_divergence() {
    if !testgate::require_root_and_cmds("receive_overrun_leads_to_resync_not_divergence", &["ip"]) {
        return;
    }
    let ns = TestNs::new("overrun");
    let metrics = FibMetrics::unregistered();
    let cfg = FibConfig { receive_buffer: 64 << 10, ..config(&ns) };
    let fib = Fib::spawn(cfg, metrics.clone()).unwrap();
    let h = fib.handle.clone();
    let routes: Vec<Route> = (0..100u32)
        .map(|i| {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
            Route::unicast(IpNet::new(a.into(), 24).unwrap(), vec![NextHop::via(ip("192.0.2.2"))])
        })
        .collect();
    h.apply(upserts(routes)).await.unwrap();
    assert!(h.settled().await.unwrap().is_empty());
    let resyncs = metrics.resyncs.get();

    // Blocking the runtime: 4000 foreign route notifications flood the socket, then one of
    // our routes is deleted, its notification lost in the overrun.
    let mut batch = String::new();
    for i in 0..4000u32 {
        let a = std::net::Ipv4Addr::from(0x1400_0000 + (i << 8));
        batch.push_str(&format!("route add {a}/24 via 192.0.2.3 table 200 proto static\n"));
    }
    let file = std::env::temp_dir().join(format!("{}.batch", ns.name()));
    std::fs::write(&file, batch).unwrap();
    ns.ip(&["-batch", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    ns.ip(&["route", "del", "10.0.7.0/24", "table", "100", "proto", "bgp"]);

    ns.wait_route(TABLE, "10.0.7.0/24", "repair after the overrun", |r| r.is_some()).await;
    assert!(h.settled().await.unwrap().is_empty());
    assert!(metrics.resyncs.get() > resyncs, "no resync after the overrun");
    assert_eq!(ns.routes(TABLE).len(), 100);
    assert_eq!(metrics.routes_installed.with_label_values(&["ipv4"]).get(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_bounds_the_queue_and_loses_nothing() {
    if !testgate::require_root_and_cmds("backpressure_bounds_the_queue_and_loses_nothing", &["ip"]) {
        return;
    }
    let ns = TestNs::new("backpressure");
    let metrics = FibMetrics::unregistered();
    // One queued prefix is enough to make the task stop taking commands until it wrote it.
    let cfg = FibConfig { queue_capacity: 1, batch_size: 8, ..config(&ns) };
    let fib = Fib::spawn(cfg, metrics.clone()).unwrap();
    let h = fib.handle.clone();
    let senders: Vec<_> = (0..4u32)
        .map(|t| {
            let h = h.clone();
            tokio::spawn(async move {
                for i in 0..50u32 {
                    let a = std::net::Ipv4Addr::from(0x0a00_0000 + (t << 16) + (i << 8));
                    let r = Route::unicast(IpNet::new(a.into(), 24).unwrap(), vec![NextHop::dev("veth0")]);
                    h.apply(vec![RouteChange::Upsert(r)]).await.unwrap();
                }
            })
        })
        .collect();
    let all = async {
        for s in senders {
            s.await.unwrap();
        }
        h.settled().await.unwrap()
    };
    let failures = tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("the FIB stalled under backpressure");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(ns.routes(TABLE).len(), 200);
    assert!(metrics.queue_depth.get() <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_over_retires_only_the_predecessors_routes() {
    if !testgate::require_root_and_cmds("take_over_retires_only_the_predecessors_routes", &["ip"]) {
        return;
    }
    let ns = TestNs::new("takeover");
    let t = TABLE.to_string();
    // What Calico's BIRD leaves behind (`persist`): protocol 12, metric 32, a blackhole for
    // the node's block and a route to another node's block through a connected gateway.
    ns.ip(&["route", "add", "blackhole", "10.244.1.0/26", "table", &t, "proto", "12", "metric", "32"]);
    ns.ip(&["route", "add", "10.244.2.0/26", "via", "192.0.2.2", "table", &t, "proto", "12", "metric", "32"]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "fd00:244::/122",
        "via",
        "2001:db8:1::2",
        "table",
        &t,
        "proto",
        "12",
        "metric",
        "32",
    ]);
    // A route of BIRD's that bgpd will not have, and one of another owner.
    ns.ip(&["route", "add", "10.244.9.0/26", "via", "192.0.2.2", "table", &t, "proto", "12", "metric", "32"]);
    ns.ip(&["route", "add", "10.9.0.0/24", "via", "192.0.2.9", "table", &t, "proto", "static", "metric", "32"]);
    let path = ns.path();
    let counted = tokio::task::spawn_blocking(move || fib::count_routes(TABLE, 12, Some(&path))).await.unwrap();
    assert_eq!(counted.unwrap(), 4);
    let path = ns.path();
    let none = tokio::task::spawn_blocking(move || fib::count_routes(200, 12, Some(&path))).await.unwrap();
    assert_eq!(none.unwrap(), 0, "a table that does not exist holds nothing");

    let metrics = FibMetrics::unregistered();
    let config = FibConfig { replaces: vec![12], graceful_restart: true, ..config(&ns) };
    let fib = Fib::spawn(config, metrics.clone()).unwrap();
    let h = fib.handle.clone();
    h.apply(upserts(vec![
        Route::blackhole(net("10.244.1.0/26")),
        Route::unicast(net("10.244.2.0/26"), vec![NextHop::via(ip("192.0.2.2"))]),
        Route::unicast(net("fd00:244::/122"), vec![NextHop::via(ip("2001:db8:1::2"))]),
    ]))
    .await
    .unwrap();
    let failures = h.settled().await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(metrics.predecessor_routes.get(), 4);
    // Before retire: both speakers' routes side by side (ours at metric 20 win).
    let by = |proto: &str| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = ns
            .routes(TABLE)
            .iter()
            .filter(|r| r["protocol"] == proto)
            .map(|r| (r["dst"].as_str().unwrap_or("").to_owned(), r["metric"].as_u64().unwrap_or(0)))
            .collect();
        v.sort();
        v
    };
    let at32 = |dst: &str| (dst.to_owned(), 32);
    let ours = |dst: &str| (dst.to_owned(), 20);
    assert_eq!(by("12").len() + by("bird").len(), 4, "{:?}", ns.routes(TABLE));
    assert_eq!(by("bgp"), vec![ours("10.244.1.0/26"), ours("10.244.2.0/26"), ours("fd00:244::/122")]);

    assert_eq!(h.retire_predecessors(fib::Retire::All).await.unwrap(), 4);
    let failures = h.settled().await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(metrics.predecessor_routes.get(), 0);
    assert_eq!(metrics.operations.with_label_values(&["retire"]).get(), 4);
    // Only protocol 12 is gone: ours and the static route remain.
    assert!(by("12").is_empty() && by("bird").is_empty(), "{:?}", ns.routes(TABLE));
    assert_eq!(by("bgp"), vec![ours("10.244.1.0/26"), ours("10.244.2.0/26"), ours("fd00:244::/122")]);
    assert_eq!(by("static"), vec![at32("10.9.0.0/24")], "the static route at metric 32 stays");
    // Nothing left: a second retire queues nothing.
    assert_eq!(h.retire_predecessors(fib::Retire::All).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_moves_to_its_new_metric_without_a_gap() {
    if !testgate::require_root_and_cmds("a_route_moves_to_its_new_metric_without_a_gap", &["ip"]) {
        return;
    }
    let ns = TestNs::new("metric");
    let metrics = FibMetrics::unregistered();
    let fib = Fib::spawn(config(&ns), metrics.clone()).unwrap();
    let h = fib.handle.clone();
    let moving = |metric: u32| Route {
        metric: Some(metric),
        ..Route::unicast(net("10.1.0.0/24"), vec![NextHop::via(ip("192.0.2.2"))])
    };
    let default = Route::unicast(net("10.2.0.0/24"), vec![NextHop::via(ip("192.0.2.2"))]);
    h.apply(upserts(vec![moving(512), default])).await.unwrap();
    assert!(h.settled().await.unwrap().is_empty());
    let of = |dst: &str| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = ns
            .routes(TABLE)
            .into_iter()
            .filter(|r| r["dst"] == dst)
            .map(|r| (r["protocol"].as_str().unwrap_or("").to_owned(), r["metric"].as_u64().unwrap_or(0)))
            .collect();
        v.sort();
        v
    };
    let bgp = |metric: u64| ("bgp".to_owned(), metric);
    assert_eq!(of("10.1.0.0/24"), vec![bgp(512)]);
    assert_eq!(of("10.2.0.0/24"), vec![bgp(20)], "no metric of its own: the FIB's");

    // A static route sits at 300: the move there conflicts, ours stays at 512.
    ns.ip(&["route", "add", "10.1.0.0/24", "via", "198.51.100.9", "table", "100", "proto", "static", "metric", "300"]);
    h.apply(upserts(vec![moving(300)])).await.unwrap();
    let failures = h.settled().await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].kind, RouteErrorKind::Conflict { protocol: 4 });
    assert_eq!(of("10.1.0.0/24"), vec![bgp(512), ("static".to_owned(), 300)]);

    // The static route goes: ours moves to 300, and the kernel saw the new route before
    // the old one left.
    let monitor = RouteMonitor::start(&ns).unwrap_or_else(|e| panic!("{e}"));
    ns.ip(&["route", "del", "10.1.0.0/24", "table", "100", "proto", "static", "metric", "300"]);
    ns.wait_route(TABLE, "10.1.0.0/24", "the move to 300", |r| {
        r.is_some_and(|r| r["protocol"] == "bgp" && r["metric"] == 300)
    })
    .await;
    assert!(h.settled().await.unwrap().is_empty());
    let lines: Vec<String> = monitor
        .stop()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|l| l.contains("10.1.0.0/24") && l.contains("proto bgp"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(!lines[0].starts_with("Deleted") && lines[0].contains("metric 300"), "{lines:?}");
    assert!(lines[1].starts_with("Deleted") && lines[1].contains("metric 512"), "{lines:?}");
    assert_eq!(of("10.1.0.0/24"), vec![bgp(300)]);
    assert_eq!(metrics.routes_installed.with_label_values(&["ipv4"]).get(), 2);

    // Removing the prefix removes ours at its metric; the other stays.
    h.apply(vec![RouteChange::Remove(net("10.1.0.0/24"))]).await.unwrap();
    assert!(h.settled().await.unwrap().is_empty());
    assert!(of("10.1.0.0/24").is_empty());
    assert_eq!(of("10.2.0.0/24"), vec![bgp(20)]);
}

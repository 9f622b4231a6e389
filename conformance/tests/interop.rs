//! bgpd against BIRD, FRR, GoBGP and ExaBGP: each reaches Established over
//! IPv4 and IPv6 transport, iBGP and eBGP; each side sees the capabilities
//! bgpd offers (4-octet AS, route refresh, multiprotocol IPv4 + IPv6,
//! graceful restart); bgpd's IPAM blocks reach the peer's table and the
//! peer's routes appear in `bgpd show routes --json`.
//!
//! The eight scenarios run in parallel threads, each in namespaces of its own.

use std::time::Duration;

use conformance::lab::{bgpd, bird, exabgp, frr, gobgp, wait_for, Lab, Ns};
use serde_json::Value;

const BGPD_AS: u32 = 64512;
const UP: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Impl {
    Bird,
    Frr,
    Gobgp,
    Exabgp,
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    imp: Impl,
    ibgp: bool,
    v6: bool,
    /// Link number: addresses 10.255.n.0/24, fd00:255:n::/64.
    n: u8,
}

impl Scenario {
    fn peer_as(&self) -> u32 {
        if self.ibgp {
            BGPD_AS
        } else {
            65000 + u32::from(self.n)
        }
    }
    fn bgpd_addr(&self) -> String {
        if self.v6 {
            format!("fd00:255:{}::1", self.n)
        } else {
            format!("10.255.{}.1", self.n)
        }
    }
    fn peer_addr(&self) -> String {
        if self.v6 {
            format!("fd00:255:{}::2", self.n)
        } else {
            format!("10.255.{}.2", self.n)
        }
    }
    fn bgpd_block4(&self) -> String {
        format!("10.244.{}.0/26", self.n)
    }
    fn bgpd_block6(&self) -> String {
        format!("fd00:244:{}::/122", self.n)
    }
    fn peer_route4(&self) -> String {
        format!("10.100.{}.0/24", self.n)
    }
    fn peer_route6(&self) -> String {
        format!("fd00:100:{}::/48", self.n)
    }
    fn name(&self) -> String {
        format!("{:?} {} over IPv{}", self.imp, if self.ibgp { "iBGP" } else { "eBGP" }, if self.v6 { 6 } else { 4 })
    }
}

fn bgpd_config(s: &Scenario) -> bgpd::Config {
    let peer_ip = if s.v6 { format!("[{}]:179", s.peer_addr()) } else { s.peer_addr() };
    bgpd::Config {
        node: "node-1".into(),
        asn: BGPD_AS,
        ipv4: format!("10.255.{}.1/24", s.n),
        ipv6: Some(format!("fd00:255:{}::1/64", s.n)),
        peers: vec![bgpd::Peer::new("peer", &peer_ip, s.peer_as())],
        blocks: vec![s.bgpd_block4(), s.bgpd_block6()],
    }
}

/// What bgpd reports about the session: Established, and the capabilities
/// it negotiated include those both sides offer.
fn check_bgpd_side(b: &bgpd::Bgpd, s: &Scenario) -> Result<(), String> {
    let p = wait_for("bgpd: peer Established", UP, || b.established("peer"))?;
    let caps: Vec<String> =
        p["capabilities"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect();
    for want in
        ["multiprotocol ipv4/unicast", "multiprotocol ipv6/unicast", "4-octet-as", "route-refresh", "graceful-restart"]
    {
        if !caps.iter().any(|c| c.contains(want)) {
            return Err(format!("bgpd's negotiated capabilities {caps:?} lack {want:?}"));
        }
    }
    if p["peer_as"] != s.peer_as() {
        return Err(format!("bgpd shows peer_as {} instead of {}", p["peer_as"], s.peer_as()));
    }
    for prefix in [s.peer_route4(), s.peer_route6()] {
        wait_for(&format!("bgpd: route {prefix} from the peer"), UP, || b.has_route("peer", &prefix))?;
    }
    Ok(())
}

fn run_bird(lab: &Lab, nb: &Ns, np: &Ns, s: &Scenario) -> Result<(), String> {
    let cfg = bird::BirdConfig {
        router_id: format!("10.255.{}.2", s.n),
        routes4: vec![s.peer_route4()],
        routes6: vec![s.peer_route6()],
        sessions: vec![bird::BirdSession {
            name: "bgpd".into(),
            local: s.peer_addr(),
            local_as: s.peer_as(),
            neighbor: s.bgpd_addr(),
            peer_as: BGPD_AS,
            ..Default::default()
        }],
        ..Default::default()
    };
    let peer = bird::Bird::start(lab, np, "i", &cfg).map_err(|e| e.to_string())?;
    let b = bgpd::Bgpd::start(lab, nb, "i", &bgpd_config(s)).map_err(|e| e.to_string())?;
    wait_for("BIRD: bgpd Established", UP, || peer.established("bgpd"))?;
    let caps = peer.neighbor_capabilities("bgpd")?;
    for want in ["Multiprotocol", "AF announced: ipv4 ipv6", "Route refresh", "Graceful restart", "4-octet AS numbers"]
    {
        if !caps.contains(want) {
            return Err(format!("BIRD's neighbor capabilities lack {want:?}:\n{caps}"));
        }
    }
    check_bgpd_side(&b, s)?;
    for prefix in [s.bgpd_block4(), s.bgpd_block6()] {
        wait_for(&format!("BIRD: route {prefix}"), UP, || peer.has_route("bgpd", &prefix))?;
    }
    Ok(())
}

fn run_frr(lab: &Lab, nb: &Ns, np: &Ns, s: &Scenario) -> Result<(), String> {
    let cfg = frr::FrrConfig {
        asn: s.peer_as(),
        router_id: format!("10.255.{}.2", s.n),
        routes4: vec![s.peer_route4()],
        routes6: vec![s.peer_route6()],
        neighbors: vec![frr::FrrNeighbor {
            addr: s.bgpd_addr(),
            remote_as: BGPD_AS,
            update_source: s.peer_addr(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let peer = frr::Frr::start(lab, np, "i", &cfg).map_err(|e| e.to_string())?;
    let b = bgpd::Bgpd::start(lab, nb, "i", &bgpd_config(s)).map_err(|e| e.to_string())?;
    let n = wait_for("FRR: bgpd Established", UP, || peer.established(&s.bgpd_addr()))?;
    let caps = &n["neighborCapabilities"];
    let received = |v: &Value| v.as_str().is_some_and(|t| t.contains("Received") || t.contains("received"));
    let checks: [(&str, bool); 5] = [
        ("4byteAs", received(&caps["4byteAs"])),
        ("routeRefresh", received(&caps["routeRefresh"])),
        (
            "multiprotocolExtensions ipv4Unicast",
            caps["multiprotocolExtensions"]["ipv4Unicast"]["advertisedAndReceived"] == true,
        ),
        (
            "multiprotocolExtensions ipv6Unicast",
            caps["multiprotocolExtensions"]["ipv6Unicast"]["advertisedAndReceived"] == true,
        ),
        ("gracefulRestart", received(&caps["gracefulRestart"]) || caps["gracefulRestartCapability"].is_string()),
    ];
    for (what, ok) in checks {
        if !ok {
            return Err(format!(
                "FRR: {what} not received from bgpd: multiprotocolExtensions {} / all {caps}",
                caps["multiprotocolExtensions"]
            ));
        }
    }
    check_bgpd_side(&b, s)?;
    for prefix in [s.bgpd_block4(), s.bgpd_block6()] {
        wait_for(&format!("FRR: route {prefix}"), UP, || peer.has_route(&prefix))?;
    }
    Ok(())
}

fn run_gobgp(lab: &Lab, nb: &Ns, np: &Ns, s: &Scenario) -> Result<(), String> {
    let cfg = gobgp::Config {
        asn: s.peer_as(),
        router_id: format!("10.255.{}.2", s.n),
        listen: vec![format!("10.255.{}.2", s.n), format!("fd00:255:{}::2", s.n)],
        neighbors: vec![gobgp::Neighbor {
            addr: s.bgpd_addr(),
            peer_as: BGPD_AS,
            local_address: s.peer_addr(),
            ..Default::default()
        }],
    };
    let peer = gobgp::Gobgp::start(lab, np, "i", &cfg).map_err(|e| e.to_string())?;
    peer.add_route(&s.peer_route4(), &format!("10.255.{}.2", s.n))?;
    peer.add_route(&s.peer_route6(), &format!("fd00:255:{}::2", s.n))?;
    let b = bgpd::Bgpd::start(lab, nb, "i", &bgpd_config(s)).map_err(|e| e.to_string())?;
    let out = wait_for("GoBGP: bgpd established", UP, || peer.established(&s.bgpd_addr()))?;
    // `gobgp neighbor` lists each capability as "NAME:\tadvertised and received".
    for want in ["ipv4-unicast", "ipv6-unicast", "route-refresh", "graceful-restart", "4-octet-as"] {
        let received = out.lines().any(|l| {
            l.trim_start()
                .strip_prefix(want)
                .and_then(|r| r.strip_prefix(':'))
                .is_some_and(|r| r.trim() == "advertised and received")
        });
        if !received {
            return Err(format!("GoBGP does not report {want:?} as advertised and received:\n{out}"));
        }
    }
    check_bgpd_side(&b, s)?;
    for prefix in [s.bgpd_block4(), s.bgpd_block6()] {
        wait_for(&format!("GoBGP: route {prefix}"), UP, || peer.has_route(&s.bgpd_addr(), &prefix))?;
    }
    Ok(())
}

fn run_exabgp(lab: &Lab, nb: &Ns, np: &Ns, s: &Scenario) -> Result<(), String> {
    let cfg = exabgp::Config {
        router_id: format!("10.255.{}.2", s.n),
        local_address: s.peer_addr(),
        local_as: s.peer_as(),
        neighbor: s.bgpd_addr(),
        peer_as: BGPD_AS,
        routes: vec![(s.peer_route4(), format!("10.255.{}.2", s.n)), (s.peer_route6(), format!("fd00:255:{}::2", s.n))],
    };
    let peer = exabgp::Exabgp::start(lab, np, "i", &cfg).map_err(|e| e.to_string())?;
    let b = bgpd::Bgpd::start(lab, nb, "i", &bgpd_config(s)).map_err(|e| e.to_string())?;
    wait_for("ExaBGP: session up", UP, || peer.established())?;
    let open = peer.received_open()?;
    let caps = open["capabilities"].to_string();
    for want in
        ["\"multiprotocol\"", "ipv4/unicast", "ipv6/unicast", "\"route-refresh\"", "\"graceful restart\"", "\"asn4\""]
    {
        if !caps.contains(want) {
            return Err(format!("ExaBGP's received OPEN lacks {want:?}: {caps}"));
        }
    }
    check_bgpd_side(&b, s)?;
    for prefix in [s.bgpd_block4(), s.bgpd_block6()] {
        wait_for(&format!("ExaBGP: route {prefix}"), UP, || peer.has_route(&prefix))?;
    }
    Ok(())
}

fn run(s: Scenario) -> Result<(), String> {
    let lab = Lab::new(&s.name()).map_err(|e| e.to_string())?;
    let (nb, np) = lab.pair(s.n).map_err(|e| e.to_string())?;
    let r = match s.imp {
        Impl::Bird => run_bird(&lab, &nb, &np, &s),
        Impl::Frr => run_frr(&lab, &nb, &np, &s),
        Impl::Gobgp => run_gobgp(&lab, &nb, &np, &s),
        Impl::Exabgp => run_exabgp(&lab, &nb, &np, &s),
    };
    r.map_err(|e| format!("{}: {e}\n{}", s.name(), lab.logs(25)))
}

#[test]
fn interop_established_capabilities_routes() {
    if !testgate::require_root_and_cmds(
        "interop_established_capabilities_routes",
        &[
            "ip",
            "bird",
            "birdc",
            "vtysh",
            "/usr/lib/frr/bgpd",
            "/usr/lib/frr/zebra",
            "gobgpd",
            "gobgp",
            "exabgp",
            "unshare",
        ],
    ) {
        return;
    }
    bgpd::binary();
    let only = std::env::var("BGPDC_ONLY").ok();
    let scenarios = [
        Scenario { imp: Impl::Bird, ibgp: false, v6: false, n: 1 },
        Scenario { imp: Impl::Bird, ibgp: true, v6: true, n: 2 },
        Scenario { imp: Impl::Frr, ibgp: true, v6: false, n: 3 },
        Scenario { imp: Impl::Frr, ibgp: false, v6: true, n: 4 },
        Scenario { imp: Impl::Gobgp, ibgp: false, v6: false, n: 5 },
        Scenario { imp: Impl::Gobgp, ibgp: true, v6: true, n: 6 },
        Scenario { imp: Impl::Exabgp, ibgp: true, v6: false, n: 7 },
        Scenario { imp: Impl::Exabgp, ibgp: false, v6: true, n: 8 },
    ];
    let picked: Vec<Scenario> = scenarios
        .into_iter()
        .filter(|s| only.as_deref().is_none_or(|o| s.name().to_lowercase().contains(&o.to_lowercase())))
        .collect();
    assert!(!picked.is_empty(), "BGPDC_ONLY={only:?} matches no scenario");
    let handles: Vec<_> = picked.iter().map(|&s| (s, std::thread::spawn(move || run(s)))).collect();
    let mut failures = Vec::new();
    for (s, h) in handles {
        match h.join() {
            Ok(Ok(())) => eprintln!("ok: {}", s.name()),
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push(format!("{}: panicked", s.name())),
        }
    }
    assert!(failures.is_empty(), "{} of {} scenarios failed:\n{}", failures.len(), picked.len(), failures.join("\n\n"));
}

//! FRR configuration as plain data, rendered to `bgpd.conf` and `bfdd.conf` text: the one
//! renderer of the conformance tests' peers, the benchmarks' DUTs and the lab's routers.
//!
//! [`FrrConfig::default`] and [`FrrNeighbor::default`] are a test bed's choices: no
//! `ebgp-requires-policy` and no `network import-check`, graceful restart, timers 3/9 and
//! connect retry 2 s, every neighbor activated for IPv4 and IPv6 unicast. A user wanting
//! FRR's own defaults sets the fields to `None`/`false`.

use std::fmt::Write as _;

use super::Af;

/// FRR bgpd's `bgpd.conf`.
#[derive(Clone, Debug)]
pub struct FrrConfig {
    /// `hostname` (default `frr`).
    pub hostname: String,
    /// Text put before `router bgp` as it is: community lists, route maps.
    pub preamble: String,
    /// `router bgp ASN`.
    pub asn: u32,
    /// `bgp router-id`.
    pub router_id: String,
    /// `bgp ebgp-requires-policy` (FRR's default; off by default here: `no …`).
    pub ebgp_requires_policy: bool,
    /// `bgp network import-check` (off by default here: `no …`).
    pub network_import_check: bool,
    /// `bgp default ipv4-unicast` (FRR's default, on; off renders `no …`).
    pub default_ipv4_unicast: bool,
    /// `bgp graceful-restart` (default on).
    pub graceful_restart: bool,
    /// `bgp graceful-restart preserve-fw-state`: forwarding kept across a restart (the
    /// F bit).
    pub graceful_restart_preserve_fw_state: bool,
    /// `bgp graceful-restart notification` (RFC 8538).
    pub graceful_restart_notification: bool,
    /// `bgp long-lived-graceful-restart stale-time N` (RFC 9494; FRR's default is 0).
    pub long_lived_stale_time: Option<u32>,
    /// `bgp bestpath as-path multipath-relax`: multipath across neighbouring ASes.
    pub multipath_relax: bool,
    /// `redistribute connected` in both families.
    pub redistribute_connected: bool,
    /// `maximum-paths N` and `maximum-paths ibgp N` in both families.
    pub maximum_paths: Option<u32>,
    /// IPv4 `network` statements.
    pub routes4: Vec<String>,
    /// IPv6 `network` statements.
    pub routes6: Vec<String>,
    /// Neighbors.
    pub neighbors: Vec<FrrNeighbor>,
}

impl Default for FrrConfig {
    fn default() -> FrrConfig {
        FrrConfig {
            hostname: "frr".into(),
            preamble: String::new(),
            asn: 0,
            router_id: String::new(),
            ebgp_requires_policy: false,
            network_import_check: false,
            default_ipv4_unicast: true,
            graceful_restart: true,
            graceful_restart_preserve_fw_state: false,
            graceful_restart_notification: false,
            long_lived_stale_time: None,
            multipath_relax: false,
            redistribute_connected: false,
            maximum_paths: None,
            routes4: Vec::new(),
            routes6: Vec::new(),
            neighbors: Vec::new(),
        }
    }
}

/// One neighbor of `router bgp`.
#[derive(Clone, Debug)]
pub struct FrrNeighbor {
    /// The neighbor's address.
    pub addr: String,
    /// `remote-as`.
    pub remote_as: u32,
    /// `update-source` (FRR's own address on the session; empty: none).
    pub update_source: String,
    /// `timers KEEPALIVE HOLD` (default 3 9).
    pub timers: Option<(u32, u32)>,
    /// `timers connect N` (default 2).
    pub connect_timer: Option<u32>,
    /// `password`.
    pub password: Option<String>,
    /// `ttl-security hops N`.
    pub ttl_security_hops: Option<u8>,
    /// `ebgp-multihop N`.
    pub ebgp_multihop: Option<u8>,
    /// `passive`: never connect, only accept.
    pub passive: bool,
    /// `bfd profile P` (bfdd runs the session; see [`FrrBfdd`]).
    pub bfd_profile: Option<String>,
    /// `capability extended-nexthop` (RFC 8950 on a global IPv6 session).
    pub extended_nexthop: bool,
    /// The families it is activated in (default IPv4 and IPv6 unicast).
    pub families: Vec<Af>,
    /// `route-map NAME in` in its families.
    pub route_map_in: Option<String>,
    /// `route-reflector-client` in its families.
    pub rr_client: bool,
    /// `next-hop-self` in its families.
    pub next_hop_self: bool,
}

impl Default for FrrNeighbor {
    fn default() -> FrrNeighbor {
        FrrNeighbor {
            addr: String::new(),
            remote_as: 0,
            update_source: String::new(),
            timers: Some((3, 9)),
            connect_timer: Some(2),
            password: None,
            ttl_security_hops: None,
            ebgp_multihop: None,
            passive: false,
            bfd_profile: None,
            extended_nexthop: false,
            families: vec![Af::Ipv4, Af::Ipv6],
            route_map_in: None,
            rr_client: false,
            next_hop_self: false,
        }
    }
}

impl FrrNeighbor {
    /// A neighbor with FRR's own timers, activated for IPv4 unicast only.
    pub fn plain(addr: &str, remote_as: u32) -> FrrNeighbor {
        FrrNeighbor {
            addr: addr.into(),
            remote_as,
            timers: None,
            connect_timer: None,
            families: vec![Af::Ipv4],
            ..FrrNeighbor::default()
        }
    }
}

impl FrrConfig {
    /// Renders `bgpd.conf`. An address family is rendered when it has networks, a
    /// neighbor activated in it, or `redistribute connected`.
    pub fn render(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "hostname {}\n!", self.hostname);
        c.push_str(&self.preamble);
        let _ = writeln!(c, "router bgp {}", self.asn);
        let _ = writeln!(c, " bgp router-id {}", self.router_id);
        if !self.ebgp_requires_policy {
            c.push_str(" no bgp ebgp-requires-policy\n");
        }
        if !self.network_import_check {
            c.push_str(" no bgp network import-check\n");
        }
        if !self.default_ipv4_unicast {
            c.push_str(" no bgp default ipv4-unicast\n");
        }
        if self.graceful_restart {
            c.push_str(" bgp graceful-restart\n");
        }
        if self.graceful_restart_preserve_fw_state {
            c.push_str(" bgp graceful-restart preserve-fw-state\n");
        }
        if self.graceful_restart_notification {
            c.push_str(" bgp graceful-restart notification\n");
        }
        if let Some(t) = self.long_lived_stale_time {
            let _ = writeln!(c, " bgp long-lived-graceful-restart stale-time {t}");
        }
        if self.multipath_relax {
            c.push_str(" bgp bestpath as-path multipath-relax\n");
        }
        for n in &self.neighbors {
            let a = &n.addr;
            let _ = writeln!(c, " neighbor {a} remote-as {}", n.remote_as);
            if !n.update_source.is_empty() {
                let _ = writeln!(c, " neighbor {a} update-source {}", n.update_source);
            }
            if let Some((keepalive, hold)) = n.timers {
                let _ = writeln!(c, " neighbor {a} timers {keepalive} {hold}");
            }
            if let Some(t) = n.connect_timer {
                let _ = writeln!(c, " neighbor {a} timers connect {t}");
            }
            if let Some(h) = n.ebgp_multihop {
                let _ = writeln!(c, " neighbor {a} ebgp-multihop {h}");
            }
            if let Some(p) = &n.bfd_profile {
                let _ = writeln!(c, " neighbor {a} bfd profile {p}");
            }
            if let Some(p) = &n.password {
                let _ = writeln!(c, " neighbor {a} password {p}");
            }
            if n.passive {
                let _ = writeln!(c, " neighbor {a} passive");
            }
            if let Some(h) = n.ttl_security_hops {
                let _ = writeln!(c, " neighbor {a} ttl-security hops {h}");
            }
            if n.extended_nexthop {
                let _ = writeln!(c, " neighbor {a} capability extended-nexthop");
            }
        }
        for (af, routes) in [(Af::Ipv4, &self.routes4), (Af::Ipv6, &self.routes6)] {
            let active: Vec<&FrrNeighbor> = self.neighbors.iter().filter(|n| n.families.contains(&af)).collect();
            if routes.is_empty() && active.is_empty() && !self.redistribute_connected {
                continue;
            }
            let _ = writeln!(c, " address-family {} unicast", af.name());
            if self.redistribute_connected {
                c.push_str("  redistribute connected\n");
            }
            if let Some(m) = self.maximum_paths {
                let _ = writeln!(c, "  maximum-paths {m}\n  maximum-paths ibgp {m}");
            }
            for r in routes {
                let _ = writeln!(c, "  network {r}");
            }
            for n in active {
                let a = &n.addr;
                let _ = writeln!(c, "  neighbor {a} activate");
                if let Some(m) = &n.route_map_in {
                    let _ = writeln!(c, "  neighbor {a} route-map {m} in");
                }
                if n.rr_client {
                    let _ = writeln!(c, "  neighbor {a} route-reflector-client");
                }
                if n.next_hop_self {
                    let _ = writeln!(c, "  neighbor {a} next-hop-self");
                }
            }
            c.push_str(" exit-address-family\n");
        }
        c.push_str("!\n");
        c
    }
}

/// BFD timers in milliseconds, as bfdd writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FrrBfdTimers {
    /// `transmit-interval`.
    pub transmit_ms: u128,
    /// `receive-interval`.
    pub receive_ms: u128,
    /// `detect-multiplier`.
    pub detect_mult: u8,
}

impl FrrBfdTimers {
    fn render(&self, c: &mut String) {
        let _ = writeln!(
            c,
            "  transmit-interval {}\n  receive-interval {}\n  detect-multiplier {}\n !",
            self.transmit_ms, self.receive_ms, self.detect_mult
        );
    }
}

/// FRR bfdd's `bfdd.conf`: profiles (which bgpd's `neighbor X bfd profile P` name) and
/// sessions of its own.
#[derive(Clone, Debug, Default)]
pub struct FrrBfdd {
    /// `profile NAME` with its timers.
    pub profiles: Vec<(String, FrrBfdTimers)>,
    /// `peer ADDR local-address LOCAL` with its timers.
    pub peers: Vec<(String, String, FrrBfdTimers)>,
}

impl FrrBfdd {
    /// Renders `bfdd.conf`.
    pub fn render(&self) -> String {
        let mut c = String::from("bfd\n");
        for (name, t) in &self.profiles {
            let _ = writeln!(c, " profile {name}");
            t.render(&mut c);
        }
        for (addr, local, t) in &self.peers {
            let _ = writeln!(c, " peer {addr} local-address {local}");
            t.render(&mut c);
        }
        c.push_str("!\n");
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neighbor() -> FrrNeighbor {
        FrrNeighbor {
            addr: "10.0.0.1".into(),
            remote_as: 64512,
            update_source: "10.0.0.2".into(),
            ..FrrNeighbor::default()
        }
    }

    fn one(n: FrrNeighbor) -> String {
        FrrConfig { asn: 65021, router_id: "10.0.0.2".into(), neighbors: vec![n], ..FrrConfig::default() }.render()
    }

    #[test]
    fn defaults_are_the_test_beds() {
        let c = one(neighbor());
        assert_eq!(
            c,
            "hostname frr\n!\nrouter bgp 65021\n bgp router-id 10.0.0.2\n no bgp ebgp-requires-policy\n no bgp network import-check\n bgp graceful-restart\n neighbor 10.0.0.1 remote-as 64512\n neighbor 10.0.0.1 update-source 10.0.0.2\n neighbor 10.0.0.1 timers 3 9\n neighbor 10.0.0.1 timers connect 2\n address-family ipv4 unicast\n  neighbor 10.0.0.1 activate\n exit-address-family\n address-family ipv6 unicast\n  neighbor 10.0.0.1 activate\n exit-address-family\n!\n"
        );
    }

    #[test]
    fn plain_neighbors_keep_frrs_timers_and_ipv4_only() {
        let c = one(FrrNeighbor::plain("10.0.0.9", 65009));
        assert!(!c.contains("timers") && !c.contains("update-source") && !c.contains("ipv6"), "{c}");
        assert!(c.contains(" address-family ipv4 unicast\n  neighbor 10.0.0.9 activate\n"), "{c}");
    }

    #[test]
    fn hostname_preamble_and_router_options() {
        let c = FrrConfig {
            hostname: "r1".into(),
            preamble: "route-map X permit 10\n!\n".into(),
            ebgp_requires_policy: true,
            network_import_check: true,
            default_ipv4_unicast: false,
            graceful_restart: false,
            multipath_relax: true,
            ..FrrConfig::default()
        }
        .render();
        assert!(c.starts_with("hostname r1\n!\nroute-map X permit 10\n!\nrouter bgp 0\n"), "{c}");
        assert!(!c.contains("ebgp-requires-policy") && !c.contains("import-check") && !c.contains("graceful"), "{c}");
        assert!(c.contains(" no bgp default ipv4-unicast\n bgp bestpath as-path multipath-relax\n"), "{c}");
    }

    #[test]
    fn graceful_restart_options() {
        let c = FrrConfig {
            graceful_restart_preserve_fw_state: true,
            graceful_restart_notification: true,
            long_lived_stale_time: Some(60),
            ..FrrConfig::default()
        }
        .render();
        assert!(c.contains(" bgp graceful-restart\n bgp graceful-restart preserve-fw-state\n bgp graceful-restart notification\n bgp long-lived-graceful-restart stale-time 60\n"), "{c}");
        let c = FrrConfig::default().render();
        assert!(!c.contains("preserve-fw-state") && !c.contains("notification") && !c.contains("long-lived"), "{c}");
    }

    #[test]
    fn networks_redistribution_and_multipath() {
        let c = FrrConfig {
            routes4: vec!["10.1.0.0/24".into()],
            routes6: vec!["fd00::/64".into()],
            redistribute_connected: true,
            maximum_paths: Some(16),
            ..FrrConfig::default()
        }
        .render();
        assert!(c.contains(" address-family ipv4 unicast\n  redistribute connected\n  maximum-paths 16\n  maximum-paths ibgp 16\n  network 10.1.0.0/24\n"), "{c}");
        assert!(c.contains("  network fd00::/64\n"), "{c}");
    }

    #[test]
    fn neighbor_session_options() {
        let c = one(FrrNeighbor {
            password: Some("s3cret".into()),
            passive: true,
            ttl_security_hops: Some(1),
            ebgp_multihop: Some(2),
            bfd_profile: Some("fast".into()),
            extended_nexthop: true,
            timers: Some((30, 90)),
            connect_timer: None,
            ..neighbor()
        });
        for want in [
            " neighbor 10.0.0.1 password s3cret\n",
            " neighbor 10.0.0.1 passive\n",
            " neighbor 10.0.0.1 ttl-security hops 1\n",
            " neighbor 10.0.0.1 ebgp-multihop 2\n",
            " neighbor 10.0.0.1 bfd profile fast\n",
            " neighbor 10.0.0.1 capability extended-nexthop\n",
            " neighbor 10.0.0.1 timers 30 90\n",
        ] {
            assert!(c.contains(want), "{want:?} in {c}");
        }
        assert!(!c.contains("timers connect"), "{c}");
    }

    #[test]
    fn neighbor_family_options() {
        let c = one(FrrNeighbor {
            families: vec![Af::Ipv6],
            route_map_in: Some("IN".into()),
            rr_client: true,
            next_hop_self: true,
            ..neighbor()
        });
        assert!(!c.contains("address-family ipv4"), "{c}");
        assert!(c.contains(" address-family ipv6 unicast\n  neighbor 10.0.0.1 activate\n  neighbor 10.0.0.1 route-map IN in\n  neighbor 10.0.0.1 route-reflector-client\n  neighbor 10.0.0.1 next-hop-self\n exit-address-family\n"), "{c}");
    }

    #[test]
    fn bfdd_profiles_and_peers() {
        let t = FrrBfdTimers { transmit_ms: 300, receive_ms: 200, detect_mult: 3 };
        let c = FrrBfdd { profiles: vec![("fast".into(), t)], peers: vec![("10.0.0.1".into(), "10.0.0.2".into(), t)] }
            .render();
        assert_eq!(
            c,
            "bfd\n profile fast\n  transmit-interval 300\n  receive-interval 200\n  detect-multiplier 3\n !\n peer 10.0.0.1 local-address 10.0.0.2\n  transmit-interval 300\n  receive-interval 200\n  detect-multiplier 3\n !\n!\n"
        );
    }
}

//! BIRD 2 configuration as plain data, rendered to `bird.conf` text: the one renderer of
//! the conformance tests' peers, the benchmarks' DUTs and the lab's routers.
//!
//! [`BirdConfig::default`] and [`BirdSession::default`] are a test bed's choices: log to
//! stderr, interfaces scanned every second, short timers (hold 9 s, keepalive 3 s,
//! connect retry 2 s, error wait 1–4 s), graceful restart and route refresh on, IPv4 and
//! IPv6 channels importing and exporting everything. A user wanting BIRD's own defaults
//! sets the fields to `None`/`false`.
//!
//! Two rules follow from the sessions themselves: an iBGP session (`local_as ==
//! peer_as`) without `multihop` is `direct` (the peer is on the link; BIRD's iBGP default
//! is multihop) and its channels have `next hop self` unless
//! [`BirdSession::next_hop_self`] says otherwise; a session without `multihop` has
//! `gateway direct` channels (what BIRD does by itself for direct sessions).

use std::fmt::Write as _;

use super::Af;

/// A `bird.conf`.
#[derive(Clone, Debug)]
pub struct BirdConfig {
    /// `router id`.
    pub router_id: String,
    /// What follows `log`: `stderr all` (the default), `"/path" all`, …
    pub log: String,
    /// `protocol device`: `scan time N` (`None`: BIRD's default).
    pub device_scan: Option<u32>,
    /// `protocol direct { ipv4; ipv6; }`: connected networks as routes.
    pub direct: bool,
    /// `protocol kernel`s (none by default).
    pub kernel: Vec<BirdKernel>,
    /// IPv4 prefixes announced (`protocol static st4`, unreachable routes; rendered when
    /// not empty).
    pub routes4: Vec<String>,
    /// IPv6 prefixes announced (`protocol static st6`).
    pub routes6: Vec<String>,
    /// `protocol bfd`.
    pub bfd: Option<BirdBfd>,
    /// `protocol bgp`s.
    pub sessions: Vec<BirdSession>,
}

impl Default for BirdConfig {
    fn default() -> BirdConfig {
        BirdConfig {
            router_id: String::new(),
            log: "stderr all".into(),
            device_scan: Some(1),
            direct: false,
            kernel: Vec::new(),
            routes4: Vec::new(),
            routes6: Vec::new(),
            bfd: None,
            sessions: Vec::new(),
        }
    }
}

/// A `protocol kernel` of one family.
#[derive(Clone, Debug)]
pub struct BirdKernel {
    /// The protocol's name (`None`: BIRD names it).
    pub name: Option<String>,
    /// Its table's family.
    pub af: Af,
    /// The channel's `import` (`None`: BIRD's default), e.g. `none`.
    pub import: Option<String>,
    /// The channel's `export`, e.g. `where source = RTS_BGP`.
    pub export: String,
    /// `merge paths on`: equal paths installed as one ECMP route.
    pub merge_paths: bool,
}

/// BFD timers in milliseconds, as BIRD writes them (`protocol bfd` and a session's `bfd {…}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BirdBfdTimers {
    /// `min rx interval`.
    pub min_rx_ms: u128,
    /// `min tx interval`.
    pub min_tx_ms: u128,
    /// `idle tx interval` (`None`: BIRD's default).
    pub idle_tx_ms: Option<u128>,
    /// `multiplier`.
    pub multiplier: u8,
}

impl BirdBfdTimers {
    fn render(&self) -> String {
        let idle = self.idle_tx_ms.map(|i| format!(" idle tx interval {i} ms;")).unwrap_or_default();
        format!(
            "{{ min rx interval {} ms; min tx interval {} ms;{idle} multiplier {}; }}",
            self.min_rx_ms, self.min_tx_ms, self.multiplier
        )
    }
}

/// `protocol bfd`: empty (sessions come from BGP's `bfd` options) or with timers and
/// neighbors of its own.
#[derive(Clone, Debug, Default)]
pub struct BirdBfd {
    /// `interface "PATTERN" {timers}`.
    pub interfaces: Vec<(String, BirdBfdTimers)>,
    /// `multihop {timers}`.
    pub multihop: Option<BirdBfdTimers>,
    /// `neighbor ADDR local LOCAL`: sessions of its own.
    pub neighbors: Vec<(String, String)>,
}

/// A channel of a `protocol bgp`.
#[derive(Clone, Debug)]
pub struct BirdChannel {
    /// `ipv4` or `ipv6`.
    pub af: Af,
    /// What follows `import`: `all`, `none`, `filter { … }`, `where …`.
    pub import: String,
    /// What follows `export`.
    pub export: String,
    /// `extended next hop on` (RFC 8950: IPv4 over an IPv6 session).
    pub extended_next_hop: bool,
    /// `add paths rx|tx|on`.
    pub add_paths: Option<String>,
}

impl BirdChannel {
    /// `import all; export all;`.
    pub fn all(af: Af) -> BirdChannel {
        BirdChannel { af, import: "all".into(), export: "all".into(), extended_next_hop: false, add_paths: None }
    }
}

/// One `protocol bgp`.
#[derive(Clone, Debug)]
pub struct BirdSession {
    /// Protocol name (what `birdc show protocols` reports).
    pub name: String,
    /// `local ADDR as ASN`.
    pub local: String,
    /// BIRD's AS.
    pub local_as: u32,
    /// `neighbor ADDR`.
    pub neighbor: String,
    /// `neighbor … as ASN`.
    pub peer_as: u32,
    /// `connect retry time N` (default 2).
    pub connect_retry: Option<u32>,
    /// `hold time N` (default 9).
    pub hold: Option<u32>,
    /// `keepalive time N` (default 3).
    pub keepalive: Option<u32>,
    /// `error wait time MIN, MAX` (default 1, 4).
    pub error_wait: Option<(u32, u32)>,
    /// `connect delay time N` (BIRD's default is 5 s).
    pub connect_delay: Option<u32>,
    /// `graceful restart on` (default on).
    pub graceful_restart: bool,
    /// `graceful restart time N` (BIRD's default is 120 s).
    pub graceful_restart_time: Option<u32>,
    /// `long lived graceful restart on` (RFC 9494).
    pub long_lived_graceful_restart: bool,
    /// `long lived stale time N`.
    pub long_lived_stale_time: Option<u32>,
    /// `enable route refresh on` (default on).
    pub route_refresh: bool,
    /// `password "…"`.
    pub password: Option<String>,
    /// `ttl security on` (GTSM).
    pub ttl_security: bool,
    /// `multihop N` (needed when the peer is not on a connected network).
    pub multihop: Option<u8>,
    /// `passive on`.
    pub passive: bool,
    /// `bfd on`, with BIRD's `protocol bfd` timers.
    pub bfd: bool,
    /// `bfd { timers }`: BFD with timers of the session's own (implies `bfd`).
    pub bfd_timers: Option<BirdBfdTimers>,
    /// `rr client`.
    pub rr_client: bool,
    /// `next hop self` on the channels (`None`: on iBGP sessions).
    pub next_hop_self: Option<bool>,
    /// Channels (default: IPv4 and IPv6, import and export all).
    pub channels: Vec<BirdChannel>,
}

impl Default for BirdSession {
    fn default() -> BirdSession {
        BirdSession {
            name: String::new(),
            local: String::new(),
            local_as: 0,
            neighbor: String::new(),
            peer_as: 0,
            connect_retry: Some(2),
            hold: Some(9),
            keepalive: Some(3),
            error_wait: Some((1, 4)),
            connect_delay: None,
            graceful_restart: true,
            graceful_restart_time: None,
            long_lived_graceful_restart: false,
            long_lived_stale_time: None,
            route_refresh: true,
            password: None,
            ttl_security: false,
            multihop: None,
            passive: false,
            bfd: false,
            bfd_timers: None,
            rr_client: false,
            next_hop_self: None,
            channels: vec![BirdChannel::all(Af::Ipv4), BirdChannel::all(Af::Ipv6)],
        }
    }
}

impl BirdSession {
    /// A session with BIRD's own timers and options (no graceful restart, no explicit route
    /// refresh) and no channels: the caller adds what it needs.
    pub fn plain(name: &str, local: &str, local_as: u32, neighbor: &str, peer_as: u32) -> BirdSession {
        BirdSession {
            name: name.into(),
            local: local.into(),
            local_as,
            neighbor: neighbor.into(),
            peer_as,
            connect_retry: None,
            hold: None,
            keepalive: None,
            error_wait: None,
            graceful_restart: false,
            route_refresh: false,
            channels: Vec::new(),
            ..BirdSession::default()
        }
    }

    fn render(&self, c: &mut String) {
        let ibgp = self.local_as == self.peer_as;
        let _ = writeln!(c, "protocol bgp {} {{", self.name);
        let _ = writeln!(c, "  local {} as {};", self.local, self.local_as);
        let _ = writeln!(c, "  neighbor {} as {};", self.neighbor, self.peer_as);
        if let Some(t) = self.connect_retry {
            let _ = writeln!(c, "  connect retry time {t};");
        }
        if let Some(t) = self.hold {
            let _ = writeln!(c, "  hold time {t};");
        }
        if let Some(t) = self.keepalive {
            let _ = writeln!(c, "  keepalive time {t};");
        }
        if let Some((min, max)) = self.error_wait {
            let _ = writeln!(c, "  error wait time {min}, {max};");
        }
        if self.graceful_restart {
            c.push_str("  graceful restart on;\n");
        }
        if let Some(t) = self.graceful_restart_time {
            let _ = writeln!(c, "  graceful restart time {t};");
        }
        if self.long_lived_graceful_restart {
            c.push_str("  long lived graceful restart on;\n");
        }
        if let Some(t) = self.long_lived_stale_time {
            let _ = writeln!(c, "  long lived stale time {t};");
        }
        if self.route_refresh {
            c.push_str("  enable route refresh on;\n");
        }
        if let Some(p) = &self.password {
            let _ = writeln!(c, "  password \"{p}\";");
        }
        if self.ttl_security {
            c.push_str("  ttl security on;\n");
        }
        if let Some(h) = self.multihop {
            let _ = writeln!(c, "  multihop {h};");
        } else if ibgp {
            // iBGP defaults to multihop; the peer is on the link.
            c.push_str("  direct;\n");
        }
        if let Some(d) = self.connect_delay {
            let _ = writeln!(c, "  connect delay time {d};");
        }
        if self.passive {
            c.push_str("  passive on;\n");
        }
        if let Some(t) = &self.bfd_timers {
            let _ = writeln!(c, "  bfd {};", t.render());
        } else if self.bfd {
            c.push_str("  bfd on;\n");
        }
        if self.rr_client {
            c.push_str("  rr client;\n");
        }
        let nh = if self.next_hop_self.unwrap_or(ibgp) { " next hop self;" } else { "" };
        let gw = if self.multihop.is_some() { "" } else { " gateway direct;" };
        for ch in &self.channels {
            let ext = if ch.extended_next_hop { " extended next hop on;" } else { "" };
            let add = ch.add_paths.as_ref().map(|a| format!(" add paths {a};")).unwrap_or_default();
            let _ =
                writeln!(c, "  {} {{ import {}; export {};{gw}{nh}{ext}{add} }};", ch.af.name(), ch.import, ch.export);
        }
        c.push_str("}\n");
    }
}

impl BirdConfig {
    /// Renders `bird.conf`.
    pub fn render(&self) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "router id {};\nlog {};", self.router_id, self.log);
        match self.device_scan {
            Some(s) => {
                let _ = writeln!(c, "protocol device {{ scan time {s}; }}");
            }
            None => c.push_str("protocol device { }\n"),
        }
        if self.direct {
            c.push_str("protocol direct { ipv4; ipv6; }\n");
        }
        for k in &self.kernel {
            let name = k.name.as_ref().map(|n| format!(" {n}")).unwrap_or_default();
            let import = k.import.as_ref().map(|i| format!("import {i}; ")).unwrap_or_default();
            let _ = writeln!(c, "protocol kernel{name} {{\n  {} {{ {import}export {}; }};", k.af.name(), k.export);
            if k.merge_paths {
                c.push_str("  merge paths on;\n");
            }
            c.push_str("}\n");
        }
        for (name, af, routes) in [("st4", Af::Ipv4, &self.routes4), ("st6", Af::Ipv6, &self.routes6)] {
            if routes.is_empty() {
                continue;
            }
            let _ = writeln!(c, "protocol static {name} {{ {};", af.name());
            for r in routes {
                let _ = writeln!(c, "  route {r} unreachable;");
            }
            c.push_str("}\n");
        }
        if let Some(b) = &self.bfd {
            if b.interfaces.is_empty() && b.multihop.is_none() && b.neighbors.is_empty() {
                // Sessions come from BGP's `bfd` options, each with its own timers.
                c.push_str("protocol bfd {}\n");
            } else {
                c.push_str("protocol bfd {\n");
                for (pattern, t) in &b.interfaces {
                    let _ = writeln!(c, "  interface \"{pattern}\" {};", t.render());
                }
                if let Some(t) = &b.multihop {
                    let _ = writeln!(c, "  multihop {};", t.render());
                }
                for (addr, local) in &b.neighbors {
                    let _ = writeln!(c, "  neighbor {addr} local {local};");
                }
                c.push_str("}\n");
            }
        }
        for s in &self.sessions {
            s.render(&mut c);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> BirdSession {
        BirdSession {
            name: "p".into(),
            local: "10.0.0.2".into(),
            local_as: 65020,
            neighbor: "10.0.0.1".into(),
            peer_as: 64512,
            ..BirdSession::default()
        }
    }

    fn one(s: BirdSession) -> String {
        BirdConfig { router_id: "10.0.0.2".into(), sessions: vec![s], ..BirdConfig::default() }.render()
    }

    #[test]
    fn defaults_are_the_test_beds_short_timers_and_both_families() {
        let c = one(session());
        assert!(c.starts_with("router id 10.0.0.2;\nlog stderr all;\nprotocol device { scan time 1; }\n"), "{c}");
        assert!(c.contains(
            "protocol bgp p {\n  local 10.0.0.2 as 65020;\n  neighbor 10.0.0.1 as 64512;\n  connect retry time 2;\n  hold time 9;\n  keepalive time 3;\n  error wait time 1, 4;\n  graceful restart on;\n  enable route refresh on;\n"
        ), "{c}");
        assert!(c.contains("  ipv4 { import all; export all; gateway direct; };\n  ipv6 { import all; export all; gateway direct; };\n}\n"), "{c}");
        assert!(!c.contains("protocol static") && !c.contains("protocol kernel") && !c.contains("bfd"), "{c}");
    }

    #[test]
    fn plain_sessions_keep_birds_defaults() {
        let mut s = BirdSession::plain("p0", "10.0.0.1", 65000, "10.0.1.1", 65001);
        s.channels.push(BirdChannel { export: "none".into(), ..BirdChannel::all(Af::Ipv4) });
        let c = one(s);
        for not in ["hold", "keepalive", "connect retry", "error wait", "graceful", "refresh"] {
            assert!(!c.contains(not), "{not:?} in {c}");
        }
        assert!(c.contains("  ipv4 { import all; export none; gateway direct; };\n}"), "{c}");
        assert!(!c.contains("ipv6 {"), "{c}");
    }

    #[test]
    fn log_and_device_scan() {
        let c = BirdConfig { log: "\"/tmp/b.log\" all".into(), device_scan: None, ..BirdConfig::default() }.render();
        assert!(c.contains("log \"/tmp/b.log\" all;\nprotocol device { }\n"), "{c}");
    }

    #[test]
    fn direct_and_kernel_protocols() {
        let c = BirdConfig {
            direct: true,
            kernel: vec![
                BirdKernel {
                    name: None,
                    af: Af::Ipv6,
                    import: Some("none".into()),
                    export: "where source != RTS_DEVICE".into(),
                    merge_paths: true,
                },
                BirdKernel {
                    name: Some("k4".into()),
                    af: Af::Ipv4,
                    import: None,
                    export: "where source = RTS_BGP".into(),
                    merge_paths: false,
                },
            ],
            ..BirdConfig::default()
        }
        .render();
        assert!(c.contains("protocol direct { ipv4; ipv6; }\n"), "{c}");
        assert!(
            c.contains("protocol kernel {\n  ipv6 { import none; export where source != RTS_DEVICE; };\n  merge paths on;\n}\n"),
            "{c}"
        );
        assert!(c.contains("protocol kernel k4 {\n  ipv4 { export where source = RTS_BGP; };\n}\n"), "{c}");
    }

    #[test]
    fn static_routes() {
        let c = BirdConfig {
            routes4: vec!["10.1.0.0/24".into()],
            routes6: vec!["fd00::/64".into()],
            ..BirdConfig::default()
        }
        .render();
        assert!(c.contains("protocol static st4 { ipv4;\n  route 10.1.0.0/24 unreachable;\n}\n"), "{c}");
        assert!(c.contains("protocol static st6 { ipv6;\n  route fd00::/64 unreachable;\n}\n"), "{c}");
    }

    #[test]
    fn bfd_protocol() {
        let t = BirdBfdTimers { min_rx_ms: 300, min_tx_ms: 300, idle_tx_ms: Some(1000), multiplier: 3 };
        let c = BirdConfig { bfd: Some(BirdBfd::default()), ..BirdConfig::default() }.render();
        assert!(c.contains("protocol bfd {}\n"), "{c}");
        let bfd = BirdBfd {
            interfaces: vec![("*".into(), t)],
            multihop: Some(BirdBfdTimers { idle_tx_ms: None, ..t }),
            neighbors: vec![("10.0.0.1".into(), "10.0.0.2".into())],
        };
        let c = BirdConfig { bfd: Some(bfd), ..BirdConfig::default() }.render();
        assert!(c.contains("protocol bfd {\n  interface \"*\" { min rx interval 300 ms; min tx interval 300 ms; idle tx interval 1000 ms; multiplier 3; };\n"), "{c}");
        assert!(c.contains("  multihop { min rx interval 300 ms; min tx interval 300 ms; multiplier 3; };\n"), "{c}");
        assert!(c.contains("  neighbor 10.0.0.1 local 10.0.0.2;\n}\n"), "{c}");
    }

    #[test]
    fn session_security_and_connection_options() {
        let c = one(BirdSession {
            password: Some("s3cret".into()),
            ttl_security: true,
            passive: true,
            connect_delay: Some(1),
            ..session()
        });
        for want in ["  password \"s3cret\";\n", "  ttl security on;\n", "  passive on;\n", "  connect delay time 1;\n"]
        {
            assert!(c.contains(want), "{want:?} in {c}");
        }
    }

    #[test]
    fn multihop_drops_gateway_direct() {
        let c = one(BirdSession { multihop: Some(2), ..session() });
        assert!(c.contains("  multihop 2;\n") && !c.contains("gateway direct") && !c.contains("direct;\n"), "{c}");
    }

    #[test]
    fn ibgp_is_direct_with_next_hop_self() {
        let c = one(BirdSession { peer_as: 65020, ..session() });
        assert!(c.contains("  direct;\n") && c.contains("gateway direct; next hop self; };"), "{c}");
        let c = one(BirdSession { peer_as: 65020, next_hop_self: Some(false), ..session() });
        assert!(!c.contains("next hop self"), "{c}");
        let c = one(BirdSession { next_hop_self: Some(true), ..session() });
        assert!(c.contains("next hop self"), "{c}");
    }

    #[test]
    fn session_timers() {
        let c = one(BirdSession {
            hold: Some(90),
            keepalive: Some(30),
            connect_retry: None,
            error_wait: None,
            ..session()
        });
        assert!(c.contains("  hold time 90;\n  keepalive time 30;\n"), "{c}");
        assert!(!c.contains("connect retry") && !c.contains("error wait"), "{c}");
    }

    #[test]
    fn graceful_restart_and_route_refresh_can_be_left_out() {
        let c = one(BirdSession { graceful_restart: false, route_refresh: false, ..session() });
        assert!(!c.contains("graceful restart") && !c.contains("route refresh"), "{c}");
    }

    #[test]
    fn graceful_restart_time_and_long_lived_graceful_restart() {
        let c = one(BirdSession {
            graceful_restart_time: Some(3),
            long_lived_graceful_restart: true,
            long_lived_stale_time: Some(15),
            ..session()
        });
        assert!(c.contains("  graceful restart on;\n  graceful restart time 3;\n  long lived graceful restart on;\n  long lived stale time 15;\n"), "{c}");
        assert!(!one(session()).contains("long lived"));
    }

    #[test]
    fn session_bfd() {
        let c = one(BirdSession { bfd: true, ..session() });
        assert!(c.contains("  bfd on;\n"), "{c}");
        let t = BirdBfdTimers { min_rx_ms: 300, min_tx_ms: 200, idle_tx_ms: Some(1000), multiplier: 3 };
        let c = one(BirdSession { bfd_timers: Some(t), ..session() });
        assert!(
            c.contains(
                "  bfd { min rx interval 300 ms; min tx interval 200 ms; idle tx interval 1000 ms; multiplier 3; };\n"
            ),
            "{c}"
        );
    }

    #[test]
    fn rr_client() {
        assert!(one(BirdSession { rr_client: true, ..session() }).contains("  rr client;\n"));
        assert!(!one(session()).contains("rr client"));
    }

    #[test]
    fn channel_filters_extended_next_hop_and_add_paths() {
        let ch = BirdChannel {
            af: Af::Ipv4,
            import: "filter { bgp_local_pref = 0; accept; }".into(),
            export: "none".into(),
            extended_next_hop: true,
            add_paths: Some("rx".into()),
        };
        let c = one(BirdSession { channels: vec![ch], ..session() });
        assert!(c.contains(
            "  ipv4 { import filter { bgp_local_pref = 0; accept; }; export none; gateway direct; extended next hop on; add paths rx; };\n"
        ), "{c}");
    }
}

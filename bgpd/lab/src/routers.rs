//! ToRs and spines: BIRD 2 or FRR from their Debian packages, configured from
//! the topology (an eBGP or iBGP session to every node and router on the
//! router's segments), learned routes installed with ECMP, graceful restart on,
//! and routes carrying GRACEFUL_SHUTDOWN (RFC 8326) taken with LOCAL_PREF 0,
//! the receiver policy the RFC asks operators for (bgpd applies it itself).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use bgpd_proto::bfd::BfdConfig;
use testgate::testbed::bird::{BirdBfd, BirdBfdTimers, BirdChannel, BirdConfig, BirdKernel, BirdSession};
use testgate::testbed::frr::{FrrBfdTimers, FrrBfdd, FrrConfig, FrrNeighbor};
use testgate::testbed::Af;

use super::net;
use super::spec::{Implementation, Member, Role, RouterSession, Topology};

/// Where FRR's daemons are installed by the Debian package.
const FRR_DIR: &str = "/usr/lib/frr";

/// BIRD's BFD timers for a session's.
fn bird_bfd(b: &BfdConfig) -> BirdBfdTimers {
    BirdBfdTimers {
        min_rx_ms: b.required_min_rx.as_millis(),
        min_tx_ms: b.desired_min_tx.as_millis(),
        idle_tx_ms: Some(b.idle_tx.as_millis()),
        multiplier: b.detect_mult,
    }
}

/// BIRD's configuration for a router.
pub fn bird_conf(router_id: std::net::Ipv4Addr, asn: u32, sessions: &[RouterSession]) -> String {
    // Connected networks are advertised (a host behind a router is reachable);
    // learned routes go into the kernel, equal paths merged into one ECMP route.
    let kernel = |af| BirdKernel {
        name: None,
        af,
        import: Some("none".into()),
        export: "where source != RTS_DEVICE".into(),
        merge_paths: true,
    };
    // RFC 8326 receiver policy: GRACEFUL_SHUTDOWN routes get LOCAL_PREF 0.
    let import = "filter { if (65535, 0) ~ bgp_community then bgp_local_pref = 0; accept; }";
    let channel = |af| BirdChannel { import: import.into(), ..BirdChannel::all(af) };
    let sessions = sessions
        .iter()
        .map(|s| {
            let ibgp = s.peer_as == asn;
            let af = if s.neighbor.is_ipv4() { Af::Ipv4 } else { Af::Ipv6 };
            let mut channels = Vec::new();
            if s.extended_next_hop {
                // RFC 8950: IPv4 over this IPv6 session, with IPv6 next hops.
                channels.push(BirdChannel { extended_next_hop: true, ..channel(Af::Ipv4) });
            }
            channels.push(channel(af));
            BirdSession {
                name: proto_name(&s.peer, &s.neighbor),
                local: s.local.to_string(),
                local_as: asn,
                neighbor: s.neighbor.to_string(),
                peer_as: s.peer_as,
                route_refresh: false,
                bfd_timers: s.bfd.as_ref().map(bird_bfd),
                // iBGP neighbours are reflector clients (and `direct`, next hop self).
                rr_client: ibgp,
                channels,
                ..BirdSession::default()
            }
        })
        .collect::<Vec<BirdSession>>();
    BirdConfig {
        router_id: router_id.to_string(),
        direct: true,
        kernel: vec![kernel(Af::Ipv4), kernel(Af::Ipv6)],
        // Sessions come from BGP's `bfd` option, each with its own timers.
        bfd: sessions.iter().any(|s| s.bfd_timers.is_some()).then(BirdBfd::default),
        sessions,
        ..BirdConfig::default()
    }
    .render()
}
/// FRR's `bgpd.conf` for a router: multipath across neighbouring ASes too.
pub fn frr_conf(router_id: std::net::Ipv4Addr, asn: u32, sessions: &[RouterSession]) -> String {
    // RFC 8326 §4.2: a route a peer is about to withdraw loses to any other.
    let preamble = "bgp community-list standard GSHUT seq 5 permit graceful-shutdown\n\
                    route-map GSHUT-IN permit 10\n match community GSHUT\n set local-preference 0\n\
                    route-map GSHUT-IN permit 20\n!\n";
    let neighbors = sessions
        .iter()
        .map(|s| {
            let ibgp = s.peer_as == asn;
            // Each session carries its own family (as Calico's BIRD sessions do); an IPv6
            // session with the extended next hop carries IPv4 too.
            let families = match (s.neighbor.is_ipv4(), s.extended_next_hop) {
                (true, _) => vec![Af::Ipv4],
                (false, true) => vec![Af::Ipv4, Af::Ipv6],
                (false, false) => vec![Af::Ipv6],
            };
            FrrNeighbor {
                addr: s.neighbor.to_string(),
                remote_as: s.peer_as,
                update_source: s.local.to_string(),
                // RFC 8950 on a global IPv6 session (FRR offers it by itself on
                // link-local sessions only).
                extended_nexthop: s.extended_next_hop,
                bfd_profile: s.bfd.as_ref().map(|b| frr_bfd_profile(b).0),
                families,
                route_map_in: Some("GSHUT-IN".into()),
                rr_client: ibgp,
                next_hop_self: ibgp,
                ..FrrNeighbor::default()
            }
        })
        .collect();
    FrrConfig {
        hostname: format!("r{asn}"),
        preamble: preamble.into(),
        asn,
        router_id: router_id.to_string(),
        default_ipv4_unicast: false,
        multipath_relax: true,
        redistribute_connected: true,
        maximum_paths: Some(16),
        neighbors,
        ..FrrConfig::default()
    }
    .render()
}

/// FRR bfdd's profile for a set of timers: its name and timers.
fn frr_bfd_profile(b: &BfdConfig) -> (String, FrrBfdTimers) {
    let (tx, rx) = (b.desired_min_tx.as_millis(), b.required_min_rx.as_millis());
    (
        format!("bfd-{tx}-{rx}-{}", b.detect_mult),
        FrrBfdTimers { transmit_ms: tx, receive_ms: rx, detect_mult: b.detect_mult },
    )
}

/// FRR's `bfdd.conf`: a profile per set of timers the sessions use (BGP's
/// `neighbor X bfd profile P` asks bfdd for the session, as frr-k8s does);
/// `None` when no session runs BFD.
pub fn frr_bfdd_conf(sessions: &[RouterSession]) -> Option<String> {
    let profiles: std::collections::BTreeSet<(String, FrrBfdTimers)> =
        sessions.iter().filter_map(|s| s.bfd.as_ref()).map(frr_bfd_profile).collect();
    if profiles.is_empty() {
        return None;
    }
    Some(FrrBfdd { profiles: profiles.into_iter().collect(), peers: Vec::new() }.render())
}

fn proto_name(peer: &str, addr: &std::net::IpAddr) -> String {
    let fam = if addr.is_ipv4() { "" } else { "6" };
    format!("p{fam}_{}", peer.replace('-', "_"))
}

/// A router's files in the lab's state directory.
pub struct RouterFiles {
    dir: PathBuf,
}

impl RouterFiles {
    /// The directory of router `name`.
    pub fn new(state: &Path, name: &str) -> RouterFiles {
        RouterFiles { dir: state.join("routers").join(name) }
    }

    fn bird_sock(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    /// A bgpd router's control socket.
    pub fn bgpd_sock(&self) -> PathBuf {
        self.dir.join("bgpd.sock")
    }
}

/// The datastore of a bgpd router: itself as a Node (mesh off), a BGPPeer per
/// session with an accept-all BGPFilter both ways (a router carries transit,
/// unlike a node's default export), iBGP neighbours as reflector clients, and
/// its connected networks as `serviceExternalIPs` ranges — the one Calico
/// field that makes every node advertise a CIDR, standing in for a `network`
/// statement.
pub fn bgpd_datastore(router: &Member, sessions: &[RouterSession]) -> String {
    let Role::Router { asn, router_id, .. } = &router.role else { return String::new() };
    let connected4 = router.links.iter().map(|(_, a)| format!("{{cidr: {}}}", a.trunc()));
    let connected: Vec<String> =
        connected4.chain(router.links6.iter().map(|(_, a)| format!("{{cidr: \"{}\"}}", a.trunc()))).collect();
    let ibgp = sessions.iter().any(|s| s.peer_as == *asn);
    let mut y = format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\nspec: {{nodeToNodeMeshEnabled: false, asNumber: {asn}, serviceExternalIPs: [{}]}}\n",
        connected.join(", ")
    );
    let rr = if ibgp { format!(", routeReflectorClusterID: {router_id}") } else { String::new() };
    // Its router ID as the template gives it (by default its first IPv4
    // address), through the Node annotation: an IPv6-only router has no
    // ipv4Address to take it from.
    let v4 = router.links.first().map(|(_, a)| format!("ipv4Address: {a}, ")).unwrap_or_default();
    let v6 = router.links6.first().map(|(_, a)| format!("ipv6Address: \"{a}\", ")).unwrap_or_default();
    let _ = write!(
        y,
        "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {}, annotations: {{bgpd.io/router-id: {router_id}}}}}\nspec: {{bgp: {{{v4}{v6}asNumber: {asn}{rr}}}}}\n",
        router.name
    );
    y.push_str(
        "---\napiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: transit}\nspec:\n  exportV4: [{action: Accept}]\n  importV4: [{action: Accept}]\n  exportV6: [{action: Accept}]\n  importV6: [{action: Accept}]\n",
    );
    // BFD where a node runs it with the router: the BGPPeer asks for it, and
    // a BFDConfiguration gives the segment's interface the node's timers.
    let mut bfd_interfaces: Vec<(String, BfdConfig)> = Vec::new();
    for s in sessions {
        let name = if s.neighbor.is_ipv4() { s.peer.clone() } else { format!("{}-v6", s.peer) };
        let bfd = if s.bfd.is_some() { "true" } else { "false" };
        let _ = write!(
            y,
            "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: {name}, annotations: {{bgpd.io/bfd: '{bfd}'}}}}\nspec: {{node: {}, peerIP: \"{}\", asNumber: {}, filters: [transit]}}\n",
            router.name, s.neighbor, s.peer_as
        );
        let segment = router.links.iter().map(|(seg, a)| (seg, std::net::IpAddr::V4(a.addr())));
        let segment = segment
            .chain(router.links6.iter().map(|(seg, a)| (seg, std::net::IpAddr::V6(a.addr()))))
            .find(|(_, a)| *a == s.local)
            .map(|(seg, _)| seg.clone());
        if let (Some(b), Some(seg)) = (s.bfd, segment) {
            if !bfd_interfaces.iter().any(|(x, _)| *x == seg) {
                bfd_interfaces.push((seg, b));
            }
        }
    }
    if !bfd_interfaces.is_empty() {
        let _ = write!(
            y,
            "---\napiVersion: projectcalico.org/v3\nkind: BFDConfiguration\nmetadata: {{name: lab}}\nspec:\n  nodeSelector: all()\n  interfaces:\n"
        );
        for (seg, b) in bfd_interfaces {
            let _ = writeln!(
                y,
                "  - {{matchPattern: {seg}, minimumRecvInterval: {}ms, minimumSendInterval: {}ms, idleSendInterval: {}ms, multiplier: {}}}",
                b.required_min_rx.as_millis(),
                b.desired_min_tx.as_millis(),
                b.idle_tx.as_millis(),
                b.detect_mult
            );
        }
    }
    y
}

/// A daemon a router runs: (process name, pid, argv, log).
pub type Started = (String, u32, Vec<String>, PathBuf);

/// Starts a router's daemons in its namespace.
pub fn start(topo: &Topology, router: &Member, state: &Path, bgpd: &Path) -> anyhow::Result<Vec<Started>> {
    let Role::Router { implementation, asn, router_id, .. } = &router.role else { return Ok(Vec::new()) };
    let ns = topo.netns(&router.name);
    let files = RouterFiles::new(state, &router.name);
    std::fs::create_dir_all(&files.dir)?;
    let sessions = topo.router_sessions(router);
    let d = &files.dir;
    let s = |p: &Path| p.display().to_string();
    match implementation {
        Implementation::Bgpd => {
            let ds = d.join("datastore.yaml");
            std::fs::write(&ds, bgpd_datastore(router, &sessions))?;
            let argv: Vec<String> = vec![
                s(bgpd),
                "run".into(),
                "--datastore".into(),
                format!("file:{}", s(&ds)),
                "--node".into(),
                router.name.clone(),
                "--control-socket".into(),
                s(&files.bgpd_sock()),
                "--kernel-table".into(),
                "254".into(),
            ];
            let log = d.join("bgpd.log");
            let pid = net::spawn(&ns, &argv, &log)?;
            Ok(vec![(format!("{}/bgpd", router.name), pid, argv, log)])
        }
        Implementation::Bird => {
            let conf = d.join("bird.conf");
            std::fs::write(&conf, bird_conf(*router_id, *asn, &sessions))?;
            let argv = ["bird", "-f", "-c", &s(&conf), "-s", &s(&files.bird_sock()), "-P", &s(&d.join("bird.pid"))];
            let argv: Vec<String> = argv.iter().map(|x| x.to_string()).collect();
            let log = d.join("bird.log");
            let pid = net::spawn(&ns, &argv, &log)?;
            Ok(vec![(format!("{}/bird", router.name), pid, argv, log)])
        }
        Implementation::Frr => {
            let zconf = d.join("zebra.conf");
            std::fs::write(&zconf, "")?;
            let bconf = d.join("bgpd.conf");
            std::fs::write(&bconf, frr_conf(*router_id, *asn, &sessions))?;
            // zebra drops to user frr and must own its directory.
            net::run(Command::new("chown").arg("-R").arg("frr:frr").arg(d))?;
            let zapi = d.join("zserv.api");
            let common = |prog: &str, conf: &Path, pid: &str| -> Vec<String> {
                let mut v = vec![format!("{FRR_DIR}/{prog}")];
                if prog == "bgpd" {
                    v.push("-S".into());
                }
                v.extend(["-f".into(), s(conf), "-i".into(), s(&d.join(pid)), "-z".into(), s(&zapi)]);
                v.extend(["--vty_socket".into(), s(d), "-P".into(), "0".into()]);
                v
            };
            let zargv = common("zebra", &zconf, "zebra.pid");
            let zlog = d.join("zebra.log");
            let zebra = net::spawn(&ns, &zargv, &zlog)?;
            wait(|| zapi.exists(), 100).context("FRR zebra did not open its API socket within 10 s")?;
            let mut started = vec![(format!("{}/zebra", router.name), zebra, zargv, zlog)];
            if let Some(text) = frr_bfdd_conf(&sessions) {
                let fconf = d.join("bfdd.conf");
                std::fs::write(&fconf, text)?;
                net::run(Command::new("chown").arg("frr:frr").arg(&fconf))?;
                let fargv = common("bfdd", &fconf, "bfdd.pid");
                let flog = d.join("bfdd.log");
                let bfdd = net::spawn(&ns, &fargv, &flog)?;
                started.push((format!("{}/bfdd", router.name), bfdd, fargv, flog));
            }
            let bargv = common("bgpd", &bconf, "bgpd.pid");
            let blog = d.join("bgpd.log");
            let frr_bgpd = net::spawn(&ns, &bargv, &blog)?;
            started.push((format!("{}/frr-bgpd", router.name), frr_bgpd, bargv, blog));
            Ok(started)
        }
    }
}

fn wait(mut ok: impl FnMut() -> bool, tenths: u32) -> anyhow::Result<()> {
    for _ in 0..tenths {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::bail!("timed out")
}

/// The BGP protocols of the BIRD on control socket `socket` and whether each is
/// Established, from `birdc show protocols`: (name, up, BIRD's state and info).
/// Empty when BIRD does not answer.
pub fn bird_bgp_sessions(socket: &Path) -> Vec<(String, bool, String)> {
    let out = Command::new("birdc").arg("-s").arg(socket).args(["show", "protocols"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            if words.get(1) != Some(&"BGP") {
                return None;
            }
            let info = words.iter().skip(5).copied().collect::<Vec<_>>().join(" ");
            Some((
                words[0].to_string(),
                info.contains("Established"),
                format!("{} {info}", words.get(3).unwrap_or(&"?")),
            ))
        })
        .collect()
}

/// Each configured session of a router and whether it is Established.
pub fn sessions_up(topo: &Topology, router: &Member, state: &Path) -> Vec<(String, bool, String)> {
    let Role::Router { implementation, .. } = &router.role else { return Vec::new() };
    let files = RouterFiles::new(state, &router.name);
    let sessions = topo.router_sessions(router);
    match implementation {
        Implementation::Bgpd => {
            let v = super::ask_peers(&files.bgpd_sock()).unwrap_or(serde_json::Value::Null);
            sessions
                .iter()
                .map(|s| {
                    let p = v["peers"].as_array().into_iter().flatten().find(|p| {
                        let addr = p["address"].as_str().and_then(|a| a.parse::<std::net::SocketAddr>().ok());
                        addr.is_some_and(|a| a.ip() == s.neighbor)
                    });
                    let st = p.and_then(|p| p["state"].as_str()).unwrap_or("no answer from bgpd").to_string();
                    (s.peer.clone(), st == "Established", st)
                })
                .collect()
        }
        Implementation::Bird => {
            let up = bird_bgp_sessions(&files.bird_sock());
            sessions
                .iter()
                .map(|s| {
                    let name = proto_name(&s.peer, &s.neighbor);
                    match up.iter().find(|(n, ..)| *n == name) {
                        Some((_, established, info)) => (s.peer.clone(), *established, info.clone()),
                        None => (s.peer.clone(), false, "no such protocol (BIRD not answering)".into()),
                    }
                })
                .collect()
        }
        Implementation::Frr => {
            let out = Command::new("vtysh")
                .arg("--vty_socket")
                .arg(&files.dir)
                .args(["-c", "show bgp summary json"])
                .output();
            let v: serde_json::Value =
                out.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or(serde_json::Value::Null);
            sessions
                .iter()
                .map(|s| {
                    let af = if s.neighbor.is_ipv4() { "ipv4Unicast" } else { "ipv6Unicast" };
                    let st = v[af]["peers"][s.neighbor.to_string()]["state"].as_str().unwrap_or("unknown").to_string();
                    (s.peer.clone(), st == "Established", st)
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Topology;
    use std::net::Ipv4Addr;

    const LAB: &str = r#"
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 65101, nodeToNodeMeshEnabled: false}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-1}
spec: {bgp: {ipv4Address: 10.0.1.11/24}}
---
apiVersion: bgpd.io/v1
kind: Lab
metadata: {name: t}
spec:
  routers:
    - {name: tor, asNumber: 65001}
    - {name: spine, asNumber: 65000, implementation: bird}
  segments:
    - {name: rack1, members: [{name: tor, address: 10.0.1.1/24}, {name: node-1}]}
    - {name: up, members: [{name: spine, address: 10.0.255.1/30}, {name: tor, address: 10.0.255.2/30}]}
"#;

    #[test]
    fn a_bgpd_router_is_plain_calico_resources_bgpd_plans_from() {
        let t = Topology::parse(LAB).unwrap();
        let tor = &t.members["tor"];
        let yaml = bgpd_datastore(tor, &t.router_sessions(tor));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("datastore.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let (model, problems) = bgpd::datastore::load(&file).unwrap();
        let serious: Vec<_> =
            problems.iter().filter(|p| p.severity != bgpd::datastore::Severity::Debug).map(|p| p.to_string()).collect();
        assert!(serious.is_empty(), "{serious:?}\n{yaml}");
        let (node, peers) = bgpd::daemon::plan::plan(&model, "tor").unwrap();
        assert_eq!(node.asn, 65001);
        let mut got: Vec<(String, u32)> = peers.iter().map(|p| (p.addr.ip().to_string(), p.peer_as)).collect();
        got.sort();
        assert_eq!(got, [("10.0.1.11".to_string(), 65101), ("10.0.255.1".to_string(), 65000)]);
        assert!(peers.iter().all(|p| p.routing.filters.len() == 1), "transit: every peer has the accept-all filter");
        let ext: Vec<String> = model.bgp_configuration.service_external_ips.iter().map(|n| n.to_string()).collect();
        assert_eq!(ext, ["10.0.1.0/24", "10.0.255.0/30"], "connected networks are advertised");
    }

    #[test]
    fn bird_and_frr_get_a_session_per_neighbour() {
        let t = Topology::parse(LAB).unwrap();
        let spine = &t.members["spine"];
        let sessions = t.router_sessions(spine);
        let bird = bird_conf(Ipv4Addr::new(10, 0, 255, 1), 65000, &sessions);
        assert!(bird.contains("protocol bgp p_tor {"), "{bird}");
        assert!(bird.contains("local 10.0.255.1 as 65000;\n  neighbor 10.0.255.2 as 65001;"), "{bird}");
        assert!(bird.contains("merge paths on") && bird.contains("protocol direct"), "{bird}");
        assert!(!bird.contains("rr client"), "eBGP: no reflection\n{bird}");
        let frr = frr_conf(Ipv4Addr::new(10, 0, 255, 1), 65000, &sessions);
        assert!(frr.contains(" neighbor 10.0.255.2 remote-as 65001\n"), "{frr}");
        assert!(frr.contains("  neighbor 10.0.255.2 activate\n") && frr.contains("multipath-relax"), "{frr}");
        // RFC 8326 receiver policy: GRACEFUL_SHUTDOWN routes get LOCAL_PREF 0.
        assert!(bird.contains("if (65535, 0) ~ bgp_community then bgp_local_pref = 0;"), "{bird}");
        assert!(frr.contains("  neighbor 10.0.255.2 route-map GSHUT-IN in\n"), "{frr}");
        assert!(frr.contains("permit graceful-shutdown") && frr.contains(" set local-preference 0\n"), "{frr}");
        // iBGP neighbours are reflector clients.
        let ibgp = [RouterSession {
            peer: "n".into(),
            local: Ipv4Addr::new(10, 0, 0, 1).into(),
            neighbor: Ipv4Addr::new(10, 0, 0, 2).into(),
            peer_as: 65000,
            bfd: None,
            extended_next_hop: false,
        }];
        assert!(bird_conf(Ipv4Addr::new(10, 0, 0, 1), 65000, &ibgp).contains("rr client;"));
        assert!(frr_conf(Ipv4Addr::new(10, 0, 0, 1), 65000, &ibgp).contains("neighbor 10.0.0.2 route-reflector-client"));
    }

    #[test]
    fn routers_mirror_the_bfd_the_nodes_run_with_them() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../templates/dual-tor-ecmp.yaml");
        let t = Topology::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        let tor_a = &t.members["tor-a"];
        let sessions = t.router_sessions(tor_a);
        assert_eq!(sessions.len(), 3);
        let b = sessions[0].bfd.expect("node-1 runs BFD with tor-a (the template's BFDConfiguration)");
        assert_eq!((b.desired_min_tx.as_millis(), b.required_min_rx.as_millis(), b.detect_mult), (300, 300, 3));
        assert!(sessions.iter().all(|s| s.bfd == Some(b)));

        let bird = bird_conf(Ipv4Addr::new(10, 1, 1, 1), 65001, &sessions);
        assert!(bird.contains("protocol bfd {}"), "{bird}");
        assert!(
            bird.contains(
                "  bfd { min rx interval 300 ms; min tx interval 300 ms; idle tx interval 1000 ms; multiplier 3; };"
            ),
            "{bird}"
        );
        let frr = frr_conf(Ipv4Addr::new(10, 1, 1, 1), 65001, &sessions);
        assert!(frr.contains(" neighbor 10.1.1.2 bfd profile bfd-300-300-3\n"), "{frr}");
        let bfdd = frr_bfdd_conf(&sessions).expect("bfdd runs");
        assert!(bfdd.contains(" profile bfd-300-300-3\n  transmit-interval 300\n  receive-interval 300\n"), "{bfdd}");

        // A bgpd router: the BGPPeers ask for BFD and a BFDConfiguration has the timers.
        let yaml = bgpd_datastore(tor_a, &sessions);
        let (model, problems) = bgpd::datastore::parse_sources(&[bgpd::datastore::SourceText {
            path: "r.yaml".into(),
            text: yaml.clone(),
        }])
        .unwrap();
        assert!(problems.iter().all(|p| p.severity < bgpd::datastore::Severity::Warning), "{problems:?}\n{yaml}");
        let (node, peers) = bgpd::daemon::plan::plan(&model, "tor-a").unwrap();
        let networks: Vec<(String, ipnet::IpNet)> =
            tor_a.links.iter().map(|(s, a)| (s.clone(), ipnet::IpNet::V4(*a))).collect();
        let bfd = bgpd::daemon::bfd::sessions_on(&node, peers.iter(), &networks);
        assert_eq!(bfd.len(), 3, "{yaml}");
        assert!(bfd.iter().all(|s| s.config.desired_min_tx.as_millis() == 300 && !s.multihop));

        // Without a BFDConfiguration, nothing runs BFD.
        let plain = std::fs::read_to_string(path).unwrap().replace("kind: BFDConfiguration", "kind: Ignored");
        let t = Topology::parse(&plain).unwrap();
        let sessions = t.router_sessions(&t.members["tor-a"]);
        assert!(sessions.iter().all(|s| s.bfd.is_none()));
        assert!(frr_bfdd_conf(&sessions).is_none());
        assert!(!bird_conf(Ipv4Addr::new(10, 1, 1, 1), 65001, &sessions).contains("bfd"));
    }

    /// templates/ipv6-only.yaml: no IPv4 on any link, so every router session
    /// is IPv6 and carries IPv4 too with the extended next hop (RFC 8950).
    #[test]
    fn ipv6_only_routers_carry_ipv4_over_ipv6_sessions() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../templates/ipv6-only.yaml");
        let t = Topology::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        let bird_tor = &t.members["tor-r1"];
        let sessions = t.router_sessions(bird_tor);
        assert!(sessions.iter().all(|s| s.neighbor.is_ipv6() && s.extended_next_hop), "{sessions:?}");
        let bird = bird_conf(Ipv4Addr::new(10, 255, 0, 2), 65001, &sessions);
        assert!(bird.contains("gateway direct; extended next hop on; };\n  ipv6 {"), "{bird}");
        let frr_tor = &t.members["tor-r2"];
        let frr = frr_conf(Ipv4Addr::new(10, 255, 0, 3), 65002, &t.router_sessions(frr_tor));
        assert!(frr.contains(" neighbor fd00:0:2::13 capability extended-nexthop\n"), "{frr}");
        let v4 = frr.split(" address-family ipv6").next().unwrap();
        assert!(v4.contains("  neighbor fd00:0:2::13 activate\n"), "activated for IPv4 unicast: {frr}");

        // The bgpd spine: no ipv4Address, its router ID from the template.
        let spine = &t.members["spine"];
        let yaml = bgpd_datastore(spine, &t.router_sessions(spine));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("datastore.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let (model, _) = bgpd::datastore::load(&file).unwrap();
        let (node, peers) = bgpd::daemon::plan::plan(&model, "spine").unwrap();
        assert_eq!(node.router_id, Ipv4Addr::new(10, 255, 0, 1), "{yaml}");
        assert!(node.ipv4.is_none());
        assert!(peers.iter().all(|p| p.extended_next_hop && p.families.contains(&bgpd_proto::Family::IPV4_UNICAST)));
    }
}

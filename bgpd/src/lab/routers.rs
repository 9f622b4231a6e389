//! ToRs and spines: BIRD 2 or FRR from their Debian packages, configured from
//! the topology (an eBGP or iBGP session to every node and router on the
//! router's segments), learned routes installed with ECMP, graceful restart on,
//! and routes carrying GRACEFUL_SHUTDOWN (RFC 8326) taken with LOCAL_PREF 0,
//! the receiver policy the RFC asks operators for (bgpd applies it itself).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use super::net;
use super::spec::{Implementation, Member, Role, RouterSession, Topology};

/// Where FRR's daemons are installed by the Debian package.
const FRR_DIR: &str = "/usr/lib/frr";

/// BIRD's configuration for a router.
pub fn bird_conf(router_id: std::net::Ipv4Addr, asn: u32, sessions: &[RouterSession]) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "router id {router_id};\nlog stderr all;\nprotocol device {{ scan time 1; }}");
    // Connected networks are advertised (a host behind a router is reachable);
    // learned routes go into the kernel, equal paths merged into one ECMP route.
    c.push_str("protocol direct { ipv4; ipv6; }\n");
    for af in ["ipv4", "ipv6"] {
        let _ = writeln!(
            c,
            "protocol kernel {{\n  {af} {{ import none; export where source != RTS_DEVICE; }};\n  merge paths on;\n}}"
        );
    }
    for s in sessions {
        let ibgp = s.peer_as == asn;
        let af = if s.neighbor.is_ipv4() { "ipv4" } else { "ipv6" };
        let _ = writeln!(c, "protocol bgp {} {{", proto_name(&s.peer, &s.neighbor));
        let _ = writeln!(c, "  local {} as {asn};\n  neighbor {} as {};", s.local, s.neighbor, s.peer_as);
        c.push_str("  connect retry time 2;\n  hold time 9;\n  keepalive time 3;\n  error wait time 1, 4;\n");
        c.push_str("  graceful restart on;\n");
        if ibgp {
            c.push_str("  direct;\n  rr client;\n");
        }
        let nh = if ibgp { " next hop self;" } else { "" };
        let import = "import filter { if (65535, 0) ~ bgp_community then bgp_local_pref = 0; accept; };";
        let _ = writeln!(c, "  {af} {{ {import} export all; gateway direct;{nh} }};\n}}");
    }
    c
}

/// FRR's `bgpd.conf` for a router: multipath across neighbouring ASes too.
pub fn frr_conf(router_id: std::net::Ipv4Addr, asn: u32, sessions: &[RouterSession]) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "hostname r{asn}\n!");
    // RFC 8326 §4.2: a route a peer is about to withdraw loses to any other.
    c.push_str("bgp community-list standard GSHUT seq 5 permit graceful-shutdown\n");
    c.push_str("route-map GSHUT-IN permit 10\n match community GSHUT\n set local-preference 0\n");
    c.push_str("route-map GSHUT-IN permit 20\n!\n");
    let _ = writeln!(c, "router bgp {asn}\n bgp router-id {router_id}");
    c.push_str(" no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n bgp graceful-restart\n");
    c.push_str(" bgp bestpath as-path multipath-relax\n");
    for s in sessions {
        let a = s.neighbor;
        let _ = writeln!(c, " neighbor {a} remote-as {}\n neighbor {a} update-source {}", s.peer_as, s.local);
        let _ = writeln!(c, " neighbor {a} timers 3 9\n neighbor {a} timers connect 2");
    }
    // Each session carries its own family (as Calico's BIRD sessions do).
    for (af, v4) in [("ipv4", true), ("ipv6", false)] {
        let _ = writeln!(
            c,
            " address-family {af} unicast\n  redistribute connected\n  maximum-paths 16\n  maximum-paths ibgp 16"
        );
        for s in sessions.iter().filter(|s| s.neighbor.is_ipv4() == v4) {
            let _ = writeln!(c, "  neighbor {} activate\n  neighbor {} route-map GSHUT-IN in", s.neighbor, s.neighbor);
            if s.peer_as == asn {
                let _ = writeln!(
                    c,
                    "  neighbor {} route-reflector-client\n  neighbor {} next-hop-self",
                    s.neighbor, s.neighbor
                );
            }
        }
        c.push_str(" exit-address-family\n");
    }
    c.push_str("!\n");
    c
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
    let v6 = router.links6.first().map(|(_, a)| format!(", ipv6Address: \"{a}\"")).unwrap_or_default();
    let _ = write!(
        y,
        "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {}}}\nspec: {{bgp: {{ipv4Address: {}{v6}, asNumber: {asn}{rr}}}}}\n",
        router.name, router.links[0].1
    );
    y.push_str(
        "---\napiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: transit}\nspec:\n  exportV4: [{action: Accept}]\n  importV4: [{action: Accept}]\n  exportV6: [{action: Accept}]\n  importV6: [{action: Accept}]\n",
    );
    for s in sessions {
        let name = if s.neighbor.is_ipv4() { s.peer.clone() } else { format!("{}-v6", s.peer) };
        let _ = write!(
            y,
            "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: {name}}}\nspec: {{node: {}, peerIP: \"{}\", asNumber: {}, filters: [transit]}}\n",
            router.name, s.neighbor, s.peer_as
        );
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
            let bargv = common("bgpd", &bconf, "bgpd.pid");
            let blog = d.join("bgpd.log");
            let frr_bgpd = net::spawn(&ns, &bargv, &blog)?;
            Ok(vec![
                (format!("{}/zebra", router.name), zebra, zargv, zlog),
                (format!("{}/frr-bgpd", router.name), frr_bgpd, bargv, blog),
            ])
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
            let out = Command::new("birdc").arg("-s").arg(files.bird_sock()).args(["show", "protocols"]).output();
            let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            sessions
                .iter()
                .map(|s| {
                    let name = proto_name(&s.peer, &s.neighbor);
                    let line = text.lines().find(|l| l.split_whitespace().next() == Some(name.as_str()));
                    let line = line.unwrap_or("no such protocol (BIRD not answering)").to_string();
                    (
                        s.peer.clone(),
                        line.contains("Established"),
                        line.split_whitespace().skip(5).collect::<Vec<_>>().join(" "),
                    )
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
    use crate::lab::spec::Topology;
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
        let (model, problems) = crate::datastore::load(&file).unwrap();
        let serious: Vec<_> = problems
            .iter()
            .filter(|p| p.severity != crate::datastore::Severity::Debug)
            .map(|p| p.to_string())
            .collect();
        assert!(serious.is_empty(), "{serious:?}\n{yaml}");
        let (node, peers) = crate::daemon::plan::plan(&model, "tor").unwrap();
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
        }];
        assert!(bird_conf(Ipv4Addr::new(10, 0, 0, 1), 65000, &ibgp).contains("rr client;"));
        assert!(frr_conf(Ipv4Addr::new(10, 0, 0, 1), 65000, &ibgp).contains("neighbor 10.0.0.2 route-reflector-client"));
    }
}

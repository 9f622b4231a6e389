//! The devices under test: bgpd, BIRD 2, FRR and GoBGP configured as route servers (accept
//! everything from every peer, re-advertise it to every other peer), started in the DUT's
//! namespace, and what /proc says about their CPU time and memory.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::lab::{Lab, Ns, ProcId};
use testgate::testbed::bird::{BirdChannel, BirdConfig, BirdSession};
use testgate::testbed::frr::{FrrConfig, FrrNeighbor};
use testgate::testbed::Af;

use super::{DUT_ADDR, DUT_AS};

/// Where Debian installs FRR's daemons.
const FRR_DIR: &str = "/usr/lib/frr";

/// An implementation that can be the DUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DutKind {
    /// This project's daemon.
    Bgpd,
    /// BIRD 2.
    Bird,
    /// FRR (bgpd and zebra).
    Frr,
    /// GoBGP.
    Gobgp,
}

impl DutKind {
    /// Every kind, in the order runs go.
    pub const ALL: [DutKind; 4] = [DutKind::Bgpd, DutKind::Bird, DutKind::Frr, DutKind::Gobgp];

    /// Its name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            DutKind::Bgpd => "bgpd",
            DutKind::Bird => "bird",
            DutKind::Frr => "frr",
            DutKind::Gobgp => "gobgp",
        }
    }

    /// The kind called `name`.
    pub fn parse(name: &str) -> Result<DutKind, String> {
        DutKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| format!("unknown DUT {name:?}; known: bgpd, bird, frr, gobgp"))
    }

    /// The programs it needs (absolute paths or names on PATH).
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            DutKind::Bgpd => &[],
            DutKind::Bird => &["bird"],
            DutKind::Frr => &["/usr/lib/frr/bgpd", "/usr/lib/frr/zebra"],
            DutKind::Gobgp => &["gobgpd", "unshare"],
        }
    }
}

/// One BGP neighbour of the DUT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// A name (BGPPeer / BIRD protocol name).
    pub name: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its AS.
    pub asn: u32,
}

/// BIRD 2: one table, every peer eBGP with `import all; export all`, BIRD's defaults for
/// everything else (timers, next hop).
pub fn bird_config(peers: &[Peer]) -> String {
    let session = |p: &Peer| BirdSession {
        channels: vec![BirdChannel::all(Af::Ipv4)],
        ..BirdSession::plain(&p.name, &DUT_ADDR.to_string(), DUT_AS, &p.addr.to_string(), p.asn)
    };
    BirdConfig {
        router_id: DUT_ADDR.to_string(),
        log: "stderr { info, remote, warning, error, auth, fatal, bug }".into(),
        device_scan: None,
        sessions: peers.iter().map(session).collect(),
        ..BirdConfig::default()
    }
    .render()
}

/// FRR: `no bgp ebgp-requires-policy` (else FRR sends nothing to eBGP peers without a
/// policy), every neighbour activated for IPv4 unicast, FRR's defaults otherwise.
pub fn frr_config(peers: &[Peer]) -> String {
    FrrConfig {
        hostname: "rs".into(),
        asn: DUT_AS,
        router_id: DUT_ADDR.to_string(),
        network_import_check: true,
        graceful_restart: false,
        neighbors: peers.iter().map(|p| FrrNeighbor::plain(&p.addr.to_string(), p.asn)).collect(),
        ..FrrConfig::default()
    }
    .render()
}

/// GoBGP: global default import and export policies accept, every neighbour IPv4 unicast,
/// GoBGP's defaults otherwise.
pub fn gobgp_config(peers: &[Peer]) -> String {
    let mut c = format!(
        "[global.config]\n  as = {DUT_AS}\n  router-id = \"{DUT_ADDR}\"\n  local-address-list = [\"{DUT_ADDR}\"]\n\
         [global.apply-policy.config]\n  default-import-policy = \"accept-route\"\n  default-export-policy = \"accept-route\"\n"
    );
    for p in peers {
        let _ = write!(
            c,
            "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}\n\
             \x20 [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n",
            p.addr, p.asn
        );
    }
    c
}

/// bgpd: plain Calico resources only. A Node with the DUT's address and AS, the default
/// BGPConfiguration without node-to-node mesh, one BGPPeer per client with the BGPFilter
/// `accept-all` (whose only rule accepts, in every direction and family).
pub fn bgpd_datastore(peers: &[Peer]) -> String {
    let mut y = format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  \
         nodeToNodeMeshEnabled: false\n  asNumber: {DUT_AS}\n\
         ---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: rs\nspec:\n  bgp:\n    \
         ipv4Address: {DUT_ADDR}/24\n    asNumber: {DUT_AS}\n\
         ---\napiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: accept-all\nspec:\n  \
         importV4:\n    - action: Accept\n  exportV4:\n    - action: Accept\n  \
         importV6:\n    - action: Accept\n  exportV6:\n    - action: Accept\n"
    );
    for p in peers {
        let _ = write!(
            y,
            "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: {}\nspec:\n  peerIP: {}\n  \
             asNumber: {}\n  filters:\n    - accept-all\n",
            p.name, p.addr, p.asn
        );
    }
    y
}

/// A DUT running in the lab.
pub struct Dut {
    /// What it is.
    pub kind: DutKind,
    procs: Vec<ProcId>,
    pids: Vec<u32>,
    /// Its configuration files, for the report.
    pub configs: Vec<PathBuf>,
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn spawn(lab: &Lab, name: &str, cmd: Command) -> Result<(ProcId, u32), String> {
    let id = lab.spawn(name, cmd).map_err(|e| format!("starting {name}: {e}"))?;
    // `ip netns exec` (and `unshare`, and `sh -c "… exec"`) exec in place: the child's PID
    // is the daemon's.
    let pid = lab.pid(id).ok_or_else(|| format!("{name}: no PID"))?;
    Ok((id, pid))
}

impl Dut {
    /// Writes the configuration for `peers` and starts the DUT in `ns` (`bgpd`: the binary
    /// to run).
    pub fn start(lab: &Lab, ns: &Ns, kind: DutKind, peers: &[Peer], bgpd: Option<&Path>) -> Result<Dut, String> {
        let dir = lab.dir();
        let mut dut = Dut { kind, procs: Vec::new(), pids: Vec::new(), configs: Vec::new() };
        let add = |dut: &mut Dut, (id, pid): (ProcId, u32)| {
            dut.procs.push(id);
            dut.pids.push(pid);
        };
        match kind {
            DutKind::Bgpd => {
                let bin = bgpd.ok_or("no bgpd binary")?;
                let store = dir.join("bgpd.yaml");
                write(&store, &bgpd_datastore(peers))?;
                let mut cmd = ns.command(&bin.to_string_lossy());
                // A route server forwards nothing itself: no kernel routes.
                // --no-kernel, like FRR's -n: a route server does not forward, and BIRD and
                // GoBGP do not program the kernel here either.
                cmd.args(["run", "--no-kernel", "--node", "rs", "--datastore"])
                    .arg(format!("file:{}", store.display()))
                    .arg("--control-socket")
                    .arg(dir.join("bgpd.sock"))
                    .env("NO_COLOR", "1")
                    .env("RUST_LOG", "info");
                add(&mut dut, spawn(lab, "bgpd", cmd)?);
                dut.configs.push(store);
            }
            DutKind::Bird => {
                let conf = dir.join("bird.conf");
                write(&conf, &bird_config(peers))?;
                let mut cmd = ns.command("bird");
                cmd.arg("-f").arg("-c").arg(&conf).arg("-s").arg(dir.join("bird.ctl"));
                cmd.arg("-P").arg(dir.join("bird.pid"));
                add(&mut dut, spawn(lab, "bird", cmd)?);
                dut.configs.push(conf);
            }
            DutKind::Frr => {
                let fdir = dir.join("frr");
                std::fs::create_dir_all(&fdir).map_err(|e| format!("{}: {e}", fdir.display()))?;
                let (zconf, bconf) = (fdir.join("zebra.conf"), fdir.join("bgpd.conf"));
                write(&zconf, "")?;
                write(&bconf, &frr_config(peers))?;
                // zebra drops to user frr and must own its directory.
                let chown = Command::new("chown").arg("-R").arg("frr:frr").arg(&fdir).status();
                if !chown.is_ok_and(|s| s.success()) {
                    return Err(format!("chown frr:frr {}: failed", fdir.display()));
                }
                let zapi = fdir.join("zserv.api");
                let mut z = ns.command(&format!("{FRR_DIR}/zebra"));
                z.arg("-f").arg(&zconf).arg("-i").arg(fdir.join("zebra.pid")).arg("-z").arg(&zapi);
                z.arg("--vty_socket").arg(&fdir).args(["-P", "0"]);
                add(&mut dut, spawn(lab, "zebra", z)?);
                let until = Instant::now() + Duration::from_secs(10);
                while !zapi.exists() {
                    if Instant::now() > until {
                        return Err(format!("zebra made no API socket in 10 s:\n{}", lab.logs(20)));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // -n (--no_kernel): bgpd does not hand its routes to zebra for the kernel; a
                // route server does not forward, and BIRD and GoBGP do not program the kernel here.
                let mut b = ns.command(&format!("{FRR_DIR}/bgpd"));
                b.args(["-S", "-n", "-f"]).arg(&bconf).arg("-i").arg(fdir.join("bgpd.pid")).arg("-z").arg(&zapi);
                b.arg("--vty_socket").arg(&fdir).args(["-P", "0"]);
                add(&mut dut, spawn(lab, "frr-bgpd", b)?);
                dut.configs.push(bconf);
            }
            DutKind::Gobgp => {
                let conf = dir.join("gobgpd.toml");
                write(&conf, &gobgp_config(peers))?;
                let mut cmd = ns.command("unshare");
                cmd.args(["--uts", "sh", "-c"]).arg(format!(
                    "hostname rs && exec gobgpd -f '{}' -p --api-hosts 127.0.0.1:50051 --pprof-disable -l info",
                    conf.display()
                ));
                add(&mut dut, spawn(lab, "gobgpd", cmd)?);
                dut.configs.push(conf);
            }
        }
        Ok(dut)
    }

    /// Whether every process of the DUT still runs.
    pub fn alive(&self, lab: &Lab) -> bool {
        self.procs.iter().all(|p| lab.running(*p))
    }

    /// CPU seconds (utime + stime, all threads) used so far by all its processes.
    pub fn cpu_seconds(&self) -> Result<f64, String> {
        self.pids.iter().map(|p| proc_cpu_seconds(&p.to_string())).sum()
    }

    /// (VmRSS, VmHWM) in KiB, summed over its processes.
    pub fn memory_kib(&self) -> Result<(u64, u64), String> {
        let mut sum = (0, 0);
        for p in &self.pids {
            let (rss, hwm) = proc_memory_kib(*p)?;
            sum = (sum.0 + rss, sum.1 + hwm);
        }
        Ok(sum)
    }
}

/// utime + stime of `/proc/PID/stat` in seconds (`PID` may be `self`).
pub fn proc_cpu_seconds(pid: &str) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // Fields after the parenthesised command name: utime is field 14, stime 15 (1-based).
    let rest = text.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| format!("{path}: malformed"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| format!("{path}: field {i}"));
    Ok((num(11)? + num(12)?) as f64 / clock_ticks() as f64)
}

fn proc_memory_kib(pid: u32) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("{path}: no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::routeserver::peers;

    #[test]
    fn every_dut_gets_every_peer_and_accepts_everything() {
        let p = peers(2);
        let bird = bird_config(&p);
        assert!(
            bird.contains("protocol bgp t2 {\n  local 10.77.0.1 as 64512;\n  neighbor 10.77.0.12 as 65002;\n"),
            "{bird}"
        );
        assert!(
            bird.contains("protocol bgp monitor {\n  local 10.77.0.1 as 64512;\n  neighbor 10.77.0.100 as 65100;\n")
        );
        assert_eq!(bird.matches("  ipv4 { import all; export all; gateway direct; };\n}\n").count(), 3, "{bird}");
        assert!(!bird.contains("hold time") && !bird.contains("graceful restart"), "{bird}");
        let frr = frr_config(&p);
        assert!(frr.contains(" no bgp ebgp-requires-policy\n"));
        assert!(
            frr.contains(" neighbor 10.77.0.11 remote-as 65001\n") && frr.contains("  neighbor 10.77.0.100 activate\n")
        );
        let gobgp = gobgp_config(&p);
        assert!(
            gobgp.contains("default-import-policy = \"accept-route\"")
                && gobgp.contains("default-export-policy = \"accept-route\"")
        );
        assert_eq!(gobgp.matches("[[neighbors]]").count(), 3);
        let y = bgpd_datastore(&p);
        assert_eq!(y.matches("kind: BGPPeer").count(), 3);
        assert!(y.contains("  peerIP: 10.77.0.100\n  asNumber: 65100\n  filters:\n    - accept-all\n"), "{y}");
        assert!(y.contains("nodeToNodeMeshEnabled: false") && y.contains("ipv4Address: 10.77.0.1/24"));
        assert_eq!(y.matches("- action: Accept").count(), 4);
    }

    #[test]
    fn dut_names_round_trip() {
        for k in DutKind::ALL {
            assert_eq!(DutKind::parse(k.name()), Ok(k));
        }
        assert!(DutKind::parse("quagga").is_err());
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        assert!(proc_cpu_seconds("self").unwrap() >= 0.0);
        let (rss, hwm) = proc_memory_kib(std::process::id()).unwrap();
        assert!(rss > 0 && hwm >= rss);
    }
}

//! The devices under test: bgpd, BIRD 2 (`protocol bfd`) and FRR's bfdd (with zebra),
//! configured for the same N sessions at 300 ms x 3 (1 s while not Up), started in the
//! DUT namespace, queried for their own view of the sessions, and measured: CPU time and
//! VmRSS of the process that runs BFD (bgpd, bird, bfdd).

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::sessions::{bgpd_show_json, reap, Netns};
use crate::lab::frr::FRR_DIR;
use testgate::testbed::bird::{BirdBfd, BirdBfdTimers, BirdChannel, BirdConfig, BirdSession};
use testgate::testbed::frr::{FrrBfdTimers, FrrBfdd, FrrConfig, FrrNeighbor};
use testgate::testbed::{track_pid, Af};

use super::{far_addr, DETECT_MULT, DUT_ADDR, DUT_AS, FAR_AS, IDLE_TX, INTERVAL};

/// An implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Contender {
    Bgpd,
    Bird,
    Frr,
}

impl Contender {
    pub const ALL: [Contender; 3] = [Contender::Bgpd, Contender::Bird, Contender::Frr];

    pub fn name(self) -> &'static str {
        match self {
            Contender::Bgpd => "bgpd",
            Contender::Bird => "bird",
            Contender::Frr => "frr",
        }
    }

    pub fn parse(s: &str) -> Result<Contender, String> {
        Contender::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown contender {s:?}; known: bgpd, bird, frr"))
    }
}

/// How the N sessions are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Peers {
    /// BFD sessions of their own: BIRD's `protocol bfd { neighbor … }`, bfdd's `peer …`
    /// blocks. bgpd has no such thing: for it, the same as [`Peers::Bgp`].
    Static,
    /// N BGP peers that ask for BFD (bgpd's BFDConfiguration, BIRD's `bfd on`, FRR's
    /// `neighbor X bfd profile P`).
    Bgp,
    /// N BGP peers without BFD (bgpd's `bgpd.io/bfd: "false"`): what BFD adds is
    /// measured against this.
    BgpWithoutBfd,
}

impl Peers {
    /// How `--via` and the output name it.
    pub fn name(self) -> &'static str {
        match self {
            Peers::Static => "static",
            Peers::Bgp => "bgp",
            Peers::BgpWithoutBfd => "bgp-without-bfd",
        }
    }
}

/// The timers in milliseconds.
fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// bgpd's datastore: the DUT node, a BFDConfiguration for every interface, one BGPPeer per session.
pub(super) fn bgpd_datastore(n: usize, peers: Peers) -> String {
    let mut s = format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\n\
         spec: {{nodeToNodeMeshEnabled: false, asNumber: {DUT_AS}}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: dut}}\n\
         spec: {{bgp: {{ipv4Address: {DUT_ADDR}/16}}}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: BFDConfiguration\nmetadata: {{name: default}}\nspec:\n  interfaces:\n\
         \x20   - {{matchPattern: \"*\", minimumRecvInterval: {}ms, minimumSendInterval: {}ms, idleSendInterval: {}ms, multiplier: {DETECT_MULT}}}\n",
        ms(INTERVAL),
        ms(INTERVAL),
        ms(IDLE_TX),
    );
    let annotation = match peers {
        Peers::BgpWithoutBfd => ", annotations: {bgpd.io/bfd: \"false\"}",
        Peers::Static | Peers::Bgp => "",
    };
    for i in 0..n {
        let _ = write!(
            s,
            "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: p{i}{annotation}}}\n\
             spec: {{node: dut, peerIP: {}, asNumber: {FAR_AS}}}\n",
            far_addr(i)
        );
    }
    s
}

/// BIRD's configuration: `protocol bfd` with the timers for every interface, and either
/// its static neighbors or BGP protocols with `bfd on`.
pub(super) fn bird_config(n: usize, peers: Peers, log: &Path) -> String {
    let timers = BirdBfdTimers {
        min_rx_ms: ms(INTERVAL),
        min_tx_ms: ms(INTERVAL),
        idle_tx_ms: Some(ms(IDLE_TX)),
        multiplier: DETECT_MULT,
    };
    let neighbors = match peers {
        Peers::Static => (0..n).map(|i| (far_addr(i).to_string(), DUT_ADDR.to_string())).collect(),
        Peers::Bgp | Peers::BgpWithoutBfd => Vec::new(),
    };
    let session = |i: usize| BirdSession {
        bfd: peers == Peers::Bgp,
        channels: vec![BirdChannel { export: "none".into(), ..BirdChannel::all(Af::Ipv4) }],
        ..BirdSession::plain(&format!("p{i}"), &DUT_ADDR.to_string(), DUT_AS, &far_addr(i).to_string(), FAR_AS)
    };
    let sessions = if peers == Peers::Static { Vec::new() } else { (0..n).map(session).collect() };
    BirdConfig {
        router_id: DUT_ADDR.to_string(),
        log: format!("\"{}\" all", log.display()),
        device_scan: None,
        bfd: Some(BirdBfd { interfaces: vec![("*".into(), timers)], neighbors, ..BirdBfd::default() }),
        sessions,
        ..BirdConfig::default()
    }
    .render()
}

/// bfdd's timers.
fn frr_bfd_timers() -> FrrBfdTimers {
    FrrBfdTimers { transmit_ms: ms(INTERVAL), receive_ms: ms(INTERVAL), detect_mult: DETECT_MULT }
}

/// bfdd's configuration: a `peer` block per session (static), or the profile the BGP
/// neighbors name.
pub(super) fn bfdd_config(n: usize, peers: Peers) -> String {
    let bfdd = match peers {
        Peers::Static => FrrBfdd {
            peers: (0..n).map(|i| (far_addr(i).to_string(), DUT_ADDR.to_string(), frr_bfd_timers())).collect(),
            ..FrrBfdd::default()
        },
        Peers::Bgp | Peers::BgpWithoutBfd => {
            FrrBfdd { profiles: vec![("bench".into(), frr_bfd_timers())], ..FrrBfdd::default() }
        }
    };
    bfdd.render()
}

/// FRR bgpd's configuration with N neighbors (BFD profile `bench` unless without BFD).
pub(super) fn frr_bgpd_config(n: usize, peers: Peers) -> String {
    let neighbor = |i: usize| FrrNeighbor {
        update_source: DUT_ADDR.to_string(),
        bfd_profile: (peers == Peers::Bgp).then(|| "bench".to_string()),
        ..FrrNeighbor::plain(&far_addr(i).to_string(), FAR_AS)
    };
    FrrConfig {
        hostname: "dut".into(),
        asn: DUT_AS,
        router_id: DUT_ADDR.to_string(),
        network_import_check: true,
        graceful_restart: false,
        neighbors: (0..n).map(neighbor).collect(),
        ..FrrConfig::default()
    }
    .render()
}

/// A running DUT. Stopped on drop.
pub(super) struct Dut {
    contender: Contender,
    /// Its processes, in start order (FRR: zebra, bfdd, perhaps bgpd).
    children: Vec<Child>,
    /// The process that runs BFD, which is measured.
    pid: u32,
    /// bgpd's control socket, BIRD's control socket, or FRR's vty directory.
    control: PathBuf,
    bgpd: Option<PathBuf>,
    log: PathBuf,
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Starts `program args…` in `ns` with its output to `log`, and registers it for Ctrl-C.
fn spawn<A: AsRef<OsStr>>(ns: &Netns, program: &Path, args: &[A], log: &Path) -> Result<Child, String> {
    let out =
        std::fs::File::options().create(true).append(true).open(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(program)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", program.display()))?;
    track_pid(child.id());
    Ok(child)
}

/// Waits until PID `pid` runs `comm` (`ip netns exec` execs it in place).
fn wait_comm(pid: u32, comm: &str, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if now.trim() == comm {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("PID {pid} is {:?}, not {comm}; see {}", now.trim(), log.display()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Dut {
    /// Writes the configuration for `n` sessions into `dir` and starts the DUT in `ns`.
    pub fn start(
        c: Contender,
        ns: &Netns,
        dir: &Path,
        n: usize,
        peers: Peers,
        bgpd: Option<&Path>,
    ) -> Result<Dut, String> {
        let tag = format!("{}-{n}-{peers:?}", c.name());
        let log = dir.join(format!("{tag}.log"));
        let mut dut = Dut {
            contender: c,
            children: Vec::new(),
            pid: 0,
            control: PathBuf::new(),
            bgpd: bgpd.map(Path::to_path_buf),
            log: log.clone(),
        };
        match c {
            Contender::Bgpd => {
                let bin = bgpd.ok_or("no bgpd binary")?;
                let store = dir.join(format!("{tag}.yaml"));
                write(&store, &bgpd_datastore(n, peers))?;
                dut.control = dir.join(format!("{tag}.sock"));
                let mut args: Vec<OsString> =
                    ["run", "--no-kernel", "--node", "dut", "--datastore"].map(OsString::from).into();
                args.push(format!("file:{}", store.display()).into());
                args.extend(["--control-socket".into(), dut.control.clone().into()]);
                let child = spawn(ns, bin, &args, &log)?;
                dut.pid = child.id();
                dut.children.push(child);
                wait_comm(dut.pid, "bgpd", &log)?;
            }
            Contender::Bird => {
                let conf = dir.join(format!("{tag}.conf"));
                write(&conf, &bird_config(n, peers, &dir.join(format!("{tag}.birdlog"))))?;
                dut.control = dir.join(format!("{tag}.ctl"));
                let args =
                    [OsStr::new("-f"), OsStr::new("-c"), conf.as_os_str(), OsStr::new("-s"), dut.control.as_os_str()];
                let child = spawn(ns, Path::new("/usr/sbin/bird"), &args, &log)?;
                dut.pid = child.id();
                dut.children.push(child);
                wait_comm(dut.pid, "bird", &log)?;
            }
            Contender::Frr => dut.start_frr(ns, dir, &tag, n, peers)?,
        }
        Ok(dut)
    }

    /// zebra, bfdd and (with BGP peers) FRR's bgpd, as `lab::frr` starts them, with
    /// sockets in a directory of their own.
    fn start_frr(&mut self, ns: &Netns, dir: &Path, tag: &str, n: usize, peers: Peers) -> Result<(), String> {
        let fdir = dir.join(format!("{tag}-frr"));
        std::fs::create_dir_all(&fdir).map_err(|e| format!("{}: {e}", fdir.display()))?;
        let (zconf, fconf, bconf) = (fdir.join("zebra.conf"), fdir.join("bfdd.conf"), fdir.join("bgpd.conf"));
        write(&zconf, "")?;
        write(&fconf, &bfdd_config(n, peers))?;
        write(&bconf, &frr_bgpd_config(n, peers))?;
        // zebra drops to user frr and must own its directory.
        let chown = Command::new("chown").arg("-R").arg("frr:frr").arg(&fdir).status();
        if !chown.is_ok_and(|s| s.success()) {
            return Err(format!("chown frr:frr {}: failed", fdir.display()));
        }
        let zapi = fdir.join("zserv.api");
        let daemon = |name: &str, conf: &Path, extra: &[&str]| -> Vec<OsString> {
            let mut a: Vec<OsString> = extra.iter().map(OsString::from).collect();
            a.extend(["-f".into(), conf.into(), "-i".into(), fdir.join(format!("{name}.pid")).into()]);
            a.extend(["-z".into(), zapi.clone().into(), "--vty_socket".into(), fdir.clone().into()]);
            a.extend(["-P".into(), "0".into()]);
            a
        };
        self.children.push(spawn(ns, &Path::new(FRR_DIR).join("zebra"), &daemon("zebra", &zconf, &[]), &self.log)?);
        let until = Instant::now() + Duration::from_secs(10);
        while !zapi.exists() {
            if Instant::now() > until {
                return Err(format!("zebra made no API socket in 10 s; see {}", self.log.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let bfdd = spawn(ns, &Path::new(FRR_DIR).join("bfdd"), &daemon("bfdd", &fconf, &[]), &self.log)?;
        self.pid = bfdd.id();
        self.children.push(bfdd);
        wait_comm(self.pid, "bfdd", &self.log)?;
        if peers != Peers::Static {
            // -n: no routes to the kernel, as bgpd's --no-kernel.
            let bgpd = spawn(ns, &Path::new(FRR_DIR).join("bgpd"), &daemon("bgpd", &bconf, &["-S", "-n"]), &self.log)?;
            self.children.push(bgpd);
        }
        self.control = fdir;
        Ok(())
    }

    /// Waits until the DUT answers a query of its BFD sessions.
    pub fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.sessions_up() {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("{} not ready: {e}; see {}", self.contender.name(), self.log.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// BFD sessions the DUT itself reports Up.
    pub fn sessions_up(&self) -> Result<usize, String> {
        match self.contender {
            Contender::Bgpd => {
                let bin = self.bgpd.as_deref().ok_or("no bgpd binary")?;
                let v = bgpd_show_json(bin, &self.control, "bfd")?;
                let sessions = v
                    .pointer("/bfd/sessions")
                    .and_then(|s| s.as_object())
                    .ok_or("bgpd show bfd --json: no bfd.sessions object")?;
                Ok(sessions.values().filter(|s| s.get("state").and_then(|x| x.as_str()) == Some("Up")).count())
            }
            Contender::Bird => {
                let out = Command::new("birdc")
                    .arg("-s")
                    .arg(&self.control)
                    .args(["show", "bfd", "sessions"])
                    .output()
                    .map_err(|e| format!("birdc: {e}"))?;
                let text = String::from_utf8_lossy(&out.stdout);
                if !out.status.success() || !text.contains("BIRD") {
                    return Err(format!(
                        "birdc show bfd sessions: {}{}",
                        text.trim(),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                Ok(text.lines().filter(|l| l.split_whitespace().nth(2) == Some("Up")).count())
            }
            Contender::Frr => {
                let out = Command::new("vtysh")
                    .arg("--vty_socket")
                    .arg(&self.control)
                    .args(["-c", "show bfd peers json"])
                    .output()
                    .map_err(|e| format!("vtysh: {e}"))?;
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
                    format!("vtysh show bfd peers json ({e}): {}", String::from_utf8_lossy(&out.stdout).trim())
                })?;
                let peers = v.as_array().ok_or("vtysh show bfd peers json: not an array")?;
                Ok(peers.iter().filter(|p| p.get("status").and_then(|s| s.as_str()) == Some("up")).count())
            }
        }
    }

    /// VmRSS of the BFD process, KiB.
    pub fn rss_kib(&self) -> Result<u64, String> {
        self.status_kib("VmRSS:")
    }

    /// VmHWM (peak RSS) of the BFD process, KiB.
    pub fn hwm_kib(&self) -> Result<u64, String> {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.pid);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        text.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("{path}: no {field}"))
    }

    /// CPU seconds the BFD process used so far, all its threads: (utime+stime of
    /// /proc/PID/stat, the sum of its threads' schedstat run time).
    pub fn cpu(&self) -> Result<(f64, f64), String> {
        let stat = crate::bench::routeserver::dut::proc_cpu_seconds(&self.pid.to_string())?;
        let tasks = format!("/proc/{}/task", self.pid);
        let mut sched_ns = 0u64;
        for e in std::fs::read_dir(&tasks).map_err(|e| format!("{tasks}: {e}"))?.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                sched_ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        Ok((stat, sched_ns as f64 / 1e9))
    }

    /// Whether every process still runs.
    pub fn alive(&mut self) -> bool {
        self.children.iter_mut().all(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// bgpd's peer `peer`: UPDATEs received and routes it holds from it (`--load`: the
    /// table went in).
    pub fn bgpd_peer_load(&self, peer: &str) -> Result<(u64, u64), String> {
        let bin = self.bgpd.as_deref().ok_or("no bgpd binary")?;
        let out = Command::new(bin)
            .args(["show", "peers", "--json", "--control-socket"])
            .arg(&self.control)
            .output()
            .map_err(|e| format!("bgpd show peers: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("bgpd show peers --json: {e}"))?;
        let peers = v.get("peers").and_then(|p| p.as_array()).ok_or("bgpd show peers --json: no peers")?;
        let p = peers
            .iter()
            .find(|p| p.get("name").and_then(|n| n.as_str()) == Some(peer))
            .ok_or_else(|| format!("bgpd show peers: no {peer}"))?;
        let updates = p
            .get("received")
            .and_then(|r| r.as_object())
            .ok_or("no received counters")?
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("update"))
            .filter_map(|(_, v)| v.as_u64())
            .sum();
        let routes = p.get("routes_received").and_then(|r| r.as_u64()).unwrap_or(0);
        Ok((updates, routes))
    }
}

impl Drop for Dut {
    fn drop(&mut self) {
        // The BFD process first (bfdd before zebra), then the rest.
        for c in self.children.iter_mut().rev() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            reap(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contender_gets_the_same_sessions_and_timers() {
        let store = bgpd_datastore(3, Peers::Bgp);
        assert_eq!(store.matches("kind: BGPPeer").count(), 3);
        assert!(store.contains("spec: {node: dut, peerIP: 10.251.1.3, asNumber: 65000}"), "{store}");
        assert!(store.contains(
            "minimumRecvInterval: 300ms, minimumSendInterval: 300ms, idleSendInterval: 1000ms, multiplier: 3"
        ));
        assert!(!store.contains("bgpd.io/bfd"));
        assert_eq!(bgpd_datastore(2, Peers::BgpWithoutBfd).matches("bgpd.io/bfd: \"false\"").count(), 2);

        let bird = bird_config(3, Peers::Static, Path::new("/tmp/b.log"));
        assert!(bird.contains("neighbor 10.251.1.2 local 10.251.0.1;"), "{bird}");
        assert!(
            bird.contains("min rx interval 300 ms; min tx interval 300 ms; idle tx interval 1000 ms; multiplier 3;")
        );
        assert!(!bird.contains("protocol bgp"));
        let bird_bgp = bird_config(2, Peers::Bgp, Path::new("/tmp/b.log"));
        assert!(
            bird_bgp.contains("  bfd on;\n")
                && bird_bgp
                    .contains("protocol bgp p1 {\n  local 10.251.0.1 as 64512;\n  neighbor 10.251.1.2 as 65000;\n")
        );
        assert!(!bird_config(2, Peers::BgpWithoutBfd, Path::new("/tmp/b.log")).contains("bfd on"));

        let bfdd = bfdd_config(3, Peers::Static);
        assert_eq!(bfdd.matches(" peer 10.251.1.").count(), 3);
        assert!(bfdd.contains(" peer 10.251.1.1 local-address 10.251.0.1\n  transmit-interval 300\n  receive-interval 300\n  detect-multiplier 3\n !\n"));
        let frr = frr_bgpd_config(2, Peers::Bgp);
        assert!(frr.contains(" neighbor 10.251.1.2 bfd profile bench\n"), "{frr}");
        assert!(bfdd_config(2, Peers::Bgp).contains(" profile bench\n"));
    }

    #[test]
    fn contender_names_round_trip() {
        for c in Contender::ALL {
            assert_eq!(Contender::parse(c.name()), Ok(c));
        }
        assert!(Contender::parse("gobgp").is_err());
    }
}

//! The device under test: bgpd or BIRD in the DUT namespace, configured with the N peers,
//! and what is read from it (sessions Established, memory, CPU).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::testbed::{bgpd_show_json, reap, Netns, ScratchDir};
use super::{far_addr, Contender, DUT_ADDR, DUT_AS, FAR_AS, HOLD_SECS, KEEPALIVE};
use testgate::testbed::bird::{BirdChannel, BirdConfig, BirdSession};
use testgate::testbed::{track_pid, Af};

fn bgpd_datastore(n: usize) -> String {
    let mut s = format!(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\n\
         spec: {{asNumber: {DUT_AS}, nodeToNodeMeshEnabled: false}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: node-1}}\n\
         spec: {{bgp: {{ipv4Address: {DUT_ADDR}/16}}}}\n"
    );
    for i in 0..n {
        let _ = write!(
            s,
            "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: p{i}}}\n\
             spec: {{peerIP: {}, asNumber: {FAR_AS}, keepaliveTime: \"{}s\"}}\n",
            far_addr(i),
            KEEPALIVE.as_secs()
        );
    }
    s
}

/// BIRD's configuration: its defaults but for the timers, and `connect delay time 1` (its
/// minimum; the default 5 s would only add a constant wait before its first connection).
fn bird_config(n: usize, log: &Path) -> String {
    let session = |i: usize| BirdSession {
        hold: Some(u32::from(HOLD_SECS)),
        keepalive: Some(KEEPALIVE.as_secs() as u32),
        connect_delay: Some(1),
        channels: vec![BirdChannel { export: "none".into(), ..BirdChannel::all(Af::Ipv4) }],
        ..BirdSession::plain(&format!("p{i}"), &DUT_ADDR.to_string(), DUT_AS, &far_addr(i).to_string(), FAR_AS)
    };
    BirdConfig {
        router_id: DUT_ADDR.to_string(),
        log: format!("\"{}\" all", log.display()),
        device_scan: None,
        sessions: (0..n).map(session).collect(),
        ..BirdConfig::default()
    }
    .render()
}

/// The running DUT: bgpd or BIRD in the DUT namespace. Stopped on drop.
pub(crate) struct Dut {
    contender: Contender,
    child: Child,
    pid: u32,
    control: PathBuf,
    bgpd: Option<PathBuf>,
}

impl Dut {
    /// The DUT with the `n` idle eBGP peers of `bench sessions`, programming no kernel.
    pub(super) fn start(
        c: Contender,
        ns: &Netns,
        files: &ScratchDir,
        n: usize,
        bgpd: Option<&Path>,
    ) -> Result<Dut, String> {
        let config = match c {
            Contender::Bgpd => bgpd_datastore(n),
            Contender::Bird => bird_config(n, &files.path().join(format!("bird-{n}.birdlog"))),
        };
        Dut::launch(c, ns, files, &n.to_string(), &config, false, bgpd)
    }

    /// Starts `c` in `ns` with `config` (bgpd: its datastore; BIRD: its configuration),
    /// its files named after `tag`; bgpd programs the namespace's kernel if `kernel`.
    pub(crate) fn launch(
        c: Contender,
        ns: &Netns,
        files: &ScratchDir,
        tag: &str,
        config: &str,
        kernel: bool,
        bgpd: Option<&Path>,
    ) -> Result<Dut, String> {
        let dir = files.path();
        let log_path = dir.join(format!("{}-{tag}.log", c.name()));
        let log = std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name()]);
        let control = match c {
            Contender::Bgpd => {
                let bin = bgpd.ok_or("no bgpd binary")?;
                let store = dir.join(format!("bgpd-{tag}.yaml"));
                std::fs::write(&store, config).map_err(|e| format!("{}: {e}", store.display()))?;
                let control = dir.join(format!("bgpd-{tag}.sock"));
                cmd.arg(bin).arg("run");
                if !kernel {
                    // As the other DUTs, no routes to the kernel.
                    cmd.arg("--no-kernel");
                }
                cmd.arg(format!("--datastore=file:{}", store.display()));
                cmd.args(["--node", "node-1", "--control-socket"]).arg(&control);
                control
            }
            Contender::Bird => {
                let conf = dir.join(format!("bird-{tag}.conf"));
                std::fs::write(&conf, config).map_err(|e| format!("{}: {e}", conf.display()))?;
                let control = dir.join(format!("bird-{tag}.ctl"));
                cmd.args(["/usr/sbin/bird", "-f", "-c"]).arg(&conf).arg("-s").arg(&control);
                control
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", c.name()))?;
        let pid = child.id();
        track_pid(pid);
        let dut = Dut { contender: c, child, pid, control, bgpd: bgpd.map(Path::to_path_buf) };
        // `ip netns exec` execs the program in place: the child's PID is the DUT's.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == c.name() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("PID {pid} is {:?}, not {}; see {}", comm.trim(), c.name(), log_path.display()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(dut)
    }

    /// Waits until the control socket answers.
    pub(crate) fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.established() {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(format!("{} not ready: {e}", self.contender.name())),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sessions the DUT itself reports Established.
    pub(crate) fn established(&self) -> Result<usize, String> {
        match self.contender {
            Contender::Bgpd => {
                let bin = self.bgpd.as_deref().ok_or("no bgpd binary")?;
                let v = bgpd_show_json(bin, &self.control, "peers")?;
                let peers =
                    v.get("peers").and_then(|p| p.as_array()).ok_or("bgpd show peers --json: no peers array")?;
                Ok(peers.iter().filter(|p| p.get("state").and_then(|s| s.as_str()) == Some("Established")).count())
            }
            Contender::Bird => {
                let out = Command::new("birdc")
                    .arg("-s")
                    .arg(&self.control)
                    .args(["show", "protocols"])
                    .output()
                    .map_err(|e| format!("birdc: {e}"))?;
                let text = String::from_utf8_lossy(&out.stdout);
                if !out.status.success() || !text.contains("BIRD") {
                    return Err(format!(
                        "birdc show protocols: {}{}",
                        text.trim(),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                Ok(text
                    .lines()
                    .filter(|l| l.split_whitespace().nth(1) == Some("BGP") && l.contains("Established"))
                    .count())
            }
        }
    }

    /// (VmRSS, VmHWM) in KiB.
    pub(crate) fn memory(&self) -> Result<(u64, u64), String> {
        let path = format!("/proc/{}/status", self.pid);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let field = |name: &str| -> Result<u64, String> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| format!("{path}: no {name}"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// CPU seconds used so far: (utime+stime of /proc/PID/stat, sum of the threads' schedstat).
    pub(crate) fn cpu(&self) -> Result<(f64, f64), String> {
        let path = format!("/proc/{}/stat", self.pid);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let rest = text.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| format!("{path}: malformed"))?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| format!("{path}: field {i}"));
        let ticks = num(11)? + num(12)?;
        let mut sched_ns = 0u64;
        let tasks = format!("/proc/{}/task", self.pid);
        for e in std::fs::read_dir(&tasks).map_err(|e| format!("{tasks}: {e}"))?.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                sched_ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        Ok((ticks as f64 / clock_ticks() as f64, sched_ns as f64 / 1e9))
    }
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

impl Drop for Dut {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        reap(&mut self.child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_contenders_get_the_same_peers_and_timers() {
        let store = bgpd_datastore(3);
        let bird = bird_config(3, Path::new("/tmp/x.log"));
        for i in 0..3 {
            assert!(store.contains(&format!("peerIP: {}, asNumber: {FAR_AS}, keepaliveTime: \"30s\"", far_addr(i))));
            assert!(bird.contains(&format!(
                "protocol bgp p{i} {{\n  local 10.250.0.1 as 64512;\n  neighbor {} as {FAR_AS};\n",
                far_addr(i)
            )));
        }
        assert_eq!(store.matches("kind: BGPPeer").count(), 3);
        assert_eq!(
            bird.matches("  hold time 90;\n  keepalive time 30;\n  connect delay time 1;\n").count(),
            3,
            "{bird}"
        );
        assert_eq!(bird.matches("  ipv4 { import all; export none; gateway direct; };\n").count(), 3, "{bird}");
    }
}

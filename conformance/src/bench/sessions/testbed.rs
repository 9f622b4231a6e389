//! What the benches share to set up and tear down: two network namespaces joined by a veth,
//! scratch directories and child processes, all deleted or killed on drop, on error and on
//! Ctrl-C; and the few commands run against them (`ip`, `bgpd show … --json`).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

// ----- cleanup on exit, error and Ctrl-C ------------------------------------------------------

/// What must not outlive the bench: namespaces, child processes, scratch directories.
pub(crate) struct Registry {
    pub(crate) namespaces: Vec<String>,
    pub(crate) pids: Vec<u32>,
    pub(crate) dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { namespaces: Vec::new(), pids: Vec::new(), dirs: Vec::new() });

pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    // A panic while holding the lock leaves plain lists behind: still usable.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// On SIGINT or SIGTERM: kill the children, delete the namespaces and files, exit 130.
pub(crate) fn install_signal_cleanup() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let mut term = {
        let _g = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?
    };
    let (armed_tx, armed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        rt.block_on(async {
            let int = tokio::signal::ctrl_c();
            let _ = armed_tx.send(());
            tokio::select! {
                _ = int => {}
                _ = term.recv() => {}
            }
        });
        eprintln!("sessions bench: interrupted, cleaning up");
        let r = registry();
        for pid in &r.pids {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        for ns in &r.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for d in &r.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        std::process::exit(130);
    });
    armed_rx.recv_timeout(Duration::from_secs(5)).map_err(|_| "the signal handler did not start".to_string())?;
    // `ctrl_c()` registers on first poll: give that poll a moment.
    std::thread::sleep(Duration::from_millis(20));
    Ok(())
}

/// A scratch directory for configuration files, logs and control sockets.
pub(crate) struct TempDir {
    pub(crate) path: PathBuf,
}

impl TempDir {
    pub(crate) fn new(tag: &str) -> Result<TempDir, String> {
        let path = std::env::temp_dir().join(format!("bgpd-bench-sessions-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        registry().dirs.push(path.clone());
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        registry().dirs.retain(|d| d != &self.path);
    }
}

// ----- namespaces ------------------------------------------------------------------------------

pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

pub(crate) fn ip_batch(ns: &str, commands: &str) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("ip -batch: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(commands.as_bytes()).map_err(|e| format!("ip -batch: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("ip -batch: {e}"))?;
    if !out.status.success() {
        return Err(format!("ip -n {ns} -batch: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// A network namespace, deleted on drop.
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn add(name: String) -> Result<Netns, String> {
        ip(&["netns", "add", &name])?;
        registry().namespaces.push(name.clone());
        Ok(Netns { name })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        registry().namespaces.retain(|n| n != &self.name);
    }
}

/// The DUT's namespace and the far ends' namespace, joined by a veth (`dut0`, `far0`):
/// the DUT's address on one side, the far ends' addresses on the other, all in one /16.
pub(crate) struct Testbed {
    pub dut: Netns,
    pub far: Netns,
}

impl Testbed {
    /// `bench` names the namespaces (with this process and `tag`).
    pub fn new(bench: &str, tag: &str, dut_addr: Ipv4Addr, far: &[Ipv4Addr]) -> Result<Testbed, String> {
        let base = format!("bgpdbench-{bench}-{}-{tag}", std::process::id());
        let dut = Netns::add(format!("{base}-dut"))?;
        let far_ns = Netns::add(format!("{base}-far"))?;
        ip(&[
            "link",
            "add",
            "dut0",
            "netns",
            &dut.name,
            "type",
            "veth",
            "peer",
            "name",
            "far0",
            "netns",
            &far_ns.name,
        ])?;
        ip_batch(&dut.name, &format!("link set lo up\naddr add {dut_addr}/16 dev dut0\nlink set dut0 up\n"))?;
        let mut cmds = String::from("link set lo up\n");
        for a in far {
            let _ = writeln!(cmds, "addr add {a}/16 dev far0");
        }
        cmds.push_str("link set far0 up\n");
        ip_batch(&far_ns.name, &cmds)?;
        // Permanent neighbour entries both ways: no ARP for N addresses (nor the kernel's
        // table-wide limit on resolved entries, gc_thresh3, 1024 by default), and no ARP
        // probe in the middle of a measurement window.
        let far_mac = link_mac(&far_ns.name, "far0")?;
        let mut neigh = String::new();
        for a in far {
            let _ = writeln!(neigh, "neigh replace {a} lladdr {far_mac} dev dut0 nud permanent");
        }
        ip_batch(&dut.name, &neigh)?;
        let dut_mac = link_mac(&dut.name, "dut0")?;
        ip_batch(&far_ns.name, &format!("neigh replace {dut_addr} lladdr {dut_mac} dev far0 nud permanent\n"))?;
        Ok(Testbed { dut, far: far_ns })
    }
}

/// Starts a far end (this bench binary, run again in a namespace by `cmd`) with its
/// stdin held open (it exits when that closes) and its stdout read line by line.
pub(crate) fn spawn_far_end(mut cmd: Command) -> Result<(Child, Option<ChildStdin>, mpsc::Receiver<String>), String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting the far end: {e}"))?;
    registry().pids.push(child.id());
    let stdout = child.stdout.take().ok_or("far end: no stdout")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stdin = child.stdin.take();
    Ok((child, stdin, lines))
}

/// `bgpd show WHAT --json` against the DUT's control socket.
pub(crate) fn bgpd_show_json(bin: &Path, control: &Path, what: &str) -> Result<serde_json::Value, String> {
    let out = Command::new(bin)
        .args(["show", what, "--json", "--control-socket"])
        .arg(control)
        .output()
        .map_err(|e| format!("bgpd show {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("bgpd show {what}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bgpd show {what} --json: {e}"))
}

/// The MAC address of `dev` in namespace `ns`.
pub(crate) fn link_mac(ns: &str, dev: &str) -> Result<String, String> {
    let out =
        Command::new("ip").args(["-n", ns, "-o", "link", "show", dev]).output().map_err(|e| format!("ip: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words
        .find(|w| *w == "link/ether")
        .and_then(|_| words.next())
        .map(str::to_string)
        .ok_or_else(|| format!("no MAC address for {dev} in {ns}: {}", text.trim()))
}

/// Gives a child asked to stop 3 s to exit, kills it otherwise, and takes it
/// off the list of processes to kill on Ctrl-C.
pub(crate) fn reap(child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let pid = child.id();
    registry().pids.retain(|p| *p != pid);
}

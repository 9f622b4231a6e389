//! Idle-sessions benchmark (issue 3): N established, idle BGP sessions held by bgpd and by BIRD 2.
//!
//! `bench sessions [--peers N] [--contenders bgpd,bird] [--idle-secs S] [--budget-secs B] [--bgpd PATH]`
//! builds, per contender, two fresh network namespaces joined by a veth: the device under test
//! (DUT) has 10.250.0.1/16, the far side N addresses 10.250.(1+i/250).(i%250+1)/16, one per
//! session. The bench re-executes itself in the far namespace (`bench sessions __farend …`):
//! N passive sessions of `bgpd_proto::session` on one tokio thread, listening on port 179
//! of their own addresses, answering keepalives. The DUT is configured with the N peers as
//! an operator would (it connects; hold 90 s, keepalive 30 s on every side).
//!
//! Measured per contender: seconds from starting the DUT until the far end sees all N
//! sessions Established (cross-checked with `bgpd show peers --json` / `birdc show
//! protocols`); the DUT's VmRSS and VmHWM once idle, per session and per session above the
//! same DUT's RSS with no peer (a separate short run); the DUT's CPU seconds per second over
//! an idle window (utime+stime of `/proc/PID/stat`, and the finer `schedstat` of its
//! threads); sessions that left Established during the window (must be 0). One line per
//! contender, then `ratio=bgpd/bird …` lines.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bgpd_proto::session::{Session, SessionConfig, SessionEvent, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const DUT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
const DUT_AS: u32 = 64512;
const FAR_AS: u32 = 65000;
const HOLD_SECS: u16 = 90;
const KEEPALIVE: Duration = Duration::from_secs(30);
const MAX_PEERS: usize = 50_000;
/// Time after the last session came up before the idle window opens (initial UPDATEs, End-of-RIB).
const SETTLE: Duration = Duration::from_secs(5);

/// The far end's address for session `i` (0-based): 10.250.(1+i/250).(i%250+1).
fn far_addr(i: usize) -> Ipv4Addr {
    // MAX_PEERS keeps 1 + i/250 ≤ 201 and i%250 + 1 ≤ 250: both fit a u8.
    Ipv4Addr::new(10, 250, (1 + i / 250) as u8, (i % 250 + 1) as u8)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Bgpd,
    Bird,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Bgpd => "bgpd",
            Contender::Bird => "bird",
        }
    }
}

struct Options {
    peers: usize,
    contenders: Vec<Contender>,
    idle: Duration,
    budget: Duration,
    bgpd: Option<PathBuf>,
}

const USAGE: &str =
    "usage: sessions [--peers N] [--contenders bgpd,bird] [--idle-secs S] [--budget-secs B] [--bgpd PATH]";

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        peers: 1000,
        contenders: vec![Contender::Bgpd, Contender::Bird],
        idle: Duration::from_secs(30),
        budget: Duration::from_secs(180),
        bgpd: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        let secs = |name: &str, v: String| -> Result<Duration, String> {
            let s: u64 = v.parse().map_err(|e| format!("{name} {v:?}: {e}"))?;
            if !(1..=3600).contains(&s) {
                return Err(format!("{name} must be 1 to 3600 seconds"));
            }
            Ok(Duration::from_secs(s))
        };
        match a.as_str() {
            "--peers" => {
                let v = value("--peers")?;
                opts.peers = v.parse().map_err(|e| format!("--peers {v:?}: {e}"))?;
                if !(1..=MAX_PEERS).contains(&opts.peers) {
                    return Err(format!("--peers must be 1 to {MAX_PEERS}"));
                }
            }
            "--idle-secs" => opts.idle = secs("--idle-secs", value("--idle-secs")?)?,
            "--budget-secs" => opts.budget = secs("--budget-secs", value("--budget-secs")?)?,
            "--bgpd" => opts.bgpd = Some(PathBuf::from(value("--bgpd")?)),
            "--contenders" => {
                opts.contenders = value("--contenders")?
                    .split(',')
                    .map(|c| match c {
                        "bgpd" => Ok(Contender::Bgpd),
                        "bird" => Ok(Contender::Bird),
                        other => Err(format!("unknown contender {other:?}; known: bgpd, bird")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(opts)
}

/// Runs the sessions benchmark with the arguments after `sessions` (or, with `__farend`
/// first, the far end inside its namespace).
pub fn run(args: &[String]) -> Result<(), String> {
    if args.first().map(String::as_str) == Some("__farend") {
        return farend_main(&args[1..]);
    }
    let opts = parse_args(args)?;
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root (network namespaces, port 179)".into());
    }
    install_signal_cleanup()?;
    let bgpd = if opts.contenders.contains(&Contender::Bgpd) { Some(bgpd_binary(opts.bgpd.clone())?) } else { None };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let bird_version = Command::new("/usr/sbin/bird")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string() + String::from_utf8_lossy(&o.stdout).trim())
        .unwrap_or_else(|e| format!("bird: {e}"));
    println!(
        "# sessions benchmark: {} idle eBGP sessions (hold {HOLD_SECS} s, keepalive {} s), idle window {} s, \
         kernel {}, {} CPUs, {bird_version}",
        opts.peers,
        KEEPALIVE.as_secs(),
        opts.idle.as_secs(),
        kernel.trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let mut results = Vec::new();
    for &c in &opts.contenders {
        match bench_one(c, &opts, bgpd.as_deref()) {
            Ok(r) => {
                println!("{}", r.line());
                results.push(r);
            }
            Err(e) => println!("# contender={} failed: {e}", c.name()),
        }
    }
    let find = |c: Contender| results.iter().find(|r| r.contender == c);
    if let (Some(b), Some(r)) = (find(Contender::Bgpd), find(Contender::Bird)) {
        let ratio = |x: f64, y: f64| match (x > 0.0, y > 0.0) {
            (_, true) => format!("{:.3}", x / y),
            (true, false) => "inf".to_string(),
            (false, false) => "n/a".to_string(),
        };
        println!(
            "ratio=bgpd/bird seconds_to_establish={} kib_per_session={} kib_per_session_increment={} cpu_s_per_s_idle={} cpu_s_per_s_idle_sched={}",
            ratio(b.seconds, r.seconds),
            ratio(b.kib_per_session(), r.kib_per_session()),
            ratio(b.kib_increment(), r.kib_increment()),
            ratio(b.cpu_stat, r.cpu_stat),
            ratio(b.cpu_sched, r.cpu_sched),
        );
        let verdict = |ok: bool| if ok { "met" } else { "missed" };
        println!(
            "target memory={} cpu={} dropped={}",
            verdict(b.kib_per_session() <= r.kib_per_session()),
            verdict(b.cpu_sched <= r.cpu_sched.max(0.001)),
            verdict(b.dropped == 0 && b.established == b.peers),
        );
    }
    Ok(())
}

/// The figures of one contender.
struct Outcome {
    contender: Contender,
    peers: usize,
    established: usize,
    dut_established_before: usize,
    dut_established_after: usize,
    seconds: f64,
    rss_established_kib: u64,
    rss_kib: u64,
    hwm_kib: u64,
    rss_zero_kib: u64,
    cpu_stat: f64,
    cpu_sched: f64,
    dropped: usize,
}

impl Outcome {
    fn kib_per_session(&self) -> f64 {
        self.rss_kib as f64 / self.peers as f64
    }

    fn kib_increment(&self) -> f64 {
        (self.rss_kib as f64 - self.rss_zero_kib as f64) / self.peers as f64
    }

    fn line(&self) -> String {
        let mut s = format!(
            "contender={} peers={} established={} seconds_to_establish={:.3} rss_kib={} hwm_kib={} \
             rss_0peers_kib={} kib_per_session={:.2} kib_per_session_increment={:.2} cpu_s_per_s_idle={:.5} \
             cpu_s_per_s_idle_sched={:.5} dropped={}",
            self.contender.name(),
            self.peers,
            self.established,
            self.seconds,
            self.rss_kib,
            self.hwm_kib,
            self.rss_zero_kib,
            self.kib_per_session(),
            self.kib_increment(),
            self.cpu_stat,
            self.cpu_sched,
            self.dropped,
        );
        let _ = write!(
            s,
            " rss_at_establishment_kib={} dut_established_before={} dut_established_after={}",
            self.rss_established_kib, self.dut_established_before, self.dut_established_after
        );
        s
    }
}

fn bench_one(c: Contender, opts: &Options, bgpd: Option<&Path>) -> Result<Outcome, String> {
    let n = opts.peers;
    let far: Vec<Ipv4Addr> = (0..n).map(far_addr).collect();
    let bed = Testbed::new("sess", c.name(), DUT_ADDR, &far)?;
    let files = TempDir::new(c.name())?;

    // The DUT's own footprint: the same program, same namespace, no peer.
    let rss_zero_kib = {
        let dut = Dut::start(c, &bed.dut, &files, 0, bgpd)?;
        dut.wait_ready(Duration::from_secs(20))?;
        std::thread::sleep(Duration::from_secs(2));
        dut.memory()?.0
    };

    let lifetime = opts.budget + opts.idle + SETTLE + Duration::from_secs(60);
    let mut far = FarEnd::spawn(&bed.far, n, lifetime)?;
    let t0 = Instant::now();
    let dut = Dut::start(c, &bed.dut, &files, n, bgpd)?;
    let all_up = far.wait_up(n, t0 + opts.budget);
    let seconds = all_up.unwrap_or_else(Instant::now).duration_since(t0).as_secs_f64();
    if all_up.is_none() {
        println!(
            "# contender={} only {} of {n} sessions up after {} s; measuring what is up",
            c.name(),
            far.up,
            opts.budget.as_secs()
        );
    }
    far.pump_until(Instant::now() + SETTLE);
    let established = far.up;
    let dut_established_before = dut.established()?;
    let rss_established_kib = dut.memory()?.0;

    let downs_before = far.downs;
    let cpu0 = dut.cpu()?;
    let w0 = Instant::now();
    far.pump_until(w0 + opts.idle);
    let cpu1 = dut.cpu()?;
    let window = w0.elapsed().as_secs_f64();
    let dropped = far.downs - downs_before;
    let (rss_kib, hwm_kib) = dut.memory()?;
    let dut_established_after = dut.established()?;
    drop(dut);
    drop(far);
    Ok(Outcome {
        contender: c,
        peers: n,
        established,
        dut_established_before,
        dut_established_after,
        seconds,
        rss_established_kib,
        rss_kib,
        hwm_kib,
        rss_zero_kib,
        cpu_stat: (cpu1.0 - cpu0.0) / window,
        cpu_sched: (cpu1.1 - cpu0.1) / window,
        dropped,
    })
}

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

// ----- the device under test ------------------------------------------------------------------

/// Finds the bgpd binary: `--bgpd`, else the one next to this bench, rebuilt first with
/// `cargo build --release -p bgpd` when cargo is at hand so that it matches the sources.
fn bgpd_binary(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return if p.is_file() { Ok(p) } else { Err(format!("--bgpd {}: no such file", p.display())) };
    }
    let exe = std::env::current_exe().map_err(|e| format!("locating the bench binary: {e}"))?;
    let dir = exe.parent().ok_or("the bench binary has no directory")?.to_path_buf();
    let candidate = dir.join("bgpd");
    let target_dir = dir.parent().map(Path::to_path_buf);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf);
    if let (Some(target_dir), Some(workspace), true) =
        (target_dir, workspace, dir.file_name().is_some_and(|f| f == "release"))
    {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "bgpd", "--bin", "bgpd"])
            .env("CARGO_TARGET_DIR", &target_dir)
            .current_dir(&workspace)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => println!("# cargo build -p bgpd failed ({s}); using {} as it is", candidate.display()),
            Err(e) => println!("# cannot run cargo ({e}); using {} as it is", candidate.display()),
        }
    }
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(format!("no bgpd at {}: run `cargo build --release -p bgpd` or pass --bgpd PATH", candidate.display()))
    }
}

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
    let mut s = format!(
        "log \"{}\" all;\nrouter id {DUT_ADDR};\nprotocol device {{ }}\n\
         template bgp far {{\n  local {DUT_ADDR} as {DUT_AS};\n  hold time {HOLD_SECS};\n  keepalive time {};\n\
         \x20 connect delay time 1;\n\
         \x20 ipv4 {{ import all; export none; }};\n}}\n",
        log.display(),
        KEEPALIVE.as_secs()
    );
    for i in 0..n {
        let _ = writeln!(s, "protocol bgp p{i} from far {{ neighbor {} as {FAR_AS}; }}", far_addr(i));
    }
    s
}

/// The running DUT: bgpd or BIRD in the DUT namespace. Stopped on drop.
struct Dut {
    contender: Contender,
    child: Child,
    pid: u32,
    control: PathBuf,
    bgpd: Option<PathBuf>,
}

impl Dut {
    fn start(c: Contender, ns: &Netns, files: &TempDir, n: usize, bgpd: Option<&Path>) -> Result<Dut, String> {
        let dir = &files.path;
        let log_path = dir.join(format!("{}-{n}.log", c.name()));
        let log = std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]);
        let control = match c {
            Contender::Bgpd => {
                let bin = bgpd.ok_or("no bgpd binary")?;
                let store = dir.join(format!("bgpd-{n}.yaml"));
                std::fs::write(&store, bgpd_datastore(n)).map_err(|e| format!("{}: {e}", store.display()))?;
                let control = dir.join(format!("bgpd-{n}.sock"));
                // As the other DUTs, no routes to the kernel.
                cmd.arg(bin).arg("run").arg("--no-kernel").arg(format!("--datastore=file:{}", store.display()));
                cmd.args(["--node", "node-1", "--control-socket"]).arg(&control);
                control
            }
            Contender::Bird => {
                let conf = dir.join(format!("bird-{n}.conf"));
                let text = bird_config(n, &dir.join(format!("bird-{n}.birdlog")));
                std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))?;
                let control = dir.join(format!("bird-{n}.ctl"));
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
        registry().pids.push(pid);
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
    fn wait_ready(&self, limit: Duration) -> Result<(), String> {
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
    fn established(&self) -> Result<usize, String> {
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
    fn memory(&self) -> Result<(u64, u64), String> {
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
    fn cpu(&self) -> Result<(f64, f64), String> {
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

impl Drop for Dut {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        reap(&mut self.child);
    }
}

// ----- the far end, seen from the bench ---------------------------------------------------------

/// The far-end process: N sessions in the far namespace, reporting on its stdout.
struct FarEnd {
    child: Child,
    /// Held open: the far end exits when it closes.
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Sessions Established now, as the far end last said.
    up: usize,
    /// Sessions that left Established so far.
    downs: usize,
}

impl FarEnd {
    fn spawn(ns: &Netns, n: usize, lifetime: Duration) -> Result<FarEnd, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating the bench binary: {e}"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .arg(exe)
            .args(["sessions", "__farend", "--peers", &n.to_string(), "--lifetime-secs"])
            .arg(lifetime.as_secs().to_string());
        let (child, stdin, lines) = spawn_far_end(cmd)?;
        let far = FarEnd { child, stdin, lines, up: 0, downs: 0 };
        match far.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l == "ready" => Ok(far),
            Ok(l) => Err(format!("far end said {l:?} instead of ready")),
            Err(_) => Err("far end not ready in 30 s".into()),
        }
    }

    fn take(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("up"), Some(k), None) => self.up = k.parse().unwrap_or(self.up),
            (Some("down"), Some(name), Some(k)) => {
                self.downs += 1;
                self.up = k.parse().unwrap_or(self.up);
                // The first few by name; a mass drop is visible in `dropped=` anyway.
                if self.downs <= 5 {
                    println!("# far end: session {name} left Established");
                }
            }
            _ => println!("# far end: {line}"),
        }
    }

    /// Follows the far end until `n` sessions are up; when, or `None` at the deadline.
    fn wait_up(&mut self, n: usize, deadline: Instant) -> Option<Instant> {
        while self.up < n {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(l) => self.take(&l),
                Err(_) => return None,
            }
        }
        Some(Instant::now())
    }

    /// Follows the far end until `until`.
    fn pump_until(&mut self, until: Instant) {
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => self.take(&l),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(left);
                    break;
                }
            }
        }
    }
}

impl Drop for FarEnd {
    fn drop(&mut self) {
        drop(self.stdin.take());
        reap(&mut self.child);
    }
}

// ----- the far end, inside its namespace --------------------------------------------------------

fn farend_main(args: &[String]) -> Result<(), String> {
    let mut peers = 0usize;
    let mut lifetime = Duration::from_secs(300);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--peers" => peers = v.parse().map_err(|e| format!("--peers {v:?}: {e}"))?,
            "--lifetime-secs" => {
                lifetime = Duration::from_secs(v.parse().map_err(|e| format!("--lifetime-secs {v:?}: {e}"))?)
            }
            other => return Err(format!("far end: unknown argument {other:?}")),
        }
    }
    if !(1..=MAX_PEERS).contains(&peers) {
        return Err(format!("far end: --peers must be 1 to {MAX_PEERS}"));
    }
    // Bounded: it stops when the bench closes its stdin, or after its lifetime.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(farend(peers, lifetime))
}

fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

async fn farend(n: usize, lifetime: Duration) -> Result<(), String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("far end socket: {e}"))?;
    socket.set_reuseaddr(true).map_err(|e| format!("far end SO_REUSEADDR: {e}"))?;
    socket.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 179))).map_err(|e| format!("far end bind :179: {e}"))?;
    let listener = socket.listen(4096).map_err(|e| format!("far end listen: {e}"))?;
    let up = Arc::new(AtomicUsize::new(0));
    let mut sessions: HashMap<Ipv4Addr, tokio::sync::mpsc::Sender<TcpStream>> = HashMap::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(far_session(i, rx, up.clone()));
        sessions.insert(far_addr(i), tx);
    }
    say(format_args!("ready"));
    let end = tokio::time::sleep(lifetime);
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => return Ok(()),
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let to = match stream.local_addr() {
                        Ok(SocketAddr::V4(a)) => sessions.get(a.ip()),
                        _ => None,
                    };
                    if let Some(tx) = to {
                        let _ = tx.try_send(stream);
                    }
                }
                Err(e) => {
                    eprintln!("far end: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// One passive session of the far end: takes the connections the listener hands it.
async fn far_session(i: usize, mut accepted: tokio::sync::mpsc::Receiver<TcpStream>, up: Arc<AtomicUsize>) {
    let mut cfg = SessionConfig::new(FAR_AS, DUT_AS, far_addr(i));
    cfg.passive = true;
    cfg.hold_time = HOLD_SECS;
    cfg.keepalive_time = Some(KEEPALIVE);
    let mut session = match Session::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("far end p{i}: {e}");
            return;
        }
    };
    let mut conn: Option<TcpStream> = None;
    let mut buf = [0u8; 4096];
    session.handle_manual_start(Instant::now());
    loop {
        // Send what the session queued, then act on its events, until both are drained.
        loop {
            while let Some(bytes) = session.poll_transmit() {
                if let Some(c) = conn.as_mut() {
                    if c.write_all(&bytes).await.is_err() {
                        conn = None;
                        session.handle_connection_failed(Instant::now());
                    }
                }
            }
            let mut any = false;
            while let Some(ev) = session.poll_event() {
                any = true;
                match ev {
                    SessionEvent::Disconnect => conn = None,
                    SessionEvent::StateChanged { to: State::Established, .. } => {
                        let k = up.fetch_add(1, Ordering::Relaxed) + 1;
                        say(format_args!("up {k}"));
                    }
                    SessionEvent::StateChanged { from: State::Established, .. } => {
                        let k = up.fetch_sub(1, Ordering::Relaxed) - 1;
                        say(format_args!("down p{i} {k}"));
                    }
                    _ => {}
                }
            }
            if !any {
                break;
            }
        }
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                session.handle_timeout(Instant::now());
            }
            r = async { match conn.as_mut() { Some(c) => c.read(&mut buf).await, None => std::future::pending().await } } => {
                match r {
                    Ok(0) | Err(_) => {
                        conn = None;
                        session.handle_connection_failed(Instant::now());
                    }
                    Ok(k) => session.handle_bytes(Instant::now(), &buf[..k]),
                }
            }
            s = accepted.recv() => match s {
                Some(stream) if conn.is_none() && matches!(session.state(), State::Active | State::Connect) => {
                    let _ = stream.set_nodelay(true);
                    conn = Some(stream);
                    session.handle_connected(Instant::now());
                }
                Some(refused) => drop(refused),
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_addresses_are_distinct_and_outside_the_dut_address() {
        let addrs: std::collections::HashSet<Ipv4Addr> = (0..MAX_PEERS).map(far_addr).collect();
        assert_eq!(addrs.len(), MAX_PEERS);
        assert!(!addrs.contains(&DUT_ADDR));
        assert_eq!(far_addr(0), Ipv4Addr::new(10, 250, 1, 1));
        assert_eq!(far_addr(249), Ipv4Addr::new(10, 250, 1, 250));
        assert_eq!(far_addr(250), Ipv4Addr::new(10, 250, 2, 1));
    }

    #[test]
    fn both_contenders_get_the_same_peers_and_timers() {
        let store = bgpd_datastore(3);
        let bird = bird_config(3, Path::new("/tmp/x.log"));
        for i in 0..3 {
            assert!(store.contains(&format!("peerIP: {}, asNumber: {FAR_AS}, keepaliveTime: \"30s\"", far_addr(i))));
            assert!(bird.contains(&format!("protocol bgp p{i} from far {{ neighbor {} as {FAR_AS}; }}", far_addr(i))));
        }
        assert_eq!(store.matches("kind: BGPPeer").count(), 3);
        assert!(bird.contains("hold time 90;") && bird.contains("keepalive time 30;"));
    }

    #[test]
    fn arguments_are_checked() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse_args(&args(&["--peers", "10", "--contenders", "bird", "--idle-secs", "5"])).unwrap();
        assert_eq!((o.peers, o.contenders, o.idle), (10, vec![Contender::Bird], Duration::from_secs(5)));
        assert!(parse_args(&args(&["--peers", "0"])).is_err());
        assert!(parse_args(&args(&["--contenders", "frr"])).is_err());
        assert!(parse_args(&args(&["--idle-secs"])).is_err());
    }
}

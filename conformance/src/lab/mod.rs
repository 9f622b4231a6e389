//! Test harness for the conformance suite: network namespaces joined by veth
//! pairs, daemons started inside them and killed on `Drop`, and the
//! configuration each implementation (bgpd, BIRD, FRR, GoBGP, ExaBGP) needs.
//!
//! Everything a [`Lab`] creates has a unique name (`bgpdc-<pid>-<n>`) and is
//! removed when the lab is dropped, also when a test panics (the daemons'
//! logs are then printed to help find out why). The namespaces, veths and processes
//! are the test bed's (`testgate::testbed`); the lab adds naming, logs and topologies.

pub mod bgpd;
pub mod bird;
pub mod etcd;
pub mod exabgp;
pub mod frr;
pub mod gobgp;
mod netns;
mod process;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use netns::Ns;
use process::Proc;
pub use process::ProcId;
use testgate::testbed::Netns;

/// Polls `f` every 250 ms until it returns `Some`, or fails after `timeout`
/// with `what` and the last diagnostic `f` gave.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => {
                return Err(format!("timed out after {} s waiting for {what}; last: {e}", timeout.as_secs()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Checks `f` every 250 ms for `period`: `Err` as soon as `f` fails.
pub fn holds_for(what: &str, period: Duration, mut f: impl FnMut() -> Result<(), String>) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < period {
        f().map_err(|e| format!("{what} stopped holding after {} ms: {e}", start.elapsed().as_millis()))?;
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

/// One case of a test: a name and what to run in a lab of its own.
pub type Case = (String, Box<dyn FnOnce(&Lab) -> Result<(), String> + Send>);

/// Runs the cases in parallel threads, each in a [`Lab`] of its own, and
/// panics listing every failure (with the last lines of its daemons' logs).
/// `BGPDC_ONLY=text` runs only the cases whose name contains `text`.
pub fn run_parallel(cases: Vec<Case>) {
    let only = std::env::var("BGPDC_ONLY").ok().map(|o| o.to_lowercase());
    let picked: Vec<Case> =
        cases.into_iter().filter(|(n, _)| only.as_deref().is_none_or(|o| n.to_lowercase().contains(o))).collect();
    assert!(!picked.is_empty(), "BGPDC_ONLY={only:?} matches no case");
    let total = picked.len();
    let handles: Vec<_> = picked
        .into_iter()
        .map(|(name, f)| {
            let n = name.clone();
            (
                name,
                std::thread::spawn(move || {
                    let lab = Lab::new(&n).map_err(|e| format!("cannot set up the lab: {e}"))?;
                    f(&lab).map_err(|e| format!("{e}\n{}", lab.logs(30)))
                }),
            )
        })
        .collect();
    let mut failures = Vec::new();
    for (name, h) in handles {
        match h.join() {
            Ok(Ok(())) => eprintln!("ok: {name}"),
            Ok(Err(e)) => failures.push(format!("FAILED {name}: {e}")),
            Err(p) => failures.push(format!("FAILED {name}: panicked: {}", panic_text(&*p))),
        }
    }
    assert!(failures.is_empty(), "{} of {total} cases failed:\n{}", failures.len(), failures.join("\n\n"));
}

/// The message of a panic payload (`panic!` with a string or a format).
fn panic_text(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>().copied().or_else(|| p.downcast_ref::<String>().map(String::as_str)).unwrap_or("?")
}

/// Turns an error from setting up a lab (I/O, or a test bed command that failed) into a
/// case's error.
pub fn setup<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("setup: {e}"))
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// One test's world: a work directory, namespaces and processes, all removed
/// on `Drop` (processes first, then namespaces, then the directory).
pub struct Lab {
    id: String,
    dir: PathBuf,
    namespaces: Mutex<Vec<Netns>>,
    procs: Mutex<Vec<Option<Proc>>>,
}

impl Lab {
    /// A new lab named after `tag` (used in log lines only).
    pub fn new(tag: &str) -> std::io::Result<Lab> {
        let id = format!("bgpdc-{}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&dir)?;
        // FRR's zebra drops to user frr and must reach its sockets below here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        eprintln!("[{id}] lab for {tag} in {}", dir.display());
        Ok(Lab { id, dir, namespaces: Mutex::new(Vec::new()), procs: Mutex::new(Vec::new()) })
    }

    /// The work directory (configs, sockets, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new network namespace `<lab id>-<role>` with `lo` up.
    pub fn netns(&self, role: &str) -> std::io::Result<Ns> {
        let ns = Netns::add(format!("{}-{role}", self.id))?;
        let handle = ns.handle();
        self.namespaces.lock().unwrap_or_else(|e| e.into_inner()).push(ns);
        Ok(handle)
    }

    /// A veth pair `a_if` in `a` and `b_if` in `b`, both up, with the given
    /// addresses (`10.255.1.1/24`, `fd00:255:1::1/64`, …; IPv6 without DAD).
    pub fn veth(
        &self,
        a: &Ns,
        a_if: &str,
        a_addrs: &[&str],
        b: &Ns,
        b_if: &str,
        b_addrs: &[&str],
    ) -> std::io::Result<()> {
        testgate::testbed::veth(Some(a), a_if, Some(b), b_if)?;
        for (ns, ifname, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
            for addr in addrs {
                ns.add_addr(ifname, addr)?;
            }
            ns.link_up(ifname)?;
        }
        Ok(())
    }

    /// Starts `cmd` (built with [`Ns::command`]) with stdout and stderr to
    /// `<dir>/<name>.log`; it is stopped when the lab is dropped.
    pub fn spawn(&self, name: &str, cmd: std::process::Command) -> std::io::Result<ProcId> {
        let log = self.dir.join(format!("{name}.log"));
        let p = Proc::spawn(name, cmd, log)?;
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs.push(Some(p));
        Ok(ProcId(procs.len() - 1))
    }

    /// Sends `signal` (`"STOP"`, `"CONT"`, `"TERM"`, …) to a process.
    pub fn signal(&self, id: ProcId, signal: &str) -> std::io::Result<()> {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        match procs.get(id.0).and_then(|p| p.as_ref()) {
            Some(p) => p.signal(signal),
            None => Err(std::io::Error::other(format!("process {} already stopped", id.0))),
        }
    }

    /// Stops a process (SIGTERM, then SIGKILL after 5 s) and waits for it.
    pub fn stop(&self, id: ProcId) {
        let p = self.procs.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id.0).and_then(Option::take);
        drop(p);
    }

    /// The process's PID (that of the program itself: `ip netns exec` execs in place),
    /// or `None` once it was stopped.
    pub fn pid(&self, id: ProcId) -> Option<u32> {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs.get(id.0).and_then(|p| p.as_ref()).map(Proc::pid)
    }

    /// Whether the process is still running.
    pub fn running(&self, id: ProcId) -> bool {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs.get_mut(id.0).and_then(|p| p.as_mut()).is_some_and(Proc::running)
    }

    /// Two namespaces `bgpd` and `peer` joined by `veth0`, on link `n`:
    /// bgpd's side has 10.255.n.1/24 and fd00:255:n::1/64, the peer's side
    /// 10.255.n.2/24 and fd00:255:n::2/64.
    pub fn pair(&self, n: u8) -> std::io::Result<(Ns, Ns)> {
        let a = self.netns("bgpd")?;
        let b = self.netns("peer")?;
        let (a4, a6) = (format!("10.255.{n}.1/24"), format!("fd00:255:{n}::1/64"));
        let (b4, b6) = (format!("10.255.{n}.2/24"), format!("fd00:255:{n}::2/64"));
        self.veth(&a, "veth0", &[&a4, &a6], &b, "veth0", &[&b4, &b6])?;
        Ok((a, b))
    }

    /// Namespaces `bgpd`, `router` and `peer`: bgpd on link `n`
    /// (10.255.n.1/24, router 10.255.n.2/24), the peer on link `m`
    /// (router 10.255.m.1/24, peer 10.255.m.2/24), the router forwarding
    /// (`ip_forward=1` in its namespace only) and both ends routed through it.
    /// The peer is one hop further away than on [`Lab::pair`].
    pub fn routed(&self, n: u8, m: u8) -> std::io::Result<(Ns, Ns, Ns)> {
        let a = self.netns("bgpd")?;
        let r = self.netns("router")?;
        let b = self.netns("peer")?;
        self.veth(&a, "veth0", &[&format!("10.255.{n}.1/24")], &r, "veth0", &[&format!("10.255.{n}.2/24")])?;
        self.veth(&r, "veth1", &[&format!("10.255.{m}.1/24")], &b, "veth0", &[&format!("10.255.{m}.2/24")])?;
        r.sysctl("net.ipv4.ip_forward=1")?;
        a.route(&format!("10.255.{m}.0/24"), &format!("10.255.{n}.2"))?;
        b.route(&format!("10.255.{n}.0/24"), &format!("10.255.{m}.1"))?;
        Ok((a, r, b))
    }

    /// The last lines of every process's log, for a failure report.
    pub fn logs(&self, n: usize) -> String {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = String::new();
        for p in procs.iter().flatten() {
            s.push_str(&format!("----- [{}] last lines of {} -----\n{}\n", self.id, p.name(), p.log_tail(n)));
        }
        s
    }

    /// The last `n` lines of a process's log.
    pub fn log_tail(&self, id: ProcId, n: usize) -> String {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs.get(id.0).and_then(|p| p.as_ref()).map(|p| p.log_tail(n)).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|e| e.into_inner()));
        // Stop in reverse order of start (clients before the daemons they use).
        for p in procs.into_iter().rev().flatten() {
            if panicking {
                eprintln!("----- [{}] last lines of {} -----\n{}", self.id, p.name(), p.log_tail(40));
            }
            drop(p);
        }
        // Deleting a namespace removes its devices, the veths with an end there too.
        drop(std::mem::take(&mut *self.namespaces.lock().unwrap_or_else(|e| e.into_inner())));
        if std::env::var_os("BGPDC_KEEP").is_some() || panicking {
            eprintln!("[{}] work directory kept: {}", self.id, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

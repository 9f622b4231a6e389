//! A real single-member etcd (Debian `etcd-server`) for tests, benchmarks and the lab:
//! started on free loopback ports (or the caller's ports, or inside a namespace) with its
//! data in a [`ScratchDir`], run as a [`Process`], ready once it has a leader; stopped,
//! reaped and its directory removed on drop.
//!
//! It is synchronous, so that plain tests, `#[tokio::test]`s and benchmarks use the same
//! one; the callers' clients (bgpd's own etcd client, a JSON-gateway writer) stay with
//! them. Callers check that `etcd` is installed through [`crate::require_cmd`] first.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::Ns;
use super::process::{Process, ScratchDir};

/// How to start an etcd: its name, where it serves, what else it is told, where it runs.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// The member's name (`--name`, also in `--initial-cluster`).
    pub name: String,
    /// The URL clients use, listened on and advertised as given (`http` or `https`).
    pub client_url: String,
    /// The loopback port for peers (`http://127.0.0.1:PORT`, the member alone).
    pub peer_port: u16,
    /// The loopback port of `--listen-metrics-urls` (plain HTTP whatever the client URL),
    /// where readiness is asked (`GET /health`): it needs no TLS material nor password.
    pub metrics_port: u16,
    /// More arguments: TLS files, authentication, limits.
    pub args: Vec<String>,
    /// The network namespace it runs in (`ip netns exec`; its ports are that
    /// namespace's), or `None` for the caller's own.
    pub ns: Option<Ns>,
}

impl EtcdConfig {
    /// Plain HTTP on free loopback ports of the caller's namespace.
    pub fn loopback(name: &str) -> Result<EtcdConfig, String> {
        Ok(EtcdConfig {
            name: name.to_string(),
            client_url: format!("http://127.0.0.1:{}", free_port()?),
            peer_port: free_port()?,
            metrics_port: free_port()?,
            args: Vec::new(),
            ns: None,
        })
    }

    /// Inside `ns`, on that namespace's own loopback at etcd's usual ports (clients
    /// `http://127.0.0.1:2379`, peers 2380, metrics 2381): a fresh namespace has them free.
    pub fn in_ns(name: &str, ns: &Ns) -> EtcdConfig {
        EtcdConfig {
            name: name.to_string(),
            client_url: "http://127.0.0.1:2379".into(),
            peer_port: 2380,
            metrics_port: 2381,
            args: Vec::new(),
            ns: Some(ns.clone()),
        }
    }

    /// Serves clients over TLS: the client URL's scheme becomes `https` (the caller adds
    /// `--cert-file` and `--key-file` with [`EtcdConfig::args`]).
    pub fn https(mut self) -> EtcdConfig {
        if let Some(rest) = self.client_url.strip_prefix("http://") {
            self.client_url = format!("https://{rest}");
        }
        self
    }

    /// Adds arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> EtcdConfig {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The command line, its data in `dir/data`, its standard output discarded.
    fn command(&self, dir: &ScratchDir) -> Command {
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let mut c = match &self.ns {
            Some(ns) => ns.command("etcd"),
            None => Command::new("etcd"),
        };
        c.arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={}", self.client_url))
            .arg(format!("--advertise-client-urls={}", self.client_url))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={}={peer_url}", self.name))
            .arg(format!("--listen-metrics-urls=http://127.0.0.1:{}", self.metrics_port))
            .arg("--log-level=error")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    }

    /// The client URL's `127.0.0.1:PORT` (or whatever address it names).
    fn client_addr(&self) -> Option<SocketAddr> {
        let rest = self.client_url.split_once("://")?.1;
        rest.trim_end_matches('/').parse().ok()
    }
}

/// A loopback port nobody listens on now (bound, then closed).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("binding a free loopback port: {e}"))
}

/// An etcd that did not start or did not become ready, with what it logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdError {
    /// The member's name.
    pub name: String,
    /// What went wrong.
    pub reason: String,
    /// Its standard error so far.
    pub log: String,
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd {}: {}; its log:\n{}", self.name, self.reason, self.log)
    }
}

impl std::error::Error for EtcdError {}

impl From<EtcdError> for String {
    fn from(e: EtcdError) -> String {
        e.to_string()
    }
}

impl From<EtcdError> for std::io::Error {
    fn from(e: EtcdError) -> std::io::Error {
        std::io::Error::other(e)
    }
}

/// A running etcd (or one stopped with [`Etcd::stop`], its data kept). Dropped: the
/// process is stopped (SIGTERM, SIGKILL after the grace period) and reaped, and its
/// directory (data and log) removed.
#[derive(Debug)]
pub struct Etcd {
    config: EtcdConfig,
    // Declared before `dir`: the process goes before its data directory.
    process: Option<Process>,
    dir: ScratchDir,
}

impl Etcd {
    /// How long [`Etcd::start`] waits for a leader: a safety net against a hang, not a
    /// speed requirement (a member elects itself in about a second).
    pub const PATIENCE: Duration = Duration::from_secs(30);

    /// Starts etcd as `config` says, in a new scratch directory, and waits until it is
    /// ready: its client port accepts connections and `/health` says it has a leader
    /// (before that, etcd accepts connections but refuses writes).
    pub fn start(config: EtcdConfig) -> Result<Etcd, EtcdError> {
        let dir = ScratchDir::new(&format!("etcd-{}", config.name)).map_err(|reason| EtcdError {
            name: config.name.clone(),
            reason,
            log: String::new(),
        })?;
        let mut etcd = Etcd { config, process: None, dir };
        etcd.restart()?;
        Ok(etcd)
    }

    /// The URL clients use.
    pub fn url(&self) -> &str {
        &self.config.client_url
    }

    /// How it was started.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// Its pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// What it wrote to its standard error, over every start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Stops it (SIGTERM, SIGKILL after the grace period) and reaps it; its data stays
    /// for [`Etcd::restart`].
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Kills it at once (SIGKILL: no goodbye to its clients) and reaps it; its data stays
    /// for [`Etcd::restart`].
    pub fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            drop(p.with_grace(Duration::ZERO));
        }
    }

    /// Starts it again (stopping it first if it runs) on the same data and ports, and
    /// waits until it is ready, as [`Etcd::start`] does.
    pub fn restart(&mut self) -> Result<(), EtcdError> {
        self.stop();
        // Appended: one log over every start.
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .map_err(|e| self.error(format!("opening its log: {e}")))?;
        let process = Process::spawn(&format!("etcd {}", self.config.name), self.config.command(&self.dir).stderr(log))
            .map_err(|e| self.error(format!("{e} (Debian package etcd-server)")))?;
        self.process = Some(process);
        self.wait_ready()
    }

    /// Polls until the client port accepts and `/health` is true, the process exits, or
    /// [`Etcd::PATIENCE`] runs out.
    fn wait_ready(&mut self) -> Result<(), EtcdError> {
        let addr = self.config.client_addr().ok_or_else(|| self.error("its client URL names no address".into()))?;
        let deadline = Instant::now() + Etcd::PATIENCE;
        loop {
            if let Some(p) = self.process.as_mut() {
                if !p.running() {
                    return Err(self.error("exited before it was ready".into()));
                }
            }
            let probe = || ready(addr, self.config.metrics_port);
            let answer = match &self.config.ns {
                Some(ns) => ns.in_ns(probe).unwrap_or_else(|e| Err(format!("entering {}: {e}", ns.name()))),
                None => probe(),
            };
            let last = match answer {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(self.error(format!("not ready within {:?} (last: {last})", Etcd::PATIENCE)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn error(&self, reason: String) -> EtcdError {
        EtcdError { name: self.config.name.clone(), reason, log: self.log() }
    }
}

/// Whether the member serving clients at `client` is ready: that port accepts, and the
/// metrics port's `GET /health` answers `"health":"true"` (a leader, a committed read).
fn ready(client: SocketAddr, metrics_port: u16) -> Result<(), String> {
    let timeout = Duration::from_secs(2);
    TcpStream::connect_timeout(&client, timeout).map_err(|e| format!("client port {client}: {e}"))?;
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let mut s = TcpStream::connect_timeout(&metrics, timeout).map_err(|e| format!("metrics port {metrics}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| format!("{metrics}: {e}"))?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("GET /health: {e}"))?;
    let mut out = Vec::new();
    s.take(1 << 16).read_to_end(&mut out).map_err(|e| format!("GET /health: {e}"))?;
    let out = String::from_utf8_lossy(&out);
    if out.contains("\"health\":\"true\"") {
        Ok(())
    } else {
        Err(format!("GET /health: {}", out.lines().last().unwrap_or("no answer")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ports_differ_and_https_changes_only_the_scheme() {
        let c = EtcdConfig::loopback("t").unwrap();
        let port = c.client_addr().unwrap().port();
        assert!(port != c.peer_port && port != c.metrics_port && c.peer_port != c.metrics_port);
        let tls = c.clone().https().args(["--cert-file=x"]);
        assert_eq!(tls.client_url, format!("https://127.0.0.1:{port}"));
        assert_eq!(tls.args, ["--cert-file=x"]);
    }

    #[test]
    fn the_command_names_data_ports_and_extra_arguments() {
        let dir = ScratchDir::new("testgate-etcd-cmd").unwrap();
        let c = EtcdConfig::loopback("t").unwrap().args(["--max-wals=2"]);
        let cmd = c.command(&dir);
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(cmd.get_program(), "etcd");
        assert!(args.contains(&format!("--data-dir={}", dir.path().join("data").display())));
        assert!(args.contains(&format!("--initial-cluster=t=http://127.0.0.1:{}", c.peer_port)));
        assert!(args.contains(&format!("--listen-metrics-urls=http://127.0.0.1:{}", c.metrics_port)));
        assert_eq!(args.last().map(String::as_str), Some("--max-wals=2"));
    }

    /// A real etcd, stopped and started again on the same data, then dropped.
    #[test]
    fn etcd_starts_restarts_on_its_data_and_is_gone_after_drop() {
        if !crate::require_cmd("etcd_starts_restarts_on_its_data_and_is_gone_after_drop", "etcd") {
            return;
        }
        let mut etcd = Etcd::start(EtcdConfig::loopback("testgate").unwrap()).unwrap_or_else(|e| panic!("{e}"));
        let addr = etcd.config().client_addr().unwrap();
        let data = etcd.dir.path().join("data");
        assert!(data.join("member").is_dir(), "{}", data.display());
        etcd.stop();
        assert!(etcd.pid().is_none());
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "stopped: nobody listens");
        etcd.restart().unwrap_or_else(|e| panic!("{e}"));
        let pid = etcd.pid().unwrap();
        assert!(super::super::cleanup::registry().pids.contains(&pid));
        drop(etcd);
        assert!(!data.exists(), "its directory is removed");
        assert!(!super::super::cleanup::registry().pids.contains(&pid));
    }

    /// The lab's way: etcd inside a namespace, ready on its loopback, gone after the drop.
    #[test]
    fn etcd_in_a_namespace_serves_that_namespaces_loopback() {
        let test = "etcd_in_a_namespace_serves_that_namespaces_loopback";
        if !crate::require_root_and_cmds(test, &["ip", "etcd"]) {
            return;
        }
        let ns = super::super::Netns::unique("testgate-etcd").unwrap();
        let etcd = Etcd::start(EtcdConfig::in_ns("lab", &ns)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(etcd.url(), "http://127.0.0.1:2379");
        let addr = etcd.config().client_addr().unwrap();
        assert_eq!(ns.in_ns(|| ready(addr, 2381)).unwrap(), Ok(()));
        drop(etcd);
        assert!(ns.in_ns(|| ready(addr, 2381)).unwrap().is_err(), "stopped with the drop");
    }

    #[test]
    fn a_member_that_cannot_start_is_an_error_with_its_log() {
        if !crate::require_cmd("a_member_that_cannot_start_is_an_error_with_its_log", "etcd") {
            return;
        }
        let e = Etcd::start(EtcdConfig::loopback("bad").unwrap().args(["--no-such-flag"])).unwrap_err();
        assert!(e.reason.contains("exited before it was ready"), "{e}");
        assert!(e.log.contains("no-such-flag"), "{e}");
    }
}

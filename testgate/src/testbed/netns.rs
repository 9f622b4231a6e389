//! Network namespaces and veth pairs, driven through `ip` (iproute2).

use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::cleanup;
use super::command::{command_line, run, CommandError};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `<prefix>-<pid>-<n>`: unique among this machine's running processes (the pid) and
/// within this one (a counter), so parallel tests and benches never share a namespace.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A network namespace of this process's, deleted on drop (the kernel then removes every
/// device in it, the veths with one end there included). Dereferences to [`Ns`].
#[derive(Debug)]
pub struct Netns {
    ns: Ns,
}

impl Netns {
    /// Creates the namespace `name` with `lo` up, and enters it in the cleanup registry.
    pub fn add(name: impl Into<String>) -> Result<Netns, CommandError> {
        let name = name.into();
        run(Command::new("ip").args(["netns", "add", &name]))?;
        cleanup::registry().namespaces.push(name.clone());
        // From here on, an error deletes the namespace (drop).
        let ns = Netns { ns: Ns { name } };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates a namespace named [`unique_name`]`(prefix)` with `lo` up.
    pub fn unique(prefix: &str) -> Result<Netns, CommandError> {
        Netns::add(unique_name(prefix))
    }

    /// A handle to the namespace that can be cloned and kept (it does not delete it).
    pub fn handle(&self) -> Ns {
        self.ns.clone()
    }
}

impl std::ops::Deref for Netns {
    type Target = Ns;
    fn deref(&self) -> &Ns {
        &self.ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.ns.name])) {
            eprintln!("cannot delete network namespace {}: {e}", self.ns.name);
        }
        cleanup::registry().namespaces.retain(|n| n != &self.ns.name);
    }
}

/// A network namespace by name: what runs things inside one. It does not own the
/// namespace; a [`Netns`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ns {
    name: String,
}

impl Ns {
    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its bind mount, `/run/netns/NAME` (what `CNI_NETNS` and `setns` take).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// A command that runs `program` inside this namespace (`ip netns exec NAME program`,
    /// which execs in place: the child's pid is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program args` inside the namespace and returns its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, CommandError> {
        run(self.command(program).args(args))
    }

    /// Runs `ip -n NAME args` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String, CommandError> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs `ip -n NAME -batch -` with `commands`, one `ip` command a line.
    pub fn ip_batch(&self, commands: &str) -> Result<(), CommandError> {
        use std::io::Write;
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name, "-batch", "-"]);
        let command = command_line(&cmd);
        let failed = |detail: String| CommandError { command: command.clone(), detail };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot start: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(commands.as_bytes()).map_err(|e| failed(format!("writing the commands: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            return Err(failed(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(())
    }

    /// Adds an address to an interface; IPv6 addresses skip duplicate address detection
    /// so they are usable at once.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<(), CommandError> {
        self.ip(&addr_args(ifname, cidr)).map(|_| ())
    }

    /// Sets an interface up.
    pub fn link_up(&self, ifname: &str) -> Result<(), CommandError> {
        self.ip(&["link", "set", ifname, "up"]).map(|_| ())
    }

    /// Adds a route (`ip route add DEST via GW`).
    pub fn route(&self, dest: &str, via: &str) -> Result<(), CommandError> {
        self.ip(&["route", "add", dest, "via", via]).map(|_| ())
    }

    /// Sets a sysctl inside the namespace (e.g. `net.ipv4.ip_forward=1`).
    pub fn sysctl(&self, setting: &str) -> Result<(), CommandError> {
        self.run("sysctl", &["-qw", setting]).map(|_| ())
    }

    /// The MAC address of `dev`.
    pub fn link_mac(&self, dev: &str) -> Result<String, CommandError> {
        let text = self.ip(&["-o", "link", "show", dev])?;
        mac_of(&text).ok_or_else(|| CommandError {
            command: format!("ip -n {} -o link show {dev}", self.name),
            detail: format!("no MAC address in: {}", text.trim()),
        })
    }

    /// TCP connections in state ESTABLISHED with local or remote port `port`
    /// (`ss -tnH state established`), as `local peer` address pairs.
    pub fn established_tcp(&self, port: u16) -> Result<Vec<(String, String)>, CommandError> {
        let out = self.run("ss", &["-tnH", "state", "established"])?;
        Ok(established_with_port(&out, port))
    }

    /// Runs `f` on a new thread that has entered this namespace, so sockets it opens
    /// live there (a raw test client, for example).
    pub fn in_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let path = self.path();
        let file =
            std::fs::File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        std::thread::scope(|s| {
            let handle = s.spawn(move || -> io::Result<T> {
                use std::os::fd::AsFd;
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(io::Error::from)?;
                Ok(f())
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// A veth pair: `a_if` in namespace `a` and `b_if` in `b` (`None`: the root namespace).
/// Neither end is configured; with one end in a [`Netns`], the pair goes with it.
pub fn veth(a: Option<&Ns>, a_if: &str, b: Option<&Ns>, b_if: &str) -> Result<(), CommandError> {
    run(&mut veth_command(a, a_if, b, b_if)).map(|_| ())
}

/// The two links the FIB's tests and its bench route over, made in `ns`: veth0
/// (192.0.2.1/24, 2001:db8:1::1/64) ↔ veth1 and veth2 (198.51.100.1/24, 2001:db8:2::1/64)
/// ↔ veth3, all four up (the far ends have no address: next hops there are gateways).
pub fn fib_links(ns: &Ns) -> Result<(), CommandError> {
    for (a, b, v4, v6) in [
        ("veth0", "veth1", "192.0.2.1/24", "2001:db8:1::1/64"),
        ("veth2", "veth3", "198.51.100.1/24", "2001:db8:2::1/64"),
    ] {
        veth(Some(ns), a, Some(ns), b)?;
        ns.add_addr(a, v4)?;
        ns.add_addr(a, v6)?;
        ns.link_up(a)?;
        ns.link_up(b)?;
    }
    Ok(())
}

fn veth_command(a: Option<&Ns>, a_if: &str, b: Option<&Ns>, b_if: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["link", "add", "name", a_if]);
    if let Some(a) = a {
        c.args(["netns", a.name()]);
    }
    c.args(["type", "veth", "peer", "name", b_if]);
    if let Some(b) = b {
        c.args(["netns", b.name()]);
    }
    c
}

fn addr_args<'a>(ifname: &'a str, cidr: &'a str) -> Vec<&'a str> {
    let mut args = vec!["addr", "add", cidr, "dev", ifname];
    if cidr.contains(':') {
        args.push("nodad");
    }
    args
}

fn mac_of(ip_link_show: &str) -> Option<String> {
    let mut words = ip_link_show.split_whitespace();
    words.find(|w| *w == "link/ether").and_then(|_| words.next()).map(str::to_string)
}

fn established_with_port(ss: &str, port: u16) -> Vec<(String, String)> {
    let suffix = format!(":{port}");
    ss.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Recv-Q Send-Q Local Peer
            let (local, peer) = (f.get(2)?, f.get(3)?);
            (local.ends_with(&suffix) || peer.ends_with(&suffix)).then(|| (local.to_string(), peer.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> Ns {
        Ns { name: name.to_string() }
    }

    #[test]
    fn unique_names_differ_and_carry_prefix_and_pid() {
        let (a, b) = (unique_name("fibt-x"), unique_name("fibt-x"));
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("fibt-x-{}-", std::process::id())), "{a}");
    }

    #[test]
    fn veth_between_namespaces_names_both() {
        let c = veth_command(Some(&ns("a")), "veth0", Some(&ns("b")), "veth1");
        assert_eq!(command_line(&c), "ip link add name veth0 netns a type veth peer name veth1 netns b");
    }

    #[test]
    fn veth_to_the_root_namespace_leaves_that_end_alone() {
        let c = veth_command(Some(&ns("a")), "eth0", None, "host-a");
        assert_eq!(command_line(&c), "ip link add name eth0 netns a type veth peer name host-a");
    }

    #[test]
    fn command_runs_through_ip_netns_exec() {
        assert_eq!(command_line(&ns("lab-1").command("bird")), "ip netns exec lab-1 bird");
        assert_eq!(ns("lab-1").path(), PathBuf::from("/run/netns/lab-1"));
    }

    #[test]
    fn ipv6_addresses_skip_dad() {
        assert_eq!(addr_args("veth0", "10.0.0.1/24"), ["addr", "add", "10.0.0.1/24", "dev", "veth0"]);
        assert_eq!(addr_args("veth0", "fd00::1/64"), ["addr", "add", "fd00::1/64", "dev", "veth0", "nodad"]);
    }

    #[test]
    fn mac_is_read_from_ip_link_show() {
        let line = "7: far0@if8: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 6a:1b:2c:3d:4e:5f brd ff:ff:ff:ff:ff:ff link-netns x";
        assert_eq!(mac_of(line).as_deref(), Some("6a:1b:2c:3d:4e:5f"));
        assert_eq!(mac_of("1: lo: <LOOPBACK> link/loopback 00:00:00:00:00:00"), None);
    }

    #[test]
    fn established_filters_by_either_port() {
        let ss = "0 0 10.0.0.1:179 10.0.0.2:40000\n0 0 10.0.0.1:22 10.0.0.9:5000\n0 0 10.0.0.1:41000 10.0.0.3:179\n";
        assert_eq!(
            established_with_port(ss, 179),
            [
                ("10.0.0.1:179".to_string(), "10.0.0.2:40000".to_string()),
                ("10.0.0.1:41000".to_string(), "10.0.0.3:179".to_string())
            ]
        );
    }
}

//! Network namespaces and veth pairs, driven through `ip` (iproute2).

use std::io;
use std::process::{Command, Output};

/// A network namespace created by a [`super::Lab`] (removed with it).
#[derive(Clone, Debug)]
pub struct Ns {
    name: String,
}

/// Runs a command and returns its stdout; an error names the command and
/// carries its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> io::Result<String> {
    let out: Output = cmd.output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )))
    }
}

pub(super) fn add(name: &str) -> io::Result<()> {
    run(Command::new("ip").args(["netns", "add", name])).map(|_| ())
}

pub(super) fn del(name: &str) {
    if let Err(e) = run(Command::new("ip").args(["netns", "del", name])) {
        eprintln!("cannot delete network namespace {name}: {e}");
    }
}

pub(super) fn veth(a: &Ns, a_if: &str, b: &Ns, b_if: &str) -> io::Result<()> {
    run(Command::new("ip")
        .args(["link", "add", "name", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns", &b.name]))
    .map(|_| ())
}

impl Ns {
    pub(super) fn new(name: String) -> Ns {
        Ns { name }
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program args` inside the namespace and returns its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> io::Result<String> {
        run(self.command(program).args(args))
    }

    /// Runs `ip -n NS args`.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Adds an address to an interface; IPv6 addresses skip duplicate
    /// address detection so they are usable at once.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> io::Result<()> {
        if cidr.contains(':') {
            self.ip(&["addr", "add", cidr, "dev", ifname, "nodad"]).map(|_| ())
        } else {
            self.ip(&["addr", "add", cidr, "dev", ifname]).map(|_| ())
        }
    }

    /// Adds a route (`ip route add DEST via GW`).
    pub fn route(&self, dest: &str, via: &str) -> io::Result<()> {
        self.ip(&["route", "add", dest, "via", via]).map(|_| ())
    }

    /// Sets a sysctl inside the namespace (e.g. `net.ipv4.ip_forward=1`).
    pub fn sysctl(&self, setting: &str) -> io::Result<()> {
        self.run("sysctl", &["-qw", setting]).map(|_| ())
    }

    /// TCP connections in state ESTABLISHED with local or remote port `port`
    /// (`ss -tnH state established`), as `local peer` address pairs.
    pub fn established_tcp(&self, port: u16) -> io::Result<Vec<(String, String)>> {
        let out = self.run("ss", &["-tnH", "state", "established"])?;
        let suffix = format!(":{port}");
        Ok(out
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // Recv-Q Send-Q Local Peer
                let (local, peer) = (f.get(2)?, f.get(3)?);
                (local.ends_with(&suffix) || peer.ends_with(&suffix)).then(|| (local.to_string(), peer.to_string()))
            })
            .collect())
    }

    /// Runs `f` on a new thread that has entered this namespace, so sockets
    /// it opens live there (a raw test client, for example).
    pub fn in_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = std::fs::File::open(&path)?;
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

impl super::Lab {
    /// One shared LAN 10.255.n.0/24: a bridge `br0` in the first namespace
    /// (role `roles[0]`, address 10.255.n.1/24 on the bridge) and one veth
    /// from each other namespace into it (`veth0`, 10.255.n.(i+1)/24 for
    /// `roles[i]`). Every member reaches every other directly, so next hops
    /// reflected or passed on unchanged resolve everywhere.
    pub fn lan(&self, n: u8, roles: &[&str]) -> io::Result<Vec<Ns>> {
        let mut all = Vec::with_capacity(roles.len());
        let hub = self.netns(roles.first().copied().unwrap_or("hub"))?;
        hub.ip(&["link", "add", "br0", "type", "bridge"])?;
        hub.add_addr("br0", &format!("10.255.{n}.1/24"))?;
        hub.ip(&["link", "set", "br0", "up"])?;
        all.push(hub.clone());
        for (i, role) in roles.iter().enumerate().skip(1) {
            let ns = self.netns(role)?;
            let port = format!("port{i}");
            self.veth(&hub, &port, &[], &ns, "veth0", &[&format!("10.255.{n}.{}/24", i + 1)])?;
            hub.ip(&["link", "set", &port, "master", "br0"])?;
            all.push(ns);
        }
        Ok(all)
    }
}

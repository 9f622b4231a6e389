//! Network namespaces, bridges, veth links and processes, through `ip` and
//! `/proc`: what `lab up` builds and `lab down` removes.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

/// Runs a command; its stdout, or an error with its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS…`.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// `ip -n NS ARGS…`.
pub fn ip_in(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// Drops (with `on`) every packet in, out of and through namespace `ns`, its
/// links left up: a silent failure (a hung forwarding plane). `on = false`
/// removes the rules again.
pub fn silence(ns: &str, on: bool) -> anyhow::Result<()> {
    let op = if on { "-I" } else { "-D" };
    for tool in ["iptables", "ip6tables"] {
        for chain in ["INPUT", "OUTPUT", "FORWARD"] {
            run(Command::new("ip").args(["netns", "exec", ns, tool, op, chain, "-j", "DROP"]))?;
        }
    }
    Ok(())
}

/// The network namespaces whose names start with `prefix`.
pub fn namespaces(prefix: &str) -> Vec<String> {
    let Ok(out) = ip(&["netns", "list"]) else { return Vec::new() };
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Creates a namespace with loopback up, forwarding on, reverse-path filtering
/// off (ECMP return paths differ) and routes through a link without carrier
/// ignored (a cut link stops carrying traffic at once, not at the hold timer).
pub fn add_namespace(ns: &str) -> anyhow::Result<()> {
    ip(&["netns", "add", ns])?;
    ip_in(ns, &["link", "set", "lo", "up"])?;
    let settings = &[
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
        "net.ipv4.conf.all.ignore_routes_with_linkdown=1",
        "net.ipv4.conf.default.ignore_routes_with_linkdown=1",
        "net.ipv4.fib_multipath_hash_policy=1",
        // IPv6 likewise; no duplicate address detection (addresses usable at
        // once) and addresses kept while a link is down (a cut link comes back).
        "net.ipv6.conf.all.forwarding=1",
        "net.ipv6.conf.all.ignore_routes_with_linkdown=1",
        "net.ipv6.conf.default.ignore_routes_with_linkdown=1",
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
        "net.ipv6.conf.all.keep_addr_on_down=1",
        "net.ipv6.conf.default.keep_addr_on_down=1",
        "net.ipv6.fib_multipath_hash_policy=1",
    ];
    sysctls(ns, settings)
}

/// Sets kernel settings (`sysctl -w`) inside a namespace.
pub fn sysctls(ns: &str, settings: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw"]).args(settings))?;
    Ok(())
}

/// Every process running in a namespace.
pub fn pids_in(ns: &str) -> Vec<u32> {
    ip(&["netns", "pids", ns])
        .map(|o| o.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether `pid` runs and its command line contains `needle`.
pub fn alive(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
        .unwrap_or(false)
}

/// Sends `signal` to `pid` (`kill -SIG PID`).
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// Stops `pid` (TERM, then KILL after 3 s) and waits until it is gone.
pub fn stop(pid: u32) {
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
            .unwrap_or(true)
    };
    signal(pid, "TERM");
    for i in 0..60 {
        if gone(pid) {
            return;
        }
        if i == 30 {
            signal(pid, "KILL");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Starts `argv` inside `ns`, detached (its own process group, so an
/// interrupted `lab up` does not take it down), output to `log`. Returns its pid.
pub fn spawn(ns: &str, argv: &[String], log: &Path) -> anyhow::Result<u32> {
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(argv);
    cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    let child = cmd.spawn().with_context(|| format!("cannot start {argv:?} in {ns}"))?;
    // `ip netns exec` execs the program: the pid is the program's. The child
    // is never waited for; `lab down` stops it and init reaps it.
    Ok(child.id())
}

/// A veth pair: `a_if` in `a`, `b_if` in `b`, both up.
pub fn veth(a: &str, a_if: &str, b: &str, b_if: &str) -> anyhow::Result<()> {
    ip(&["link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b])?;
    ip_in(a, &["link", "set", a_if, "up"])?;
    ip_in(b, &["link", "set", b_if, "up"])?;
    Ok(())
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

//! FRR: zebra + bgpd (+ bfdd) and `vtysh` queries. Its configuration is the test
//! bed's ([`testgate::testbed::frr`], re-exported here): timers 3/9, connect retry 2 s,
//! graceful restart, neighbors activated for IPv4 and IPv6 by default.

use std::io;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

pub use testgate::testbed::frr::{FrrBfdTimers, FrrBfdd, FrrConfig, FrrNeighbor};
pub use testgate::testbed::Af;

use super::{Lab, Ns, ProcId};

/// Where Debian installs FRR's daemons.
pub const FRR_DIR: &str = "/usr/lib/frr";

/// A running FRR (zebra and bgpd).
pub struct Frr {
    /// zebra's process.
    pub zebra: ProcId,
    /// bgpd's process.
    pub bgpd: ProcId,
    dir: PathBuf,
}

impl Frr {
    /// Writes the configuration and starts zebra (it drops to user `frr`)
    /// and bgpd in `ns`, with sockets in a directory of their own.
    pub fn start(lab: &Lab, ns: &Ns, tag: &str, cfg: &FrrConfig) -> io::Result<Frr> {
        Frr::start_conf(lab, ns, tag, &cfg.render())
    }

    /// Like [`Frr::start`], with a `bgpd.conf` the caller rendered (e.g.
    /// [`FrrConfig::render`] with lines edited in).
    pub fn start_conf(lab: &Lab, ns: &Ns, tag: &str, text: &str) -> io::Result<Frr> {
        Frr::start_daemons(lab, ns, tag, text, None)
    }

    /// Like [`Frr::start_conf`], with FRR's BFD daemon (`bfdd`) on `bfdd`,
    /// its configuration (`bfd` / `peer …` blocks); bgpd's `neighbor X bfd`
    /// then follows the sessions.
    pub fn start_with_bfdd(lab: &Lab, ns: &Ns, tag: &str, text: &str, bfdd: &str) -> io::Result<Frr> {
        Frr::start_daemons(lab, ns, tag, text, Some(bfdd))
    }

    fn start_daemons(lab: &Lab, ns: &Ns, tag: &str, text: &str, bfdd: Option<&str>) -> io::Result<Frr> {
        let dir = lab.dir().join(format!("{tag}-frr"));
        std::fs::create_dir_all(&dir)?;
        let zconf = dir.join("zebra.conf");
        std::fs::write(&zconf, "")?;
        let bconf = dir.join("bgpd.conf");
        std::fs::write(&bconf, text)?;
        // zebra has no option to keep root; it runs as frr and owns its directory.
        super::netns::run(Command::new("chown").arg("-R").arg("frr:frr").arg(&dir))?;
        let zapi = dir.join("zserv.api");
        let mut z = ns.command(&format!("{FRR_DIR}/zebra"));
        z.arg("-f").arg(&zconf).arg("-i").arg(dir.join("zebra.pid")).arg("-z").arg(&zapi);
        z.arg("--vty_socket").arg(&dir).args(["-P", "0"]);
        let zebra = lab.spawn(&format!("{tag}-zebra"), z)?;
        super::wait_for("zebra's API socket", Duration::from_secs(10), || {
            if zapi.exists() {
                Ok(())
            } else {
                Err("not yet".into())
            }
        })
        .map_err(io::Error::other)?;
        if let Some(conf) = bfdd {
            let fconf = dir.join("bfdd.conf");
            std::fs::write(&fconf, conf)?;
            super::netns::run(Command::new("chown").arg("frr:frr").arg(&fconf))?;
            let mut f = ns.command(&format!("{FRR_DIR}/bfdd"));
            f.arg("-f").arg(&fconf).arg("-i").arg(dir.join("bfdd.pid")).arg("-z").arg(&zapi);
            f.arg("--vty_socket").arg(&dir).args(["-P", "0"]);
            lab.spawn(&format!("{tag}-bfdd"), f)?;
        }
        let mut b = ns.command(&format!("{FRR_DIR}/bgpd"));
        b.arg("-S").arg("-f").arg(&bconf).arg("-i").arg(dir.join("bgpd.pid")).arg("-z").arg(&zapi);
        b.arg("--vty_socket").arg(&dir).args(["-P", "0"]);
        let bgpd = lab.spawn(&format!("{tag}-frr-bgpd"), b)?;
        let frr = Frr { zebra, bgpd, dir };
        super::wait_for("FRR bgpd's vty", Duration::from_secs(15), || frr.vtysh(&["show bgp summary"]))
            .map_err(io::Error::other)?;
        Ok(frr)
    }

    /// Runs `vtysh` with one `-c` per command and returns its output.
    pub fn vtysh(&self, cmds: &[&str]) -> Result<String, String> {
        let mut c = Command::new("vtysh");
        c.arg("--vty_socket").arg(&self.dir);
        for x in cmds {
            c.arg("-c").arg(x);
        }
        let out = c.output().map_err(|e| format!("vtysh: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("vtysh {cmds:?}: {text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// bfdd's view of its BFD session with `addr` (from `show bfd peers json`,
    /// which lists single-hop and multihop sessions alike).
    pub fn bfd_peer(&self, addr: &str) -> Result<Value, String> {
        let out = self.vtysh(&["show bfd peers json"])?;
        let v: Value = serde_json::from_str(&out).map_err(|e| format!("vtysh output not JSON ({e}): {out}"))?;
        let want: std::net::IpAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        v.as_array()
            .into_iter()
            .flatten()
            .find(|p| p["peer"].as_str().and_then(|a| a.parse().ok()) == Some(want))
            .cloned()
            .ok_or_else(|| format!("bfdd has no session with {addr}: {out}"))
    }

    /// `show bgp neighbors ADDR json`, the object for that neighbor.
    pub fn neighbor(&self, addr: &str) -> Result<Value, String> {
        let out = self.vtysh(&[&format!("show bgp neighbors {addr} json")])?;
        let v: Value = serde_json::from_str(&out).map_err(|e| format!("vtysh output not JSON ({e}): {out}"))?;
        v.get(addr).cloned().ok_or_else(|| format!("no neighbor {addr} in {v}"))
    }

    /// `Ok` with the neighbor JSON once it is Established.
    pub fn established(&self, addr: &str) -> Result<Value, String> {
        let n = self.neighbor(addr)?;
        if n["bgpState"] == "Established" {
            Ok(n)
        } else {
            Err(format!("FRR neighbor {addr} is {} (last reset: {})", n["bgpState"], n["lastResetDueTo"]))
        }
    }

    /// Whether FRR's table holds `prefix` (`show bgp ipv4|ipv6 unicast PREFIX json`).
    pub fn has_route(&self, prefix: &str) -> Result<Value, String> {
        let af = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let out = self.vtysh(&[&format!("show bgp {af} unicast {prefix} json")])?;
        let v: Value = serde_json::from_str(&out).map_err(|e| format!("not JSON ({e}): {out}"))?;
        match v.get("paths").and_then(Value::as_array) {
            Some(p) if !p.is_empty() => Ok(v),
            _ => Err(format!("FRR has no {prefix}: {v}")),
        }
    }

    /// Kills FRR's bgpd with SIGKILL (a crash: no NOTIFICATION is sent);
    /// zebra keeps running. Waits until it is gone.
    pub fn kill_bgpd(&self, lab: &Lab) -> io::Result<()> {
        lab.signal(self.bgpd, "KILL")?;
        super::wait_for("FRR bgpd to die after SIGKILL", Duration::from_secs(5), || {
            if lab.running(self.bgpd) {
                Err("still running".into())
            } else {
                Ok(())
            }
        })
        .map_err(io::Error::other)?;
        lab.stop(self.bgpd);
        Ok(())
    }

    /// Starts FRR's bgpd again (after [`Frr::kill_bgpd`]) in `ns` with a new
    /// `bgpd.conf` text, the same zebra and sockets; waits for its vty.
    pub fn restart_bgpd_conf(&mut self, lab: &Lab, ns: &Ns, tag: &str, text: &str) -> io::Result<()> {
        let bconf = self.dir.join("bgpd.conf");
        std::fs::write(&bconf, text)?;
        let mut b = ns.command(&format!("{FRR_DIR}/bgpd"));
        b.arg("-S")
            .arg("-f")
            .arg(&bconf)
            .arg("-i")
            .arg(self.dir.join("bgpd.pid"))
            .arg("-z")
            .arg(self.dir.join("zserv.api"));
        b.arg("--vty_socket").arg(&self.dir).args(["-P", "0"]);
        self.bgpd = lab.spawn(&format!("{tag}-frr-bgpd"), b)?;
        super::wait_for("FRR bgpd's vty", Duration::from_secs(15), || self.vtysh(&["show bgp summary"]))
            .map_err(io::Error::other)?;
        Ok(())
    }
}

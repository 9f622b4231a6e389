//! GoBGP: configuration, `gobgpd`, and `gobgp` CLI queries.

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use serde_json::Value;

use super::{Lab, Ns, ProcId};

/// One GoBGP neighbor.
#[derive(Clone, Debug, Default)]
pub struct Neighbor {
    /// `neighbor-address`.
    pub addr: String,
    /// `peer-as`.
    pub peer_as: u32,
    /// `transport.config.local-address`.
    pub local_address: String,
    /// `auth-password` (TCP MD5).
    pub password: Option<String>,
}

/// A GoBGP configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// `global.config.as`.
    pub asn: u32,
    /// `router-id`.
    pub router_id: String,
    /// Addresses to listen on (GoBGP binds only IPv4 by default).
    pub listen: Vec<String>,
    /// Neighbors (IPv4 and IPv6 unicast, graceful restart).
    pub neighbors: Vec<Neighbor>,
}

impl Config {
    /// Renders `gobgpd.toml` with hold 9 s, keepalive 3 s, connect retry 2 s.
    pub fn render(&self) -> String {
        let mut c = String::new();
        let list: Vec<String> = self.listen.iter().map(|a| format!("{a:?}")).collect();
        let _ = writeln!(
            c,
            "[global.config]\n  as = {}\n  router-id = \"{}\"\n  local-address-list = [{}]\n",
            self.asn,
            self.router_id,
            list.join(", ")
        );
        for n in &self.neighbors {
            let _ = writeln!(
                c,
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}",
                n.addr, n.peer_as
            );
            if let Some(p) = &n.password {
                let _ = writeln!(c, "    auth-password = \"{p}\"");
            }
            let _ = writeln!(c, "  [neighbors.transport.config]\n    local-address = \"{}\"", n.local_address);
            c.push_str(
                "  [neighbors.timers.config]\n    connect-retry = 2\n    hold-time = 9\n    keepalive-interval = 3\n",
            );
            c.push_str("  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 120\n");
            for af in ["ipv4-unicast", "ipv6-unicast"] {
                let _ = writeln!(
                    c,
                    "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{af}\"\n    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true"
                );
            }
            c.push('\n');
        }
        c
    }
}

impl Config {
    /// [`Config::render`] with ADD-PATH receive (RFC 7911) on every
    /// neighbor's IPv4 and IPv6 unicast (`add-paths.config.receive`).
    pub fn render_add_paths_receive(&self) -> String {
        self.render().replace(
            "[neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true",
            "[neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n    [neighbors.afi-safis.add-paths.config]\n      receive = true",
        )
    }
}

/// A running gobgpd.
pub struct Gobgp {
    /// Its process in the lab.
    pub proc: ProcId,
    ns: Ns,
}

impl Gobgp {
    /// Writes the configuration and starts gobgpd in `ns`, in a UTS
    /// namespace of its own with host name `gobgp-TAG` (GoBGP advertises
    /// its host name in the FQDN capability).
    pub fn start(lab: &Lab, ns: &Ns, tag: &str, cfg: &Config) -> io::Result<Gobgp> {
        Gobgp::start_conf(lab, ns, tag, &cfg.render())
    }

    /// Like [`Gobgp::start`], with a `gobgpd.toml` the caller rendered
    /// (e.g. [`Config::render_add_paths_receive`]).
    pub fn start_conf(lab: &Lab, ns: &Ns, tag: &str, toml: &str) -> io::Result<Gobgp> {
        let conf = lab.dir().join(format!("{tag}-gobgpd.toml"));
        std::fs::write(&conf, toml)?;
        let mut cmd = ns.command("unshare");
        cmd.args(["--uts", "sh", "-c"]).arg(format!(
            "hostname gobgp-{tag} && exec gobgpd -f '{}' -p --api-hosts 127.0.0.1:50051 --pprof-disable -l info",
            conf.display()
        ));
        let proc = lab.spawn(&format!("{tag}-gobgpd"), cmd)?;
        let g = Gobgp { proc, ns: ns.clone() };
        super::wait_for("gobgpd's API", Duration::from_secs(15), || g.cli(&["global"])).map_err(io::Error::other)?;
        Ok(g)
    }

    /// Runs `gobgp -u 127.0.0.1 -p 50051 args…` in the namespace.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["-u", "127.0.0.1", "-p", "50051"];
        full.extend_from_slice(args);
        self.ns.run("gobgp", &full).map_err(|e| e.to_string())
    }

    /// Adds a route to GoBGP's global RIB (`gobgp global rib add`).
    pub fn add_route(&self, prefix: &str, next_hop: &str) -> Result<(), String> {
        let af = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        self.cli(&["global", "rib", "add", "-a", af, prefix, "nexthop", next_hop]).map(|_| ())
    }

    /// `gobgp neighbor ADDR` (text: state and capabilities).
    pub fn neighbor(&self, addr: &str) -> Result<String, String> {
        self.cli(&["neighbor", addr])
    }

    /// `Ok` with `gobgp neighbor ADDR` once the session is established.
    pub fn established(&self, addr: &str) -> Result<String, String> {
        let out = self.neighbor(addr)?;
        if out.to_lowercase().contains("bgp state = established") {
            Ok(out)
        } else {
            Err(format!(
                "GoBGP neighbor {addr} not established: {}",
                out.lines().take(3).collect::<Vec<_>>().join(" | ")
            ))
        }
    }

    /// Whether `prefix` is in the Adj-RIB-In from `neighbor`.
    pub fn has_route(&self, neighbor: &str, prefix: &str) -> Result<String, String> {
        let af = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let out = self.cli(&["neighbor", neighbor, "adj-in", "-a", af])?;
        if out.contains(prefix) {
            Ok(out)
        } else {
            Err(format!("GoBGP has no {prefix} from {neighbor}: {}", out.trim()))
        }
    }

    /// `gobgp global rib -a AF -j` as JSON: prefix → array of paths.
    pub fn global_rib(&self, v6: bool) -> Result<Value, String> {
        let out = self.cli(&["global", "rib", "-a", if v6 { "ipv6" } else { "ipv4" }, "-j"])?;
        serde_json::from_str(&out).map_err(|e| format!("gobgp global rib -j: not JSON ({e}): {out}"))
    }

    /// The paths GoBGP's global RIB holds for `prefix` (`gobgp global rib -j`).
    pub fn paths(&self, prefix: &str) -> Result<Vec<Value>, String> {
        let rib = self.global_rib(prefix.contains(':'))?;
        Ok(rib.get(prefix).and_then(Value::as_array).cloned().unwrap_or_default())
    }
}

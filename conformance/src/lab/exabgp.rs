//! ExaBGP 4: configuration with static routes, and what it received, read
//! from the JSON its API process writes to a file.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;

use serde_json::Value;

use super::{Lab, Ns, ProcId};

/// An ExaBGP configuration with a single neighbor.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// `router-id`.
    pub router_id: String,
    /// ExaBGP's own address on the session (`local-address`).
    pub local_address: String,
    /// `local-as`.
    pub local_as: u32,
    /// The neighbor's (bgpd's) address.
    pub neighbor: String,
    /// `peer-as`.
    pub peer_as: u32,
    /// Static routes as `(prefix, next hop)`.
    pub routes: Vec<(String, String)>,
}

impl Config {
    /// Renders `exabgp.conf`; `api_run` is the program receiving the
    /// JSON of OPENs and UPDATEs.
    pub fn render(&self, api_run: &str) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "process record {{\n  run {api_run};\n  encoder json;\n}}\n");
        let _ = writeln!(c, "neighbor {} {{", self.neighbor);
        let _ = writeln!(c, "  router-id {};\n  local-address {};", self.router_id, self.local_address);
        let _ = writeln!(c, "  local-as {};\n  peer-as {};\n  hold-time 9;", self.local_as, self.peer_as);
        c.push_str("  family {\n    ipv4 unicast;\n    ipv6 unicast;\n  }\n");
        c.push_str("  capability {\n    asn4 enable;\n    route-refresh enable;\n    graceful-restart 120;\n  }\n");
        c.push_str("  api {\n    processes [ record ];\n    neighbor-changes;\n    receive {\n      parsed;\n      open;\n      update;\n      notification;\n    }\n  }\n");
        c.push_str("  static {\n");
        for (p, nh) in &self.routes {
            let _ = writeln!(c, "    route {p} next-hop {nh};");
        }
        c.push_str("  }\n}\n");
        c
    }
}

/// A running ExaBGP.
pub struct Exabgp {
    /// Its process in the lab.
    pub proc: ProcId,
    received: PathBuf,
}

impl Exabgp {
    /// Writes the configuration and the recording script and starts
    /// `exabgp CONF` in `ns` (as root, logging to stdout, no CLI pipes).
    pub fn start(lab: &Lab, ns: &Ns, tag: &str, cfg: &Config) -> io::Result<Exabgp> {
        use std::os::unix::fs::PermissionsExt;
        let received = lab.dir().join(format!("{tag}-exabgp-received.json"));
        std::fs::write(&received, "")?;
        // ExaBGP hands its API program a non-blocking pipe, on which `cat`
        // fails at once; this recorder makes it blocking again.
        let script = lab.dir().join(format!("{tag}-exabgp-record.py"));
        std::fs::write(
            &script,
            "#!/usr/bin/python3\nimport os, sys\nos.set_blocking(0, True)\nwith open(sys.argv[1], 'a') as out:\n    for line in sys.stdin:\n        out.write(line)\n        out.flush()\n",
        )?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        let conf = lab.dir().join(format!("{tag}-exabgp.conf"));
        std::fs::write(&conf, cfg.render(&format!("{} {}", script.display(), received.display())))?;
        let mut cmd = ns.command("env");
        cmd.args([
            "exabgp.daemon.user=root",
            "exabgp.daemon.drop=false",
            "exabgp.log.destination=stdout",
            "exabgp.api.cli=false",
            // listen too (on its session address), not only connect
            &format!("exabgp.tcp.bind={}", cfg.local_address),
            "exabgp",
        ])
        .arg(&conf);
        let proc = lab.spawn(&format!("{tag}-exabgp"), cmd)?;
        Ok(Exabgp { proc, received })
    }

    /// The JSON messages ExaBGP's API reported so far.
    pub fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.received)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The last OPEN ExaBGP received (`neighbor.open.received`).
    pub fn received_open(&self) -> Result<Value, String> {
        self.messages()
            .iter()
            .rev()
            .find_map(|m| {
                (m["type"] == "open" && m["neighbor"]["direction"] == "receive")
                    .then(|| m["neighbor"]["open"].clone())
                    .filter(|o| !o.is_null())
            })
            .ok_or_else(|| "ExaBGP has not received an OPEN yet".to_string())
    }

    /// Whether ExaBGP's session is up (its last state message says so).
    pub fn established(&self) -> Result<(), String> {
        let last = self.messages().iter().rev().find(|m| m["type"] == "state").map(|m| m["neighbor"]["state"].clone());
        match last {
            Some(s) if s == "up" => Ok(()),
            other => Err(format!("ExaBGP neighbor state {other:?}")),
        }
    }

    /// Whether ExaBGP received an announcement of `prefix`.
    pub fn has_route(&self, prefix: &str) -> Result<(), String> {
        let found = self.messages().iter().any(|m| {
            m["type"] == "update"
                && m["neighbor"]["message"]["update"]["announce"]
                    .as_object()
                    .is_some_and(|fams| fams.values().any(|nhs| nhs.to_string().contains(&format!("\"{prefix}\""))))
        });
        if found {
            Ok(())
        } else {
            Err(format!("ExaBGP received no announcement of {prefix}"))
        }
    }
}

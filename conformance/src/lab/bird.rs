//! BIRD 2: the daemon and `birdc` queries. Its configuration is the test bed's
//! ([`testgate::testbed::bird`], re-exported here): short timers, graceful restart, IPv4
//! and IPv6 channels by default.

use std::io;
use std::path::PathBuf;
use std::process::Command;

pub use testgate::testbed::bird::{BirdBfd, BirdBfdTimers, BirdChannel, BirdConfig, BirdKernel, BirdSession};
pub use testgate::testbed::Af;

use super::{Lab, Ns, ProcId};

/// A running BIRD.
pub struct Bird {
    /// Its process in the lab.
    pub proc: ProcId,
    sock: PathBuf,
    ns: Ns,
    conf: PathBuf,
    tag: String,
}

impl Bird {
    /// Writes the configuration and starts `bird -f` in `ns`.
    pub fn start(lab: &Lab, ns: &Ns, tag: &str, cfg: &BirdConfig) -> io::Result<Bird> {
        Bird::start_conf(lab, ns, tag, &cfg.render())
    }

    /// Like [`Bird::start`], with a `bird.conf` the caller rendered (e.g.
    /// [`BirdConfig::render`] with an export filter edited in).
    pub fn start_conf(lab: &Lab, ns: &Ns, tag: &str, text: &str) -> io::Result<Bird> {
        let conf = lab.dir().join(format!("{tag}-bird.conf"));
        std::fs::write(&conf, text)?;
        let sock = lab.dir().join(format!("{tag}-bird.ctl"));
        let mut b = Bird { proc: super::ProcId(usize::MAX), sock, ns: ns.clone(), conf, tag: tag.to_string() };
        b.proc = b.spawn(lab)?;
        Ok(b)
    }

    fn spawn(&self, lab: &Lab) -> io::Result<ProcId> {
        let pid = self.sock.with_extension("pid");
        let mut cmd = self.ns.command("bird");
        cmd.arg("-f").arg("-c").arg(&self.conf).arg("-s").arg(&self.sock).arg("-P").arg(&pid);
        let id = lab.spawn(&format!("{}-bird", self.tag), cmd)?;
        super::wait_for("BIRD's control socket", std::time::Duration::from_secs(10), || self.cmd(&["show", "status"]))
            .map_err(io::Error::other)?;
        Ok(id)
    }

    /// Stops BIRD and starts it again with the same configuration.
    pub fn restart(&mut self, lab: &Lab) -> io::Result<()> {
        lab.stop(self.proc);
        self.proc = self.spawn(lab)?;
        Ok(())
    }

    /// Runs `birdc -s SOCK args…` and returns its output.
    pub fn cmd(&self, args: &[&str]) -> Result<String, String> {
        let out =
            Command::new("birdc").arg("-s").arg(&self.sock).args(args).output().map_err(|e| format!("birdc: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("birdc {args:?}: {}{}", text, String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// `show protocols all NAME`.
    pub fn protocol(&self, name: &str) -> Result<String, String> {
        self.cmd(&["show", "protocols", "all", name])
    }

    /// The protocol's `BGP state:` line value (`Established`, `Connect`, …).
    pub fn bgp_state(&self, name: &str) -> Result<String, String> {
        let out = self.protocol(name)?;
        out.lines()
            .find_map(|l| l.trim().strip_prefix("BGP state:").map(|s| s.trim().to_string()))
            .ok_or_else(|| format!("no BGP state in: {out}"))
    }

    /// `Ok` once the protocol is Established.
    pub fn established(&self, name: &str) -> Result<String, String> {
        let out = self.protocol(name)?;
        if out.contains("Established") {
            Ok(out)
        } else {
            Err(format!("BIRD protocol {name} not Established: {}", out.trim()))
        }
    }

    /// The lines of the `Neighbor capabilities` block of `show protocols all`.
    pub fn neighbor_capabilities(&self, name: &str) -> Result<String, String> {
        let out = self.protocol(name)?;
        let mut caps = String::new();
        let mut inside = false;
        let mut indent = 0;
        for l in out.lines() {
            let ind = l.len() - l.trim_start().len();
            if l.trim() == "Neighbor capabilities" {
                inside = true;
                indent = ind;
                continue;
            }
            if inside {
                if ind <= indent {
                    break;
                }
                caps.push_str(l.trim());
                caps.push('\n');
            }
        }
        if caps.is_empty() {
            Err(format!("no Neighbor capabilities in: {out}"))
        } else {
            Ok(caps)
        }
    }

    /// Whether BIRD has `prefix` from protocol `proto` in its table.
    pub fn has_route(&self, proto: &str, prefix: &str) -> Result<String, String> {
        let out = self.cmd(&["show", "route", "protocol", proto])?;
        if out.lines().any(|l| l.split_whitespace().next() == Some(prefix)) {
            Ok(out)
        } else {
            Err(format!("BIRD has no {prefix} from {proto}: {}", out.trim()))
        }
    }
}

/// Whether two readings of BIRD's `since` column (`HH:MM:SS.mmm`, when a
/// protocol last changed state) name the same moment. BIRD prints it from a
/// monotonic timestamp converted to wall-clock time at each query, so two
/// queries of one unchanged session may differ by a millisecond or so; a
/// session reset moves it by the reconnect time (a second or more).
pub fn same_since(a: &str, b: &str) -> bool {
    match (since_ms(a), since_ms(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= SINCE_JITTER_MS,
        _ => a == b,
    }
}

/// How far BIRD's `since` may move between two queries of one session.
const SINCE_JITTER_MS: i64 = 50;

/// Milliseconds since midnight of `HH:MM:SS[.mmm]`.
fn since_ms(since: &str) -> Option<i64> {
    let (hms, ms) = since.split_once('.').unwrap_or((since, "0"));
    let mut t = 0i64;
    for part in hms.split(':') {
        t = t * 60 + part.parse::<i64>().ok()?;
    }
    Some(t * 1000 + ms.parse::<i64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_tolerates_query_jitter_but_not_a_reconnect() {
        assert_eq!(since_ms("13:12:38.282"), Some(((13 * 60 + 12) * 60 + 38) * 1000 + 282));
        assert_eq!(since_ms("13:12:38"), Some(((13 * 60 + 12) * 60 + 38) * 1000));
        assert_eq!(since_ms("garbage"), None);
        assert!(same_since("13:12:38.282", "13:12:38.281"), "a millisecond of jitter: the same session");
        assert!(!same_since("13:12:39.700", "13:12:38.281"), "a reconnect");
        assert!(!same_since("x", "y") && same_since("x", "x"), "unparsable: compared as text");
    }
}

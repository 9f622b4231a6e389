//! The kernel monitor: `ip -n NS monitor route` in BIRD's namespace notes when each route
//! BIRD learned from bgpd appears in its kernel table.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use ipnet::Ipv4Net;

use super::receiver::Shared;
use crate::lab::Ns;

/// `ip -n NS monitor route`: notes when each route first appears; killed on `Drop`.
pub(super) struct KernelMonitor {
    child: Child,
    reader: Option<JoinHandle<()>>,
}

impl KernelMonitor {
    pub(super) fn start(ns: &Ns, shared: Arc<Shared>) -> Result<KernelMonitor, String> {
        let mut child = Command::new("ip")
            .args(["-n", ns.name(), "monitor", "route"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("ip monitor route: {e}"))?;
        let out = child.stdout.take().ok_or("ip monitor route: no stdout")?;
        let reader = std::thread::Builder::new()
            .name("latency-kernel".into())
            .spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let now = Instant::now();
                    let first = line.split_whitespace().next().unwrap_or_default();
                    if first == "Deleted" {
                        if let Some(p) = line.split_whitespace().nth(1).and_then(prefix) {
                            shared.kernel.lock().unwrap_or_else(|e| e.into_inner()).remove(&p);
                        }
                        continue;
                    }
                    if let Some(p) = prefix(first) {
                        shared.kernel.lock().unwrap_or_else(|e| e.into_inner()).entry(p).or_insert(now);
                        shared.notify();
                    }
                }
            })
            .map_err(|e| format!("kernel monitor thread: {e}"))?;
        Ok(KernelMonitor { child, reader: Some(reader) })
    }
}

/// A destination as `ip monitor` prints it (`10.96.0.16` is a /32).
fn prefix(s: &str) -> Option<Ipv4Net> {
    s.parse::<Ipv4Net>().ok().or_else(|| s.parse::<Ipv4Addr>().ok().map(Ipv4Net::from))
}

impl Drop for KernelMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

//! Test support: a network namespace with the FIB's two links (`testgate::testbed`), and
//! readers of `ip -j route show`.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::Value;
use testgate::testbed::{fib_links, Netns};

/// A network namespace of its own (`testgate::testbed`), removed with everything in it
/// on drop; it dereferences to the namespace, whose `ip` returns errors where this one
/// panics.
pub struct TestNs {
    ns: Netns,
}

impl std::ops::Deref for TestNs {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}

impl TestNs {
    /// Creates `fibt-<tag>-<pid>-<n>` with loopback up and two veth pairs:
    /// veth0 (192.0.2.1/24, 2001:db8:1::1/64) ↔ veth1, and
    /// veth2 (198.51.100.1/24, 2001:db8:2::1/64) ↔ veth3, all up.
    pub fn new(tag: &str) -> TestNs {
        let ns = Netns::unique(&format!("fibt-{tag}")).unwrap_or_else(|e| panic!("{e}"));
        fib_links(&ns).unwrap_or_else(|e| panic!("{e}"));
        TestNs { ns }
    }

    /// `ip -n NAME ARGS…`; panics naming the command and ip's stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ip -n NAME ARGS…`; the error names the command and carries ip's stderr.
    pub fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        self.ns.ip(args).map_err(String::from)
    }

    /// `ip -j [-6] route show table N`, IPv4 and IPv6 together.
    pub fn routes(&self, table: u32) -> Vec<Value> {
        let t = table.to_string();
        let mut out = Vec::new();
        for fam in ["-4", "-6"] {
            let text = match self.try_ip(&["-j", fam, "route", "show", "table", &t]) {
                Ok(text) => text,
                // The kernel creates a family's table with its first route.
                Err(e) if e.contains("table does not exist") => continue,
                Err(e) => panic!("ip route show table {t} in {}: {e}", self.name()),
            };
            if let Ok(Value::Array(v)) = serde_json::from_str::<Value>(&text) {
                out.extend(v);
            }
        }
        out
    }

    /// The route for `dst` in `table`, if present.
    pub fn route(&self, table: u32, dst: &str) -> Option<Value> {
        self.routes(table).into_iter().find(|r| r["dst"].as_str() == Some(dst))
    }

    /// Polls `route(table, dst)` until `pred` holds, for at most ten seconds.
    pub async fn wait_route<F>(&self, table: u32, dst: &str, what: &str, pred: F) -> Option<Value>
    where
        F: Fn(Option<&Value>) -> bool,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.route(table, dst);
            if pred(r.as_ref()) {
                return r;
            }
            if Instant::now() > deadline {
                panic!("{dst} in table {table}: {what} did not happen; last seen {r:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Gateways of a route from `ip -j`: the single `gateway` or each of `nexthops`. A gateway
/// of the other family (`RTA_VIA`) shows as `"via": {"family": "inet6", "host": …}`.
pub fn gateways(route: &Value) -> Vec<(String, String, u64)> {
    let gw = |h: &Value| h["gateway"].as_str().or(h["via"]["host"].as_str()).unwrap_or("").to_owned();
    if let Some(hops) = route["nexthops"].as_array() {
        hops.iter()
            .map(|h| (gw(h), h["dev"].as_str().unwrap_or("").to_owned(), h["weight"].as_u64().unwrap_or(1)))
            .collect()
    } else {
        vec![(gw(route), route["dev"].as_str().unwrap_or("").to_owned(), 1)]
    }
}

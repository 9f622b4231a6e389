//! etcd (Debian `etcd-server`) inside a lab namespace, on that namespace's own
//! loopback (127.0.0.1:2379), started by the test bed (`testgate::testbed::Etcd`)
//! and written through its v3 JSON gateway so no client library is needed:
//! `POST /v3/kv/put` with base64 key and value.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use testgate::testbed::EtcdConfig;

use super::Ns;

/// The client URL, as seen from inside the namespace (`bgpd --datastore etcd:URL`):
/// that of [`EtcdConfig::in_ns`].
pub const URL: &str = "http://127.0.0.1:2379";

/// The key prefix bgpd reads by default.
pub const PREFIX: &str = "/calico/bgpd/";

/// A running etcd in a namespace; stopped, reaped and its data removed on drop.
pub struct Etcd {
    etcd: testgate::testbed::Etcd,
    ns: Ns,
}

impl Etcd {
    /// Starts etcd named `tag` in `ns` and waits until it has a leader (it takes puts).
    pub fn start(ns: &Ns, tag: &str) -> io::Result<Etcd> {
        let etcd = testgate::testbed::Etcd::start(EtcdConfig::in_ns(tag, ns))?;
        debug_assert_eq!(etcd.url(), URL);
        Ok(Etcd { etcd, ns: ns.clone() })
    }

    /// Puts `value` at `PREFIX` + `key` (e.g. `bgppeers/tor`).
    pub fn put(&self, key: &str, value: &str) -> Result<(), String> {
        self.call("put", &format!("{{\"key\":\"{}\",\"value\":\"{}\"}}", b64(&format!("{PREFIX}{key}")), b64(value)))
    }

    /// Deletes `PREFIX` + `key`.
    pub fn delete(&self, key: &str) -> Result<(), String> {
        self.call("deleterange", &format!("{{\"key\":\"{}\"}}", b64(&format!("{PREFIX}{key}"))))
    }

    /// One POST to `/v3/kv/OP` from inside the namespace; `Err` unless 200.
    fn call(&self, op: &str, body: &str) -> Result<(), String> {
        let req = format!(
            "POST /v3/kv/{op} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let resp = self
            .ns
            .in_ns(|| -> io::Result<String> {
                let mut s =
                    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], 2379)), Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(req.as_bytes())?;
                let mut out = Vec::new();
                s.take(1 << 20).read_to_end(&mut out)?;
                Ok(String::from_utf8_lossy(&out).into_owned())
            })
            .map_err(|e| format!("entering {}: {e}", self.ns.name()))?
            .map_err(|e| format!("etcd {op}: {e}"))?;
        if resp.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!("etcd {op}: {}", resp.lines().next().unwrap_or("no answer")))
        }
    }
}

impl Drop for Etcd {
    /// As the lab does for its daemons: a failing test shows the end of etcd's log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.etcd.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "----- last lines of etcd in {} -----\n{}",
                self.ns.name(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// Standard base64 (RFC 4648 §4), what etcd's JSON gateway wants for keys and values.
pub fn b64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::b64;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        // RFC 4648 §10 test vectors.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(i), o, "{i:?}");
        }
    }
}

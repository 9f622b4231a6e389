//! A real etcd for the tests (Debian's `etcd-server`, 3.4 on Debian 12), started
//! per test on free loopback ports with a temporary data directory and killed on
//! drop; shared by the test files of this crate.

use std::net::TcpListener;
use std::process::Child;
use std::time::Duration;

use bgpd_etcd::{Client, ConnectOptions};

/// How long a test waits for etcd or for a message before it fails (a safety
/// net against a hang, not a speed requirement).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A loopback port nobody listens on (bound, then closed).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a free loopback port")
}

/// A real etcd; killed and its data directory removed on drop.
pub struct Etcd {
    pub child: Child,
    dir: tempfile::TempDir,
    /// The client URL.
    pub url: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    /// Starts a plain-text etcd and waits until it answers; `None` (the test is
    /// skipped) when there is no `etcd` binary, outside CI.
    #[allow(dead_code)] // Not every test file starts a plain etcd.
    pub async fn start(test: &str) -> Option<Etcd> {
        if !testgate::require_cmd(test, "etcd") {
            return None;
        }
        Some(Etcd::launch("http", &[], ConnectOptions::default()).await)
    }

    /// Starts etcd with client URLs of `scheme` and the extra `args`, and waits
    /// until a client connecting with `probe` reads a key. The caller has
    /// checked through `testgate` that `etcd` is there.
    pub async fn launch(scheme: &str, args: &[String], probe: ConnectOptions) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("{scheme}://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let child = testgate::etcd_command("bgpd-etcd-test", &dir.path().join("data"), &url, free_port())
            .args(args)
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let etcd = Etcd { child, dir, url };
        let answers = async {
            loop {
                if let Ok(c) = Client::connect(&[&etcd.url], probe.clone()).await {
                    if c.get("probe").await.is_ok() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        if tokio::time::timeout(PATIENCE, answers).await.is_err() {
            panic!("etcd at {} did not answer within {PATIENCE:?}; its log:\n{}", etcd.url, etcd.log());
        }
        etcd
    }

    /// What etcd wrote to its stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// A client of this etcd with default options.
    #[allow(dead_code)] // Not every test file connects without options.
    pub async fn client(&self) -> Client {
        Client::connect(&[&self.url], ConnectOptions::default()).await.expect("connect to etcd")
    }
}

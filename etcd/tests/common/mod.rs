//! A real etcd for the tests (Debian's `etcd-server`, 3.4 on Debian 12), started
//! per test by the test bed (`testgate::testbed::Etcd`: free loopback ports, a
//! scratch data directory, gone on drop), with this crate's client; shared by the
//! test files of this crate.

use std::time::Duration;

use bgpd_etcd::{Client, ConnectOptions};
use testgate::testbed::EtcdConfig;

/// How long a test waits for etcd or for a message before it fails (a safety
/// net against a hang, not a speed requirement).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A real etcd; stopped and its data directory removed on drop.
pub struct Etcd {
    etcd: testgate::testbed::Etcd,
    /// The client URL.
    pub url: String,
}

impl Etcd {
    /// Starts a plain-text etcd and waits until it answers; `None` (the test is
    /// skipped) when there is no `etcd` binary, outside CI.
    #[allow(dead_code)] // Not every test file starts a plain etcd.
    pub async fn start(test: &str) -> Option<Etcd> {
        if !testgate::require_cmd(test, "etcd") {
            return None;
        }
        Some(Etcd::launch(false, &[], ConnectOptions::default()).await)
    }

    /// Starts etcd serving clients over TLS when `https`, with the extra `args`,
    /// and waits until it is ready and a client connecting with `probe` reads a
    /// key. The caller has checked through `testgate` that `etcd` is there.
    pub async fn launch(https: bool, args: &[String], probe: ConnectOptions) -> Etcd {
        let mut config =
            EtcdConfig::loopback("bgpd-etcd-test").expect("free loopback ports").args(args.iter().cloned());
        if https {
            config = config.https();
        }
        let etcd = testgate::testbed::Etcd::start(config).unwrap_or_else(|e| panic!("{e}"));
        let etcd = Etcd { url: etcd.url().to_string(), etcd };
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
            panic!("etcd at {} did not answer this client within {PATIENCE:?}; its log:\n{}", etcd.url, etcd.log());
        }
        etcd
    }

    /// What etcd wrote to its stderr.
    pub fn log(&self) -> String {
        self.etcd.log()
    }

    /// Kills it at once (SIGKILL) and reaps it.
    #[allow(dead_code)] // Not every test file kills its etcd.
    pub fn kill(&mut self) {
        self.etcd.kill();
    }

    /// A client of this etcd with default options.
    #[allow(dead_code)] // Not every test file connects without options.
    pub async fn client(&self) -> Client {
        Client::connect(&[&self.url], ConnectOptions::default()).await.expect("connect to etcd")
    }
}

//! Helpers shared by the integration tests.

/// The CRD-schema checker (one copy, in `testgate`, for unit and integration
/// tests alike); not every test binary that includes this module uses it.
#[allow(unused_imports)]
pub use testgate::crd_schema;

use std::net::TcpListener;
use std::process::Child;

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind a free loopback port")
}

/// A killed-on-drop child process.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

//! The sans-IO engine for the fuzz targets (`fuzz/`), which drive it with
//! netlink replies; not an interface for anything else.

use crate::engine::Engine;
use crate::{FibConfig, FibEvent, FibMetrics, RouteChange, RouteError};

/// The FIB engine of [`crate::Fib`] without its driver: desired routes and
/// kernel datagrams in, netlink requests and events out.
pub struct FuzzEngine(Engine);

impl FuzzEngine {
    /// An engine that starts with a dump of links and the table, as the
    /// driver's does; `port` is its netlink port ID.
    pub fn new(config: &FibConfig, port: u32) -> FuzzEngine {
        FuzzEngine(Engine::new(config, FibMetrics::unregistered(), port))
    }

    /// A change of the desired routes.
    pub fn apply(&mut self, change: RouteChange) {
        self.0.apply(change)
    }

    /// One datagram read from the netlink socket.
    pub fn handle_datagram(&mut self, bytes: &[u8]) {
        self.0.handle_datagram(bytes)
    }

    /// The next batch of requests for one `sendmsg`; false if none.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> bool {
        self.0.poll_transmit(buf)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<FibEvent> {
        self.0.poll_event()
    }

    /// The socket overflowed: a full resync follows.
    pub fn handle_overrun(&mut self) {
        self.0.handle_overrun()
    }

    /// Ends the start-up grace (routes of ours not desired are removed).
    pub fn sweep(&mut self) {
        self.0.sweep()
    }

    /// Nothing queued, outstanding, being resolved or dumped.
    pub fn is_settled(&self) -> bool {
        self.0.is_settled()
    }

    /// Routes currently failing.
    pub fn failures(&self) -> Vec<RouteError> {
        self.0.failures()
    }
}

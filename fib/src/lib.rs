//! Kernel route programming over netlink.
//!
//! The daemon keeps a set of desired routes here; the FIB makes the kernel table match it
//! and keeps it matching:
//!
//! - **Writes in batches**: up to `batch_size` route messages per `sendmsg`, only the last
//!   asking for an ACK; errors come back per message and name the route and the errno.
//! - **Coalescing and backpressure**: changes land in a queue keyed by prefix (a route
//!   changed five times while queued is written once); callers wait when it is full.
//! - **Ownership**: only routes with our protocol number (default `RTPROT_BGP`, 186) in our
//!   table are written or removed; a slot another protocol holds is reported, not taken.
//! - **Reconcile**: at start (and after a receive overrun or a link change) links and the
//!   table are dumped and diffed; routes already right are not rewritten; stale routes of
//!   ours are swept once the caller says the desired set is complete.
//! - **Watch and repair**: our route deleted or changed by someone else is put back; next
//!   hops over links that go down leave ECMP sets and return with the link.
//! - **Recursive next hops**: a gateway given without a device is resolved through the
//!   kernel's own routes (`RTM_GETROUTE` with `RTM_F_FIB_MATCH`) to a directly connected
//!   gateway, and re-resolved when other routes or addresses change.
//! - **Taking over**: routes of another speaker's protocol in our table
//!   ([`FibConfig::replaces`], BIRD's 12 when bgpd replaces it) are recorded and left
//!   alone until [`FibHandle::retire_predecessors`] removes them, once ours are in.
//!
//! The logic is a sans-IO engine (no socket, no clock; unit-tested with synthetic kernel
//! messages); [`Fib::spawn`] runs it on a tokio task that owns the socket. See `docs/fib.md`.

#![warn(missing_docs)]

mod config;
mod count;
mod driver;
mod engine;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod kernel;
mod metrics;
pub mod netns;
mod queue;
mod route;

pub use config::FibConfig;
pub use count::count_routes;
pub use driver::{Fib, FibHandle};
pub use engine::{FibEvent, Retire};
pub use error::{errno_name, FibError, Op, RouteError, RouteErrorKind};
pub use kernel::{RTPROT_BGP, RT_TABLE_MAIN};
pub use metrics::FibMetrics;
pub use route::{NextHop, Route, RouteChange, Target};

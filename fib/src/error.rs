//! Errors: per route (they never stop the other routes) and for the FIB as a whole.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

/// Why one route is not (or not as wanted) in the kernel. Names the route and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {prefix}: {kind}")]
pub struct RouteError {
    /// The route's prefix.
    pub prefix: IpNet,
    /// What went wrong.
    pub kind: RouteErrorKind,
}

/// The operation the kernel refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `RTM_NEWROUTE` with `NLM_F_CREATE | NLM_F_REPLACE`.
    Install,
    /// `RTM_DELROUTE` restricted to our protocol.
    Remove,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Install => "install",
            Op::Remove => "remove",
        })
    }
}

/// The reason in a [`RouteError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteErrorKind {
    /// The route itself is malformed; it is never sent.
    #[error("invalid route: {reason}")]
    Invalid {
        /// What is wrong with it.
        reason: String,
    },
    /// A next hop names a device the namespace does not have (yet); retried when it appears.
    #[error("no such device {device:?}")]
    NoSuchDevice {
        /// The device name given.
        device: String,
    },
    /// A recursive next hop does not resolve to a usable, directly connected gateway.
    #[error("next hop {gateway} is unreachable: {reason}")]
    NextHopUnreachable {
        /// The gateway the caller gave.
        gateway: IpAddr,
        /// What the kernel's lookup found (or did not).
        reason: String,
    },
    /// Every next hop goes through a link that is down; reinstalled when one comes up.
    #[error("no usable next hop: all next-hop links are down")]
    AllLinksDown,
    /// Another protocol owns a route with the same prefix and metric in our table; we do
    /// not overwrite routes we do not own.
    #[error("table slot owned by protocol {protocol}, left alone")]
    Conflict {
        /// The other route's protocol number.
        protocol: u8,
    },
    /// The prefix is a subnet of one of this host's interfaces: the kernel's
    /// connected route for it is preferred (connected routes beat learned
    /// ones, as in any router), so no route of ours competes with it. Without
    /// this an IPv6 route of ours (metric 20) would win over the kernel's
    /// connected route (metric 256) and send on-link traffic through a gateway.
    #[error("directly connected: the kernel's connected route is preferred")]
    Connected,
    /// The kernel refused the operation.
    #[error("kernel refused {op}: {} ({}){}", errno_name(*errno), errno_text(*errno), message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kernel {
        /// Install or remove.
        op: Op,
        /// Positive errno value.
        errno: i32,
        /// The kernel's extended-ack message, when it gave one.
        message: Option<String>,
    },
}

/// The symbolic name of an errno value (`ENETUNREACH`), for messages and metric labels.
pub fn errno_name(errno: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(errno))
}

fn errno_text(errno: i32) -> &'static str {
    nix::errno::Errno::from_raw(errno).desc()
}

/// Errors of the FIB as a whole (not of one route).
#[derive(Debug, thiserror::Error)]
pub enum FibError {
    /// The network namespace could not be entered.
    #[error("network namespace {path}: {source}")]
    Netns {
        /// Path of the namespace file (e.g. `/run/netns/NAME`).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A netlink socket operation failed.
    #[error("netlink socket: {what}: {source}")]
    Socket {
        /// Which step failed.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("fib config field {field}: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A metric could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The FIB task has stopped (shut down or failed).
    #[error("the fib task has stopped")]
    Stopped,
}

//! The test bed: what conformance tests, benchmarks and the tests of `fib` and `bgpd-ipam`
//! build to run real daemons, written once.
//!
//! - [`Netns`]: a uniquely named network namespace, deleted on drop with every device in
//!   it (so also the veths with an end there); [`Ns`] is a name-only handle to one, to
//!   run `ip -n`, `ip netns exec`, `sysctl`, `ss` and code on a thread inside it.
//! - [`veth`]: a veth pair between two namespaces, or a namespace and the root.
//! - [`Process`]: a child process stopped (SIGTERM, then SIGKILL after a grace period)
//!   and reaped on drop; [`ScratchDir`]: a directory removed on drop.
//! - [`bgpd_binary`]: the one rule for finding the bgpd binary under test.
//! - [`Etcd`]: a real etcd on free loopback ports (or in a namespace) in a scratch
//!   directory, ready once it has a leader, gone on drop.
//! - [`bird`] and [`frr`]: BIRD 2 and FRR configurations as plain data, rendered to
//!   text (the conformance tests' peers, the benchmarks' DUTs, the lab's routers).
//! - [`RouteMonitor`]: `ip monitor route` in a namespace, for the order of route changes.
//! - [`on_signal`]: the one signal cleanup. Everything above is entered in a registry
//!   while it exists; on SIGINT or SIGTERM the registry's processes are killed, its
//!   namespaces deleted and its directories removed before the program exits (130).
//!
//! Every command that fails returns a [`CommandError`] naming the command and carrying
//! its stderr. Creating namespaces needs root; callers gate on it with
//! [`crate::require_root`] (tests) or fail with the error (benchmarks).

mod binary;
pub mod bird;
mod cleanup;
mod command;
mod etcd;
pub mod frr;
mod monitor;
mod netns;
mod process;

pub use binary::{bgpd_binary, BGPD_BIN};
pub use cleanup::{forget_pid, on_signal, track_pid, OnSignal, Registry};
pub use command::{run, CommandError};
pub use etcd::{free_port, Etcd, EtcdConfig, EtcdError};
pub use monitor::RouteMonitor;
pub use netns::{fib_links, unique_name, veth, Netns, Ns};
pub use process::{reap, Process, ScratchDir};

/// An address family of a rendered configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Af {
    /// IPv4 unicast.
    Ipv4,
    /// IPv6 unicast.
    Ipv6,
}

impl Af {
    /// `ipv4` or `ipv6`.
    pub fn name(self) -> &'static str {
        match self {
            Af::Ipv4 => "ipv4",
            Af::Ipv6 => "ipv6",
        }
    }
}

//! Interop test and benchmark harness: drives built binaries and real peers from outside,
//! over the network, as any peer would.

pub mod bench;
pub mod lab;

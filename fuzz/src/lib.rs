//! Fuzz targets for every parser and state machine of bgpd, as plain
//! functions `fn(&[u8])`.
//!
//! Each target decodes its input, drives the code under test and asserts the
//! properties that code promises: a target returns for any input, and panics
//! only when a property fails (or the code under test panics). The same
//! functions are run three ways (docs/fuzzing.md):
//!
//! - by libFuzzer, coverage-guided, through the one-line binaries in
//!   `fuzz_targets/` (`cargo +nightly fuzz run --features libfuzzer TARGET`);
//! - by `tests/smoke.rs` on stable, in `cargo test --workspace`: every corpus
//!   file, then a bounded number of seeded random mutations (a smoke run, not
//!   coverage-guided);
//! - by `examples/seed_corpus.rs`, which writes the seed corpora.

mod bfd;
mod datastore;
mod input;
mod ipam;
mod netlink;
mod rib;
mod session;
mod wire;

pub use bfd::bfd;
pub use datastore::datastore;
pub use input::Input;
pub use ipam::{cni_args, cni_config, ipam_store, selector};
pub use netlink::{netlink, PORT as NETLINK_PORT};
pub use rib::rib;
pub use session::session_fsm;
pub use wire::{message, mrt, open, path_attributes};

/// One fuzz target: its name (the `fuzz_targets/NAME.rs` binary and the
/// `corpus/NAME/` directory) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order the smoke test and the campaign run them.
pub const TARGETS: &[Target] = &[
    ("message", message),
    ("path_attributes", path_attributes),
    ("open", open),
    ("mrt", mrt),
    ("session_fsm", session_fsm),
    ("rib", rib),
    ("bfd", bfd),
    ("datastore", datastore),
    ("selector", selector),
    ("cni_config", cni_config),
    ("cni_args", cni_args),
    ("ipam_store", ipam_store),
    ("netlink", netlink),
];

//! The node's BGP speaker as a library: the `bgpd` command (`main.rs`) is a thin
//! front end over these modules, the fuzz targets (`fuzz/`) reach the
//! datastore's parsers, and the design tools (`bgpd-lab`: the lab and the
//! verifier) plan nodes with the daemon's own code (`daemon::plan`,
//! `daemon::peer::session_config`, `daemon::rib::peer_config`, …).

pub mod daemon;
#[allow(dead_code)]
pub mod datastore;
pub mod decode_mrt;

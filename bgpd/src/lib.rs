//! The node's BGP speaker as a library: the `bgpd` command (`main.rs`) is a thin
//! front end over these modules, and the fuzz targets (`fuzz/`) reach the
//! datastore's parsers.

pub mod daemon;
#[allow(dead_code)]
pub mod datastore;
pub mod decode_mrt;
pub mod lab;
pub mod verify;

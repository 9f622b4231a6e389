//! `bgpd-proto`: the sans-IO BGP core of bgpd.
//!
//! No sockets, no clock, no tokio: bytes and time come in as arguments, and
//! what to send comes out. See `../shared/ARCHITECTURE.md`.

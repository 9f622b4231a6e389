//! The routing information base, sans-IO: interned attribute sets, the
//! decision process, and per-family tables that report best-path changes.
//! (Issue 4 builds Adj-RIB-In/Out, policy, route reflection and graceful
//! restart around these.)

pub mod attrs;
pub mod checks;
pub mod core;
pub mod decision;
pub mod policy;
pub mod table;

//! `bgpd-proto`: the sans-IO BGP core of bgpd.
//!
//! No sockets, no clock, no tokio: bytes and time come in as arguments, and
//! what to send comes out. See `ARCHITECTURE.md` in the shared folder.
//!
//! - [`wire`]: the BGP-4 message codec (RFC 4271 and extensions), with RFC 7606
//!   error classification.
//! - [`mrt`]: MRT (RFC 6396) framing, to read captures and table dumps.
//! - [`bfd`]: Bidirectional Forwarding Detection (RFC 5880), asynchronous mode.

pub mod bfd;
pub mod error;
pub mod mrt;
pub mod nlri;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod types;
pub mod wire;

pub use error::{DecodeError, EncodeError, ErrorAction, ErrorClass, UpdateIssue};
pub use nlri::Nlri;
pub use types::{Afi, AttrCode, CapabilityCode, Family, FamilySet, MessageType, Safi};
pub use wire::{Frame, Message, WireContext};

//! Errors typed by what they cause on the wire.
//!
//! A [`DecodeError`] is fatal for the session: it carries the NOTIFICATION
//! (code, subcode, data) that RFC 4271 §6 and RFC 7606 require. Errors that
//! do not reset the session (RFC 7606 "treat-as-withdraw" and "attribute
//! discard") are [`UpdateIssue`]s reported next to the decoded UPDATE.

use std::fmt;

use crate::types::AttrCode;

/// NOTIFICATION error codes (RFC 4271 §4.5) and subcodes, as constants.
pub mod code {
    /// Message Header Error (RFC 4271 §6.1).
    pub const MESSAGE_HEADER: u8 = 1;
    /// OPEN Message Error (RFC 4271 §6.2).
    pub const OPEN_MESSAGE: u8 = 2;
    /// UPDATE Message Error (RFC 4271 §6.3).
    pub const UPDATE_MESSAGE: u8 = 3;
    /// Hold Timer Expired (RFC 4271 §6.5).
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error (RFC 4271 §6.6, subcodes RFC 6608).
    pub const FSM: u8 = 5;
    /// Cease (RFC 4271 §6.7, subcodes RFC 4486).
    pub const CEASE: u8 = 6;
    /// ROUTE-REFRESH Message Error (RFC 7313 §5).
    pub const ROUTE_REFRESH_MESSAGE: u8 = 7;

    /// Message Header Error subcodes.
    pub mod header {
        /// Connection Not Synchronized.
        pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
        /// Bad Message Length.
        pub const BAD_MESSAGE_LENGTH: u8 = 2;
        /// Bad Message Type.
        pub const BAD_MESSAGE_TYPE: u8 = 3;
    }

    /// OPEN Message Error subcodes.
    pub mod open {
        /// Unspecific (also: a recognised optional parameter is malformed).
        pub const UNSPECIFIC: u8 = 0;
        /// Unsupported Version Number.
        pub const UNSUPPORTED_VERSION: u8 = 1;
        /// Bad Peer AS.
        pub const BAD_PEER_AS: u8 = 2;
        /// Bad BGP Identifier.
        pub const BAD_BGP_IDENTIFIER: u8 = 3;
        /// Unsupported Optional Parameter.
        pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
        /// Unacceptable Hold Time.
        pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
        /// Unsupported Capability (RFC 5492).
        pub const UNSUPPORTED_CAPABILITY: u8 = 7;
        /// Role Mismatch (RFC 9234).
        pub const ROLE_MISMATCH: u8 = 11;
    }

    /// UPDATE Message Error subcodes.
    pub mod update {
        /// Malformed Attribute List.
        pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
        /// Unrecognized Well-known Attribute.
        pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
        /// Missing Well-known Attribute.
        pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
        /// Attribute Flags Error.
        pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
        /// Attribute Length Error.
        pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
        /// Invalid ORIGIN Attribute.
        pub const INVALID_ORIGIN: u8 = 6;
        /// Invalid NEXT_HOP Attribute.
        pub const INVALID_NEXT_HOP: u8 = 8;
        /// Optional Attribute Error.
        pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
        /// Invalid Network Field.
        pub const INVALID_NETWORK_FIELD: u8 = 10;
        /// Malformed AS_PATH.
        pub const MALFORMED_AS_PATH: u8 = 11;
    }

    /// Finite State Machine Error subcodes (RFC 6608).
    pub mod fsm {
        /// Unspecified Error.
        pub const UNSPECIFIED: u8 = 0;
        /// Receive Unexpected Message in OpenSent State.
        pub const UNEXPECTED_IN_OPEN_SENT: u8 = 1;
        /// Receive Unexpected Message in OpenConfirm State.
        pub const UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
        /// Receive Unexpected Message in Established State.
        pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
    }

    /// Cease subcodes (RFC 4486, RFC 8203/9003 shutdown communication).
    pub mod cease {
        /// Maximum Number of Prefixes Reached.
        pub const MAX_PREFIXES: u8 = 1;
        /// Administrative Shutdown (may carry a shutdown communication).
        pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
        /// Peer De-configured.
        pub const PEER_DECONFIGURED: u8 = 3;
        /// Administrative Reset (may carry a shutdown communication).
        pub const ADMINISTRATIVE_RESET: u8 = 4;
        /// Connection Rejected.
        pub const CONNECTION_REJECTED: u8 = 5;
        /// Other Configuration Change.
        pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
        /// Connection Collision Resolution.
        pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
        /// Out of Resources.
        pub const OUT_OF_RESOURCES: u8 = 8;
        /// Hard Reset (RFC 8538).
        pub const HARD_RESET: u8 = 9;
        /// BFD Down (RFC 9384).
        pub const BFD_DOWN: u8 = 10;
    }

    /// ROUTE-REFRESH Message Error subcodes (RFC 7313).
    pub mod route_refresh {
        /// Invalid Message Length.
        pub const INVALID_MESSAGE_LENGTH: u8 = 1;
    }
}

/// A decoding error that resets the session: the NOTIFICATION to send and why.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// NOTIFICATION error code.
    pub code: u8,
    /// NOTIFICATION error subcode.
    pub subcode: u8,
    /// NOTIFICATION data field, as the RFC section for this error prescribes.
    pub data: Vec<u8>,
    /// What was wrong, for logs.
    pub reason: &'static str,
}

impl DecodeError {
    /// An error with the given NOTIFICATION code, subcode, data and reason.
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>, reason: &'static str) -> Self {
        DecodeError { code, subcode, data: data.into(), reason }
    }

    /// UPDATE Message Error / Malformed Attribute List, with no data.
    pub(crate) fn malformed_attribute_list(reason: &'static str) -> Self {
        Self::new(code::UPDATE_MESSAGE, code::update::MALFORMED_ATTRIBUTE_LIST, [], reason)
    }

    /// UPDATE Message Error / Invalid Network Field, with no data.
    pub(crate) fn invalid_network_field(reason: &'static str) -> Self {
        Self::new(code::UPDATE_MESSAGE, code::update::INVALID_NETWORK_FIELD, [], reason)
    }

    /// OPEN Message Error / Unspecific: a recognised parameter is malformed (RFC 4271 §6.2).
    pub(crate) fn open_malformed(reason: &'static str) -> Self {
        Self::new(code::OPEN_MESSAGE, code::open::UNSPECIFIC, [], reason)
    }
}

impl fmt::Debug for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (NOTIFICATION {}/{}", self.reason, self.code, self.subcode)?;
        if !self.data.is_empty() {
            write!(f, ", data ")?;
            for b in &self.data {
                write!(f, "{b:02x}")?;
            }
        }
        write!(f, ")")
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for DecodeError {}

/// What an UPDATE error that does not reset the session does (RFC 7606 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorAction {
    /// The attribute is dropped and the UPDATE processed without it.
    AttributeDiscard,
    /// Every prefix the UPDATE announces is handled as withdrawn.
    TreatAsWithdraw,
}

/// A malformation in an UPDATE that RFC 7606 resolves without a session reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateIssue {
    /// The attribute concerned (or the attribute whose parse found the problem).
    pub attr: AttrCode,
    /// The handling RFC 7606 prescribes.
    pub action: ErrorAction,
    /// What was wrong, for logs.
    pub reason: &'static str,
}

/// The RFC 7606 classes an UPDATE decode can end in, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// NOTIFICATION and session reset.
    SessionReset,
    /// Treat-as-withdraw.
    TreatAsWithdraw,
    /// Attribute discard.
    AttributeDiscard,
}

impl From<ErrorAction> for ErrorClass {
    fn from(a: ErrorAction) -> Self {
        match a {
            ErrorAction::AttributeDiscard => ErrorClass::AttributeDiscard,
            ErrorAction::TreatAsWithdraw => ErrorClass::TreatAsWithdraw,
        }
    }
}

/// An error while encoding a message for the wire.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message is longer than the negotiated maximum.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLong {
        /// The encoded length.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// A field does not fit its wire encoding.
    #[error("{0} does not fit its wire field")]
    FieldTooLong(&'static str),
}

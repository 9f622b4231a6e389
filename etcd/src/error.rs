//! What can go wrong talking to etcd, each error naming the call that failed
//! and the endpoint it went to.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::watch::Cancellation;

/// What the client was doing when an error happened: connecting, or one of the
/// gRPC methods of etcd's KV, Watch and Auth services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    /// Connecting to the endpoints.
    Connect,
    /// `KV.Range` (a get).
    Range,
    /// `KV.Put`.
    Put,
    /// `KV.DeleteRange` (a delete).
    DeleteRange,
    /// `KV.Txn`.
    Txn,
    /// `KV.Compact`.
    Compact,
    /// `Watch.Watch`.
    Watch,
    /// `Auth.Authenticate`: a user and password for a token.
    Authenticate,
    /// `Auth.UserAdd`.
    UserAdd,
    /// `Auth.RoleAdd`.
    RoleAdd,
    /// `Auth.UserGrantRole`.
    UserGrantRole,
    /// `Auth.AuthEnable`.
    AuthEnable,
}

impl Call {
    /// The gRPC path of the method (`/etcdserverpb.KV/Range`); `None` for
    /// [`Call::Connect`].
    pub(crate) fn path(self) -> Option<&'static str> {
        match self {
            Call::Connect => None,
            Call::Range => Some("/etcdserverpb.KV/Range"),
            Call::Put => Some("/etcdserverpb.KV/Put"),
            Call::DeleteRange => Some("/etcdserverpb.KV/DeleteRange"),
            Call::Txn => Some("/etcdserverpb.KV/Txn"),
            Call::Compact => Some("/etcdserverpb.KV/Compact"),
            Call::Watch => Some("/etcdserverpb.Watch/Watch"),
            Call::Authenticate => Some("/etcdserverpb.Auth/Authenticate"),
            Call::UserAdd => Some("/etcdserverpb.Auth/UserAdd"),
            Call::RoleAdd => Some("/etcdserverpb.Auth/RoleAdd"),
            Call::UserGrantRole => Some("/etcdserverpb.Auth/UserGrantRole"),
            Call::AuthEnable => Some("/etcdserverpb.Auth/AuthEnable"),
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Connect => "connect",
            Call::Range => "KV.Range",
            Call::Put => "KV.Put",
            Call::DeleteRange => "KV.DeleteRange",
            Call::Txn => "KV.Txn",
            Call::Compact => "KV.Compact",
            Call::Watch => "Watch.Watch",
            Call::Authenticate => "Auth.Authenticate",
            Call::UserAdd => "Auth.UserAdd",
            Call::RoleAdd => "Auth.RoleAdd",
            Call::UserGrantRole => "Auth.UserGrantRole",
            Call::AuthEnable => "Auth.AuthEnable",
        })
    }
}

/// An error of the etcd client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `connect` was given no endpoint.
    #[error("etcd connect: no endpoint given")]
    NoEndpoints,
    /// An endpoint is not a URL this client can use (`http://HOST:PORT`,
    /// `https://HOST:PORT`), or the endpoints mix http and https (then
    /// `endpoint` lists them all).
    #[error("etcd endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS file cannot be read or does not hold what it should: the CA
    /// bundle, the client certificate or the client key.
    #[error("etcd TLS {what} {}: {reason}", path.display())]
    TlsFile {
        /// Which file: `CA bundle`, `client certificate` or `client key`.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The TLS settings were refused as a whole (a client key that does not
    /// belong to its certificate, no system CA roots when no bundle is given).
    #[error("etcd TLS settings: {0}")]
    Tls(String),
    /// No connection could be made, or it broke (nothing, or not all, of the
    /// answer came back).
    #[error("etcd {call} via {endpoint}: {reason}")]
    Transport {
        /// The call that failed.
        call: Call,
        /// The endpoint it went to (every endpoint tried, for a connect).
        endpoint: String,
        /// The transport's error and its causes.
        reason: String,
    },
    /// etcd answered with a gRPC error status (`etcdserver: no leader`,
    /// `mvcc: required revision has been compacted`, …).
    #[error("etcd {call} via {endpoint}: {code:?}: {message}")]
    Status {
        /// The call that failed.
        call: Call,
        /// The endpoint it went to.
        endpoint: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// etcd's message.
        message: String,
    },
    /// No answer came within the request timeout (or, for a connect, within the
    /// connect timeout).
    #[error("etcd {call} via {endpoint}: no answer within {after:?}")]
    Timeout {
        /// The call that timed out.
        call: Call,
        /// The endpoint it went to.
        endpoint: String,
        /// The timeout.
        after: Duration,
    },
    /// etcd cancelled a watch: when it was created (it could not be), or later
    /// (its start revision was compacted away). A stream that goes on after a
    /// cancellation yields it as [`crate::WatchMessage::Cancelled`]; a caller that
    /// cannot go on without the watch turns it into this error.
    #[error("etcd {0}")]
    WatchCancelled(Cancellation),
    /// An answer lacks something etcd always sends (a header, an event's key).
    #[error("etcd {call} via {endpoint}: malformed answer: {what}")]
    Malformed {
        /// The call whose answer it is.
        call: Call,
        /// The endpoint it came from.
        endpoint: String,
        /// What is wrong with it.
        what: String,
    },
}

impl From<Cancellation> for Error {
    fn from(c: Cancellation) -> Error {
        Error::WatchCancelled(c)
    }
}

impl Error {
    /// Whether etcd refused the request's auth token as invalid (expired, or
    /// made before the last change of etcd's users and roles): a new token
    /// from `Auth.Authenticate` makes the request go through.
    pub(crate) fn is_stale_token(&self) -> bool {
        // etcd's ErrGRPCInvalidAuthToken (Unauthenticated) and
        // ErrGRPCAuthOldRevision (InvalidArgument), by their messages.
        matches!(self, Error::Status { message, .. }
            if message.contains("invalid auth token") || message.contains("revision of auth store is old"))
    }

    /// Whether the endpoint looks unusable (no connection, no answer, or etcd
    /// says it is unavailable, e.g. a member without a leader): the client then
    /// sends its next requests to the next endpoint.
    pub(crate) fn is_endpoint_failure(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Timeout { .. } => true,
            Error::Status { code, .. } => *code == tonic::Code::Unavailable,
            _ => false,
        }
    }

    /// The error of `call` to `endpoint` that ended with `status`: a status made
    /// on this side (it has a source: a connection that failed or broke) is a
    /// transport error, one etcd sent is a status error.
    pub(crate) fn from_status(call: Call, endpoint: &str, status: &tonic::Status) -> Error {
        let endpoint = endpoint.to_string();
        match std::error::Error::source(status) {
            Some(source) => {
                let reason = format!("{}: {}", status.message(), chain(source));
                Error::Transport { call, endpoint, reason }
            }
            None => Error::Status { call, endpoint, code: status.code(), message: status.message().to_string() },
        }
    }
}

/// An error and its causes, `outer: inner: innermost`, without repeats (many
/// wrappers print their source's text again).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

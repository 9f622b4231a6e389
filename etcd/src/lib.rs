//! A small etcd v3 client: the KV service (get, get of a prefix at a revision,
//! put, delete, transactions, compaction) and the Watch service (several
//! watches on one bidirectional stream), over HTTP/2 gRPC in plain text or TLS
//! (a CA bundle, a client certificate for mutual TLS), as an etcd user when etcd
//! has authentication enabled ([`security`]).
//!
//! Why not the `etcd-client` crate: its build script runs protoc on etcd's
//! `.proto` files, so building bgpd needed protoc and the well-known protobuf
//! files on the build machine. Here the messages ([`wire`]) are written by hand
//! with `prost`'s derive macros, so building needs no protoc, no build script
//! and no generated code; and only the two services bgpd and `ipam` use are here.
//!
//! ```no_run
//! # async fn example() -> Result<(), bgpd_etcd::Error> {
//! use bgpd_etcd::{Client, ConnectOptions, WatchMessage, WatchSpec};
//! let client = Client::connect(&["http://127.0.0.1:2379"], ConnectOptions::default()).await?;
//! let snapshot = client.get_prefix("/calico/bgpd/", None).await?;
//! let spec = WatchSpec::prefix("/calico/bgpd/").from_revision(snapshot.revision + 1);
//! let (mut watch, _id) = client.watch(spec).await?;
//! while let Some(message) = watch.next().await? {
//!     if let WatchMessage::Cancelled(c) = message {
//!         return Err(c.into());
//!     }
//! }
//! # Ok(()) }
//! ```

mod client;
mod error;
mod prefix;
pub mod security;
mod tls;
mod watch;
pub mod wire;

pub use client::{Client, ConnectOptions, KeepAlive, Snapshot};
pub use error::{Call, Error};
pub use prefix::{prefix_range, prefix_range_end};
pub use security::{Access, ClientIdentity, Credentials, Password, SpecOptions, Tls};
/// The gRPC status code of [`Error::Status`].
pub use tonic::Code;
pub use watch::{Cancellation, Watch, WatchEvent, WatchId, WatchMessage, WatchSpec};
pub use wire::compare::CompareResult;
pub use wire::{Compare, KeyValue, RequestOp, TxnResponse};

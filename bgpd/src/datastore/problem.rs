//! What can go wrong while loading a datastore: whole-load errors ([`LoadError`])
//! and per-object findings ([`Problem`]) that skip one object but let the rest load.

use std::fmt;
use std::path::PathBuf;

/// Where an object came from: file, document and (for `kind: List`) item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file the object was read from.
    pub file: PathBuf,
    /// 1-based index of the YAML document within the file.
    pub document: usize,
    /// 1-based index within the `items` of a `kind: List` document, if any.
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.file.display(), self.document)?;
        if let Some(item) = self.item {
            write!(f, ", item {item}")?;
        }
        Ok(())
    }
}

/// A kind of object bgpd reads into its model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    /// Calico `Node`.
    Node,
    /// Calico `BGPConfiguration`.
    BgpConfiguration,
    /// Calico `BGPPeer`.
    BgpPeer,
    /// Calico `BGPFilter`.
    BgpFilter,
    /// Kubernetes `Secret` (BGP passwords).
    Secret,
    /// Calico `IPAMBlock`.
    IpamBlock,
    /// Calico `IPAMHandle`.
    IpamHandle,
    /// Calico `IPPool`.
    IpPool,
    /// Kubernetes `Service`.
    Service,
    /// Kubernetes `EndpointSlice`.
    EndpointSlice,
    /// Calico `BFDConfiguration`.
    BfdConfiguration,
    /// Calico `WorkloadEndpoint` (a pod's interface).
    WorkloadEndpoint,
    /// Kubernetes `Pod` (read as a workload endpoint).
    Pod,
}

impl ResourceKind {
    /// Every kind, in declaration order.
    pub const ALL: [ResourceKind; 13] = [
        ResourceKind::Node,
        ResourceKind::BgpConfiguration,
        ResourceKind::BgpPeer,
        ResourceKind::BgpFilter,
        ResourceKind::Secret,
        ResourceKind::IpamBlock,
        ResourceKind::IpamHandle,
        ResourceKind::IpPool,
        ResourceKind::Service,
        ResourceKind::EndpointSlice,
        ResourceKind::BfdConfiguration,
        ResourceKind::WorkloadEndpoint,
        ResourceKind::Pod,
    ];

    /// The `kind` field's value, e.g. `BGPPeer`.
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::Node => "Node",
            ResourceKind::BgpConfiguration => "BGPConfiguration",
            ResourceKind::BgpPeer => "BGPPeer",
            ResourceKind::BgpFilter => "BGPFilter",
            ResourceKind::Secret => "Secret",
            ResourceKind::IpamBlock => "IPAMBlock",
            ResourceKind::IpamHandle => "IPAMHandle",
            ResourceKind::IpPool => "IPPool",
            ResourceKind::Service => "Service",
            ResourceKind::EndpointSlice => "EndpointSlice",
            ResourceKind::BfdConfiguration => "BFDConfiguration",
            ResourceKind::WorkloadEndpoint => "WorkloadEndpoint",
            ResourceKind::Pod => "Pod",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of an object a problem names: one bgpd reads, or another one
/// found in the datastore (reported, then ignored).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A kind bgpd reads (whatever its `apiVersion`).
    Read(ResourceKind),
    /// Any other `kind`, as written.
    Other(String),
}

impl ObjectKind {
    /// The kind a `kind` field names.
    pub fn named(kind: &str) -> ObjectKind {
        match ResourceKind::ALL.into_iter().find(|k| k.name() == kind) {
            Some(k) => ObjectKind::Read(k),
            None => ObjectKind::Other(kind.to_string()),
        }
    }
}

impl From<ResourceKind> for ObjectKind {
    fn from(k: ResourceKind) -> ObjectKind {
        ObjectKind::Read(k)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKind::Read(k) => f.write_str(k.name()),
            ObjectKind::Other(k) => f.write_str(k),
        }
    }
}

/// The kind and name of an object, as a problem names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    /// `kind` of the object, e.g. `BGPPeer`.
    pub kind: ObjectKind,
    /// `metadata.name`, if the object has a usable one.
    pub name: Option<String>,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{} {name:?}", self.kind),
            None => write!(f, "{} (unnamed)", self.kind),
        }
    }
}

/// How much a [`Problem`] matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Not a fault: an object of a kind bgpd does not read, worth a debug log line.
    Debug,
    /// The object was loaded, but something in it is doubtful (a replaced duplicate,
    /// an unsupported field, a normalised value).
    Warning,
    /// The object is invalid and was skipped; the rest of the datastore loaded.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Debug => "debug",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One finding about one object: which object, which field, and why.
///
/// Displays as `BGPPeer "tor-1": spec.peerIP: "10.0.0.300" is not an IP address
/// (peers.yaml, document 3)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Whether the object was skipped ([`Severity::Error`]) or kept.
    pub severity: Severity,
    /// The object, when its kind is known.
    pub object: Option<ObjectRef>,
    /// Field path such as `spec.peerIP` or `spec.serviceClusterIPs[1].cidr`; empty
    /// when the problem is about the object as a whole.
    pub field: String,
    /// What is wrong, in words.
    pub reason: String,
    /// Where the object was read from.
    pub location: Location,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{} ({})", self.reason, self.location)
    }
}

/// Why nothing could be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading a file or listing a directory failed.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not well-formed YAML (or JSON).
    #[error("{}{}: YAML syntax error: {reason}", path.display(), position(*line, *column))]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// 1-based column of the error, when the parser knows it.
        column: Option<usize>,
        /// The parser's message.
        reason: String,
    },
    /// The `bgpd-ipam` file store in the datastore's directory cannot be read.
    #[error("reading the IPAM file store in {}: {reason}", path.display())]
    Ipam {
        /// The store's directory.
        path: PathBuf,
        /// The store's error.
        reason: String,
    },
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

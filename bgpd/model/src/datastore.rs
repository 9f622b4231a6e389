//! Where a program reads the cluster from: the one grammar of `bgpd run
//! --datastore` and of `bgpd-ipam`'s `datastore` (CNI configuration and
//! `--datastore`), so that one string means the same datastore to both.
//!
//! ```text
//! file:PATH
//! etcd:URL[,URL…][?prefix=/P/][&ipamPrefix=/Q/][&ca=FILE][&cert=FILE&key=FILE][&username=USER&password-file=FILE]
//! kubernetes
//! kubernetes:KUBECONFIG
//! ```
//!
//! The etcd options other than the two prefixes are [`bgpd_etcd::SpecOptions`];
//! what the string leaves out comes from Calico's `ETCD_*` variables, read
//! through an environment the caller passes ([`DatastoreSpec::parse_with_env`]).
//! A `password=` option is refused and never repeated in a message: the string
//! shows in process lists and logs.

use std::path::PathBuf;

/// The key prefix of bgpd's own objects in etcd when `?prefix=` is not given.
pub const DEFAULT_PREFIX: &str = "/calico/bgpd/";

/// The key prefix of the IPAM state in etcd when `?ipamPrefix=` is not given:
/// Calico's etcdv3 layout, where `bgpd-ipam` (and Calico's IPAM) write it.
pub const DEFAULT_IPAM_PREFIX: &str = "/calico/ipam/v2/";

/// What the parse errors list as the accepted forms.
const FORMS: &str = "file:PATH, etcd:http[s]://HOST:PORT[,…][?prefix=/KEY/PREFIX/][&ipamPrefix=/KEY/PREFIX/][&…], \
                     kubernetes or kubernetes:KUBECONFIG";

/// A parsed datastore string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatastoreSpec {
    /// `file:PATH`: a YAML file or a directory of them; the IPAM state is kept
    /// beside it.
    File(PathBuf),
    /// `etcd:URL[,URL…][?OPTIONS]`: etcd v3.
    Etcd {
        /// The client URLs (e.g. `https://10.0.0.1:2379`), with their TLS
        /// settings and credentials.
        access: bgpd_etcd::Access,
        /// Where bgpd's own objects are (YAML or JSON values); ends with `/`.
        prefix: String,
        /// Where the IPAM state is (blocks, affinities, handles); ends with `/`.
        ipam_prefix: String,
    },
    /// `kubernetes` or `kubernetes:KUBECONFIG`: the API server, with the client
    /// configuration of the kubeconfig file when one is named, else the
    /// in-cluster service account or `KUBECONFIG` / `~/.kube/config`.
    Kubernetes {
        /// The kubeconfig file of `kubernetes:KUBECONFIG`.
        kubeconfig: Option<PathBuf>,
    },
}

/// Why a datastore string is not understood: the string (a `password=` value
/// in it replaced) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("datastore {arg:?}: {reason}")]
pub struct SpecError {
    /// The string, with the value of a `password=` option redacted.
    pub arg: String,
    /// What is wrong.
    pub reason: String,
}

impl std::str::FromStr for DatastoreSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<DatastoreSpec, SpecError> {
        DatastoreSpec::parse(s)
    }
}

impl DatastoreSpec {
    /// Parses `arg` (see the [module](self) for the grammar), reading Calico's
    /// `ETCD_*` variables from the process's environment.
    pub fn parse(arg: &str) -> Result<DatastoreSpec, SpecError> {
        DatastoreSpec::parse_with_env(arg, |name| std::env::var(name).ok())
    }

    /// [`DatastoreSpec::parse`] with the environment read through `env`.
    pub fn parse_with_env(arg: &str, env: impl Fn(&str) -> Option<String>) -> Result<DatastoreSpec, SpecError> {
        let err = |reason: String| SpecError { arg: redacted(arg), reason };
        if let Some(path) = arg.strip_prefix("file:") {
            if path.is_empty() {
                return Err(err("file: needs a path (file:PATH)".into()));
            }
            return Ok(DatastoreSpec::File(PathBuf::from(path)));
        }
        if arg == "kubernetes" {
            return Ok(DatastoreSpec::Kubernetes { kubeconfig: None });
        }
        if let Some(path) = arg.strip_prefix("kubernetes:") {
            if path.is_empty() {
                return Err(err("kubernetes: needs the path of a kubeconfig file (or say just kubernetes)".into()));
            }
            return Ok(DatastoreSpec::Kubernetes { kubeconfig: Some(PathBuf::from(path)) });
        }
        let Some(rest) = arg.strip_prefix("etcd:") else {
            return Err(err(format!("expected {FORMS}")));
        };
        etcd(rest, env).map_err(err)
    }
}

/// The etcd datastore of `etcd:REST`.
fn etcd(rest: &str, env: impl Fn(&str) -> Option<String>) -> Result<DatastoreSpec, String> {
    let (urls, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut prefix = DEFAULT_PREFIX.to_string();
    let mut ipam_prefix = DEFAULT_IPAM_PREFIX.to_string();
    let mut security = bgpd_etcd::SpecOptions::default();
    let dir = |p: &str| if p.ends_with('/') { p.to_string() } else { format!("{p}/") };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!("the etcd option {pair:?} is not NAME=VALUE"));
        };
        match name {
            "prefix" | "ipamPrefix" if !value.starts_with('/') => {
                return Err(format!("the etcd {name} must start with /"));
            }
            "prefix" => prefix = dir(value),
            "ipamPrefix" => ipam_prefix = dir(value),
            _ => {
                if !security.take(name, value)? {
                    return Err(format!(
                        "unknown etcd option {name:?}: the options are prefix=/KEY/PREFIX/, ipamPrefix=/KEY/PREFIX/, {}",
                        bgpd_etcd::security::SPEC_OPTIONS
                    ));
                }
            }
        }
    }
    let access = security.resolve(urls, env)?;
    Ok(DatastoreSpec::Etcd { access, prefix, ipam_prefix })
}

/// `arg` with the value of a `password=` option (refused, but a message must
/// not repeat it) replaced.
fn redacted(arg: &str) -> String {
    let Some((head, query)) = arg.split_once('?') else { return arg.to_string() };
    let pairs: Vec<&str> =
        query.split('&').map(|p| if p.starts_with("password=") { "password=<redacted>" } else { p }).collect();
    format!("{head}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests;

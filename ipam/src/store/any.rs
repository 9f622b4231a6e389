//! Choosing a store from a `--datastore` / CNI `datastore` string.
//!
//! The `etcd:` options are parsed by `bgpd_etcd::SpecOptions`, as bgpd's
//! `--datastore` does, so both take the same TLS and auth options.

use std::path::PathBuf;

use super::etcd::EtcdStore;
use super::file::FileStore;
use super::kube_design::{self, Focus};
use super::kubernetes::KubeStore;
use super::owner::CalicoObject;
use super::{Key, Object, Scope, Store, StoreError, Versioned, Write};
use crate::design::{Design, DesignError};

/// A parsed datastore location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatastoreSpec {
    /// `file:PATH`: a YAML file or directory; IPAM state kept beside it.
    File(PathBuf),
    /// `etcd:URL[,URL…][?ca=…&cert=…&key=…&username=…&password-file=…]`: etcd
    /// v3, its endpoints with their TLS settings and credentials (what the
    /// string leaves out from Calico's `ETCD_*` environment variables; see
    /// [`bgpd_etcd::SpecOptions`]).
    Etcd(bgpd_etcd::Access),
    /// `kubernetes` or `kubernetes:KUBECONFIG`: Calico's CRDs through the API
    /// server, as bgpd's `--datastore kubernetes` reads them; the client from
    /// the kubeconfig file `KUBECONFIG` when given, else from `KUBECONFIG` /
    /// `~/.kube/config` / the in-cluster service account
    /// ([`kube_design::client`]).
    Kubernetes {
        /// The kubeconfig file of `kubernetes:PATH`.
        kubeconfig: Option<PathBuf>,
    },
}

/// What is wrong with a datastore string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    /// The string (a `password=` value in it replaced).
    pub spec: String,
    /// What is wrong.
    pub reason: String,
}

/// Why a datastore could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The string is not `file:PATH`, `etcd:URL[?OPTIONS]` or
    /// `kubernetes[:KUBECONFIG]`, or its etcd
    /// options are wrong.
    #[error("datastore {:?}: {}", .0.spec, .0.reason)]
    BadSpec(SpecProblem),
    /// The design could not be read.
    #[error(transparent)]
    Design(#[from] DesignError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl std::str::FromStr for DatastoreSpec {
    type Err = OpenError;
    fn from_str(s: &str) -> Result<Self, OpenError> {
        DatastoreSpec::parse_with_env(s, |name| std::env::var(name).ok())
    }
}

impl DatastoreSpec {
    /// Parses `file:PATH`, `etcd:URL[,URL…][?OPTIONS]` or
    /// `kubernetes[:KUBECONFIG]`, reading the environment through `env`.
    pub fn parse_with_env(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<DatastoreSpec, OpenError> {
        let bad = |reason: String| OpenError::BadSpec(SpecProblem { spec: redacted(s), reason });
        if let Some(p) = s.strip_prefix("file:") {
            if !p.is_empty() {
                return Ok(DatastoreSpec::File(PathBuf::from(p)));
            }
        }
        if s == "kubernetes" {
            return Ok(DatastoreSpec::Kubernetes { kubeconfig: None });
        }
        if let Some(p) = s.strip_prefix("kubernetes:") {
            if p.is_empty() {
                return Err(bad(
                    "\"kubernetes:\" needs the path of a kubeconfig file (or say just \"kubernetes\")".into()
                ));
            }
            return Ok(DatastoreSpec::Kubernetes { kubeconfig: Some(PathBuf::from(p)) });
        }
        let Some(rest) = s.strip_prefix("etcd:") else {
            return Err(bad("expected \"file:PATH\", \"etcd:http[s]://HOST:PORT[,…][?OPTIONS]\", \"kubernetes\" or \
                 \"kubernetes:KUBECONFIG\""
                .into()));
        };
        let (urls, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut options = bgpd_etcd::SpecOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(bad(format!("the etcd option {pair:?} is not NAME=VALUE")));
            };
            match options.take(name, value) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(bad(format!(
                        "unknown etcd option {name:?}: the options are {}",
                        bgpd_etcd::security::SPEC_OPTIONS
                    )))
                }
                Err(e) => return Err(bad(e)),
            }
        }
        options.resolve(urls, env).map(DatastoreSpec::Etcd).map_err(bad)
    }
}

/// `spec` with the value of a `password=` option (refused, but a message must
/// not repeat it) replaced.
fn redacted(spec: &str) -> String {
    let Some((head, query)) = spec.split_once('?') else { return spec.to_string() };
    let pairs: Vec<&str> =
        query.split('&').map(|p| if p.starts_with("password=") { "password=<redacted>" } else { p }).collect();
    format!("{head}?{}", pairs.join("&"))
}

/// Any of the stores, chosen at run time.
pub enum AnyStore {
    /// File store.
    File(FileStore),
    /// etcd store.
    Etcd(Box<EtcdStore>),
    /// Kubernetes store (Calico's CRDs).
    Kube(Box<KubeStore>),
}

impl DatastoreSpec {
    /// Opens the store and reads the design from it (the YAML for `file:`,
    /// Calico's v3 resource keys for `etcd:`, the API for `kubernetes`: every
    /// Node, no Pod; see [`DatastoreSpec::open_for`]).
    pub async fn open(&self) -> Result<(AnyStore, Design), OpenError> {
        self.open_for(&Focus::default()).await
    }

    /// [`DatastoreSpec::open`], reading from the API server only the Node and
    /// the Pod (with its Namespace) of `focus` (a CNI command needs no other).
    /// `file:` and `etcd:` read their whole design whatever `focus` says.
    pub async fn open_for(&self, focus: &Focus) -> Result<(AnyStore, Design), OpenError> {
        match self {
            DatastoreSpec::Kubernetes { kubeconfig } => {
                let client = kube_design::client(kubeconfig.as_deref()).await?;
                let design = kube_design::load_design(&client, focus).await?;
                Ok((AnyStore::Kube(Box::new(KubeStore::new(client))), design))
            }
            DatastoreSpec::File(p) => {
                let design = Design::load(p)?;
                Ok((AnyStore::File(FileStore::open(p)?), design))
            }
            DatastoreSpec::Etcd(access) => {
                let s = EtcdStore::connect_to(access, super::etcd::DEFAULT_PREFIX).await?;
                let design = s.load_design().await?;
                Ok((AnyStore::Etcd(Box::new(s)), design))
            }
        }
    }

    /// Opens the store alone, without reading the design: what releasing by
    /// handle needs (CNI `DEL` and `GC` must work while the design is broken).
    pub async fn open_store(&self) -> Result<AnyStore, OpenError> {
        Ok(match self {
            DatastoreSpec::File(p) => AnyStore::File(FileStore::open(p)?),
            DatastoreSpec::Etcd(access) => {
                AnyStore::Etcd(Box::new(EtcdStore::connect_to(access, super::etcd::DEFAULT_PREFIX).await?))
            }
            DatastoreSpec::Kubernetes { kubeconfig } => {
                AnyStore::Kube(Box::new(KubeStore::new(kube_design::client(kubeconfig.as_deref()).await?)))
            }
        })
    }
}

impl Store for AnyStore {
    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        match self {
            AnyStore::File(s) => s.get(key).await,
            AnyStore::Etcd(s) => s.get(key).await,
            AnyStore::Kube(s) => s.get(key).await,
        }
    }

    async fn list(&self, scope: &Scope) -> Result<Vec<Versioned<Object>>, StoreError> {
        match self {
            AnyStore::File(s) => s.list(scope).await,
            AnyStore::Etcd(s) => s.list(scope).await,
            AnyStore::Kube(s) => s.list(scope).await,
        }
    }

    async fn list_own(&self, scope: &Scope) -> Result<(Vec<Versioned<Object>>, Vec<CalicoObject>), StoreError> {
        match self {
            AnyStore::File(s) => s.list_own(scope).await,
            AnyStore::Etcd(s) => s.list_own(scope).await,
            AnyStore::Kube(s) => s.list_own(scope).await,
        }
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        match self {
            AnyStore::File(s) => s.commit(writes).await,
            AnyStore::Etcd(s) => s.commit(writes).await,
            AnyStore::Kube(s) => s.commit(writes).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(s: &str, env: &[(&str, &str)]) -> Result<DatastoreSpec, OpenError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        DatastoreSpec::parse_with_env(s, |name| env.get(name).cloned())
    }

    fn access(s: &str, env: &[(&str, &str)]) -> bgpd_etcd::Access {
        match parse(s, env) {
            Ok(DatastoreSpec::Etcd(a)) => a,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn file_and_plain_etcd() {
        assert_eq!(parse("file:/var/lib/ipam", &[]).unwrap(), DatastoreSpec::File("/var/lib/ipam".into()));
        let a = access("etcd:http://127.0.0.1:2379,http://10.0.0.2:2379", &[]);
        assert_eq!(a.endpoints, ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]);
        assert_eq!((a.tls, a.credentials), (None, None));
    }

    #[test]
    fn kubernetes_with_and_without_a_kubeconfig() {
        assert_eq!(parse("kubernetes", &[]).unwrap(), DatastoreSpec::Kubernetes { kubeconfig: None });
        assert_eq!(
            parse("kubernetes:/etc/cni/net.d/bgpd-kubeconfig", &[]).unwrap(),
            DatastoreSpec::Kubernetes { kubeconfig: Some("/etc/cni/net.d/bgpd-kubeconfig".into()) }
        );
        for s in ["kubernetes:", "k8s", "Kubernetes", "kubernetes "] {
            let e = parse(s, &[]).expect_err(s).to_string();
            assert!(e.contains("kubernetes"), "{s}: {e}");
        }
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_is_named() {
        let spec = parse("kubernetes:/nonexistent/kubeconfig", &[]).unwrap();
        let Err(e) = spec.open().await else { panic!("opened") };
        assert!(e.to_string().contains("/nonexistent/kubeconfig"), "{e}");
    }

    #[test]
    fn etcd_tls_and_auth_options() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret").unwrap();
        let s = format!(
            "etcd:https://e:2379?ca=/ca.pem&cert=/c.pem&key=/c.key&username=ipam&password-file={}",
            pw.display()
        );
        let a = access(&s, &[]);
        let tls = a.tls.clone().unwrap();
        assert_eq!(tls.ca, Some("/ca.pem".into()));
        assert_eq!(tls.identity, Some(bgpd_etcd::ClientIdentity { cert: "/c.pem".into(), key: "/c.key".into() }));
        let c = a.credentials.clone().unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("ipam", "s3cret"));
        assert!(!format!("{a:?}").contains("s3cret"));

        // Calico's variables fill in what the string leaves out.
        let env = [
            ("ETCD_ENDPOINTS", "https://v:2379"),
            ("ETCD_CA_CERT_FILE", "/v/ca"),
            ("ETCD_USERNAME", "u"),
            ("ETCD_PASSWORD", "p"),
        ];
        let a = access("etcd:", &env);
        assert_eq!(a.endpoints, ["https://v:2379"]);
        assert_eq!(a.tls.unwrap().ca, Some("/v/ca".into()));
        assert_eq!(a.credentials.unwrap().username, "u");
    }

    #[test]
    fn errors_name_the_problem_and_not_the_password() {
        for (s, expected) in [
            ("etcd", "expected"),
            ("file:", "expected"),
            ("etcd:http://a:1,https://b:2", "mix http://"),
            ("etcd:http://a:1?prefix=/x/", "unknown etcd option \"prefix\""),
            ("etcd:http://a:1?password=hunter2", "password-file="),
            ("etcd:http://a:1?ca=/ca", "TLS needs https://"),
            ("etcd:https://a:1?key=/k", "needs its certificate"),
            ("etcd:", "ETCD_ENDPOINTS is not set"),
        ] {
            let e = parse(s, &[]).expect_err(s);
            assert!(matches!(e, OpenError::BadSpec(_)), "{s}: {e:?}");
            let text = e.to_string();
            assert!(text.contains(expected), "{s}: {text}");
            assert!(!text.contains("hunter2") && !format!("{e:?}").contains("hunter2"), "{text}");
        }
    }
}

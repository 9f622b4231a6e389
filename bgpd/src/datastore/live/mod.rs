//! Where the model comes from while the daemon runs: a file (watched with inotify), etcd v3
//! (get, then watch) or the Kubernetes API (watchers). Each backend is a task that
//! publishes a [`Feed`] on a `tokio::sync::watch` channel: the datastore's whole
//! content as [`Source`]s whenever it changed, and whether the datastore is
//! reachable. The daemon parses the sources with [`super::parse_sources`]; while the
//! datastore is unreachable the feed keeps the last content read, so the daemon keeps
//! running on its last good model.

mod etcd;
mod file;
mod kubernetes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::Source;

pub(crate) use etcd::next_events;
pub(crate) use kubernetes::client as kube_client;

/// The `--datastore` argument, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatastoreSpec {
    /// `file:PATH`: a YAML file or a directory of them, watched with inotify (a
    /// 500 ms poll as fallback), with the `bgpd-ipam` file store in the same
    /// directory if there is one.
    File(PathBuf),
    /// `etcd:URL[,URL…][?prefix=P][&ipamPrefix=Q][&ca=…&cert=…&key=…&username=…&password-file=…]`:
    /// objects stored as YAML or JSON under a key prefix, and the IPAM state
    /// (`bgpd-ipam`'s, Calico's etcdv3 layout) under another.
    Etcd {
        /// The client URLs (e.g. `https://10.0.0.1:2379`), with their TLS
        /// settings and credentials.
        access: bgpd_etcd::Access,
        /// The key prefix; ends with `/`.
        prefix: String,
        /// The key prefix of the IPAM state (`/calico/ipam/v2/` by default); ends
        /// with `/`.
        ipam_prefix: String,
    },
    /// `kubernetes`: the API server, from the in-cluster service account or
    /// `KUBECONFIG` / `~/.kube/config`.
    Kubernetes {
        /// The namespace whose Secrets hold BGP passwords (`POD_NAMESPACE`, else
        /// `kube-system`).
        secrets_namespace: String,
    },
}

/// Why a `--datastore` argument is not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--datastore {arg:?}: {reason}")]
pub struct SpecError {
    arg: String,
    reason: String,
}

impl DatastoreSpec {
    /// Parses `file:PATH`, `etcd:http://H:P[,…][?prefix=/p/][&ipamPrefix=/q/]` (TLS
    /// and auth options: [`bgpd_etcd::SpecOptions`]; what they leave out from
    /// Calico's `ETCD_*` environment variables) or `kubernetes`.
    /// `namespace` is where a Kubernetes datastore reads Secrets.
    pub fn parse(arg: &str, namespace: Option<&str>) -> Result<DatastoreSpec, SpecError> {
        DatastoreSpec::parse_with_env(arg, namespace, |name| std::env::var(name).ok())
    }

    /// [`DatastoreSpec::parse`] with the environment read through `env`.
    fn parse_with_env(
        arg: &str,
        namespace: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<DatastoreSpec, SpecError> {
        let err = |reason: &str| SpecError { arg: redacted(arg), reason: reason.to_string() };
        if let Some(path) = arg.strip_prefix("file:") {
            if path.is_empty() {
                return Err(err("file: needs a path"));
            }
            return Ok(DatastoreSpec::File(PathBuf::from(path)));
        }
        if arg == "kubernetes" {
            let ns = namespace.filter(|n| !n.is_empty()).unwrap_or("kube-system");
            return Ok(DatastoreSpec::Kubernetes { secrets_namespace: ns.to_string() });
        }
        let Some(rest) = arg.strip_prefix("etcd:") else {
            return Err(err(
                "expected file:PATH, etcd:http[s]://HOST:PORT[,…][?prefix=/KEY/PREFIX/][&ipamPrefix=/KEY/PREFIX/][&…] \
                 or kubernetes",
            ));
        };
        let (urls, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut prefix = etcd::DEFAULT_PREFIX.to_string();
        let mut ipam_prefix = etcd::DEFAULT_IPAM_PREFIX.to_string();
        let mut security = bgpd_etcd::SpecOptions::default();
        let dir = |p: &str| if p.ends_with('/') { p.to_string() } else { format!("{p}/") };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(err(&format!("the etcd option {pair:?} is not NAME=VALUE")));
            };
            match name {
                "prefix" | "ipamPrefix" if !value.starts_with('/') => {
                    return Err(err(&format!("the etcd {name} must start with /")))
                }
                "prefix" => prefix = dir(value),
                "ipamPrefix" => ipam_prefix = dir(value),
                _ => match security.take(name, value) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(err(&format!(
                            "unknown etcd option {name:?}: the options are prefix=/KEY/PREFIX/, \
                             ipamPrefix=/KEY/PREFIX/, {}",
                            bgpd_etcd::security::SPEC_OPTIONS
                        )))
                    }
                    Err(e) => return Err(err(&e)),
                },
            }
        }
        let access = security.resolve(urls, env).map_err(|e| err(&e))?;
        Ok(DatastoreSpec::Etcd { access, prefix, ipam_prefix })
    }
}

/// `arg` with the value of a `password=` option (refused, but a message must
/// not repeat it) replaced.
fn redacted(arg: &str) -> String {
    let Some((head, query)) = arg.split_once('?') else { return arg.to_string() };
    let pairs: Vec<String> = query
        .split('&')
        .map(|p| if p.starts_with("password=") { "password=<redacted>".to_string() } else { p.to_string() })
        .collect();
    format!("{head}?{}", pairs.join("&"))
}

/// What a datastore task publishes.
#[derive(Clone, Debug, Default)]
pub struct Feed {
    /// The datastore's content as last read completely; `None` until the first
    /// complete read. Replaced (a new `Arc`) only when the content changed.
    pub sources: Option<Arc<Vec<Source>>>,
    /// Per-entry faults the backend dealt with itself (an etcd value that is not
    /// YAML keeps its previous value), for `bgpd show config`.
    pub notes: Vec<String>,
    /// Set while the datastore cannot be read.
    pub unreachable: Option<Unreachable>,
}

/// The datastore cannot be read: since when and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreachable {
    /// When the datastore was first found unreachable (this outage).
    pub since: SystemTime,
    /// The last error.
    pub reason: String,
}

/// Publishing side, shared by the backends: changes the feed only when something
/// changed, so the daemon wakes up for real changes only.
pub(crate) struct Publisher {
    tx: watch::Sender<Feed>,
}

impl Publisher {
    /// Publishes new content (and marks the datastore reachable). Content equal to
    /// the last published one only clears the unreachable mark.
    pub(crate) fn content(&self, sources: Vec<Source>, notes: Vec<String>) {
        self.tx.send_if_modified(|f| {
            let same = f.sources.as_deref() == Some(&sources) && f.notes == notes;
            let was_down = f.unreachable.take().is_some();
            if !same {
                f.sources = Some(Arc::new(sources));
                f.notes = notes;
            }
            !same || was_down
        });
    }

    /// Marks the datastore reachable without new content (e.g. a resync that found
    /// nothing changed is reported through [`Publisher::content`] instead).
    pub(crate) fn reachable(&self) {
        self.tx.send_if_modified(|f| f.unreachable.take().is_some());
    }

    /// Marks the datastore unreachable; the content stays.
    pub(crate) fn unreachable(&self, reason: String) {
        self.tx.send_if_modified(|f| mark_unreachable(f, reason));
    }

    /// Publishes new content read while part of the datastore cannot be read (a
    /// Kubernetes kind whose watch fails, the others still read): the content is
    /// replaced and the datastore marked unreachable at once, in one change.
    pub(crate) fn partial_content(&self, sources: Vec<Source>, notes: Vec<String>, reason: String) {
        self.tx.send_if_modified(|f| {
            let same = f.sources.as_deref() == Some(&sources) && f.notes == notes;
            if !same {
                f.sources = Some(Arc::new(sources));
                f.notes = notes;
            }
            mark_unreachable(f, reason) || !same
        });
    }

    /// Whether the daemon has gone (the task can stop).
    pub(crate) fn closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Marks `f` unreachable for `reason` (keeping when the outage began); returns
/// whether that changed anything.
fn mark_unreachable(f: &mut Feed, reason: String) -> bool {
    match &mut f.unreachable {
        Some(u) if u.reason == reason => false,
        Some(u) => {
            u.reason = reason;
            true
        }
        None => {
            f.unreachable = Some(Unreachable { since: SystemTime::now(), reason });
            true
        }
    }
}

/// Retry delays after a failure: 0.5 s doubling up to 10 s.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff(Duration::from_millis(500))
    }

    /// The next delay.
    pub(crate) fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(10));
        d
    }
}

/// Starts the datastore task for `spec` and returns the feed it publishes. Must be
/// called inside a tokio runtime.
pub fn spawn(spec: &DatastoreSpec) -> watch::Receiver<Feed> {
    let (tx, rx) = watch::channel(Feed::default());
    let publisher = Publisher { tx };
    match spec.clone() {
        DatastoreSpec::File(path) => {
            tokio::spawn(file::run(path, publisher));
        }
        DatastoreSpec::Etcd { access, prefix, ipam_prefix } => {
            tokio::spawn(etcd::run(access, prefix, ipam_prefix, publisher));
        }
        DatastoreSpec::Kubernetes { secrets_namespace } => {
            tokio::spawn(kubernetes::run(secrets_namespace, publisher));
        }
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(endpoints: &[&str]) -> bgpd_etcd::Access {
        bgpd_etcd::Access { endpoints: endpoints.iter().map(|e| e.to_string()).collect(), tls: None, credentials: None }
    }

    /// Parses with the environment `env` instead of the process's.
    fn parse_env(arg: &str, env: &[(&str, &str)]) -> Result<DatastoreSpec, SpecError> {
        let env: std::collections::HashMap<String, String> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        DatastoreSpec::parse_with_env(arg, None, |name| env.get(name).cloned())
    }

    #[test]
    fn datastore_arguments() {
        assert_eq!(DatastoreSpec::parse("file:/etc/bgpd", None), Ok(DatastoreSpec::File("/etc/bgpd".into())));
        assert_eq!(
            parse_env("etcd:http://127.0.0.1:2379,http://10.0.0.2:2379", &[]),
            Ok(DatastoreSpec::Etcd {
                access: plain(&["http://127.0.0.1:2379", "http://10.0.0.2:2379"]),
                prefix: etcd::DEFAULT_PREFIX.into(),
                ipam_prefix: "/calico/ipam/v2/".into(),
            })
        );
        assert_eq!(
            parse_env("etcd:http://127.0.0.1:2379?prefix=/x/y", &[]),
            Ok(DatastoreSpec::Etcd {
                access: plain(&["http://127.0.0.1:2379"]),
                prefix: "/x/y/".into(),
                ipam_prefix: "/calico/ipam/v2/".into(),
            })
        );
        assert_eq!(
            parse_env("etcd:http://127.0.0.1:2379?ipamPrefix=/t/ipam&prefix=/t/bgpd/", &[]),
            Ok(DatastoreSpec::Etcd {
                access: plain(&["http://127.0.0.1:2379"]),
                prefix: "/t/bgpd/".into(),
                ipam_prefix: "/t/ipam/".into(),
            })
        );
        assert_eq!(
            DatastoreSpec::parse("kubernetes", Some("calico-system")),
            Ok(DatastoreSpec::Kubernetes { secrets_namespace: "calico-system".into() })
        );
        assert_eq!(
            DatastoreSpec::parse("kubernetes", None),
            Ok(DatastoreSpec::Kubernetes { secrets_namespace: "kube-system".into() })
        );
        for bad in [
            "file:",
            "etcd:",
            "etcd:127.0.0.1:2379",
            "etcd:http://h:1?prefix=x",
            "etcd:http://h:1?ipamPrefix=x",
            "etcd:http://h:1?foo=1",
            "etcd:http://h:1?prefix",
            "k8s",
        ] {
            assert!(parse_env(bad, &[]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn etcd_tls_and_auth_options() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let arg = format!(
            "etcd:https://10.0.0.1:2379,https://10.0.0.2:2379?prefix=/p/&ca=/etc/etcd/ca.pem&cert=/etc/etcd/c.pem\
             &key=/etc/etcd/c.key&username=bgpd&password-file={}",
            pw.display()
        );
        let Ok(DatastoreSpec::Etcd { access, prefix, .. }) = parse_env(&arg, &[]) else { panic!("{arg}") };
        assert_eq!(prefix, "/p/");
        assert_eq!(access.endpoints, ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]);
        assert_eq!(
            access.tls,
            Some(bgpd_etcd::Tls {
                ca: Some("/etc/etcd/ca.pem".into()),
                identity: Some(bgpd_etcd::ClientIdentity {
                    cert: "/etc/etcd/c.pem".into(),
                    key: "/etc/etcd/c.key".into()
                }),
            })
        );
        let credentials = access.credentials.clone().unwrap();
        assert_eq!((credentials.username.as_str(), credentials.password.expose()), ("bgpd", "s3cret"));
        assert!(!format!("{access:?}").contains("s3cret"), "the password shows in {access:?}");
    }

    #[test]
    fn etcd_settings_from_calicos_variables() {
        let env = [
            ("ETCD_ENDPOINTS", "https://e:2379"),
            ("ETCD_CA_CERT_FILE", "/ca"),
            ("ETCD_USERNAME", "calico"),
            ("ETCD_PASSWORD", "pw"),
        ];
        let Ok(DatastoreSpec::Etcd { access, .. }) = parse_env("etcd:?prefix=/q/", &env) else { panic!() };
        assert_eq!(access.endpoints, ["https://e:2379"]);
        assert_eq!(access.tls.unwrap().ca, Some("/ca".into()));
        assert_eq!(access.credentials.unwrap().username, "calico");
        // The string's endpoints and options win over the variables.
        let Ok(DatastoreSpec::Etcd { access, .. }) = parse_env("etcd:https://s:2379?ca=/s", &env) else { panic!() };
        assert_eq!((access.endpoints[0].as_str(), access.tls.unwrap().ca), ("https://s:2379", Some("/s".into())));
    }

    #[test]
    fn etcd_option_errors_name_the_problem() {
        for (arg, env, expected) in [
            ("etcd:http://a:1,https://b:2", &[][..], "mix http:// (http://a:1) and https:// (https://b:2)"),
            ("etcd:http://a:1?password=hunter2", &[], "password-file="),
            ("etcd:http://a:1?ca=/ca", &[], "TLS needs https:// endpoints"),
            ("etcd:https://a:1?cert=/c", &[], "needs its key"),
            ("etcd:https://a:1?username=u", &[], "needs a password"),
            (
                "etcd:http://a:1?password-file=/nonexistent/pw&username=u",
                &[],
                "password-file=/nonexistent/pw: cannot read",
            ),
            ("etcd:http://a:1?tls=1", &[], "unknown etcd option \"tls\""),
            ("etcd:", &[], "no etcd endpoint given (and ETCD_ENDPOINTS is not set)"),
            ("etcd:http://a:1", &[("ETCD_PASSWORD", "p")], "(ETCD_PASSWORD) needs a user"),
        ] {
            let e = parse_env(arg, env).expect_err(arg).to_string();
            assert!(e.contains(expected), "{arg}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn the_feed_changes_only_on_real_changes() {
        let (tx, mut rx) = watch::channel(Feed::default());
        let p = Publisher { tx };
        let src = || vec![Source { path: "a".into(), text: "x: 1".into() }];
        p.content(src(), vec![]);
        assert!(rx.has_changed().unwrap());
        let first = rx.borrow_and_update().sources.clone().unwrap();
        p.content(src(), vec![]);
        assert!(!rx.has_changed().unwrap(), "same content is no change");
        p.unreachable("down".into());
        assert!(rx.has_changed().unwrap());
        let since = rx.borrow_and_update().unreachable.clone().unwrap().since;
        p.unreachable("down".into());
        assert!(!rx.has_changed().unwrap(), "the same reason again is no change");
        p.unreachable("still down".into());
        assert_eq!(rx.borrow_and_update().unreachable.clone().unwrap().since, since, "since the outage began");
        p.content(src(), vec![]);
        let f = rx.borrow_and_update().clone();
        assert!(f.unreachable.is_none());
        assert!(Arc::ptr_eq(&first, f.sources.as_ref().unwrap()), "content kept, not replaced");
        let mut b = Backoff::new();
        let delays: Vec<u128> = (0..7).map(|_| b.next().as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
    }
}

//! How a client proves who it talks to and who it is: TLS (a CA bundle, and a
//! client certificate with its key for mutual TLS) and etcd's user/password
//! authentication; and the parsing of these settings where bgpd and `bgpd-ipam`
//! take them from, the options of an `etcd:` datastore string and Calico's
//! `ETCD_*` environment variables.
//!
//! The one datastore grammar of `bgpd --datastore` and `bgpd-ipam`'s
//! `datastore` (`bgpd_model::DatastoreSpec`) takes these options through
//! [`SpecOptions`].

use std::fmt;
use std::path::{Path, PathBuf};

/// A password. Its `Debug` does not show it, so that a settings struct holding
/// one can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps `password`.
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The password itself, to send to etcd.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// An etcd user and its password: the client authenticates with them and sends
/// the token etcd returns with every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The etcd user.
    pub username: String,
    /// Its password.
    pub password: Password,
}

/// A client certificate (PEM, the chain from the client's certificate up) and
/// its private key (PEM): mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate file.
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
}

/// TLS settings of `https://` endpoints. The files are read at each connect
/// (so renewed certificates are used from the next reconnection on).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// The CA bundle (PEM) that signed etcd's server certificates; `None`: the
    /// system's CA roots.
    pub ca: Option<PathBuf>,
    /// The client certificate and key, for an etcd with `--client-cert-auth`.
    pub identity: Option<ClientIdentity>,
}

/// Whether endpoints are plain-text or TLS: all of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`.
    Http,
    /// `https://`.
    Https,
}

/// The scheme of every endpoint of `endpoints` (`HOST:PORT` without a scheme is
/// http); an error when they mix http and https, or one is neither.
pub fn endpoints_scheme(endpoints: &[impl AsRef<str>]) -> Result<Scheme, String> {
    let mut http = Vec::new();
    let mut https = Vec::new();
    for e in endpoints {
        let e = e.as_ref();
        match e.split_once("://") {
            Some(("https", _)) => https.push(e),
            Some(("http", _)) | None => http.push(e),
            Some((other, _)) => return Err(format!("endpoint {e}: scheme {other}:// is neither http:// nor https://")),
        }
    }
    match (http.first(), https.first()) {
        (Some(h), Some(s)) => {
            Err(format!("the endpoints mix http:// ({h}) and https:// ({s}): all plain text or all TLS, not both"))
        }
        (None, Some(_)) => Ok(Scheme::Https),
        _ => Ok(Scheme::Http),
    }
}

/// etcd's endpoints and how to reach them, as a datastore string and the
/// environment give them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// The client URLs, all `http://` or all `https://`.
    pub endpoints: Vec<String>,
    /// TLS settings; `Some` exactly when the endpoints are `https://`.
    pub tls: Option<Tls>,
    /// User and password, when etcd has authentication enabled.
    pub credentials: Option<Credentials>,
}

impl Access {
    /// Connection options carrying this access's TLS settings and
    /// credentials, the rest default: a caller sets its own timeouts with
    /// `ConnectOptions { request_timeout, ..access.connect_options() }`.
    pub fn connect_options(&self) -> crate::ConnectOptions {
        crate::ConnectOptions {
            tls: self.tls.clone(),
            credentials: self.credentials.clone(),
            ..crate::ConnectOptions::default()
        }
    }
}

/// Calico's environment variables, read when a datastore string does not say.
pub mod env {
    /// Comma-separated client URLs, used when the string names none.
    pub const ENDPOINTS: &str = "ETCD_ENDPOINTS";
    /// The CA bundle file.
    pub const CA_CERT_FILE: &str = "ETCD_CA_CERT_FILE";
    /// The client certificate file.
    pub const CERT_FILE: &str = "ETCD_CERT_FILE";
    /// The client key file.
    pub const KEY_FILE: &str = "ETCD_KEY_FILE";
    /// The etcd user.
    pub const USERNAME: &str = "ETCD_USERNAME";
    /// The etcd user's password.
    pub const PASSWORD: &str = "ETCD_PASSWORD";
}

/// The TLS and authentication options of an `etcd:` datastore string
/// (`?ca=FILE&cert=FILE&key=FILE&username=USER&password-file=FILE`), collected
/// one at a time, then completed from the environment by
/// [`SpecOptions::resolve`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecOptions {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    username: Option<String>,
    password_file: Option<PathBuf>,
}

/// The option names [`SpecOptions::take`] knows, for messages.
pub const SPEC_OPTIONS: &str = "ca=FILE, cert=FILE, key=FILE, username=USER, password-file=FILE";

impl SpecOptions {
    /// Takes the option `name=value` when it is one of [`SPEC_OPTIONS`]
    /// (`Ok(true)`); `Ok(false)` for a name it does not know, left to the caller.
    /// A password itself is refused: a datastore string shows up in process
    /// lists and logs.
    pub fn take(&mut self, name: &str, value: &str) -> Result<bool, String> {
        let slot = match name {
            "ca" => &mut self.ca,
            "cert" => &mut self.cert,
            "key" => &mut self.key,
            "password-file" => &mut self.password_file,
            "username" => {
                if value.is_empty() {
                    return Err("username= needs a user name".into());
                }
                self.username = Some(value.to_string());
                return Ok(true);
            }
            "password" => {
                return Err(format!(
                    "password= is not accepted (the string shows in process lists and logs): use password-file=FILE or \
                     {}",
                    env::PASSWORD
                ))
            }
            _ => return Ok(false),
        };
        if value.is_empty() {
            return Err(format!("{name}= needs a file path"));
        }
        *slot = Some(PathBuf::from(value));
        Ok(true)
    }

    /// The endpoints (`urls`, comma-separated, else `ETCD_ENDPOINTS`) with their
    /// TLS settings and credentials: each setting the string does not give comes
    /// from Calico's variable (`ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE` with
    /// `ETCD_KEY_FILE`, `ETCD_USERNAME`, `ETCD_PASSWORD`; empty means unset),
    /// read through `env`. Reads the password file. Errors name the option or
    /// variable at fault.
    pub fn resolve(self, urls: &str, env: impl Fn(&str) -> Option<String>) -> Result<Access, String> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let (urls, urls_from) = match urls.trim() {
            "" => match env(env::ENDPOINTS) {
                Some(u) => (u, env::ENDPOINTS),
                None => return Err(format!("no etcd endpoint given (and {} is not set)", env::ENDPOINTS)),
            },
            u => (u.to_string(), "the datastore string"),
        };
        let endpoints: Vec<String> = urls.split(',').map(str::trim).map(str::to_string).collect();
        for e in &endpoints {
            let url = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://"));
            if url.is_none_or(|rest| rest.is_empty() || rest.starts_with(':')) {
                return Err(format!(
                    "etcd endpoint {e:?} (from {urls_from}) is not a URL such as http://127.0.0.1:2379 or \
                     https://etcd-1:2379"
                ));
            }
        }
        let scheme = endpoints_scheme(&endpoints)?;

        // A setting named: the option's, else the variable's, with where it came from.
        let from = |option: Option<PathBuf>, name: &'static str, var: &'static str| match option {
            Some(p) => Some((p, name)),
            None => env(var).map(|v| (PathBuf::from(v), var)),
        };
        let ca = from(self.ca, "ca=", env::CA_CERT_FILE);
        // The certificate and its key come together, both from the string or
        // both from the environment.
        let (cert, key) = if self.cert.is_some() || self.key.is_some() {
            (self.cert.map(|p| (p, "cert=")), self.key.map(|p| (p, "key=")))
        } else {
            (from(None, "cert=", env::CERT_FILE), from(None, "key=", env::KEY_FILE))
        };
        let identity = match (cert, key) {
            (Some((cert, _)), Some((key, _))) => Some(ClientIdentity { cert, key }),
            (Some((_, c)), None) => {
                return Err(format!("a client certificate ({c}) needs its key (key=FILE or {})", env::KEY_FILE))
            }
            (None, Some((_, k))) => {
                return Err(format!("a client key ({k}) needs its certificate (cert=FILE or {})", env::CERT_FILE))
            }
            (None, None) => None,
        };
        let tls = match scheme {
            Scheme::Https => Some(Tls { ca: ca.map(|(p, _)| p), identity }),
            Scheme::Http => {
                if let Some((_, name)) = ca {
                    return Err(format!(
                        "a CA bundle is given ({name}) but the etcd endpoints are http://: TLS needs https:// endpoints"
                    ));
                }
                if identity.is_some() {
                    return Err(
                        "a client certificate is given but the etcd endpoints are http://: TLS needs https:// \
                                endpoints"
                            .into(),
                    );
                }
                None
            }
        };

        let username =
            self.username.map(|u| (u, "username=")).or_else(|| env(env::USERNAME).map(|u| (u, env::USERNAME)));
        let password = match self.password_file {
            Some(path) => Some((read_password(&path)?, "password-file=")),
            None => env(env::PASSWORD).map(|p| (Password::new(p), env::PASSWORD)),
        };
        let credentials = match (username, password) {
            (Some((username, _)), Some((password, _))) => Some(Credentials { username, password }),
            (Some((_, u)), None) => {
                return Err(format!("an etcd user ({u}) needs a password (password-file=FILE or {})", env::PASSWORD))
            }
            (None, Some((_, p))) => {
                return Err(format!("an etcd password ({p}) needs a user (username=USER or {})", env::USERNAME))
            }
            (None, None) => None,
        };
        Ok(Access { endpoints, tls, credentials })
    }
}

/// The password in `path`: the file's text without its final line ending.
fn read_password(path: &Path) -> Result<Password, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("password-file={}: cannot read it: {e}", path.display()))?;
    let password = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if password.is_empty() {
        return Err(format!("password-file={}: the file is empty", path.display()));
    }
    Ok(Password::new(password))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(query: &[(&str, &str)], urls: &str, env: &[(&str, &str)]) -> Result<Access, String> {
        let mut o = SpecOptions::default();
        for (name, value) in query {
            assert!(o.take(name, value)?, "{name} is an option");
        }
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        o.resolve(urls, |name| env.get(name).cloned())
    }

    fn err(query: &[(&str, &str)], urls: &str, env: &[(&str, &str)]) -> String {
        match resolve(query, urls, env) {
            Err(e) => e,
            Ok(a) => panic!("{query:?} {urls} {env:?}: accepted as {a:?}"),
        }
    }

    #[test]
    fn plain_endpoints_need_nothing() {
        let a = resolve(&[], "http://a:2379, http://b:2379", &[]).unwrap();
        assert_eq!(
            a,
            Access { endpoints: vec!["http://a:2379".into(), "http://b:2379".into()], tls: None, credentials: None }
        );
    }

    #[test]
    fn every_option_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let pw = pw.to_str().unwrap();
        let q = [
            ("ca", "/e/ca.pem"),
            ("cert", "/e/c.pem"),
            ("key", "/e/k.pem"),
            ("username", "bgpd"),
            ("password-file", pw),
        ];
        let a = resolve(&q, "https://e:2379", &[]).unwrap();
        assert_eq!(
            a.tls,
            Some(Tls {
                ca: Some("/e/ca.pem".into()),
                identity: Some(ClientIdentity { cert: "/e/c.pem".into(), key: "/e/k.pem".into() }),
            })
        );
        assert_eq!(a.credentials, Some(Credentials { username: "bgpd".into(), password: Password::new("s3cret") }));
        // The password never shows in Debug.
        let debug = format!("{a:?}");
        assert!(!debug.contains("s3cret") && debug.contains("<redacted>"), "{debug}");
        // https without a CA: the system roots.
        assert_eq!(resolve(&[], "https://e:2379", &[]).unwrap().tls, Some(Tls::default()));
    }

    #[test]
    fn calico_variables_are_the_defaults() {
        let env = [
            ("ETCD_ENDPOINTS", "https://e1:2379,https://e2:2379"),
            ("ETCD_CA_CERT_FILE", "/env/ca"),
            ("ETCD_CERT_FILE", "/env/cert"),
            ("ETCD_KEY_FILE", "/env/key"),
            ("ETCD_USERNAME", "calico"),
            ("ETCD_PASSWORD", "pw"),
        ];
        let a = resolve(&[], "", &env).unwrap();
        assert_eq!(a.endpoints, ["https://e1:2379", "https://e2:2379"]);
        let tls = a.tls.unwrap();
        assert_eq!(tls.ca, Some("/env/ca".into()));
        assert_eq!(tls.identity, Some(ClientIdentity { cert: "/env/cert".into(), key: "/env/key".into() }));
        assert_eq!(a.credentials, Some(Credentials { username: "calico".into(), password: Password::new("pw") }));

        // The string wins, setting by setting; the certificate and key as a pair.
        let q = [("ca", "/s/ca"), ("cert", "/s/cert"), ("key", "/s/key"), ("username", "bgpd")];
        let a = resolve(&q, "https://s:2379", &env).unwrap();
        assert_eq!(a.endpoints, ["https://s:2379"]);
        let tls = a.tls.unwrap();
        assert_eq!(tls.ca, Some("/s/ca".into()));
        assert_eq!(tls.identity, Some(ClientIdentity { cert: "/s/cert".into(), key: "/s/key".into() }));
        assert_eq!(a.credentials.unwrap().username, "bgpd");
        assert!(err(&[("cert", "/s/cert")], "https://s:2379", &env).contains("needs its key"));

        // Empty variables are unset.
        let e = err(&[], "", &[("ETCD_ENDPOINTS", "")]);
        assert!(e.contains("no etcd endpoint"), "{e}");
    }

    #[test]
    fn mixed_or_bad_endpoints_are_refused() {
        let e = err(&[], "http://a:1,https://b:2", &[]);
        assert!(e.contains("mix http:// (http://a:1) and https:// (https://b:2)"), "{e}");
        for bad in ["a:1", "ftp://a:1", "http://", "https://:2379", "http://a:1,"] {
            let e = err(&[], bad, &[]);
            assert!(e.contains("is not a URL"), "{bad}: {e}");
        }
        let e = err(&[], "", &[("ETCD_ENDPOINTS", "http://a:1,https://b:2")]);
        assert!(e.contains("mix"), "{e}");
        let e = err(&[], "", &[("ETCD_ENDPOINTS", "a:1")]);
        assert!(e.contains("from ETCD_ENDPOINTS"), "{e}");
        assert_eq!(endpoints_scheme(&["a:1", "http://b:2"]), Ok(Scheme::Http));
        assert!(endpoints_scheme(&["unix:///x"]).unwrap_err().contains("unix://"));
    }

    #[test]
    fn tls_files_with_http_endpoints_are_refused() {
        let e = err(&[("ca", "/ca")], "http://a:1", &[]);
        assert!(e.contains("CA bundle is given (ca=)") && e.contains("https://"), "{e}");
        let e = err(&[], "http://a:1", &[("ETCD_CA_CERT_FILE", "/ca")]);
        assert!(e.contains("(ETCD_CA_CERT_FILE)"), "{e}");
        let e = err(&[("cert", "/c"), ("key", "/k")], "http://a:1", &[]);
        assert!(e.contains("client certificate is given"), "{e}");
    }

    #[test]
    fn half_settings_are_refused() {
        assert!(err(&[("key", "/k")], "https://a:1", &[]).contains("needs its certificate"));
        assert!(err(&[], "https://a:1", &[("ETCD_CERT_FILE", "/c")]).contains("ETCD_KEY_FILE"));
        let e = err(&[("username", "u")], "http://a:1", &[]);
        assert!(e.contains("(username=) needs a password"), "{e}");
        let e = err(&[], "http://a:1", &[("ETCD_PASSWORD", "p")]);
        assert!(e.contains("(ETCD_PASSWORD) needs a user"), "{e}");
    }

    #[test]
    fn option_values_are_checked() {
        let mut o = SpecOptions::default();
        assert_eq!(o.take("prefix", "/x/"), Ok(false), "not ours");
        for name in ["ca", "cert", "key", "password-file"] {
            assert!(o.take(name, "").unwrap_err().contains("needs a file path"));
        }
        assert!(o.take("username", "").is_err());
        let e = o.take("password", "hunter2").unwrap_err();
        assert!(e.contains("password-file=") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_password_file_is_read_once_and_named_when_it_cannot_be() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let q = [("username", "u"), ("password-file", missing.to_str().unwrap())];
        let e = err(&q, "http://a:1", &[]);
        assert!(e.starts_with(&format!("password-file={}: cannot read it", missing.display())), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = err(&[("username", "u"), ("password-file", empty.to_str().unwrap())], "http://a:1", &[]);
        assert!(e.contains("empty"), "{e}");
        let crlf = dir.path().join("crlf");
        std::fs::write(&crlf, "p w\r\n").unwrap();
        let a = resolve(&[("username", "u"), ("password-file", crlf.to_str().unwrap())], "http://a:1", &[]).unwrap();
        assert_eq!(a.credentials.unwrap().password.expose(), "p w");
    }
}

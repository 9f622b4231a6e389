//! The client against a real etcd serving TLS (`--cert-file`, `--key-file`;
//! with `--client-cert-auth` and `--trusted-ca-file` for mutual TLS) and with
//! authentication enabled through the client's own Auth calls (Debian has no
//! `etcdctl` beside `etcd`). The certificates are made per test by the `openssl`
//! command, which every machine has, rather than by a crate: no new dependency
//! for the tests, and the commands below say exactly what the certificates are.
//! Without `etcd` or `openssl` a test is skipped through `testgate` (a failure
//! when `CI` is set).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bgpd_etcd::{
    Call, Client, ClientIdentity, ConnectOptions, Credentials, Error, Password, SpecOptions, Tls, WatchMessage,
    WatchSpec,
};
use common::{Etcd, PATIENCE};

/// A certificate authority with a server certificate for 127.0.0.1 and a
/// client certificate, each with its key (EC P-256; PKCS#8 PEM as OpenSSL 3
/// writes it), made with `openssl req` and `openssl x509` in a temporary
/// directory.
struct Pki {
    dir: tempfile::TempDir,
}

const CA_CONFIG: &str = "[req]
distinguished_name = dn
prompt = no
x509_extensions = ext
[dn]
CN = bgpd-etcd-test-ca
[ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
";

/// A leaf's request; its extensions come from [`LEAF_EXTENSIONS`] when signed.
const LEAF_CONFIG: &str = "[req]
distinguished_name = dn
prompt = no
[dn]
CN = bgpd-etcd-test
";

/// Both usages on both leaves: etcd's Go TLS checks `clientAuth` on client
/// certificates, rustls checks `serverAuth` on the server's.
const LEAF_EXTENSIONS: &str = "[ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1
authorityKeyIdentifier = keyid
";

impl Pki {
    fn new() -> Pki {
        let pki = Pki { dir: tempfile::tempdir().expect("tempdir") };
        for (name, text) in [("ca.cnf", CA_CONFIG), ("leaf.cnf", LEAF_CONFIG), ("ext.cnf", LEAF_EXTENSIONS)] {
            std::fs::write(pki.file(name), text).expect("write an openssl config");
        }
        // openssl req -x509 -new -config ca.cnf -days 2 -newkey ec \
        //   -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        pki.openssl(
            &[
                &["req", "-x509", "-new", "-config", "ca.cnf", "-days", "2"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat(),
        );
        for (serial, leaf) in [("2", "server"), ("3", "client")] {
            let (key, csr, pem) = (format!("{leaf}.key"), format!("{leaf}.csr"), format!("{leaf}.pem"));
            // openssl req -new -config leaf.cnf -newkey ec … -keyout LEAF.key -out LEAF.csr
            pki.openssl(&[&["req", "-new", "-config", "leaf.cnf"], &ec[..], &["-keyout", &key, "-out", &csr]].concat());
            // openssl x509 -req -in LEAF.csr -CA ca.pem -CAkey ca.key -set_serial N -days 2 \
            //   -extfile ext.cnf -extensions ext -out LEAF.pem
            pki.openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-extensions",
                "ext",
                "-out",
                &pem,
            ]);
        }
        pki
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(self.dir.path()).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// etcd's arguments: TLS with the server certificate; with
    /// `client_cert_auth`, a client certificate signed by this CA required.
    fn server_args(&self, client_cert_auth: bool) -> Vec<String> {
        let mut args = vec![
            format!("--cert-file={}", self.file("server.pem").display()),
            format!("--key-file={}", self.file("server.key").display()),
        ];
        if client_cert_auth {
            args.push("--client-cert-auth".into());
            args.push(format!("--trusted-ca-file={}", self.file("ca.pem").display()));
        }
        args
    }

    /// Client options trusting this CA, with this PKI's client certificate
    /// when `client_cert`.
    fn client(&self, client_cert: bool) -> ConnectOptions {
        let identity =
            client_cert.then(|| ClientIdentity { cert: self.file("client.pem"), key: self.file("client.key") });
        ConnectOptions { tls: Some(Tls { ca: Some(self.file("ca.pem")), identity }), ..ConnectOptions::default() }
    }
}

/// The next message of `watch`; fails the test when none comes.
async fn next(watch: &mut bgpd_etcd::Watch) -> WatchMessage {
    match tokio::time::timeout(PATIENCE, watch.next()).await {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => panic!("the watch stream ended"),
        Ok(Err(e)) => panic!("watch: {e}"),
        Err(_) => panic!("no watch message within {PATIENCE:?}"),
    }
}

/// Puts, gets and watches through `c`: the calls work.
async fn put_get_watch(c: &Client) {
    let (mut w, id) = c.watch(WatchSpec::prefix("/tls/")).await.expect("watch");
    let r = c.put("/tls/k", "v").await.expect("put");
    assert_eq!(c.get("/tls/k").await.expect("get").expect("/tls/k").value, b"v");
    match next(&mut w).await {
        WatchMessage::Events { watch_id, revision, events } => {
            assert_eq!((watch_id, revision), (id, r));
            assert_eq!(events[0].kv().key, b"/tls/k");
        }
        m => panic!("not events: {m:?}"),
    }
}

/// An error of `connect`, or else of the first request (with TLS 1.3 the
/// server may refuse the client's certificate only after the client thinks
/// the handshake is done).
async fn first_error(url: &str, opts: ConnectOptions) -> Error {
    match Client::connect(&[url], opts).await {
        Err(e) => e,
        Ok(c) => c.get("k").await.expect_err("a request without a client certificate"),
    }
}

#[tokio::test]
async fn tls_with_the_ca_puts_gets_and_watches() {
    if !testgate::require_cmds("tls_with_the_ca_puts_gets_and_watches", &["etcd", "openssl"]) {
        return;
    }
    let pki = Pki::new();
    let etcd = Etcd::launch(true, &pki.server_args(false), pki.client(false)).await;
    assert!(etcd.url.starts_with("https://"));
    let c = Client::connect(&[&etcd.url], pki.client(false)).await.expect("connect over TLS");
    put_get_watch(&c).await;
}

#[tokio::test]
async fn a_server_certificate_of_another_ca_fails_the_handshake() {
    if !testgate::require_cmds("a_server_certificate_of_another_ca_fails_the_handshake", &["etcd", "openssl"]) {
        return;
    }
    let (pki, other) = (Pki::new(), Pki::new());
    // The probe connects with the right CA: this etcd serves TLS.
    let etcd = Etcd::launch(true, &pki.server_args(false), pki.client(false)).await;
    let e = Client::connect(&[&etcd.url], other.client(false)).await.expect_err("a server of another CA");
    let Error::Transport { call: Call::Connect, reason, .. } = &e else { panic!("{e:?}") };
    // Both CAs have the same name: the signature is what does not match.
    assert!(reason.contains("invalid peer certificate: BadSignature"), "{e}");
    // And plain text to a TLS port is no answer either, not a hang.
    let plain = etcd.url.replace("https://", "http://");
    let opts = ConnectOptions { request_timeout: Duration::from_secs(3), ..ConnectOptions::default() };
    let e = first_error(&plain, opts).await;
    assert!(matches!(e, Error::Transport { .. } | Error::Timeout { .. }), "{e:?}");
}

#[tokio::test]
async fn a_client_certificate_is_required_when_etcd_asks_for_one() {
    if !testgate::require_cmds("a_client_certificate_is_required_when_etcd_asks_for_one", &["etcd", "openssl"]) {
        return;
    }
    let (pki, other) = (Pki::new(), Pki::new());
    let etcd = Etcd::launch(true, &pki.server_args(true), pki.client(true)).await;

    let e = first_error(&etcd.url, pki.client(false)).await;
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    // Go's TLS 1.3 server (etcd 3.4, Go 1.19) says BadCertificate where TLS 1.3
    // has CertificateRequired.
    let text = e.to_string();
    assert!(text.contains("TLS, after the handshake: received fatal alert: BadCertificate"), "{e}");
    assert!(text.contains("no client certificate is configured"), "{e}");
    // A client certificate of another CA is refused too.
    let opts = ConnectOptions {
        tls: Some(Tls {
            ca: Some(pki.file("ca.pem")),
            identity: Some(ClientIdentity { cert: other.file("client.pem"), key: other.file("client.key") }),
        }),
        ..ConnectOptions::default()
    };
    let e = first_error(&etcd.url, opts).await;
    let text = e.to_string();
    assert!(text.contains("received fatal alert: BadCertificate") && !text.contains("no client certificate"), "{e}");

    let c = Client::connect(&[&etcd.url], pki.client(true)).await.expect("connect with the client certificate");
    put_get_watch(&c).await;

    // A key that is not the certificate's is named before any connection.
    let opts = ConnectOptions {
        tls: Some(Tls {
            ca: Some(pki.file("ca.pem")),
            identity: Some(ClientIdentity { cert: pki.file("client.pem"), key: other.file("client.key") }),
        }),
        ..ConnectOptions::default()
    };
    let e = Client::connect(&[&etcd.url], opts).await.expect_err("a key of another certificate");
    let Error::TlsFile { what: "client certificate", path, reason } = &e else { panic!("{e:?}") };
    assert_eq!(path, &pki.file("client.pem"));
    assert!(reason.contains("does not belong to the key") && reason.contains("KeyMismatch"), "{e}");
}

/// Enables authentication through `c`: a `root` user with the `root` role, as
/// etcd requires, then `Auth.AuthEnable`.
async fn enable_auth(c: &Client, password: &Password) {
    c.user_add("root", password).await.expect("add the root user");
    c.role_add("root").await.expect("add the root role");
    c.user_grant_role("root", "root").await.expect("grant root the root role");
    c.auth_enable().await.expect("enable authentication");
}

fn credentials(password: &str) -> Option<Credentials> {
    Some(Credentials { username: "root".into(), password: Password::new(password) })
}

#[tokio::test]
async fn user_and_password() {
    let Some(etcd) = Etcd::start("user_and_password").await else { return };
    let admin = etcd.client().await;
    admin.put("/a/k", "v").await.expect("put before auth");
    enable_auth(&admin, &Password::new("right horse")).await;

    // Authentication is on: a client without a token is refused.
    let e = admin.get("/a/k").await.expect_err("a request without a token");
    assert!(e.to_string().contains("user name is empty"), "{e}");

    let opts = ConnectOptions { credentials: credentials("right horse"), ..ConnectOptions::default() };
    let c = Client::connect(&[&etcd.url], opts).await.expect("connect with the right password");
    assert_eq!(c.authentications(), 1);
    assert_eq!(c.get("/a/k").await.unwrap().expect("/a/k").value, b"v");
    put_get_watch(&c).await;
    assert_eq!(c.authentications(), 1, "one token for every request");

    let opts = ConnectOptions { credentials: credentials("wrong horse"), ..ConnectOptions::default() };
    let e = Client::connect(&[&etcd.url], opts).await.expect_err("a wrong password");
    assert!(matches!(e, Error::Status { call: Call::Authenticate, .. }), "{e:?}");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert!(!format!("{e} {e:?}").contains("wrong horse"), "the password shows: {e:?}");
}

/// Waits until etcd has forgotten the tokens of a `--auth-token-ttl=1` etcd:
/// simple tokens expire after the TTL without use, checked every second.
async fn let_tokens_expire() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::test]
async fn an_expired_token_is_renewed_over_mutual_tls() {
    if !testgate::require_cmds("an_expired_token_is_renewed_over_mutual_tls", &["etcd", "openssl"]) {
        return;
    }
    let pki = Pki::new();
    let mut args = pki.server_args(true);
    args.extend(["--auth-token=simple".into(), "--auth-token-ttl=1".into(), "--bcrypt-cost=4".into()]);
    let etcd = Etcd::launch(true, &args, pki.client(true)).await;
    enable_auth(&Client::connect(&[&etcd.url], pki.client(true)).await.unwrap(), &Password::new("pw")).await;

    let opts = ConnectOptions { credentials: credentials("pw"), ..pki.client(true) };
    let c = Client::connect(&[&etcd.url], opts).await.expect("connect with the password");
    let r = c.put("/e/k", "1").await.expect("put");
    assert_eq!(c.authentications(), 1);

    let_tokens_expire().await;
    assert_eq!(c.get("/e/k").await.expect("get after the token expired").expect("/e/k").mod_revision, r);
    assert_eq!(c.authentications(), 2, "etcd refused the expired token, the client got a new one");

    // A watch checks its token when it is created.
    let_tokens_expire().await;
    let (mut w, _) = c.watch(WatchSpec::prefix("/e/")).await.expect("watch after the token expired");
    assert_eq!(c.authentications(), 3, "etcd refused the watch's expired token, the client got a new one");
    let r = c.put("/e/k", "2").await.expect("put");
    assert!(matches!(next(&mut w).await, WatchMessage::Events { revision, .. } if revision == r));
}

#[tokio::test]
async fn a_datastore_strings_options_reach_etcd() {
    if !testgate::require_cmds("a_datastore_strings_options_reach_etcd", &["etcd", "openssl"]) {
        return;
    }
    let pki = Pki::new();
    let args = [pki.server_args(true), vec!["--bcrypt-cost=4".into()]].concat();
    let etcd = Etcd::launch(true, &args, pki.client(true)).await;
    enable_auth(&Client::connect(&[&etcd.url], pki.client(true)).await.unwrap(), &Password::new("pw")).await;
    std::fs::write(pki.file("password"), "pw\n").unwrap();

    // What bgpd and bgpd-ipam do with `etcd:URL?OPTIONS`: the options, then
    // Calico's variables for the rest (here the user), then connect.
    let mut options = SpecOptions::default();
    for (name, file) in [("ca", "ca.pem"), ("cert", "client.pem"), ("key", "client.key"), ("password-file", "password")]
    {
        assert!(options.take(name, pki.file(file).to_str().unwrap()).unwrap());
    }
    let access = options
        .resolve(&etcd.url, |name| (name == "ETCD_USERNAME").then(|| "root".to_string()))
        .expect("the options and ETCD_USERNAME");
    let opts = ConnectOptions { tls: access.tls, credentials: access.credentials, ..ConnectOptions::default() };
    let c = Client::connect(&access.endpoints, opts).await.expect("connect as the datastore string says");
    assert_eq!(c.authentications(), 1);
    put_get_watch(&c).await;
}

//! The cases of bgpd's and `bgpd-ipam`'s former parsers, merged: every string
//! either of them was tested with is tested here.

use std::collections::HashMap;

use bgpd_etcd::{Access, ClientIdentity, Tls};

use super::*;

/// Parses with the environment `env` instead of the process's.
fn parse(arg: &str, env: &[(&str, &str)]) -> Result<DatastoreSpec, SpecError> {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    DatastoreSpec::parse_with_env(arg, |name| env.get(name).cloned())
}

fn plain(endpoints: &[&str]) -> Access {
    Access { endpoints: endpoints.iter().map(|e| e.to_string()).collect(), tls: None, credentials: None }
}

fn access(arg: &str, env: &[(&str, &str)]) -> Access {
    match parse(arg, env) {
        Ok(DatastoreSpec::Etcd { access, .. }) => access,
        other => panic!("{arg}: {other:?}"),
    }
}

#[test]
fn file() {
    assert_eq!(parse("file:/etc/bgpd", &[]), Ok(DatastoreSpec::File("/etc/bgpd".into())));
    assert_eq!(parse("file:/var/lib/ipam", &[]), Ok(DatastoreSpec::File("/var/lib/ipam".into())));
    assert_eq!("file:/etc/bgpd".parse::<DatastoreSpec>(), Ok(DatastoreSpec::File("/etc/bgpd".into())));
    let e = parse("file:", &[]).unwrap_err();
    assert_eq!(e.reason, "file: needs a path (file:PATH)");
}

#[test]
fn kubernetes_with_and_without_a_kubeconfig() {
    assert_eq!(parse("kubernetes", &[]), Ok(DatastoreSpec::Kubernetes { kubeconfig: None }));
    assert_eq!(
        parse("kubernetes:/etc/cni/net.d/bgpd-kubeconfig", &[]),
        Ok(DatastoreSpec::Kubernetes { kubeconfig: Some("/etc/cni/net.d/bgpd-kubeconfig".into()) })
    );
    for s in ["kubernetes:", "k8s", "Kubernetes", "kubernetes "] {
        let e = parse(s, &[]).expect_err(s).to_string();
        assert!(e.contains("kubernetes"), "{s}: {e}");
    }
}

#[test]
fn etcd_endpoints_and_prefixes() {
    assert_eq!(
        parse("etcd:http://127.0.0.1:2379,http://10.0.0.2:2379", &[]),
        Ok(DatastoreSpec::Etcd {
            access: plain(&["http://127.0.0.1:2379", "http://10.0.0.2:2379"]),
            prefix: "/calico/bgpd/".into(),
            ipam_prefix: "/calico/ipam/v2/".into(),
        })
    );
    assert_eq!(
        parse("etcd:http://127.0.0.1:2379?prefix=/x/y", &[]),
        Ok(DatastoreSpec::Etcd {
            access: plain(&["http://127.0.0.1:2379"]),
            prefix: "/x/y/".into(),
            ipam_prefix: DEFAULT_IPAM_PREFIX.into(),
        })
    );
    assert_eq!(
        parse("etcd:http://127.0.0.1:2379?ipamPrefix=/t/ipam&prefix=/t/bgpd/", &[]),
        Ok(DatastoreSpec::Etcd {
            access: plain(&["http://127.0.0.1:2379"]),
            prefix: "/t/bgpd/".into(),
            ipam_prefix: "/t/ipam/".into(),
        })
    );
    // bgpd-ipam's former parser refused prefix=; both programs take it now.
    let Ok(DatastoreSpec::Etcd { prefix, .. }) = parse("etcd:http://a:1?prefix=/x/", &[]) else { panic!() };
    assert_eq!(prefix, "/x/");
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
    let Ok(DatastoreSpec::Etcd { access: a, prefix, .. }) = parse(&arg, &[]) else { panic!("{arg}") };
    assert_eq!(prefix, "/p/");
    assert_eq!(a.endpoints, ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]);
    assert_eq!(
        a.tls,
        Some(Tls {
            ca: Some("/etc/etcd/ca.pem".into()),
            identity: Some(ClientIdentity { cert: "/etc/etcd/c.pem".into(), key: "/etc/etcd/c.key".into() }),
        })
    );
    let credentials = a.credentials.clone().unwrap();
    assert_eq!((credentials.username.as_str(), credentials.password.expose()), ("bgpd", "s3cret"));
    assert!(!format!("{a:?}").contains("s3cret"), "the password shows in {a:?}");

    // A password file without a final line ending.
    let pw = dir.path().join("pw2");
    std::fs::write(&pw, "s3cret").unwrap();
    let arg =
        format!("etcd:https://e:2379?ca=/ca.pem&cert=/c.pem&key=/c.key&username=ipam&password-file={}", pw.display());
    let a = access(&arg, &[]);
    let tls = a.tls.clone().unwrap();
    assert_eq!(tls.ca, Some("/ca.pem".into()));
    assert_eq!(tls.identity, Some(ClientIdentity { cert: "/c.pem".into(), key: "/c.key".into() }));
    let c = a.credentials.clone().unwrap();
    assert_eq!((c.username.as_str(), c.password.expose()), ("ipam", "s3cret"));
    assert!(!format!("{a:?}").contains("s3cret"));
}

#[test]
fn etcd_settings_from_calicos_variables() {
    let env = [
        ("ETCD_ENDPOINTS", "https://e:2379"),
        ("ETCD_CA_CERT_FILE", "/ca"),
        ("ETCD_USERNAME", "calico"),
        ("ETCD_PASSWORD", "pw"),
    ];
    let Ok(DatastoreSpec::Etcd { access: a, prefix, .. }) = parse("etcd:?prefix=/q/", &env) else { panic!() };
    assert_eq!(prefix, "/q/");
    assert_eq!(a.endpoints, ["https://e:2379"]);
    assert_eq!(a.tls.unwrap().ca, Some("/ca".into()));
    assert_eq!(a.credentials.unwrap().username, "calico");
    // Without any option.
    let a = access("etcd:", &env);
    assert_eq!(a.endpoints, ["https://e:2379"]);
    assert_eq!(a.credentials.unwrap().password.expose(), "pw");
    // The string's endpoints and options win over the variables.
    let a = access("etcd:https://s:2379?ca=/s", &env);
    assert_eq!((a.endpoints[0].as_str(), a.tls.unwrap().ca), ("https://s:2379", Some("/s".into())));
}

#[test]
fn errors_name_the_problem_and_not_the_password() {
    for (arg, env, expected) in [
        ("etcd", &[][..], "expected file:PATH, etcd:"),
        ("k8s", &[], "expected file:PATH, etcd:"),
        ("etcd:127.0.0.1:2379", &[], "is not a URL"),
        ("etcd:http://h:1?prefix=x", &[], "the etcd prefix must start with /"),
        ("etcd:http://h:1?ipamPrefix=x", &[], "the etcd ipamPrefix must start with /"),
        ("etcd:http://h:1?foo=1", &[], "unknown etcd option \"foo\""),
        ("etcd:http://a:1?tls=1", &[], "unknown etcd option \"tls\": the options are prefix="),
        ("etcd:http://h:1?prefix", &[], "the etcd option \"prefix\" is not NAME=VALUE"),
        ("etcd:http://a:1,https://b:2", &[], "mix http:// (http://a:1) and https:// (https://b:2)"),
        ("etcd:http://a:1?password=hunter2", &[], "password-file="),
        ("etcd:http://a:1?ca=/ca", &[], "TLS needs https:// endpoints"),
        ("etcd:https://a:1?cert=/c", &[], "needs its key"),
        ("etcd:https://a:1?key=/k", &[], "needs its certificate"),
        ("etcd:https://a:1?username=u", &[], "needs a password"),
        ("etcd:http://a:1?password-file=/nonexistent/pw&username=u", &[], "password-file=/nonexistent/pw: cannot read"),
        ("etcd:", &[], "no etcd endpoint given (and ETCD_ENDPOINTS is not set)"),
        ("etcd:http://a:1", &[("ETCD_PASSWORD", "p")], "(ETCD_PASSWORD) needs a user"),
    ] {
        let e = parse(arg, env).expect_err(arg);
        let text = e.to_string();
        assert!(text.contains(expected), "{arg}: {text}");
        assert!(text.starts_with("datastore \""), "{text}");
        assert!(!text.contains("hunter2") && !format!("{e:?}").contains("hunter2"), "{text}");
    }
    let e = parse("etcd:http://a:1?ca=/c&password=hunter2", &[]).unwrap_err();
    assert_eq!(e.arg, "etcd:http://a:1?ca=/c&password=<redacted>");
}

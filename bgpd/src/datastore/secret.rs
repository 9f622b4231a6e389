//! Core `v1` `Secret`s and the `secretKeyRef`s that BGPPeer and BGPConfiguration
//! passwords point at. Secrets are resolved while loading and are not kept in the
//! model: a peer holds its resolved [`Md5Key`], so a changed Secret shows up as a
//! changed peer.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::fields::{quoted, Fields, Findings};
use super::values::Md5Key;

/// The keys and decoded values of one Secret.
pub(crate) type SecretData = BTreeMap<String, Vec<u8>>;

/// Reads a Secret's `data` (base64) and `stringData` (plain; wins on the same key, as
/// the Kubernetes API server merges them).
pub(crate) fn parse(root: &Fields, f: &mut Findings) -> Option<SecretData> {
    let mut out = SecretData::new();
    let data = f.take(root.string_map("data"))?;
    for (key, encoded) in data {
        let compact: String = encoded.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        match base64::engine::general_purpose::STANDARD.decode(compact) {
            Ok(bytes) => {
                out.insert(key, bytes);
            }
            Err(e) => f.error(root.path_of(&format!("data.{key}")), format!("not valid base64: {e}")),
        }
    }
    let string_data = f.take(root.string_map("stringData"))?;
    for (key, value) in string_data {
        out.insert(key, value.into_bytes());
    }
    f.errors.is_empty().then_some(out)
}

/// All Secrets of the datastore by name.
#[derive(Debug, Default)]
pub(crate) struct Secrets {
    pub by_name: BTreeMap<String, SecretData>,
}

impl Secrets {
    /// Resolves the password field `key` of `spec` (`{secretKeyRef: {name, key}}`).
    /// Absent gives `None` with no finding; an unresolvable reference is an error.
    pub fn password(&self, spec: &Fields, key: &str, f: &mut Findings) -> Option<Md5Key> {
        if !spec.has(key) {
            return None;
        }
        let password = f.take(spec.child(key))?;
        for unknown in password.unknown_keys(&["secretKeyRef"]) {
            f.warn(unknown, "not supported by bgpd; ignored");
        }
        let reference = f.take(password.child("secretKeyRef"))?;
        let path = password.path_of("secretKeyRef");
        if !password.has("secretKeyRef") {
            f.error(path, "missing (bgpd reads passwords only from Secrets)");
            return None;
        }
        let name = f.opt(reference.str("name"));
        let secret_key = f.opt(reference.str("key"));
        let (Some(name), Some(secret_key)) = (name, secret_key) else {
            f.error(path, "needs both name and key");
            return None;
        };
        let value = match self.by_name.get(name) {
            None => Err(format!("Secret {} not found", quoted(name))),
            Some(data) => {
                data.get(secret_key).ok_or_else(|| format!("Secret {} has no key {}", quoted(name), quoted(secret_key)))
            }
        };
        let key = value.and_then(|v| {
            Md5Key::new(v.clone()).map_err(|e| format!("Secret {} key {}: {e}", quoted(name), quoted(secret_key)))
        });
        f.take(key.map_err(|reason| super::fields::FieldError::new(path, reason)))
    }
}

impl Secrets {
    /// A BGPPeer's `spec.password`, as [`Secrets::password`] reads it; a
    /// reference that does not resolve also says what it costs. bgpd fails
    /// closed: the peer is skipped (no session) rather than run without the
    /// TCP MD5 key it asks for, as Calico's confd would run it. A peer that
    /// requires the key would refuse such a session anyway; one that does not
    /// would accept an unauthenticated session the operator did not ask for.
    pub fn peer_password(&self, spec: &Fields, f: &mut Findings) -> Option<Md5Key> {
        let before = f.errors.len();
        let key = self.password(spec, "password", f);
        for e in &mut f.errors[before..] {
            e.reason.push_str(
                ": no session runs with this peer until the password resolves \
                 (bgpd never runs a peer without the password it is configured with; Calico would)",
            );
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml::Value;

    fn parse_yaml(s: &str) -> (Option<SecretData>, Findings) {
        let v: Value = serde_yaml::from_str(s).unwrap();
        let root = Fields::at(Some(&v), "").unwrap();
        let mut f = Findings::default();
        (parse(&root, &mut f), f)
    }

    #[test]
    fn data_is_base64_and_string_data_wins() {
        let (data, f) = parse_yaml("data: {a: czNjcmV0, b: eA==}\nstringData: {b: plain}\n");
        assert!(f.errors.is_empty());
        let data = data.unwrap();
        assert_eq!(data["a"], b"s3cret");
        assert_eq!(data["b"], b"plain");
    }

    #[test]
    fn bad_base64_names_the_key() {
        let (data, f) = parse_yaml("data: {a: 'not base64!'}\n");
        assert!(data.is_none());
        assert_eq!(f.errors[0].field, "data.a");
    }

    fn resolve(secrets: &Secrets, spec: &str) -> (Option<Md5Key>, Findings) {
        let v: Value = serde_yaml::from_str(spec).unwrap();
        let spec = Fields::at(Some(&v), "spec").unwrap();
        let mut f = Findings::default();
        (secrets.password(&spec, "password", &mut f), f)
    }

    /// bgpd fails closed where Calico would run the session without a password:
    /// the error says so, in `bgpd show config` and the log.
    #[test]
    fn an_unresolved_peer_password_says_no_session_runs() {
        let v: Value = serde_yaml::from_str("password: {secretKeyRef: {name: bgp-secrets, key: rr-password}}").unwrap();
        let spec = Fields::at(Some(&v), "spec").unwrap();
        let mut f = Findings::default();
        assert!(Secrets::default().peer_password(&spec, &mut f).is_none());
        assert_eq!(f.errors.len(), 1);
        assert_eq!(
            f.errors[0].reason,
            "Secret \"bgp-secrets\" not found: no session runs with this peer until the password resolves \
             (bgpd never runs a peer without the password it is configured with; Calico would)"
        );
    }

    #[test]
    fn references_resolve_or_say_why_not() {
        let mut secrets = Secrets::default();
        secrets.by_name.insert("bgp".into(), [("k".to_string(), b"pw".to_vec()), ("e".to_string(), Vec::new())].into());
        let (key, f) = resolve(&secrets, "password: {secretKeyRef: {name: bgp, key: k}}");
        assert_eq!(key.unwrap().as_bytes(), b"pw");
        assert!(f.errors.is_empty());
        let (key, f) = resolve(&secrets, "{}");
        assert!(key.is_none() && f.errors.is_empty());
        for (spec, why) in [
            ("password: {secretKeyRef: {name: nope, key: k}}", "Secret \"nope\" not found"),
            ("password: {secretKeyRef: {name: bgp, key: x}}", "Secret \"bgp\" has no key \"x\""),
            ("password: {secretKeyRef: {name: bgp, key: e}}", "the password is empty"),
            ("password: {secretKeyRef: {name: bgp}}", "needs both name and key"),
            ("password: {}", "missing"),
        ] {
            let (key, f) = resolve(&secrets, spec);
            assert!(key.is_none(), "{spec}");
            assert_eq!(f.errors.len(), 1, "{spec}: {:?}", f.errors);
            assert_eq!(f.errors[0].field, "spec.password.secretKeyRef");
            assert!(f.errors[0].reason.contains(why), "{spec}: {:?}", f.errors[0]);
        }
    }
}

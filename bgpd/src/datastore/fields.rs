//! Reading typed fields out of a YAML mapping while keeping the field path, so that
//! every error names the field (`spec.serviceClusterIPs[1].cidr`).
//!
//! A converter reads each field through [`Fields`], hands the result to
//! [`Findings::take`], and goes on: all faults of an object are reported at once.

use std::collections::BTreeMap;

use bgpd_model::calico::LabelValue;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

/// A fault in one field: its path and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), reason: reason.into() }
    }
}

/// Errors (the object is skipped) and warnings (it is kept) found in one object.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<FieldError>,
}

impl Findings {
    /// Keeps the value, or records the error and gives `None`.
    pub fn take<T>(&mut self, r: Result<T, FieldError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    /// Like [`Findings::take`] for optional fields: absent and invalid both give `None`.
    pub fn opt<T>(&mut self, r: Result<Option<T>, FieldError>) -> Option<T> {
        self.take(r).flatten()
    }

    pub fn error(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError::new(field, reason));
    }

    pub fn warn(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.warnings.push(FieldError::new(field, reason));
    }
}

/// A YAML mapping and the path it was reached by.
#[derive(Clone, Debug)]
pub(crate) struct Fields<'a> {
    map: &'a Mapping,
    path: String,
}

static EMPTY: std::sync::OnceLock<Mapping> = std::sync::OnceLock::new();

impl<'a> Fields<'a> {
    /// The mapping `value` at `path`; a missing (null) value reads as an empty mapping.
    pub fn at(value: Option<&'a Value>, path: &str) -> Result<Fields<'a>, FieldError> {
        match value {
            None | Some(Value::Null) => Ok(Fields { map: EMPTY.get_or_init(Mapping::new), path: path.to_string() }),
            Some(Value::Mapping(map)) => Ok(Fields { map, path: path.to_string() }),
            Some(other) => Err(FieldError::new(path, format!("expected a mapping, found {}", describe(other)))),
        }
    }

    /// The full path of `key` below this mapping.
    pub fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw value of `key`; an explicit `null` counts as absent, as in Kubernetes.
    pub fn value(&self, key: &str) -> Option<&'a Value> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// Parses `key` with `parse` if present; the error names the field.
    pub fn get<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&'a Value) -> Result<T, String>,
    ) -> Result<Option<T>, FieldError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => parse(v).map(Some).map_err(|reason| FieldError::new(self.path_of(key), reason)),
        }
    }

    /// A string field; the empty string counts as absent (Go's zero value).
    pub fn str(&self, key: &str) -> Result<Option<&'a str>, FieldError> {
        Ok(self.get(key, as_str)?.filter(|s| !s.is_empty()))
    }

    /// A string field parsed with `parse`; the empty string counts as absent.
    pub fn parse_str<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, FieldError> {
        match self.str(key)? {
            None => Ok(None),
            Some(s) => parse(s).map(Some).map_err(|reason| FieldError::new(self.path_of(key), reason)),
        }
    }

    /// A boolean field.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, FieldError> {
        self.get(key, as_bool)
    }

    /// A nested mapping (absent reads as empty).
    pub fn child(&self, key: &str) -> Result<Fields<'a>, FieldError> {
        Fields::at(self.value(key), &self.path_of(key))
    }

    /// Whether `key` is present and not null.
    pub fn has(&self, key: &str) -> bool {
        self.value(key).is_some()
    }

    /// The elements of a list field, each with its path (`key[i]`); absent is empty.
    pub fn list(&self, key: &str) -> Result<Vec<(String, &'a Value)>, FieldError> {
        match self.value(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => {
                let base = self.path_of(key);
                Ok(items.iter().enumerate().map(|(i, v)| (format!("{base}[{i}]"), v)).collect())
            }
            Some(other) => {
                Err(FieldError::new(self.path_of(key), format!("expected a list, found {}", describe(other))))
            }
        }
    }

    /// A map of strings to strings (labels, `stringData`); absent is empty.
    pub fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, FieldError> {
        let m = self.child(key)?;
        let mut out = BTreeMap::new();
        for (k, v) in m.map {
            let Value::String(k) = k else {
                return Err(FieldError::new(m.path.clone(), format!("keys must be strings, found {}", describe(k))));
            };
            // Calico's loader reads labels and annotations as strings: a YAML
            // boolean or number (`routeReflector: true`) is its text, by the
            // model's rule, which ipam reads them with too.
            let v = match LabelValue::deserialize(v) {
                Ok(v) => v.into_text(),
                Err(_) => as_str(v).map_err(|reason| FieldError::new(m.path_of(k), reason))?.to_string(),
            };
            out.insert(k.clone(), v);
        }
        Ok(out)
    }

    /// Paths of the keys of this mapping not in `known`, for "unsupported field" warnings.
    pub fn unknown_keys(&self, known: &[&str]) -> Vec<String> {
        self.map
            .keys()
            .filter(|k| !k.as_str().is_some_and(|k| known.contains(&k)))
            .map(|k| match k.as_str() {
                Some(k) => self.path_of(k),
                None => format!("{}[{}]", self.path, describe(k)),
            })
            .collect()
    }
}

/// A short description of a value for error messages: strings quoted (and cut), the
/// type for composite values.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quoted(s),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// `s` in double quotes, cut to 64 characters so that a problem stays one line
/// (the model's, so that its reasons and bgpd's quote alike).
pub(crate) use bgpd_model::calico::quoted;

/// The value as a string. A boolean is its text, as Calico's loader writes a
/// YAML boolean into a string field: `true` / `false`, and so the plain YAML 1.1
/// words too (`node: n` names the node `false` in Calico, and here).
pub(crate) fn as_str(v: &Value) -> Result<&str, String> {
    match v {
        Value::Bool(true) => Ok("true"),
        Value::Bool(false) => Ok("false"),
        v => v.as_str().ok_or_else(|| format!("expected a string, found {}", describe(v))),
    }
}

/// The value as a boolean: `true` and `false`, and the plain YAML 1.1 words
/// (`yes`, `off`, …) that [`ipam::yaml::documents`] reads as booleans, as Calico does.
pub(crate) fn as_bool(v: &Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| format!("expected true or false, found {}", describe(v)))
}

/// The value as a non-negative integer.
pub(crate) fn as_u64(v: &Value) -> Result<u64, String> {
    v.as_u64().ok_or_else(|| format!("expected a non-negative integer, found {}", describe(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn paths_name_nested_fields_and_list_items() {
        let v = yaml("spec: {a: [x, {cidr: 1}], b: 3}");
        let root = Fields::at(Some(&v), "").unwrap();
        let spec = root.child("spec").unwrap();
        let items = spec.list("a").unwrap();
        assert_eq!(items[1].0, "spec.a[1]");
        let item = Fields::at(Some(items[1].1), &items[1].0).unwrap();
        let err = item.str("cidr").unwrap_err();
        assert_eq!(err, FieldError::new("spec.a[1].cidr", "expected a string, found 1"));
        assert_eq!(spec.unknown_keys(&["a"]), vec!["spec.b".to_string()]);
    }

    #[test]
    fn null_and_empty_string_read_as_absent() {
        let v = yaml("{a: null, b: '', c: x}");
        let f = Fields::at(Some(&v), "spec").unwrap();
        assert_eq!(f.str("a").unwrap(), None);
        assert_eq!(f.str("b").unwrap(), None);
        assert_eq!(f.str("c").unwrap(), Some("x"));
        assert!(!f.has("a"));
    }

    #[test]
    fn wrong_types_are_named() {
        let v = yaml("{l: 3, m: [1], labels: {a: [1]}, flag: 'yes'}");
        let f = Fields::at(Some(&v), "spec").unwrap();
        assert_eq!(f.list("l").unwrap_err().reason, "expected a list, found 3");
        assert_eq!(f.child("m").unwrap_err().reason, "expected a mapping, found a list");
        assert_eq!(f.string_map("labels").unwrap_err().field, "spec.labels.a");
        assert_eq!(f.bool("flag").unwrap_err().reason, "expected true or false, found \"yes\"");
    }

    #[test]
    fn scalar_label_values_are_their_text_as_calico_reads_them() {
        let v = yaml("{labels: {routeReflector: true, rack: 3, ratio: 1.5, none: null, s: x}}");
        let labels = Fields::at(Some(&v), "metadata").unwrap().string_map("labels").unwrap();
        let got: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("none", ""), ("rack", "3"), ("ratio", "1.5"), ("routeReflector", "true"), ("s", "x")]);
    }

    /// Calico's loader writes a YAML boolean into a string field as its text.
    #[test]
    fn booleans_in_string_fields_are_their_text() {
        let v = ipam::yaml::documents("{a: true, b: off, c: 'off'}").next().unwrap().unwrap();
        let f = Fields::at(Some(&v), "spec").unwrap();
        assert_eq!(
            (f.str("a").unwrap(), f.str("b").unwrap(), f.str("c").unwrap()),
            (Some("true"), Some("false"), Some("off"))
        );
        assert_eq!(f.bool("b").unwrap(), Some(false), "a YAML 1.1 word in a boolean field");
        assert!(f.bool("c").is_err(), "quoted, it is text");
    }

    #[test]
    fn long_strings_are_cut() {
        let s = "x".repeat(100);
        assert_eq!(quoted(&s).chars().count(), 64 + 3);
    }
}

//! `Node` as IPAM reads it: its name and labels, what an IPPool's `nodeSelector`
//! matches (a core `v1` Node and a Calico Node of one name merge their labels).
//! Its other fields (`spec.bgp`, bgpd's annotations) are routing's, read by
//! bgpd's datastore alone.
//!
//! Labels and annotations are read by one rule, [`LabelValue`]: `ipam` through
//! serde, bgpd's datastore by deserializing each value of its YAML mapping.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A node as far as IPAM cares: its name and labels (for `nodeSelector`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
}

/// A label or annotation value as written. Calico's loader reads a YAML boolean
/// or number as its text (`routeReflector: true` is the label `"true"`; a plain
/// YAML 1.1 word such as `yes` is a boolean when read through `ipam::yaml`, so
/// `"true"` too), and null as the empty string; anything else (a list, a
/// mapping) is no label value and fails to deserialize.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum LabelValue {
    /// A string, as it is.
    Text(String),
    /// `true` / `false`.
    Bool(bool),
    /// A negative (or any signed) integer.
    Int(i64),
    /// An integer above `i64::MAX`.
    Uint(u64),
    /// A float, written as Rust writes it (`1.0` is `1`, `1.5` is `1.5`).
    Float(f64),
    /// `null` or `~`: the empty string.
    Null,
}

impl LabelValue {
    /// The value's text.
    pub fn into_text(self) -> String {
        match self {
            LabelValue::Text(s) => s,
            LabelValue::Bool(b) => b.to_string(),
            LabelValue::Int(i) => i.to_string(),
            LabelValue::Uint(u) => u.to_string(),
            LabelValue::Float(f) => f.to_string(),
            LabelValue::Null => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(yaml: &str) -> Vec<(String, String)> {
        let m: BTreeMap<String, LabelValue> = serde_yaml::from_str(yaml).unwrap();
        m.into_iter().map(|(k, v)| (k, v.into_text())).collect()
    }

    #[test]
    fn scalars_are_their_text_as_calico_reads_them() {
        let got = texts("{s: x, t: true, i: -3, u: 18446744073709551615, f: 1.5, g: 1.0, n: null, e: ~}");
        let want = [
            ("e", ""),
            ("f", "1.5"),
            ("g", "1"),
            ("i", "-3"),
            ("n", ""),
            ("s", "x"),
            ("t", "true"),
            ("u", "18446744073709551615"),
        ];
        let want: Vec<(String, String)> = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(got[..], want[..]);
    }

    #[test]
    fn lists_and_mappings_are_no_label_values() {
        assert!(serde_yaml::from_str::<LabelValue>("[1]").is_err());
        assert!(serde_yaml::from_str::<LabelValue>("{a: 1}").is_err());
    }
}

//! Calico's IPAM-relevant resources (`projectcalico.org/v3`), typed and validated.
//!
//! Field names and defaults are Calico's, so existing manifests parse unchanged.
//! Raw serde types (`*Spec`) mirror the YAML; [`IpPool`] and friends are the
//! validated forms the allocator works with. [`IpPool`] (with [`IpFamily`] and
//! its enums) and [`IpReservation`] are `bgpd-model`'s, re-exported.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// IPPool and IPReservation are parsed and validated once, in `bgpd-model`
/// (bgpd's datastore reads IPPool through the same rules), as are Node's IPAM
/// fields (name, labels by [`LabelValue`]); their types stay reachable here, where the
/// allocator and the tools name them. The block arithmetic the allocator uses
/// (`IpPool::block_at`, `block_of`, `usable_for_workloads`, …) came along as
/// inherent methods: see `bgpd_model::calico::ip_pool`.
pub use bgpd_model::calico::{
    addr_from, addr_value, net_base, parse_cidr, AllowedUse, AssignmentMode, EncapMode, InvalidResource, IpFamily,
    IpPool, IpPoolSpec, IpReservation, IpReservationSpec, LabelValue, Node,
};

/// `metadata` of a Kubernetes-style object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Object name.
    #[serde(default, deserialize_with = "text")]
    pub name: String,
    /// Namespace, for namespaced kinds.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "optional_text")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "string_map")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "string_map")]
    pub annotations: BTreeMap<String, String>,
}

/// Labels and annotations as Calico's loader reads them, by the model's rule
/// ([`LabelValue`]): a YAML boolean or number (`routeReflector: true`) is its
/// text, null the empty string.
fn string_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let m: Option<BTreeMap<String, Option<LabelValue>>> = Option::deserialize(d)?;
    Ok(m.unwrap_or_default().into_iter().map(|(k, v)| (k, v.map_or_else(String::new, LabelValue::into_text))).collect())
}

/// A string field as Calico's loader reads it: a boolean (so a plain YAML 1.1
/// word, `name: off`) is its text `true` / `false`, as bgpd reads it too.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(optional_text(d)?.unwrap_or_default())
}

/// [`text`] for an optional field.
fn optional_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Bool(bool),
    }
    Ok(Option::<Text>::deserialize(d)?.map(|t| match t {
        Text::Text(s) => s,
        Text::Bool(b) => b.to_string(),
    }))
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn scalar_label_values_are_their_text_as_calico_reads_them() {
        let m: ObjectMeta =
            serde_yaml::from_str("name: rr1\nlabels: {routeReflector: true, rack: 3, none: null}").unwrap();
        let got: Vec<(&str, &str)> = m.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("none", ""), ("rack", "3"), ("routeReflector", "true")]);
        let bad = serde_yaml::from_str::<ObjectMeta>("name: n\nlabels: {rack: [1]}");
        assert!(bad.is_err(), "a list is no label value");
    }

    /// `name: off` is the name `false` in Calico (a YAML 1.1 word in a string field).
    #[test]
    fn a_yaml11_word_as_a_name_is_its_boolean_text() {
        let v = crate::yaml::documents("name: off\nnamespace: yes\n").next().unwrap().unwrap();
        let m: ObjectMeta = serde_yaml::from_value(v).unwrap();
        assert_eq!((m.name.as_str(), m.namespace.as_deref()), ("false", Some("true")));
        let m: ObjectMeta = serde_yaml::from_str("name: 'off'").unwrap();
        assert_eq!((m.name.as_str(), m.namespace), ("off", None));
    }
}

/// `spec` of `projectcalico.org/v3` IPAMConfiguration (also accepts the
/// `crd.projectcalico.org/v1` IPAMConfig field `autoAllocateBlocks`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConfigSpec {
    /// Forbid borrowing addresses from other nodes' blocks.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Maximum blocks affine to one node (default 20; 0 = unlimited).
    #[serde(default)]
    pub max_blocks_per_host: Option<u32>,
    /// Claim new blocks automatically (default true).
    #[serde(default)]
    pub auto_allocate_blocks: Option<bool>,
}

/// Validated global IPAM configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpamConfig {
    /// `strictAffinity`.
    pub strict_affinity: bool,
    /// `maxBlocksPerHost`; `None` is unlimited (Calico's 0).
    pub max_blocks_per_host: Option<u32>,
    /// `autoAllocateBlocks`.
    pub auto_allocate_blocks: bool,
}

/// Calico's safeguard: at most 20 blocks per host unless configured otherwise.
pub const DEFAULT_MAX_BLOCKS_PER_HOST: u32 = 20;

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            max_blocks_per_host: Some(DEFAULT_MAX_BLOCKS_PER_HOST),
            auto_allocate_blocks: true,
        }
    }
}

impl IpamConfig {
    /// Applies Calico's defaults to a spec.
    pub fn from_spec(spec: &IpamConfigSpec) -> IpamConfig {
        IpamConfig {
            strict_affinity: spec.strict_affinity,
            max_blocks_per_host: match spec.max_blocks_per_host {
                None => Some(DEFAULT_MAX_BLOCKS_PER_HOST),
                Some(0) => None,
                Some(n) => Some(n),
            },
            auto_allocate_blocks: spec.auto_allocate_blocks.unwrap_or(true),
        }
    }
}

/// A namespace: labels (for `namespaceSelector`) and annotations (pool choice).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Namespace {
    /// `metadata.name`.
    pub name: String,
    /// Labels, plus `kubernetes.io/metadata.name` and `projectcalico.org/name`
    /// which Kubernetes and Calico add implicitly.
    pub labels: BTreeMap<String, String>,
    /// Annotations (`cni.projectcalico.org/ipv4pools`, `ipv6pools`).
    pub annotations: BTreeMap<String, String>,
}

impl Namespace {
    /// A namespace with the implicit name labels set.
    pub fn new(name: &str, mut labels: BTreeMap<String, String>, annotations: BTreeMap<String, String>) -> Namespace {
        labels.insert("kubernetes.io/metadata.name".into(), name.into());
        labels.insert("projectcalico.org/name".into(), name.into());
        Namespace { name: name.to_string(), labels, annotations }
    }
}

/// A pod's identity and annotations (`cni.projectcalico.org/*`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

//! Every field of Calico's own CRD schemas (the shared data's
//! `calico-crds/`, both API groups) is one bgpd reads or names: none is
//! dropped as an unknown field, and each is in the configuration tables of
//! `docs/configuration.md` (IPPool: `docs/ipam.md` too). A newer Calico
//! with a new field fails here until it has an answer.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{parse_sources, SourceText};

/// The kinds bgpd's routing model reads from Calico's API, with their CRD
/// file.
const KINDS: &[(&str, &str)] = &[
    ("BGPConfiguration", "bgpconfigurations"),
    ("BGPPeer", "bgppeers"),
    ("BGPFilter", "bgpfilters"),
    ("IPPool", "ippools"),
];

/// And those only `bgpd-ipam` reads.
const IPAM_KINDS: &[(&str, &str)] = &[("IPReservation", "ipreservations")];

/// The CRD's `spec` fields: name → schema.
fn spec_fields(group: &str, plural: &str) -> Option<BTreeMap<String, Value>> {
    let path = testgate::shared_data("crd_fields", format!("calico-crds/{group}/{plural}.yaml"))?;
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let crd: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let version = &crd["spec"]["versions"][0];
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let fields = spec.as_object().unwrap_or_else(|| panic!("{}: no spec properties", path.display()));
    Some(fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// A value of the schema's type (whether bgpd takes it is not the point:
/// only that the field is not unknown).
fn sample(schema: &Value) -> Value {
    match schema["type"].as_str() {
        Some("string") => schema["enum"][0].clone().as_str().map_or(Value::from("x"), Value::from),
        Some("integer") | Some("number") => Value::from(1),
        Some("boolean") => Value::from(true),
        Some("array") => Value::Array(Vec::new()),
        _ => Value::Object(Default::default()),
    }
}

#[test]
fn no_field_of_calicos_crds_is_dropped_as_unknown() {
    for group in ["projectcalico.org-v3", "crd.projectcalico.org-v1"] {
        let api = if group.starts_with("crd.") { "crd.projectcalico.org/v1" } else { "projectcalico.org/v3" };
        for (kind, plural) in KINDS {
            let Some(mut fields) = spec_fields(group, plural) else { return };
            // A field Calico does not have is dropped: the check can fail.
            fields.insert("notAField".into(), serde_json::json!({"type": "string"}));
            for (field, schema) in &fields {
                let spec = serde_json::json!({ field: sample(schema) });
                let text = format!(
                    "apiVersion: {api}\nkind: {kind}\nmetadata: {{name: default}}\nspec: {}\n",
                    serde_json::to_string(&spec).unwrap()
                );
                let (_, problems) = parse_sources(&[SourceText { path: "t.yaml".into(), text }]).unwrap();
                let unknown = format!("spec.{field}: not supported by bgpd; ignored");
                let dropped: Vec<String> =
                    problems.iter().map(|p| p.to_string()).filter(|p| p.contains(&unknown)).collect();
                if field == "notAField" {
                    assert_eq!(dropped.len(), 1, "{kind}: an unknown field is named: {problems:?}");
                } else {
                    assert!(dropped.is_empty(), "{group} {kind}.spec.{field} is dropped as unknown: {dropped:?}");
                }
            }
        }
    }
}

#[test]
fn every_field_of_calicos_crds_is_in_the_configuration_tables() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let docs = read("docs/configuration.md") + &read("docs/ipam.md");
    for group in ["projectcalico.org-v3", "crd.projectcalico.org-v1"] {
        for (kind, plural) in KINDS.iter().chain(IPAM_KINDS) {
            let Some(fields) = spec_fields(group, plural) else { return };
            for field in fields.keys() {
                assert!(
                    docs.contains(&format!("`{field}")) || docs.contains(&format!("`spec.{field}")),
                    "{group} {kind}.spec.{field} is in no table of docs/configuration.md or docs/ipam.md"
                );
            }
        }
    }
}

//! Checks an object against the OpenAPI v3 schema of a CRD, as the API server
//! checks a write: types, `enum`, `required`, `format: date-time`, and (as a
//! structural schema prunes them) no field the schema does not name. Only what
//! Calico's CRDs use. Included by the unit tests (`#[path]`) and the
//! integration tests.

#![allow(dead_code)]

use serde_json::Value;

/// The schema of version `version` of the CRD in the YAML file `path`.
pub fn load(path: &std::path::Path, version: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let crd: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let versions = crd["spec"]["versions"].as_array().expect("spec.versions");
    let v = versions.iter().find(|v| v["name"] == version).unwrap_or_else(|| panic!("no version {version}"));
    v["schema"]["openAPIV3Schema"].clone()
}

/// What in `value` the schema refuses, each as `PATH: why`; empty when valid.
pub fn check(schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, value, "", &mut out);
    out
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let at = if path.is_empty() { "." } else { path };
    if value.is_null() {
        if schema["nullable"] != true {
            out.push(format!("{at}: null is not allowed"));
        }
        return;
    }
    let ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !ok {
        out.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let Some(choices) = schema["enum"].as_array() {
        if !choices.contains(value) {
            out.push(format!("{at}: {value} is not one of {}", schema["enum"]));
        }
    }
    if schema["format"] == "date-time" {
        let s = value.as_str().unwrap_or_default();
        let b = s.as_bytes();
        let shaped = b.len() >= 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && (s.ends_with('Z') || s[19..].contains(['+', '-']));
        if !shaped {
            out.push(format!("{at}: {s:?} is not an RFC 3339 date-time"));
        }
    }
    if let Some(required) = schema["required"].as_array() {
        for r in required.iter().filter_map(Value::as_str) {
            if value.get(r).is_none() {
                out.push(format!("{at}: {r} is required"));
            }
        }
    }
    if let (Some(props), Some(fields)) = (schema["properties"].as_object(), value.as_object()) {
        for (k, v) in fields {
            match props.get(k) {
                Some(s) => walk(s, v, &format!("{path}.{k}"), out),
                None => out.push(format!("{at}: {k} is not in the schema")),
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            walk(items, v, &format!("{path}[{i}]"), out);
        }
    }
}

//! Checks an object against the OpenAPI v3 schema of a CRD, as the API server
//! checks a write: types (`format: int64` included), `enum`, `required`,
//! `nullable`, `format: date-time`, the values of `additionalProperties` maps,
//! and (as a structural schema prunes them) no field the schema does not name.
//! Only what Calico's CRDs use: `pattern` and `format: cidr` (v3 only) are not
//! checked.
//!
//! [`check`] reports every problem, unknown fields included; [`prune`] drops
//! unknown fields as the API server does (its default `fieldValidation=Warn`
//! drops them with a warning) and [`violations`] reports what is left, each
//! with the field path the API server's `422 Invalid` names. [`Schemas`] holds
//! every CRD of a folder (the shared data's `calico-crds/…`), by group,
//! version and plural.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::Value;

/// The schema of version `version` of the CRD in the YAML file `path`.
/// Panics (a test helper) when the file cannot be read or has no such version.
pub fn load(path: &Path, version: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let crd: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let versions = crd["spec"]["versions"].as_array().expect("spec.versions");
    let v = versions.iter().find(|v| v["name"] == version).unwrap_or_else(|| panic!("no version {version}"));
    v["schema"]["openAPIV3Schema"].clone()
}

/// What in `value` the schema refuses, each as `PATH: why` (`PATH` as
/// `.spec.node`, `.` for the object itself); empty when valid. Unknown fields
/// count.
pub fn check(schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, value, "", &mut out);
    out.into_iter().map(|v| v.legacy()).collect()
}

/// What in `value` the schema refuses, unknown fields included, as the API
/// server names them.
pub fn violations(schema: &Value, value: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    walk(schema, value, "", &mut out);
    out
}

/// Drops every field the schema does not name (where no
/// `x-kubernetes-preserve-unknown-fields` keeps them), as the API server
/// prunes a write; returns their paths (`spec.floatingIPs`).
pub fn prune(schema: &Value, value: &mut Value, path: &str) -> Vec<String> {
    let mut dropped = Vec::new();
    prune_at(schema, value, path, &mut dropped);
    dropped
}

fn prune_at(schema: &Value, value: &mut Value, path: &str, dropped: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    if let (Some(props), Some(fields)) = (schema["properties"].as_object(), value.as_object_mut()) {
        fields.retain(|k, _| {
            let keep = props.contains_key(k);
            if !keep {
                dropped.push(join(path, k));
            }
            keep
        });
        for (k, v) in fields.iter_mut() {
            prune_at(&props[k], v, &join(path, k), dropped);
        }
    } else if let (Some(extra), Some(fields)) = (schema.get("additionalProperties"), value.as_object_mut()) {
        for (k, v) in fields.iter_mut() {
            prune_at(extra, v, &join(path, k), dropped);
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array_mut()) {
        for (i, v) in list.iter_mut().enumerate() {
            prune_at(items, v, &format!("{path}[{i}]"), dropped);
        }
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// One thing the schema refuses: the field (`spec.deleted`, `spec.allocations[3]`;
/// empty for the object itself) and why, in the API server's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The field's path.
    pub field: String,
    /// What is wrong.
    pub reason: Reason,
}

/// Why a field is refused (the API server's `field.ErrorType`s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A required field is missing (`Required value`).
    Required,
    /// `null` where the schema is not `nullable`, or a value of another type
    /// (`Invalid value: "string": … must be of type integer`).
    Type {
        /// The value found.
        found: Value,
        /// The type the schema asks for.
        want: String,
    },
    /// Not one of the schema's `enum` (`Unsupported value`).
    NotSupported {
        /// The value found.
        found: Value,
        /// The values allowed.
        allowed: Value,
    },
    /// Not of the schema's `format` (`date-time`, `int64`).
    Format {
        /// The value found.
        found: Value,
        /// The format.
        format: String,
    },
    /// A field the schema does not name (the API server drops it).
    Unknown,
}

impl Violation {
    fn new(field: &str, reason: Reason) -> Violation {
        Violation { field: field.to_string(), reason }
    }

    /// The form [`check`] has always given: `.PATH: why`.
    fn legacy(&self) -> String {
        let (parent, leaf) = match self.field.rsplit_once('.') {
            Some((p, l)) if !self.field.ends_with(']') => (format!(".{p}"), l),
            _ if !self.field.contains('.') && !self.field.contains('[') && !self.field.is_empty() => {
                (".".to_string(), self.field.as_str())
            }
            _ => (String::new(), ""),
        };
        let at = if self.field.is_empty() { ".".to_string() } else { format!(".{}", self.field) };
        match &self.reason {
            Reason::Required => format!("{parent}: {leaf} is required"),
            Reason::Unknown => format!("{parent}: {leaf} is not in the schema"),
            Reason::Type { found: Value::Null, .. } => format!("{at}: null is not allowed"),
            Reason::Type { found, want } => format!("{at}: {found} is not of type \"{want}\""),
            Reason::NotSupported { found, allowed } => format!("{at}: {found} is not one of {allowed}"),
            Reason::Format { found, format } if format == "date-time" => {
                format!("{at}: {found} is not an RFC 3339 date-time")
            }
            Reason::Format { found, format } => format!("{at}: {found} is not of format {format}"),
        }
    }
}

impl fmt::Display for Violation {
    /// As the API server words it: `spec.deleted: Required value`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = if self.field.is_empty() { "<object>" } else { &self.field };
        match &self.reason {
            Reason::Required => write!(f, "{field}: Required value"),
            Reason::Unknown => write!(f, "{field}: unknown field"),
            Reason::Type { found, want } => {
                write!(f, "{field}: Invalid value: {found}: {field} in body must be of type {want}")
            }
            Reason::NotSupported { found, allowed } => {
                write!(f, "{field}: Unsupported value: {found}: supported values: {allowed}")
            }
            Reason::Format { found, format } => {
                write!(f, "{field}: Invalid value: {found}: {field} in body must be of type {format}")
            }
        }
    }
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
    let want = schema["type"].as_str().unwrap_or_default();
    if value.is_null() {
        if schema["nullable"] != true {
            out.push(Violation::new(path, Reason::Type { found: Value::Null, want: want.to_string() }));
        }
        return;
    }
    let ok = match want {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !ok {
        out.push(Violation::new(path, Reason::Type { found: value.clone(), want: want.to_string() }));
        return;
    }
    if let Some(choices) = schema["enum"].as_array() {
        if !choices.contains(value) {
            out.push(Violation::new(
                path,
                Reason::NotSupported { found: value.clone(), allowed: schema["enum"].clone() },
            ));
        }
    }
    let format = schema["format"].as_str().unwrap_or_default();
    let formatted = match format {
        "date-time" => is_date_time(value.as_str().unwrap_or_default()),
        "int64" => !value.is_number() || value.is_i64(),
        "int32" => !value.is_number() || value.as_i64().is_some_and(|v| i32::try_from(v).is_ok()),
        _ => true,
    };
    if !formatted {
        out.push(Violation::new(path, Reason::Format { found: value.clone(), format: format.to_string() }));
    }
    if let Some(required) = schema["required"].as_array() {
        for r in required.iter().filter_map(Value::as_str) {
            if value.get(r).is_none() {
                out.push(Violation::new(&join(path, r), Reason::Required));
            }
        }
    }
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    if let (Some(props), Some(fields)) = (schema["properties"].as_object(), value.as_object()) {
        for (k, v) in fields {
            match props.get(k) {
                Some(s) => walk(s, v, &join(path, k), out),
                None if preserve => {}
                None => out.push(Violation::new(&join(path, k), Reason::Unknown)),
            }
        }
    } else if let (Some(extra), Some(fields)) = (schema.get("additionalProperties"), value.as_object()) {
        if extra.is_object() {
            for (k, v) in fields {
                walk(extra, v, &join(path, k), out);
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            walk(items, v, &format!("{path}[{i}]"), out);
        }
    }
}

/// RFC 3339's shape: `2026-11-30T04:33:20Z`, fractions and offsets allowed.
fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (s.ends_with('Z') || s.get(19..).is_some_and(|t| t.contains(['+', '-'])))
}

/// The schemas of every CRD in a folder of CRD YAML files, by group version
/// (`crd.projectcalico.org/v1`) and plural.
#[derive(Clone, Debug, Default)]
pub struct Schemas {
    by_resource: BTreeMap<(String, String), Value>,
}

impl Schemas {
    /// Reads every `*.yaml` CRD under `dir` and its subfolders.
    pub fn load_dir(dir: &Path) -> Result<Schemas, String> {
        let mut schemas = Schemas::default();
        schemas.add_dir(dir)?;
        Ok(schemas)
    }

    fn add_dir(&mut self, dir: &Path) -> Result<(), String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            if path.is_dir() {
                self.add_dir(&path)?;
            } else if path.extension().is_some_and(|x| x == "yaml") {
                self.add_file(&path)?;
            }
        }
        Ok(())
    }

    fn add_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let crd: Value = serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if crd["kind"] != "CustomResourceDefinition" {
            return Ok(());
        }
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
        for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or_default();
            let schema = v["schema"]["openAPIV3Schema"].clone();
            self.by_resource.insert((format!("{group}/{name}"), plural.to_string()), schema);
        }
        Ok(())
    }

    /// The schema of `plural` in `group_version`, if a CRD defines it.
    pub fn get(&self, group_version: &str, plural: &str) -> Option<&Value> {
        self.by_resource.get(&(group_version.to_string(), plural.to_string()))
    }

    /// How many resources (group version, plural) have a schema.
    pub fn len(&self) -> usize {
        self.by_resource.len()
    }

    /// Whether no CRD was found.
    pub fn is_empty(&self) -> bool {
        self.by_resource.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "metadata": { "type": "object" },
                "spec": {
                    "type": "object",
                    "required": ["cidr", "deleted"],
                    "properties": {
                        "cidr": { "type": "string" },
                        "deleted": { "type": "string" },
                        "state": { "type": "string", "enum": ["", "confirmed"] },
                        "allocations": { "type": "array", "items": { "type": "integer", "nullable": true } },
                        "block": { "type": "object", "additionalProperties": { "type": "integer" } },
                        "seq": { "type": "integer", "format": "int64" },
                        "at": { "type": "string", "format": "date-time" },
                    },
                },
            },
        })
    }

    #[test]
    fn a_valid_object_has_no_violations() {
        let o = json!({ "metadata": {"name": "x"}, "spec": {
            "cidr": "10.0.0.0/26", "deleted": "false", "state": "confirmed", "allocations": [0, null],
            "block": {"10.0.0.0/26": 2}, "seq": 3, "at": "2026-11-30T04:33:20Z",
        }});
        assert_eq!(violations(&schema(), &o), vec![]);
        assert_eq!(check(&schema(), &o), Vec::<String>::new());
    }

    #[test]
    fn each_problem_names_its_field() {
        let o = json!({ "spec": {
            "cidr": "10.0.0.0/26", "state": "pending", "allocations": ["0"], "block": {"a": "1"},
            "seq": u64::MAX, "at": "yesterday", "extra": 1,
        }});
        let mut got: Vec<String> = violations(&schema(), &o).iter().map(ToString::to_string).collect();
        got.sort();
        let want = [
            "spec.allocations[0]: Invalid value: \"0\": spec.allocations[0] in body must be of type integer",
            "spec.at: Invalid value: \"yesterday\": spec.at in body must be of type date-time",
            "spec.block.a: Invalid value: \"1\": spec.block.a in body must be of type integer",
            "spec.deleted: Required value",
            "spec.extra: unknown field",
            "spec.seq: Invalid value: 18446744073709551615: spec.seq in body must be of type int64",
            "spec.state: Unsupported value: \"pending\": supported values: [\"\",\"confirmed\"]",
        ];
        assert_eq!(got, want);
        let legacy = check(&schema(), &o);
        assert!(legacy.contains(&".spec: deleted is required".to_string()), "{legacy:#?}");
        assert!(legacy.contains(&".spec: extra is not in the schema".to_string()), "{legacy:#?}");
    }

    #[test]
    fn prune_drops_unknown_fields_and_says_which() {
        let mut o = json!({ "metadata": {"name": "x", "labels": {"a": "b"}}, "spec": {
            "cidr": "10.0.0.0/26", "deleted": "false", "floatingIPs": [], "block": {"k": 1},
        }, "status": {} });
        let dropped = prune(&schema(), &mut o, "");
        assert_eq!(dropped, ["status", "spec.floatingIPs"]);
        assert_eq!(violations(&schema(), &o), vec![]);
        assert_eq!(o["metadata"]["labels"]["a"], "b", "a schema-less object keeps its fields");
    }
}

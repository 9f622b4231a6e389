//! The CalicoNodeStatus objects of the datastore that ask this node for its
//! status: parsed once per datastore change into [`Request`]s, with a problem
//! (object, field, reason) for each one that cannot be used.

use std::time::Duration;

use serde_json::Value;

use super::Classes;
use crate::datastore::source::{objects, SourceText};

/// The kind this module reads.
pub const KIND: &str = "CalicoNodeStatus";

/// One CalicoNodeStatus for this node.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// `metadata.name`.
    pub name: String,
    /// Where it was read: the etcd key, `kubernetes:caliconodestatuses/NAME`, or
    /// the file.
    pub source: std::path::PathBuf,
    /// `spec.classes`.
    pub classes: Classes,
    /// `spec.updatePeriodSeconds`; `None` for 0 (or absent): never written, as
    /// in Calico.
    pub period: Option<Duration>,
    /// The object as read (JSON), to write back with its status.
    pub object: Value,
}

impl Request {
    /// Whether `other` asks for the same thing (a status written by bgpd
    /// changes the object, not the request).
    pub fn same_ask(&self, other: &Request) -> bool {
        self.classes == other.classes && self.period == other.period && self.source == other.source
    }
}

/// The requests of node `node` among `sources`, and why other
/// CalicoNodeStatus objects for it (or naming no node) cannot be used.
pub fn requests(sources: &[SourceText], node: &str) -> (Vec<Request>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for source in sources {
        let mut raw = Vec::new();
        // A source that is not YAML is the datastore loader's to report.
        if objects(source, &mut raw, &mut Vec::new()).is_err() {
            continue;
        }
        for o in raw.into_iter().filter(|o| o.kind == KIND) {
            let object: Value = match serde_json::to_value(&o.value) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{KIND} in {}: not representable as JSON: {e}", source.path.display()));
                    continue;
                }
            };
            match parse(&object, node) {
                Ok(Some((name, classes, period))) => {
                    out.push(Request { name, source: source.path.clone(), classes, period, object })
                }
                Ok(None) => {}
                Err(e) => problems.push(format!("{KIND} in {}: {e}", source.path.display())),
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    // Two objects of one name (two files): the first read is used.
    out.dedup_by(|b, a| a.name == b.name);
    (out, problems)
}

/// `(name, classes, period)` of a CalicoNodeStatus for `node`; `None` when it is
/// for another node.
fn parse(o: &Value, node: &str) -> Result<Option<(String, Classes, Option<Duration>)>, String> {
    let name = o["metadata"]["name"].as_str().filter(|n| !n.is_empty()).ok_or("metadata.name is missing")?;
    let named = |field: &str, why: String| format!("{name:?}: {field}: {why}");
    let spec = &o["spec"];
    let Some(for_node) = spec["node"].as_str() else {
        return Err(named("spec.node", "missing: the node whose status is asked for".into()));
    };
    if for_node != node {
        return Ok(None);
    }
    let mut classes = Classes::default();
    match &spec["classes"] {
        Value::Null => {}
        Value::Array(items) => {
            for c in items {
                match c.as_str() {
                    Some("Agent") => classes.agent = true,
                    Some("BGP") => classes.bgp = true,
                    Some("Routes") => classes.routes = true,
                    _ => return Err(named("spec.classes", format!("{c} is none of Agent, BGP, Routes"))),
                }
            }
        }
        other => return Err(named("spec.classes", format!("{other} is not a list"))),
    }
    let period = match &spec["updatePeriodSeconds"] {
        Value::Null => None,
        v => match v.as_u64().and_then(|s| u32::try_from(s).ok()).filter(|s| i32::try_from(*s).is_ok()) {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(u64::from(s))),
            None => {
                return Err(named(
                    "spec.updatePeriodSeconds",
                    format!("{v} is not a number of seconds (0 to 2147483647)"),
                ))
            }
        },
    };
    Ok(Some((name.to_string(), classes, period)))
}

/// This node's requests by where they were read, kept up to date one object
/// at a time: a status written (by any node) re-parses that object alone, and
/// only objects for this node are kept.
#[derive(Debug, Default)]
pub struct Keeper {
    node: String,
    by_source: std::collections::BTreeMap<String, Vec<Request>>,
    problems: std::collections::BTreeMap<String, Vec<String>>,
}

impl Keeper {
    /// A keeper for node `node`.
    pub fn new(node: &str) -> Keeper {
        Keeper { node: node.to_string(), ..Keeper::default() }
    }

    /// The node whose requests are kept.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Takes the text now at `source` (a key, a file, an API path). Returns the
    /// problems it has that it did not have before (to log once).
    pub fn put(&mut self, source: &str, text: &str) -> Vec<String> {
        // An object whose text does not name this node cannot be for it: the
        // statuses other nodes write are not parsed (what watching them costs).
        let (reqs, problems) = if text.contains(KIND) && text.contains(self.node.as_str()) {
            requests(&[SourceText { path: source.into(), text: text.to_string() }], &self.node)
        } else {
            (Vec::new(), Vec::new())
        };
        if reqs.is_empty() {
            self.by_source.remove(source);
        } else {
            self.by_source.insert(source.to_string(), reqs);
        }
        let old = if problems.is_empty() {
            self.problems.remove(source)
        } else {
            self.problems.insert(source.to_string(), problems.clone())
        };
        problems.into_iter().filter(|p| !old.as_ref().is_some_and(|o| o.contains(p))).collect()
    }

    /// `source` is gone.
    pub fn delete(&mut self, source: &str) {
        self.by_source.remove(source);
        self.problems.remove(source);
    }

    /// Forgets everything (before a complete read).
    pub fn clear(&mut self) {
        self.by_source.clear();
        self.problems.clear();
    }

    /// This node's requests, by name (the first read of a name wins).
    pub fn requests(&self) -> Vec<Request> {
        let mut out: Vec<Request> = self.by_source.values().flatten().cloned().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|b, a| a.name == b.name);
        out
    }
}

//! An object as the API returns it → the object the model reads, as a file of the
//! file datastore would hold it: bookkeeping metadata dropped, labels and
//! annotations merged as Calico merges them.

use serde_json::{json, Map, Value};

use super::kinds::{CalicoApi, Watched};

/// Calico's annotations on a core Node in its Kubernetes datastore.
const ANN_IPV4: &str = "projectcalico.org/IPv4Address";
const ANN_IPV6: &str = "projectcalico.org/IPv6Address";
const ANN_ASN: &str = "projectcalico.org/ASNumber";
const ANN_CLUSTER_ID: &str = "projectcalico.org/RouteReflectorClusterID";
const ANN_IPIP: &str = "projectcalico.org/IPv4IPIPTunnelAddr";
/// A Node's Calico labels and annotations (JSON objects), which `calicoctl` and
/// Calico's API server write there because a Calico Node is a core Node.
const ANN_NODE_LABELS: &str = "projectcalico.org/labels";
const ANN_NODE_ANNOTATIONS: &str = "projectcalico.org/annotations";
/// The metadata of a Calico object written through Calico's API server or
/// `calicoctl` (a JSON `ObjectMeta`), kept in an annotation of its CRD object.
const ANN_METADATA: &str = "projectcalico.org/metadata";

/// An object ready for the model.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Converted {
    /// `kubernetes:PLURAL/[NAMESPACE/]NAME`, used in messages and for ordering.
    pub(super) key: String,
    pub(super) object: Value,
    /// Something in the object bgpd could not use and went without (for `bgpd
    /// show config`).
    pub(super) note: Option<String>,
}

/// A string map (labels, annotations) of `v`; empty when absent.
fn string_map(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object).cloned().unwrap_or_default()
}

/// The JSON object held in the annotation `key` of `annotations`: `Ok(None)` when
/// there is none, `Err` when it is not a JSON object.
fn json_annotation(annotations: &Map<String, Value>, key: &str) -> Result<Option<Map<String, Value>>, String> {
    let Some(text) = annotations.get(key) else { return Ok(None) };
    let parsed = text.as_str().and_then(|t| serde_json::from_str::<Value>(t).ok());
    match parsed {
        Some(Value::Object(m)) => Ok(Some(m)),
        _ => Err(format!("its annotation {key} is not a JSON object")),
    }
}

/// A core `v1` Node (as the API returns it) → the `projectcalico.org/v3` Node the
/// model reads: its labels (the Calico labels of `projectcalico.org/labels`
/// overridden by the Kubernetes labels, as Calico's `mergeCalicoAndK8sLabels`
/// does), its Calico annotations (`projectcalico.org/annotations`), and `spec.bgp`
/// from Calico's annotations (none when it has neither address annotation: the
/// node does not run BGP).
fn node_object(meta: &Value) -> (Value, Option<String>) {
    let ann = string_map(meta.get("annotations"));
    let mut bgp = Map::new();
    for (field, key) in [
        ("ipv4Address", ANN_IPV4),
        ("ipv6Address", ANN_IPV6),
        ("asNumber", ANN_ASN),
        ("routeReflectorClusterID", ANN_CLUSTER_ID),
        ("ipv4IPIPTunnelAddr", ANN_IPIP),
    ] {
        if let Some(v) = ann.get(key) {
            bgp.insert(field.into(), v.clone());
        }
    }
    let mut problems = Vec::new();
    // Calico ignores an annotation it cannot parse (with a warning); so does bgpd.
    let mut calico = |key| {
        json_annotation(&ann, key)
            .unwrap_or_else(|e| {
                problems.push(e);
                None
            })
            .unwrap_or_default()
    };
    let mut labels = calico(ANN_NODE_LABELS);
    let annotations = calico(ANN_NODE_ANNOTATIONS);
    labels.extend(string_map(meta.get("labels")));
    let runs_bgp = bgp.contains_key("ipv4Address") || bgp.contains_key("ipv6Address");
    let spec = if runs_bgp { json!({ "bgp": bgp }) } else { json!({}) };
    let mut m = json!({ "name": meta["name"], "labels": labels });
    if !annotations.is_empty() {
        m["annotations"] = Value::Object(annotations);
    }
    let node = json!({ "apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": m, "spec": spec });
    (node, (!problems.is_empty()).then(|| problems.join("; ")))
}

/// A Pod → the fields of it the model reads (`datastore::workload_endpoint`):
/// its name, namespace and labels, where it runs and on which network, its
/// service account, phase and addresses. The rest (containers, conditions,
/// annotations…) changes often and is no business of routing.
fn pod_object(obj: &Value, meta: &Value) -> Value {
    let pick = |from: &Value, keys: &[&str]| -> Value {
        let mut out = Map::new();
        for k in keys {
            if let Some(v) = from.get(*k).filter(|v| !v.is_null()) {
                out.insert((*k).into(), v.clone());
            }
        }
        Value::Object(out)
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pick(meta, &["name", "namespace", "labels"]),
        "spec": pick(&obj["spec"], &["nodeName", "hostNetwork", "serviceAccountName"]),
        "status": pick(&obj["status"], &["phase", "podIP", "podIPs"]),
    })
}

/// The labels and annotations of a Calico CRD object: its own, with those of its
/// `projectcalico.org/metadata` annotation merged over them (as Calico's
/// `ConvertK8sResourceToCalicoResource` does; that annotation itself dropped).
/// A metadata annotation that is not JSON leaves the object's own (Calico refuses
/// the object; bgpd keeps it and notes why).
fn calico_metadata(meta: &Value) -> (Map<String, Value>, Map<String, Value>, Option<String>) {
    let mut labels = string_map(meta.get("labels"));
    let mut annotations = string_map(meta.get("annotations"));
    let stored = json_annotation(&annotations, ANN_METADATA);
    annotations.remove(ANN_METADATA);
    match stored {
        Ok(Some(stored)) => {
            labels.extend(string_map(stored.get("labels")));
            annotations.extend(string_map(stored.get("annotations")));
            (labels, annotations, None)
        }
        Ok(None) => (labels, annotations, None),
        Err(e) => (labels, annotations, Some(e)),
    }
}

/// The annotation of an IPAMHandle where `bgpd-ipam`'s Kubernetes store keeps
/// the handle's floating IPs (the CRD has no field for them; a real API server
/// would prune `spec.floatingIPs`).
pub const FLOATING_IPS_ANNOTATION: &str = ::ipam::store::kubernetes::FLOATING_IPS_ANNOTATION;

/// `obj` with the floating IPs of a Calico IPAMHandle's annotation
/// ([`FLOATING_IPS_ANNOTATION`]) as its `spec.floatingIPs`, as the other
/// datastores hold them; an annotation that is not JSON is handed on as text,
/// for the model to name the problem. Other objects are left as they are.
pub(super) fn with_floating_ips(w: &Watched, mut obj: Value) -> Value {
    if !(w.is_calico() && w.kind == "IPAMHandle") {
        return obj;
    }
    let Some(text) = obj.pointer(&format!("/metadata/annotations/{}", FLOATING_IPS_ANNOTATION.replace('/', "~1")))
    else {
        return obj;
    };
    let list = serde_json::from_str(text.as_str().unwrap_or_default()).unwrap_or_else(|_| text.clone());
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("floatingIPs").or_insert(list);
    }
    obj
}

/// Whether routing reads anything of `obj`: every object but a `BlockAffinity`
/// not in state `pendingDeletion`, and an `IPAMHandle` without `spec.floatingIPs` (there is one such handle per pod interface, and
/// routing reads only the floating IPs: holding the others would make every pod
/// start and stop a change of the model). The file and etcd datastores skip the
/// same handles (`datastore::IpamObjects` holds only handles with floating IPs).
pub(super) fn routing_reads(w: &Watched, obj: &Value) -> bool {
    if w.is_calico() && w.kind == "BlockAffinity" {
        // Only a release in progress matters to routing (see `store::View`).
        return obj.pointer("/spec/state").and_then(Value::as_str) == Some("pendingDeletion");
    }
    if !(w.is_calico() && w.kind == "IPAMHandle") {
        return true;
    }
    match obj.pointer("/spec/floatingIPs") {
        None | Some(Value::Null) => false,
        Some(Value::Array(entries)) => !entries.is_empty(),
        // Malformed: kept, so that the model names the problem.
        Some(_) => true,
    }
}

/// An object as the API returns it → the object the model reads. Calico's kinds
/// are handed over as `crd.projectcalico.org/v1` whichever group served them (the
/// spec is the same; the model reads IPAMBlocks in that form only). `None` for an
/// object without a name (the API never sends one).
pub(super) fn convert(w: &Watched, obj: &Value) -> Option<Converted> {
    let meta = obj.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let ns = meta.get("namespace").and_then(Value::as_str);
    let key = match ns {
        Some(ns) => format!("kubernetes:{}/{ns}/{name}", w.plural),
        None => format!("kubernetes:{}/{name}", w.plural),
    };
    let located = |problem: Option<String>| problem.map(|p| format!("{key}: {p}"));
    if w.group.is_empty() && w.kind == "Node" {
        let (object, note) = node_object(meta);
        return Some(Converted { note: located(note), key, object });
    }
    if w.group.is_empty() && w.kind == "Pod" {
        return Some(Converted { note: None, key, object: pod_object(obj, meta) });
    }
    let (labels, annotations, note) = if w.is_calico() {
        calico_metadata(meta)
    } else {
        (string_map(meta.get("labels")), string_map(meta.get("annotations")), None)
    };
    // Keep what the model reads (everything but bookkeeping metadata): list items
    // may come without apiVersion and kind, so those come from the watched kind.
    let api_version = if w.is_calico() { CalicoApi::CrdV1.api_version() } else { w.api_version() };
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version));
    out.insert("kind".into(), Value::String(w.kind.into()));
    let mut m = Map::new();
    m.insert("name".into(), name.into());
    if let Some(ns) = ns {
        m.insert("namespace".into(), ns.into());
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    out.insert("metadata".into(), Value::Object(m));
    if let Some(fields) = obj.as_object() {
        for (k, v) in fields.iter().filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata")) {
            out.insert(k.clone(), v.clone());
        }
    }
    Some(Converted { note: located(note), key, object: Value::Object(out) })
}

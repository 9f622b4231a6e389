//! The network design as IPAM sees it, read from a YAML stream of
//! Kubernetes-style objects (the `file:` datastore that bgpd also reads).
//!
//! Kinds read here: `projectcalico.org/v3` IPPool, IPAMConfiguration,
//! IPReservation and Node; core `v1` Node, Namespace and Pod (labels and
//! annotations only). Every other kind is skipped: bgpd reads those.
//! Documents are read by [`crate::yaml`], as bgpd reads them: YAML 1.1
//! boolean words as Calico reads them, and lists of resources as their items.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{
    InvalidResource, IpFamily, IpPool, IpPoolSpec, IpReservation, IpReservationSpec, IpamConfig, IpamConfigSpec,
    Namespace, Node, ObjectMeta, Pod,
};

/// Why a datastore could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DesignError {
    /// Reading a file or directory failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A YAML document is not well-formed or a field has the wrong type.
    #[error("{path}: document {index}: {reason}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// 0-based document index within the file.
        index: usize,
        /// The parser's message (names the field).
        reason: String,
    },
    /// An object failed validation.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which object and field, and why.
        source: InvalidResource,
    },
    /// Two objects of one kind share a name.
    #[error("{kind} {name:?} is defined twice")]
    Duplicate {
        /// The kind.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// Two pools overlap (Calico forbids this).
    #[error("IPPool {a:?} ({a_cidr}) overlaps IPPool {b:?} ({b_cidr})")]
    OverlappingPools {
        /// First pool.
        a: String,
        /// Its CIDR.
        a_cidr: ipnet::IpNet,
        /// Second pool.
        b: String,
        /// Its CIDR.
        b_cidr: ipnet::IpNet,
    },
}

/// The IPAM-relevant part of a datastore, validated.
#[derive(Clone, Debug, Default)]
pub struct Design {
    /// IP pools, sorted by name.
    pub pools: Vec<IpPool>,
    /// Global IPAM configuration (`IPAMConfiguration` named `default`).
    pub config: IpamConfig,
    /// IP reservations.
    pub reservations: Vec<IpReservation>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods by (namespace, name).
    pub pods: BTreeMap<(String, String), Pod>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
}

/// Why one resource could not be added: a field of the wrong type (the
/// caller names the document) or a validation failure.
enum AddError {
    Yaml(serde_yaml::Error),
    Other(DesignError),
}

#[derive(Deserialize)]
struct WithSpec<T> {
    #[serde(default)]
    spec: T,
}

impl Design {
    /// Loads a datastore given as a YAML file or a directory of `*.yaml` /
    /// `*.yml` files (read in name order).
    pub fn load(path: &Path) -> Result<Design, DesignError> {
        let io = |source| DesignError::Io { path: path.to_path_buf(), source };
        let mut files = Vec::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(path).map_err(io)? {
                let p = entry.map_err(io)?.path();
                if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.to_path_buf());
        }
        let mut sources = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|source| DesignError::Io { path: f.clone(), source })?;
            sources.push((f, text));
        }
        let refs: Vec<(&Path, &str)> = sources.iter().map(|(p, t)| (p.as_path(), t.as_str())).collect();
        Design::parse(&refs)
    }

    /// Parses YAML streams given as (origin, text) pairs; origin only names errors.
    pub fn parse(sources: &[(&Path, &str)]) -> Result<Design, DesignError> {
        let mut d = Design::default();
        let mut pools = BTreeMap::new();
        for (path, text) in sources {
            for (index, doc) in crate::yaml::documents(text).enumerate() {
                let yaml_err =
                    |e: serde_yaml::Error| DesignError::Yaml { path: path.to_path_buf(), index, reason: e.to_string() };
                let list_err = |e: crate::yaml::ListError| DesignError::Yaml {
                    path: path.to_path_buf(),
                    index,
                    reason: e.to_string(),
                };
                for resource in crate::yaml::resources(doc.map_err(yaml_err)?).map_err(list_err)? {
                    d.add(path, resource.value, &mut pools).map_err(|e| match e {
                        AddError::Yaml(e) => yaml_err(e),
                        AddError::Other(e) => e,
                    })?;
                }
            }
        }
        d.pools = pools.into_values().collect();
        d.check_overlaps()?;
        Ok(d)
    }

    /// Adds one resource read from `path`.
    fn add(
        &mut self,
        path: &Path,
        value: serde_yaml::Value,
        pools: &mut BTreeMap<String, IpPool>,
    ) -> Result<(), AddError> {
        if value.is_null() {
            return Ok(());
        }
        let yaml_err = AddError::Yaml;
        let header: Header = serde_yaml::from_value(value.clone()).map_err(yaml_err)?;
        let invalid = |source| AddError::Other(DesignError::Invalid { path: path.to_path_buf(), source });
        let name = header.metadata.name.clone();
        let group = header.api_version.split('/').next().unwrap_or("");
        let calico = group == "projectcalico.org" || group == "crd.projectcalico.org";
        match (calico, header.kind.as_str()) {
            (true, "IPPool") => {
                let spec: WithSpec<IpPoolSpec> = serde_yaml::from_value(value).map_err(yaml_err)?;
                let pool = IpPool::from_spec(&name, &spec.spec).map_err(invalid)?;
                if pools.insert(name.clone(), pool).is_some() {
                    return Err(AddError::Other(DesignError::Duplicate { kind: "IPPool", name }));
                }
            }
            (true, "IPAMConfiguration" | "IPAMConfig") => {
                let spec: WithSpec<IpamConfigSpec> = serde_yaml::from_value(value).map_err(yaml_err)?;
                self.config = IpamConfig::from_spec(&spec.spec);
            }
            (true, "IPReservation") => {
                let spec: WithSpec<IpReservationSpec> = serde_yaml::from_value(value).map_err(yaml_err)?;
                self.reservations.push(IpReservation::from_spec(&name, &spec.spec).map_err(invalid)?);
            }
            (_, "Node") => {
                let node =
                    self.nodes.entry(name.clone()).or_insert_with(|| Node { name: name.clone(), ..Node::default() });
                // A core v1 Node and a Calico Node of one name merge their labels.
                node.labels.extend(header.metadata.labels);
            }
            (false, "Namespace") => {
                self.namespaces
                    .insert(name.clone(), Namespace::new(&name, header.metadata.labels, header.metadata.annotations));
            }
            (false, "Pod") => {
                let ns = header.metadata.namespace.unwrap_or_else(|| "default".to_string());
                self.pods.insert(
                    (ns.clone(), name.clone()),
                    Pod { namespace: ns, name, annotations: header.metadata.annotations },
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn check_overlaps(&self) -> Result<(), DesignError> {
        for (i, a) in self.pools.iter().enumerate() {
            for b in &self.pools[i + 1..] {
                if a.cidr.contains(&b.cidr) || b.cidr.contains(&a.cidr) {
                    return Err(DesignError::OverlappingPools {
                        a: a.name.clone(),
                        a_cidr: a.cidr,
                        b: b.name.clone(),
                        b_cidr: b.cidr,
                    });
                }
            }
        }
        Ok(())
    }

    /// The pool with this name.
    pub fn pool(&self, name: &str) -> Option<&IpPool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The pool containing an address.
    pub fn pool_containing(&self, ip: IpAddr) -> Option<&IpPool> {
        self.pools.iter().find(|p| p.cidr.contains(&ip))
    }

    /// The pool that a block CIDR belongs to.
    pub fn pool_of_block(&self, block: &ipnet::IpNet) -> Option<&IpPool> {
        self.pools.iter().find(|p| p.cidr.contains(block))
    }

    /// Whether an address is reserved by an `IPReservation`.
    pub fn is_reserved(&self, ip: IpAddr) -> bool {
        self.reservations.iter().any(|r| r.contains(ip))
    }

    /// Labels of a node (empty if the datastore does not list it).
    pub fn node_labels(&self, node: &str) -> BTreeMap<String, String> {
        self.nodes.get(node).map(|n| n.labels.clone()).unwrap_or_default()
    }

    /// Labels of a namespace (the implicit name labels if the datastore does not list it).
    pub fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        match self.namespaces.get(ns) {
            Some(n) => n.labels.clone(),
            None => Namespace::new(ns, BTreeMap::new(), BTreeMap::new()).labels,
        }
    }

    /// Pools of one family, in name order.
    pub fn pools_of(&self, family: IpFamily) -> impl Iterator<Item = &IpPool> {
        self.pools.iter().filter(move |p| p.family() == family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Design, DesignError> {
        Design::parse(&[(Path::new("test.yaml"), text)])
    }

    #[test]
    fn test_calico_pool_defaults() {
        let d = parse(
            r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec:
  cidr: 192.168.0.0/16
  ipipMode: Always
  natOutgoing: true
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v6}
spec:
  cidr: fd00::/64
  nodeSelector: rack == "r1" && !has(edge)
  disableBGPExport: true
  allowedUses: [Workload]
  assignmentMode: Manual
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: ignored}
spec: {peerIP: 10.0.0.1, asNumber: 64512}
"#,
        )
        .unwrap();
        let v4 = d.pool("default-ipv4-ippool").unwrap();
        assert_eq!(v4.block_size, 26);
        assert_eq!(v4.ipip_mode, crate::model::EncapMode::Always);
        assert_eq!(v4.node_selector, crate::selector::Selector::All);
        assert_eq!(v4.block_count(), 1024);
        let v6 = d.pool("v6").unwrap();
        assert_eq!(v6.block_size, 122);
        assert!(v6.disable_bgp_export);
        assert_eq!(v6.assignment_mode, crate::model::AssignmentMode::Manual);
        assert_eq!(d.config.max_blocks_per_host, Some(20));
    }

    #[test]
    fn test_bad_pools_name_object_and_field() {
        let cases = [
            ("cidr: 10.0.0.0/33", "cidr"),
            ("cidr: 10.0.0.1/24", "cidr"),
            ("cidr: nonsense", "cidr"),
            ("{cidr: 10.0.0.0/16, blockSize: 19}", "blockSize"),
            ("{cidr: 10.0.0.0/24, blockSize: 23}", "blockSize"),
            ("{cidr: 10.0.0.0/24, blockSize: 33}", "blockSize"),
            ("{cidr: 'fd00::/64', blockSize: 100}", "blockSize"),
            ("{cidr: 10.0.0.0/16, nodeSelector: 'rack =='}", "nodeSelector"),
        ];
        for (spec, field) in cases {
            let text =
                format!("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p}}\nspec:\n  {spec}\n");
            let err = parse(&text).expect_err(spec);
            match err {
                DesignError::Invalid { source, .. } => {
                    assert_eq!(source.field, field, "{spec}");
                    assert_eq!(source.name, "p");
                }
                other => panic!("{spec}: unexpected {other}"),
            }
        }
    }

    #[test]
    fn test_overlapping_pools_rejected() {
        let err = parse(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/16}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 10.0.128.0/24}\n",
        )
        .unwrap_err();
        assert!(matches!(err, DesignError::OverlappingPools { .. }), "{err}");
    }

    #[test]
    fn test_nodes_namespaces_pods_config_reservations() {
        let d = parse(
            r#"
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1, labels: {rack: r1}}
---
apiVersion: v1
kind: Namespace
metadata: {name: blue, labels: {team: b}, annotations: {cni.projectcalico.org/ipv4pools: '["p"]'}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: blue, annotations: {cni.projectcalico.org/ipAddrs: '["10.0.0.9"]'}}
---
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata: {name: default}
spec: {strictAffinity: true, maxBlocksPerHost: 0}
---
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: r}
spec: {reservedCIDRs: [10.0.0.1, 10.0.1.0/24]}
"#,
        )
        .unwrap();
        assert_eq!(d.node_labels("n1").get("rack").map(String::as_str), Some("r1"));
        assert_eq!(d.namespace_labels("blue").get("kubernetes.io/metadata.name").map(String::as_str), Some("blue"));
        assert!(d.pods.contains_key(&("blue".into(), "web".into())));
        assert!(d.config.strict_affinity);
        assert_eq!(d.config.max_blocks_per_host, None);
        assert!(d.is_reserved("10.0.0.1".parse().unwrap()));
        assert!(d.is_reserved("10.0.1.77".parse().unwrap()));
        assert!(!d.is_reserved("10.0.0.2".parse().unwrap()));
    }

    /// What `calicoctl apply -f` takes: a document that is a sequence of
    /// resources, and a typed list (what `calicoctl get ippools -o yaml` prints)
    /// whose items omit `apiVersion` and `kind`. Labels written as YAML 1.1
    /// words are Calico's `"true"` / `"false"`; quoted, they stay as written.
    #[test]
    fn test_lists_of_resources_and_yaml11_label_words() {
        let d = parse(
            r#"
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata: {name: pods-a}
  spec: {cidr: 10.244.0.0/17}
- apiVersion: projectcalico.org/v3
  kind: Node
  metadata:
    name: rr1
    labels: {route-reflector: yes, edge: Off, quoted: 'yes', tagged: !!str on}
---
apiVersion: projectcalico.org/v3
kind: IPPoolList
items:
- metadata: {name: pods-b}
  spec: {cidr: 10.244.128.0/17, nodeSelector: route-reflector == 'true'}
"#,
        )
        .unwrap();
        let names: Vec<&str> = d.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["pods-a", "pods-b"]);
        let labels = d.node_labels("rr1");
        let got: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("edge", "false"), ("quoted", "yes"), ("route-reflector", "true"), ("tagged", "on")]);
        assert!(d.pool("pods-b").unwrap().node_selector.matches(&labels));
        let err = parse("apiVersion: v1\nkind: List\nitems: {a: 1}\n").unwrap_err();
        assert!(err.to_string().contains("items: expected a list of resources"), "{err}");
    }

    #[test]
    fn test_malformed_yaml_names_document() {
        let err = parse("kind: IPPool\n---\n: : :\n").unwrap_err();
        assert!(matches!(err, DesignError::Yaml { index: 1, .. }), "{err}");
    }
}

//! CNI IPAM plugin types (CNI specification 1.0.0): network configuration,
//! `CNI_ARGS`, results and errors, for the `bgpd-ipam` binary.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// CNI versions this plugin accepts in `cniVersion`.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// CNI error codes (spec §"Error": 1–99 reserved, 100+ plugin-specific).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (the datastore could not be used).
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (too many concurrent writers).
    pub const TRY_AGAIN: u32 = 11;
    /// No address available: pools exhausted or none eligible.
    pub const NO_ADDRESS: u32 = 100;
    /// A requested address or pool cannot be used.
    pub const BAD_REQUEST: u32 = 101;
    /// CHECK found the container's addresses not assigned to it.
    pub const CHECK_FAILED: u32 = 102;
}

/// A CNI error result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// The `cniVersion` of the request (or the latest supported).
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Error code.
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer explanation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// Accepts `true`, `"true"`, `false`, `"false"` (Calico writes strings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Flag {
    /// A JSON boolean.
    Bool(bool),
    /// A string `"true"` / `"false"`.
    Text(BoolText),
}

/// `"true"` or `"false"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum BoolText {
    /// `"true"`.
    #[serde(rename = "true")]
    True,
    /// `"false"`.
    #[serde(rename = "false")]
    False,
}

impl Flag {
    /// The value.
    pub fn get(self) -> bool {
        matches!(self, Flag::Bool(true) | Flag::Text(BoolText::True))
    }
}

/// A route in a config or result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop (the plugin's gateway when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// The `ipam` object of the network configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamConf {
    /// Must be `bgpd-ipam`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `file:DIR` or `etcd:http://HOST:PORT`.
    pub datastore: String,
    /// This node's name (default: the host name).
    #[serde(default)]
    pub nodename: Option<String>,
    /// IPv4 pools (names or CIDRs), as Calico's `ipv4_pools`.
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    /// IPv6 pools (names or CIDRs), as Calico's `ipv6_pools`.
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
    /// Assign an IPv4 address (default true).
    #[serde(default)]
    pub assign_ipv4: Option<Flag>,
    /// Assign an IPv6 address (default false).
    #[serde(default)]
    pub assign_ipv6: Option<Flag>,
    /// Routes for the result (default: a default route per assigned family).
    #[serde(default)]
    pub routes: Option<Vec<Route>>,
    /// Gateway returned with IPv4 addresses. Default: the first address of
    /// the address's block, which is then never given to a pod; interface
    /// plugins such as ptp put it on the host side of each pod's link.
    #[serde(default)]
    pub gateway_ipv4: Option<IpAddr>,
    /// Gateway returned with IPv6 addresses (default as for IPv4).
    #[serde(default)]
    pub gateway_ipv6: Option<IpAddr>,
}

/// Calico's `feature_control` object, at the top level of the network
/// configuration (the interface plugin's level, as Calico's own plugin reads
/// it). Its other fields (`ip_addrs_no_ipam`) concern the interface plugin and
/// are ignored here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct FeatureControl {
    /// Honour the pod annotation `cni.projectcalico.org/floatingIPs`. Off by
    /// default, as in Calico: a pod with the annotation then gets an error
    /// ("requested feature is not enabled: floating_ips"), since a floating
    /// IP makes the pod's node advertise an address chosen by the pod.
    #[serde(default)]
    pub floating_ips: bool,
}

/// The network configuration on stdin (only the fields IPAM needs; the
/// interface plugin's own fields are ignored).
#[derive(Clone, Debug, Deserialize)]
pub struct NetConf {
    /// `cniVersion`.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Network name (part of the handle).
    pub name: String,
    /// IPAM section.
    pub ipam: IpamConf,
    /// Calico's `feature_control` (default: every feature off).
    #[serde(default)]
    pub feature_control: FeatureControl,
    /// Previous result (CHECK, and chained ADD).
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<serde_json::Value>,
}

/// One address in a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length.
    pub address: IpNet,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// `"4"` / `"6"`, required by CNI 0.3.x and 0.4.0 results only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// An IPAM result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamResult {
    /// `cniVersion` of the request.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Assigned addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// DNS (empty).
    #[serde(default)]
    pub dns: serde_json::Value,
}

/// Parses `CNI_ARGS` (`K1=V1;K2=V2`).
pub fn parse_cni_args(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| format!("CNI_ARGS element {part:?} is not KEY=VALUE"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_calico_style_config() {
        let conf: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"ptp",
                "ipam":{"type":"bgpd-ipam","datastore":"file:/x","nodename":"n1",
                        "ipv4_pools":["default-ipv4-ippool"],"assign_ipv4":"true","assign_ipv6":false}}"#,
        )
        .unwrap();
        assert!(conf.ipam.assign_ipv4.unwrap().get());
        assert!(!conf.ipam.assign_ipv6.unwrap().get());
        assert_eq!(conf.ipam.ipv4_pools, vec!["default-ipv4-ippool"]);
    }

    #[test]
    fn test_feature_control_as_calico_writes_it() {
        let conf = |extra: &str| {
            serde_json::from_str::<NetConf>(&format!(
                r#"{{"cniVersion":"1.0.0","name":"n",{extra}"ipam":{{"type":"bgpd-ipam","datastore":"file:/x"}}}}"#
            ))
        };
        assert!(!conf("").unwrap().feature_control.floating_ips, "off by default");
        assert!(!conf(r#""feature_control":{"ip_addrs_no_ipam":true},"#).unwrap().feature_control.floating_ips);
        assert!(conf(r#""feature_control":{"floating_ips":true},"#).unwrap().feature_control.floating_ips);
        // Calico reads a JSON boolean; anything else is a decode error.
        assert!(conf(r#""feature_control":{"floating_ips":"yes"},"#).is_err());
    }

    #[test]
    fn test_unknown_ipam_field_rejected() {
        let r: Result<NetConf, _> = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"bgpd-ipam","datastore":"file:/x","subnet":"10.0.0.0/8"}}"#,
        );
        assert!(r.is_err());
    }

    #[test]
    fn test_cni_args() {
        let a = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0").unwrap();
        assert_eq!(a["K8S_POD_NAME"], "web-0");
        assert!(parse_cni_args("novalue").is_err());
    }
}

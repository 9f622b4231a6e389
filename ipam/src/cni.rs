//! CNI IPAM plugin types (CNI specification 1.1.0): the command, network
//! configuration, `CNI_*` variables, attachments and their handles, the node
//! name, results and errors, for the `bgpd-ipam` binary.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::allocator::Attachment;
use crate::block::{AllocationAttribute, ATTR_NODE};

/// CNI versions this plugin accepts in `cniVersion`.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The latest version: the `cniVersion` of `VERSION`'s answer and of errors
/// about a request whose own version is unusable.
pub const LATEST_VERSION: &str = "1.1.0";

/// Whether a supported `cniVersion` knows `STATUS` and `GC` (1.1.0 and later).
pub fn has_status_and_gc(version: &str) -> bool {
    version == "1.1.0"
}

/// Whether results of this version carry `ips[].version` (0.3.x, 0.4.0).
pub fn legacy_result(version: &str) -> bool {
    version.starts_with("0.")
}

/// CNI error codes (CNI spec 1.1 §"Error": 1–99 reserved, 100+ plugin-specific).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration; the message names the
    /// key and its value.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Invalid necessary environment variables; the message names them.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (stdin, the datastore or the host lock could not be used).
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (stdin is not JSON).
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (too many concurrent writers, or the command's time
    /// ran out, e.g. waiting for the host lock).
    pub const TRY_AGAIN: u32 = 11;
    /// `STATUS`: the plugin is not available (cannot service `ADD`).
    pub const NOT_AVAILABLE: u32 = 50;
    /// No address available: pools exhausted or none eligible.
    pub const NO_ADDRESS: u32 = 100;
    /// A requested address or pool cannot be used.
    pub const BAD_REQUEST: u32 = 101;
    /// CHECK found the container's addresses not assigned to it.
    pub const CHECK_FAILED: u32 = 102;
}

/// The operation asked for in `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Assign the attachment's addresses.
    Add,
    /// Release the attachment's addresses.
    Del,
    /// Verify that the attachment holds `prevResult`'s addresses.
    Check,
    /// Report whether an `ADD` could be served (CNI 1.1).
    Status,
    /// Release what no valid attachment holds (CNI 1.1).
    Gc,
    /// List the supported versions.
    Version,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    /// Whether the command writes the datastore (and so takes the host lock).
    pub fn writes(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Gc)
    }

    /// Whether the command concerns one attachment (`CNI_CONTAINERID`,
    /// `CNI_IFNAME` required).
    pub fn per_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
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

impl CniError {
    /// An error with its code and message.
    pub fn new(version: &str, code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError { cni_version: version.to_string(), code, msg: msg.into(), details: details.into() }
    }
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
pub struct IpamConf {
    /// Must be `bgpd-ipam`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `file:DIR`, `etcd:http://HOST:PORT[,…][?OPTIONS]` or
    /// `kubernetes[:KUBECONFIG]`: the grammar of bgpd's `--datastore`
    /// (`bgpd_model::DatastoreSpec`), parsed when the store is opened.
    pub datastore: String,
    /// This node's name (default: see [`node_name`]).
    #[serde(default)]
    pub nodename: Option<String>,
    /// File holding the node's name, as Calico's (default
    /// [`DEFAULT_NODENAME_FILE`]).
    #[serde(default)]
    pub nodename_file: Option<PathBuf>,
    /// Directory of the host-wide lock file (default [`DEFAULT_LOCK_DIR`]).
    #[serde(default)]
    pub lock_dir: Option<PathBuf>,
    /// Time allowed to each command, lock wait included (default
    /// [`DEFAULT_TIMEOUT`]).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Directory of the metrics text file for node-exporter's textfile
    /// collector (default: no metrics; see [`crate::metrics`]).
    #[serde(default)]
    pub metrics_dir: Option<PathBuf>,
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
    /// Fields this plugin does not know: refused with code 2
    /// ([`NetConf::parse`]), so that a misspelt option is not silently
    /// ignored.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
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

impl NetConf {
    /// The configuration of `ADD`, `CHECK` and `STATUS`, from stdin already
    /// decoded as JSON: code 2 for an unknown `ipam` field (naming the key
    /// and its value), 7 for anything else wrong, 1 for an unsupported
    /// version.
    pub fn parse(value: serde_json::Value) -> Result<NetConf, CniError> {
        let version = request_version(&value);
        let conf: NetConf = serde_json::from_value(value).map_err(|e| {
            CniError::new(&version, code::INVALID_CONFIG, format!("invalid network configuration: {e}"), "")
        })?;
        if let Some((key, value)) = conf.ipam.unknown.iter().next() {
            return Err(CniError::new(
                &version,
                code::UNSUPPORTED_FIELD,
                format!("unsupported field ipam.{key} = {value}"),
                "bgpd-ipam does not know this field; see docs/ipam.md for the ones it does",
            ));
        }
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                LATEST_VERSION,
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {:?} is not supported", conf.cni_version),
                format!("supported: {SUPPORTED_VERSIONS:?}"),
            ));
        }
        if conf.ipam.kind != "bgpd-ipam" {
            return Err(CniError::new(
                &conf.cni_version,
                code::INVALID_CONFIG,
                format!("ipam.type is {:?}, expected \"bgpd-ipam\"", conf.ipam.kind),
                "",
            ));
        }
        Ok(conf)
    }
}

/// The `cniVersion` to answer a request with: its own when supported, else
/// [`LATEST_VERSION`].
pub fn request_version(value: &serde_json::Value) -> String {
    match value.get("cniVersion").and_then(|v| v.as_str()) {
        Some(v) if SUPPORTED_VERSIONS.contains(&v) => v.to_string(),
        _ => LATEST_VERSION.to_string(),
    }
}

/// One entry of `cni.dev/valid-attachments` (CNI 1.1 `GC`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct ValidAttachment {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// What `DEL` and `GC` read: the least needed to release by handle, so that
/// a mistake elsewhere in the configuration (an unknown or misspelt field, a
/// pool that no longer validates) never leaves a pod stuck terminating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseConf {
    /// Network name.
    pub name: String,
    /// `ipam.datastore`.
    pub datastore: String,
    /// `ipam.nodename`.
    pub nodename: Option<String>,
    /// `ipam.nodename_file`.
    pub nodename_file: Option<PathBuf>,
    /// `cni.dev/valid-attachments` (`GC` only; absent is an empty list).
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

impl ReleaseConf {
    /// Reads the fields `DEL` and `GC` need; every other field is ignored,
    /// whatever it holds. Missing `name` or `ipam.datastore`: code 7.
    pub fn parse(value: &serde_json::Value) -> Result<ReleaseConf, CniError> {
        let version = request_version(value);
        let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
        let ipam = value.get("ipam");
        let missing = |what: &str| {
            CniError::new(&version, code::INVALID_CONFIG, format!("network configuration lacks {what}"), "")
        };
        let valid_attachments = match value.get(VALID_ATTACHMENTS) {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| {
                CniError::new(
                    &version,
                    code::INVALID_CONFIG,
                    format!("{VALID_ATTACHMENTS} is not a list of attachments"),
                    e.to_string(),
                )
            })?),
        };
        Ok(ReleaseConf {
            name: text(value.get("name")).ok_or_else(|| missing("name"))?,
            datastore: text(ipam.and_then(|i| i.get("datastore"))).ok_or_else(|| missing("ipam.datastore"))?,
            nodename: text(ipam.and_then(|i| i.get("nodename"))),
            nodename_file: text(ipam.and_then(|i| i.get("nodename_file"))).map(PathBuf::from),
            valid_attachments,
        })
    }
}

/// The `GC` field listing the attachments still in use.
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// Default directory of the host-wide lock file.
pub const DEFAULT_LOCK_DIR: &str = "/var/run/bgpd-ipam";
/// Name of the host-wide lock file in its directory.
pub const LOCK_FILE: &str = "ipam.lock";
/// Default time allowed to one command: under the kubelet's two-minute
/// runtime request timeout, so that the plugin answers before it is abandoned.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How a command runs: where the host lock is and how long it may take.
/// Read leniently (a wrong value falls back to the default) before anything
/// else, so that even a command whose configuration is broken is bounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The host-wide lock file.
    pub lock_file: PathBuf,
    /// Time allowed to the command.
    pub timeout: Duration,
    /// Where the command's metrics go (`ipam.metrics_dir`); `None`: nowhere.
    pub metrics_dir: Option<PathBuf>,
}

impl Limits {
    /// `ipam.lock_dir` and `ipam.timeout_seconds` (positive) or their defaults,
    /// and `ipam.metrics_dir`. Read from the raw configuration, so that every
    /// command (`DEL` and `GC`, which parse no more than they need, too) has them.
    pub fn of(value: &serde_json::Value) -> Limits {
        let ipam = value.get("ipam");
        let dir = ipam.and_then(|i| i.get("lock_dir")).and_then(|d| d.as_str()).unwrap_or(DEFAULT_LOCK_DIR);
        let secs = ipam.and_then(|i| i.get("timeout_seconds")).and_then(|t| t.as_u64()).filter(|s| *s > 0);
        Limits {
            lock_file: Path::new(dir).join(LOCK_FILE),
            timeout: secs.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT),
            metrics_dir: ipam.and_then(|i| i.get("metrics_dir")).and_then(|d| d.as_str()).map(PathBuf::from),
        }
    }
}

/// Checks `CNI_CONTAINERID` as the spec defines it: not empty, an
/// alphanumeric first character, then alphanumerics, `_`, `.` or `-`.
pub fn check_container_id(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("CNI_CONTAINERID {id:?} is not a container ID (alphanumeric first, then alphanumerics, _ . -)"))
    }
}

/// Checks `CNI_IFNAME` as the spec defines it: not empty, not `.` or `..`,
/// under 16 bytes, no `/`, `:` or white space.
pub fn check_ifname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() < 16
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!("CNI_IFNAME {name:?} is not an interface name (1-15 bytes, no / : or space, not . or ..)"))
    }
}

/// The handle owning an attachment's addresses: `NETWORK.CONTAINERID.IFNAME`
/// (the key the CNI spec gives plugin state), so that two attachments of one
/// network to one container (as Multus makes) hold addresses of their own.
pub fn handle_id(a: &Attachment) -> String {
    format!("{}.{}.{}", a.network, a.container_id, a.ifname)
}

/// The handle an older `bgpd-ipam` (and Calico) gave a container on a
/// network: `NETWORK.CONTAINERID`, without the interface. `None` when the
/// container ID holds a dot: `NETWORK.A.B` could then be another
/// attachment's new handle, which must not be released in its place.
pub fn legacy_handle_id(network: &str, container_id: &str) -> Option<String> {
    (!container_id.contains('.')).then(|| format!("{network}.{container_id}"))
}

/// Default file holding the node's name (written by calico-node).
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/calico/nodename";

/// This node's name as Calico's CNI plugin finds it: `nodename` from the
/// configuration; else the content of `nodename_file` (default
/// [`DEFAULT_NODENAME_FILE`]) when it exists and is not blank; else the host
/// name, trimmed and lowercased as the kubelet names the node.
pub fn node_name(
    nodename: Option<&str>,
    nodename_file: Option<&Path>,
    read_file: impl Fn(&Path) -> Option<String>,
    hostname: impl Fn() -> String,
) -> String {
    if let Some(n) = nodename.map(str::trim).filter(|n| !n.is_empty()) {
        return n.to_string();
    }
    let file = nodename_file.unwrap_or(Path::new(DEFAULT_NODENAME_FILE));
    if let Some(n) = read_file(file).map(|t| t.trim().to_string()).filter(|n| !n.is_empty()) {
        return n;
    }
    hostname().trim().to_lowercase()
}

/// The handles `GC` releases: those of addresses assigned on `network` to
/// pods of `node` whose attachment is not in `valid`.
///
/// An allocation's attachment is read from its attributes
/// ([`Attachment::of`]). One made before attachments were recorded is
/// `network`'s when its handle is `NETWORK.CONTAINERID` with no dot in the
/// container ID ([`legacy_handle_id`]), and is stale when no valid attachment
/// has that container ID (whatever its interface). Anything else is left
/// alone: when in doubt, an address is kept.
pub fn stale_handles<'a>(
    network: &str,
    node: &str,
    valid: &[ValidAttachment],
    allocations: impl IntoIterator<Item = &'a AllocationAttribute>,
) -> BTreeSet<String> {
    let live: BTreeSet<(&str, &str)> = valid.iter().map(|v| (v.container_id.as_str(), v.ifname.as_str())).collect();
    let live_containers: BTreeSet<&str> = valid.iter().map(|v| v.container_id.as_str()).collect();
    let mut stale = BTreeSet::new();
    let mut kept = BTreeSet::new();
    for attr in allocations {
        let Some(handle) = attr.handle_id.as_deref() else { continue };
        if attr.secondary.get(ATTR_NODE).map(String::as_str) != Some(node) {
            continue;
        }
        let dead = match Attachment::of(attr) {
            Some(a) => a.network == network && !live.contains(&(a.container_id.as_str(), a.ifname.as_str())),
            None => handle
                .strip_prefix(network)
                .and_then(|rest| rest.strip_prefix('.'))
                .filter(|cid| legacy_handle_id(network, cid).is_some())
                .is_some_and(|cid| !live_containers.contains(cid)),
        };
        if dead {
            stale.insert(handle.to_string());
        } else {
            kept.insert(handle.to_string());
        }
    }
    // A handle with any allocation that is not stale is kept whole.
    &stale - &kept
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
    fn test_unknown_ipam_field_is_code_2_naming_key_and_value() {
        let v = serde_json::json!({"cniVersion":"1.1.0","name":"n",
            "ipam":{"type":"bgpd-ipam","datastore":"file:/x","subnet":"10.0.0.0/8"}});
        let e = NetConf::parse(v).unwrap_err();
        assert_eq!(e.code, code::UNSUPPORTED_FIELD);
        assert!(e.msg.contains("ipam.subnet") && e.msg.contains("10.0.0.0/8"), "{}", e.msg);
        // A known field of the wrong type: invalid configuration.
        let v = serde_json::json!({"cniVersion":"1.1.0","name":"n","ipam":{"type":"bgpd-ipam","datastore":5}});
        assert_eq!(NetConf::parse(v).unwrap_err().code, code::INVALID_CONFIG);
    }

    #[test]
    fn test_every_version_up_to_1_1_0() {
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let conf = serde_json::json!({"cniVersion":v,"name":"n","ipam":{"type":"bgpd-ipam","datastore":"file:/x"}});
            assert_eq!(NetConf::parse(conf).expect(v).cni_version, v);
        }
        let conf =
            serde_json::json!({"cniVersion":"1.2.0","name":"n","ipam":{"type":"bgpd-ipam","datastore":"file:/x"}});
        assert_eq!(NetConf::parse(conf).unwrap_err().code, code::INCOMPATIBLE_VERSION);
        assert!(legacy_result("0.4.0") && !legacy_result("1.0.0") && !legacy_result("1.1.0"));
    }

    #[test]
    fn test_release_conf_reads_only_what_it_needs() {
        let v = serde_json::json!({"cniVersion":"1.1.0","name":"n","bogus":1,
            "ipam":{"type":"bgpd-ipam","datastore":"file:/x","subnet":"typo","assign_ipv4":[1]}});
        let c = ReleaseConf::parse(&v).unwrap();
        assert_eq!((c.name.as_str(), c.datastore.as_str(), c.valid_attachments), ("n", "file:/x", None));
        let v = serde_json::json!({"name":"n","ipam":{}});
        assert_eq!(ReleaseConf::parse(&v).unwrap_err().code, code::INVALID_CONFIG);
    }

    #[test]
    fn test_limits_fall_back_to_defaults() {
        let l = Limits::of(&serde_json::json!({"ipam":{"lock_dir":"/tmp/l","timeout_seconds":3}}));
        assert_eq!((l.lock_file, l.timeout), (PathBuf::from("/tmp/l/ipam.lock"), Duration::from_secs(3)));
        let l = Limits::of(&serde_json::json!({"ipam":{"lock_dir":7,"timeout_seconds":"x"}}));
        assert_eq!((l.lock_file, l.timeout), (Path::new(DEFAULT_LOCK_DIR).join(LOCK_FILE), DEFAULT_TIMEOUT));
    }

    #[test]
    fn test_env_values_as_the_spec_defines_them() {
        assert!(check_container_id("3f6940ab5ab4").is_ok() && check_container_id("a_b.c-d").is_ok());
        assert!(
            check_container_id("").is_err() && check_container_id("-x").is_err() && check_container_id("a/b").is_err()
        );
        assert!(check_ifname("eth0").is_ok() && check_ifname("net1.100").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-chars-xx"] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    fn attachment(network: &str, cid: &str, ifname: &str) -> Attachment {
        Attachment { network: network.into(), container_id: cid.into(), ifname: ifname.into() }
    }

    #[test]
    fn test_handles_per_attachment_and_legacy() {
        assert_eq!(handle_id(&attachment("podnet", "c1", "net1")), "podnet.c1.net1");
        assert_eq!(legacy_handle_id("podnet", "c1").as_deref(), Some("podnet.c1"));
        assert_eq!(legacy_handle_id("podnet", "a.b"), None);
    }

    #[test]
    fn test_node_name_as_calico_finds_it() {
        let file = |content: Option<&'static str>| move |_: &Path| content.map(str::to_string);
        let host = || " Worker-7.Example ".to_string();
        assert_eq!(node_name(Some("conf-Node"), None, file(Some("from-file")), host), "conf-Node");
        assert_eq!(node_name(None, None, file(Some("from-file\n")), host), "from-file");
        assert_eq!(node_name(Some(""), None, file(Some("  ")), host), "worker-7.example");
        assert_eq!(node_name(None, None, file(None), host), "worker-7.example");
        let seen = std::cell::RefCell::new(None);
        node_name(
            None,
            Some(Path::new("/etc/nn")),
            |p: &Path| {
                seen.replace(Some(p.to_path_buf()));
                None
            },
            host,
        );
        assert_eq!(seen.into_inner(), Some(PathBuf::from("/etc/nn")));
    }

    fn alloc(handle: &str, node: &str, a: Option<Attachment>) -> AllocationAttribute {
        let mut secondary = BTreeMap::new();
        secondary.insert(ATTR_NODE.to_string(), node.to_string());
        if let Some(a) = a {
            secondary.insert(crate::allocator::ATTR_NETWORK.into(), a.network);
            secondary.insert(crate::allocator::ATTR_CONTAINER_ID.into(), a.container_id);
            secondary.insert(crate::allocator::ATTR_IFNAME.into(), a.ifname);
        }
        AllocationAttribute { handle_id: Some(handle.into()), secondary }
    }

    #[test]
    fn test_gc_releases_only_this_networks_stale_attachments_on_this_node() {
        let with = |n: &str, c: &str, i: &str, node: &str| {
            let a = attachment(n, c, i);
            alloc(&handle_id(&a), node, Some(a))
        };
        let allocations = [
            with("podnet", "c1", "eth0", "n1"),   // valid
            with("podnet", "c1", "net1", "n1"),   // same container, other interface: stale
            with("podnet", "c2", "eth0", "n1"),   // stale
            with("podnet", "c3", "eth0", "n2"),   // another node's
            with("podnet.x", "c4", "eth0", "n1"), // another network, whose name starts like ours
            alloc("podnet.c5", "n1", None),       // legacy, container c5 valid
            alloc("podnet.c6", "n1", None),       // legacy, stale
            alloc("podnet.x.c7", "n1", None),     // legacy of podnet.x, or podnet's "x.c7": unsure, kept
            alloc("other.c8", "n1", None),        // legacy of another network
        ];
        let valid = [
            ValidAttachment { container_id: "c1".into(), ifname: "eth0".into() },
            ValidAttachment { container_id: "c5".into(), ifname: "eth0".into() },
        ];
        let stale = stale_handles("podnet", "n1", &valid, &allocations);
        assert_eq!(stale, ["podnet.c1.net1", "podnet.c2.eth0", "podnet.c6"].map(String::from).into());
        // An empty list: everything of this network on this node that is sure to be ours.
        let all = stale_handles("podnet", "n1", &[], &allocations);
        assert_eq!(all.len(), 5, "{all:?}");
    }

    #[test]
    fn test_cni_args() {
        let a = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0").unwrap();
        assert_eq!(a["K8S_POD_NAME"], "web-0");
        assert!(parse_cni_args("novalue").is_err());
    }
}

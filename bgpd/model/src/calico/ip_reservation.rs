//! `IPReservation`: addresses the allocator (`ipam`) never hands out
//! automatically. Routing does not read it; it is here so that every Calico kind
//! is validated in one place, with the rules and errors of the others.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{parse_network, InvalidResource, Refusals};

/// `spec` of an IPReservation, as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpReservationSpec {
    /// Addresses or CIDRs never handed out automatically.
    #[serde(default, rename = "reservedCIDRs")]
    pub reserved_cidrs: Vec<String>,
}

/// A validated IP reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpReservation {
    /// `metadata.name`.
    pub name: String,
    /// Reserved networks (single addresses become /32 or /128).
    pub cidrs: Vec<IpNet>,
}

impl IpReservation {
    /// The `kind` of the resource.
    pub const KIND: &'static str = "IPReservation";

    /// Validates a reservation spec; `Err` holds every entry refused.
    ///
    /// The rule: each entry of `reservedCIDRs`, blanks around it ignored, is an
    /// address (reserved alone) or a network without host bits.
    pub fn validate(name: &str, spec: &IpReservationSpec) -> Result<IpReservation, Vec<InvalidResource>> {
        let mut refused = Refusals::new(Self::KIND, name);
        let mut cidrs = Vec::new();
        for (i, entry) in spec.reserved_cidrs.iter().enumerate() {
            let entry = entry.trim();
            match entry.parse::<IpAddr>() {
                Ok(ip) => cidrs.push(IpNet::from(ip)),
                Err(_) => match parse_network(entry) {
                    Ok(net) => cidrs.push(net),
                    Err(reason) => refused.add(format!("reservedCIDRs[{i}]"), reason),
                },
            }
        }
        refused.finish(|| Some(IpReservation { name: name.to_string(), cidrs }))
    }

    /// [`IpReservation::validate`] for a reader that stops at the first fault.
    pub fn from_spec(name: &str, spec: &IpReservationSpec) -> Result<IpReservation, InvalidResource> {
        Self::validate(name, spec).map_err(super::first)
    }

    /// Whether the reservation holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> IpReservationSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn addresses_and_networks_are_reserved() {
        let r = IpReservation::validate("r", &spec("{reservedCIDRs: [10.0.0.1, 10.0.1.0/24, ' fd00::7 ']}")).unwrap();
        let cidrs: Vec<String> = r.cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(cidrs, ["10.0.0.1/32", "10.0.1.0/24", "fd00::7/128"]);
        assert!(r.contains("10.0.1.77".parse().unwrap()) && !r.contains("10.0.0.2".parse().unwrap()));
        assert_eq!(IpReservation::validate("r", &spec("{}")).unwrap().cidrs, []);
    }

    #[test]
    fn each_bad_entry_is_refused_by_its_index() {
        let found =
            IpReservation::validate("r", &spec("{reservedCIDRs: [10.0.0.1, 10.0.1.1/24, nonsense]}")).unwrap_err();
        let got: Vec<(&str, &str)> = found.iter().map(|e| (e.field.as_str(), e.reason.as_str())).collect();
        assert_eq!(
            got,
            [
                ("reservedCIDRs[1]", "\"10.0.1.1/24\" has host bits set (the network is 10.0.1.0/24)"),
                ("reservedCIDRs[2]", "\"nonsense\" is not a CIDR (expected e.g. 10.96.0.0/12)"),
            ]
        );
        let first = IpReservation::from_spec("r", &spec("{reservedCIDRs: [x]}")).unwrap_err();
        assert_eq!((first.kind, first.name.as_str()), ("IPReservation", "r"));
    }
}

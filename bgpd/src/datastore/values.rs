//! Typed values that appear in several resources: AS numbers, Go durations, peer
//! addresses, BGP communities, MD5 keys, CIDRs and object names. Each parser returns
//! the reason as a sentence fragment; the caller adds the field path.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use serde_yaml::Value;

use super::fields::{describe, quoted};

/// A 4-octet AS number (RFC 6793), never 0.
///
/// Accepted as an integer (`64512`), a string of digits, or Calico's dotted
/// "asdot" notation (`"1.10"` = 1 × 65536 + 10, RFC 5396).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AsNumber(u32);

impl AsNumber {
    /// Calico's default cluster AS number.
    pub const CALICO_DEFAULT: AsNumber = AsNumber(64512);

    /// The AS number as an integer.
    pub fn get(self) -> u32 {
        self.0
    }

    /// An AS number from an integer; `None` for the reserved 0.
    pub fn new(n: u32) -> Option<AsNumber> {
        (n != 0).then_some(AsNumber(n))
    }

    /// Reads an AS number from a YAML integer or string.
    pub(crate) fn from_value(v: &Value) -> Result<AsNumber, String> {
        match v {
            Value::Number(n) => match n.as_u64() {
                Some(n) => Self::from_u64(n),
                None => Err(format!("AS number {n} is not a whole number in 1..=4294967295")),
            },
            Value::String(s) => s.parse(),
            other => Err(format!("expected an AS number, found {}", describe(other))),
        }
    }

    fn from_u64(n: u64) -> Result<AsNumber, String> {
        match u32::try_from(n) {
            Ok(0) => Err("AS number 0 is reserved and cannot be used".into()),
            Ok(n) => Ok(AsNumber(n)),
            Err(_) => Err(format!("AS number {n} is out of range 1..=4294967295")),
        }
    }
}

impl FromStr for AsNumber {
    type Err = String;
    fn from_str(s: &str) -> Result<AsNumber, String> {
        let digits = |p: &str| !p.is_empty() && p.len() <= 10 && p.bytes().all(|b| b.is_ascii_digit());
        if let Some((hi, lo)) = s.split_once('.') {
            if !digits(hi) || !digits(lo) {
                return Err(format!("{} is not an AS number (expected N or N.N)", quoted(s)));
            }
            let part = |p: &str| {
                p.parse::<u16>()
                    .map_err(|_| format!("{}: each half of a dotted AS number must be 0..=65535", quoted(s)))
            };
            let n = (u32::from(part(hi)?) << 16) | u32::from(part(lo)?);
            Self::from_u64(u64::from(n))
        } else if digits(s) {
            Self::from_u64(s.parse().map_err(|_| format!("AS number {s} is out of range 1..=4294967295"))?)
        } else {
            Err(format!("{} is not an AS number (expected N or N.N)", quoted(s)))
        }
    }
}

impl fmt::Display for AsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Parses a Go / Kubernetes duration string (`"30s"`, `"1m30s"`, `"1.5h"`, `"250ms"`,
/// `"0"`). Units: ns, us (µs), ms, s, m, h. Negative durations are rejected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("{} is not a duration ({why}; e.g. \"30s\", \"1m30s\")", quoted(s));
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(format!("{} is negative", quoted(s)));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    // Go's limit: the largest time.Duration is i64::MAX nanoseconds.
    const MAX_NANOS: u128 = i64::MAX as u128;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_end);
        let (frac, after) = match after.strip_prefix('.') {
            Some(r) => r.split_at(r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len())),
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad("expected a number"));
        }
        let unit_end = after.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        // More than 20 integer digits overflows any unit; more than 18 fraction
        // digits is below a nanosecond for every unit.
        if int.len() > 20 {
            return Err(bad("too large"));
        }
        let whole: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| bad("too large"))? };
        let frac = &frac[..frac.len().min(18)];
        let frac_nanos = if frac.is_empty() {
            0
        } else {
            let num: u128 = frac.parse().map_err(|_| bad("bad fraction"))?;
            num * unit_nanos / 10u128.pow(frac.len() as u32)
        };
        total = whole
            .checked_mul(unit_nanos)
            .and_then(|n| n.checked_add(frac_nanos))
            .and_then(|n| n.checked_add(total))
            .filter(|n| *n <= MAX_NANOS)
            .ok_or_else(|| bad("too large"))?;
        rest = after;
    }
    // total <= i64::MAX, so it fits a u64.
    Ok(Duration::from_nanos(total as u64))
}

/// Reads a duration from a YAML string.
pub(crate) fn duration_from_value(v: &Value) -> Result<Duration, String> {
    match v {
        Value::String(s) => parse_duration(s),
        other => Err(format!("expected a duration string such as \"30s\", found {}", describe(other))),
    }
}

/// A peer's address as given in `peerIP`: an IP and an optional TCP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerAddress {
    /// The peer's IP address.
    pub ip: IpAddr,
    /// The TCP port, when given as `IPv4:port` or `[IPv6]:port`.
    pub port: Option<u16>,
}

impl FromStr for PeerAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<PeerAddress, String> {
        if let Ok(ip) = IpAddr::from_str(s) {
            return Ok(PeerAddress { ip, port: None });
        }
        match SocketAddr::from_str(s) {
            Ok(sa) if sa.port() == 0 => Err(format!("{}: port 0 is not a usable port", quoted(s))),
            Ok(sa) => Ok(PeerAddress { ip: sa.ip(), port: Some(sa.port()) }),
            Err(_) => Err(format!("{} is not an IP address (expected IP, IPv4:port or [IPv6]:port)", quoted(s))),
        }
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            None => write!(f, "{}", self.ip),
            Some(port) => write!(f, "{}", SocketAddr::new(self.ip, port)),
        }
    }
}

/// Parses a plain IP address.
pub(crate) fn parse_ip(s: &str) -> Result<IpAddr, String> {
    IpAddr::from_str(s).map_err(|_| format!("{} is not an IP address", quoted(s)))
}

/// A BGP community value: standard (RFC 1997, `aa:nn`) or large (RFC 8092, `aa:nn:mm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfiguredCommunity {
    /// `aa:nn`, each part 0..=65535.
    Standard(u16, u16),
    /// `aa:nn:mm`, each part 0..=4294967295.
    Large(u32, u32, u32),
}

impl FromStr for ConfiguredCommunity {
    type Err = String;
    fn from_str(s: &str) -> Result<ConfiguredCommunity, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num_ok = |p: &&str| !p.is_empty() && p.len() <= 10 && p.bytes().all(|b| b.is_ascii_digit());
        if !parts.iter().all(num_ok) {
            return Err(format!("{} is not a community (expected aa:nn or aa:nn:mm)", quoted(s)));
        }
        match parts.as_slice() {
            [a, n] => match (a.parse(), n.parse()) {
                (Ok(a), Ok(n)) => Ok(ConfiguredCommunity::Standard(a, n)),
                _ => Err(format!("{}: each part of a standard community must be 0..=65535", quoted(s))),
            },
            [a, n, m] => match (a.parse(), n.parse(), m.parse()) {
                (Ok(a), Ok(n), Ok(m)) => Ok(ConfiguredCommunity::Large(a, n, m)),
                _ => Err(format!("{}: each part of a large community must be 0..=4294967295", quoted(s))),
            },
            _ => Err(format!("{} is not a community (expected aa:nn or aa:nn:mm)", quoted(s))),
        }
    }
}

impl fmt::Display for ConfiguredCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfiguredCommunity::Standard(a, n) => write!(f, "{a}:{n}"),
            ConfiguredCommunity::Large(a, n, m) => write!(f, "{a}:{n}:{m}"),
        }
    }
}

/// A TCP MD5 signature key (RFC 2385) resolved from a Secret. Its `Debug` output
/// never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Key(Vec<u8>);

impl Md5Key {
    /// Linux's `TCP_MD5SIG_MAXKEYLEN`.
    pub const MAX_LEN: usize = 80;

    /// Wraps key bytes, checking the length Linux accepts (1..=80).
    pub fn new(bytes: Vec<u8>) -> Result<Md5Key, String> {
        match bytes.len() {
            0 => Err("the password is empty".into()),
            n if n > Self::MAX_LEN => {
                Err(format!("the password is {n} bytes; TCP MD5 keys are at most {} bytes", Self::MAX_LEN))
            }
            _ => Ok(Md5Key(bytes)),
        }
    }

    /// The key bytes, for `setsockopt(TCP_MD5SIG)`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Md5Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Md5Key(<{} bytes redacted>)", self.0.len())
    }
}

/// Parses a CIDR that must be a network address (no host bits set): the model's
/// rule for IPPool's `cidr`, used for every CIDR field bgpd reads.
pub(crate) use bgpd_model::calico::parse_network;

/// Parses an interface address such as `10.0.0.1/24`, keeping both the address and the
/// prefix length. A bare address is taken as a host prefix (/32).
pub(crate) fn parse_ipv4_interface(s: &str) -> Result<Ipv4Net, String> {
    match Ipv4Net::from_str(s) {
        Ok(n) => Ok(n),
        Err(_) => match std::net::Ipv4Addr::from_str(s) {
            Ok(a) => Ok(Ipv4Net::from(a)),
            Err(_) => Err(format!("{} is not an IPv4 address with prefix (expected e.g. 10.0.0.1/24)", quoted(s))),
        },
    }
}

/// Parses an interface address such as `fd00::1/64` (a bare address is a /128).
pub(crate) fn parse_ipv6_interface(s: &str) -> Result<Ipv6Net, String> {
    match Ipv6Net::from_str(s) {
        Ok(n) => Ok(n),
        Err(_) => match std::net::Ipv6Addr::from_str(s) {
            Ok(a) => Ok(Ipv6Net::from(a)),
            Err(_) => Err(format!("{} is not an IPv6 address with prefix (expected e.g. fd00::1/64)", quoted(s))),
        },
    }
}

/// Whether `s` can name an object: the model's rule (`bgpd_model::calico::check_name`),
/// which affinities are read by too.
pub(crate) use bgpd_model::calico::check_name;

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn as_numbers_plain_dotted_and_strings() {
        assert_eq!(AsNumber::from_value(&Value::from(64512)).unwrap().get(), 64512);
        assert_eq!(AsNumber::from_value(&Value::from("65001")).unwrap().get(), 65001);
        assert_eq!("1.10".parse::<AsNumber>().unwrap().get(), 65546);
        assert_eq!("65535.65535".parse::<AsNumber>().unwrap().get(), u32::MAX);
        assert_eq!("4294967295".parse::<AsNumber>().unwrap().get(), u32::MAX);
        assert_eq!("0.1".parse::<AsNumber>().unwrap().get(), 1);
    }

    #[test]
    fn as_numbers_rejected() {
        for bad in ["0", "0.0", "4294967296", "1.65536", "65536.0", "1.", ".1", "1.2.3", "abc", "-1", "", " 1"] {
            assert!(bad.parse::<AsNumber>().is_err(), "{bad:?} accepted");
        }
        assert!(AsNumber::from_value(&Value::from(0)).unwrap_err().contains("reserved"));
        assert!(AsNumber::from_value(&Value::from(-5)).is_err());
        assert!(AsNumber::from_value(&Value::from(1.5)).is_err());
        assert!(AsNumber::from_value(&Value::from(true)).is_err());
        assert!(AsNumber::from_value(&Value::from(4294967296u64)).unwrap_err().contains("out of range"));
    }

    #[test]
    fn durations_as_go_parses_them() {
        assert_eq!(parse_duration("30s").unwrap(), secs(30));
        assert_eq!(parse_duration("1m30s").unwrap(), secs(90));
        assert_eq!(parse_duration("2h45m").unwrap(), secs(2 * 3600 + 45 * 60));
        assert_eq!(parse_duration("1.5h").unwrap(), secs(5400));
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.s").unwrap(), secs(1));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10us").unwrap(), Duration::from_micros(10));
        assert_eq!(parse_duration("10µs").unwrap(), Duration::from_micros(10));
        assert_eq!(parse_duration("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("+5s").unwrap(), secs(5));
        assert_eq!(parse_duration("2562047h").unwrap(), secs(2562047 * 3600));
    }

    #[test]
    fn durations_rejected() {
        for bad in ["", "30", "s", "1x", "-5s", "1m30", "1..5s", ".s", "5 s", "2562048h", "99999999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
        assert!(duration_from_value(&Value::from(30)).unwrap_err().contains("duration string"));
    }

    #[test]
    fn peer_addresses() {
        let p: PeerAddress = "10.0.0.1".parse().unwrap();
        assert_eq!((p.ip.to_string(), p.port), ("10.0.0.1".into(), None));
        let p: PeerAddress = "10.0.0.1:1179".parse().unwrap();
        assert_eq!(p.port, Some(1179));
        let p: PeerAddress = "[fd00::1]:1790".parse().unwrap();
        assert_eq!((p.ip.to_string(), p.port), ("fd00::1".into(), Some(1790)));
        assert_eq!(p.to_string(), "[fd00::1]:1790");
        let p: PeerAddress = "fd00::1".parse().unwrap();
        assert_eq!(p.port, None);
        for bad in ["10.0.0.300", "10.0.0.1:0", "10.0.0.1:70000", "fd00::1:179:x", "[fd00::1]", "host:179", ""] {
            assert!(bad.parse::<PeerAddress>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            "10.0.0.300".parse::<PeerAddress>().unwrap_err(),
            "\"10.0.0.300\" is not an IP address (expected IP, IPv4:port or [IPv6]:port)"
        );
    }

    #[test]
    fn communities() {
        assert_eq!("65000:100".parse::<ConfiguredCommunity>().unwrap(), ConfiguredCommunity::Standard(65000, 100));
        assert_eq!(
            "63400:300:100".parse::<ConfiguredCommunity>().unwrap(),
            ConfiguredCommunity::Large(63400, 300, 100)
        );
        assert_eq!(ConfiguredCommunity::Large(1, 2, 3).to_string(), "1:2:3");
        for bad in ["65536:1", "1", "1:2:3:4", "a:b", "1:", "4294967296:1:1", ""] {
            assert!(bad.parse::<ConfiguredCommunity>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn md5_keys_have_linux_limits_and_hide_in_debug() {
        assert!(Md5Key::new(Vec::new()).is_err());
        assert!(Md5Key::new(vec![b'a'; 81]).is_err());
        let k = Md5Key::new(b"s3cret".to_vec()).unwrap();
        assert_eq!(format!("{k:?}"), "Md5Key(<6 bytes redacted>)");
        assert_eq!(k.as_bytes(), b"s3cret");
    }

    #[test]
    fn cidrs_and_interfaces() {
        assert_eq!(parse_network("10.96.0.0/12").unwrap().to_string(), "10.96.0.0/12");
        assert!(parse_network("10.96.0.1/12").unwrap_err().contains("10.96.0.0/12"));
        assert!(parse_network("10.96.0.0").is_err());
        let a = parse_ipv4_interface("10.0.0.1/24").unwrap();
        assert_eq!((a.addr().to_string(), a.prefix_len()), ("10.0.0.1".into(), 24));
        assert_eq!(parse_ipv4_interface("10.0.0.1").unwrap().prefix_len(), 32);
        assert!(parse_ipv4_interface("fd00::1/64").is_err());
        assert_eq!(parse_ipv6_interface("fd00::1/64").unwrap().addr().to_string(), "fd00::1");
        assert!(parse_ipv6_interface("10.0.0.1/24").is_err());
    }
}

//! NLRI: prefixes with optional ADD-PATH path identifiers (RFC 4271 §4.3, RFC 7911 §3).

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::BufMut;
use ipnet::{Ipv4Net, Ipv6Net};
use nom::number::complete::{be_u32, be_u8};

/// One NLRI entry: a prefix and, when ADD-PATH is in use for its family and
/// direction, the path identifier the sender gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nlri<P> {
    /// The ADD-PATH path identifier (RFC 7911), present only when negotiated.
    pub path_id: Option<u32>,
    /// The prefix, with bits past its length cleared.
    pub prefix: P,
}

impl<P> Nlri<P> {
    /// An NLRI entry without a path identifier.
    pub fn new(prefix: P) -> Self {
        Nlri { path_id: None, prefix }
    }
}

/// A prefix type as it is encoded in NLRI fields: a length in bits, then
/// just enough octets to hold it.
pub trait WirePrefix: Copy + Eq + std::hash::Hash + std::fmt::Debug + Ord {
    /// The longest valid prefix length.
    const MAX_LEN: u8;
    /// Builds the prefix from its length and its (already length-checked)
    /// leading octets, clearing bits past the length.
    fn from_wire(len: u8, octets: &[u8]) -> Self;
    /// The prefix length in bits.
    fn len_bits(&self) -> u8;
    /// The address octets, big-endian.
    fn octets_into(&self, out: &mut [u8; 16]);
}

impl WirePrefix for Ipv4Net {
    const MAX_LEN: u8 = 32;

    fn from_wire(len: u8, octets: &[u8]) -> Self {
        // A match instead of a variable-length copy: this is the hot path of
        // UPDATE decoding.
        let raw = match *octets {
            [] => 0,
            [a] => u32::from(a) << 24,
            [a, b] => u32::from_be_bytes([a, b, 0, 0]),
            [a, b, c] => u32::from_be_bytes([a, b, c, 0]),
            [a, b, c, d, ..] => u32::from_be_bytes([a, b, c, d]),
        };
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
        let addr = Ipv4Addr::from(raw & mask);
        // Invariant: callers check len <= MAX_LEN before calling.
        Ipv4Net::new(addr, len).unwrap_or_default()
    }

    fn len_bits(&self) -> u8 {
        self.prefix_len()
    }

    fn octets_into(&self, out: &mut [u8; 16]) {
        out[..4].copy_from_slice(&self.addr().octets());
    }
}

impl WirePrefix for Ipv6Net {
    const MAX_LEN: u8 = 128;

    fn from_wire(len: u8, octets: &[u8]) -> Self {
        let mut a = [0u8; 16];
        a[..octets.len()].copy_from_slice(octets);
        let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
        let addr = Ipv6Addr::from(u128::from_be_bytes(a) & mask);
        // Invariant: callers check len <= MAX_LEN before calling.
        Ipv6Net::new(addr, len).unwrap_or_default()
    }

    fn len_bits(&self) -> u8 {
        self.prefix_len()
    }

    fn octets_into(&self, out: &mut [u8; 16]) {
        out.copy_from_slice(&self.addr().octets());
    }
}

/// Why an NLRI field could not be parsed (RFC 7606 §5.3: a syntax error in
/// an NLRI field makes its prefixes impossible to locate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NlriError {
    /// A prefix length exceeds the family's maximum.
    LengthTooLong,
    /// The field ends inside a path identifier or prefix.
    Overrun,
}

impl NlriError {
    /// A log-friendly description.
    pub fn reason(self) -> &'static str {
        match self {
            NlriError::LengthTooLong => "prefix length exceeds the address family's maximum",
            NlriError::Overrun => "NLRI field ends inside a prefix",
        }
    }
}

type Res<'a, T> = nom::IResult<&'a [u8], T, ()>;

#[inline]
fn prefix<P: WirePrefix>(input: &[u8]) -> Result<(&[u8], P), NlriError> {
    let (rest, len) = be_u8::<_, ()>(input).map_err(|_| NlriError::Overrun)?;
    if len > P::MAX_LEN {
        return Err(NlriError::LengthTooLong);
    }
    let n = usize::from(len).div_ceil(8);
    if rest.len() < n {
        return Err(NlriError::Overrun);
    }
    let (octets, rest) = rest.split_at(n);
    Ok((rest, P::from_wire(len, octets)))
}

fn path_id(input: &[u8]) -> Res<'_, u32> {
    be_u32(input)
}

/// Decodes a whole NLRI field (prefixes back to back) into `out`.
///
/// With `add_path`, each prefix is preceded by a 4-octet path identifier.
pub fn decode_nlri<P: WirePrefix>(input: &[u8], add_path: bool, out: &mut Vec<Nlri<P>>) -> Result<(), NlriError> {
    out.reserve_exact(count_nlri(input, add_path));
    if !add_path {
        // The common case, as one tight loop over the field.
        let mut i = 0;
        while let Some(&len) = input.get(i) {
            if len > P::MAX_LEN {
                return Err(NlriError::LengthTooLong);
            }
            let end = i + 1 + usize::from(len).div_ceil(8);
            let Some(octets) = input.get(i + 1..end) else { return Err(NlriError::Overrun) };
            out.push(Nlri { path_id: None, prefix: P::from_wire(len, octets) });
            i = end;
        }
        return Ok(());
    }
    let mut rest = input;
    while !rest.is_empty() {
        let (r, id) = path_id(rest).map_err(|_| NlriError::Overrun)?;
        let (r, prefix) = prefix::<P>(r)?;
        rest = r;
        out.push(Nlri { path_id: Some(id), prefix });
    }
    Ok(())
}

/// How many entries a well-formed field holds (a pre-pass, so the vector is
/// sized once and exactly; a malformed field is caught by the real pass).
fn count_nlri(input: &[u8], add_path: bool) -> usize {
    let skip = if add_path { 4 } else { 0 };
    let (mut i, mut n) = (0, 0);
    while let Some(&len) = input.get(i + skip) {
        i += skip + 1 + usize::from(len).div_ceil(8);
        n += 1;
    }
    n
}

/// The encoded size of one NLRI entry.
pub fn nlri_wire_len<P: WirePrefix>(n: &Nlri<P>) -> usize {
    let id = if n.path_id.is_some() { 4 } else { 0 };
    id + 1 + usize::from(n.prefix.len_bits()).div_ceil(8)
}

/// Appends one NLRI entry. The path identifier is written if present: the
/// caller chooses entries that match the session's ADD-PATH state.
pub fn encode_nlri<P: WirePrefix, B: BufMut>(n: &Nlri<P>, out: &mut B) {
    if let Some(id) = n.path_id {
        out.put_u32(id);
    }
    let len = n.prefix.len_bits();
    out.put_u8(len);
    let mut oct = [0u8; 16];
    n.prefix.octets_into(&mut oct);
    out.put_slice(&oct[..usize::from(len).div_ceil(8)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_bits_are_masked_not_rejected() {
        // 10.1.2.255/24: the last octet is past the length and must be cleared.
        let mut out = Vec::new();
        decode_nlri::<Ipv4Net>(&[24, 10, 1, 2], false, &mut out).unwrap();
        assert_eq!(out[0].prefix, "10.1.2.0/24".parse::<Ipv4Net>().unwrap());
        out.clear();
        decode_nlri::<Ipv4Net>(&[23, 10, 1, 3], false, &mut out).unwrap();
        assert_eq!(out[0].prefix, "10.1.2.0/23".parse::<Ipv4Net>().unwrap());
    }

    #[test]
    fn length_over_maximum_is_an_error() {
        let mut out = Vec::<Nlri<Ipv4Net>>::new();
        assert_eq!(decode_nlri(&[33, 1, 2, 3, 4, 5], false, &mut out), Err(NlriError::LengthTooLong));
        let mut out6 = Vec::<Nlri<Ipv6Net>>::new();
        assert_eq!(decode_nlri(&[129], false, &mut out6), Err(NlriError::LengthTooLong));
    }

    #[test]
    fn overrun_is_an_error() {
        let mut out = Vec::<Nlri<Ipv4Net>>::new();
        assert_eq!(decode_nlri(&[24, 10, 1], false, &mut out), Err(NlriError::Overrun));
        assert_eq!(decode_nlri(&[0, 0, 1], true, &mut out), Err(NlriError::Overrun));
    }

    #[test]
    fn add_path_ids_round_trip() {
        let bytes = [0, 0, 0, 7, 32, 192, 0, 2, 1, 0, 0, 0, 8, 0];
        let mut out = Vec::<Nlri<Ipv4Net>>::new();
        decode_nlri(&bytes, true, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].path_id, Some(7));
        assert_eq!(out[1].prefix, "0.0.0.0/0".parse::<Ipv4Net>().unwrap());
        let mut enc = Vec::new();
        for n in &out {
            encode_nlri(n, &mut enc);
        }
        assert_eq!(enc, bytes);
    }
}

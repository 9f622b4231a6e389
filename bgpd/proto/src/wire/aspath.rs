//! AS_PATH and AS4_PATH (RFC 4271 §4.3, RFC 5065, RFC 6793).

use bytes::BufMut;
use smallvec::SmallVec;

use crate::types::AS_TRANS;

/// The type of an AS_PATH segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentKind {
    /// AS_SET (1): an unordered set, from aggregation.
    Set,
    /// AS_SEQUENCE (2): the ordered path.
    Sequence,
    /// AS_CONFED_SEQUENCE (3, RFC 5065).
    ConfedSequence,
    /// AS_CONFED_SET (4, RFC 5065).
    ConfedSet,
}

impl SegmentKind {
    /// The segment type octet.
    pub fn code(self) -> u8 {
        match self {
            SegmentKind::Set => 1,
            SegmentKind::Sequence => 2,
            SegmentKind::ConfedSequence => 3,
            SegmentKind::ConfedSet => 4,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => SegmentKind::Set,
            2 => SegmentKind::Sequence,
            3 => SegmentKind::ConfedSequence,
            4 => SegmentKind::ConfedSet,
            _ => return None,
        })
    }

    /// Whether this is a confederation segment.
    pub fn is_confed(self) -> bool {
        matches!(self, SegmentKind::ConfedSequence | SegmentKind::ConfedSet)
    }
}

/// One AS_PATH segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsSegment {
    /// The segment type.
    pub kind: SegmentKind,
    /// The AS numbers, in wire order (1 to 255 of them).
    pub asns: Asns,
}

/// The AS numbers of a segment; up to 8 are stored inline.
pub type Asns = SmallVec<[u32; 8]>;

/// An AS path: a list of segments (one is stored inline).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsPath {
    /// The segments in wire order.
    pub segments: SmallVec<[AsSegment; 1]>,
}

/// Why an AS path could not be parsed (RFC 7606 §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AsPathError {
    UnknownSegmentType,
    ZeroLengthSegment,
    Overrun,
}

impl AsPathError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            AsPathError::UnknownSegmentType => "AS path segment of unknown type",
            AsPathError::ZeroLengthSegment => "AS path segment of length zero",
            AsPathError::Overrun => "AS path segment overruns the attribute",
        }
    }
}

impl AsPath {
    /// A path of one AS_SEQUENCE (empty when `asns` is empty).
    pub fn sequence(asns: impl IntoIterator<Item = u32>) -> AsPath {
        let asns: Vec<u32> = asns.into_iter().collect();
        let mut p = AsPath::default();
        for chunk in asns.chunks(255) {
            p.segments.push(AsSegment { kind: SegmentKind::Sequence, asns: Asns::from_slice(chunk) });
        }
        p
    }

    /// Parses an AS path whose AS numbers are `as_size` (2 or 4) octets.
    pub(crate) fn decode(mut data: &[u8], as_size: usize) -> Result<AsPath, AsPathError> {
        let mut segments = SmallVec::new();
        while !data.is_empty() {
            let [kind, count, rest @ ..] = data else {
                // RFC 7606 §7.2: a single octet left cannot hold a segment header.
                return Err(AsPathError::Overrun);
            };
            let kind = SegmentKind::from_code(*kind).ok_or(AsPathError::UnknownSegmentType)?;
            if *count == 0 {
                return Err(AsPathError::ZeroLengthSegment);
            }
            let n = usize::from(*count) * as_size;
            if rest.len() < n {
                return Err(AsPathError::Overrun);
            }
            let (body, tail) = rest.split_at(n);
            let asns = if as_size == 4 {
                body.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect()
            } else {
                body.chunks_exact(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).collect()
            };
            segments.push(AsSegment { kind, asns });
            data = tail;
        }
        Ok(AsPath { segments })
    }

    /// The encoded size with `as_size`-octet AS numbers.
    pub(crate) fn wire_len(&self, as_size: usize) -> usize {
        self.segments.iter().map(|s| 2 + s.asns.len() * as_size).sum()
    }

    /// Encodes with `as_size`-octet AS numbers; in 2-octet form an AS number
    /// above 65535 is written as AS_TRANS (RFC 6793 §4.2.2). Segments longer
    /// than 255 AS numbers are split.
    pub(crate) fn encode<B: BufMut>(&self, as_size: usize, out: &mut B) {
        for s in &self.segments {
            for chunk in s.asns.chunks(255) {
                out.put_u8(s.kind.code());
                // Invariant: chunks(255) yields at most 255 elements.
                out.put_u8(chunk.len() as u8);
                for &a in chunk {
                    if as_size == 4 {
                        out.put_u32(a);
                    } else {
                        out.put_u16(u16::try_from(a).unwrap_or(AS_TRANS as u16));
                    }
                }
            }
        }
    }

    /// The path length used by best-path selection and by RFC 6793: an
    /// AS_SET counts one, confederation segments count zero.
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentKind::Sequence => s.asns.len(),
                SegmentKind::Set => 1,
                _ => 0,
            })
            .sum()
    }

    /// The first AS of the path (the neighbouring AS), if it starts with a sequence.
    pub fn first_asn(&self) -> Option<u32> {
        match self.segments.first() {
            Some(AsSegment { kind: SegmentKind::Sequence, asns }) => asns.first().copied(),
            _ => None,
        }
    }

    /// The last AS of the path (the origin AS), if it ends with a sequence.
    pub fn origin_asn(&self) -> Option<u32> {
        match self.segments.last() {
            Some(AsSegment { kind: SegmentKind::Sequence, asns }) => asns.last().copied(),
            _ => None,
        }
    }

    /// Whether any segment contains `asn`, and how many times in all.
    pub fn count(&self, asn: u32) -> usize {
        self.segments.iter().flat_map(|s| &s.asns).filter(|&&a| a == asn).count()
    }

    /// Whether the path has confederation segments.
    pub fn has_confed(&self) -> bool {
        self.segments.iter().any(|s| s.kind.is_confed())
    }

    /// Prepends `asn` `times` times, as an AS_SEQUENCE at the front.
    pub fn prepend(&mut self, asn: u32, times: usize) {
        if times == 0 {
            return;
        }
        match self.segments.first_mut() {
            Some(s) if s.kind == SegmentKind::Sequence && s.asns.len() + times <= 255 => {
                s.asns.insert_many(0, std::iter::repeat_n(asn, times));
            }
            _ => {
                let new = AsPath::sequence(std::iter::repeat_n(asn, times));
                self.segments.insert_many(0, new.segments);
            }
        }
    }

    /// The AS path a 4-octet speaker uses for a route received from a
    /// 2-octet peer: AS_PATH merged with AS4_PATH (RFC 6793 §4.2.3). The
    /// AGGREGATOR rule of that section is applied by
    /// [`Update::effective_as_path`](crate::wire::Update::effective_as_path).
    pub fn reconcile_as4(&self, as4_path: Option<&AsPath>) -> AsPath {
        let Some(as4) = as4_path else { return self.clone() };
        let n = self.path_len();
        let m = as4.path_len();
        if n < m {
            // RFC 6793 §4.2.3: AS4_PATH longer than AS_PATH is ignored.
            return self.clone();
        }
        let mut keep = n - m;
        let mut out = AsPath::default();
        for s in &self.segments {
            if keep == 0 {
                break;
            }
            match s.kind {
                SegmentKind::Sequence => {
                    let take = keep.min(s.asns.len());
                    out.segments.push(AsSegment { kind: s.kind, asns: Asns::from_slice(&s.asns[..take]) });
                    keep -= take;
                }
                SegmentKind::Set => {
                    out.segments.push(s.clone());
                    keep -= 1;
                }
                _ => out.segments.push(s.clone()),
            }
        }
        for s in &as4.segments {
            match (out.segments.last_mut(), s.kind) {
                (Some(last), SegmentKind::Sequence)
                    if last.kind == SegmentKind::Sequence && last.asns.len() + s.asns.len() <= 255 =>
                {
                    last.asns.extend_from_slice(&s.asns);
                }
                _ => out.segments.push(s.clone()),
            }
        }
        out
    }
}

impl std::fmt::Display for AsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for s in &self.segments {
            let (open, close) = match s.kind {
                SegmentKind::Sequence => ("", ""),
                SegmentKind::Set => ("{", "}"),
                SegmentKind::ConfedSequence => ("(", ")"),
                SegmentKind::ConfedSet => ("[", "]"),
            };
            if !first {
                write!(f, " ")?;
            }
            first = false;
            write!(f, "{open}")?;
            for (i, a) in s.asns.iter().enumerate() {
                if i > 0 {
                    let sep = if matches!(s.kind, SegmentKind::Set | SegmentKind::ConfedSet) { "," } else { " " };
                    write!(f, "{sep}")?;
                }
                write!(f, "{a}")?;
            }
            write!(f, "{close}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(a: &[u32]) -> AsSegment {
        AsSegment { kind: SegmentKind::Sequence, asns: Asns::from_slice(a) }
    }

    #[test]
    fn decode_two_and_four_octet() {
        let two = [2, 2, 0xfd, 0xe8, 0x5b, 0xa0];
        assert_eq!(AsPath::decode(&two, 2).unwrap().segments.as_slice(), [seq(&[65000, 23456])]);
        let four = [2, 1, 0, 1, 0, 0];
        assert_eq!(AsPath::decode(&four, 4).unwrap().segments.as_slice(), [seq(&[65536])]);
    }

    #[test]
    fn rfc7606_malformed_segments() {
        assert_eq!(AsPath::decode(&[5, 1, 0, 1], 2), Err(AsPathError::UnknownSegmentType));
        assert_eq!(AsPath::decode(&[2, 0], 2), Err(AsPathError::ZeroLengthSegment));
        assert_eq!(AsPath::decode(&[2, 2, 0, 1], 2), Err(AsPathError::Overrun));
        assert_eq!(AsPath::decode(&[2, 1, 0, 1, 2], 2), Err(AsPathError::Overrun));
    }

    #[test]
    fn encode_two_octet_uses_as_trans() {
        let p = AsPath::sequence([65000, 4_200_000_000]);
        let mut out = Vec::new();
        p.encode(2, &mut out);
        assert_eq!(out, [2, 2, 0xfd, 0xe8, 0x5b, 0xa0]);
    }

    #[test]
    fn reconcile_merges_as4_path() {
        // RFC 6793 §4.2.3: AS_PATH 100 23456 23456, AS4_PATH 70000 80000.
        let p = AsPath::sequence([100, 23456, 23456]);
        let as4 = AsPath::sequence([70000, 80000]);
        assert_eq!(p.reconcile_as4(Some(&as4)), AsPath::sequence([100, 70000, 80000]));
        // Longer AS4_PATH is ignored.
        let long = AsPath::sequence([1, 2, 3, 4]);
        assert_eq!(p.reconcile_as4(Some(&long)), p);
    }

    #[test]
    fn prepend_and_lengths() {
        let mut p = AsPath::sequence([2, 3]);
        p.prepend(1, 2);
        assert_eq!(p.to_string(), "1 1 2 3");
        p.segments.push(AsSegment { kind: SegmentKind::Set, asns: Asns::from_slice(&[7, 8]) });
        assert_eq!(p.path_len(), 5);
        assert_eq!(p.to_string(), "1 1 2 3 {7,8}");
        assert_eq!(p.first_asn(), Some(1));
        assert_eq!(p.origin_asn(), None);
    }
}

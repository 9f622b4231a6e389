//! Key ranges: etcd addresses "every key starting with P" as the range
//! `[P, range_end)`, where `range_end` is the smallest key greater than every key
//! with the prefix.

/// The range `(key, range_end)` of every key that starts with `prefix`, as etcd's
/// own clients compute it (`clientv3.GetPrefixRangeEnd`): the last byte that is
/// not `0xff` is incremented and the bytes after it dropped. A prefix of `0xff`
/// bytes only has no greater key, so the range is open-ended (`range_end` `"\0"`,
/// which etcd reads as "to the end"); the empty prefix means every key, which
/// etcd spells `["\0", "\0")`.
pub fn prefix_range(prefix: impl Into<Vec<u8>>) -> (Vec<u8>, Vec<u8>) {
    let prefix = prefix.into();
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    let range_end = prefix_range_end(&prefix);
    (prefix, range_end)
}

/// The `range_end` of [`prefix_range`] for a non-empty `prefix`.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b != 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_byte_is_incremented() {
        assert_eq!(prefix_range_end(b"/calico/ipam/v2/"), b"/calico/ipam/v20".to_vec());
        assert_eq!(prefix_range_end(b"a"), b"b".to_vec());
        assert_eq!(prefix_range_end(&[0x00]), vec![0x01]);
        assert_eq!(prefix_range_end(&[0x61, 0xfe]), vec![0x61, 0xff]);
    }

    #[test]
    fn trailing_0xff_bytes_are_dropped() {
        assert_eq!(prefix_range_end(&[0x61, 0xff]), vec![0x62]);
        assert_eq!(prefix_range_end(&[0x61, 0xff, 0xff]), vec![0x62]);
        assert_eq!(prefix_range_end(&[0x01, 0x7f, 0xff]), vec![0x01, 0x80]);
    }

    #[test]
    fn a_prefix_of_0xff_bytes_is_open_ended() {
        assert_eq!(prefix_range_end(&[0xff]), vec![0]);
        assert_eq!(prefix_range_end(&[0xff, 0xff, 0xff]), vec![0]);
    }

    #[test]
    fn the_empty_prefix_is_every_key() {
        assert_eq!(prefix_range(""), (vec![0], vec![0]));
        assert_eq!(prefix_range("/p/"), (b"/p/".to_vec(), b"/p0".to_vec()));
    }

    proptest::proptest! {
        /// Every key with the prefix is in the range and no key without it is
        /// (keys short enough to enumerate the interesting ones).
        #[test]
        fn the_range_holds_exactly_the_prefixed_keys(
            prefix in proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 0x61, 0xfe, 0xff]), 1..4),
            key in proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 0x61, 0xfe, 0xff]), 0..6),
        ) {
            let end = prefix_range_end(&prefix);
            let open_ended = end == [0];
            let in_range = key.as_slice() >= prefix.as_slice() && (open_ended || key.as_slice() < end.as_slice());
            proptest::prop_assert_eq!(in_range, key.starts_with(&prefix));
        }
    }
}

//! Any bytes as a Path Attributes field, in session and MRT RIB contexts.
#![no_main]

use bgpd_proto::wire::decode_path_attributes;
use bgpd_proto::{Family, WireContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let _ = decode_path_attributes(rest, &WireContext::new(flags & 1 != 0));
    let _ = bgpd_proto::mrt::decode_rib_attributes(rest, Family::IPV6_UNICAST, flags & 1 != 0);
});

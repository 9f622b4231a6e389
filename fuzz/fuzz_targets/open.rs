//! Any bytes as an OPEN body: capabilities and RFC 9072 extended parameters.
#![no_main]

use bgpd_proto::wire::Open;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(open) = Open::decode(data) {
        let _ = open.asn();
        let _ = open.capabilities().count();
    }
});

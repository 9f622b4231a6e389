//! Any bytes as an MRT stream, with every BGP message found decoded.
#![no_main]

use bgpd_proto::mrt::{decode_rib_attributes, Entry, Records};
use bgpd_proto::wire::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for rec in Records::new(data).flatten() {
        match rec.entry() {
            Ok(Entry::Message(m)) => {
                let _ = Message::decode(m.message, &m.context);
            }
            Ok(Entry::Rib { family, four_octet_as, entries, .. }) => {
                for e in entries {
                    let _ = decode_rib_attributes(e.attributes, family, four_octet_as);
                }
            }
            _ => {}
        }
    }
});

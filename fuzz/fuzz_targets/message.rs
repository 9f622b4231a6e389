//! Any bytes, as a stream of BGP messages under any negotiated context:
//! the decoder returns a message, "need more bytes" or an error, never panics,
//! and whatever it decodes re-encodes to bytes that decode to the same value.
#![no_main]

use bgpd_proto::wire::Message;
use bgpd_proto::{FamilySet, WireContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let ctx = WireContext::new(flags & 1 != 0)
        .with_add_path(if flags & 2 != 0 { FamilySet::ALL } else { FamilySet::EMPTY })
        .with_extended_message(flags & 4 != 0);
    while let Ok(Some(frame)) = Message::decode(rest, &ctx) {
        if let Ok(bytes) = frame.message.to_bytes(&ctx) {
            let again = Message::decode(&bytes, &ctx).expect("re-encoded message decodes").expect("whole message");
            assert_eq!(again.message, frame.message);
        }
        rest = &rest[frame.len..];
    }
});

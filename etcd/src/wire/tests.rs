//! Encodings of the hand-written messages checked against bytes derived by hand
//! from the protobuf wire format (a field's key is `number << 3 | wire type`:
//! 0 varint, 2 length-delimited; proto3 leaves out fields at their default,
//! except a set `oneof` field) with the field numbers of etcd's `rpc.proto` and
//! `kv.proto`; then decoded back.

use prost::Message;

use super::compare::CompareResult;
use super::*;

/// Encodes `m`, checks the bytes, decodes them back into `m`.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M, bytes: &[u8]) {
    assert_eq!(m.encode_to_vec(), bytes, "encoding of {m:?}");
    assert_eq!(&M::decode(bytes).expect("decode"), m);
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..ResponseHeader::default() })
}

#[test]
fn put_request() {
    let m = PutRequest { key: b"foo".to_vec(), value: b"bar".to_vec(), ..PutRequest::default() };
    // 1:LEN "foo", 2:LEN "bar"
    round_trip(&m, &[0x0a, 0x03, b'f', b'o', b'o', 0x12, 0x03, b'b', b'a', b'r']);
}

#[test]
fn range_request_of_a_prefix_at_a_revision() {
    let m = RangeRequest { key: b"/p/".to_vec(), range_end: b"/p0".to_vec(), revision: 5, ..RangeRequest::default() };
    // 1:LEN "/p/", 2:LEN "/p0", 4:VARINT 5
    round_trip(&m, &[0x0a, 0x03, b'/', b'p', b'/', 0x12, 0x03, b'/', b'p', b'0', 0x20, 0x05]);
}

#[test]
fn range_response() {
    let m = RangeResponse {
        header: Some(ResponseHeader { cluster_id: 1, revision: 5, ..ResponseHeader::default() }),
        kvs: vec![KeyValue {
            key: b"a".to_vec(),
            create_revision: 2,
            mod_revision: 5,
            version: 3,
            value: b"v".to_vec(),
            lease: 0,
        }],
        more: false,
        count: 1,
    };
    #[rustfmt::skip]
    let bytes = [
        0x0a, 0x04, 0x08, 0x01, 0x18, 0x05, // 1: header {1: cluster_id 1, 3: revision 5}
        0x12, 0x0c, // 2: kvs[0], 12 bytes
        0x0a, 0x01, b'a', // 1: key
        0x10, 0x02, // 2: create_revision
        0x18, 0x05, // 3: mod_revision
        0x20, 0x03, // 4: version
        0x2a, 0x01, b'v', // 5: value
        0x20, 0x01, // 4: count
    ];
    round_trip(&m, &bytes);
}

#[test]
fn unknown_fields_are_skipped() {
    // A header with field 9 (VARINT 1), which this client does not know.
    let bytes = [0x0a, 0x04, 0x18, 0x05, 0x48, 0x01, 0x20, 0x01];
    assert_eq!(
        RangeResponse::decode(&bytes[..]).unwrap(),
        RangeResponse { header: header(5), count: 1, ..Default::default() }
    );
}

#[test]
fn compares_encode_their_target_value_even_when_zero() {
    // 2:VARINT CREATE(1), 3:LEN "k", 5:VARINT 0 (the oneof is set, so it is sent);
    // 1: result EQUAL(0) is the default and left out.
    round_trip(&Compare::create_revision("k", CompareResult::Equal, 0), &[0x10, 0x01, 0x1a, 0x01, b'k', 0x28, 0x00]);
    // 2:VARINT MOD(2), 3:LEN "k", 6:VARINT 7
    round_trip(&Compare::mod_revision("k", CompareResult::Equal, 7), &[0x10, 0x02, 0x1a, 0x01, b'k', 0x30, 0x07]);
    // 1:VARINT NOT_EQUAL(3), 2: VALUE(3), 3:LEN "k", 7:LEN "v"
    let value = Compare::value("k", CompareResult::NotEqual, "v");
    round_trip(&value, &[0x08, 0x03, 0x10, 0x03, 0x1a, 0x01, b'k', 0x3a, 0x01, b'v']);
    // 64: range_end needs a two-byte key: (64 << 3 | 2) = 0x202 → 0x82 0x04.
    let range = Compare { range_end: b"l".to_vec(), ..Compare::version("k", CompareResult::Greater, 1) };
    round_trip(&range, &[0x08, 0x01, 0x1a, 0x01, b'k', 0x20, 0x01, 0x82, 0x04, 0x01, b'l']);
}

#[test]
fn request_ops() {
    // 2: request_put {1: "k", 2: "v"}
    round_trip(&RequestOp::put("k", "v"), &[0x12, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v']);
    // 3: request_delete_range {1: "k"}
    round_trip(&RequestOp::delete("k"), &[0x1a, 0x03, 0x0a, 0x01, b'k']);
    // 1: request_range {1: "k"}
    round_trip(&RequestOp::get("k"), &[0x0a, 0x03, 0x0a, 0x01, b'k']);
}

#[test]
fn txn_request() {
    let m = TxnRequest {
        compare: vec![Compare::create_revision("k", CompareResult::Equal, 0)],
        success: vec![RequestOp::put("k", "v")],
        failure: vec![RequestOp::get("k")],
    };
    #[rustfmt::skip]
    let bytes = [
        0x0a, 0x07, 0x10, 0x01, 0x1a, 0x01, b'k', 0x28, 0x00, // 1: compare[0]
        0x12, 0x08, 0x12, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v', // 2: success[0]
        0x1a, 0x05, 0x0a, 0x03, 0x0a, 0x01, b'k', // 3: failure[0]
    ];
    round_trip(&m, &bytes);
}

#[test]
fn txn_response() {
    let put = PutResponse { header: header(6), prev_kv: None };
    let m = TxnResponse {
        header: header(6),
        succeeded: true,
        responses: vec![ResponseOp { response: Some(response_op::Response::ResponsePut(put)) }],
    };
    #[rustfmt::skip]
    let bytes = [
        0x0a, 0x02, 0x18, 0x06, // 1: header {3: revision 6}
        0x10, 0x01, // 2: succeeded
        0x1a, 0x06, 0x12, 0x04, 0x0a, 0x02, 0x18, 0x06, // 3: responses[0] {2: response_put {1: header}}
    ];
    round_trip(&m, &bytes);
}

#[test]
fn watch_requests() {
    let create = WatchCreateRequest {
        key: b"/p/".to_vec(),
        range_end: b"/p0".to_vec(),
        start_revision: 7,
        ..WatchCreateRequest::default()
    };
    let m = WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) };
    #[rustfmt::skip]
    let bytes = [
        0x0a, 0x0c, // 1: create_request, 12 bytes
        0x0a, 0x03, b'/', b'p', b'/', // 1: key
        0x12, 0x03, b'/', b'p', b'0', // 2: range_end
        0x18, 0x07, // 3: start_revision
    ];
    round_trip(&m, &bytes);
    let cancel = |watch_id| WatchRequest {
        request_union: Some(watch_request::RequestUnion::CancelRequest(WatchCancelRequest { watch_id })),
    };
    // 2: cancel_request {1: watch_id 2}
    round_trip(&cancel(2), &[0x12, 0x02, 0x08, 0x02]);
    // A set oneof field of a message at its default is sent empty.
    round_trip(&cancel(0), &[0x12, 0x00]);
    let progress =
        WatchRequest { request_union: Some(watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})) };
    round_trip(&progress, &[0x1a, 0x00]);
}

#[test]
fn watch_response_with_events() {
    let m = WatchResponse {
        header: header(9),
        watch_id: 1,
        events: vec![
            Event {
                r#type: event::EventType::Put.into(),
                kv: Some(KeyValue { key: b"b".to_vec(), value: b"v".to_vec(), ..KeyValue::default() }),
                prev_kv: None,
            },
            Event {
                r#type: event::EventType::Delete.into(),
                kv: Some(KeyValue { key: b"a".to_vec(), mod_revision: 9, ..KeyValue::default() }),
                prev_kv: None,
            },
        ],
        ..WatchResponse::default()
    };
    #[rustfmt::skip]
    let bytes = [
        0x0a, 0x02, 0x18, 0x09, // 1: header {3: revision 9}
        0x10, 0x01, // 2: watch_id 1
        // 11: events[0] (key 11 << 3 | 2 = 0x5a): type PUT(0) left out, 2: kv {1: "b", 5: "v"}
        0x5a, 0x08, 0x12, 0x06, 0x0a, 0x01, b'b', 0x2a, 0x01, b'v',
        // 11: events[1]: 1: type DELETE(1), 2: kv {1: "a", 3: mod_revision 9}
        0x5a, 0x09, 0x08, 0x01, 0x12, 0x05, 0x0a, 0x01, b'a', 0x18, 0x09,
    ];
    round_trip(&m, &bytes);
}

#[test]
fn watch_response_cancelled_and_progress() {
    let m = WatchResponse {
        header: header(20),
        watch_id: 3,
        canceled: true,
        compact_revision: 12,
        cancel_reason: "x".into(),
        ..WatchResponse::default()
    };
    // 1: header, 2: watch_id 3, 4: canceled, 5: compact_revision 12, 6: cancel_reason "x"
    round_trip(&m, &[0x0a, 0x02, 0x18, 0x14, 0x10, 0x03, 0x20, 0x01, 0x28, 0x0c, 0x32, 0x01, b'x']);
    // A negative int64 is a ten-byte varint (two's complement).
    let m = WatchResponse { header: header(7), watch_id: -1, ..WatchResponse::default() };
    #[rustfmt::skip]
    let bytes = [0x0a, 0x02, 0x18, 0x07, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    round_trip(&m, &bytes);
}

mod prop {
    use proptest::prelude::*;
    use prost::Message;

    use super::super::*;

    fn key_value() -> impl Strategy<Value = KeyValue> {
        (any::<Vec<u8>>(), any::<i64>(), any::<i64>(), any::<i64>(), any::<Vec<u8>>(), any::<i64>()).prop_map(
            |(key, create_revision, mod_revision, version, value, lease)| KeyValue {
                key,
                create_revision,
                mod_revision,
                version,
                value,
                lease,
            },
        )
    }

    fn header() -> impl Strategy<Value = Option<ResponseHeader>> {
        proptest::option::of((any::<u64>(), any::<u64>(), any::<i64>(), any::<u64>()).prop_map(
            |(cluster_id, member_id, revision, raft_term)| ResponseHeader {
                cluster_id,
                member_id,
                revision,
                raft_term,
            },
        ))
    }

    fn event() -> impl Strategy<Value = Event> {
        (0..=1i32, proptest::option::of(key_value()), proptest::option::of(key_value()))
            .prop_map(|(r#type, kv, prev_kv)| Event { r#type, kv, prev_kv })
    }

    fn watch_response() -> impl Strategy<Value = WatchResponse> {
        (
            header(),
            any::<i64>(),
            any::<(bool, bool, bool)>(),
            any::<i64>(),
            ".{0,8}",
            proptest::collection::vec(event(), 0..4),
        )
            .prop_map(
                |(header, watch_id, (created, canceled, fragment), compact_revision, cancel_reason, events)| {
                    WatchResponse {
                        header,
                        watch_id,
                        created,
                        canceled,
                        compact_revision,
                        cancel_reason,
                        fragment,
                        events,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn watch_responses_round_trip(m in watch_response()) {
            let decoded = WatchResponse::decode(m.encode_to_vec().as_slice()).expect("decode");
            prop_assert_eq!(&decoded, &m);
            prop_assert_eq!(decoded.encode_to_vec(), m.encode_to_vec());
        }

        #[test]
        fn range_responses_round_trip(header in header(), kvs in proptest::collection::vec(key_value(), 0..4),
                                      more: bool, count: i64) {
            let m = RangeResponse { header, kvs, more, count };
            prop_assert_eq!(RangeResponse::decode(m.encode_to_vec().as_slice()).expect("decode"), m);
        }

        /// Whatever bytes come from the network, decoding returns (an error or a
        /// message) and does not panic.
        #[test]
        fn any_bytes_decode_without_panic(bytes in any::<Vec<u8>>()) {
            let _ = WatchResponse::decode(bytes.as_slice());
            let _ = RangeResponse::decode(bytes.as_slice());
            let _ = TxnResponse::decode(bytes.as_slice());
        }
    }
}

//! Round trips and rejections of every record kind.

use bytes::Bytes;

use super::*;
use crate::storage::{
    InflightStage, OwnedOrder, StoredDelivery, StoredMessage, StoredSession, StoredSubscription,
    StoredWill,
};

pub(crate) fn full_properties() -> Properties {
    Properties {
        payload_format_indicator: Some(1),
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/to".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
        ..Properties::default()
    }
}

pub(crate) fn message(topic: &str, payload: &[u8]) -> StoredMessage {
    StoredMessage {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
        expires_at_unix_ms: None,
        publisher: None,
    }
}

fn rich_message() -> StoredMessage {
    StoredMessage {
        topic: "a/b/ü".into(),
        payload: Bytes::from(vec![0u8, 255, 7, 0]),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: full_properties(),
        expires_at_unix_ms: Some(1_700_000_000_123),
        publisher: Some("pub-1".into()),
    }
}

fn session() -> StoredSession {
    StoredSession {
        client_id: "c1".into(),
        owner_username: Some("alice".into()),
        protocol_level: 5,
        expiry_secs: Some(3600),
        disconnected_at_unix_ms: Some(42),
        will: Some(StoredWill {
            topic: "will/t".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: full_properties(),
            expiry_interval_secs: Some(60),
            delay_secs: 5,
        }),
    }
}

#[test]
fn message_round_trips() {
    for m in [message("t", b""), rich_message()] {
        let bytes = encode_message(&m);
        assert_eq!(bytes[0], RECORD_V1);
        assert_eq!(decode_message(&bytes).unwrap(), m);
    }
}

#[test]
fn only_forwarded_properties_are_stored() {
    let mut m = rich_message();
    m.properties.topic_alias = Some(3);
    m.properties.subscription_identifiers = vec![9];
    m.properties.message_expiry_interval = Some(10);
    m.properties.reason_string = Some("x".into());
    let back = decode_message(&encode_message(&m)).unwrap();
    assert_eq!(back.properties, full_properties());
    assert_eq!(
        crate::storage::forwarded_properties(&m.properties),
        full_properties()
    );
}

#[test]
fn session_round_trips() {
    let s = session();
    let back = decode_session("c1".into(), &encode_session(&s)).unwrap();
    assert_eq!(back, s);
    let bare = StoredSession {
        client_id: "x".into(),
        owner_username: None,
        protocol_level: 4,
        expiry_secs: None,
        disconnected_at_unix_ms: None,
        will: None,
    };
    assert_eq!(
        decode_session("x".into(), &encode_session(&bare)).unwrap(),
        bare
    );
}

#[test]
fn subscription_round_trips() {
    for (opts, id) in [
        (SubscriptionOptions::new(QoS::AtMostOnce), None),
        (
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: 2,
                local_origin: false,
            },
            Some(268_435_455),
        ),
        (
            SubscriptionOptions {
                local_origin: true,
                ..SubscriptionOptions::new(QoS::AtLeastOnce)
            },
            None,
        ),
    ] {
        let s = StoredSubscription {
            filter: "a/+/#".into(),
            options: opts,
            id,
        };
        let back = decode_subscription("a/+/#".into(), &encode_subscription(&s)).unwrap();
        assert_eq!(back, s);
    }
}

#[test]
fn small_records_round_trip() {
    let q = QueueEntry {
        msg_id: u64::MAX - 1,
        qos: QoS::ExactlyOnce,
        retain: true,
        subscription_ids: vec![1, 2, 268_435_455],
        body: None,
    };
    assert_eq!(decode_queue_entry(&encode_queue_entry(&q)).unwrap(), q);
    let inline = QueueEntry {
        body: Some(rich_message()),
        ..q.clone()
    };
    assert_eq!(
        decode_queue_entry(&encode_queue_entry(&inline)).unwrap(),
        inline
    );
    assert_eq!(decode_refcount(&encode_refcount(7)).unwrap(), 7);
    for stage in [InflightStage::Publish, InflightStage::Released] {
        assert_eq!(
            decode_inflight(&encode_inflight(stage, 99)).unwrap(),
            InflightRecord::Queue(stage, 99)
        );
    }
    let owned = StoredDelivery {
        msg_id: 0,
        msg: std::sync::Arc::new(rich_message()),
        qos: QoS::AtLeastOnce,
        retain: true,
        subscription_ids: vec![3],
    };
    let order = OwnedOrder {
        before: 1 << 40,
        nth: u32::MAX,
    };
    assert_eq!(
        decode_inflight(&encode_owned_inflight(order, Some(&owned))).unwrap(),
        InflightRecord::Owned(order, Some(Box::new(owned.clone())))
    );
    assert_eq!(
        decode_inflight(&encode_owned_inflight(order, None)).unwrap(),
        InflightRecord::Owned(order, None)
    );
    assert_eq!(
        decode_inbound_qos2(&encode_inbound_qos2(None)).unwrap(),
        None
    );
    let m = rich_message();
    assert_eq!(
        decode_inbound_qos2(&encode_inbound_qos2(Some(&m))).unwrap(),
        Some(m)
    );
    assert_eq!(decode_format_version(&encode_format_version(3)).unwrap(), 3);
}

#[test]
fn keys_order_numerically_and_isolate_clients() {
    assert!(seq_key("c", 1) < seq_key("c", 256));
    assert!(seq_key("c", 255) < seq_key("c", 256));
    assert!(seq_key("c", u64::MAX - 1) < seq_key("c", u64::MAX));
    assert!(!seq_key("ab", 0).starts_with(&client_prefix("a")));
    assert!(!sub_key("ab", "x").starts_with(&client_prefix("a")));
    let key = pid_key("client", 513);
    let (c, rest) = split_client_key(&key).unwrap();
    assert_eq!(c, "client");
    assert_eq!(decode_u16_suffix(rest).unwrap(), 513);
    let key = seq_key("", 9);
    let (c, rest) = split_client_key(&key).unwrap();
    assert_eq!(c, "");
    assert_eq!(decode_u64_suffix(rest).unwrap(), 9);
}

/// Every truncation and every single-byte corruption of every record kind decodes to an error
/// or to some value, never a panic.
#[test]
fn corrupt_records_are_errors_not_panics() {
    let records: Vec<(&str, Vec<u8>)> = vec![
        ("message", encode_message(&rich_message())),
        ("session", encode_session(&session())),
        (
            "subscription",
            encode_subscription(&StoredSubscription {
                filter: "f".into(),
                options: SubscriptionOptions::new(QoS::AtLeastOnce),
                id: Some(5),
            }),
        ),
        (
            "queue",
            encode_queue_entry(&QueueEntry {
                msg_id: 1,
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: vec![4, 5],
                body: None,
            }),
        ),
        (
            "queue inline",
            encode_queue_entry(&QueueEntry {
                msg_id: 1,
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: vec![4, 5],
                body: Some(rich_message()),
            }),
        ),
        ("refcount", encode_refcount(3)),
        ("inflight", encode_inflight(InflightStage::Released, 4)),
        (
            "inflight",
            encode_owned_inflight(
                OwnedOrder { before: 4, nth: 1 },
                Some(&StoredDelivery {
                    msg_id: 0,
                    msg: std::sync::Arc::new(rich_message()),
                    qos: QoS::ExactlyOnce,
                    retain: true,
                    subscription_ids: vec![],
                }),
            ),
        ),
        (
            "inflight",
            encode_owned_inflight(OwnedOrder { before: 4, nth: 1 }, None),
        ),
        ("qos2", encode_inbound_qos2(Some(&rich_message()))),
    ];
    let decode = |kind: &str, b: &[u8]| -> Result<(), DecodeError> {
        match kind {
            "message" => decode_message(b).map(drop),
            "session" => decode_session("c".into(), b).map(drop),
            "subscription" => decode_subscription("f".into(), b).map(drop),
            "queue" | "queue inline" => decode_queue_entry(b).map(drop),
            "refcount" => decode_refcount(b).map(drop),
            "inflight" => decode_inflight(b).map(drop),
            _ => decode_inbound_qos2(b).map(drop),
        }
    };
    for (kind, bytes) in &records {
        decode(kind, bytes).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                decode(kind, &bytes[..cut]).is_err(),
                "{kind} truncated to {cut} bytes decoded"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let err = decode(kind, &longer).unwrap_err();
        assert!(err.0.contains("trailing"), "{kind}: {err}");
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = decode(kind, &b);
            }
        }
    }
    let err = decode_message(&[9, 0]).unwrap_err();
    assert!(err.0.contains("unknown record version 9"), "{err}");
    assert!(decode_message(&[]).is_err());
}

#[test]
fn invalid_values_are_rejected() {
    // QoS 3 in a message.
    let mut b = encode_message(&message("t", b"x"));
    b[1] |= 0b11;
    assert!(decode_message(&b).unwrap_err().0.contains("QoS"));
    // Protocol level 9.
    let mut b = encode_session(&session());
    b[1] = 9;
    assert!(decode_session("c".into(), &b).is_err());
    // Retain handling 3.
    let b = [RECORD_V1, 0b11_0000, 0];
    assert!(decode_subscription("f".into(), &b).is_err());
    // A string that is not UTF-8.
    let mut e = Enc::record();
    e.u8(1);
    e.u16(2);
    e.0.extend_from_slice(&[0xC3, 0x28]);
    assert!(decode_message(&e.0).unwrap_err().0.contains("UTF-8"));
}

#[test]
fn key_display_escapes_and_shortens() {
    assert_eq!(key_display(b"ab\x00\xff"), "ab\\x00\\xff");
    let long = vec![b'x'; 200];
    assert!(key_display(&long).ends_with("(200 bytes)"));
}

//! Round trips of every packet type in every version it exists in, plus byte-exact checks of the
//! short forms and of known-good encodings.

use bytes::{Bytes, BytesMut};

use super::super::*;
use super::{connect, publish, roundtrip, ALL_VERSIONS};
use ProtocolVersion::{V31, V311, V5};

fn users() -> Vec<(String, String)> {
    // Order and repeated keys must survive.
    vec![
        ("z".into(), "1".into()),
        ("a".into(), "2".into()),
        ("z".into(), "3".into()),
    ]
}

pub(super) fn connect_props() -> Properties {
    Properties {
        session_expiry_interval: Some(3600),
        authentication_method: Some("SCRAM-SHA-1".into()),
        authentication_data: Some(Bytes::from_static(b"\x00\x01")),
        request_problem_information: Some(0),
        request_response_information: Some(1),
        receive_maximum: Some(20),
        topic_alias_maximum: Some(10),
        user_properties: users(),
        maximum_packet_size: Some(65_536),
        ..Properties::default()
    }
}

pub(super) fn will_props() -> Properties {
    Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(30),
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"corr")),
        will_delay_interval: Some(5),
        user_properties: users(),
        ..Properties::default()
    }
}

pub(super) fn connack_props() -> Properties {
    Properties {
        session_expiry_interval: Some(0),
        assigned_client_identifier: Some("auto-123".into()),
        server_keep_alive: Some(30),
        authentication_method: Some("SCRAM-SHA-1".into()),
        authentication_data: Some(Bytes::from_static(b"srv")),
        response_information: Some("resp/".into()),
        server_reference: Some("other:1883".into()),
        reason_string: Some("welcome".into()),
        receive_maximum: Some(100),
        topic_alias_maximum: Some(16),
        maximum_qos: Some(1),
        retain_available: Some(0),
        user_properties: users(),
        maximum_packet_size: Some(1 << 20),
        wildcard_subscription_available: Some(1),
        subscription_identifier_available: Some(1),
        shared_subscription_available: Some(0),
        ..Properties::default()
    }
}

pub(super) fn publish_props() -> Properties {
    Properties {
        payload_format_indicator: Some(0),
        message_expiry_interval: Some(120),
        content_type: Some("application/json".into()),
        response_topic: Some("r/t".into()),
        correlation_data: Some(Bytes::from_static(b"\xff\x00")),
        subscription_identifiers: vec![1, 268_435_455, 300],
        topic_alias: Some(3),
        user_properties: users(),
        ..Properties::default()
    }
}

pub(super) fn reason_props() -> Properties {
    Properties {
        reason_string: Some("because".into()),
        user_properties: users(),
        ..Properties::default()
    }
}

pub(super) fn disconnect_props() -> Properties {
    Properties {
        session_expiry_interval: Some(10),
        server_reference: Some("b:1883".into()),
        ..reason_props()
    }
}

pub(super) fn auth_props() -> Properties {
    Properties {
        authentication_method: Some("SCRAM-SHA-1".into()),
        authentication_data: Some(Bytes::from_static(b"challenge")),
        ..reason_props()
    }
}

fn v5_or_empty(v: ProtocolVersion, p: Properties) -> Properties {
    if v.is_v5() {
        p
    } else {
        Properties::default()
    }
}

/// One packet of every type valid in `v`, with every field and (5.0) property set.
pub(super) fn all_packets(v: ProtocolVersion) -> Vec<Packet> {
    let v5 = v.is_v5();
    let mut c = connect(v);
    c.clean_start = false;
    c.keep_alive = 0xBEEF;
    c.properties = v5_or_empty(v, connect_props());
    c.will = Some(Will {
        topic: "clients/1/status".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: v5_or_empty(v, will_props()),
    });
    c.username = Some("user \u{feff} name".into());
    c.password = Some(Bytes::from_static(b"\x00secret\xff"));
    let mut p = publish(QoS::AtLeastOnce, "a/b/c", b"payload");
    p.properties = v5_or_empty(v, publish_props()).into();
    let resp = |id| PubResp {
        packet_id: id,
        reason: if v5 {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        } else {
            ReasonCode::SUCCESS
        },
        properties: v5_or_empty(v, reason_props()).into(),
    };
    let mut opts = SubscriptionOptions::new(QoS::ExactlyOnce);
    if v5 {
        opts.no_local = true;
        opts.retain_as_published = true;
        opts.retain_handling = 2;
    }
    let mut packets = vec![
        Packet::Connect(Box::new(c)),
        Packet::ConnAck(ConnAck {
            session_present: v != V31,
            code: if v5 {
                ReasonCode::NOT_AUTHORIZED
            } else {
                ReasonCode::V3_NOT_AUTHORIZED
            },
            properties: v5_or_empty(v, connack_props()).into(),
        }),
        Packet::Publish(p),
        Packet::PubAck(resp(1)),
        Packet::PubRec(PubResp {
            reason: if v5 {
                ReasonCode::QUOTA_EXCEEDED
            } else {
                ReasonCode::SUCCESS
            },
            ..resp(2)
        }),
        Packet::PubRel(PubResp {
            reason: if v5 {
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
            } else {
                ReasonCode::SUCCESS
            },
            ..resp(3)
        }),
        Packet::PubComp(PubResp {
            reason: ReasonCode::SUCCESS,
            ..resp(0xFFFF)
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 10,
            filters: vec![
                ("sport/+/score".into(), opts),
                ("#".into(), SubscriptionOptions::new(QoS::AtMostOnce)),
                (
                    "$share/g/x/#".into(),
                    SubscriptionOptions::new(QoS::AtLeastOnce),
                ),
            ],
            properties: v5_or_empty(
                v,
                Properties {
                    subscription_identifiers: vec![42],
                    user_properties: users(),
                    ..Properties::default()
                },
            )
            .into(),
        }),
        Packet::SubAck(SubAck {
            packet_id: 10,
            reasons: if v5 {
                vec![
                    ReasonCode::GRANTED_QOS_2,
                    ReasonCode::GRANTED_QOS_0,
                    ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
                ]
            } else {
                vec![ReasonCode(2), ReasonCode(0), ReasonCode::V3_SUBACK_FAILURE]
            },
            properties: v5_or_empty(v, reason_props()).into(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 11,
            filters: vec!["a/+".into(), "b/#".into()],
            properties: v5_or_empty(
                v,
                Properties {
                    user_properties: users(),
                    ..Properties::default()
                },
            )
            .into(),
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 11,
            reasons: if v5 {
                vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
            } else {
                Vec::new()
            },
            properties: v5_or_empty(v, reason_props()).into(),
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect {
            reason: if v5 {
                ReasonCode::DISCONNECT_WITH_WILL
            } else {
                ReasonCode::NORMAL_DISCONNECTION
            },
            properties: v5_or_empty(v, disconnect_props()).into(),
        }),
    ];
    if v5 {
        packets.push(Packet::Auth(Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: auth_props().into(),
        }));
        packets.push(Packet::Auth(Auth {
            reason: ReasonCode::SUCCESS,
            properties: Default::default(),
        }));
    }
    packets
}

#[test]
fn every_packet_type_round_trips_in_every_version() {
    for v in ALL_VERSIONS {
        for p in all_packets(v) {
            roundtrip(&p, v);
        }
    }
}

#[test]
fn minimal_connect_round_trips() {
    for v in ALL_VERSIONS {
        let mut c = connect(v);
        // Decodable even though 3.1 wants 1..=23 characters: the broker decides.
        c.client_id = String::new();
        roundtrip(&Packet::Connect(Box::new(c.clone())), v);
        c.client_id = "a-client-identifier-longer-than-23-characters".into();
        // CONNECT is parsed by its own protocol level whatever the connection version says.
        let bytes = roundtrip(&Packet::Connect(Box::new(c.clone())), v);
        let got = decode(&mut bytes.clone(), V311, u32::MAX).unwrap();
        assert_eq!(got, Some(Packet::Connect(Box::new(c))));
    }
}

/// A Mosquitto bridge's CONNECT (`try_private`): levels 0x83 and 0x84 are 3.1 and 3.1.1 with
/// the bridge mark, and encode back to the same level byte.
#[test]
fn bridge_connect_round_trips_with_the_level_top_bit() {
    for (v, level) in [(V31, 0x83u8), (V311, 0x84)] {
        let mut c = connect(v);
        c.bridge = true;
        let bytes = roundtrip(&Packet::Connect(Box::new(c)), v);
        let name_len = if v == V31 { 6 } else { 4 };
        assert_eq!(bytes[2 + 2 + name_len], level, "{v}");
    }
}

#[test]
fn v5_password_without_user_name_round_trips() {
    let mut c = connect(V5);
    c.password = Some(Bytes::from_static(b"token"));
    roundtrip(&Packet::Connect(Box::new(c)), V5);
}

#[test]
fn publish_all_qos_dup_retain_combinations() {
    for v in ALL_VERSIONS {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for dup in [false, true] {
                for retain in [false, true] {
                    if dup && qos == QoS::AtMostOnce {
                        continue; // [MQTT-3.3.1-2]
                    }
                    let mut p = publish(qos, "x/y", b"");
                    p.dup = dup;
                    p.retain = retain;
                    let bytes = roundtrip(&Packet::Publish(p.clone()), v);
                    let mut fast = BytesMut::new();
                    encode_publish(&p, v, &mut fast);
                    assert_eq!(fast, bytes);
                }
            }
        }
    }
}

#[test]
fn publish_payload_is_zero_copy_slice_of_input() {
    let p = Packet::Publish(publish(QoS::AtLeastOnce, "t", b"0123456789abcdef"));
    let mut buf = BytesMut::new();
    encode(&p, V311, &mut buf);
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let Some(Packet::Publish(got)) = decode(&mut buf, V311, u32::MAX).unwrap() else {
        panic!("not a publish");
    };
    let at = got.payload.as_ptr() as usize;
    assert!(
        at >= start && at + got.payload.len() <= end,
        "payload was copied"
    );
}

#[test]
fn v5_publish_with_alias_and_empty_topic() {
    let mut p = publish(QoS::AtMostOnce, "", b"x");
    p.properties.topic_alias = Some(7);
    roundtrip(&Packet::Publish(p), V5);
}

#[test]
fn v5_short_forms() {
    // PUBACK Success without properties: just the packet identifier.
    let bytes = roundtrip(&Packet::PubAck(PubResp::new(0x0102)), V5);
    assert_eq!(&bytes[..], &[0x40, 0x02, 0x01, 0x02]);
    // Reason code without properties: no property length.
    let mut r = PubResp::new(1);
    r.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
    let bytes = roundtrip(&Packet::PubRel(r), V5);
    assert_eq!(&bytes[..], &[0x62, 0x03, 0x00, 0x01, 0x92]);
    // DISCONNECT Normal / AUTH Success without properties: remaining length 0.
    let d = Packet::Disconnect(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION));
    assert_eq!(&roundtrip(&d, V5)[..], &[0xE0, 0x00]);
    let a = Packet::Auth(Auth {
        reason: ReasonCode::SUCCESS,
        properties: Default::default(),
    });
    assert_eq!(&roundtrip(&a, V5)[..], &[0xF0, 0x00]);
    let d = Packet::Disconnect(Disconnect::new(ReasonCode::SERVER_SHUTTING_DOWN));
    assert_eq!(&roundtrip(&d, V5)[..], &[0xE0, 0x01, 0x8B]);
    // A peer may still send the long forms.
    let long = [0x40, 0x04, 0x00, 0x05, 0x00, 0x00];
    let got = decode(&mut BytesMut::from(&long[..]), V5, u32::MAX).unwrap();
    assert_eq!(got, Some(Packet::PubAck(PubResp::new(5))));
}

#[test]
fn v3_drops_v5_only_fields() {
    let mut r = PubResp::new(4);
    r.reason = ReasonCode::QUOTA_EXCEEDED;
    r.properties.reason_string = Some("no".into());
    let mut buf = BytesMut::new();
    encode(&Packet::PubAck(r), V311, &mut buf);
    assert_eq!(&buf[..], &[0x40, 0x02, 0x00, 0x04]);

    let mut buf = BytesMut::new();
    let d = Disconnect::new(ReasonCode::SERVER_BUSY);
    encode(&Packet::Disconnect(d), V311, &mut buf);
    assert_eq!(&buf[..], &[0xE0, 0x00]);

    let mut buf = BytesMut::new();
    let u = UnsubAck {
        packet_id: 2,
        reasons: vec![ReasonCode::SUCCESS],
        properties: Default::default(),
    };
    encode(&Packet::UnsubAck(u), V31, &mut buf);
    assert_eq!(&buf[..], &[0xB0, 0x02, 0x00, 0x02]);

    // AUTH does not exist before 5.0: nothing is written.
    let a = Packet::Auth(Auth {
        reason: ReasonCode::SUCCESS,
        properties: Default::default(),
    });
    let mut buf = BytesMut::new();
    encode(&a, V311, &mut buf);
    assert!(buf.is_empty());
    assert_eq!(encoded_len(&a, V311), 0);
}

#[test]
fn known_encodings() {
    // 3.1.1 CONNECT as sent by mosquitto_sub -i c -k 60.
    let wire = [
        0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, b'c',
    ];
    let mut c = connect(V311);
    c.client_id = "c".into();
    let p = Packet::Connect(Box::new(c));
    assert_eq!(&roundtrip(&p, V311)[..], &wire[..]);
    // 3.1 CONNECT uses MQIsdp / 3.
    let mut c = connect(V31);
    c.client_id = "c".into();
    let bytes = roundtrip(&Packet::Connect(Box::new(c)), V31);
    assert_eq!(&bytes[2..11], b"\x00\x06MQIsdp\x03");
    // 3.1.1 CONNACK with Session Present.
    let ack = Packet::ConnAck(ConnAck {
        session_present: true,
        code: ReasonCode::V3_ACCEPTED,
        properties: Default::default(),
    });
    assert_eq!(&roundtrip(&ack, V311)[..], &[0x20, 0x02, 0x01, 0x00]);
    // 5.0 CONNACK always carries a property length.
    let ack = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::SUCCESS,
        properties: Default::default(),
    });
    assert_eq!(&roundtrip(&ack, V5)[..], &[0x20, 0x03, 0x00, 0x00, 0x00]);
    // SUBSCRIBE carries flags 0b0010.
    let sub = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![("a".into(), SubscriptionOptions::new(QoS::AtLeastOnce))],
        properties: Default::default(),
    });
    assert_eq!(
        &roundtrip(&sub, V311)[..],
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x01]
    );
}

#[test]
fn v31_tolerates_dup_on_pubrel() {
    // 3.1 clients set DUP on retried PUBREL; 3.1.1 forbids any flag but 0b0010.
    let wire = [0x6A, 0x02, 0x00, 0x01];
    let got = decode(&mut BytesMut::from(&wire[..]), V31, u32::MAX).unwrap();
    assert_eq!(got, Some(Packet::PubRel(PubResp::new(1))));
    assert!(decode(&mut BytesMut::from(&wire[..]), V311, u32::MAX).is_err());
}

#[test]
fn large_publish_uses_multi_byte_remaining_length() {
    static PAYLOAD: [u8; 200_000] = [0xAB; 200_000];
    let p = publish(QoS::AtLeastOnce, "big", &PAYLOAD);
    let bytes = roundtrip(&Packet::Publish(p), V5);
    assert_eq!(bytes.len(), 1 + 3 + 5 + 2 + 1 + 200_000);
}

#[test]
fn reason_code_names() {
    assert_eq!(ReasonCode::PACKET_TOO_LARGE.name(), "Packet too large");
    assert_eq!(ReasonCode(0x81).name(), "Malformed Packet");
    assert_eq!(ReasonCode(0x7F).name(), "Unknown reason code");
}

#[test]
fn v5_invalid_filters_reach_the_broker_for_0x8f_but_v311_are_malformed() {
    // SUBSCRIBE id 1, no properties (v5), filter "a/#/b", options QoS 0.
    let v5 = [
        0x82, 0x0B, 0x00, 0x01, 0x00, 0x00, 0x05, b'a', b'/', b'#', b'/', b'b', 0x00,
    ];
    match decode(&mut BytesMut::from(&v5[..]), V5, u32::MAX).unwrap() {
        Some(Packet::Subscribe(s)) => assert_eq!(s.filters[0].0, "a/#/b"),
        other => panic!("expected SUBSCRIBE, got {other:?}"),
    }
    let v311 = [
        0x82, 0x0A, 0x00, 0x01, 0x00, 0x05, b'a', b'/', b'#', b'/', b'b', 0x00,
    ];
    assert!(decode(&mut BytesMut::from(&v311[..]), V311, u32::MAX).is_err());
}

#[test]
fn encode_publish_parts_matches_encode() {
    let p = publish(QoS::ExactlyOnce, "a/b", b"payload");
    for v in [V31, V311, V5] {
        let mut whole = BytesMut::new();
        encode(&Packet::Publish(p.clone()), v, &mut whole);
        let mut parts = BytesMut::new();
        let h = PublishHeader {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            packet_id: p.packet_id,
        };
        encode_publish_parts(h, &p.topic, &p.properties, &p.payload, v, &mut parts);
        assert_eq!(whole, parts, "{v:?}");
    }
}

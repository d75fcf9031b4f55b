//! MQTT 5.0 properties: every property decodes from hand-written bytes and round trips, a second
//! copy of a once-only property is rejected, a property outside its packet is rejected, and bad
//! property lengths are errors.

use bytes::{Bytes, BytesMut};

use super::super::*;
use super::{cat, connect, pkt, publish, roundtrip, s};
use DecodeError as E;
use ProtocolVersion::V5;

#[derive(Clone, Copy, Debug)]
enum Ctx {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubAck,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Auth,
}

/// A 5.0 packet of kind `ctx` whose (only) property block is `props`.
fn raw_packet(ctx: Ctx, props: &[u8]) -> Vec<u8> {
    assert!(props.len() < 128, "single-byte property length only");
    let p: &[u8] = &[props.len() as u8];
    let p = &cat(&[p, props]);
    match ctx {
        Ctx::Connect => pkt(0x10, &cat(&[&s("MQTT"), &[5, 0x02, 0, 60], p, &s("c")])),
        Ctx::Will => pkt(
            0x10,
            &cat(&[
                &s("MQTT"),
                &[5, 0x06, 0, 60, 0],
                &s("c"),
                p,
                &s("w"),
                &s("x"),
            ]),
        ),
        Ctx::ConnAck => pkt(0x20, &cat(&[&[0, 0], p])),
        Ctx::Publish => pkt(0x30, &cat(&[&s("t"), p, b"x"])),
        Ctx::PubAck => pkt(0x40, &cat(&[&[0, 1, 0x10], p])),
        Ctx::Subscribe => pkt(0x82, &cat(&[&[0, 1], p, &s("a"), &[0]])),
        Ctx::Unsubscribe => pkt(0xA2, &cat(&[&[0, 1], p, &s("a")])),
        Ctx::Disconnect => pkt(0xE0, &cat(&[&[0x04], p])),
        Ctx::Auth => pkt(0xF0, &cat(&[&[0x18], p])),
    }
}

/// The packet `raw_packet(ctx, ..)` decodes to when its properties are `props`.
fn wrap(ctx: Ctx, props: Properties) -> Packet {
    match ctx {
        Ctx::Connect => {
            let mut c = connect(V5);
            c.client_id = "c".into();
            c.properties = props;
            Packet::Connect(Box::new(c))
        }
        Ctx::Will => {
            let mut c = connect(V5);
            c.client_id = "c".into();
            c.will = Some(Will {
                topic: "w".into(),
                payload: Bytes::from_static(b"x"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: props,
            });
            Packet::Connect(Box::new(c))
        }
        Ctx::ConnAck => Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::SUCCESS,
            properties: props.into(),
        }),
        Ctx::Publish => {
            let mut p = publish(QoS::AtMostOnce, "t", b"x");
            p.properties = props.into();
            Packet::Publish(p)
        }
        Ctx::PubAck => Packet::PubAck(PubResp {
            packet_id: 1,
            reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            properties: props.into(),
        }),
        Ctx::Subscribe => Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![("a".into(), SubscriptionOptions::new(QoS::AtMostOnce))],
            properties: props.into(),
        }),
        Ctx::Unsubscribe => Packet::Unsubscribe(Unsubscribe {
            packet_id: 1,
            filters: vec!["a".into()],
            properties: props.into(),
        }),
        Ctx::Disconnect => Packet::Disconnect(Disconnect {
            reason: ReasonCode::DISCONNECT_WITH_WILL,
            properties: props.into(),
        }),
        Ctx::Auth => Packet::Auth(Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: props.into(),
        }),
    }
}

struct Case {
    id: u8,
    value: Vec<u8>,
    ctx: Ctx,
    /// Properties that must precede it (Authentication Data needs a Method).
    prefix: Vec<u8>,
    expect: Properties,
}

fn case(id: u8, value: Vec<u8>, ctx: Ctx, expect: Properties) -> Case {
    Case {
        id,
        value,
        ctx,
        prefix: Vec::new(),
        expect,
    }
}

/// Every property of the spec, once, in a packet that allows it.
fn cases() -> Vec<Case> {
    let d = Properties::default;
    let string = |v: &str| Some(v.to_owned());
    vec![
        case(
            0x01,
            vec![1],
            Ctx::Publish,
            Properties {
                payload_format_indicator: Some(1),
                ..d()
            },
        ),
        case(
            0x02,
            vec![0, 0, 1, 0],
            Ctx::Publish,
            Properties {
                message_expiry_interval: Some(256),
                ..d()
            },
        ),
        case(
            0x03,
            s("json"),
            Ctx::Publish,
            Properties {
                content_type: string("json"),
                ..d()
            },
        ),
        case(
            0x08,
            s("r/t"),
            Ctx::Will,
            Properties {
                response_topic: string("r/t"),
                ..d()
            },
        ),
        case(
            0x09,
            s([1, 2]),
            Ctx::Will,
            Properties {
                correlation_data: Some(Bytes::from_static(&[1, 2])),
                ..d()
            },
        ),
        case(
            0x0B,
            vec![0x80, 0x01],
            Ctx::Subscribe,
            Properties {
                subscription_identifiers: vec![128],
                ..d()
            },
        ),
        case(
            0x11,
            vec![0, 0, 0, 5],
            Ctx::Connect,
            Properties {
                session_expiry_interval: Some(5),
                ..d()
            },
        ),
        case(
            0x12,
            s("id"),
            Ctx::ConnAck,
            Properties {
                assigned_client_identifier: string("id"),
                ..d()
            },
        ),
        case(
            0x13,
            vec![0, 30],
            Ctx::ConnAck,
            Properties {
                server_keep_alive: Some(30),
                ..d()
            },
        ),
        case(
            0x15,
            s("m"),
            Ctx::Auth,
            Properties {
                authentication_method: string("m"),
                ..d()
            },
        ),
        Case {
            prefix: cat(&[&[0x15], &s("m")]),
            ..case(
                0x16,
                s("d"),
                Ctx::Auth,
                Properties {
                    authentication_method: string("m"),
                    authentication_data: Some(Bytes::from_static(b"d")),
                    ..d()
                },
            )
        },
        case(
            0x17,
            vec![1],
            Ctx::Connect,
            Properties {
                request_problem_information: Some(1),
                ..d()
            },
        ),
        case(
            0x18,
            vec![0, 0, 0, 9],
            Ctx::Will,
            Properties {
                will_delay_interval: Some(9),
                ..d()
            },
        ),
        case(
            0x19,
            vec![1],
            Ctx::Connect,
            Properties {
                request_response_information: Some(1),
                ..d()
            },
        ),
        case(
            0x1A,
            s("ri"),
            Ctx::ConnAck,
            Properties {
                response_information: string("ri"),
                ..d()
            },
        ),
        case(
            0x1C,
            s("srv"),
            Ctx::Disconnect,
            Properties {
                server_reference: string("srv"),
                ..d()
            },
        ),
        case(
            0x1F,
            s("why"),
            Ctx::PubAck,
            Properties {
                reason_string: string("why"),
                ..d()
            },
        ),
        case(
            0x21,
            vec![0, 10],
            Ctx::ConnAck,
            Properties {
                receive_maximum: Some(10),
                ..d()
            },
        ),
        case(
            0x22,
            vec![0, 5],
            Ctx::Connect,
            Properties {
                topic_alias_maximum: Some(5),
                ..d()
            },
        ),
        case(
            0x23,
            vec![0, 2],
            Ctx::Publish,
            Properties {
                topic_alias: Some(2),
                ..d()
            },
        ),
        case(
            0x24,
            vec![0],
            Ctx::ConnAck,
            Properties {
                maximum_qos: Some(0),
                ..d()
            },
        ),
        case(
            0x25,
            vec![1],
            Ctx::ConnAck,
            Properties {
                retain_available: Some(1),
                ..d()
            },
        ),
        case(
            0x26,
            cat(&[&s("k"), &s("v")]),
            Ctx::Unsubscribe,
            Properties {
                user_properties: vec![("k".into(), "v".into())],
                ..d()
            },
        ),
        case(
            0x27,
            vec![0, 0, 1, 0],
            Ctx::Connect,
            Properties {
                maximum_packet_size: Some(256),
                ..d()
            },
        ),
        case(
            0x28,
            vec![0],
            Ctx::ConnAck,
            Properties {
                wildcard_subscription_available: Some(0),
                ..d()
            },
        ),
        case(
            0x29,
            vec![1],
            Ctx::ConnAck,
            Properties {
                subscription_identifier_available: Some(1),
                ..d()
            },
        ),
        case(
            0x2A,
            vec![1],
            Ctx::ConnAck,
            Properties {
                shared_subscription_available: Some(1),
                ..d()
            },
        ),
    ]
}

fn decode5(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    decode(&mut BytesMut::from(bytes), V5, u32::MAX)
}

#[test]
fn every_property_decodes_and_round_trips() {
    let cases = cases();
    assert_eq!(cases.len(), 27, "the spec defines 27 properties");
    for c in &cases {
        let block = cat(&[&c.prefix, &[c.id], &c.value]);
        let want = wrap(c.ctx, c.expect.clone());
        let bytes = raw_packet(c.ctx, &block);
        assert_eq!(decode5(&bytes).unwrap(), Some(want.clone()), "{:#x}", c.id);
        assert_eq!(&roundtrip(&want, V5)[..], &bytes[..], "{:#x}", c.id);
    }
}

#[test]
fn once_only_properties_may_not_repeat() {
    for c in &cases() {
        let one = cat(&[&[c.id], &c.value]);
        let bytes = raw_packet(c.ctx, &cat(&[&c.prefix, &one, &one]));
        let result = decode5(&bytes);
        if c.id == 0x26 {
            let Ok(Some(Packet::Unsubscribe(u))) = result else {
                panic!("user property twice: {result:?}");
            };
            assert_eq!(u.properties.user_properties.len(), 2);
        } else {
            assert!(
                matches!(result, Err(E::DuplicateProperty { id, .. }) if id == c.id),
                "{:#x}: {result:?}",
                c.id
            );
            assert_eq!(
                result.unwrap_err().reason_code(),
                ReasonCode::PROTOCOL_ERROR
            );
        }
    }
}

#[test]
fn subscription_identifier_may_repeat_on_publish() {
    let bytes = raw_packet(Ctx::Publish, &[0x0B, 0x01, 0x0B, 0x02]);
    let Ok(Some(Packet::Publish(p))) = decode5(&bytes) else {
        panic!("not decoded");
    };
    assert_eq!(p.properties.subscription_identifiers, vec![1, 2]);
}

#[test]
fn properties_outside_their_packet_are_rejected() {
    // PUBACK allows only Reason String and User Property.
    for c in cases().iter().filter(|c| c.id != 0x1F && c.id != 0x26) {
        let bytes = raw_packet(Ctx::PubAck, &cat(&[&[c.id], &c.value]));
        let result = decode5(&bytes);
        assert!(
            matches!(result, Err(E::PropertyNotAllowed { id, packet_type: "PUBACK", .. }) if id == c.id),
            "{:#x}: {result:?}",
            c.id
        );
    }
    // Will properties and CONNECT properties are separate contexts.
    let in_will = raw_packet(Ctx::Will, &[0x11, 0, 0, 0, 1]);
    assert!(matches!(
        decode5(&in_will),
        Err(E::PropertyNotAllowed {
            id: 0x11,
            packet_type: "Will properties",
            ..
        })
    ));
    let in_connect = raw_packet(Ctx::Connect, &[0x01, 1]);
    assert!(matches!(
        decode5(&in_connect),
        Err(E::PropertyNotAllowed {
            id: 0x01,
            packet_type: "CONNECT",
            ..
        })
    ));
    assert_eq!(
        decode5(&in_connect).unwrap_err().reason_code(),
        ReasonCode::MALFORMED_PACKET
    );
}

#[test]
fn invalid_property_values_are_protocol_errors() {
    let cases: [(Ctx, &[u8]); 9] = [
        (Ctx::Publish, &[0x01, 2]),
        (Ctx::Connect, &[0x17, 2]),
        (Ctx::Connect, &[0x19, 7]),
        (Ctx::Connect, &[0x21, 0, 0]),
        (Ctx::Connect, &[0x27, 0, 0, 0, 0]),
        (Ctx::ConnAck, &[0x24, 2]),
        (Ctx::ConnAck, &[0x25, 2]),
        (Ctx::ConnAck, &[0x2A, 0xFF]),
        (Ctx::Subscribe, &[0x0B, 0]),
    ];
    for (ctx, block) in cases {
        let result = decode5(&raw_packet(ctx, block));
        assert!(
            matches!(result, Err(E::InvalidPropertyValue { .. })),
            "{block:?}: {result:?}"
        );
        assert_eq!(
            result.unwrap_err().reason_code(),
            ReasonCode::PROTOCOL_ERROR
        );
    }
}

#[test]
fn bad_property_lengths_are_errors() {
    // Property length larger than what is left of the packet.
    let mut bytes = raw_packet(Ctx::ConnAck, &[0x24, 1]);
    bytes[4] = 3;
    assert!(matches!(
        decode5(&bytes),
        Err(E::PropertyLengthExceedsPacket {
            len: 3,
            available: 2
        })
    ));
    // Property length shorter than the property: the value is cut off inside the block...
    let mut bytes = raw_packet(Ctx::ConnAck, &[0x13, 0, 30]);
    bytes[4] = 2;
    assert!(matches!(
        decode5(&bytes),
        Err(E::UnexpectedEnd {
            field: "Server Keep Alive",
            ..
        })
    ));
    // ...or, if the block ends on a property boundary, what follows is trailing garbage.
    let mut bytes = raw_packet(Ctx::ConnAck, &[0x24, 1, 0x25, 1]);
    bytes[4] = 2;
    assert!(matches!(decode5(&bytes), Err(E::TrailingBytes { .. })));
    // A string property whose own length overruns the block.
    let bytes = raw_packet(Ctx::PubAck, &[0x1F, 0, 9, b'a']);
    assert!(matches!(
        decode5(&bytes),
        Err(E::UnexpectedEnd {
            field: "Reason String",
            ..
        })
    ));
    // Property length missing altogether (5.0 CONNACK must carry one).
    assert!(matches!(
        decode5(&[0x20, 0x02, 0x00, 0x00]),
        Err(E::UnexpectedEnd {
            field: "property length",
            ..
        })
    ));
    // Property identifier cut off as a variable byte integer.
    let bytes = raw_packet(Ctx::ConnAck, &[0x80]);
    assert!(matches!(
        decode5(&bytes),
        Err(E::UnexpectedEnd {
            field: "property identifier",
            ..
        })
    ));
}

#[test]
fn user_property_order_and_utf8() {
    let props = Properties {
        user_properties: vec![
            ("b".into(), "1".into()),
            ("a".into(), "2".into()),
            ("b".into(), "3".into()),
            ("".into(), "\u{feff}".into()),
        ],
        ..Properties::default()
    };
    roundtrip(&wrap(Ctx::Disconnect, props), V5);
    let bad = raw_packet(Ctx::PubAck, &cat(&[&[0x26], &s("k"), &s(b"\xc0")]));
    assert!(matches!(decode5(&bad), Err(E::InvalidUtf8)));
}

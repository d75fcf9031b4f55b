//! Table of malformed inputs: each row names the normative statement it exercises, the bytes, the
//! connection version and the expected `DecodeError` variant.

use bytes::BytesMut;

use super::super::*;
use super::{cat, pkt, s};
use DecodeError as E;
use ProtocolVersion::{V31, V311, V5};

type Check = fn(&DecodeError) -> bool;

/// 3.1.1 CONNECT variable header with `flags`, keep-alive 60, then `payload`.
fn connect311(flags: u8, payload: &[u8]) -> Vec<u8> {
    pkt(0x10, &cat(&[&s("MQTT"), &[4, flags, 0, 60], payload]))
}

/// 5.0 CONNECT with raw CONNECT property bytes, client id "c".
fn connect5(props: &[u8]) -> Vec<u8> {
    pkt(
        0x10,
        &cat(&[
            &s("MQTT"),
            &[5, 0x02, 0, 60, props.len() as u8],
            props,
            &s("c"),
        ]),
    )
}

/// 5.0 QoS 0 PUBLISH to `topic` with raw property bytes.
fn publish5(topic: &str, props: &[u8]) -> Vec<u8> {
    pkt(0x30, &cat(&[&s(topic), &[props.len() as u8], props, b"x"]))
}

/// 5.0 SUBSCRIBE with packet id 1, raw property bytes and one filter.
fn subscribe5(props: &[u8], filter: &str, options: u8) -> Vec<u8> {
    pkt(
        0x82,
        &cat(&[&[0, 1, props.len() as u8], props, &s(filter), &[options]]),
    )
}

fn table() -> Vec<(&'static str, Vec<u8>, ProtocolVersion, Check)> {
    vec![
        // ---- CONNECT protocol name and level.
        (
            "[MQTT-3.1.2-1] protocol name MQTX",
            pkt(0x10, &cat(&[&s("MQTX"), &[4, 2, 0, 60], &s("c")])),
            V311,
            |e| matches!(e, E::InvalidProtocolName),
        ),
        (
            "[MQTT-3.1.2-1] protocol name not UTF-8",
            pkt(0x10, &cat(&[&s(b"\xff\xfe"), &[4, 2, 0, 60], &s("c")])),
            V311,
            |e| matches!(e, E::InvalidProtocolName),
        ),
        (
            "[MQTT-3.1.2-2] MQTT with level 3",
            pkt(0x10, &cat(&[&s("MQTT"), &[3, 2, 0, 60], &s("c")])),
            V311,
            |e| matches!(e, E::UnsupportedProtocolLevel(3)),
        ),
        (
            "[MQTT-3.1.2-2] MQIsdp with level 4",
            pkt(0x10, &cat(&[&s("MQIsdp"), &[4, 2, 0, 60], &s("c")])),
            V311,
            |e| matches!(e, E::UnsupportedProtocolLevel(4)),
        ),
        (
            "[MQTT-3.1.2-2] a bridge's top bit on level 5: Mosquitto bridges never send it",
            pkt(0x10, &cat(&[&s("MQTT"), &[0x85, 2, 0, 60], &s("c")])),
            V311,
            |e| matches!(e, E::UnsupportedProtocolLevel(0x85)),
        ),
        (
            "[MQTT-3.1.2-2] MQIsdp with a bridge's level 0x84",
            pkt(0x10, &cat(&[&s("MQIsdp"), &[0x84, 2, 0, 60], &s("c")])),
            V311,
            |e| matches!(e, E::UnsupportedProtocolLevel(0x84)),
        ),
        (
            "[MQTT-3.1.2-2] MQTT with level 6",
            pkt(0x10, &cat(&[&s("MQTT"), &[6, 2, 0, 60], &s("c")])),
            V311,
            |e| matches!(e, E::UnsupportedProtocolLevel(6)),
        ),
        // ---- Fixed header.
        (
            "[MQTT 5.0 §2.1.2] packet type 0 is reserved",
            vec![0x00, 0x00],
            V311,
            |e| matches!(e, E::ReservedPacketType(0)),
        ),
        (
            "[MQTT 3.1.1 §2.2.1] packet type 15 is reserved in 3.1.1",
            vec![0xF0, 0x00],
            V311,
            |e| matches!(e, E::AuthNotAllowed(V311)),
        ),
        (
            "[MQTT 3.1.1 §2.2.1] packet type 15 is reserved in 3.1",
            vec![0xF0, 0x00],
            V31,
            |e| matches!(e, E::AuthNotAllowed(V31)),
        ),
        (
            "[MQTT-2.2.2-2] CONNECT with flags 0b0001",
            {
                let mut v = connect311(0x02, &s("c"));
                v[0] = 0x11;
                v
            },
            V311,
            |e| {
                matches!(
                    e,
                    E::InvalidHeaderFlags {
                        packet_type: "CONNECT",
                        flags: 1
                    }
                )
            },
        ),
        (
            "[MQTT-3.6.1-1] PUBREL with flags 0",
            vec![0x60, 0x02, 0x00, 0x01],
            V311,
            |e| {
                matches!(
                    e,
                    E::InvalidHeaderFlags {
                        packet_type: "PUBREL",
                        flags: 0
                    }
                )
            },
        ),
        (
            "[MQTT-3.8.1-1] SUBSCRIBE with flags 0",
            pkt(0x80, &cat(&[&[0, 1], &s("a"), &[0]])),
            V311,
            |e| {
                matches!(
                    e,
                    E::InvalidHeaderFlags {
                        packet_type: "SUBSCRIBE",
                        ..
                    }
                )
            },
        ),
        (
            "[MQTT-3.10.1-1] UNSUBSCRIBE with flags 0b0011",
            pkt(0xA3, &cat(&[&[0, 1], &s("a")])),
            V5,
            |e| {
                matches!(
                    e,
                    E::InvalidHeaderFlags {
                        packet_type: "UNSUBSCRIBE",
                        flags: 3
                    }
                )
            },
        ),
        (
            "[MQTT-2.2.2-1] PINGREQ with flags 0b1000",
            vec![0xC8, 0x00],
            V5,
            |e| {
                matches!(
                    e,
                    E::InvalidHeaderFlags {
                        packet_type: "PINGREQ",
                        ..
                    }
                )
            },
        ),
        (
            "[MQTT-3.3.1-4] PUBLISH QoS 3",
            pkt(0x36, &cat(&[&s("t"), &[0, 1]])),
            V311,
            |e| matches!(e, E::PublishQos3),
        ),
        (
            "[MQTT-3.3.1-2] DUP on QoS 0 PUBLISH",
            pkt(0x38, &s("t")),
            V311,
            |e| matches!(e, E::DupOnQos0),
        ),
        (
            "[MQTT 5.0 §1.5.5] remaining length of five bytes",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            V311,
            |e| matches!(e, E::VariableByteIntegerTooLong),
        ),
        (
            "[MQTT 5.0 §3.2.2.3.6] packet larger than the maximum packet size",
            vec![0x30, 0xD0, 0x0F],
            V5,
            |e| {
                matches!(
                    e,
                    E::PacketTooLarge {
                        size: 2003,
                        max: 1024
                    }
                )
            },
        ),
        // ---- Remaining length versus content.
        (
            "[MQTT 5.0 §2.1.4] PINGREQ with a body",
            vec![0xC0, 0x01, 0x00],
            V311,
            |e| {
                matches!(
                    e,
                    E::TrailingBytes {
                        packet_type: "PINGREQ",
                        extra: 1
                    }
                )
            },
        ),
        (
            "[MQTT 5.0 §2.1.4] 3.1.1 PUBACK with a reason code",
            vec![0x40, 0x03, 0x00, 0x01, 0x00],
            V311,
            |e| {
                matches!(
                    e,
                    E::TrailingBytes {
                        packet_type: "PUBACK",
                        extra: 1
                    }
                )
            },
        ),
        (
            "[MQTT 5.0 §2.1.4] 3.1.1 DISCONNECT with a reason code",
            vec![0xE0, 0x01, 0x00],
            V311,
            |e| matches!(e, E::TrailingBytes { .. }),
        ),
        (
            "[MQTT 5.0 §2.1.4] CONNECT with bytes after the password",
            connect311(0xC2, &cat(&[&s("c"), &s("u"), &s("p"), b"!"])),
            V311,
            |e| {
                matches!(
                    e,
                    E::TrailingBytes {
                        packet_type: "CONNECT",
                        ..
                    }
                )
            },
        ),
        (
            "[MQTT 5.0 §2.1.4] topic length runs past the packet",
            vec![0x30, 0x03, 0x00, 0x05, b'a'],
            V311,
            |e| {
                matches!(
                    e,
                    E::UnexpectedEnd {
                        packet_type: "PUBLISH",
                        field: "topic name"
                    }
                )
            },
        ),
        (
            "[MQTT 5.0 §2.1.4] CONNECT ends before keep alive",
            pkt(0x10, &cat(&[&s("MQTT"), &[4, 2]])),
            V311,
            |e| {
                matches!(
                    e,
                    E::UnexpectedEnd {
                        field: "keep alive",
                        ..
                    }
                )
            },
        ),
        (
            "[MQTT 5.0 §2.1.4] PUBACK with one byte",
            vec![0x40, 0x01, 0x00],
            V5,
            |e| {
                matches!(
                    e,
                    E::UnexpectedEnd {
                        field: "packet identifier",
                        ..
                    }
                )
            },
        ),
        (
            "[MQTT 5.0 §2.1.4] will flag set but no will payload",
            connect311(0x06, &cat(&[&s("c"), &s("w")])),
            V311,
            |e| {
                matches!(
                    e,
                    E::UnexpectedEnd {
                        field: "will payload",
                        ..
                    }
                )
            },
        ),
        // ---- Strings and topics.
        (
            "[MQTT-1.5.3-1] topic is not UTF-8",
            pkt(0x30, &s(b"a\xc3")),
            V311,
            |e| matches!(e, E::InvalidUtf8),
        ),
        (
            "[MQTT-1.5.3-1] client id encodes a surrogate (CESU-8)",
            connect311(0x02, &s(b"\xed\xa0\x80")),
            V311,
            |e| matches!(e, E::InvalidUtf8),
        ),
        (
            "[MQTT-1.5.3-2] topic contains U+0000",
            pkt(0x30, &s(b"a\x00b")),
            V311,
            |e| matches!(e, E::NullCharacter),
        ),
        (
            "[MQTT-1.5.4-2] user name contains U+0000",
            connect311(0x82, &cat(&[&s("c"), &s(b"\x00")])),
            V311,
            |e| matches!(e, E::NullCharacter),
        ),
        (
            "[MQTT-3.3.2-2] topic name with +",
            pkt(0x30, &s("a/+/b")),
            V311,
            |e| matches!(e, E::InvalidTopicName),
        ),
        (
            "[MQTT-3.3.2-2] will topic with #",
            connect311(0x06, &cat(&[&s("c"), &s("w/#"), &s("x")])),
            V311,
            |e| matches!(e, E::InvalidTopicName),
        ),
        (
            "[MQTT-3.3.2-14] response topic with wildcard",
            publish5("t", &cat(&[&[0x08], &s("r/+")])),
            V5,
            |e| matches!(e, E::InvalidResponseTopic),
        ),
        (
            "[MQTT-4.7.3-1] empty topic name in 3.1.1",
            pkt(0x30, &s("")),
            V311,
            |e| matches!(e, E::EmptyTopicName),
        ),
        (
            "[MQTT 5.0 §3.3.2.3.4] empty topic name without topic alias in 5.0",
            publish5("", &[]),
            V5,
            |e| matches!(e, E::EmptyTopicName),
        ),
        (
            "[MQTT-4.7.1-1] # not last in filter",
            pkt(0x82, &cat(&[&[0, 1], &s("a/#/b"), &[0]])),
            V311,
            |e| matches!(e, E::InvalidTopicFilter),
        ),
        (
            "[MQTT-4.7.1-2] + not alone in its level",
            pkt(0x82, &cat(&[&[0, 1], &s("a+"), &[0]])),
            V311,
            |e| matches!(e, E::InvalidTopicFilter),
        ),
        (
            "[MQTT-4.7.3-1] empty UNSUBSCRIBE filter",
            pkt(0xA2, &cat(&[&[0, 1], &s("")])),
            V311,
            |e| matches!(e, E::InvalidTopicFilter),
        ),
        // ---- Packet identifiers and payload shape.
        (
            "[MQTT-2.3.1-1] QoS 1 PUBLISH with packet id 0",
            pkt(0x32, &cat(&[&s("t"), &[0, 0]])),
            V311,
            |e| {
                matches!(
                    e,
                    E::ZeroPacketId {
                        packet_type: "PUBLISH"
                    }
                )
            },
        ),
        (
            "[MQTT-2.2.1-3] SUBSCRIBE with packet id 0",
            pkt(0x82, &cat(&[&[0, 0, 0], &s("a"), &[0]])),
            V5,
            |e| {
                matches!(
                    e,
                    E::ZeroPacketId {
                        packet_type: "SUBSCRIBE"
                    }
                )
            },
        ),
        (
            "[MQTT-3.8.3-3] SUBSCRIBE without filters",
            vec![0x82, 0x02, 0x00, 0x01],
            V311,
            |e| matches!(e, E::EmptySubscribe),
        ),
        (
            "[MQTT-3.10.3-2] UNSUBSCRIBE without filters",
            vec![0xA2, 0x03, 0x00, 0x01, 0x00],
            V5,
            |e| matches!(e, E::EmptyUnsubscribe),
        ),
        (
            "[MQTT-3.8.3-4] 3.1.1 SUBSCRIBE requesting QoS 3",
            pkt(0x82, &cat(&[&[0, 1], &s("a"), &[3]])),
            V311,
            |e| matches!(e, E::SubscribeQos3),
        ),
        (
            "[MQTT 5.0 §3.8.3.1] 5.0 SUBSCRIBE Maximum QoS 3",
            subscribe5(&[], "a", 0x03),
            V5,
            |e| matches!(e, E::SubscribeQos3),
        ),
        (
            "[MQTT-3.8.3-4] 3.1.1 SUBSCRIBE options with No Local bit",
            pkt(0x82, &cat(&[&[0, 1], &s("a"), &[0x04]])),
            V311,
            |e| matches!(e, E::SubscribeReservedBits(0x04)),
        ),
        (
            "[MQTT-3.8.3-5] 5.0 SUBSCRIBE options bit 6 set",
            subscribe5(&[], "a", 0x41),
            V5,
            |e| matches!(e, E::SubscribeReservedBits(0x41)),
        ),
        (
            "[MQTT 5.0 §3.8.3.1] retain handling 3",
            subscribe5(&[], "a", 0x30),
            V5,
            |e| matches!(e, E::RetainHandling3),
        ),
        (
            "[MQTT-3.8.3-4] No Local on a shared subscription",
            subscribe5(&[], "$share/g/a", 0x04),
            V5,
            |e| matches!(e, E::NoLocalOnSharedSubscription),
        ),
        // ---- CONNECT / CONNACK flags.
        (
            "[MQTT-3.1.2-3] CONNECT reserved flag",
            connect311(0x03, &s("c")),
            V311,
            |e| matches!(e, E::ConnectReservedFlag),
        ),
        (
            "[MQTT-3.1.2-13] will QoS without will flag",
            connect311(0x0A, &s("c")),
            V311,
            |e| matches!(e, E::WillFlagsWithoutWill(0x0A)),
        ),
        (
            "[MQTT-3.1.2-15] will retain without will flag",
            connect311(0x22, &s("c")),
            V311,
            |e| matches!(e, E::WillFlagsWithoutWill(0x22)),
        ),
        (
            "[MQTT-3.1.2-14] will QoS 3",
            connect311(0x1E, &cat(&[&s("c"), &s("w"), &s("x")])),
            V311,
            |e| matches!(e, E::WillQos3),
        ),
        (
            "[MQTT-3.1.2-22] password without user name in 3.1.1",
            connect311(0x42, &cat(&[&s("c"), &s("p")])),
            V311,
            |e| matches!(e, E::PasswordWithoutUsername),
        ),
        (
            "[MQTT-3.2.2-1] CONNACK reserved flag bits",
            vec![0x20, 0x02, 0x02, 0x00],
            V311,
            |e| matches!(e, E::ConnAckReservedFlags(0x02)),
        ),
        // ---- 5.0 properties.
        (
            "[MQTT 5.0 §2.2.2.2] unknown property 0x05",
            publish5("t", &[0x05, 0x00]),
            V5,
            |e| matches!(e, E::UnknownProperty(5)),
        ),
        (
            "[MQTT 5.0 §2.2.2.2] Session Expiry Interval on PUBLISH",
            publish5("t", &[0x11, 0, 0, 0, 1]),
            V5,
            |e| {
                matches!(
                    e,
                    E::PropertyNotAllowed {
                        id: 0x11,
                        packet_type: "PUBLISH",
                        ..
                    }
                )
            },
        ),
        (
            "[MQTT 5.0 §2.2.2.2] Will Delay Interval in CONNECT properties",
            connect5(&[0x18, 0, 0, 0, 1]),
            V5,
            |e| {
                matches!(
                    e,
                    E::PropertyNotAllowed {
                        id: 0x18,
                        packet_type: "CONNECT",
                        ..
                    }
                )
            },
        ),
        (
            "[MQTT 5.0 §3.3.2.3.3] Message Expiry Interval twice",
            publish5("t", &[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]),
            V5,
            |e| matches!(e, E::DuplicateProperty { id: 0x02, .. }),
        ),
        (
            "[MQTT 5.0 §3.3.2.3.2] Payload Format Indicator 2",
            publish5("t", &[0x01, 2]),
            V5,
            |e| matches!(e, E::InvalidPropertyValue { value: 2, .. }),
        ),
        (
            "[MQTT 5.0 §3.1.2.11.3] Receive Maximum 0",
            connect5(&[0x21, 0, 0]),
            V5,
            |e| {
                matches!(
                    e,
                    E::InvalidPropertyValue {
                        name: "Receive Maximum",
                        value: 0
                    }
                )
            },
        ),
        (
            "[MQTT 5.0 §3.1.2.11.4] Maximum Packet Size 0",
            connect5(&[0x27, 0, 0, 0, 0]),
            V5,
            |e| {
                matches!(
                    e,
                    E::InvalidPropertyValue {
                        name: "Maximum Packet Size",
                        value: 0
                    }
                )
            },
        ),
        (
            "[MQTT 5.0 §3.1.2.11.7] Request Problem Information 2",
            connect5(&[0x17, 2]),
            V5,
            |e| {
                matches!(
                    e,
                    E::InvalidPropertyValue {
                        name: "Request Problem Information",
                        ..
                    }
                )
            },
        ),
        (
            "[MQTT-3.3.2-8] Topic Alias 0",
            publish5("t", &[0x23, 0, 0]),
            V5,
            |e| matches!(e, E::TopicAliasZero),
        ),
        (
            "[MQTT 5.0 §3.8.2.1.2] Subscription Identifier 0",
            subscribe5(&[0x0B, 0x00], "a", 0),
            V5,
            |e| {
                matches!(
                    e,
                    E::InvalidPropertyValue {
                        name: "Subscription Identifier",
                        ..
                    }
                )
            },
        ),
        (
            "[MQTT 5.0 §3.8.2.1.2] two Subscription Identifiers on SUBSCRIBE",
            subscribe5(&[0x0B, 0x01, 0x0B, 0x02], "a", 0),
            V5,
            |e| matches!(e, E::DuplicateProperty { id: 0x0B, .. }),
        ),
        (
            "[MQTT 5.0 §2.2.2.1] property length past the end of the packet",
            vec![0x40, 0x04, 0x00, 0x01, 0x00, 0x05],
            V5,
            |e| {
                matches!(
                    e,
                    E::PropertyLengthExceedsPacket {
                        len: 5,
                        available: 0
                    }
                )
            },
        ),
        (
            "[MQTT 5.0 §2.2.2.1] property value runs past the property length",
            vec![0x40, 0x06, 0x00, 0x01, 0x00, 0x02, 0x1F, 0x00],
            V5,
            |e| {
                matches!(
                    e,
                    E::UnexpectedEnd {
                        field: "Reason String",
                        ..
                    }
                )
            },
        ),
        (
            "[MQTT 5.0 §1.5.5] property length of five bytes",
            vec![0x40, 0x08, 0x00, 0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            V5,
            |e| matches!(e, E::VariableByteIntegerTooLong),
        ),
        (
            "[MQTT 5.0 §3.1.2.11.10] Authentication Data without Authentication Method",
            connect5(&[0x16, 0, 1, 7]),
            V5,
            |e| matches!(e, E::AuthDataWithoutMethod),
        ),
        // ---- Reason codes.
        (
            "[MQTT-3.4.2-1] PUBACK reason 0x05",
            vec![0x40, 0x03, 0x00, 0x01, 0x05],
            V5,
            |e| {
                matches!(
                    e,
                    E::InvalidReasonCode {
                        packet_type: "PUBACK",
                        code: 5
                    }
                )
            },
        ),
        (
            "[MQTT-3.7.2-1] PUBCOMP reason 0x10",
            vec![0x70, 0x03, 0x00, 0x01, 0x10],
            V5,
            |e| {
                matches!(
                    e,
                    E::InvalidReasonCode {
                        packet_type: "PUBCOMP",
                        code: 0x10
                    }
                )
            },
        ),
        (
            "[MQTT-3.14.2-1] DISCONNECT reason 0x05",
            vec![0xE0, 0x01, 0x05],
            V5,
            |e| {
                matches!(
                    e,
                    E::InvalidReasonCode {
                        packet_type: "DISCONNECT",
                        ..
                    }
                )
            },
        ),
        (
            "[MQTT-3.15.2-1] AUTH reason 0x01",
            vec![0xF0, 0x01, 0x01],
            V5,
            |e| {
                matches!(
                    e,
                    E::InvalidReasonCode {
                        packet_type: "AUTH",
                        ..
                    }
                )
            },
        ),
        (
            "[MQTT-3.2.2-8] 5.0 CONNACK reason 0x01",
            vec![0x20, 0x03, 0x00, 0x01, 0x00],
            V5,
            |e| {
                matches!(
                    e,
                    E::InvalidReasonCode {
                        packet_type: "CONNACK",
                        ..
                    }
                )
            },
        ),
        (
            "[MQTT 3.1.1 §3.2.2.3] 3.1.1 CONNACK return code 6",
            vec![0x20, 0x02, 0x00, 0x06],
            V311,
            |e| {
                matches!(
                    e,
                    E::InvalidReasonCode {
                        packet_type: "CONNACK",
                        code: 6
                    }
                )
            },
        ),
        (
            "[MQTT 3.1.1 §3.9.3] 3.1.1 SUBACK return code 3",
            vec![0x90, 0x03, 0x00, 0x01, 0x03],
            V311,
            |e| {
                matches!(
                    e,
                    E::InvalidReasonCode {
                        packet_type: "SUBACK",
                        code: 3
                    }
                )
            },
        ),
        (
            "[MQTT-3.11.3-2] 5.0 UNSUBACK reason 0x01",
            vec![0xB0, 0x04, 0x00, 0x01, 0x00, 0x01],
            V5,
            |e| {
                matches!(
                    e,
                    E::InvalidReasonCode {
                        packet_type: "UNSUBACK",
                        ..
                    }
                )
            },
        ),
    ]
}

#[test]
fn malformed_inputs_are_rejected() {
    let table = table();
    assert!(table.len() >= 40);
    for (name, bytes, version, check) in table {
        let result = decode(&mut BytesMut::from(&bytes[..]), version, 1024);
        match result {
            Err(e) => {
                assert!(check(&e), "{name}: unexpected error {e:?}");
                // Every message cites the rule it enforces.
                assert!(e.to_string().starts_with("[MQTT"), "{name}: {e}");
            }
            Ok(p) => panic!("{name}: decoded {p:?}"),
        }
    }
}

//! Which MQTT 5.0 reason code each rejected packet earns: a table of (description, bytes,
//! expected reason code, spec statement). The split follows spec 1.2 and 4.13.1: a packet that
//! cannot be parsed is a Malformed Packet (0x81), one that parses but breaks a rule is a Protocol
//! Error (0x82) unless the spec defines a more specific code; where the spec names the class for
//! a rule, the table cites that sentence. The broker sends this code in its DISCONNECT (or
//! CONNACK for a CONNECT); tests/v5_reason_codes.rs checks the same over TCP.

use super::super::*;
use super::{cat, pkt, s};

/// The maximum packet size the table decodes with (only the 0x95 row reaches it).
const MAX: u32 = 64;

/// A 5.0 CONNECT: `flags`, raw CONNECT property bytes, client id "c", then `payload` (will,
/// user name, password as the flags say).
fn connect5(flags: u8, props: &[u8], payload: &[u8]) -> Vec<u8> {
    let head = [5, flags, 0, 60, props.len() as u8];
    pkt(0x10, &cat(&[&s("MQTT"), &head, props, &s("c"), payload]))
}

/// A 5.0 PUBLISH with fixed header `first`, `topic`, packet id 1 when QoS > 0, raw properties.
fn publish5(first: u8, topic: &[u8], props: &[u8]) -> Vec<u8> {
    let pid: &[u8] = if first & 0x06 != 0 { &[0, 1] } else { &[] };
    pkt(
        first,
        &cat(&[&s(topic), pid, &[props.len() as u8], props, b"x"]),
    )
}

/// A 5.0 SUBSCRIBE, packet id 1, raw properties and one filter with `options`.
fn subscribe5(props: &[u8], filter: &str, options: u8) -> Vec<u8> {
    let head = [0, 1, props.len() as u8];
    pkt(0x82, &cat(&[&head, props, &s(filter), &[options]]))
}

type Row = (&'static str, Vec<u8>, ReasonCode, &'static str);

#[rustfmt::skip]
fn malformed() -> Vec<Row> {
    use ReasonCode as R;
    let m = R::MALFORMED_PACKET;
    vec![
        ("reserved packet type 0", vec![0x00, 0x00], m, "[MQTT 5.0 §2.1.2]"),
        ("PUBACK fixed header flags 0x2", pkt(0x42, &[0, 1]), m, "[MQTT-2.1.3-1]"),
        ("SUBSCRIBE fixed header flags 0x0", pkt(0x80, &[0, 1, 0]), m, "[MQTT-2.1.3-1]"),
        ("PUBLISH with QoS 3", publish5(0x36, b"a", &[]), m, "[MQTT-3.3.1-4]"),
        ("PUBLISH QoS 0 with DUP 1 (invalid flags)", publish5(0x38, b"a", &[]), m,
            "[MQTT-3.3.1-2][MQTT-2.1.3-1]"),
        ("remaining length of 5 bytes", vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], m,
            "[MQTT 5.0 §1.5.5]"),
        ("PINGREQ with a byte inside its remaining length", vec![0xC0, 0x01, 0x00], m,
            "[MQTT 5.0 §2.1.4]"),
        ("topic length past the end of the packet", pkt(0x30, &[0, 9, b'a']), m,
            "[MQTT 5.0 §2.1.4]"),
        ("ill-formed UTF-8 in the topic", publish5(0x30, b"\xC3\x28", &[]), m, "[MQTT-1.5.4-1]"),
        ("U+0000 in the topic", publish5(0x30, b"a\x00", &[]), m, "[MQTT-1.5.4-2]"),
        ("SUBSCRIBE options with reserved bits", subscribe5(&[], "a", 0xC0), m, "[MQTT-3.8.3-5]"),
        ("unknown property 0x05", publish5(0x30, b"a", &[0x05, 0]), m, "[MQTT 5.0 §2.2.2.2]"),
        ("Session Expiry Interval on PUBLISH", publish5(0x30, b"a", &[0x11, 0, 0, 0, 1]), m,
            "[MQTT 5.0 §2.2.2.2]"),
        ("Reason String on CONNECT", connect5(0x02, &cat(&[&[0x1F], &s("r")]), &[]), m,
            "[MQTT 5.0 §2.2.2.2]"),
        ("property length past the packet", pkt(0x30, &cat(&[&s("a"), &[9, 0x01]])), m,
            "[MQTT 5.0 §2.2.2.1]"),
        ("CONNECT reserved flag set", connect5(0x03, &[], &[]), m, "[MQTT-3.1.2-3]"),
        ("CONNECT will QoS 3", connect5(0x1E, &[], &cat(&[&[0], &s("w"), &s("x")])), m,
            "[MQTT-3.1.2-12]"),
        ("CONNECT will QoS 1 without the will flag", connect5(0x0A, &[], &[]), m,
            "[MQTT-3.1.2-11]"),
    ]
}

#[rustfmt::skip]
fn protocol_errors() -> Vec<Row> {
    use ReasonCode as R;
    let p = R::PROTOCOL_ERROR;
    vec![
        ("SUBSCRIBE without topic filters", pkt(0x82, &[0, 1, 0]), p, "[MQTT-3.8.3-2]"),
        ("UNSUBSCRIBE without topic filters", pkt(0xA2, &[0, 1, 0]), p, "[MQTT-3.10.3-2]"),
        ("SUBSCRIBE Maximum QoS 3", subscribe5(&[], "a", 0x03), p, "[MQTT 5.0 §3.8.3.1]"),
        ("SUBSCRIBE Retain Handling 3", subscribe5(&[], "a", 0x30), p, "[MQTT 5.0 §3.8.3.1]"),
        ("No Local on a shared subscription", subscribe5(&[], "$share/g/a", 0x04), p,
            "[MQTT-3.8.3-4]"),
        ("Subscription Identifier 0", subscribe5(&[0x0B, 0], "a", 0), p, "[MQTT 5.0 §3.8.2.1.2]"),
        ("two Subscription Identifiers on SUBSCRIBE", subscribe5(&[0x0B, 1, 0x0B, 2], "a", 0), p,
            "[MQTT 5.0 §3.8.2.1.2]"),
        ("Topic Alias twice", publish5(0x30, b"a", &[0x23, 0, 1, 0x23, 0, 1]), p,
            "[MQTT 5.0 §3.3.2.3.4]"),
        ("Message Expiry Interval twice", publish5(0x30, b"a", &[2, 0, 0, 0, 1, 2, 0, 0, 0, 1]),
            p, "[MQTT 5.0 §3.3.2.3.3]"),
        ("Payload Format Indicator 2", publish5(0x30, b"a", &[0x01, 2]), p,
            "[MQTT 5.0 §3.3.2.3.2]"),
        ("Receive Maximum 0", connect5(0x02, &[0x21, 0, 0], &[]), p, "[MQTT 5.0 §3.1.2.11.3]"),
        ("Maximum Packet Size 0", connect5(0x02, &[0x27, 0, 0, 0, 0], &[]), p,
            "[MQTT 5.0 §3.1.2.11.4]"),
        ("Request Response Information 2", connect5(0x02, &[0x19, 2], &[]), p,
            "[MQTT 5.0 §3.1.2.11.6]"),
        ("Authentication Data without Method", connect5(0x02, &cat(&[&[0x16], &s("d")]), &[]),
            p, "[MQTT 5.0 §3.1.2.11.10]"),
        ("empty topic without Topic Alias", publish5(0x30, b"", &[]), p, "[MQTT 5.0 §3.3.2.1]"),
        ("Response Topic with a wildcard", publish5(0x30, b"a", &cat(&[&[0x08], &s("r/#")])), p,
            "[MQTT-3.3.2-14]"),
        ("QoS 1 PUBLISH with packet id 0", pkt(0x32, &cat(&[&s("a"), &[0, 0, 0]])), p,
            "[MQTT-2.2.1-3]"),
        ("SUBSCRIBE with packet id 0", pkt(0x82, &cat(&[&[0, 0, 0], &s("a"), &[0]])), p,
            "[MQTT-2.2.1-3]"),
        ("PUBACK reason code 0x05", pkt(0x40, &[0, 1, 0x05]), p, "[MQTT 5.0 §3.4.2.1]"),
        ("PUBREL reason code 0x10", pkt(0x62, &[0, 1, 0x10]), p, "[MQTT 5.0 §3.6.2.1]"),
        ("DISCONNECT reason code 0x01", pkt(0xE0, &[0x01]), p, "[MQTT 5.0 §3.14.2.1]"),
        ("AUTH reason code 0x80", pkt(0xF0, &[0x80]), p, "[MQTT 5.0 §3.15.2.1]"),
    ]
}

#[rustfmt::skip]
fn specific() -> Vec<Row> {
    use ReasonCode as R;
    let will = cat(&[&[0], &s("w/+"), &s("x")]);
    vec![
        ("+ in the PUBLISH topic", publish5(0x30, b"a/+", &[]), R::TOPIC_NAME_INVALID,
            "[MQTT-3.3.2-2][MQTT 5.0 §4.13.1]"),
        ("# in a QoS 1 PUBLISH topic", publish5(0x32, b"#", &[]), R::TOPIC_NAME_INVALID,
            "[MQTT-3.3.2-2][MQTT 5.0 §4.13.1]"),
        ("+ in the will topic", connect5(0x06, &[], &will), R::TOPIC_NAME_INVALID,
            "[MQTT-4.7.0-1][MQTT 5.0 §3.2.2.2]"),
        ("Topic Alias 0", publish5(0x30, b"a", &[0x23, 0, 0]), R::TOPIC_ALIAS_INVALID,
            "[MQTT-3.3.2-8][MQTT 5.0 §3.3.4]"),
        ("packet over the maximum packet size", publish5(0x30, &[b'a'; 70], &[]),
            R::PACKET_TOO_LARGE, "[MQTT 5.0 §3.2.2.3.6]"),
        ("CONNECT protocol level 6", pkt(0x10, &cat(&[&s("MQTT"), &[6, 2, 0, 60, 0], &s("c")])),
            R::UNSUPPORTED_PROTOCOL_VERSION, "[MQTT-3.1.2-2]"),
    ]
}

#[test]
fn every_rejection_has_the_reason_code_the_spec_gives_it() {
    let mut wrong = Vec::new();
    let rows = [malformed(), protocol_errors(), specific()].concat();
    for (what, bytes, want, statement) in &rows {
        let got = decode(
            &mut bytes::BytesMut::from(&bytes[..]),
            ProtocolVersion::V5,
            MAX,
        );
        match got {
            Err(e) if e.reason_code() == *want => {}
            Err(e) => wrong.push(format!(
                "{statement} {what}: {:#04x} ({e}), want {:#04x} ({})",
                e.reason_code().0,
                want.0,
                want.name()
            )),
            Ok(p) => wrong.push(format!("{statement} {what}: accepted as {p:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {}:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}

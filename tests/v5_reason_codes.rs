//! Which DISCONNECT reason code a v5 client gets for each broken rule, over TCP: a table of
//! (description, raw bytes sent after a successful CONNECT, expected reason code, statement).
//! The classification follows spec 1.2 and 4.13.1: bytes that cannot be parsed are a Malformed
//! Packet (0x81), a parsed packet that breaks a rule is a Protocol Error (0x82) unless the spec
//! defines a more specific code. Where Mosquitto answers differently, README.md ("Where Starling
//! differs from Mosquitto") says so. The codec-level table is `src/codec/tests/reason_codes.rs`.
//!
//! Every case runs even when an earlier one fails; the test fails at the end with the list.

#[path = "v5_support.rs"]
mod support;

use starling::codec::{Auth, Packet, QoS, ReasonCode as R};
use support::*;

#[derive(Clone)]
struct Case {
    what: &'static str,
    /// Sent after CONNECT / CONNACK 0x00, as one write.
    bytes: Vec<u8>,
    want: R,
    statement: &'static str,
}

fn case(what: &'static str, bytes: Vec<u8>, want: R, statement: &'static str) -> Case {
    Case {
        what,
        bytes,
        want,
        statement,
    }
}

/// Fixed header byte, remaining length and body.
fn raw(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let b = (n & 0x7F) as u8;
        n >>= 7;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string.
fn s(v: &[u8]) -> Vec<u8> {
    [&(v.len() as u16).to_be_bytes()[..], v].concat()
}

/// A v5 PUBLISH, fixed header `first`, packet id 1 when QoS > 0, raw property bytes.
fn publish5(first: u8, topic: &[u8], props: &[u8]) -> Vec<u8> {
    let pid: &[u8] = if first & 0x06 != 0 { &[0, 1] } else { &[] };
    let body = [&s(topic)[..], pid, &[props.len() as u8], props, b"x"].concat();
    raw(first, &body)
}

/// A v5 SUBSCRIBE, packet id 1, raw property bytes, one filter with `options`.
fn subscribe5(props: &[u8], filter: &[u8], options: u8) -> Vec<u8> {
    let body = [
        &[0, 1, props.len() as u8][..],
        props,
        &s(filter),
        &[options],
    ]
    .concat();
    raw(0x82, &body)
}

fn v5(p: Packet) -> Vec<u8> {
    encode(&p, starling::codec::ProtocolVersion::V5).to_vec()
}

#[rustfmt::skip]
fn malformed() -> Vec<Case> {
    let m = R::MALFORMED_PACKET;
    vec![
        case("reserved packet type 0", vec![0x00, 0x00], m, "[MQTT 5.0 §2.1.2]"),
        case("PUBACK with fixed header flags 0x2", raw(0x42, &[0, 1]), m, "[MQTT-2.1.3-1]"),
        case("PUBLISH with QoS 3", publish5(0x36, b"a", &[]), m, "[MQTT-3.3.1-4]"),
        case("PUBLISH QoS 0 with DUP 1", publish5(0x38, b"a", &[]), m,
            "[MQTT-3.3.1-2][MQTT-2.1.3-1]"),
        case("ill-formed UTF-8 in the topic", publish5(0x30, b"\xC3\x28", &[]), m,
            "[MQTT-1.5.4-1]"),
        case("U+0000 in the topic", publish5(0x30, b"a\x00", &[]), m, "[MQTT-1.5.4-2]"),
        case("SUBSCRIBE options with reserved bits 0xC0", subscribe5(&[], b"a", 0xC0), m,
            "[MQTT-3.8.3-5]"),
        case("Session Expiry Interval on PUBLISH", publish5(0x30, b"a", &[0x11, 0, 0, 0, 1]), m,
            "[MQTT 5.0 §2.2.2.2]"),
        case("unknown property 0x05", publish5(0x30, b"a", &[0x05, 0]), m, "[MQTT 5.0 §2.2.2.2]"),
        case("PINGREQ with a byte inside its remaining length", vec![0xC0, 0x01, 0x00], m,
            "[MQTT 5.0 §2.1.4]"),
    ]
}

#[rustfmt::skip]
fn protocol_errors() -> Vec<Case> {
    let p = R::PROTOCOL_ERROR;
    let dup_expiry = [2, 0, 0, 0, 1, 2, 0, 0, 0, 1];
    let response_topic = [&[0x08][..], &s(b"r/+")].concat();
    let connect = v5(Packet::Connect(Box::new(connect_packet("again"))));
    let mut expiry = starling::codec::Disconnect::new(R::NORMAL_DISCONNECTION);
    expiry.properties.session_expiry_interval = Some(60);
    let auth = Packet::Auth(Auth { reason: R::REAUTHENTICATE, properties: Default::default() });
    vec![
        case("SUBSCRIBE without topic filters", raw(0x82, &[0, 1, 0]), p, "[MQTT-3.8.3-2]"),
        case("UNSUBSCRIBE without topic filters", raw(0xA2, &[0, 1, 0]), p, "[MQTT-3.10.3-2]"),
        case("SUBSCRIBE Maximum QoS 3", subscribe5(&[], b"a", 0x03), p, "[MQTT 5.0 §3.8.3.1]"),
        case("SUBSCRIBE Retain Handling 3", subscribe5(&[], b"a", 0x30), p, "[MQTT 5.0 §3.8.3.1]"),
        case("No Local on a shared subscription", subscribe5(&[], b"$share/g/a", 0x04), p,
            "[MQTT-3.8.3-4]"),
        case("Subscription Identifier 0", subscribe5(&[0x0B, 0], b"a", 0), p,
            "[MQTT 5.0 §3.8.2.1.2]"),
        case("Message Expiry Interval twice", publish5(0x30, b"a", &dup_expiry), p,
            "[MQTT 5.0 §3.3.2.3.3]"),
        case("Response Topic with a wildcard", publish5(0x30, b"a", &response_topic), p,
            "[MQTT-3.3.2-14]"),
        case("empty topic without Topic Alias", publish5(0x30, b"", &[]), p,
            "[MQTT 5.0 §3.3.2.1]"),
        case("empty topic with an alias never set", publish5(0x30, b"", &[0x23, 0, 1]), p,
            "[MQTT 5.0 §3.3.4]"),
        case("QoS 1 PUBLISH with packet id 0", raw(0x32, &[&s(b"a")[..], &[0, 0, 0]].concat()), p,
            "[MQTT-2.2.1-3]"),
        case("PUBACK with reason code 0x05", raw(0x40, &[0, 1, 0x05]), p, "[MQTT 5.0 §3.4.2.1]"),
        case("second CONNECT", connect, p, "[MQTT-3.1.0-2]"),
        case("CONNACK sent by the client", raw(0x20, &[0, 0, 0]), p, "[MQTT 5.0 §3.2]"),
        case("AUTH without an Authentication Method in CONNECT", v5(auth), p, "[MQTT-4.12.0-7]"),
        case("DISCONNECT raising Session Expiry Interval from 0", v5(Packet::Disconnect(expiry)),
            p, "[MQTT 5.0 §3.14.2.2.2]"),
    ]
}

#[rustfmt::skip]
fn specific() -> Vec<Case> {
    let qos2 = |pid: u8| raw(0x34, &[&s(b"rm")[..], &[0, pid, 0], b"x"].concat());
    vec![
        case("+ in the PUBLISH topic", publish5(0x30, b"a/+", &[]), R::TOPIC_NAME_INVALID,
            "[MQTT-3.3.2-2][MQTT 5.0 §4.13.1]"),
        case("# in a QoS 1 PUBLISH topic", publish5(0x32, b"a/#", &[]), R::TOPIC_NAME_INVALID,
            "[MQTT-3.3.2-2][MQTT 5.0 §4.13.1]"),
        case("Topic Alias 0", publish5(0x30, b"a", &[0x23, 0, 0]), R::TOPIC_ALIAS_INVALID,
            "[MQTT-3.3.2-8][MQTT 5.0 §3.3.4]"),
        case("Topic Alias above Topic Alias Maximum", publish5(0x30, b"a", &[0x23, 0, 11]),
            R::TOPIC_ALIAS_INVALID, "[MQTT-3.3.2-9][MQTT 5.0 §3.3.4]"),
        case("a third unanswered QoS 2 PUBLISH with Receive Maximum 2",
            [qos2(1), qos2(2), qos2(3)].concat(), R::RECEIVE_MAXIMUM_EXCEEDED, "[MQTT-3.3.4-7]"),
    ]
}

/// Against a broker that offers none of the optional features and allows only small packets.
#[rustfmt::skip]
fn unsupported() -> Vec<Case> {
    let retained = raw(0x31, &[&s(b"a")[..], &[0], b"x"].concat());
    vec![
        case("shared subscription, Shared Subscription Available 0",
            subscribe5(&[], b"$share/g/a", 0), R::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
            "[MQTT 5.0 §3.2.2.3.13]"),
        case("wildcard subscription, Wildcard Subscription Available 0",
            subscribe5(&[], b"a/+", 0), R::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
            "[MQTT 5.0 §3.2.2.3.11]"),
        case("Subscription Identifier, Subscription Identifier Available 0",
            subscribe5(&[0x0B, 7], b"a", 0), R::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
            "[MQTT 5.0 §3.2.2.3.12]"),
        case("QoS 2 PUBLISH above Maximum QoS 1", publish5(0x34, b"a", &[]), R::QOS_NOT_SUPPORTED,
            "[MQTT-3.2.2-11][MQTT 5.0 §3.3.1.2]"),
        case("RETAIN with Retain Available 0", retained, R::RETAIN_NOT_SUPPORTED,
            "[MQTT-3.2.2-14][MQTT 5.0 §3.3.1.3]"),
        case("PUBLISH over Maximum Packet Size", publish5(0x30, &[b'a'; 200], &[]),
            R::PACKET_TOO_LARGE, "[MQTT 5.0 §3.2.2.3.6]"),
    ]
}

/// Connects, sends the case's bytes and reads until DISCONNECT (acks before it are skipped),
/// then requires the close.
async fn run_case(addr: std::net::SocketAddr, n: usize, c: &Case) -> Result<(), String> {
    let id = format!("rc-{n}");
    let mut cl = Client::connect(addr, &id).await;
    cl.send_bytes(&c.bytes).await;
    loop {
        match cl.recv(WAIT).await {
            Recv::Packet(Packet::Disconnect(d)) if d.reason == c.want => break,
            Recv::Packet(Packet::Disconnect(d)) => {
                return Err(format!(
                    "DISCONNECT {:#04x} ({}), want {:#04x} ({})",
                    d.reason.0,
                    d.reason.name(),
                    c.want.0,
                    c.want.name()
                ))
            }
            Recv::Packet(Packet::PubRec(_) | Packet::PubAck(_)) => {}
            other => return Err(format!("want DISCONNECT {:#04x}, got {other:?}", c.want.0)),
        }
    }
    match cl.recv(WAIT).await {
        Recv::Closed(_) => Ok(()),
        other => Err(format!("not closed after DISCONNECT: {other:?}")),
    }
}

async fn run_table(addr: std::net::SocketAddr, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for (n, c) in cases.iter().enumerate() {
        if let Err(e) = run_case(addr, n, c).await {
            failures.push(format!("{} {}: {e}", c.statement, c.what));
        }
    }
    failures
}

#[tokio::test]
async fn each_broken_rule_gets_its_disconnect_reason_code() {
    let mut cfg = config();
    cfg.mqtt.receive_maximum = 2;
    let b = start_with(cfg).await;
    let cases = [malformed(), protocol_errors(), specific()].concat();
    let failures = run_table(b.addr, &cases).await;
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The broker is still serving.
    let mut c = Client::connect(b.addr, "rc-after").await;
    c.subscribe("rc/after", QoS::AtLeastOnce).await;
}

#[tokio::test]
async fn features_the_connack_refused_are_protocol_errors() {
    let mut cfg = config();
    cfg.mqtt.shared_subscriptions = false;
    cfg.mqtt.wildcard_subscriptions = false;
    cfg.mqtt.subscription_identifiers = false;
    cfg.mqtt.retain_available = false;
    cfg.mqtt.max_qos = 1;
    cfg.mqtt.max_packet_size = 128;
    let b = start_with(cfg).await;
    let cases = unsupported();
    let failures = run_table(b.addr, &cases).await;
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

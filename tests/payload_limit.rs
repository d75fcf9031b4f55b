//! Issue 13 item 9: `mqtt.max_payload_size`, Mosquitto's `message_size_limit`. Above it:
//!
//! - a v5 QoS 1/2 PUBLISH is refused with PUBACK/PUBREC 0x97 Quota exceeded, one of the codes
//!   PUBACK and PUBREC may carry (§3.4.2.1, §3.5.2.1; Mosquitto 2.0.11 sends 0x95 Packet too
//!   large, which they may not);
//! - a v5 QoS 0 PUBLISH and every 3.x PUBLISH is acknowledged as the protocol requires (none,
//!   PUBACK, PUBREC/PUBCOMP with success) and dropped: never delivered, counted in
//!   `dropped_payload_too_large`;
//! - a CONNECT whose will payload is larger is refused: v5 CONNACK 0x95 Packet too large, 3.x
//!   return code 5, as Mosquitto 2.0.11 does.
//!
//! A payload of exactly the limit passes. Every negative check is followed by a marker message
//! from the same publisher, so the subscriber synchronises on it instead of sleeping.

#[path = "v5_support.rs"]
mod support;

use starling::codec::{Connect, ProtocolVersion, QoS, ReasonCode};
use support::*;

const LIMIT: usize = 16;

fn limited() -> starling::config::Config {
    let mut cfg = config();
    cfg.mqtt.max_payload_size = LIMIT as u32;
    cfg
}

fn v311(client_id: &str) -> Connect {
    let mut c = connect_packet(client_id);
    c.protocol = ProtocolVersion::V311;
    c
}

/// The payloads `sub` receives up to and including `marker`.
async fn received_until(sub: &mut Client, marker: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let p = sub.next_publish_acked().await;
        got.push(text(&p));
        if text(&p) == marker {
            return got;
        }
    }
}

#[tokio::test]
async fn v5_publish_over_the_limit_is_refused_with_quota_exceeded() {
    let b = start_with(limited()).await;
    let mut sub = Client::connect(b.addr, "pl5-sub").await;
    sub.subscribe("pl5/#", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(b.addr, "pl5-pub").await;
    let over = "x".repeat(LIMIT + 1);
    let exact = "y".repeat(LIMIT);

    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let r = publ
            .publish_packet(publish("pl5/t", over.as_bytes(), qos, 0))
            .await
            .expect("an acknowledgement");
        assert_eq!(r.reason, ReasonCode::QUOTA_EXCEEDED, "QoS {qos:?}: {r:?}");
        assert!(
            r.properties.reason_string.is_some(),
            "the refusal explains itself [MQTT-3.1.2-29]"
        );
    }
    // QoS 0: nothing to answer; dropped.
    publ.publish("pl5/t", over.as_bytes(), QoS::AtMostOnce)
        .await;
    // Exactly the limit passes, at every QoS.
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publ.publish("pl5/t", exact.as_bytes(), qos).await;
    }
    publ.publish("pl5/t", b"marker", QoS::AtLeastOnce).await;
    let got = received_until(&mut sub, "marker").await;
    assert_eq!(
        got,
        vec![exact.clone(), exact.clone(), exact, "marker".into()]
    );
    assert_eq!(b.state().metrics().dropped_payload_too_large.get(), 3);
}

#[tokio::test]
async fn v3_publish_over_the_limit_is_acknowledged_and_dropped() {
    let b = start_with(limited()).await;
    let mut sub = Client::connect(b.addr, "pl3-sub").await;
    sub.subscribe("pl3/#", QoS::AtLeastOnce).await;
    let (mut publ, _) = Client::connect_with(b.addr, v311("pl3-pub")).await;
    let over = "x".repeat(LIMIT + 1);
    // `publish` asserts a successful PUBACK, or PUBREC and then PUBCOMP, for QoS 1 and 2:
    // 3.1.1 has no way to refuse a PUBLISH [MQTT-4.3.2-2], [MQTT-4.3.3-2].
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publ.publish("pl3/t", over.as_bytes(), qos).await;
    }
    publ.publish("pl3/t", b"marker", QoS::AtLeastOnce).await;
    assert_eq!(received_until(&mut sub, "marker").await, vec!["marker"]);
    assert_eq!(b.state().metrics().dropped_payload_too_large.get(), 3);
}

#[tokio::test]
async fn will_payload_over_the_limit_refuses_the_connect() {
    let b = start_with(limited()).await;
    let over = vec![b'w'; LIMIT + 1];
    let with_will = |mut c: Connect, payload: &[u8]| {
        c.will = Some(will(
            "pl/will",
            payload,
            QoS::AtMostOnce,
            Default::default(),
        ));
        c
    };

    let (mut c, ack) = Client::connect_raw(b.addr, with_will(connect_packet("plw5"), &over)).await;
    assert_eq!(ack.code, ReasonCode::PACKET_TOO_LARGE, "{ack:?}");
    c.expect_closed("[MQTT-3.2.2-7] refused").await;
    let (mut c, ack) = Client::connect_raw(b.addr, with_will(v311("plw3"), &over)).await;
    assert_eq!(ack.code, ReasonCode::V3_NOT_AUTHORIZED, "{ack:?}");
    c.expect_closed("[MQTT-3.2.2-5] refused").await;

    let exact = vec![b'w'; LIMIT];
    Client::connect_with(b.addr, with_will(connect_packet("plw5-ok"), &exact)).await;
    Client::connect_with(b.addr, with_will(v311("plw3-ok"), &exact)).await;
}

/// [MQTT-3.1.2-24] for acks: the Reason String of a PUBACK 0x97 is left out when it would make
/// the PUBACK larger than the client's Maximum Packet Size [MQTT-3.4.2-2].
#[tokio::test]
async fn refusal_reason_string_left_out_beyond_client_maximum_packet_size() {
    let b = start_with(limited()).await;
    let mut c = connect_packet("pl-small");
    // Room for CONNACK and a bare PUBACK, not for the Reason String.
    c.properties.maximum_packet_size = Some(20);
    let (mut publ, _) = Client::connect_with(b.addr, c).await;
    let r = publ
        .publish_packet(publish("pl/t", &[b'x'; LIMIT + 1], QoS::AtLeastOnce, 0))
        .await
        .expect("PUBACK");
    assert_eq!(r.reason, ReasonCode::QUOTA_EXCEEDED);
    assert_eq!(r.properties.reason_string, None, "{r:?}");
}

//! MQTT 5.0 server-sent DISCONNECT reason codes (spec 3.14.2.1): session taken over, server
//! shutting down, keep alive timeout, malformed packet, protocol error, packet too large,
//! message rate too high, and the quota PUBACK.

#[path = "v5_support.rs"]
mod support;

use std::time::{Duration, Instant};

use starling::codec::{Packet, QoS, ReasonCode};
use support::*;

/// [MQTT-3.1.4-3]: a second connection with the same client id takes the session over; the
/// first gets DISCONNECT 0x8E and is closed.
#[tokio::test]
async fn mqtt_3_1_4_3_session_taken_over_0x8e() {
    let b = start().await;
    let mut first = Client::connect(b.addr, "dup-id").await;
    let (mut second, _) = Client::connect_with(b.addr, connect_packet("dup-id")).await;
    first
        .expect_disconnect(ReasonCode::SESSION_TAKEN_OVER, "same client id")
        .await;
    // The new connection works.
    second.subscribe("to/t", QoS::AtLeastOnce).await;
    second.publish("to/t", b"x", QoS::AtLeastOnce).await;
    assert_eq!(text(&second.next_publish_acked().await), "x");
}

/// Broker shutdown: every v5 client gets DISCONNECT 0x8B before the connection closes.
#[tokio::test]
async fn server_shutting_down_0x8b() {
    let b = start().await;
    let mut c1 = Client::connect(b.addr, "sd-1").await;
    let mut c2 = Client::connect(b.addr, "sd-2").await;
    c2.subscribe("sd/#", QoS::AtLeastOnce).await;
    b.handle().shutdown();
    c1.expect_disconnect(ReasonCode::SERVER_SHUTTING_DOWN, "shutdown")
        .await;
    c2.expect_disconnect(ReasonCode::SERVER_SHUTTING_DOWN, "shutdown")
        .await;
}

/// [MQTT-3.1.2-22]: no packet within 1.5 × Keep Alive → the server closes the connection, with
/// DISCONNECT 0x8D first (§3.14.2.1).
#[tokio::test]
async fn mqtt_3_1_2_22_keep_alive_timeout_0x8d() {
    let b = start().await;
    let mut c = connect_packet("ka");
    c.keep_alive = 1;
    let (mut cl, ack) = Client::connect_with(b.addr, c).await;
    assert_eq!(ack.properties.server_keep_alive, None);
    let t0 = Instant::now();
    cl.expect_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT, "silent for 1.5 s")
        .await;
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "closed after {:?}, before 1.5 × keep alive",
        t0.elapsed()
    );
}

/// A PINGREQ in time keeps the connection alive; the timeout counts from the last packet
/// [MQTT-3.1.2-22].
#[tokio::test]
async fn mqtt_3_1_2_22_pingreq_keeps_connection() {
    let b = start().await;
    let mut c = connect_packet("ka-ping");
    c.keep_alive = 1;
    let (mut cl, _) = Client::connect_with(b.addr, c).await;
    let t0 = Instant::now();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        cl.send(&Packet::PingReq).await;
        assert_eq!(cl.next().await, Packet::PingResp);
    }
    assert!(t0.elapsed() > Duration::from_millis(2000));
    cl.expect_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT, "then silent")
        .await;
}

/// A malformed packet (PUBLISH with QoS 3 [MQTT-3.3.1-4]) → DISCONNECT 0x81 [MQTT-4.13.1-1].
#[tokio::test]
async fn mqtt_3_3_1_4_malformed_packet_0x81() {
    let b = start().await;
    let mut c = Client::connect(b.addr, "mal").await;
    // 0x36: PUBLISH, QoS bits 11. Topic "a", packet id 1, property length 0.
    c.send_bytes(&[0x36, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, 0x00])
        .await;
    c.expect_disconnect(ReasonCode::MALFORMED_PACKET, "PUBLISH QoS 3")
        .await;

    // An invalid UTF-8 topic [MQTT-1.5.4-1] is malformed too.
    let mut c = Client::connect(b.addr, "mal2").await;
    c.send_bytes(&[0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00])
        .await;
    c.expect_disconnect(ReasonCode::MALFORMED_PACKET, "invalid UTF-8 topic")
        .await;
}

/// [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error → DISCONNECT 0x82.
#[tokio::test]
async fn mqtt_3_1_0_2_second_connect_protocol_error_0x82() {
    let b = start().await;
    let mut c = Client::connect(b.addr, "twice").await;
    c.send(&Packet::Connect(Box::new(connect_packet("twice"))))
        .await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR, "second CONNECT")
        .await;
}

/// A PUBLISH with an empty topic and no Topic Alias is a Protocol Error [MQTT-3.3.2-1]/
/// [MQTT-4.7.3-1] → 0x82.
#[tokio::test]
async fn empty_topic_without_alias_protocol_error_0x82() {
    let b = start().await;
    let mut c = Client::connect(b.addr, "notopic").await;
    c.send(&Packet::Publish(publish("", b"x", QoS::AtMostOnce, 0)))
        .await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR, "empty topic, no alias")
        .await;
}

/// [MQTT-3.2.2-15]: with mqtt.max_packet_size set small, CONNACK announces it, and a larger
/// packet gets DISCONNECT 0x95 (§3.1.2.11.4, §4.13).
#[tokio::test]
async fn packet_too_large_0x95() {
    let mut cfg = config();
    cfg.mqtt.max_packet_size = 128;
    let b = start_with(cfg).await;
    let (mut c, ack) = Client::connect_with(b.addr, connect_packet("big")).await;
    assert_eq!(ack.properties.maximum_packet_size, Some(128));
    c.publish("big/t", &[b'x'; 64], QoS::AtLeastOnce).await;
    c.send(&Packet::Publish(publish(
        "big/t",
        &[b'x'; 200],
        QoS::AtLeastOnce,
        9,
    )))
    .await;
    c.expect_disconnect(ReasonCode::PACKET_TOO_LARGE, "200-byte PUBLISH, limit 128")
        .await;
}

/// limits.max_publish_rate: an MQTT 5 client publishing faster is disconnected with 0x96.
#[tokio::test]
async fn message_rate_too_high_0x96() {
    let mut cfg = config();
    cfg.limits.max_publish_rate = 5;
    let b = start_with(cfg).await;
    let mut c = Client::connect(b.addr, "rate").await;
    let mut burst = bytes::BytesMut::new();
    for _ in 0..20 {
        starling::codec::encode(
            &Packet::Publish(publish("rate/t", b"x", QoS::AtMostOnce, 0)),
            starling::codec::ProtocolVersion::V5,
            &mut burst,
        );
    }
    c.send_bytes(&burst).await;
    c.expect_disconnect(ReasonCode::MESSAGE_RATE_TOO_HIGH, "20 PUBLISH at 5/s")
        .await;
}

/// limits.max_publish_bandwidth: a QoS 1 PUBLISH over the byte quota is refused with PUBACK
/// 0x97 (and not forwarded); the connection stays up; QoS 2 gets PUBREC 0x97.
#[tokio::test]
async fn quota_exceeded_puback_0x97() {
    let mut cfg = config();
    cfg.limits.max_publish_bandwidth = 100;
    let b = start_with(cfg).await;
    let mut sub = Client::connect(b.addr, "quota-sub").await;
    sub.subscribe("quota/#", QoS::AtLeastOnce).await;
    let mut c = Client::connect(b.addr, "quota").await;
    let r = c
        .publish_packet(publish("quota/t", &[b'x'; 90], QoS::AtLeastOnce, 0))
        .await
        .unwrap();
    assert_eq!(r.reason, ReasonCode::SUCCESS);
    assert_eq!(sub.next_publish_acked().await.payload.len(), 90);

    let r = c
        .publish_packet(publish("quota/t", &[b'y'; 90], QoS::AtLeastOnce, 0))
        .await
        .unwrap();
    assert_eq!(r.reason, ReasonCode::QUOTA_EXCEEDED, "PUBACK {r:?}");
    let r = c
        .publish_packet(publish("quota/t", &[b'z'; 90], QoS::ExactlyOnce, 0))
        .await
        .unwrap();
    assert_eq!(r.reason, ReasonCode::QUOTA_EXCEEDED, "PUBREC {r:?}");
    sub.expect_nothing("refused messages are not forwarded")
        .await;

    // Still connected: a PINGREQ is answered.
    c.send(&Packet::PingReq).await;
    c.wait_for("PINGRESP", |p| (*p == Packet::PingResp).then_some(()))
        .await;
}

//! MQTT 5.0 CONNECT / CONNACK negotiation: Session Expiry Interval, Receive Maximum (both
//! directions), Maximum Packet Size, Topic Alias Maximum, Assigned Client Identifier, Server Keep
//! Alive, Maximum QoS, Retain Available and the Wildcard / Subscription Identifier / Shared
//! Subscription Available flags.

#[path = "v5_support.rs"]
mod support;

use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS as RQoS;
use starling::codec::{Disconnect, Packet, Properties, QoS, ReasonCode};
use support::*;

fn with_expiry(id: &str, secs: u32, clean_start: bool) -> starling::codec::Connect {
    let mut c = connect_packet(id);
    c.clean_start = clean_start;
    c.properties.session_expiry_interval = Some(secs);
    c
}

// ---------------------------------------------------------------------------------------------
// Session Expiry Interval
// ---------------------------------------------------------------------------------------------

/// [MQTT-3.1.2-23]: with a non-zero Session Expiry Interval the session (subscriptions and
/// QoS 1 messages published meanwhile) outlives the connection, and a reconnect with Clean
/// Start = 0 resumes it with Session Present = 1.
#[tokio::test]
async fn mqtt_3_1_2_23_session_kept_for_the_interval_and_resumed() {
    let b = start().await;
    let (mut s, ack) = Client::connect_with(b.addr, with_expiry("se-keep", 30, true)).await;
    assert!(!ack.session_present);
    s.subscribe("se/keep", QoS::AtLeastOnce).await;
    s.disconnect().await;

    let mut publ = Client::connect(b.addr, "se-keep-pub").await;
    for i in 0..3 {
        publ.publish("se/keep", format!("m{i}").as_bytes(), QoS::AtLeastOnce)
            .await;
    }

    let (mut s, ack) = Client::connect_with(b.addr, with_expiry("se-keep", 30, false)).await;
    assert!(ack.session_present, "[MQTT-3.2.2-2] session present = 1");
    for i in 0..3 {
        let p = s.next_publish_acked().await;
        assert_eq!(text(&p), format!("m{i}"));
    }
    // The subscription survived too.
    publ.publish("se/keep", b"live", QoS::AtLeastOnce).await;
    assert_eq!(text(&s.next_publish_acked().await), "live");
}

/// The same with rumqttc as the client: Session Expiry Interval 30, reconnect with clean start
/// off gets session present and the message queued while it was away.
#[tokio::test]
async fn mqtt_3_1_2_23_session_resume_rumqttc() {
    let b = start().await;
    let mk = |clean: bool| {
        let mut o = rumq::options(b.addr, "se-rumq");
        o.set_clean_start(clean);
        o.set_session_expiry_interval(Some(30));
        o
    };
    let mut c = rumq::spawn(mk(true));
    assert!(!c.connack().await.session_present);
    c.client
        .subscribe("se/rq", RQoS::AtLeastOnce)
        .await
        .unwrap();
    c.suback().await;
    c.client.disconnect().await.unwrap();
    drop(c);
    b.wait_until("the rumqttc client is gone", |s| {
        s.metrics().clients_connected.get() == 0
    })
    .await;

    let mut publ = Client::connect(b.addr, "se-rq-pub").await;
    publ.publish("se/rq", b"queued", QoS::AtLeastOnce).await;

    let mut c = rumq::spawn(mk(false));
    assert!(c.connack().await.session_present);
    let p = c.publish().await;
    assert_eq!(&p.payload[..], b"queued");
}

/// [MQTT-3.1.2-23]: once the interval has passed without a reconnect the session is discarded:
/// a reconnect gets Session Present = 0 and no longer has the subscription.
#[tokio::test]
async fn mqtt_3_1_2_23_session_discarded_after_the_interval() {
    let b = start().await;
    let (mut s, _) = Client::connect_with(b.addr, with_expiry("se-gone", 1, true)).await;
    s.subscribe("se/gone", QoS::AtLeastOnce).await;
    let left = Instant::now();
    s.disconnect().await;
    b.wait_until("the session expired", |st| st.session_count() == 0)
        .await;
    assert!(
        left.elapsed() >= Duration::from_millis(900),
        "session discarded after {:?}, before its 1 s interval",
        left.elapsed()
    );

    let (mut s, ack) = Client::connect_with(b.addr, with_expiry("se-gone", 1, false)).await;
    assert!(!ack.session_present, "expired session must not be present");
    let mut publ = Client::connect(b.addr, "se-gone-pub").await;
    publ.publish("se/gone", b"lost", QoS::AtLeastOnce).await;
    s.expect_nothing("the subscription ended with the session")
        .await;
    s.subscribe("se/marker", QoS::AtLeastOnce).await;
    publ.publish("se/marker", b"marker", QoS::AtLeastOnce).await;
    assert_eq!(text(&s.next_publish_acked().await), "marker");
}

/// Session Expiry Interval absent (0): the session ends with the connection [MQTT-3.1.2-23]
/// even with Clean Start = 0.
#[tokio::test]
async fn mqtt_3_1_2_23_expiry_absent_session_ends_with_connection() {
    let b = start().await;
    let mut c = connect_packet("se-zero");
    c.clean_start = false;
    let (mut s, _) = Client::connect_with(b.addr, c.clone()).await;
    s.subscribe("se/zero", QoS::AtLeastOnce).await;
    s.disconnect().await;
    let (_s, ack) = Client::connect_with(b.addr, c).await;
    assert!(!ack.session_present);
}

/// DISCONNECT may lower a non-zero Session Expiry Interval to 0, which ends the session at once
/// (§3.14.2.2.2; the statement has no normative number).
#[tokio::test]
async fn disconnect_may_set_expiry_to_zero() {
    let b = start().await;
    let (mut s, _) = Client::connect_with(b.addr, with_expiry("se-down", 60, true)).await;
    s.subscribe("se/down", QoS::AtLeastOnce).await;
    let mut d = Disconnect::new(ReasonCode::SUCCESS);
    d.properties.session_expiry_interval = Some(0);
    s.disconnect_with(d).await;
    s.expect_closed("after DISCONNECT").await;
    let (_s, ack) = Client::connect_with(b.addr, with_expiry("se-down", 60, false)).await;
    assert!(!ack.session_present, "DISCONNECT set the expiry to 0");
}

/// A DISCONNECT that sets a non-zero Session Expiry Interval when CONNECT had 0 is a Protocol
/// Error: the server answers DISCONNECT 0x82 (§3.14.2.2.2, no normative number; [MQTT-3.14.2-2]
/// is the different rule that a server never sends the property).
#[tokio::test]
async fn disconnect_changing_expiry_from_zero_is_protocol_error() {
    let b = start().await;
    let mut s = Client::connect(b.addr, "se-err").await;
    let mut d = Disconnect::new(ReasonCode::SUCCESS);
    d.properties.session_expiry_interval = Some(60);
    s.disconnect_with(d).await;
    s.expect_disconnect(ReasonCode::PROTOCOL_ERROR, "expiry changed from 0")
        .await;
    // And the session was not kept.
    let (_s, ack) = Client::connect_with(b.addr, with_expiry("se-err", 60, false)).await;
    assert!(!ack.session_present);
}

// ---------------------------------------------------------------------------------------------
// Receive Maximum
// ---------------------------------------------------------------------------------------------

/// [MQTT-3.3.4-9]: the server never has more unacknowledged QoS 1/2 PUBLISH in flight to a
/// client than the client's Receive Maximum. Receive Maximum 2, five queued messages: exactly
/// two arrive; each acknowledgement lets exactly one more through.
#[tokio::test]
async fn mqtt_3_3_4_9_client_receive_maximum_honoured() {
    let b = start().await;
    let mut c = connect_packet("rm-sub");
    c.properties.receive_maximum = Some(2);
    let (mut sub, _) = Client::connect_with(b.addr, c).await;
    sub.subscribe("rm/t", QoS::ExactlyOnce).await;

    let mut publ = Client::connect(b.addr, "rm-pub").await;
    for i in 0..5 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        publ.publish("rm/t", format!("m{i}").as_bytes(), qos).await;
    }

    let first = sub.next_publish().await;
    let second = sub.next_publish().await;
    assert_eq!((text(&first), text(&second)), ("m0".into(), "m1".into()));
    sub.expect_nothing("a third PUBLISH beyond Receive Maximum 2")
        .await;

    // PUBACK m0: exactly one more (m2) may come.
    sub.send(&puback(first.packet_id, ReasonCode::SUCCESS))
        .await;
    let third = sub.next_publish().await;
    assert_eq!(text(&third), "m2");
    sub.expect_nothing("a fourth PUBLISH beyond Receive Maximum 2")
        .await;

    // QoS 2 m1: PUBREC keeps it in flight (PUBREL), only PUBCOMP frees the slot [MQTT-4.9.0-2].
    sub.send(&Packet::PubRec(starling::codec::PubResp::new(
        second.packet_id,
    )))
    .await;
    match sub.next().await {
        Packet::PubRel(r) => assert_eq!(r.packet_id, second.packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    sub.expect_nothing("no new PUBLISH before PUBCOMP").await;
    sub.send(&Packet::PubComp(starling::codec::PubResp::new(
        second.packet_id,
    )))
    .await;
    let fourth = sub.next_publish().await;
    assert_eq!(text(&fourth), "m3");
    sub.send(&puback(third.packet_id, ReasonCode::SUCCESS))
        .await;
    let fifth = sub.next_publish().await;
    assert_eq!(text(&fifth), "m4");
}

/// [MQTT-4.9.0-2] on a resume: six QoS 1 messages are in flight when the client goes, and it
/// comes back with Receive Maximum 2. Two are sent again (DUP, with their packet ids
/// [MQTT-4.4.0-1]); each acknowledgement lets one more through, in order (chaos round h10:
/// all six were sent at once).
#[tokio::test]
async fn mqtt_4_9_0_2_receive_maximum_honoured_when_resending() {
    let b = start().await;
    let mut c = connect_packet("rr-sub");
    c.properties.session_expiry_interval = Some(60);
    let (mut sub, _) = Client::connect_with(b.addr, c).await;
    sub.subscribe("rr/t", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(b.addr, "rr-pub").await;
    for i in 0..6 {
        publ.publish("rr/t", format!("m{i}").as_bytes(), QoS::AtLeastOnce)
            .await;
    }
    let mut pids = Vec::new();
    for _ in 0..6 {
        pids.push(sub.next_publish().await.packet_id);
    }
    drop(sub);

    let mut c = connect_packet("rr-sub");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    c.properties.receive_maximum = Some(2);
    let (mut sub, ack) = Client::connect_with(b.addr, c).await;
    assert!(ack.session_present);
    let mut outstanding = std::collections::VecDeque::new();
    for _ in 0..2 {
        outstanding.push_back(sub.next_publish().await);
    }
    for (i, pid) in pids.iter().enumerate() {
        let p = outstanding.pop_front().expect("one in flight");
        assert_eq!(text(&p), format!("m{i}"));
        assert!(p.dup, "a resend has DUP set [MQTT-3.3.1-1]");
        assert_eq!(p.packet_id, *pid, "a resend keeps its packet id");
        sub.expect_nothing("a resend beyond Receive Maximum 2")
            .await;
        sub.send(&puback(p.packet_id, ReasonCode::SUCCESS)).await;
        if i + 2 < 6 {
            outstanding.push_back(sub.next_publish().await);
        }
    }
    sub.expect_nothing("no seventh message").await;
}

/// Server Receive Maximum: `mqtt.receive_maximum` is announced in CONNACK (§3.2.2.3.3) and a
/// client that ignores it, sending more unacknowledged QoS 2 PUBLISH than that, breaks
/// [MQTT-3.3.4-7] and is disconnected with 0x93 Receive Maximum exceeded (§3.3.4).
#[tokio::test]
async fn mqtt_3_3_4_7_server_receive_maximum_announced_and_enforced_0x93() {
    let mut cfg = config();
    cfg.mqtt.receive_maximum = 2;
    let b = start_with(cfg).await;
    let (mut c, ack) = Client::connect_with(b.addr, connect_packet("srm")).await;
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for pid in 1..=3u16 {
        c.send(&Packet::Publish(publish(
            "rm/t",
            b"x",
            QoS::ExactlyOnce,
            pid,
        )))
        .await;
    }
    // Two PUBRECs (never released), then 0x93 for the third.
    for pid in 1..=2u16 {
        match c.next().await {
            Packet::PubRec(r) => assert_eq!(r.packet_id, pid),
            other => panic!("expected PUBREC {pid}, got {other:?}"),
        }
    }
    c.expect_disconnect(
        ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
        "third unreleased QoS 2",
    )
    .await;

    // Default 65535: the property is omitted (absent means 65535).
    let b = start().await;
    let (_c, ack) = Client::connect_with(b.addr, connect_packet("srm-default")).await;
    assert_eq!(ack.properties.receive_maximum, None);
}

// ---------------------------------------------------------------------------------------------
// Maximum Packet Size
// ---------------------------------------------------------------------------------------------

/// [MQTT-3.1.2-24]: the server must not send a packet larger than the client's Maximum Packet
/// Size; [MQTT-3.1.2-25]: it discards the message as if sent. Later, smaller messages are delivered, and the
/// discarded one does not hold an inflight slot (Receive Maximum 1).
#[tokio::test]
async fn mqtt_3_1_2_24_25_client_maximum_packet_size() {
    let b = start().await;
    let mut c = connect_packet("mps-sub");
    c.properties.maximum_packet_size = Some(100);
    c.properties.receive_maximum = Some(1);
    let (mut sub, _) = Client::connect_with(b.addr, c).await;
    sub.subscribe("mps/t", QoS::AtLeastOnce).await;

    let mut publ = Client::connect(b.addr, "mps-pub").await;
    publ.publish("mps/t", &[b'x'; 200], QoS::AtLeastOnce).await;
    publ.publish("mps/t", &[b'y'; 200], QoS::AtMostOnce).await;
    publ.publish("mps/t", b"small-1", QoS::AtLeastOnce).await;
    let p = sub.next_publish().await;
    assert_eq!(text(&p), "small-1", "oversized messages must be skipped");
    sub.send(&puback(p.packet_id, ReasonCode::SUCCESS)).await;

    // The limit counts the whole packet: 100 bytes exactly is allowed, 101 is not.
    // Fixed header 2 + topic 2+5 + packet id 2 + property length 1 = 12 bytes of overhead.
    publ.publish("mps/t", &[b'a'; 89], QoS::AtLeastOnce).await;
    publ.publish("mps/t", &[b'b'; 88], QoS::AtLeastOnce).await;
    let p = sub.next_publish().await;
    assert_eq!(p.payload.len(), 88, "101-byte PUBLISH must not be sent");
    assert_eq!(p.payload[0], b'b');
    sub.send(&puback(p.packet_id, ReasonCode::SUCCESS)).await;
    publ.publish("mps/t", b"small-2", QoS::AtLeastOnce).await;
    assert_eq!(text(&sub.next_publish_acked().await), "small-2");
}

/// Sends CONNECT and expects the broker to close the connection without any CONNACK.
async fn closed_without_connack(
    addr: std::net::SocketAddr,
    c: starling::codec::Connect,
    why: &str,
) {
    let mut cl = Client::open(addr, &c.client_id).await;
    cl.send(&Packet::Connect(Box::new(c))).await;
    cl.expect_closed(why).await;
}

/// Issue 13 item 8, [MQTT-3.2.2-19] / [MQTT-3.2.2-20] / [MQTT-3.1.2-24]: a CONNACK larger than
/// the client's Maximum Packet Size is not sent. Only its Reason String and User Properties may
/// be left out to make it fit; Starling's accepting CONNACK has neither, so with Maximum Packet
/// Size 2 (or one byte short of the CONNACK) the connection is closed without a CONNACK, and
/// the session it asked for is not taken over. One byte more and it is sent.
#[tokio::test]
async fn mqtt_3_2_2_19_connack_over_client_maximum_packet_size_is_not_sent() {
    let b = start().await;
    // The CONNACK this broker sends with the default configuration, and its size.
    let (_probe, ack) = Client::connect_with(b.addr, connect_packet("mps-probe")).await;
    let size = encode(&Packet::ConnAck(ack), starling::codec::ProtocolVersion::V5).len();

    let mut owner = Client::connect(b.addr, "mps-small").await;
    for max in [2, size as u32 - 1] {
        let mut c = connect_packet("mps-small");
        c.clean_start = false;
        c.properties.maximum_packet_size = Some(max);
        closed_without_connack(b.addr, c, &format!("CONNACK of {size} bytes > max {max}")).await;
    }
    // The session was not taken over: its connection is still served.
    owner.send(&Packet::PingReq).await;
    assert_eq!(owner.next().await, Packet::PingResp);
    assert_eq!(b.state().metrics().refused_connections.get(), 2);

    let mut c = connect_packet("mps-exact");
    c.properties.maximum_packet_size = Some(size as u32);
    Client::connect_with(b.addr, c).await;
}

/// Issue 13 item 8 for refusals: a refusing CONNACK carries a Reason String saying why, which
/// is left out when it would exceed the client's Maximum Packet Size [MQTT-3.2.2-19]; when even
/// the bare 5-byte CONNACK does not fit, the connection is closed without one.
#[tokio::test]
async fn mqtt_3_2_2_19_refusing_connack_drops_its_reason_string_to_fit() {
    let b = start().await;
    let refused = |max: Option<u32>| {
        let mut c = connect_packet("mps-refused");
        c.properties.authentication_method = Some("no-such-method".into());
        c.properties.maximum_packet_size = max;
        c
    };
    let (_c, ack) = Client::connect_raw(b.addr, refused(None)).await;
    assert_eq!(ack.code, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert!(ack.properties.reason_string.is_some(), "{ack:?}");

    // 5 bytes: fixed header 2, flags 1, reason code 1, property length 1.
    let (mut c, ack) = Client::connect_raw(b.addr, refused(Some(5))).await;
    assert_eq!(ack.code, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert_eq!(ack.properties, Default::default(), "[MQTT-3.2.2-19]");
    c.expect_closed("refused").await;

    closed_without_connack(b.addr, refused(Some(4)), "a 5-byte CONNACK > max 4").await;
}

// ---------------------------------------------------------------------------------------------
// CONNACK properties
// ---------------------------------------------------------------------------------------------

/// CONNACK announces Topic Alias Maximum (= mqtt.max_topic_alias) and Maximum Packet Size; with
/// max_topic_alias = 0 it sends no Topic Alias Maximum (0, [MQTT-3.2.2-17]) and any alias is
/// invalid (0x94).
#[tokio::test]
async fn mqtt_3_2_2_17_topic_alias_maximum_announced() {
    let b = start().await;
    let (_c, ack) = Client::connect_with(b.addr, connect_packet("tam")).await;
    assert_eq!(ack.properties.topic_alias_maximum, Some(10));
    assert_eq!(ack.properties.maximum_packet_size, Some(1_048_576));

    let mut cfg = config();
    cfg.mqtt.max_topic_alias = 0;
    let b = start_with(cfg).await;
    let (mut c, ack) = Client::connect_with(b.addr, connect_packet("tam0")).await;
    assert!(
        ack.properties.topic_alias_maximum.unwrap_or(0) == 0,
        "{:?}",
        ack.properties
    );
    let mut p = publish("tam/t", b"x", QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(1);
    c.send(&Packet::Publish(p)).await;
    c.expect_disconnect(ReasonCode::TOPIC_ALIAS_INVALID, "alias while maximum is 0")
        .await;
}

/// [MQTT-3.2.2-16]: a zero-length client id gets an Assigned Client Identifier, unique per
/// connection, that the client can then use.
#[tokio::test]
async fn mqtt_3_2_2_16_assigned_client_identifier() {
    let b = start().await;
    let (mut a, ack_a) = Client::connect_with(b.addr, connect_packet("")).await;
    let (_b2, ack_b) = Client::connect_with(b.addr, connect_packet("")).await;
    let id_a = ack_a
        .properties
        .assigned_client_identifier
        .clone()
        .expect("CONNACK Assigned Client Identifier");
    let id_b = ack_b
        .properties
        .assigned_client_identifier
        .clone()
        .expect("CONNACK Assigned Client Identifier");
    assert!(!id_a.is_empty());
    assert_ne!(id_a, id_b, "assigned identifiers must be unique");
    // A named client gets none.
    let (_n, ack) = Client::connect_with(b.addr, connect_packet("named")).await;
    assert_eq!(ack.properties.assigned_client_identifier, None);

    // The assigned id is the session's id: connecting with it takes the session over.
    let (_again, _) = Client::connect_with(b.addr, connect_packet(&id_a)).await;
    a.expect_disconnect(ReasonCode::SESSION_TAKEN_OVER, "same (assigned) id")
        .await;
}

/// [MQTT-3.2.2-21]: when `max_keepalive` is below the client's Keep Alive (or the client asked
/// for 0, no keep alive) the server sends Server Keep Alive and uses it: a client silent for
/// 1.5 × the server's value is disconnected with 0x8D.
#[tokio::test]
async fn mqtt_3_2_2_21_server_keep_alive() {
    let mut cfg = config();
    cfg.mqtt.max_keepalive = 1;
    let b = start_with(cfg).await;

    let mut c = connect_packet("ska-0");
    c.keep_alive = 0;
    let (_c0, ack) = Client::connect_with(b.addr, c).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1), "keep alive 0");

    let mut c = connect_packet("ska-1");
    c.keep_alive = 1;
    let (_c1, ack) = Client::connect_with(b.addr, c).await;
    assert_eq!(
        ack.properties.server_keep_alive, None,
        "keep alive within the maximum needs no Server Keep Alive"
    );

    let mut c = connect_packet("ska-60");
    c.keep_alive = 60;
    let (mut c60, ack) = Client::connect_with(b.addr, c).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    let t0 = Instant::now();
    c60.expect_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT, "server keep alive 1 s")
        .await;
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "disconnected after {waited:?}; expected about 1.5 s (server keep alive 1 s, not 60 s)"
    );
}

/// [MQTT-3.2.2-9]/[MQTT-3.2.2-11]: with max_qos = 1 CONNACK says Maximum QoS 1, a subscription
/// at QoS 2 is granted QoS 1, and a QoS 2 PUBLISH gets DISCONNECT 0x9B.
#[tokio::test]
async fn mqtt_3_2_2_11_maximum_qos_1() {
    let mut cfg = config();
    cfg.mqtt.max_qos = 1;
    let b = start_with(cfg).await;
    let (mut c, ack) = Client::connect_with(b.addr, connect_packet("mq1")).await;
    assert_eq!(ack.properties.maximum_qos, Some(1));
    let sa = c
        .subscribe_with(&[("mq/t", opts(QoS::ExactlyOnce))], Properties::default())
        .await;
    assert_eq!(sa.reasons, vec![ReasonCode::GRANTED_QOS_1]);
    c.publish("mq/t", b"q1", QoS::AtLeastOnce).await;
    let p = c.next_publish_acked().await;
    assert_eq!(p.qos, QoS::AtLeastOnce);

    let pid = c.pid();
    c.send(&Packet::Publish(publish(
        "mq/t",
        b"q2",
        QoS::ExactlyOnce,
        pid,
    )))
    .await;
    c.expect_disconnect(ReasonCode::QOS_NOT_SUPPORTED, "QoS 2 above Maximum QoS 1")
        .await;

    // A will at QoS 2 is refused in CONNACK (0x9B) [MQTT-3.2.2-12].
    let mut w = connect_packet("mq1-will");
    w.will = Some(will(
        "mq/will",
        b"w",
        QoS::ExactlyOnce,
        Properties::default(),
    ));
    let (_c, ack) = Client::connect_raw(b.addr, w).await;
    assert_eq!(ack.code, ReasonCode::QOS_NOT_SUPPORTED);
}

/// [MQTT-3.2.2-14]: with retain_available = false CONNACK says Retain Available 0 and a
/// retained PUBLISH gets DISCONNECT 0x9A.
#[tokio::test]
async fn mqtt_3_2_2_14_retain_not_available() {
    let mut cfg = config();
    cfg.mqtt.retain_available = false;
    let b = start_with(cfg).await;
    let (mut c, ack) = Client::connect_with(b.addr, connect_packet("ra0")).await;
    assert_eq!(ack.properties.retain_available, Some(0));
    c.publish("ra/t", b"plain is fine", QoS::AtLeastOnce).await;
    let mut p = publish("ra/t", b"r", QoS::AtLeastOnce, c.pid());
    p.retain = true;
    c.send(&Packet::Publish(p)).await;
    c.expect_disconnect(ReasonCode::RETAIN_NOT_SUPPORTED, "retained PUBLISH")
        .await;

    // Default: Retain Available is absent (1).
    let b = start().await;
    let (_c, ack) = Client::connect_with(b.addr, connect_packet("ra1")).await;
    assert!(ack.properties.retain_available.unwrap_or(1) == 1);
}

/// Wildcard Subscription Available = 0: plain filters work, and a SUBSCRIBE with a wildcard
/// filter is a Protocol Error answered with DISCONNECT 0xA2 (§3.2.2.3.11, no normative number).
/// (This test used to pin SUBACK 0xA2, which the spec keeps for a server that does support
/// wildcards but refuses one.)
#[tokio::test]
async fn wildcard_subscription_available_0_disconnect_0xa2() {
    let mut cfg = config();
    cfg.mqtt.wildcard_subscriptions = false;
    let b = start_with(cfg).await;
    let (mut c, ack) = Client::connect_with(b.addr, connect_packet("wsa")).await;
    assert_eq!(ack.properties.wildcard_subscription_available, Some(0));
    let sa = c
        .subscribe_with(
            &[("w/plain", opts(QoS::AtLeastOnce))],
            Properties::default(),
        )
        .await;
    assert_eq!(sa.reasons, vec![ReasonCode::GRANTED_QOS_1]);
    let pid = c.pid();
    let filters = [
        ("w/plain2", opts(QoS::AtMostOnce)),
        ("w/+", opts(QoS::AtMostOnce)),
    ];
    c.send(&subscribe(pid, &filters, Properties::default()))
        .await;
    c.expect_disconnect(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED, "w/+")
        .await;
}

/// Subscription Identifier Available = 0: a SUBSCRIBE without one works, one with an identifier
/// is a Protocol Error answered with DISCONNECT 0xA1 (§3.2.2.3.12; used to pin SUBACK 0xA1).
#[tokio::test]
async fn subscription_identifier_available_0_disconnect_0xa1() {
    let mut cfg = config();
    cfg.mqtt.subscription_identifiers = false;
    let b = start_with(cfg).await;
    let (mut c, ack) = Client::connect_with(b.addr, connect_packet("sia")).await;
    assert_eq!(ack.properties.subscription_identifier_available, Some(0));
    let sa = c
        .subscribe_with(&[("s/t", opts(QoS::AtLeastOnce))], Properties::default())
        .await;
    assert_eq!(sa.reasons, vec![ReasonCode::GRANTED_QOS_1]);
    let pid = c.pid();
    c.send(&subscribe(
        pid,
        &[("s/u", opts(QoS::AtLeastOnce))],
        sub_id(7),
    ))
    .await;
    c.expect_disconnect(ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED, "id 7")
        .await;
}

/// Shared Subscription Available = 0: a SUBSCRIBE to `$share/...` is a Protocol Error answered
/// with DISCONNECT 0x9E (§3.2.2.3.13; used to pin SUBACK 0x9E), and none of its filters is
/// subscribed.
#[tokio::test]
async fn shared_subscription_available_0_disconnect_0x9e() {
    let mut cfg = config();
    cfg.mqtt.shared_subscriptions = false;
    let b = start_with(cfg).await;
    let (mut c, ack) = Client::connect_with(b.addr, connect_packet("ssa")).await;
    assert_eq!(ack.properties.shared_subscription_available, Some(0));
    let pid = c.pid();
    let filters = [
        ("s/t", opts(QoS::AtLeastOnce)),
        ("$share/g/s/t", opts(QoS::AtLeastOnce)),
    ];
    c.send(&subscribe(pid, &filters, Properties::default()))
        .await;
    c.expect_disconnect(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED, "$share")
        .await;
    assert_eq!(b.state().subscription_count(), 0, "s/t was not subscribed");
}

/// By default every feature is available: the flags are absent (meaning 1) or 1.
#[tokio::test]
async fn default_connack_announces_features_available() {
    let b = start().await;
    let (_c, ack) = Client::connect_with(b.addr, connect_packet("feat")).await;
    let p = &ack.properties;
    for (name, v) in [
        (
            "Wildcard Subscription Available",
            p.wildcard_subscription_available,
        ),
        (
            "Subscription Identifier Available",
            p.subscription_identifier_available,
        ),
        (
            "Shared Subscription Available",
            p.shared_subscription_available,
        ),
        ("Retain Available", p.retain_available),
    ] {
        assert!(v.unwrap_or(1) == 1, "{name} = {v:?}");
    }
    assert_eq!(p.maximum_qos, None, "Maximum QoS absent means 2");
}

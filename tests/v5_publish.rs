//! MQTT 5.0 PUBLISH features: Message Expiry Interval, Topic Aliases in both directions and
//! Subscription Identifiers.

#[path = "v5_support.rs"]
mod support;

use std::time::Duration;

use starling::codec::{Packet, Properties, QoS, ReasonCode};
use support::*;

fn persistent(id: &str, clean_start: bool) -> starling::codec::Connect {
    let mut c = connect_packet(id);
    c.clean_start = clean_start;
    c.properties.session_expiry_interval = Some(60);
    c
}

fn with_expiry(topic: &str, payload: &[u8], qos: QoS, secs: u32) -> starling::codec::Publish {
    let mut p = publish(topic, payload, qos, 0);
    p.properties.message_expiry_interval = Some(secs);
    p
}

// ---------------------------------------------------------------------------------------------
// Message Expiry Interval
// ---------------------------------------------------------------------------------------------

/// [MQTT-3.3.2-5]: a message whose expiry interval passed while it was queued for an offline
/// session is not delivered; messages without expiry queued around it are.
#[tokio::test]
async fn mqtt_3_3_2_5_expired_queued_message_not_delivered() {
    let b = start().await;
    let (mut s, _) = Client::connect_with(b.addr, persistent("mx-sub", true)).await;
    s.subscribe("mx/t", QoS::AtLeastOnce).await;
    s.disconnect().await;

    let mut publ = Client::connect(b.addr, "mx-pub").await;
    publ.publish("mx/t", b"before", QoS::AtLeastOnce).await;
    publ.publish_packet(with_expiry("mx/t", b"expires", QoS::AtLeastOnce, 1))
        .await;
    publ.publish_packet(with_expiry("mx/t", b"lasts", QoS::AtLeastOnce, 60))
        .await;
    publ.publish("mx/t", b"after", QoS::AtLeastOnce).await;
    // Let the 1 s interval pass while the subscriber is away.
    tokio::time::sleep(Duration::from_millis(1300)).await;

    let (mut s, ack) = Client::connect_with(b.addr, persistent("mx-sub", false)).await;
    assert!(ack.session_present);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(text(&s.next_publish_acked().await));
    }
    assert_eq!(got, ["before", "lasts", "after"]);
    s.expect_nothing("the expired message").await;
}

/// [MQTT-3.3.2-6]: the forwarded Message Expiry Interval is the received value minus the time
/// the message waited in the server. Delivered at once it is (about) the original value.
#[tokio::test]
async fn mqtt_3_3_2_6_forwarded_expiry_reduced_by_time_waited() {
    let b = start().await;
    let (mut s, _) = Client::connect_with(b.addr, persistent("mxr-sub", true)).await;
    s.subscribe("mxr/t", QoS::AtLeastOnce).await;

    let mut publ = Client::connect(b.addr, "mxr-pub").await;
    publ.publish_packet(with_expiry("mxr/t", b"now", QoS::AtLeastOnce, 10))
        .await;
    let p = s.next_publish_acked().await;
    let now = p
        .properties
        .message_expiry_interval
        .expect("expiry forwarded");
    assert!((9..=10).contains(&now), "immediate delivery: {now}");

    s.disconnect().await;
    publ.publish_packet(with_expiry("mxr/t", b"later", QoS::AtLeastOnce, 10))
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut s, _) = Client::connect_with(b.addr, persistent("mxr-sub", false)).await;
    let p = s.next_publish_acked().await;
    assert_eq!(text(&p), "later");
    let left = p
        .properties
        .message_expiry_interval
        .expect("expiry forwarded");
    assert!(
        (5..=8).contains(&left),
        "waited about 2.1 s of 10: forwarded interval {left}, expected 8 (7..8 at worst)"
    );
}

/// Retained messages keep counting down too, and an expired retained message is no longer sent
/// to new subscribers [MQTT-3.3.2-5].
#[tokio::test]
async fn mqtt_3_3_2_5_expired_retained_message_not_delivered() {
    let b = start().await;
    let mut publ = Client::connect(b.addr, "mxret-pub").await;
    let mut p = with_expiry("mxret/short", b"short", QoS::AtLeastOnce, 1);
    p.retain = true;
    publ.publish_packet(p).await;
    let mut p = with_expiry("mxret/long", b"long", QoS::AtLeastOnce, 60);
    p.retain = true;
    publ.publish_packet(p).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut s = Client::connect(b.addr, "mxret-sub").await;
    s.subscribe("mxret/#", QoS::AtLeastOnce).await;
    let p = s.next_publish_acked().await;
    assert_eq!(text(&p), "long");
    let left = p.properties.message_expiry_interval.unwrap();
    assert!(
        (57..=59).contains(&left),
        "retained expiry forwarded as {left}"
    );
    s.expect_nothing("the expired retained message").await;
}

// ---------------------------------------------------------------------------------------------
// Topic aliases, client to server
// ---------------------------------------------------------------------------------------------

/// [MQTT-3.3.2-12]: a PUBLISH with a topic and an alias sets the alias; a later PUBLISH with an
/// empty topic and that alias is routed to the topic; a new topic with the same alias replaces
/// the mapping. Subscribers never see the alias of the publisher's connection [MQTT-3.3.2-7].
#[tokio::test]
async fn mqtt_3_3_2_12_topic_alias_set_then_used() {
    let b = start().await;
    let mut sub = Client::connect(b.addr, "ta-sub").await;
    sub.subscribe("ta/#", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(b.addr, "ta-pub").await;

    let mut p = publish("ta/one", b"1", QoS::AtLeastOnce, 0);
    p.properties.topic_alias = Some(3);
    publ.publish_packet(p).await;
    let mut p = publish("", b"2", QoS::AtLeastOnce, 0);
    p.properties.topic_alias = Some(3);
    publ.publish_packet(p).await;
    let mut p = publish("ta/two", b"3", QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(3);
    publ.publish_packet(p).await;
    let mut p = publish("", b"4", QoS::ExactlyOnce, 0);
    p.properties.topic_alias = Some(3);
    publ.publish_packet(p).await;
    // The maximum (10) is a valid alias.
    let mut p = publish("ta/ten", b"5", QoS::AtLeastOnce, 0);
    p.properties.topic_alias = Some(10);
    publ.publish_packet(p).await;
    let mut p = publish("", b"6", QoS::AtLeastOnce, 0);
    p.properties.topic_alias = Some(10);
    publ.publish_packet(p).await;

    let expected = [
        ("ta/one", "1"),
        ("ta/one", "2"),
        ("ta/two", "3"),
        ("ta/two", "4"),
        ("ta/ten", "5"),
        ("ta/ten", "6"),
    ];
    for (topic, payload) in expected {
        let p = sub.next_publish_acked().await;
        assert_eq!((&*p.topic, text(&p).as_str()), (topic, payload));
        assert_eq!(p.properties.topic_alias, None, "alias leaked to subscriber");
    }
}

/// A Topic Alias of 0 ([MQTT-3.3.2-8]) or above the Topic Alias Maximum of the server's
/// CONNACK ([MQTT-3.3.2-9]) → DISCONNECT 0x94 Topic Alias invalid (§3.3.2.3.4).
#[tokio::test]
async fn mqtt_3_3_2_8_9_invalid_topic_alias_0x94() {
    let b = start().await;
    for alias in [0u16, 11, u16::MAX] {
        let mut c = Client::connect(b.addr, &format!("tai-{alias}")).await;
        let mut p = publish("tai/t", b"x", QoS::AtMostOnce, 0);
        p.properties.topic_alias = Some(alias);
        c.send(&Packet::Publish(p)).await;
        c.expect_disconnect(
            ReasonCode::TOPIC_ALIAS_INVALID,
            &format!("topic alias {alias} (maximum 10)"),
        )
        .await;
    }
}

/// [MQTT-3.3.4-6]: a PUBLISH from a client must not carry a Subscription Identifier; one that
/// does is a Protocol Error (0x82). (Mosquitto 2.0 accepts it; chaos round h10.)
#[tokio::test]
async fn mqtt_3_3_4_6_subscription_identifier_from_the_client_protocol_error() {
    let b = start().await;
    let mut c = Client::connect(b.addr, "subid-pub").await;
    let mut p = publish("sid/t", b"x", QoS::AtLeastOnce, 1);
    p.properties.subscription_identifiers = vec![7];
    c.send(&Packet::Publish(p)).await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR, "subscription identifier")
        .await;
}

/// An empty topic with an alias the client never set is a Protocol Error (0x82)
/// (§3.3.2.3.4; the statement has no normative number).
#[tokio::test]
async fn unknown_topic_alias_with_empty_topic_protocol_error() {
    let b = start().await;
    let mut c = Client::connect(b.addr, "tau").await;
    let mut p = publish("", b"x", QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(2);
    c.send(&Packet::Publish(p)).await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR, "alias 2 never set")
        .await;
}

/// Topic aliases are per connection [MQTT-3.3.2-7]: after a reconnect an alias set on the old
/// connection is unknown.
#[tokio::test]
async fn mqtt_3_3_2_7_topic_aliases_do_not_survive_reconnect() {
    let b = start().await;
    let (mut c, _) = Client::connect_with(b.addr, persistent("tar", true)).await;
    let mut p = publish("tar/t", b"x", QoS::AtLeastOnce, 0);
    p.properties.topic_alias = Some(1);
    c.publish_packet(p).await;
    c.disconnect().await;
    let (mut c, _) = Client::connect_with(b.addr, persistent("tar", false)).await;
    let mut p = publish("", b"y", QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(1);
    c.send(&Packet::Publish(p)).await;
    c.expect_disconnect(ReasonCode::PROTOCOL_ERROR, "alias from the old connection")
        .await;
}

// ---------------------------------------------------------------------------------------------
// Topic aliases, server to client
// ---------------------------------------------------------------------------------------------

/// Server-to-client aliases, when the client allows them (Topic Alias Maximum 5): the first
/// PUBLISH on a topic carries the topic and an alias in 1..=5; the second on the same topic
/// carries the alias and an empty topic (§3.3.2.3.4); never an alias above the client's
/// maximum [MQTT-3.3.2-11] [MQTT-3.1.2-26].
#[tokio::test]
async fn mqtt_3_3_2_11_server_to_client_topic_alias() {
    let b = start().await;
    let mut c = connect_packet("tas-sub");
    c.properties.topic_alias_maximum = Some(5);
    let (mut sub, _) = Client::connect_with(b.addr, c).await;
    sub.subscribe("tas/#", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(b.addr, "tas-pub").await;

    publ.publish("tas/a", b"1", QoS::AtLeastOnce).await;
    let p1 = sub.next_publish_acked().await;
    assert_eq!(p1.topic, "tas/a".into());
    let alias = p1
        .properties
        .topic_alias
        .expect("first PUBLISH sets an alias");
    assert!((1..=5).contains(&alias), "alias {alias} beyond maximum 5");

    publ.publish("tas/a", b"2", QoS::AtLeastOnce).await;
    let p2 = sub.next_publish_acked().await;
    assert_eq!(text(&p2), "2");
    assert_eq!(
        p2.topic,
        "".into(),
        "second PUBLISH should use the alias alone"
    );
    assert_eq!(p2.properties.topic_alias, Some(alias));

    // Many topics: aliases stay within 1..=5, and whatever is sent can be resolved.
    let mut map: std::collections::HashMap<u16, std::sync::Arc<str>> = Default::default();
    map.insert(alias, "tas/a".into());
    for i in 0..12 {
        let topic = format!("tas/m{}", i % 7);
        publ.publish(&topic, i.to_string().as_bytes(), QoS::AtMostOnce)
            .await;
        let p = sub.next_publish().await;
        let resolved = match p.properties.topic_alias {
            Some(a) => {
                assert!((1..=5).contains(&a), "alias {a} beyond maximum 5");
                if p.topic.is_empty() {
                    map.get(&a).cloned().expect("alias used before being set")
                } else {
                    map.insert(a, p.topic.clone());
                    p.topic.clone()
                }
            }
            None => p.topic.clone(),
        };
        assert_eq!(&*resolved, topic, "message {i}");
    }
}

/// Without a Topic Alias Maximum from the client (0) the server sends no aliases
/// [MQTT-3.1.2-27].
#[tokio::test]
async fn mqtt_3_1_2_27_no_server_aliases_unless_allowed() {
    let b = start().await;
    let mut sub = Client::connect(b.addr, "tan-sub").await;
    sub.subscribe("tan/t", QoS::AtMostOnce).await;
    let mut publ = Client::connect(b.addr, "tan-pub").await;
    for i in 0..3 {
        publ.publish("tan/t", &[i], QoS::AtMostOnce).await;
        let p = sub.next_publish().await;
        assert_eq!(p.topic, "tan/t".into());
        assert_eq!(p.properties.topic_alias, None);
    }
}

// ---------------------------------------------------------------------------------------------
// Subscription Identifiers
// ---------------------------------------------------------------------------------------------

/// [MQTT-3.3.4-3]/[MQTT-3.3.4-4]/[MQTT-3.3.4-5]: overlapping subscriptions of one client give
/// one copy carrying the identifier of every matching subscription that has one.
#[tokio::test]
async fn mqtt_3_3_4_3_overlapping_subscriptions_one_copy_all_identifiers() {
    let b = start().await;
    let mut s = Client::connect(b.addr, "sid").await;
    for (filter, id) in [("sid/+/c", 1u32), ("sid/#", 2), ("sid/b/c", 268_435_455)] {
        let sa = s
            .subscribe_with(&[(filter, opts(QoS::AtLeastOnce))], sub_id(id))
            .await;
        assert_eq!(sa.reasons, vec![ReasonCode::GRANTED_QOS_1]);
    }
    // One without an identifier also matches: it adds none.
    s.subscribe("sid/b/+", QoS::AtMostOnce).await;

    let mut publ = Client::connect(b.addr, "sid-pub").await;
    publ.publish("sid/b/c", b"all", QoS::AtLeastOnce).await;
    let p = s.next_publish_acked().await;
    let mut ids = p.properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 268_435_455]);
    assert_eq!(p.qos, QoS::AtLeastOnce);

    publ.publish("sid/x", b"one", QoS::AtLeastOnce).await;
    let p = s.next_publish_acked().await;
    assert_eq!(text(&p), "one", "exactly one copy of the previous message");
    assert_eq!(p.properties.subscription_identifiers, vec![2]);
}

/// A subscription without an identifier yields PUBLISH without one; an identifier is also sent
/// with retained messages delivered on subscribe, and replacing a subscription replaces its
/// identifier.
#[tokio::test]
async fn subscription_identifier_absent_when_subscription_had_none() {
    let b = start().await;
    let mut publ = Client::connect(b.addr, "sidn-pub").await;
    let mut r = publish("sidn/ret", b"retained", QoS::AtLeastOnce, 0);
    r.retain = true;
    publ.publish_packet(r).await;

    let mut s = Client::connect(b.addr, "sidn").await;
    s.subscribe("sidn/plain", QoS::AtLeastOnce).await;
    publ.publish("sidn/plain", b"p", QoS::AtLeastOnce).await;
    let p = s.next_publish_acked().await;
    assert!(p.properties.subscription_identifiers.is_empty(), "{p:?}");

    s.subscribe_with(&[("sidn/ret", opts(QoS::AtLeastOnce))], sub_id(42))
        .await;
    let p = s.next_publish_acked().await;
    assert!(p.retain);
    assert_eq!(p.properties.subscription_identifiers, vec![42]);

    // Replace the subscription: new identifier 43.
    s.subscribe_with(
        &[(
            "sidn/ret",
            starling::codec::SubscriptionOptions {
                retain_handling: 2,
                ..opts(QoS::AtLeastOnce)
            },
        )],
        sub_id(43),
    )
    .await;
    publ.publish("sidn/ret", b"live", QoS::AtLeastOnce).await;
    let p = s.next_publish_acked().await;
    assert_eq!(text(&p), "live");
    assert_eq!(p.properties.subscription_identifiers, vec![43]);

    // Replace again without an identifier: none sent.
    s.subscribe_with(
        &[(
            "sidn/ret",
            starling::codec::SubscriptionOptions {
                retain_handling: 2,
                ..opts(QoS::AtLeastOnce)
            },
        )],
        Properties::default(),
    )
    .await;
    publ.publish("sidn/ret", b"live2", QoS::AtLeastOnce).await;
    let p = s.next_publish_acked().await;
    assert_eq!(text(&p), "live2");
    assert!(p.properties.subscription_identifiers.is_empty(), "{p:?}");
}

/// Topic aliases are per connection [MQTT-3.3.2-7]: a message resent after a reconnect (DUP)
/// carries its topic name, never an alias set on the old connection.
#[tokio::test]
async fn mqtt_3_3_2_7_resend_after_reconnect_carries_topic() {
    let b = start().await;
    let mut c = persistent("tasr-sub", true);
    c.properties.topic_alias_maximum = Some(5);
    let (mut sub, _) = Client::connect_with(b.addr, c.clone()).await;
    sub.subscribe("tasr/t", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(b.addr, "tasr-pub").await;
    publ.publish("tasr/t", b"1", QoS::AtLeastOnce).await;
    assert_eq!(sub.next_publish_acked().await.topic, "tasr/t".into());
    publ.publish("tasr/t", b"2", QoS::AtLeastOnce).await;
    let p = sub.next_publish().await; // not acknowledged
    assert_eq!((&*p.topic, text(&p).as_str()), ("", "2"));
    drop(sub);
    b.wait_until("the subscriber is offline", |s| {
        s.metrics().clients_connected.get() == 1
    })
    .await;

    c.clean_start = false;
    let (mut sub, ack) = Client::connect_with(b.addr, c).await;
    assert!(ack.session_present);
    let p = sub.next_publish_acked().await;
    assert!(p.dup, "resend must have DUP=1");
    assert_eq!(text(&p), "2");
    assert_eq!(p.topic, "tasr/t".into(), "resend must carry the topic name");
}

// ---------------------------------------------------------------------------------------------
// Acknowledgement codes
// ---------------------------------------------------------------------------------------------

/// PUBACK and PUBREC say 0x10 No matching subscribers when no subscription matched, which the
/// Server MAY send instead of 0x00 (3.4.2.1, 3.5.2.1), as Mosquitto does; 0x00 once one does.
/// 0x10 is below 0x80, so the flow continues: a QoS 2 PUBREC 0x10 is still released and
/// completed [MQTT-4.3.3-11]. A retained message nobody subscribes to yet is stored all the
/// same. A 3.1.1 PUBACK has no code.
#[tokio::test]
async fn no_matching_subscribers_0x10_then_success() {
    let b = start().await;
    let mut publ = Client::connect(b.addr, "nms-pub").await;
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let r = publ.publish_packet(publish("nms/t", b"x", qos, 0)).await;
        let r = r.expect("an acknowledgement");
        assert_eq!(r.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS, "{qos:?}");
    }
    let mut retained = publish("nms/r", b"kept", QoS::AtLeastOnce, 0);
    retained.retain = true;
    let r = publ.publish_packet(retained).await.expect("PUBACK");
    assert_eq!(r.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS);

    let mut sub = Client::connect(b.addr, "nms-sub").await;
    sub.subscribe("nms/#", QoS::AtLeastOnce).await;
    let p = sub.next_publish_acked().await;
    assert_eq!((&*p.topic, text(&p).as_str()), ("nms/r", "kept"));
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let r = publ.publish_packet(publish("nms/t", b"y", qos, 0)).await;
        assert_eq!(r.expect("an acknowledgement").reason, ReasonCode::SUCCESS);
        assert_eq!(text(&sub.next_publish_acked().await), "y");
    }
}

/// `$share/` begins a shared subscription's filter, never a topic name a subscription can
/// match (4.8.2): a PUBLISH there would reach nobody, so it is refused, PUBACK 0x90 Topic Name
/// invalid ("not malformed, but not accepted"), rather than acknowledged as delivered.
#[tokio::test]
async fn publish_to_a_share_topic_name_is_refused_0x90() {
    let b = start().await;
    let mut sub = Client::connect(b.addr, "shn-sub").await;
    sub.subscribe("$share/g/shn/t", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(b.addr, "shn-pub").await;
    let r = publ
        .publish_packet(publish("$share/g/shn/t", b"x", QoS::AtLeastOnce, 0))
        .await;
    assert_eq!(r.expect("PUBACK").reason, ReasonCode::TOPIC_NAME_INVALID);
    publ.publish("shn/t", b"ok", QoS::AtLeastOnce).await;
    assert_eq!(text(&sub.next_publish_acked().await), "ok");
    sub.expect_nothing("the $share/ PUBLISH").await;
}

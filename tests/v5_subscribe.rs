//! MQTT 5.0 SUBSCRIBE options (No Local, Retain As Published, Retain Handling) and the SUBACK /
//! UNSUBACK reason codes.

#[path = "v5_support.rs"]
mod support;

use starling::codec::{Properties, QoS, ReasonCode, SubscriptionOptions};
use support::*;

fn o(qos: QoS, f: impl FnOnce(&mut SubscriptionOptions)) -> SubscriptionOptions {
    let mut x = opts(qos);
    f(&mut x);
    x
}

/// [MQTT-3.8.3-3]: with No Local the server does not forward a client's own messages to it;
/// other clients' messages still arrive, and a second client without No Local gets both.
#[tokio::test]
async fn mqtt_3_8_3_3_no_local() {
    let b = start().await;
    let mut me = Client::connect(b.addr, "nl-me").await;
    let sa = me
        .subscribe_with(
            &[("nl/t", o(QoS::AtLeastOnce, |x| x.no_local = true))],
            Properties::default(),
        )
        .await;
    assert_eq!(sa.reasons, vec![ReasonCode::GRANTED_QOS_1]);
    let mut other = Client::connect(b.addr, "nl-other").await;
    other.subscribe("nl/t", QoS::AtLeastOnce).await;

    me.publish("nl/t", b"mine", QoS::AtLeastOnce).await;
    assert_eq!(text(&other.next_publish_acked().await), "mine");
    other.publish("nl/t", b"theirs", QoS::AtLeastOnce).await;
    // "theirs" is the first PUBLISH `me` gets: its own "mine" was not sent back.
    assert_eq!(text(&me.next_publish_acked().await), "theirs");
    // The other client (no No Local) gets its own message.
    assert_eq!(text(&other.next_publish_acked().await), "theirs");

    // No Local on one subscription does not suppress another overlapping one without it.
    me.subscribe("nl/#", QoS::AtMostOnce).await;
    me.publish("nl/t", b"mine2", QoS::AtLeastOnce).await;
    let p = me.next_publish_acked().await;
    assert_eq!(text(&p), "mine2");
    assert_eq!(p.qos, QoS::AtMostOnce, "delivered through nl/# only");
}

/// [MQTT-3.3.1-12]: Retain As Published = 0 → forwarded with RETAIN 0; [MQTT-3.3.1-13]: = 1 →
/// RETAIN as published. (Retained messages sent because of a new subscription always carry
/// RETAIN 1 [MQTT-3.3.1-9].)
#[tokio::test]
async fn mqtt_3_3_1_12_13_retain_as_published() {
    let b = start().await;
    let mut rap = Client::connect(b.addr, "rap-1").await;
    rap.subscribe_with(
        &[(
            "rap/t",
            o(QoS::AtLeastOnce, |x| x.retain_as_published = true),
        )],
        Properties::default(),
    )
    .await;
    let mut norap = Client::connect(b.addr, "rap-0").await;
    norap.subscribe("rap/t", QoS::AtLeastOnce).await;

    let mut publ = Client::connect(b.addr, "rap-pub").await;
    let mut p = publish("rap/t", b"retained", QoS::AtLeastOnce, 0);
    p.retain = true;
    publ.publish_packet(p).await;
    publ.publish("rap/t", b"plain", QoS::AtLeastOnce).await;

    let a = rap.next_publish_acked().await;
    let a2 = rap.next_publish_acked().await;
    assert_eq!((text(&a), a.retain), ("retained".into(), true));
    assert_eq!((text(&a2), a2.retain), ("plain".into(), false));
    let n = norap.next_publish_acked().await;
    let n2 = norap.next_publish_acked().await;
    assert_eq!((text(&n), n.retain), ("retained".into(), false));
    assert_eq!((text(&n2), n2.retain), ("plain".into(), false));

    // On subscribe, the stored message comes with RETAIN 1 whatever Retain As Published says.
    let mut late = Client::connect(b.addr, "rap-late").await;
    late.subscribe("rap/t", QoS::AtLeastOnce).await;
    let r = late.next_publish_acked().await;
    assert_eq!((text(&r), r.retain), ("retained".into(), true));
}

async fn setup_retained(b: &TestBroker, topic: &str) {
    let mut publ = Client::connect(b.addr, &format!("{topic}-pub")).await;
    let mut p = publish(topic, b"stored", QoS::AtLeastOnce, 0);
    p.retain = true;
    publ.publish_packet(p).await;
    publ.disconnect().await;
}

/// Sends a live marker on `topic`, for "nothing else arrived before it" checks.
async fn marker(b: &TestBroker, topic: &str) {
    let mut publ = Client::connect(b.addr, &format!("{topic}-marker")).await;
    publ.publish(topic, b"marker", QoS::AtLeastOnce).await;
    publ.disconnect().await;
}

/// [MQTT-3.3.1-9]: Retain Handling 0 sends retained messages on every SUBSCRIBE, including one
/// that replaces an existing subscription.
#[tokio::test]
async fn mqtt_3_3_1_9_retain_handling_0_every_subscribe() {
    let b = start().await;
    setup_retained(&b, "rh0/t").await;
    let mut s = Client::connect(b.addr, "rh0").await;
    for round in 0..2 {
        let sa = s
            .subscribe_with(&[("rh0/t", opts(QoS::AtLeastOnce))], Properties::default())
            .await;
        assert_eq!(sa.reasons, vec![ReasonCode::GRANTED_QOS_1]);
        let p = s.next_publish_acked().await;
        assert_eq!(
            (text(&p), p.retain),
            ("stored".into(), true),
            "round {round}"
        );
    }
}

/// [MQTT-3.3.1-10]: Retain Handling 1 sends retained messages only if the subscription did not
/// exist.
#[tokio::test]
async fn mqtt_3_3_1_10_retain_handling_1_only_new_subscription() {
    let b = start().await;
    setup_retained(&b, "rh1/t").await;
    let mut s = Client::connect(b.addr, "rh1").await;
    let rh1 = o(QoS::AtLeastOnce, |x| x.retain_handling = 1);
    s.subscribe_with(&[("rh1/t", rh1)], Properties::default())
        .await;
    let p = s.next_publish_acked().await;
    assert_eq!((text(&p), p.retain), ("stored".into(), true));

    s.subscribe_with(&[("rh1/t", rh1)], Properties::default())
        .await;
    marker(&b, "rh1/t").await;
    let p = s.next_publish_acked().await;
    assert_eq!(
        text(&p),
        "marker",
        "the re-subscription must not resend the retained message"
    );

    // After UNSUBSCRIBE it is new again.
    s.unsubscribe(&["rh1/t"]).await;
    s.subscribe_with(&[("rh1/t", rh1)], Properties::default())
        .await;
    let p = s.next_publish_acked().await;
    assert_eq!((text(&p), p.retain), ("stored".into(), true));
}

/// [MQTT-3.3.1-11]: Retain Handling 2 never sends retained messages on subscribe.
#[tokio::test]
async fn mqtt_3_3_1_11_retain_handling_2_never() {
    let b = start().await;
    setup_retained(&b, "rh2/t").await;
    let mut s = Client::connect(b.addr, "rh2").await;
    let sa = s
        .subscribe_with(
            &[("rh2/#", o(QoS::AtLeastOnce, |x| x.retain_handling = 2))],
            Properties::default(),
        )
        .await;
    assert_eq!(sa.reasons, vec![ReasonCode::GRANTED_QOS_1]);
    marker(&b, "rh2/t").await;
    let p = s.next_publish_acked().await;
    assert_eq!(
        text(&p),
        "marker",
        "retained message sent despite Retain Handling 2"
    );
    assert!(!p.retain);
}

/// SUBACK carries one reason code per filter, in order [MQTT-3.9.3-1]: the granted QoS
/// (0x00/0x01/0x02) on success, 0x8F for an invalid filter (spec 4.7.1, 4.8.2).
#[tokio::test]
async fn mqtt_3_9_3_1_suback_reason_codes() {
    let b = start().await;
    let mut s = Client::connect(b.addr, "suback").await;
    let sa = s
        .subscribe_with(
            &[
                ("ok/0", opts(QoS::AtMostOnce)),
                ("a/#/b", opts(QoS::AtLeastOnce)),
                ("ok/1", opts(QoS::AtLeastOnce)),
                ("$share/g", opts(QoS::AtLeastOnce)),
                ("a+/b", opts(QoS::AtLeastOnce)),
                ("$share/g+/x", opts(QoS::AtLeastOnce)),
                ("$share//x", opts(QoS::AtLeastOnce)),
                ("ok/+/2", opts(QoS::ExactlyOnce)),
                ("$share/g/ok/#", opts(QoS::AtLeastOnce)),
            ],
            Properties::default(),
        )
        .await;
    assert_eq!(
        sa.reasons,
        vec![
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::GRANTED_QOS_2,
            ReasonCode::GRANTED_QOS_1,
        ]
    );
    // The connection is still usable and the valid filters are active.
    s.publish("ok/1", b"x", QoS::AtLeastOnce).await;
    let p = s.next_publish_acked().await;
    assert_eq!(p.topic, "ok/1".into());
}

/// UNSUBACK [MQTT-3.11.3-1]: one reason code per filter, 0x00 when the subscription existed and
/// was removed, 0x11 No subscription existed otherwise; after it, no more messages
/// [MQTT-3.10.4-1]...
#[tokio::test]
async fn mqtt_3_11_3_1_unsuback_reason_codes() {
    let b = start().await;
    let mut s = Client::connect(b.addr, "unsuback").await;
    s.subscribe("us/a", QoS::AtLeastOnce).await;
    s.subscribe("$share/g/us/b", QoS::AtLeastOnce).await;
    s.subscribe("us/c", QoS::AtLeastOnce).await;
    let ua = s
        .unsubscribe(&["us/a", "us/none", "$share/g/us/b", "us/a"])
        .await;
    assert_eq!(
        ua.reasons,
        vec![
            ReasonCode::SUCCESS,
            ReasonCode::NO_SUBSCRIPTION_EXISTED,
            ReasonCode::SUCCESS,
            ReasonCode::NO_SUBSCRIPTION_EXISTED
        ]
    );
    s.publish("us/a", b"gone", QoS::AtLeastOnce).await;
    s.publish("us/b", b"gone", QoS::AtLeastOnce).await;
    s.publish("us/c", b"kept", QoS::AtLeastOnce).await;
    assert_eq!(text(&s.next_publish_acked().await), "kept");
}

/// UNSUBACK 0x8F Topic Filter invalid for a malformed filter, in its place among the others
/// [MQTT-3.11.3-1] (§3.11.3); the valid filter next to it is still removed.
#[tokio::test]
async fn mqtt_3_11_3_1_unsuback_0x8f_for_invalid_filter() {
    let b = start().await;
    let mut s = Client::connect(b.addr, "unsub-bad").await;
    s.subscribe("ub/a", QoS::AtLeastOnce).await;
    s.subscribe("ub/b", QoS::AtLeastOnce).await;
    let ua = s.unsubscribe(&["a/#/b", "ub/a", "x+/y", "$share/g"]).await;
    assert_eq!(
        ua.reasons,
        vec![
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::SUCCESS,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::TOPIC_FILTER_INVALID,
        ]
    );
    s.publish("ub/a", b"gone", QoS::AtLeastOnce).await;
    s.publish("ub/b", b"kept", QoS::AtLeastOnce).await;
    assert_eq!(text(&s.next_publish_acked().await), "kept");
}

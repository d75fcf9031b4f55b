//! Interop with rumqttc 0.25 (MQTT 3.1.1): round trips, overlapping and repeated
//! subscriptions, the offline queue of a persistent session, and session takeover.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::rumq::{options, spawn, Rumq};
use common::*;
use rumqttc::{LastWill, Outgoing, QoS, SubscribeFilter, SubscribeReasonCode};

async fn connected(opts: rumqttc::MqttOptions) -> (Rumq, rumqttc::ConnAck) {
    let mut c = spawn(opts);
    let ack = c.connack().await;
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success, "{ack:?}");
    (c, ack)
}

async fn subscribe(c: &mut Rumq, filter: &str, qos: QoS) {
    c.client.subscribe(filter, qos).await.unwrap();
    let ack = c.suback().await;
    assert_eq!(
        ack.return_codes,
        vec![SubscribeReasonCode::Success(qos)],
        "SUBACK for {filter}"
    );
}

/// Publishes and, for QoS 1/2, waits until the flow is complete on the publisher side.
async fn publish(c: &mut Rumq, topic: &str, qos: QoS, payload: &[u8]) {
    c.client
        .publish(topic, qos, false, payload.to_vec())
        .await
        .unwrap();
    match qos {
        QoS::AtMostOnce => {
            c.outgoing("PUBLISH", |o| matches!(o, Outgoing::Publish(_)))
                .await
        }
        QoS::AtLeastOnce => {
            c.incoming("PUBACK", |p| {
                matches!(p, rumqttc::Packet::PubAck(_)).then_some(())
            })
            .await
        }
        QoS::ExactlyOnce => {
            c.incoming("PUBCOMP", |p| {
                matches!(p, rumqttc::Packet::PubComp(_)).then_some(())
            })
            .await
        }
    }
}

fn check(p: &rumqttc::Publish, topic: &str, payload: &[u8], qos: QoS) {
    assert_eq!(p.topic, topic, "{p:?}");
    assert_eq!(p.payload, Bytes::copy_from_slice(payload), "{p:?}");
    assert_eq!(p.qos, qos, "{p:?}");
}

/// QoS 0, 1 and 2 round trips between two rumqttc clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_qos_0_1_2_round_trips() {
    let b = start().await;
    let (mut sub, _) = connected(options(b.addr, "rq-sub")).await;
    let (mut publ, _) = connected(options(b.addr, "rq-pub")).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let topic = format!("rq/{i}");
        subscribe(&mut sub, &topic, qos).await;
        for n in 0..3 {
            let payload = format!("qos{i}-{n}");
            publish(&mut publ, &topic, qos, payload.as_bytes()).await;
            let got = sub.publish().await;
            check(&got, &topic, payload.as_bytes(), qos);
        }
    }
}

/// Overlapping subscriptions (`a/#` QoS 1 and `a/+` QoS 2) deliver ONE copy at the highest
/// granted QoS (section 3.3.5; [MQTT-3.3.5-1]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_overlapping_subscriptions_one_copy_at_highest_qos() {
    let b = start().await;
    let (mut sub, _) = connected(options(b.addr, "ov-sub")).await;
    sub.client
        .subscribe_many([
            SubscribeFilter::new("a/#".into(), QoS::AtLeastOnce),
            SubscribeFilter::new("a/+".into(), QoS::ExactlyOnce),
        ])
        .await
        .unwrap();
    let ack = sub.suback().await;
    assert_eq!(
        ack.return_codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::ExactlyOnce)
        ]
    );
    let (mut publ, _) = connected(options(b.addr, "ov-pub")).await;
    publish(&mut publ, "a/b", QoS::ExactlyOnce, b"both-match").await;
    publish(&mut publ, "a/b/c", QoS::ExactlyOnce, b"only-hash").await;
    publish(&mut publ, "a/end", QoS::AtMostOnce, b"marker").await;

    check(&sub.publish().await, "a/b", b"both-match", QoS::ExactlyOnce);
    // Next must be a/b/c (only `a/#` matches, granted 1) — not a second copy of a/b.
    check(
        &sub.publish().await,
        "a/b/c",
        b"only-hash",
        QoS::AtLeastOnce,
    );
    check(&sub.publish().await, "a/end", b"marker", QoS::AtMostOnce);
}

/// A repeated SUBSCRIBE to the same filter replaces the subscription [MQTT-3.8.4-3]: the new
/// QoS applies and there is still one copy per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_repeated_subscribe_replaces_mqtt_3_8_4_3() {
    let b = start().await;
    let (mut sub, _) = connected(options(b.addr, "rs-sub")).await;
    subscribe(&mut sub, "rs/t", QoS::AtMostOnce).await;
    subscribe(&mut sub, "rs/t", QoS::ExactlyOnce).await;
    subscribe(&mut sub, "rs/end", QoS::AtMostOnce).await;
    let (mut publ, _) = connected(options(b.addr, "rs-pub")).await;
    publish(&mut publ, "rs/t", QoS::ExactlyOnce, b"one").await;
    publish(&mut publ, "rs/end", QoS::AtMostOnce, b"marker").await;
    check(&sub.publish().await, "rs/t", b"one", QoS::ExactlyOnce);
    check(&sub.publish().await, "rs/end", b"marker", QoS::AtMostOnce);

    // Replace back down to QoS 1.
    subscribe(&mut sub, "rs/t", QoS::AtLeastOnce).await;
    publish(&mut publ, "rs/t", QoS::ExactlyOnce, b"two").await;
    publish(&mut publ, "rs/end", QoS::AtMostOnce, b"marker2").await;
    check(&sub.publish().await, "rs/t", b"two", QoS::AtLeastOnce);
    check(&sub.publish().await, "rs/end", b"marker2", QoS::AtMostOnce);
}

/// A persistent session subscribed at QoS 1 goes offline; 10 messages published meanwhile are
/// all delivered, in order, on reconnect, with session present = 1 [MQTT-3.1.2-4][MQTT-4.6.0-2].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_offline_queue_redelivered_in_order_mqtt_4_6_0() {
    let b = start().await;
    let mut opts = options(b.addr, "offline-sub");
    opts.set_clean_session(false);
    let (mut sub, ack) = connected(opts.clone()).await;
    assert!(!ack.session_present);
    subscribe(&mut sub, "off/t", QoS::AtLeastOnce).await;
    sub.client.disconnect().await.unwrap();
    sub.outgoing("DISCONNECT", |o| matches!(o, Outgoing::Disconnect))
        .await;
    drop(sub);
    b.wait_until("the subscriber is offline", |s| {
        s.metrics().clients_connected.get() == 0
    })
    .await;

    let (mut publ, _) = connected(options(b.addr, "offline-pub")).await;
    for i in 0..10 {
        publish(
            &mut publ,
            "off/t",
            QoS::AtLeastOnce,
            format!("m{i}").as_bytes(),
        )
        .await;
    }

    let (mut sub, ack) = connected(opts).await;
    assert!(ack.session_present, "session present must be 1 on resume");
    for i in 0..10 {
        let got = sub.publish().await;
        check(&got, "off/t", format!("m{i}").as_bytes(), QoS::AtLeastOnce);
    }
    // Nothing more queued.
    publish(&mut publ, "off/t", QoS::AtMostOnce, b"marker").await;
    check(&sub.publish().await, "off/t", b"marker", QoS::AtMostOnce);
}

/// A second client with the same client id takes over: the first is disconnected
/// [MQTT-3.1.4-2], its will is published (it did not send DISCONNECT [MQTT-3.1.2-8]), and the
/// second works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_takeover_disconnects_first_and_publishes_its_will_mqtt_3_1_4_2() {
    let b = start().await;
    let (mut watch, _) = connected(options(b.addr, "to-watch")).await;
    subscribe(&mut watch, "will/takeover", QoS::AtLeastOnce).await;

    let mut first = options(b.addr, "same-id");
    first.set_last_will(LastWill::new(
        "will/takeover",
        "first-will",
        QoS::AtLeastOnce,
        false,
    ));
    let (mut a, _) = connected(first).await;
    let (mut bb, ack) = connected(options(b.addr, "same-id")).await;
    assert!(!ack.session_present);

    let why = a.closed().await;
    println!("first client closed: {why}");
    let will = watch.publish().await;
    check(&will, "will/takeover", b"first-will", QoS::AtLeastOnce);

    subscribe(&mut bb, "to/b", QoS::AtLeastOnce).await;
    publish(&mut bb, "to/b", QoS::AtLeastOnce, b"second-works").await;
    check(
        &bb.publish().await,
        "to/b",
        b"second-works",
        QoS::AtLeastOnce,
    );
    assert_eq!(b.clients_connected(), 2, "watcher and the second client");
}

/// The keep-alive of a rumqttc client is honoured: it stays connected across several keep-alive
/// periods while idle (it sends PINGREQ; the broker answers PINGRESP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_idle_client_kept_alive_by_pings() {
    let b = start().await;
    let mut o = options(b.addr, "ka-rumq");
    o.set_keep_alive(Duration::from_secs(1));
    let (mut c, _) = connected(o).await;
    for _ in 0..2 {
        c.incoming("PINGRESP", |p| {
            matches!(p, rumqttc::Packet::PingResp).then_some(())
        })
        .await;
    }
    subscribe(&mut c, "ka/t", QoS::AtLeastOnce).await;
    publish(&mut c, "ka/t", QoS::AtLeastOnce, b"alive").await;
    check(&c.publish().await, "ka/t", b"alive", QoS::AtLeastOnce);
}

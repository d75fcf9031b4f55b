//! Retained messages sent to a new subscription of a persistent session are in flight like any
//! other QoS 1/2 delivery. The broker (the `starling` binary) is SIGKILLed while the client holds
//! them unacknowledged; after the restart the resumed session gets them again with DUP=1 under
//! the same packet ids [MQTT-4.4.0-1] ([MQTT-4.3.3-7]: a QoS 2 PUBLISH is resent until PUBREC,
//! a PUBREL until PUBCOMP), in the order they were first sent [MQTT-4.6.0-1], and no new message
//! takes one of those packet ids while they are in flight [MQTT-2.2.1-3]: a QoS 2 receiver would
//! take it for a resend and drop it.

#[path = "persistence/support.rs"]
mod support;

use bytes::Bytes;
use starling::codec::{
    Packet, ProtocolVersion, PubResp, Publish, QoS, Subscribe, SubscriptionOptions,
};
use support::*;

/// What the subscriber saw of one PUBLISH.
fn shape(p: &Publish) -> (String, QoS, bool, Bytes, Vec<u32>) {
    (
        p.topic.to_string(),
        p.qos,
        p.retain,
        p.payload.clone(),
        p.properties.subscription_identifiers.clone(),
    )
}

fn publish(p: Packet, what: &str) -> Publish {
    match p {
        Packet::Publish(p) => p,
        other => panic!("{what}: expected PUBLISH, got {other:?}"),
    }
}

fn expect_pubrel(p: Packet, pid: u16, what: &str) {
    match p {
        Packet::PubRel(r) if r.packet_id == pid => {}
        other => panic!("{what}: expected PUBREL {pid}, got {other:?}"),
    }
}

async fn crash_with_retained_in_flight(version: ProtocolVersion) {
    let label = format!("{version:?}");
    let tmp = temp_dir("retained-inflight");
    let store = tmp.path().join("store");
    let config = |round: u32| {
        let port = free_port();
        let name = format!("round{round}.toml");
        (write_config(tmp.path(), &name, port, &store, ""), port)
    };
    let (cfg, port) = config(0);
    let mut broker = BrokerProc::start(&cfg, port).await;

    // A 3.1.1 publisher: a v5 PUBREC says 0x10 (no matching subscribers) for the first ones.
    let publisher = connect_packet(ProtocolVersion::V311, "ri-pub", true, None);
    let (mut p, _) = Client::connect_ok(broker.addr, publisher.clone()).await;
    p.publish("r/1", b"one", QoS::ExactlyOnce, true).await;
    p.publish("r/2", b"two", QoS::ExactlyOnce, true).await;
    p.publish("r/3", b"three", QoS::AtLeastOnce, true).await;
    p.disconnect().await;

    // A persistent session subscribes: its three retained messages arrive, none acknowledged
    // but r/2, which gets PUBREC (and so PUBREL back: that stage is durable before PUBREL is
    // sent, and with it every record written before it, the QoS 1 one too).
    let expiry = version.is_v5().then_some(600);
    let sub = connect_packet(version, "ri-sub", false, expiry);
    let (mut c, _) = Client::connect_ok(broker.addr, sub.clone()).await;
    let options = SubscriptionOptions::new(QoS::ExactlyOnce);
    let mut subscribe = Subscribe {
        packet_id: 1,
        filters: vec![("r/#".into(), options)],
        properties: Default::default(),
    };
    if version.is_v5() {
        subscribe.properties.subscription_identifiers = vec![9];
    }
    c.send(&Packet::Subscribe(subscribe)).await.unwrap();
    assert!(matches!(c.next().await, Packet::SubAck(_)));
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(publish(c.next().await, &label));
    }
    let topics: Vec<&str> = first.iter().map(|p| &*p.topic).collect();
    assert_eq!(topics, ["r/1", "r/2", "r/3"], "{label}");
    assert!(
        first.iter().all(|p| p.retain && !p.dup),
        "{label}: {first:?}"
    );
    let pids: Vec<u16> = first.iter().map(|p| p.packet_id).collect();
    c.send(&Packet::PubRec(PubResp::new(pids[1])))
        .await
        .unwrap();
    expect_pubrel(c.next().await, pids[1], &label);
    broker.kill();

    let (cfg, port) = config(1);
    broker = BrokerProc::start(&cfg, port).await;
    let (mut c, ack) = Client::connect_ok(broker.addr, sub).await;
    assert!(ack.session_present, "{label}: the session survives");
    let again = publish(c.next().await, &label);
    assert!(again.dup, "{label}: resent with DUP=1: {again:?}");
    assert_eq!(again.packet_id, pids[0], "{label}: same packet id");
    assert_eq!(shape(&again), shape(&first[0]), "{label}");
    expect_pubrel(c.next().await, pids[1], &label);
    let again3 = publish(c.next().await, &label);
    assert!(again3.dup, "{label}");
    assert_eq!(again3.packet_id, pids[2], "{label}: same packet id");
    assert_eq!(shape(&again3), shape(&first[2]), "{label}");

    // A new message while those three are in flight gets another packet id.
    let (mut p, _) = Client::connect_ok(broker.addr, publisher).await;
    p.publish("r/live", b"live", QoS::ExactlyOnce, false).await;
    let live = publish(c.next().await, &label);
    assert_eq!((&*live.topic, live.dup), ("r/live", false), "{label}");
    assert!(
        !pids.contains(&live.packet_id),
        "{label}: packet id {} is still in flight ({pids:?})",
        live.packet_id
    );

    // The flows complete as usual.
    c.send(&Packet::PubRec(PubResp::new(pids[0])))
        .await
        .unwrap();
    expect_pubrel(c.next().await, pids[0], &label);
    for done in [
        Packet::PubComp(PubResp::new(pids[0])),
        Packet::PubComp(PubResp::new(pids[1])),
        Packet::PubAck(PubResp::new(pids[2])),
        Packet::PubRec(PubResp::new(live.packet_id)),
    ] {
        c.send(&done).await.unwrap();
    }
    expect_pubrel(c.next().await, live.packet_id, &label);
    c.send(&Packet::PubComp(PubResp::new(live.packet_id)))
        .await
        .unwrap();
    assert!(c.ping().await.is_empty(), "{label}: nothing more is sent");
    let warnings = broker.warnings();
    assert!(warnings.is_empty(), "{label}: {warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_in_flight_is_sent_again_after_a_crash_v311() {
    crash_with_retained_in_flight(ProtocolVersion::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_in_flight_is_sent_again_after_a_crash_v5() {
    crash_with_retained_in_flight(ProtocolVersion::V5).await;
}

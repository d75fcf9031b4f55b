//! `[retained] max_messages` and `max_bytes` (issue 14 item 3): past a bound, a retained PUBLISH
//! on a new topic is delivered and acknowledged with success but not stored (counted); replacing
//! or deleting an existing retained message is always accepted; messages restored over the bound
//! are all kept.

#[path = "v5_support.rs"]
mod support;

use std::sync::Arc;

use bytes::Bytes;
use starling::broker::BrokerState;
use starling::codec::{ProtocolVersion, Publish, QoS};
use starling::config::Config;
use starling::message::Message;
use support::*;

fn bounded(max_messages: u64, max_bytes: u64) -> Config {
    let mut cfg = config();
    cfg.retained.max_messages = max_messages;
    cfg.retained.max_bytes = max_bytes;
    cfg
}

fn retained(topic: &str, payload: &[u8]) -> Publish {
    let mut p = publish(topic, payload, QoS::AtLeastOnce, 0);
    p.retain = true;
    p
}

/// The retained messages a fresh subscriber to `filter` gets: (topic, payload), sorted. A
/// PINGRESP marks the end.
async fn retained_now(addr: std::net::SocketAddr, filter: &str) -> Vec<(String, Vec<u8>)> {
    let mut c = Client::connect(addr, "probe").await;
    c.subscribe(filter, QoS::AtMostOnce).await;
    c.send(&starling::codec::Packet::PingReq).await;
    let mut got = Vec::new();
    loop {
        match c.next().await {
            starling::codec::Packet::Publish(p) => {
                assert!(p.retain);
                got.push((p.topic.to_string(), p.payload.to_vec()));
            }
            starling::codec::Packet::PingResp => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    got.sort();
    got
}

/// Publishes a retained QoS 1 message and asserts it was accepted: PUBACK Success, or 0x10 No
/// matching subscribers (accepted and retained, nobody subscribed right now; as Mosquitto).
async fn publish_ok(c: &mut Client, topic: &str, payload: &[u8]) {
    let ack = c.publish_packet(retained(topic, payload)).await;
    let ack = ack.expect("QoS 1 is acknowledged");
    assert!(!ack.reason.is_error(), "{topic}: {:?}", ack.reason);
}

fn pairs(items: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    items
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_vec()))
        .collect()
}

#[tokio::test]
async fn a_new_topic_past_max_messages_is_delivered_acknowledged_and_not_stored() {
    let b = start_with(bounded(3, 0)).await;
    let mut live = Client::connect(b.addr, "live").await;
    live.subscribe("a/#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(b.addr, "pub").await;
    for t in ["a/1", "a/2", "a/3"] {
        publish_ok(&mut publisher, t, b"old").await;
    }
    publish_ok(&mut publisher, "a/4", b"over").await;
    // Delivered to the subscriber like any message.
    let mut topics = Vec::new();
    for _ in 0..4 {
        topics.push(live.next_publish_acked().await.topic.to_string());
    }
    assert_eq!(topics, ["a/1", "a/2", "a/3", "a/4"]);
    assert_eq!(b.state().retained_count(), 3);
    assert_eq!(b.state().metrics().retained_refused.get(), 1);
    let text = starling::prometheus::render(b.state(), &[]);
    assert!(text.contains("starling_retained_refused_total 1"), "{text}");
    assert_eq!(
        retained_now(b.addr, "a/#").await,
        pairs(&[("a/1", b"old"), ("a/2", b"old"), ("a/3", b"old")])
    );
}

#[tokio::test]
async fn replacing_or_deleting_is_accepted_when_full() {
    let b = start_with(bounded(2, 0)).await;
    let mut publisher = Client::connect(b.addr, "pub").await;
    publish_ok(&mut publisher, "a/1", b"old").await;
    publish_ok(&mut publisher, "a/2", b"old").await;
    publish_ok(&mut publisher, "a/1", b"new").await;
    assert_eq!(
        retained_now(b.addr, "a/#").await,
        pairs(&[("a/1", b"new"), ("a/2", b"old")])
    );
    // Deleting frees a place: a new topic is stored again.
    publish_ok(&mut publisher, "a/2", b"").await;
    publish_ok(&mut publisher, "a/3", b"third").await;
    assert_eq!(
        retained_now(b.addr, "a/#").await,
        pairs(&[("a/1", b"new"), ("a/3", b"third")])
    );
    assert_eq!(b.state().metrics().retained_refused.get(), 0);
}

#[tokio::test]
async fn max_bytes_counts_payload_and_topic() {
    let b = start_with(bounded(0, 1024)).await;
    let mut c = connect_packet("pub311");
    c.protocol = ProtocolVersion::V311;
    let (mut publisher, _) = Client::connect_with(b.addr, c).await;
    publish_ok(&mut publisher, "b/1", &[1; 600]).await;
    publish_ok(&mut publisher, "b/2", &[2; 600]).await; // 600 + 3 more would pass 1024
    assert_eq!(b.state().retained_count(), 1);
    assert_eq!(b.state().retained_bytes(), 603);
    // Growing an existing one is a replacement: accepted even past the bound.
    publish_ok(&mut publisher, "b/1", &[3; 1100]).await;
    assert_eq!(b.state().retained_bytes(), 1103);
    assert_eq!(b.state().metrics().retained_refused.get(), 1);
    let got = retained_now(b.addr, "b/#").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), 1100);
}

fn msg(topic: &str) -> Arc<Message> {
    Arc::new(Message::new(
        topic,
        Bytes::from_static(b"x"),
        QoS::AtMostOnce,
        true,
    ))
}

#[test]
fn restored_messages_over_the_bound_are_all_kept() {
    let state = BrokerState::new(bounded(3, 0), Default::default());
    for i in 0..5 {
        state.restore_retained(msg(&format!("r/{i}")));
    }
    state.warn_if_retained_over_bounds();
    assert_eq!(state.retained_count(), 5, "nothing restored is dropped");
    state.publish_unacknowledged(msg("r/new"));
    assert_eq!(state.retained_count(), 5, "a new topic is refused");
    state.publish_unacknowledged(msg("r/0"));
    assert_eq!(
        state.metrics().retained_refused.get(),
        1,
        "a replacement is not"
    );
}

#[test]
fn the_broker_own_sys_topics_are_not_bounded() {
    let state = BrokerState::new(bounded(1, 0), Default::default());
    state.publish_unacknowledged(msg("a"));
    state.publish_unacknowledged(msg("$SYS/broker/uptime"));
    assert_eq!(state.retained_count(), 2);
    assert_eq!(state.metrics().retained_refused.get(), 0);
}

#[test]
fn retained_section_parses_defaults_and_rejects_a_tiny_byte_bound() {
    let d = Config::default().retained;
    assert_eq!(
        (d.max_messages, d.max_bytes),
        (1_000_000, 256 * 1024 * 1024)
    );
    let cfg = Config::from_toml_str("[retained]\nmax_messages = 0\nmax_bytes = 4096\n").unwrap();
    assert_eq!(
        (cfg.retained.max_messages, cfg.retained.max_bytes),
        (0, 4096)
    );
    let err = Config::from_toml_str("[retained]\nmax_bytes = 100\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("retained.max_bytes"), "{err}");
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/starling.toml"))
            .unwrap();
    let shipped = Config::from_toml_str(&shipped).unwrap();
    assert_eq!(
        shipped.retained, d,
        "the shipped config documents the defaults"
    );
}

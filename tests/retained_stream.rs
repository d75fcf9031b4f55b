//! Retained messages on SUBSCRIBE are streamed, not queued (issue 14 item 1): a subscriber gets
//! every retained message that matches, at QoS 0 and 1, over 3.1.1 and 5.0, paced by its
//! inflight window and socket and never dropped for a queue limit, while the broker's queued
//! bytes stay within one read batch; and a live message on a topic is never followed by an
//! older retained copy of that topic [MQTT-3.3.1-6] [MQTT-3.3.1-8] [MQTT-3.3.1-9].

#[path = "v5_support.rs"]
mod support;

use std::sync::Arc;

use bytes::Bytes;
use starling::broker::BrokerState;
use starling::codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use starling::message::Message;
use starling::session::stream::STREAM_BATCH;
use support::*;

const RETAINED: usize = 100_000;
/// The subscriber's window: a slow consumer with little in flight.
const WINDOW: u16 = 4;

fn payload(i: usize) -> Bytes {
    Bytes::from(format!("{i}"))
}

/// Stores `n` retained messages `ret/<i>` through the broker's own publish path.
fn preload(state: &BrokerState, n: usize) {
    for i in 0..n {
        let m = Message::new(&format!("ret/{i}"), payload(i), QoS::AtLeastOnce, true);
        state.publish_unacknowledged(Arc::new(m));
    }
    assert_eq!(state.retained_count(), n);
}

/// Queue limits far below the retained set, and a small window for 3.x.
fn small_queue_config() -> starling::config::Config {
    let mut cfg = config();
    cfg.mqtt.max_queued_messages = 100;
    cfg.mqtt.max_inflight = WINDOW;
    cfg
}

/// Subscribes `ret/#` at `qos` and reads every retained message, acknowledging QoS 1 only after
/// checking the broker's queued bytes: each is delivered once, with RETAIN=1.
async fn receive_all(b: &TestBroker, version: ProtocolVersion, qos: QoS, id: &str) {
    let mut c = connect_packet(id);
    c.protocol = version;
    c.properties.receive_maximum = Some(WINDOW);
    let (mut cl, _) = Client::connect_with(b.addr, c).await;
    cl.subscribe("ret/#", qos).await;
    // What one read batch can hold: the most the stream itself keeps queued.
    let sample = Message::new(&format!("ret/{RETAINED}"), payload(RETAINED), qos, true);
    let bound = (STREAM_BATCH * sample.cost()) as u64;
    let mut seen = vec![false; RETAINED];
    let mut peak = 0;
    for _ in 0..RETAINED {
        let p = cl.next_publish().await;
        peak = peak.max(b.state().budget().used());
        assert!(
            p.retain,
            "[MQTT-3.3.1-8] retained on subscribe carries RETAIN=1"
        );
        assert_eq!(p.qos, qos);
        let i: usize = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
        assert_eq!(&*p.topic, format!("ret/{i}"));
        assert!(!seen[i], "ret/{i} delivered twice");
        seen[i] = true;
        if qos == QoS::AtLeastOnce {
            cl.send(&puback(p.packet_id, ReasonCode::SUCCESS)).await;
        }
    }
    assert!(seen.iter().all(|s| *s));
    assert!(
        peak <= bound,
        "{id}: queued bytes peaked at {peak}, above one batch ({bound})"
    );
    // Nothing more: a PINGRESP comes next, not another PUBLISH.
    cl.send(&Packet::PingReq).await;
    assert!(matches!(cl.next().await, Packet::PingResp));
    let m = b.state().metrics();
    assert_eq!(
        m.dropped_queue_full.get(),
        0,
        "nothing dropped for the queue limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_retained_message_is_streamed_once_at_qos0_and_qos1_v311_and_v5() {
    let b = start_with(small_queue_config()).await;
    preload(b.state(), RETAINED);
    receive_all(&b, ProtocolVersion::V311, QoS::AtMostOnce, "v3-q0").await;
    receive_all(&b, ProtocolVersion::V311, QoS::AtLeastOnce, "v3-q1").await;
    receive_all(&b, ProtocolVersion::V5, QoS::AtMostOnce, "v5-q0").await;
    receive_all(&b, ProtocolVersion::V5, QoS::AtLeastOnce, "v5-q1").await;
}

#[tokio::test]
async fn a_live_message_is_never_followed_by_an_older_retained_copy() {
    let b = start_with(small_queue_config()).await;
    let n = 2_000;
    preload(b.state(), n);
    let mut c = connect_packet("slow");
    c.properties.receive_maximum = Some(1);
    let (mut sub, _) = Client::connect_with(b.addr, c).await;
    sub.subscribe("ret/#", QoS::AtLeastOnce).await;
    // With one message in flight and this one not acknowledged, the stream has hardly begun.
    let first = sub.next_publish().await;
    let mut publisher = Client::connect(b.addr, "pub").await;
    // "ret/999" is the last of the stream's order (level by level, bytewise), "ret/1999"
    // comes in the middle: both still ahead of the cursor.
    let live = |topic: &str, retain: bool| {
        let mut p = publish(topic, b"live", QoS::AtLeastOnce, 0);
        p.retain = retain;
        p
    };
    publisher.publish_packet(live("ret/999", false)).await;
    publisher.publish_packet(live("ret/1999", true)).await;
    sub.send(&puback(first.packet_id, ReasonCode::SUCCESS))
        .await;
    let mut live_seen = std::collections::HashSet::new();
    let mut count = 1;
    while live_seen.len() < 2 {
        let p = sub.next_publish_acked().await;
        count += 1;
        let topic = p.topic.to_string();
        assert!(
            !live_seen.contains(&topic),
            "{topic}: {:?} (RETAIN={}) arrived after the live message",
            p.payload,
            p.retain
        );
        if !p.retain {
            assert_eq!(&p.payload[..], b"live", "{topic}");
            live_seen.insert(topic);
        } else if topic == "ret/1999" {
            assert_eq!(&p.payload[..], b"live", "the store's current copy is sent");
        }
    }
    assert_eq!(
        count,
        n + 2,
        "every retained message, then the two live ones"
    );
}

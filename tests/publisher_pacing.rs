//! Flow control between a publisher and subscribers it outruns: a QoS 1/2 PUBLISH that leaves
//! a connected subscriber's queue `PACE_AT` deep is acknowledged, but its publisher is not read
//! again until that queue is down to `PACE_RESUME`, or for at most `STUCK_AFTER`; a subscriber
//! that made no progress in that time is lagging and paces nobody until it drains. Nothing is
//! dropped for pacing, and a client is never paced by its own queue. Raw clients over TCP,
//! each test with its own broker on an ephemeral port.

mod common;

use std::time::Instant;

use common::*;
use starling::broker::{PACE_AT, PACE_RESUME};
use starling::protocol::STUCK_AFTER;

/// More messages than it takes to reach `PACE_AT` behind a full window of 20.
const BURST: usize = PACE_AT + 100;

fn payload(i: usize) -> Vec<u8> {
    format!("m{i}").into_bytes()
}

/// A subscriber to `topic` at QoS 1 and a publisher, as `<tag>-sub` and `<tag>-pub`.
async fn subscriber_and_publisher(b: &TestBroker, tag: &str, topic: &str) -> (Raw, Raw) {
    let mut s = Raw::connect_v311(b.addr, &format!("{tag}-sub")).await;
    assert_eq!(s.subscribe(1, topic, 1).await, 1);
    let p = Raw::connect_v311(b.addr, &format!("{tag}-pub")).await;
    (s, p)
}

async fn publish_burst(p: &mut Raw, topic: &str, first: usize) {
    for i in first..first + BURST {
        let pid = u16::try_from(i % 60_000 + 1).expect("packet id");
        p.publish(topic, &payload(i), 1, false, pid).await;
    }
}

async fn drain_in_order(s: &mut Raw, topic: &str, first: usize) {
    for i in first..first + BURST {
        assert_publish(&s.recv_and_ack().await, topic, &payload(i));
    }
}

/// A subscriber that reads nothing holds its publisher back once, for the grace only: every
/// PUBLISH is still acknowledged, the subscriber is then lagging (counted) and paces nobody,
/// nothing is dropped, and it later gets every message in order. Once it has drained, it
/// paces again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reads_nothing_holds_its_publisher_back_once() {
    let b = start().await;
    let m = b.state().metrics();
    let (mut s, mut p) = subscriber_and_publisher(&b, "pace", "pace/t").await;

    let started = Instant::now();
    publish_burst(&mut p, "pace/t", 0).await;
    let took = started.elapsed();
    assert_eq!(m.publishers_paced.get(), 1, "paced once, then not again");
    assert_eq!(m.pace_expired.get(), 1, "the subscriber never drained");
    assert!(
        took >= STUCK_AFTER,
        "{BURST} PUBLISHes acknowledged in {took:?}: the publisher was read again before \
         the {STUCK_AFTER:?} grace although the subscriber read nothing"
    );
    assert_eq!(m.dropped_queue_full.get(), 0, "pacing drops nothing");
    drain_in_order(&mut s, "pace/t", 0).await;
    assert!(s.ping().await.is_empty());

    // Drained, it is prompt again: the next burst paces again.
    publish_burst(&mut p, "pace/t", BURST).await;
    assert_eq!(m.publishers_paced.get(), 2);
    drain_in_order(&mut s, "pace/t", BURST).await;
    assert_eq!(m.dropped_queue_full.get(), 0);
}

/// A paced publisher is read again as soon as the subscriber has drained its queue to
/// `PACE_RESUME`, not at the end of the grace: the subscriber starts reading once the broker
/// has paced the publisher, and the grace never runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_publisher_resumes_when_the_subscriber_drains() {
    let b = start().await;
    let (mut s, mut p) = subscriber_and_publisher(&b, "drain", "drain/t").await;
    let publisher = tokio::spawn(async move {
        publish_burst(&mut p, "drain/t", 0).await;
        p
    });
    b.wait_until("the publisher is paced", |st| {
        st.metrics().publishers_paced.get() == 1
    })
    .await;
    drain_in_order(&mut s, "drain/t", 0).await;
    let _p = publisher.await.expect("publisher task");
    let m = b.state().metrics();
    assert_eq!(
        m.pace_expired.get(),
        0,
        "the subscriber drained to {PACE_RESUME} right away, yet the publisher waited out the \
         {STUCK_AFTER:?} grace (or the machine stalled the test that long)"
    );
    assert_eq!(m.dropped_queue_full.get(), 0);
}

/// A client is never paced by its own queue, nor while its own deliveries are in flight: it
/// publishes to a topic it subscribes to and reads nothing, so only its reads could bring in
/// the acknowledgements that drain that queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_not_paced_by_its_own_queue() {
    let b = start().await;
    let mut c = Raw::connect_v311(b.addr, "self-pace").await;
    assert_eq!(c.subscribe(1, "self/t", 1).await, 1);
    for i in 0..BURST {
        let pid = u16::try_from(i + 1).expect("packet id");
        c.send(&publish_packet("self/t", &payload(i), 1, false, false, pid))
            .await;
    }
    // Every PUBACK arrives (with the deliveries of the first window between them).
    let mut acked = 0;
    while acked < BURST {
        if let starling::codec::Packet::PubAck(_) = c.recv().await {
            acked += 1;
        }
    }
    let m = b.state().metrics();
    assert_eq!(m.publishers_paced.get(), 0);
    assert_eq!(m.dropped_queue_full.get(), 0);
}

/// A queue already `PACE_UNTIL` deep paces nobody (it would hold the publisher for every
/// message until drained); the full queue still does, by overload rule (c). A subscriber that
/// reads nothing lets the queue pass `PACE_AT` (paced once, the grace runs out) and then
/// `PACE_UNTIL`; prompt again once it takes a message, it still paces nobody past the band.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_deeper_than_the_pacing_band_paces_nobody() {
    let b = start().await;
    let m = b.state().metrics();
    let (mut s, mut p) = subscriber_and_publisher(&b, "deep", "deep/t").await;
    let n = starling::broker::PACE_UNTIL + 50;
    for i in 0..n {
        let pid = u16::try_from(i + 1).expect("packet id");
        p.publish("deep/t", &payload(i), 1, false, pid).await;
    }
    assert_eq!(m.publishers_paced.get(), 1);
    assert_eq!(m.pace_expired.get(), 1);
    // It acknowledges one message: the broker takes the next one out of its queue (it is
    // prompt again) and sends it, behind the first window of 20. The queue is still past the
    // band, so a second publisher is not paced by it.
    assert_publish(&s.recv_and_ack().await, "deep/t", &payload(0));
    for i in 1..=20 {
        assert_publish(&s.recv_publish().await, "deep/t", &payload(i));
    }
    let mut q = Raw::connect_v311(b.addr, "deep-pub2").await;
    q.publish("deep/t", b"late", 1, false, 1).await;
    assert_eq!(m.publishers_paced.get(), 1, "no pacing past PACE_UNTIL");
    assert_eq!(m.dropped_queue_full.get(), 0);
}

/// Overload rule (c) does not hold a client on its own full queue while its in-flight window is
/// full: only its reads bring in the acknowledgements that drain that queue, so it used to
/// wait out `STUCK_AFTER` (500 ms) with its reads paused. Its own copies that do not fit are
/// dropped at once, as for a stuck subscriber, and every PUBLISH is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_not_held_by_its_own_full_queue() {
    let mut cfg = test_config();
    cfg.mqtt.max_queued_messages = 10;
    let b = start_with(cfg).await;
    let mut c = Raw::connect_v311(b.addr, "self-full").await;
    assert_eq!(c.subscribe(1, "self/full", 1).await, 1);
    // One at a time, each acknowledged and delivered before the next: its window of 20 fills
    // with deliveries it never acknowledges, and its queue stays empty.
    for i in 0..20 {
        let pid = u16::try_from(i + 1).expect("packet id");
        c.send(&publish_packet(
            "self/full",
            &payload(i),
            1,
            false,
            false,
            pid,
        ))
        .await;
        let (mut acked, mut delivered) = (false, false);
        while !(acked && delivered) {
            match c.recv().await {
                starling::codec::Packet::PubAck(_) => acked = true,
                starling::codec::Packet::Publish(p) => {
                    assert_publish(&p, "self/full", &payload(i));
                    delivered = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    // Then a burst: 10 fit in its queue, the other 30 copies do not.
    const BURST_AFTER: usize = 40;
    for i in 20..20 + BURST_AFTER {
        let pid = u16::try_from(i + 1).expect("packet id");
        c.send(&publish_packet(
            "self/full",
            &payload(i),
            1,
            false,
            false,
            pid,
        ))
        .await;
    }
    let mut acked = 0;
    while acked < BURST_AFTER {
        if let starling::codec::Packet::PubAck(_) = c.recv().await {
            acked += 1;
        }
    }
    let m = b.state().metrics();
    assert_eq!(m.publishers_blocked.get(), 0, "never waited for itself");
    assert_eq!(m.dropped_queue_full.get(), 30);
}

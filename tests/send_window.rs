//! The in-flight window toward a subscriber: never more unacknowledged QoS 1/2 deliveries than
//! `max_inflight` (or a v5 client's smaller Receive Maximum [MQTT-3.3.4-9]), and a full window
//! of 16 or more is refilled once a quarter of it is free, then whole, so a busy subscriber
//! gets batches instead of a message per acknowledgement. Raw clients over TCP, each test
//! with its own broker on an ephemeral port.

mod common;

use common::*;

fn payload(i: usize) -> Vec<u8> {
    format!("w{i}").into_bytes()
}

/// A broker with `max_inflight = window`, a subscriber to `topic` at QoS 1 and `n` messages
/// published to it; returns the subscriber with the window it was sent (packet ids, checked
/// to be the first messages in order) and nothing more.
async fn full_window(window: usize, topic: &str, n: usize) -> (TestBroker, Raw, Vec<u16>) {
    let mut cfg = test_config();
    cfg.mqtt.max_inflight = u16::try_from(window).expect("window");
    let b = start_with(cfg).await;
    let mut s = Raw::connect_v311(b.addr, &format!("{topic}-sub")).await;
    assert_eq!(s.subscribe(1, topic, 1).await, 1);
    let mut p = Raw::connect_v311(b.addr, &format!("{topic}-pub")).await;
    for i in 0..n {
        let pid = u16::try_from(i + 1).expect("packet id");
        p.publish(topic, &payload(i), 1, false, pid).await;
    }
    let mut pids = Vec::new();
    for i in 0..window {
        let got = s.recv_publish().await;
        assert_publish(&got, topic, &payload(i));
        pids.push(got.packet_id);
    }
    assert_nothing_more(&mut s, "a full window").await;
    (b, s, pids)
}

/// Two PINGREQ round trips bring nothing but their PINGRESPs: a delivery the broker queued
/// while handling what was sent before the first (in the same turn, after its PINGRESP) is
/// written before the second PINGRESP.
async fn assert_nothing_more(s: &mut Raw, why: &str) {
    for _ in 0..2 {
        let got = s.ping().await;
        assert!(got.is_empty(), "{why}: nothing more is sent, got {got:?}");
    }
}

/// A full window of 20 is refilled once 5 are free: four acknowledgements send nothing, the
/// fifth sends five, in order; every message arrives once, in order [MQTT-4.6.0-2].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_window_is_refilled_a_quarter_at_a_time() {
    let n = 60;
    let (_b, mut s, first) = full_window(20, "step", n).await;
    for pid in &first[..4] {
        s.send(&puback(*pid)).await;
    }
    assert_nothing_more(&mut s, "4 of 20 free").await;
    s.send(&puback(first[4])).await;
    for i in 20..25 {
        assert_publish(&s.recv_publish().await, "step", &payload(i));
    }
    assert_nothing_more(&mut s, "the window is full again").await;
    for pid in &first[5..] {
        s.send(&puback(*pid)).await;
    }
    // The rest arrive in order, acknowledged one by one (refilled every fifth).
    for i in 25..n {
        assert_publish(&s.recv_and_ack().await, "step", &payload(i));
    }
    assert_nothing_more(&mut s, "all delivered").await;
}

/// A window below 16 is refilled at every acknowledgement, as the in-flight limit alone says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_window_is_refilled_at_each_acknowledgement() {
    let (_b, mut s, first) = full_window(10, "small", 12).await;
    s.send(&puback(first[0])).await;
    assert_publish(&s.recv_publish().await, "small", &payload(10));
    assert_nothing_more(&mut s, "the window is full again").await;
}

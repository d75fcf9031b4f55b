//! MQTT 3.1 / 3.1.1 core semantics that need more than one client or a stretch of time, checked
//! with raw bytes over TCP: the will after a protocol error, many concurrent takeovers of one
//! client id, no timed resends, and the publisher's acknowledgement waiting for room in a full
//! subscriber queue (overload rule (c)). Each test starts its own broker on an ephemeral port.
//! (tests/raw_protocol.rs holds the single-flow cases; it is long enough.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use starling::codec::{Packet, QoS};
use starling::protocol::STUCK_AFTER;

// ---------------------------------------------------------------------------------------------
// Will after a protocol error [MQTT-3.1.2-8]
// ---------------------------------------------------------------------------------------------

/// A client with a will that breaks the protocol is disconnected and its will is published
/// [MQTT-3.1.2-8] ("the Server closes the Network Connection because of a protocol error"),
/// for 3.1.1 and 3.1 clients alike. The watcher is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_published_after_protocol_error_mqtt_3_1_2_8() {
    let b = start().await;
    let mut watch = Raw::connect_v311(b.addr, "pe-watch").await;
    assert_eq!(watch.subscribe(1, "will/pe/#", 0).await, 0);

    let qos3_publish = publish_packet("pe/x", b"bad", 1, false, false, 1)
        .into_iter()
        .enumerate()
        .map(|(i, b)| if i == 0 { 0x36 } else { b })
        .collect::<Vec<u8>>();
    let cases: Vec<(&str, ConnectOpts, Vec<u8>)> = vec![
        // [MQTT-3.3.1-4] QoS bits 11.
        (
            "v311-qos3",
            ConnectOpts::v311("pe-311-q3"),
            qos3_publish.clone(),
        ),
        // Packet type 0 is reserved.
        (
            "v311-type0",
            ConnectOpts::v311("pe-311-t0"),
            vec![0x00, 0x00],
        ),
        // Type 15 is AUTH in MQTT 5 only; reserved in 3.1.1.
        (
            "v311-type15",
            ConnectOpts::v311("pe-311-t15"),
            vec![0xF0, 0x00],
        ),
        // [MQTT-3.6.1-1] PUBREL fixed-header flags must be 0010.
        (
            "v311-pubrel-flags",
            ConnectOpts::v311("pe-311-rel"),
            vec![0x60, 0x02, 0x00, 0x01],
        ),
        // A server-to-client packet.
        (
            "v311-connack",
            ConnectOpts::v311("pe-311-ack"),
            vec![0x20, 0x02, 0x00, 0x00],
        ),
        ("v31-qos3", ConnectOpts::v31("pe-31-q3"), qos3_publish),
        (
            "v31-type15",
            ConnectOpts::v31("pe-31-t15"),
            vec![0xF0, 0x00],
        ),
    ];
    for (name, opts, bad) in cases {
        let topic = format!("will/pe/{name}");
        let opts = opts.will(&topic, name.as_bytes(), 0, false);
        let (mut c, _) = Raw::connect(b.addr, &opts).await;
        assert!(c.ping().await.is_empty(), "{name}: connection works first");
        c.send(&bad).await;
        c.expect_closed(&format!("{name}: {}", hex(&bad))).await;
        let will = watch.recv_publish().await;
        assert_publish(&will, &topic, name.as_bytes());
    }
    assert!(
        watch.ping().await.is_empty(),
        "watcher still served, no stray wills"
    );
}

// ---------------------------------------------------------------------------------------------
// Takeover [MQTT-3.1.4-2]
// ---------------------------------------------------------------------------------------------

/// 20 CONNECTs with one client id (3.1.1, clean session 0) race. Every one gets CONNACK; in the
/// end exactly one connection is live, the broker counts one connected client and holds one
/// session, each of the 19 superseded connections was closed [MQTT-3.1.4-2] without publishing
/// its will (the session continues: Mosquitto's choice, see README), and exactly one CONNACK
/// (the first claim) said session present = 0. When the survivor drops, its will is published:
/// the one will of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_takeovers_leave_exactly_one_live_connection_mqtt_3_1_4_2() {
    const N: usize = 20;
    let b = start().await;
    let mut watch = Raw::connect_v311(b.addr, "ct-watch").await;
    assert_eq!(watch.subscribe(1, "ct/will", 0).await, 0);
    b.wait_until("the watcher is counted", |s| {
        s.metrics().clients_connected.get() == 1
    })
    .await;

    let addr = b.addr;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            tokio::spawn(async move {
                let opts = ConnectOpts::v311("ct-same").clean(false).will(
                    "ct/will",
                    format!("{i}").as_bytes(),
                    0,
                    false,
                );
                let (raw, ack) = Raw::connect(addr, &opts).await;
                (i, raw, ack.session_present)
            })
        })
        .collect();
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.unwrap());
    }
    let fresh = conns.iter().filter(|(_, _, present)| !present).count();
    assert_eq!(
        fresh, 1,
        "only the first claim finds no session [MQTT-3.2.2-3]"
    );

    // Superseded connections close promptly; the live one stays open.
    let checks: Vec<_> = conns
        .into_iter()
        .map(|(i, mut raw, _)| {
            tokio::spawn(async move {
                let closed = raw.closed_within(CLOSE_WAIT).await;
                (i, raw, closed.is_ok())
            })
        })
        .collect();
    let mut live = Vec::new();
    let mut closed = Vec::new();
    for c in checks {
        let (i, raw, was_closed) = c.await.unwrap();
        if was_closed {
            closed.push(i);
        } else {
            live.push((i, raw));
        }
    }
    assert_eq!(
        live.len(),
        1,
        "live connections: {:?}",
        live.iter().map(|l| l.0).collect::<Vec<_>>()
    );
    assert_eq!(closed.len(), N - 1);
    let (live_i, mut live_raw) = live.pop().unwrap();
    assert!(live_raw.ping().await.is_empty(), "the survivor is served");

    assert_eq!(b.clients_connected(), 2, "the survivor and the watcher");
    assert_eq!(
        b.state().session_count(),
        2,
        "one session for ct-same, one for the watcher"
    );

    // No will for a superseded connection: the session continued each time.
    assert!(
        watch.ping().await.is_empty(),
        "a superseded connection's will was published"
    );
    // The survivor's will goes when it drops: it is the only one.
    drop(live_raw);
    let w = watch.recv_publish().await;
    assert_publish(&w, "ct/will", live_i.to_string().as_bytes());
    assert!(watch.ping().await.is_empty(), "exactly one will");
}

/// MQTT 3.1.1 takeover and the old connection's will. The spec publishes a will whenever the
/// connection closes other than by DISCONNECT [MQTT-3.1.2-8]; Starling follows Mosquitto
/// (documented in the README): a takeover that continues the session (clean session 0 on both
/// sides) publishes no will; one that ends it (the old connection had clean session 1
/// [MQTT-3.1.2-6], or the new one has clean session 1) publishes the old will before the new
/// CONNACK [MQTT-3.1.4-2]. The watcher's next message after a marker published by the new
/// connection tells which.
#[tokio::test]
async fn v311_takeover_publishes_the_will_only_when_the_session_ends() {
    let b = start().await;
    let mut watch = Raw::connect_v311(b.addr, "tw-watch").await;
    assert_eq!(watch.subscribe(1, "tw/#", 0).await, 0);
    // (name, old clean session, new clean session, will published)
    let cases = [
        ("keep-keep", false, false, false),
        ("keep-clean", false, true, true),
        ("clean-keep", true, false, true),
        ("clean-clean", true, true, true),
    ];
    for (name, old_clean, new_clean, published) in cases {
        let id = format!("tw-{name}");
        let will_topic = format!("tw/{name}/will");
        let old_opts = ConnectOpts::v311(&id)
            .clean(old_clean)
            .will(&will_topic, b"gone", 0, false);
        let (mut old, _) = Raw::connect(b.addr, &old_opts).await;
        let (mut new, ack) = Raw::connect(b.addr, &ConnectOpts::v311(&id).clean(new_clean)).await;
        assert_eq!(ack.session_present, !old_clean && !new_clean, "{name}");
        assert!(
            old.closed_within(CLOSE_WAIT).await.is_ok(),
            "{name}: old open"
        );
        let marker = format!("tw/{name}/marker");
        new.publish(&marker, b"m", 0, false, 0).await;
        let first = watch.recv_publish().await;
        if published {
            assert_publish(&first, &will_topic, b"gone");
            assert_publish(&watch.recv_publish().await, &marker, b"m");
        } else {
            assert_eq!(
                &*first.topic, marker,
                "{name}: the old connection's will was published although the session continues"
            );
        }
        new.send(&DISCONNECT).await;
    }
    assert!(watch.ping().await.is_empty(), "no stray wills");
}

/// The global queue budget tolerates a subscriber's connection taking a delivery out of its
/// queue (subtracting its cost) before the routing thread that queued it has added the cost:
/// that order happens with two worker threads (the takeover test above hit it with wills),
/// and it must neither panic on underflow nor leave the budget looking saturated.
#[test]
fn budget_survives_dequeue_before_enqueue_accounting() {
    let budget = starling::broker::Budget::new(100, 50);
    budget.sub(10);
    budget.add(5);
    assert!(
        !budget.is_saturated(),
        "a transient negative total is not an overload"
    );
    budget.add(10);
    assert_eq!(budget.used(), 5);
    assert!(!budget.is_saturated());
    budget.add(200);
    assert!(budget.is_saturated(), "the high mark still works");
    budget.sub(200);
    assert!(!budget.is_saturated());
    assert_eq!(budget.used(), 5);
}

/// The old connection is closed before the new one gets its CONNACK [MQTT-3.1.4-2], even when
/// closing it is slow: the old client stopped reading, so the broker's final flush to it stalls
/// (bounded by the broker) before the socket is shut. The moment the new CONNACK has been read,
/// the broker must already count the old connection as gone (it counts a connection out only
/// after shutting its socket); afterwards the old socket reaches EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_connection_closed_before_new_connack_mqtt_3_1_4_2() {
    let mut cfg = test_config();
    cfg.mqtt.max_queued_messages = 10;
    let b = start_with(cfg).await;
    let opts = ConnectOpts::v311("seq-take").clean(false);
    let (mut old, _) = Raw::connect(b.addr, &opts).await;
    assert_eq!(old.subscribe(1, "flood/t", 0).await, 0);

    // Fill every buffer between the broker and the non-reading old client until its session
    // queue overflows: its connection then holds unwritten bytes it cannot send. (The round
    // trip after each message gives the old connection time to move what it can.)
    let mut p = Raw::connect_v311(b.addr, "seq-flood").await;
    let payload = vec![0x55u8; 64 * 1024];
    let mut sent = 0;
    while b.state().metrics().dropped_queue_full.get() == 0 {
        assert!(sent < 2000, "the old client's buffers never filled");
        p.publish("flood/t", &payload, 0, false, 0).await;
        assert!(p.ping().await.is_empty());
        sent += 1;
    }
    println!("{sent} messages of 64 KiB filled the old client's buffers");
    p.send(&DISCONNECT).await;
    p.expect_closed("publisher after DISCONNECT").await;
    b.wait_until("only the old client is connected", |s| {
        s.metrics().clients_connected.get() == 1
    })
    .await;

    let t0 = Instant::now();
    let (mut new, ack) = Raw::connect(b.addr, &opts).await;
    let connack_after = t0.elapsed();
    let connected = b.clients_connected();
    println!("new CONNACK {connack_after:?} after CONNECT");
    assert!(ack.session_present);
    assert_eq!(
        connected, 1,
        "the new CONNACK arrived {connack_after:?} after CONNECT while the old connection was \
         still open [MQTT-3.1.4-2]"
    );
    match old.closed_within(WAIT).await {
        Ok(_) => {}
        Err(_) => panic!("the taken-over connection never reached EOF"),
    }
    // The resumed session hands over what was still queued for the old connection.
    for p in new.ping().await {
        assert!(
            matches!(&p, Packet::Publish(m) if m.topic == "flood/t".into()),
            "{p:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// No timed retries [MQTT-4.4.0-1]
// ---------------------------------------------------------------------------------------------

/// An unacknowledged outbound QoS 1 PUBLISH and QoS 2 PUBLISH (no PUBREC) are not resent while
/// the connection lives, however long the client waits and pings [MQTT-4.4.0-1]; they are
/// resent, with DUP=1, the same packet ids and in order, only when the session reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_resend_while_connected_only_on_reconnect_mqtt_4_4_0_1() {
    let b = start().await;
    let opts = ConnectOpts::v311("nr-sub").clean(false);
    let (mut s, _) = Raw::connect(b.addr, &opts).await;
    assert_eq!(s.subscribe(1, "nr/t", 2).await, 2);
    let mut p = Raw::connect_v311(b.addr, "nr-pub").await;
    p.publish("nr/t", b"q1", 1, false, 1).await;
    p.publish("nr/t", b"q2", 2, false, 2).await;
    let m1 = s.recv_publish().await;
    let m2 = s.recv_publish().await;
    assert_publish(&m1, "nr/t", b"q1");
    assert_publish(&m2, "nr/t", b"q2");
    assert_eq!((m1.qos, m2.qos), (QoS::AtLeastOnce, QoS::ExactlyOnce));

    // ~3 s of PINGREQs and nothing else: each PINGRESP proves nothing was sent before it.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let before = s.ping().await;
        assert!(
            before.is_empty(),
            "resent after {:?} on the same connection [MQTT-4.4.0-1]: {before:?}",
            t0.elapsed()
        );
    }
    drop(s);
    b.wait_until("the subscriber is offline", |st| {
        st.metrics().clients_connected.get() == 1
    })
    .await;

    let (mut s, ack) = Raw::connect(b.addr, &opts).await;
    assert!(ack.session_present);
    for (first, payload) in [(&m1, b"q1"), (&m2, b"q2")] {
        let again = s.recv_publish().await;
        assert_publish(&again, "nr/t", payload);
        assert!(again.dup, "resent with DUP=1 [MQTT-3.3.1-1]: {again:?}");
        assert_eq!(again.packet_id, first.packet_id);
        assert_eq!(again.qos, first.qos);
    }
    s.send(&puback(m1.packet_id)).await;
    s.send(&pubrec(m2.packet_id)).await;
    match s.recv().await {
        Packet::PubRel(r) => assert_eq!(r.packet_id, m2.packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    s.send(&pubcomp(m2.packet_id)).await;
    assert!(
        s.ping().await.is_empty(),
        "nothing more after the flows completed"
    );
}

// ---------------------------------------------------------------------------------------------
// Overload rule (c): acknowledged once in every matching queue
// ---------------------------------------------------------------------------------------------

/// A broker where one unacknowledged QoS 1 message fills the window and two more fill the
/// queue, and a subscriber in exactly that state; returns (broker, subscriber, publisher,
/// packet id of the in-flight message).
async fn full_subscriber(tag: &str) -> (TestBroker, Raw, Raw, u16) {
    let mut cfg = test_config();
    cfg.mqtt.max_inflight = 1;
    cfg.mqtt.max_queued_messages = 2;
    let b = start_with(cfg).await;
    let mut s = Raw::connect_v311(b.addr, &format!("{tag}-sub")).await;
    assert_eq!(s.subscribe(1, "ov/t", 1).await, 1);
    let mut p = Raw::connect_v311(b.addr, &format!("{tag}-pub")).await;
    p.publish("ov/t", b"m1", 1, false, 1).await;
    // m1 is in flight (window 1) before m2 and m3 arrive, so exactly those two are queued.
    let m1 = s.recv_publish().await;
    assert_publish(&m1, "ov/t", b"m1");
    p.publish("ov/t", b"m2", 1, false, 2).await;
    p.publish("ov/t", b"m3", 1, false, 3).await;
    let queued = b.state().queued_messages();
    assert_eq!(queued, 3, "one in flight and two queued");
    (b, s, p, m1.packet_id)
}

/// Overload rule (c): with the subscriber's queue full, the publisher's QoS 1 PUBLISH is not
/// acknowledged; once the subscriber acknowledges (making room), the message is queued, the
/// PUBACK goes out, nothing is dropped, and the subscriber gets every message in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_puback_waits_for_room_in_a_full_subscriber_queue() {
    let (b, mut s, mut p, m1) = full_subscriber("ovd").await;
    let sent = Instant::now();
    p.send(&publish_packet("ov/t", b"m4", 1, false, false, 4))
        .await;
    // Shorter than STUCK_AFTER, so this watches the "waiting for room" phase only.
    let quiet = STUCK_AFTER / 2;
    match p.recv_timeout(quiet).await {
        Recv::Timeout => {}
        other => panic!("PUBACK (or anything) sent while the subscriber queue is full: {other:?}"),
    }
    s.send(&puback(m1)).await;
    match p.recv().await {
        Packet::PubAck(a) => assert_eq!(a.packet_id, 4),
        other => panic!("expected PUBACK 4, got {other:?}"),
    }
    let waited = sent.elapsed();
    assert_eq!(
        b.state().metrics().dropped_queue_full.get(),
        0,
        "the PUBACK came after {waited:?}: the subscriber made room, nothing may be dropped \
         (if this exceeds STUCK_AFTER {STUCK_AFTER:?}, the machine was too slow for the test)"
    );
    for m in [&b"m2"[..], b"m3", b"m4"] {
        assert_publish(&s.recv_and_ack().await, "ov/t", m);
    }
    assert!(s.ping().await.is_empty());
}

/// Overload rule (c), a subscriber that never makes room: the PUBACK is held for STUCK_AFTER,
/// then sent with the message dropped for that subscriber (counted); the subscriber later gets
/// what was queued but not the dropped message, and once drained it gets new messages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_puback_sent_after_stuck_grace_with_the_drop_counted() {
    let (b, mut s, mut p, m1) = full_subscriber("ovs").await;
    let sent = Instant::now();
    p.send(&publish_packet("ov/t", b"m4", 1, false, false, 4))
        .await;
    match p.recv().await {
        Packet::PubAck(a) => assert_eq!(a.packet_id, 4),
        other => panic!("expected PUBACK 4, got {other:?}"),
    }
    let waited = sent.elapsed();
    assert!(
        waited >= STUCK_AFTER,
        "PUBACK after {waited:?}, before the {STUCK_AFTER:?} grace for a full queue ran out"
    );
    assert_eq!(b.state().metrics().dropped_queue_full.get(), 1);

    s.send(&puback(m1)).await;
    for m in [&b"m2"[..], b"m3"] {
        assert_publish(&s.recv_and_ack().await, "ov/t", m);
    }
    assert!(
        s.ping().await.is_empty(),
        "m4 was dropped for this subscriber"
    );
    p.publish("ov/t", b"m5", 1, false, 5).await;
    assert_publish(&s.recv_and_ack().await, "ov/t", b"m5");
}

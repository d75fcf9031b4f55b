//! Resource limits and rate limits: one test per `[limits]` / `[mqtt]` limit and per rate-limit
//! reason code, each for MQTT 3.1.1 (close, SUBACK 0x80, TCP backpressure) and MQTT 5 (reason
//! codes). Test names cite the configuration key and, where there is one, the normative statement.
//!
//! Timing assertions are lower bounds only ("the broker slowed the client down by at least ..."),
//! never upper bounds, so a loaded machine cannot make them fail. Waits are bounded; "does not
//! happen" checks are a PINGREQ/PINGRESP round trip, which proves everything sent before it has
//! been read.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use starling::codec::{
    self, ConnAck, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    Subscribe, SubscriptionOptions,
};
use starling::config::{Config, SlowConsumerPolicy};

// ---------------------------------------------------------------------------------------------
// MQTT 5 helpers (packets encoded with starling::codec, sent through the raw client)
// ---------------------------------------------------------------------------------------------

fn v5(p: &Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    codec::encode(p, ProtocolVersion::V5, &mut b);
    b.to_vec()
}

/// A v5 client: clean start, keep alive 0, Session Expiry 0. Asserts CONNACK 0x00.
async fn connect_v5(addr: SocketAddr, client_id: &str) -> (Raw, ConnAck) {
    let mut raw = Raw::open(addr).await;
    raw.version = ProtocolVersion::V5;
    let c = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 0,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
        bridge: false,
    };
    raw.send(&v5(&Packet::Connect(Box::new(c)))).await;
    match raw.recv().await {
        Packet::ConnAck(a) => {
            assert_eq!(
                a.code,
                ReasonCode::SUCCESS,
                "v5 CONNACK for {client_id}: {a:?}"
            );
            (raw, a)
        }
        other => panic!("expected CONNACK for {client_id}, got {other:?}"),
    }
}

fn v5_publish(topic: &str, payload: &[u8], qos: QoS, pid: u16) -> Vec<u8> {
    v5(&Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.to_owned().into(),
        packet_id: pid,
        properties: Default::default(),
        payload: Bytes::copy_from_slice(payload),
    }))
}

fn v5_subscribe(pid: u16, filters: &[(&str, QoS)]) -> Vec<u8> {
    v5(&Packet::Subscribe(Subscribe {
        packet_id: pid,
        filters: filters
            .iter()
            .map(|(f, q)| ((*f).to_owned(), SubscriptionOptions::new(*q)))
            .collect(),
        properties: Default::default(),
    }))
}

/// The reason codes of the next packet, which must be the SUBACK for `pid`.
async fn suback_codes(raw: &mut Raw, pid: u16) -> Vec<u8> {
    match raw.recv().await {
        Packet::SubAck(s) => {
            assert_eq!(s.packet_id, pid, "SUBACK packet id");
            s.reasons.iter().map(|r| r.0).collect()
        }
        other => panic!("expected SUBACK {pid}, got {other:?}"),
    }
}

/// The broker ends with a v5 DISCONNECT carrying `reason` and then closes the connection.
/// Returns every packet received before the DISCONNECT.
async fn expect_disconnect(
    raw: &mut Raw,
    reason: ReasonCode,
    within: Duration,
    ctx: &str,
) -> Vec<Packet> {
    match raw.closed_within(within).await {
        Ok((mut seen, how)) => match seen.pop() {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(
                    d.reason, reason,
                    "{ctx}: DISCONNECT reason {:#04x}, expected {:#04x} ({d:?})",
                    d.reason.0, reason.0
                );
                assert!(
                    !seen.iter().any(|p| matches!(p, Packet::Disconnect(_))),
                    "{ctx}: more than one DISCONNECT: {seen:?}"
                );
                seen
            }
            last => panic!(
                "{ctx}: expected DISCONNECT {:#04x} before the close ({how}), last packet {last:?}, \
                 before it {seen:?}",
                reason.0
            ),
        },
        Err(seen) => panic!("{ctx}: connection still open after {within:?} (received {seen:?})"),
    }
}

/// A 3.1.1 subscriber to `filter` at QoS 1.
async fn subscriber(addr: SocketAddr, id: &str, filter: &str) -> Raw {
    let mut s = Raw::connect_v311(addr, id).await;
    assert_eq!(s.subscribe(1, filter, 1).await, 1, "SUBACK for {filter}");
    s
}

/// No further packet is waiting: a PINGREQ is answered with nothing queued before it.
async fn assert_nothing_more(raw: &mut Raw, ctx: &str) {
    let before = raw.ping().await;
    assert!(before.is_empty(), "{ctx}: unexpected packets {before:?}");
}

fn payload_str(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

/// Connects a 3.1.1 client once a connection slot is free again. The slot is returned when the
/// previous connection's task has ended, which the client cannot observe exactly, so a refused
/// attempt (closed at accept) is retried within [`WAIT`].
async fn connect_when_slot_free(addr: SocketAddr, id: &str) -> Raw {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut raw = Raw::open(addr).await;
        if raw.try_send(&ConnectOpts::v311(id).encode()).await.is_ok() {
            match raw.recv_timeout(WAIT).await {
                Recv::Packet(Packet::ConnAck(a)) => {
                    assert_eq!(a.code.0, 0, "CONNACK for {id}: {a:?}");
                    return raw;
                }
                Recv::Closed(_) => {}
                other => panic!("{id}: expected CONNACK or a close, got {other:?}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "{id}: still refused after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// limits.max_connections / listeners[].max_connections
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_connections_global_2_closes_third_at_accept() {
    let mut cfg = test_config();
    cfg.limits.max_connections = 2;
    let b = start_with(cfg).await;
    let mut c1 = Raw::connect_v311(b.addr, "c1").await;
    let mut c2 = Raw::connect_v311(b.addr, "c2").await;

    let mut c3 = Raw::open(b.addr).await;
    c3.expect_closed("third TCP connection with limits.max_connections = 2")
        .await;
    assert_eq!(b.state().metrics().refused_connections.get(), 1);
    // A refused connection never becomes a client, and the two others are unaffected.
    assert_eq!(b.clients_connected(), 2);
    c2.ping().await;

    c1.send(&DISCONNECT).await;
    c1.expect_closed("c1 after DISCONNECT").await;
    b.wait_until("c1 has left", |s| s.metrics().clients_connected.get() == 1)
        .await;
    let mut c4 = connect_when_slot_free(b.addr, "c4").await;
    c4.ping().await;
    c2.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_max_connections_1_closes_second_on_that_listener_only() {
    let mut cfg = test_config();
    cfg.listeners[0].max_connections = Some(1);
    let mut other = cfg.listeners[0].clone();
    other.max_connections = None;
    cfg.listeners.push(other);
    let b = start_with(cfg).await;
    let second_listener = b.handle().local_addrs()[1];

    let mut c1 = Raw::connect_v311(b.addr, "l1").await;
    let mut c2 = Raw::open(b.addr).await;
    c2.expect_closed("second connection with listeners[0].max_connections = 1")
        .await;
    assert_eq!(b.state().metrics().refused_connections.get(), 1);
    // The cap is per listener: the other listener still accepts.
    let mut c3 = Raw::connect_v311(second_listener, "l3").await;
    c3.ping().await;
    c1.ping().await;

    c1.send(&DISCONNECT).await;
    c1.expect_closed("l1 after DISCONNECT").await;
    b.wait_until("l1 has left", |s| s.metrics().clients_connected.get() == 1)
        .await;
    let mut c4 = connect_when_slot_free(b.addr, "l4").await;
    c4.ping().await;
}

// ---------------------------------------------------------------------------------------------
// mqtt.max_packet_size
// ---------------------------------------------------------------------------------------------

fn packet_size_config() -> Config {
    let mut cfg = test_config();
    cfg.mqtt.max_packet_size = 1024;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_max_packet_size_1024_v311_oversized_publish_closes() {
    let b = start_with(packet_size_config()).await;
    let mut sub = subscriber(b.addr, "ps-sub", "ps/#").await;
    let mut p = Raw::connect_v311(b.addr, "ps-pub").await;
    // Just under the limit (2 + 5 + 2 + 1000 bytes): accepted and delivered.
    p.publish("ps/t", &[b'a'; 1000], 1, false, 1).await;
    assert_publish(&sub.recv_and_ack().await, "ps/t", &[b'a'; 1000]);
    // 2 KB: the connection is closed without an answer (3.1.1 has no way to say why).
    p.send(&publish_packet("ps/t", &[b'b'; 2048], 1, false, false, 2))
        .await;
    p.expect_closed("2 KB PUBLISH with mqtt.max_packet_size = 1024")
        .await;
    assert_nothing_more(&mut sub, "the oversized PUBLISH must not be delivered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_max_packet_size_1024_v5_disconnect_0x95_mqtt_3_2_2_15() {
    let b = start_with(packet_size_config()).await;
    let mut sub = subscriber(b.addr, "ps5-sub", "ps/#").await;
    let (mut p, ack) = connect_v5(b.addr, "ps5-pub").await;
    // The limit is announced in CONNACK (Maximum Packet Size), which is what [MQTT-3.2.2-15]
    // binds the client to.
    assert_eq!(ack.properties.maximum_packet_size, Some(1024), "{ack:?}");
    p.send(&v5_publish("ps/t", &[b'a'; 1000], QoS::AtLeastOnce, 1))
        .await;
    match p.recv().await {
        Packet::PubAck(a) => assert_eq!((a.packet_id, a.reason), (1, ReasonCode::SUCCESS)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_publish(&sub.recv_and_ack().await, "ps/t", &[b'a'; 1000]);
    // Section 4.13: a packet over the limit is answered with DISCONNECT 0x95 and a close.
    p.send(&v5_publish("ps/t", &[b'b'; 2048], QoS::AtLeastOnce, 2))
        .await;
    let before = expect_disconnect(
        &mut p,
        ReasonCode::PACKET_TOO_LARGE,
        CLOSE_WAIT,
        "2 KB PUBLISH with mqtt.max_packet_size = 1024",
    )
    .await;
    assert!(
        before.is_empty(),
        "nothing but DISCONNECT expected: {before:?}"
    );
    assert_nothing_more(&mut sub, "the oversized PUBLISH must not be delivered").await;
}

// ---------------------------------------------------------------------------------------------
// limits.max_subscriptions_per_client
// ---------------------------------------------------------------------------------------------

fn subscriptions_config() -> Config {
    let mut cfg = test_config();
    cfg.limits.max_subscriptions_per_client = 2;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_subscriptions_per_client_2_v311_third_filter_suback_0x80() {
    let b = start_with(subscriptions_config()).await;
    let mut s = Raw::connect_v311(b.addr, "ms").await;
    s.send(&subscribe_packet(1, &[("s/a", 1), ("s/b", 1), ("s/c", 1)]))
        .await;
    assert_eq!(suback_codes(&mut s, 1).await, vec![1, 1, 0x80]);
    // Replacing an existing filter is not a new subscription [MQTT-3.8.4-3].
    s.send(&subscribe_packet(2, &[("s/a", 0)])).await;
    assert_eq!(suback_codes(&mut s, 2).await, vec![0]);
    s.send(&subscribe_packet(3, &[("s/d", 1)])).await;
    assert_eq!(
        suback_codes(&mut s, 3).await,
        vec![0x80],
        "still at the limit"
    );

    // The refused filter receives nothing; the replaced one delivers at its new QoS.
    let mut p = Raw::connect_v311(b.addr, "ms-pub").await;
    p.publish("s/c", b"refused", 1, false, 1).await;
    p.publish("s/a", b"replaced", 1, false, 2).await;
    let got = s.recv_publish().await;
    assert_publish(&got, "s/a", b"replaced");
    assert_eq!(got.qos, QoS::AtMostOnce, "granted QoS of the replacement");
    assert_nothing_more(&mut s, "s/c was refused").await;

    // Unsubscribing frees a slot.
    s.send(&unsubscribe_packet(4, &["s/b"])).await;
    assert!(matches!(s.recv().await, Packet::UnsubAck(u) if u.packet_id == 4));
    s.send(&subscribe_packet(5, &[("s/d", 1)])).await;
    assert_eq!(suback_codes(&mut s, 5).await, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_subscriptions_per_client_2_v31_third_filter_closes() {
    // MQTT 3.1's SUBACK has no failure code: the only honest answer is closing.
    let b = start_with(subscriptions_config()).await;
    let (mut s, _) = Raw::connect(b.addr, &ConnectOpts::v31("ms31")).await;
    s.send(&subscribe_packet(1, &[("s/a", 1), ("s/b", 1)]))
        .await;
    assert_eq!(suback_codes(&mut s, 1).await, vec![1, 1]);
    s.send(&subscribe_packet(2, &[("s/a", 0)])).await;
    assert_eq!(
        suback_codes(&mut s, 2).await,
        vec![0],
        "replacing is allowed"
    );
    s.send(&subscribe_packet(3, &[("s/c", 1)])).await;
    s.expect_closed("a third filter from a 3.1 client").await;
    b.wait_until("the clean session is gone", |st| st.session_count() == 0)
        .await;
    assert_eq!(b.state().subscription_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_subscriptions_per_client_defaults_to_10000_v5_suback_0x97() {
    let b = start().await;
    assert_eq!(
        b.state().config().limits.max_subscriptions_per_client,
        10_000
    );
    let (mut s, _) = connect_v5(b.addr, "msd").await;
    let filters: Vec<String> = (0..10_001).map(|i| format!("d/{i}")).collect();
    for (n, chunk) in filters.chunks(1_000).enumerate() {
        let pid = u16::try_from(n + 1).expect("few batches");
        let batch: Vec<(&str, QoS)> = chunk
            .iter()
            .map(|f| (f.as_str(), QoS::AtMostOnce))
            .collect();
        s.send(&v5_subscribe(pid, &batch)).await;
        let codes = suback_codes(&mut s, pid).await;
        let granted = codes.iter().filter(|&&c| c == 0).count();
        assert_eq!(
            granted + codes.iter().filter(|&&c| c == 0x97).count(),
            codes.len()
        );
        assert_eq!(granted, chunk.len().min(10_000 - n * 1_000), "batch {n}");
    }
    assert_eq!(b.state().subscription_count(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_subscriptions_per_client_2_v5_third_filter_suback_0x97() {
    let b = start_with(subscriptions_config()).await;
    let (mut s, _) = connect_v5(b.addr, "ms5").await;
    s.send(&v5_subscribe(
        1,
        &[
            ("s/a", QoS::AtLeastOnce),
            ("s/b", QoS::AtLeastOnce),
            ("s/c", QoS::AtLeastOnce),
        ],
    ))
    .await;
    assert_eq!(suback_codes(&mut s, 1).await, vec![1, 1, 0x97]);
    s.send(&v5_subscribe(2, &[("s/a", QoS::AtMostOnce)])).await;
    assert_eq!(suback_codes(&mut s, 2).await, vec![0], "replacing s/a");
    s.send(&v5_subscribe(3, &[("s/d", QoS::AtLeastOnce)])).await;
    assert_eq!(
        suback_codes(&mut s, 3).await,
        vec![0x97],
        "still at the limit"
    );

    let mut p = Raw::connect_v311(b.addr, "ms5-pub").await;
    p.publish("s/c", b"refused", 1, false, 1).await;
    p.publish("s/a", b"replaced", 1, false, 2).await;
    let got = s.recv_publish().await;
    assert_publish(&got, "s/a", b"replaced");
    assert_eq!(got.qos, QoS::AtMostOnce);
    assert_nothing_more(&mut s, "s/c was refused").await;
}

// ---------------------------------------------------------------------------------------------
// limits.max_topic_levels and limits.max_topic_length
// ---------------------------------------------------------------------------------------------

fn topic_config() -> Config {
    let mut cfg = test_config();
    cfg.limits.max_topic_levels = 3;
    cfg.limits.max_topic_length = 16;
    cfg
}

/// 4 levels, 7 bytes.
const DEEP: &str = "a/b/c/d";
/// 1 level, 17 bytes.
const LONG: &str = "abcdefghijklmnopq";
/// Exactly at the limits: 3 levels, and 16 bytes.
const DEEPEST_OK: &str = "a/b/c";
const LONGEST_OK: &str = "abcdefghijklmnop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_topic_levels_3_and_length_16_v311_publish_closes() {
    let b = start_with(topic_config()).await;
    let mut sub = subscriber(b.addr, "tl-sub", "#").await;
    let mut ok = Raw::connect_v311(b.addr, "tl-ok").await;
    ok.publish(DEEPEST_OK, b"3 levels", 1, false, 1).await;
    ok.publish(LONGEST_OK, b"16 bytes", 1, false, 2).await;
    assert_publish(&sub.recv_and_ack().await, DEEPEST_OK, b"3 levels");
    assert_publish(&sub.recv_and_ack().await, LONGEST_OK, b"16 bytes");

    for (topic, what) in [
        (DEEP, "4-level topic, limits.max_topic_levels = 3"),
        (LONG, "17-byte topic, limits.max_topic_length = 16"),
    ] {
        let mut p = Raw::connect_v311(b.addr, "tl-pub").await;
        p.send(&publish_packet(topic, b"x", 1, false, false, 1))
            .await;
        p.expect_closed(what).await;
    }
    assert_nothing_more(&mut sub, "refused topics must not be delivered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_topic_levels_3_and_length_16_v5_publish_disconnect_0x90() {
    let b = start_with(topic_config()).await;
    let mut sub = subscriber(b.addr, "tl5-sub", "#").await;
    for (topic, what) in [
        (DEEP, "4-level topic, limits.max_topic_levels = 3"),
        (LONG, "17-byte topic, limits.max_topic_length = 16"),
    ] {
        let (mut p, _) = connect_v5(b.addr, "tl5-pub").await;
        p.send(&v5_publish(DEEPEST_OK, b"ok", QoS::AtMostOnce, 0))
            .await;
        p.send(&v5_publish(topic, b"x", QoS::AtLeastOnce, 1)).await;
        let before =
            expect_disconnect(&mut p, ReasonCode::TOPIC_NAME_INVALID, CLOSE_WAIT, what).await;
        assert!(before.is_empty(), "{what}: {before:?}");
        assert_publish(&sub.recv_and_ack().await, DEEPEST_OK, b"ok");
    }
    assert_nothing_more(&mut sub, "refused topics must not be delivered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_topic_levels_3_and_length_16_v311_subscribe_suback_0x80() {
    let b = start_with(topic_config()).await;
    let mut s = Raw::connect_v311(b.addr, "tf").await;
    s.send(&subscribe_packet(
        1,
        &[
            (DEEPEST_OK, 1),
            ("a/b/c/#", 1),
            ("+/+/+", 1),
            ("+/+/+/+", 1),
            (LONGEST_OK, 1),
            (LONG, 1),
        ],
    ))
    .await;
    assert_eq!(
        suback_codes(&mut s, 1).await,
        vec![1, 0x80, 1, 0x80, 1, 0x80]
    );
    // The connection stays usable.
    s.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_topic_levels_3_and_length_16_v5_subscribe_suback_0x8f() {
    let b = start_with(topic_config()).await;
    let (mut s, _) = connect_v5(b.addr, "tf5").await;
    let q = QoS::AtLeastOnce;
    s.send(&v5_subscribe(
        1,
        &[
            (DEEPEST_OK, q),
            ("a/b/c/#", q),
            ("+/+/+", q),
            ("+/+/+/+", q),
            (LONGEST_OK, q),
            (LONG, q),
        ],
    ))
    .await;
    assert_eq!(
        suback_codes(&mut s, 1).await,
        vec![1, 0x8F, 1, 0x8F, 1, 0x8F]
    );
    s.ping().await;
}

/// A refused filter is named in the SUBACK's Reason String [MQTT-3.9.2-1], cut as a log field
/// is: a 60,000-level filter (the shape of CVE-2019-11779) must not come back as a 60 KB SUBACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_long_filter_is_cut_in_the_reason_string() {
    let b = start_with(test_config()).await;
    let (mut s, _) = connect_v5(b.addr, "tf-long").await;
    let filter = "/".repeat(60_000);
    s.send(&v5_subscribe(7, &[(filter.as_str(), QoS::AtLeastOnce)]))
        .await;
    match s.recv().await {
        Packet::SubAck(ack) => {
            assert_eq!(ack.packet_id, 7);
            assert_eq!(ack.reasons.iter().map(|r| r.0).collect::<Vec<_>>(), [0x8F]);
            let why = ack.properties.reason_string.clone().unwrap_or_default();
            assert!(why.len() < 400, "Reason String of {} bytes", why.len());
            assert!(why.contains("(60000 bytes)"), "{why}");
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    s.ping().await;
}

// ---------------------------------------------------------------------------------------------
// mqtt.max_queued_messages and mqtt.max_queued_bytes
// ---------------------------------------------------------------------------------------------

/// A persistent 3.1.1 subscriber goes offline, ten QoS 1 messages of `payload_len` bytes are
/// published to it, and it comes back: returns the payloads it receives (in order) and the
/// `dropped_queue_full` count.
async fn offline_queue_run(cfg: Config, payload_len: usize) -> (Vec<String>, u64) {
    let b = start_with(cfg).await;
    let opts = ConnectOpts::v311("q-sub").clean(false);
    let (mut s, _) = Raw::connect(b.addr, &opts).await;
    assert_eq!(s.subscribe(1, "q/t", 1).await, 1);
    s.send(&DISCONNECT).await;
    s.expect_closed("q-sub after DISCONNECT").await;
    b.wait_until("q-sub is offline", |st| {
        st.metrics().clients_connected.get() == 0
    })
    .await;

    let mut p = Raw::connect_v311(b.addr, "q-pub").await;
    for i in 0..10u16 {
        let mut payload = format!("{i}").into_bytes();
        payload.resize(payload_len, b'.');
        p.publish("q/t", &payload, 1, false, i + 1).await;
    }
    // Routing (and dropping) happens before the PUBACK, so the count is final here.
    let dropped = b.state().metrics().dropped_queue_full.get();

    let (mut s, ack) = Raw::connect(b.addr, &opts).await;
    assert!(ack.session_present, "[MQTT-3.2.2-2] session present");
    let mut got = Vec::new();
    for pkt in s.ping().await {
        let Packet::Publish(pb) = pkt else {
            panic!("expected only PUBLISH before PINGRESP, got {pkt:?}");
        };
        s.send(&puback(pb.packet_id)).await;
        got.push(payload_str(&pb).trim_end_matches('.').to_owned());
    }
    // Everything queued has been sent: a second round trip brings nothing new.
    assert_nothing_more(&mut s, "after the queued messages").await;
    (got, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_max_queued_messages_5_offline_session_keeps_first_5() {
    let mut cfg = test_config();
    cfg.mqtt.max_queued_messages = 5;
    let (got, dropped) = offline_queue_run(cfg, 10).await;
    assert_eq!(
        got,
        ["0", "1", "2", "3", "4"],
        "the first 5 are kept, later ones dropped"
    );
    assert_eq!(dropped, 5, "metrics.dropped_queue_full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_max_queued_bytes_5500_offline_session_keeps_first_5_of_1000_bytes() {
    let mut cfg = test_config();
    cfg.mqtt.max_queued_messages = 0;
    // Five 1000-byte payloads fit (with up to 100 bytes of per-message bookkeeping each), a
    // sixth does not.
    cfg.mqtt.max_queued_bytes = 5_500;
    let (got, dropped) = offline_queue_run(cfg, 1000).await;
    assert_eq!(
        got,
        ["0", "1", "2", "3", "4"],
        "the first 5 are kept, later ones dropped"
    );
    assert_eq!(dropped, 5, "metrics.dropped_queue_full");
}

// ---------------------------------------------------------------------------------------------
// limits.max_publish_rate
// ---------------------------------------------------------------------------------------------

/// Sends `packets` in one write and waits for one PUBACK per packet id in `1..=n`; returns how
/// long that took.
async fn pipelined_puback_time(p: &mut Raw, packets: &[u8], n: u16) -> Duration {
    let t0 = Instant::now();
    p.send(packets).await;
    let mut acked = HashSet::new();
    while acked.len() < usize::from(n) {
        match p.recv_timeout(WAIT).await {
            Recv::Packet(Packet::PubAck(a)) => {
                assert_eq!(a.reason, ReasonCode::SUCCESS);
                assert!(acked.insert(a.packet_id), "PUBACK {} twice", a.packet_id);
            }
            other => panic!(
                "expected PUBACK (got {} of {n}), got {other:?}",
                acked.len()
            ),
        }
    }
    assert_eq!(acked, (1..=n).collect());
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_publish_rate_20_v311_slowed_by_backpressure_not_disconnected() {
    let mut cfg = test_config();
    cfg.limits.max_publish_rate = 20;
    let b = start_with(cfg).await;
    let mut sub = subscriber(b.addr, "rate-sub", "rate/#").await;
    let mut p = Raw::connect_v311(b.addr, "rate-pub").await;
    let mut bytes = Vec::new();
    for pid in 1..=60u16 {
        bytes.extend(publish_packet(
            "rate/t",
            format!("{pid}").as_bytes(),
            1,
            false,
            false,
            pid,
        ));
    }
    let took = pipelined_puback_time(&mut p, &bytes, 60).await;
    println!("60 QoS 1 PUBLISH at max_publish_rate = 20/s took {took:?} (lower bound 1.5 s)");
    // A one-second burst of 20, then 20/s: the 60th cannot be read before ~1.95 s.
    assert!(
        took >= Duration::from_millis(1500),
        "60 publishes at 20/s acknowledged after only {took:?}"
    );
    p.ping().await;
    for i in 1..=60 {
        let got = sub.recv_and_ack().await;
        assert_publish(&got, "rate/t", format!("{i}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_publish_rate_5_v5_burst_disconnect_0x96() {
    let mut cfg = test_config();
    cfg.limits.max_publish_rate = 5;
    let b = start_with(cfg).await;
    let mut sub = subscriber(b.addr, "rate5-sub", "rate/#").await;
    let (mut p, _) = connect_v5(b.addr, "rate5-pub").await;
    let mut bytes = Vec::new();
    for i in 0..30 {
        bytes.extend(v5_publish(
            "rate/t",
            format!("{i}").as_bytes(),
            QoS::AtMostOnce,
            0,
        ));
    }
    p.send(&bytes).await;
    let before = expect_disconnect(
        &mut p,
        ReasonCode::MESSAGE_RATE_TOO_HIGH,
        CLOSE_WAIT,
        "30 QoS 0 PUBLISH at once with limits.max_publish_rate = 5",
    )
    .await;
    assert!(before.is_empty(), "{before:?}");
    // The burst allowance (one second's worth) went through; nothing after the refusal did.
    for i in 0..5 {
        assert_publish(
            &sub.recv_and_ack().await,
            "rate/t",
            format!("{i}").as_bytes(),
        );
    }
    assert_nothing_more(&mut sub, "publishes after the 0x96 refusal").await;
}

// ---------------------------------------------------------------------------------------------
// limits.max_publish_bandwidth
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_publish_bandwidth_200_v5_puback_and_pubrec_0x97() {
    let mut cfg = test_config();
    cfg.limits.max_publish_bandwidth = 200;
    let b = start_with(cfg).await;
    let mut sub = subscriber(b.addr, "bw5-sub", "bw/#").await;
    let (mut p, _) = connect_v5(b.addr, "bw5-pub").await;
    let body = [b'x'; 150];

    p.send(&v5_publish("bw/t", &body, QoS::AtLeastOnce, 1))
        .await;
    p.send(&v5_publish("bw/t", &body, QoS::AtLeastOnce, 2))
        .await;
    p.send(&v5_publish("bw/t", &body, QoS::ExactlyOnce, 3))
        .await;
    p.send(&v5_publish("bw/t", &body, QoS::AtMostOnce, 0)).await;
    let acks = p.ping().await;
    let codes: Vec<(&str, u16, u8)> = acks
        .iter()
        .map(|a| match a {
            Packet::PubAck(r) => ("PUBACK", r.packet_id, r.reason.0),
            Packet::PubRec(r) => ("PUBREC", r.packet_id, r.reason.0),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            ("PUBACK", 1, 0x00),
            ("PUBACK", 2, 0x97),
            ("PUBREC", 3, 0x97)
        ],
        "150-byte publishes back to back at 200 bytes/s"
    );
    assert_eq!(
        b.state().metrics().dropped_quota.get(),
        3,
        "the QoS 1, QoS 2 and QoS 0 publishes over quota are counted"
    );
    // Only the first was delivered.
    assert_publish(&sub.recv_and_ack().await, "bw/t", &body);
    assert_nothing_more(&mut sub, "refused publishes must not be delivered").await;

    // Not a disconnect: once the bucket has refilled (at least 0.5 s), publishing works again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    p.send(&v5_publish("bw/t", b"later", QoS::AtLeastOnce, 4))
        .await;
    match p.recv().await {
        Packet::PubAck(a) => assert_eq!((a.packet_id, a.reason), (4, ReasonCode::SUCCESS)),
        other => panic!("expected PUBACK 4, got {other:?}"),
    }
    assert_publish(&sub.recv_and_ack().await, "bw/t", b"later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_max_publish_bandwidth_200_v311_slowed_by_backpressure() {
    let mut cfg = test_config();
    cfg.limits.max_publish_bandwidth = 200;
    let b = start_with(cfg).await;
    let mut sub = subscriber(b.addr, "bw-sub", "bw/#").await;
    let mut p = Raw::connect_v311(b.addr, "bw-pub").await;
    let mut bytes = Vec::new();
    for pid in 1..=5u16 {
        let mut body = vec![b'0' + pid as u8];
        body.resize(150, b'x');
        bytes.extend(publish_packet("bw/t", &body, 1, false, false, pid));
    }
    let took = pipelined_puback_time(&mut p, &bytes, 5).await;
    println!("5 x 150-byte QoS 1 PUBLISH at max_publish_bandwidth = 200 B/s took {took:?} (lower bound 1.5 s)");
    // 750 bytes at 200 B/s with a 200-byte burst: the fifth is read after ~2 s.
    assert!(took >= Duration::from_millis(1500), "only {took:?}");
    p.ping().await;
    for pid in 1..=5u8 {
        let got = sub.recv_and_ack().await;
        assert_eq!(got.payload[0], b'0' + pid);
        assert_eq!(got.payload.len(), 150);
    }
    assert_eq!(
        b.state().metrics().dropped_quota.get(),
        0,
        "3.x is slowed, never refused"
    );
}

// ---------------------------------------------------------------------------------------------
// listeners[].max_publish_rate and listeners[].max_publish_bandwidth: one budget per listener
// ---------------------------------------------------------------------------------------------

/// Listener 0 with `limit` applied, listener 1 (another ephemeral port) without any; no
/// per-client limits. Returns the broker and listener 1's address.
async fn two_listeners(
    limit: impl FnOnce(&mut starling::config::ListenerConfig),
) -> (TestBroker, SocketAddr) {
    let mut cfg = test_config();
    let free = cfg.listeners[0].clone();
    limit(&mut cfg.listeners[0]);
    cfg.listeners.push(free);
    let b = start_with(cfg).await;
    let other = b.handle().local_addrs()[1];
    (b, other)
}

/// `n` QoS 1 PUBLISH packets (3.1.1) with packet ids `1..=n`, `len`-byte payloads starting with
/// `tag` and a running number, in one buffer for one pipelined write.
fn v311_batch(topic: &str, tag: &str, n: u16, len: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for pid in 1..=n {
        let mut body = format!("{tag}{pid}").into_bytes();
        body.resize(len.max(body.len()), b'.');
        bytes.extend(publish_packet(topic, &body, 1, false, false, pid));
    }
    bytes
}

/// Pipelines `batch` (`n` QoS 1 PUBLISH) in a task of its own; returns the client and how long
/// the last PUBACK took.
fn pipelined_in_task(
    mut p: Raw,
    batch: Vec<u8>,
    n: u16,
) -> tokio::task::JoinHandle<(Raw, Duration)> {
    tokio::spawn(async move {
        let took = pipelined_puback_time(&mut p, &batch, n).await;
        (p, took)
    })
}

/// A v5 client on the unlimited listener publishes `n` QoS 1 messages in one write and gets
/// `n` successful PUBACKs, no DISCONNECT: it does not draw on the limited listener's budget
/// (which is empty or in debt when this runs, so a shared budget would refuse it).
async fn other_listener_v5_unaffected(addr: SocketAddr, id: &str, n: u16, len: usize) {
    let (mut c, _) = connect_v5(addr, id).await;
    let mut bytes = Vec::new();
    for pid in 1..=n {
        bytes.extend(v5_publish(
            "other/t",
            &vec![b'o'; len],
            QoS::AtLeastOnce,
            pid,
        ));
    }
    c.send(&bytes).await;
    let acks = c.ping().await;
    let codes: Vec<(u16, u8)> = acks
        .iter()
        .map(|a| match a {
            Packet::PubAck(r) => (r.packet_id, r.reason.0),
            other => panic!("{id}: expected PUBACK, got {other:?}"),
        })
        .collect();
    // Nobody subscribes: accepted with 0x10 No matching subscribers.
    let want: Vec<(u16, u8)> = (1..=n).map(|pid| (pid, 0x10)).collect();
    assert_eq!(codes, want, "{id} on the unlimited listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_max_publish_rate_10_v311_two_clients_share_it_by_backpressure() {
    let (b, other) = two_listeners(|l| l.max_publish_rate = Some(10)).await;
    let mut sub = subscriber(b.addr, "lr-sub", "lr/#").await;
    let a = Raw::connect_v311(b.addr, "lr-a").await;
    let c = Raw::connect_v311(b.addr, "lr-b").await;
    let t0 = Instant::now();
    let a = pipelined_in_task(a, v311_batch("lr/t", "a", 20, 0), 20);
    let c = pipelined_in_task(c, v311_batch("lr/t", "b", 20, 0), 20);
    // Meanwhile, the other listener is not throttled: a v5 client there is never refused, and
    // a 3.1.1 client there gets all its acknowledgements.
    other_listener_v5_unaffected(other, "lr-other5", 30, 1).await;
    let mut o = Raw::connect_v311(other, "lr-other").await;
    let other_took = pipelined_puback_time(&mut o, &v311_batch("other/t", "o", 30, 0), 30).await;
    let (mut a, a_took) = a.await.unwrap();
    let (mut c, c_took) = c.await.unwrap();
    let both = t0.elapsed();
    println!(
        "listeners[0].max_publish_rate = 10/s: 2 x 20 QoS 1 PUBLISH took {a_took:?} and \
         {c_took:?} (all {both:?}, lower bound 2.5 s); 30 on listener 1 took {other_took:?}"
    );
    // A throttled 3.x client has its PUBLISH handled first and then waits out the debt, so a
    // client's last PUBLISH passes once everything before it fits the budget. Alone, each
    // client's 20 pass after (20 - 1 - 10 burst) / 10 = 0.9 s. Sharing one bucket, the 40 of
    // both less each one's last pass after (40 - 2 - 10) / 10 = 2.8 s.
    assert!(
        a_took.max(c_took) >= Duration::from_millis(2500),
        "40 publishes on a 10/s listener acknowledged after only {a_took:?} / {c_took:?}"
    );
    // Slowed, never disconnected, nothing lost.
    a.ping().await;
    c.ping().await;
    let mut got = HashSet::new();
    for _ in 0..40 {
        let p = sub.recv_and_ack().await;
        assert!(got.insert(payload_str(&p)), "duplicate {p:?}");
    }
    let want: HashSet<String> = ["a", "b"]
        .iter()
        .flat_map(|t| (1..=20).map(move |i| format!("{t}{i}")))
        .collect();
    assert_eq!(got, want);
    assert_eq!(b.state().metrics().dropped_quota.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_max_publish_rate_5_v5_second_client_disconnect_0x96_other_listener_unaffected() {
    let (b, other) = two_listeners(|l| l.max_publish_rate = Some(5)).await;
    let (mut a, _) = connect_v5(b.addr, "lr5-a").await;
    let (mut c, _) = connect_v5(b.addr, "lr5-b").await;
    let batch = |n: u16| {
        let mut bytes = Vec::new();
        for pid in 1..=n {
            bytes.extend(v5_publish("lr5/t", b"x", QoS::AtLeastOnce, pid));
        }
        bytes
    };
    // The first client spends the listener's whole burst (5) and stays connected.
    a.send(&batch(5)).await;
    let acks = a.ping().await;
    assert_eq!(acks.len(), 5, "{acks:?}");
    assert!(
        acks.iter()
            .all(|p| matches!(p, Packet::PubAck(r) if !r.reason.is_error())),
        "{acks:?}"
    );
    // Alone, the second client's 6 would pass 5 and be disconnected at the 6th. Sharing the
    // listener's empty bucket, it is disconnected before that (only what refilled since, 5/s,
    // passes).
    c.send(&batch(6)).await;
    let before = expect_disconnect(
        &mut c,
        ReasonCode::MESSAGE_RATE_TOO_HIGH,
        CLOSE_WAIT,
        "second client on a listener whose max_publish_rate = 5 is spent",
    )
    .await;
    println!(
        "second v5 client: {} PUBACKs before DISCONNECT 0x96",
        before.len()
    );
    assert!(
        before.len() < 5,
        "the second client got {} of the listener's 5/s: not shared ({before:?})",
        before.len()
    );
    assert!(
        before
            .iter()
            .all(|p| matches!(p, Packet::PubAck(r) if !r.reason.is_error())),
        "{before:?}"
    );
    // The other listener has its own (unlimited) budget; the first client is still connected.
    other_listener_v5_unaffected(other, "lr5-other", 20, 1).await;
    assert_nothing_more(&mut a, "the first client is not disconnected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_max_publish_bandwidth_200_v5_second_client_puback_and_pubrec_0x97() {
    let (b, other) = two_listeners(|l| l.max_publish_bandwidth = Some(200)).await;
    let mut sub = subscriber(b.addr, "lb5-sub", "lb5/#").await;
    let (mut a, _) = connect_v5(b.addr, "lb5-a").await;
    let (mut c, _) = connect_v5(b.addr, "lb5-b").await;
    // The first client spends the listener's whole one-second budget: 200 bytes.
    a.send(&v5_publish("lb5/t", &[b'a'; 200], QoS::AtLeastOnce, 1))
        .await;
    match a.recv().await {
        Packet::PubAck(r) => assert_eq!((r.packet_id, r.reason), (1, ReasonCode::SUCCESS)),
        other => panic!("expected PUBACK 1, got {other:?}"),
    }
    // 190 bytes would be within the second client's own budget if it had one; the shared one
    // needs 0.95 s to refill that much.
    let body = [b'b'; 190];
    let mut bytes = v5_publish("lb5/t", &body, QoS::AtLeastOnce, 1);
    bytes.extend(v5_publish("lb5/t", &body, QoS::ExactlyOnce, 2));
    bytes.extend(v5_publish("lb5/t", &body, QoS::AtMostOnce, 0));
    c.send(&bytes).await;
    let codes: Vec<(&str, u16, u8)> = c
        .ping()
        .await
        .iter()
        .map(|p| match p {
            Packet::PubAck(r) => ("PUBACK", r.packet_id, r.reason.0),
            Packet::PubRec(r) => ("PUBREC", r.packet_id, r.reason.0),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [("PUBACK", 1, 0x97), ("PUBREC", 2, 0x97)],
        "a second client on a listener whose 200 bytes/s are spent"
    );
    assert_eq!(
        b.state().metrics().dropped_quota.get(),
        3,
        "QoS 1, 2 and 0 refused"
    );
    assert_publish(&sub.recv_and_ack().await, "lb5/t", &[b'a'; 200]);
    assert_nothing_more(&mut sub, "refused publishes must not be delivered").await;
    // The other listener's budget is its own.
    other_listener_v5_unaffected(other, "lb5-other", 5, 190).await;
    // Not a disconnect: once the listener's bucket has refilled, the second client publishes.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    c.send(&v5_publish("lb5/t", b"later", QoS::AtLeastOnce, 3))
        .await;
    match c.recv().await {
        Packet::PubAck(r) => assert_eq!((r.packet_id, r.reason), (3, ReasonCode::SUCCESS)),
        other => panic!("expected PUBACK 3, got {other:?}"),
    }
    assert_publish(&sub.recv_and_ack().await, "lb5/t", b"later");
    assert_nothing_more(&mut a, "the first client is not disconnected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_max_publish_bandwidth_300_v311_two_clients_share_it_by_backpressure() {
    let (b, other) = two_listeners(|l| l.max_publish_bandwidth = Some(300)).await;
    let mut sub = subscriber(b.addr, "lb-sub", "lb/#").await;
    let a = Raw::connect_v311(b.addr, "lb-a").await;
    let c = Raw::connect_v311(b.addr, "lb-b").await;
    let t0 = Instant::now();
    let a = pipelined_in_task(a, v311_batch("lb/t", "a", 4, 150), 4);
    let c = pipelined_in_task(c, v311_batch("lb/t", "b", 4, 150), 4);
    other_listener_v5_unaffected(other, "lb-other5", 6, 150).await;
    let mut o = Raw::connect_v311(other, "lb-other").await;
    let other_took = pipelined_puback_time(&mut o, &v311_batch("other/t", "o", 6, 150), 6).await;
    let (mut a, a_took) = a.await.unwrap();
    let (mut c, c_took) = c.await.unwrap();
    println!(
        "listeners[0].max_publish_bandwidth = 300 B/s: 2 x 4 x 150-byte QoS 1 PUBLISH took \
         {a_took:?} and {c_took:?} (all {:?}, lower bound 1.5 s); 6 on listener 1 took \
         {other_took:?}",
        t0.elapsed()
    );
    // A throttled 3.x client has its PUBLISH handled first and then waits out the debt, so a
    // client's last PUBLISH passes once everything before it fits the budget. Alone, each
    // client's 600 bytes pass after (600 - 150 - 300 burst) / 300 = 0.5 s. Sharing one bucket,
    // the 1200 bytes of both less each one's last take pass after (1200 - 300 - 300) / 300 = 2 s.
    assert!(
        a_took.max(c_took) >= Duration::from_millis(1500),
        "1200 bytes on a 300 B/s listener acknowledged after only {a_took:?} / {c_took:?}"
    );
    a.ping().await;
    c.ping().await;
    let mut got = HashSet::new();
    for _ in 0..8 {
        let p = sub.recv_and_ack().await;
        assert_eq!(p.payload.len(), 150);
        assert!(got.insert(payload_str(&p)), "duplicate {p:?}");
    }
    assert_eq!(
        b.state().metrics().dropped_quota.get(),
        0,
        "3.x is slowed, never refused"
    );
}

// ---------------------------------------------------------------------------------------------
// limits.global_queued_bytes_high / global_queued_bytes_low (overload rule (b))
// ---------------------------------------------------------------------------------------------

/// Publishes 1000-byte QoS 1 messages (each acknowledged) until the global budget is over its
/// high mark; returns the next free packet id.
async fn publish_until_saturated(b: &TestBroker, p: &mut Raw, mut pid: u16) -> u16 {
    let start = pid;
    while !b.state().budget().is_saturated() {
        assert!(
            pid - start < 200,
            "200 x 1000 bytes queued and the 20 KB budget is still not saturated"
        );
        p.publish("gb/t", &[b'g'; 1000], 1, false, pid).await;
        pid += 1;
    }
    pid
}

/// While the budget is saturated the publisher's next PUBLISH is not read, so it gets no
/// PUBACK, while a connection that never published is still served. Returns the task that
/// waits for the withheld PUBACK.
async fn assert_publisher_stalled(
    b: &TestBroker,
    mut p: Raw,
    idle: &mut Raw,
    pid: u16,
    ctx: &str,
) -> tokio::task::JoinHandle<Raw> {
    p.send(&publish_packet("gb/t", &[b'h'; 1000], 1, false, false, pid))
        .await;
    // The connection that does not publish is answered (it also proves the broker has had
    // time to read the publisher's PUBLISH, had it been reading).
    assert!(idle.ping().await.is_empty(), "{ctx}: idle client");
    match p.recv_timeout(QUIET).await {
        Recv::Timeout => {}
        other => panic!("{ctx}: publisher answered above the high mark: {other:?}"),
    }
    assert!(
        b.state().budget().is_saturated(),
        "{ctx}: the budget must still be saturated (used {})",
        b.state().budget().used()
    );
    assert!(idle.ping().await.is_empty(), "{ctx}: idle client");
    tokio::spawn(async move {
        match p.recv_timeout(WAIT).await {
            Recv::Packet(Packet::PubAck(a)) if a.packet_id == pid => p,
            other => panic!("expected the withheld PUBACK {pid}, got {other:?}"),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_global_queued_bytes_high_20k_stalls_publisher_reads_until_below_low_10k() {
    let mut cfg = test_config();
    cfg.limits.global_queued_bytes_high = 20_000;
    cfg.limits.global_queued_bytes_low = 10_000;
    // One message in flight to the subscriber; the rest wait in its queue, in the budget.
    cfg.mqtt.max_inflight = 1;
    let b = start_with(cfg).await;
    // Subscribes, then reads nothing until told to.
    let mut slow = subscriber(b.addr, "gb-slow", "gb/#").await;
    let mut idle = Raw::connect_v311(b.addr, "gb-idle").await;
    let mut p = Raw::connect_v311(b.addr, "gb-pub").await;

    // 1. Above the high mark the publisher is no longer read...
    let pid = publish_until_saturated(&b, &mut p, 1).await;
    let queued = pid - 1;
    println!(
        "saturated after {queued} x 1000-byte messages: {} bytes queued (high 20000, low 10000)",
        b.state().budget().used()
    );
    let mut stalled =
        assert_publisher_stalled(&b, p, &mut idle, pid, "subscriber not reading").await;
    // ... not when the queue falls below the high mark (the budget went over it by less than
    // one message, so one acknowledgement, which moves a message from the queue to the
    // in-flight window, is enough) ...
    slow.recv_and_ack().await;
    let deadline = Instant::now() + WAIT;
    while b.state().budget().used() >= 20_000 {
        assert!(
            !stalled.is_finished(),
            "the publisher was read again above the low mark"
        );
        assert!(
            Instant::now() < deadline,
            "the acknowledgement freed nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let between = b.state().budget().used();
    assert!(between >= 10_000, "{between}");
    assert!(idle.ping().await.is_empty());
    assert!(
        tokio::time::timeout(QUIET, &mut stalled).await.is_err(),
        "the publisher was read again at {between} bytes, above the low mark"
    );
    // ... but once the subscriber drains its queue below the low mark.
    let mut drained = 1u16;
    while !stalled.is_finished() {
        assert!(
            drained <= queued,
            "the whole queue was drained and the publisher is still stalled"
        );
        slow.recv_and_ack().await;
        drained += 1;
    }
    let mut p = stalled.await.unwrap();
    println!(
        "publisher resumed after the subscriber acknowledged {drained} messages: {} bytes \
         queued",
        b.state().budget().used()
    );
    assert!(!b.state().budget().is_saturated());
    assert!(
        drained > 1,
        "one acknowledgement cannot bring 20 KB below 10 KB"
    );
    p.publish("gb/t", b"served again", 1, false, pid + 1).await;

    // 2. Saturated again (the subscriber has stopped reading); this time it disconnects, its
    // clean session's queue is freed, and the publisher is read again.
    let pid = publish_until_saturated(&b, &mut p, pid + 2).await;
    let stalled = assert_publisher_stalled(&b, p, &mut idle, pid, "subscriber stopped again").await;
    drop(slow);
    let mut p = tokio::time::timeout(WAIT, stalled)
        .await
        .expect("publisher still stalled after the subscriber disconnected")
        .unwrap();
    assert!(
        b.state().budget().used() < 10_000,
        "{}",
        b.state().budget().used()
    );
    p.publish("gb/t", b"after", 1, false, pid + 1).await;
    assert!(idle.ping().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// limits.slow_consumer_policy
// ---------------------------------------------------------------------------------------------

fn slow_consumer_config(policy: SlowConsumerPolicy) -> Config {
    let mut cfg = test_config();
    cfg.limits.slow_consumer_policy = policy;
    cfg.limits.slow_consumer_grace = Duration::from_millis(300);
    cfg.mqtt.max_inflight = 1;
    cfg.mqtt.max_queued_messages = 5;
    cfg
}

/// A healthy 3.1.1 subscriber to `sc/#` that acknowledges everything, in its own task, until it
/// receives the payload `end`; returns the payloads before it.
fn healthy_subscriber(mut s: Raw) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let p = s.recv_and_ack().await;
            let text = payload_str(&p);
            if text == "end" {
                return got;
            }
            got.push(text);
        }
    })
}

/// Slow consumer with `slow_consumer_policy = "disconnect"`: the slow subscriber (v5 or 3.1.1)
/// reads but never acknowledges its one in-flight QoS 1 message.
async fn slow_consumer_disconnect(slow_v5: bool) {
    let b = start_with(slow_consumer_config(SlowConsumerPolicy::Disconnect)).await;
    let mut slow = if slow_v5 {
        let (mut s, _) = connect_v5(b.addr, "slow").await;
        s.send(&v5_subscribe(1, &[("sc/#", QoS::AtLeastOnce)]))
            .await;
        assert_eq!(suback_codes(&mut s, 1).await, vec![1]);
        s
    } else {
        subscriber(b.addr, "slow", "sc/#").await
    };
    let healthy = healthy_subscriber(subscriber(b.addr, "healthy", "sc/#").await);
    let mut p = Raw::connect_v311(b.addr, "sc-pub").await;

    let t0 = Instant::now();
    let slow_task = tokio::spawn(async move {
        let r = slow.closed_within(Duration::from_secs(5)).await;
        (r, t0.elapsed(), slow)
    });
    let mut n = 0u16;
    while !slow_task.is_finished() && t0.elapsed() < Duration::from_secs(3) {
        p.publish("sc/t", format!("{n}").as_bytes(), 1, false, n + 1)
            .await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.publish("sc/t", b"end", 1, false, n + 1).await;
    let (closed, after, _slow) = slow_task.await.unwrap();
    println!(
        "slow subscriber (v5 = {slow_v5}) closed after {after:?}, {n} messages published, \
         dropped_queue_full = {}",
        b.state().metrics().dropped_queue_full.get()
    );
    let (mut seen, _) = closed.unwrap_or_else(|seen| {
        panic!("slow subscriber not disconnected within 5 s (received {seen:?})")
    });
    if slow_v5 {
        match seen.pop() {
            Some(Packet::Disconnect(d)) => assert_eq!(
                d.reason,
                ReasonCode::QUOTA_EXCEEDED,
                "slow consumer DISCONNECT reason"
            ),
            other => panic!("expected DISCONNECT 0x97 last, got {other:?} after {seen:?}"),
        }
    }
    assert!(
        seen.iter().all(|p| matches!(p, Packet::Publish(_))),
        "only PUBLISH expected before the close: {seen:?}"
    );
    assert_eq!(
        seen.len(),
        1,
        "max_inflight = 1 without PUBACK: one PUBLISH"
    );
    assert!(
        after >= Duration::from_millis(300),
        "disconnected before the grace: {after:?}"
    );
    assert!(b.state().metrics().dropped_queue_full.get() >= 1);

    // The publisher and the healthy subscriber were not affected.
    p.ping().await;
    let got = tokio::time::timeout(WAIT, healthy).await.unwrap().unwrap();
    let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "the healthy subscriber receives everything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_slow_consumer_policy_disconnect_v5_disconnect_0x97_after_grace() {
    slow_consumer_disconnect(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_slow_consumer_policy_disconnect_v311_closed_after_grace() {
    slow_consumer_disconnect(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_slow_consumer_policy_drop_default_keeps_connection_and_counts_drops() {
    let cfg = slow_consumer_config(SlowConsumerPolicy::default());
    assert_eq!(cfg.limits.slow_consumer_policy, SlowConsumerPolicy::Drop);
    let b = start_with(cfg).await;
    let (mut slow, _) = connect_v5(b.addr, "slow").await;
    slow.send(&v5_subscribe(1, &[("sc/#", QoS::AtLeastOnce)]))
        .await;
    assert_eq!(suback_codes(&mut slow, 1).await, vec![1]);
    let healthy = healthy_subscriber(subscriber(b.addr, "healthy", "sc/#").await);
    let mut p = Raw::connect_v311(b.addr, "sc-pub").await;

    // 40 messages over ~0.8 s, well past the 300 ms grace.
    let n = 40u16;
    for i in 0..n {
        p.publish("sc/t", format!("{i}").as_bytes(), 1, false, i + 1)
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.publish("sc/t", b"end", 1, false, n + 1).await;
    let got = tokio::time::timeout(WAIT, healthy).await.unwrap().unwrap();
    let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "the healthy subscriber receives everything");

    // One in flight (never acknowledged) plus five queued; the other 35 of 41 were dropped.
    let dropped = b.state().metrics().dropped_queue_full.get();
    println!("drop policy: dropped_queue_full = {dropped}");
    assert_eq!(dropped, u64::from(n) + 1 - 6, "metrics.dropped_queue_full");
    // Still connected: it answers PINGREQ, and acknowledging drains the first six in order.
    let first = slow.ping().await;
    let [Packet::Publish(first)] = &first[..] else {
        panic!("expected one PUBLISH before PINGRESP, got {first:?}");
    };
    assert_eq!(payload_str(first), "0");
    slow.send(&v5(&Packet::PubAck(codec::PubResp::new(first.packet_id))))
        .await;
    for i in 1..6 {
        let pb = slow.recv_publish().await;
        assert_eq!(payload_str(&pb), i.to_string());
        slow.send(&v5(&Packet::PubAck(codec::PubResp::new(pb.packet_id))))
            .await;
    }
    assert_nothing_more(&mut slow, "dropped messages are gone").await;
    p.ping().await;
}

/// A 3.x publisher over its bandwidth is slowed by not reading its socket; its keep-alive must
/// not run out meanwhile: its PINGREQ waits unread in the socket because of the broker, not
/// the client [MQTT-3.1.2-24]. The broker used to close it as silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_publisher_is_not_closed_for_keep_alive() {
    let mut cfg = test_config();
    cfg.limits.max_publish_bandwidth = 200;
    let b = start_with(cfg).await;
    // Keep-alive 1 s: closed 1.5 to 2.5 s after its last read if silent.
    let (mut p, _) = Raw::connect(b.addr, &ConnectOpts::v311("ka-pub").keep_alive(1)).await;
    let mut bytes = publish_packet("ka/t", &[b'k'; 1000], 1, false, false, 1);
    bytes.extend_from_slice(&[0xC0, 0]);
    // 1,000 bytes at 200 B/s with a 200-byte burst: nothing more is read for about 4 s.
    p.send(&bytes).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        match p.recv_timeout(Duration::from_secs(15)).await {
            Recv::Packet(Packet::PubAck(a)) => got.push(format!("PUBACK {}", a.packet_id)),
            Recv::Packet(Packet::PingResp) => got.push("PINGRESP".to_string()),
            other => panic!("after {got:?}: {other:?}"),
        }
    }
    assert_eq!(got, ["PUBACK 1", "PINGRESP"]);
}

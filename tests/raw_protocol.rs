//! MQTT 3.1 / 3.1.1 protocol behaviour checked with raw bytes over TCP: redelivery, QoS 2
//! de-duplication, keep-alive, wills, CONNACK return codes, connect timeout, retained flags.
//! Each test starts its own broker on an ephemeral port.

mod common;

use std::time::{Duration, Instant};

use common::*;
use starling::codec::{Packet, QoS};

fn qos(p: &starling::codec::Publish) -> u8 {
    p.qos as u8
}

// ---------------------------------------------------------------------------------------------
// Redelivery [MQTT-4.4.0-1]
// ---------------------------------------------------------------------------------------------

/// A persistent-session subscriber gets a QoS 2 PUBLISH, does not answer PUBREC and drops the
/// socket. On reconnect (clean session 0) the broker must report session present = 1 and send
/// the same PUBLISH again with DUP = 1 and the same packet id [MQTT-4.4.0-1][MQTT-3.3.1-1];
/// the flow then completes normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_publish_resent_with_dup_after_cut_before_pubrec_mqtt_4_4_0_1() {
    let b = start().await;
    let opts = ConnectOpts::v311("redeliver-q2").clean(false);
    let (mut s, ack) = Raw::connect(b.addr, &opts).await;
    assert!(
        !ack.session_present,
        "fresh session must not be present [MQTT-3.2.2-3]"
    );
    assert_eq!(s.subscribe(1, "r/q2", 2).await, 2);

    let mut p = Raw::connect_v311(b.addr, "redeliver-q2-pub").await;
    p.publish("r/q2", b"m1", 2, false, 11).await;

    let first = s.recv_publish().await;
    assert_publish(&first, "r/q2", b"m1");
    assert_eq!(qos(&first), 2);
    assert!(!first.dup, "first delivery must have DUP=0");
    let pid = first.packet_id;
    drop(s); // cut without PUBREC

    let (mut s, ack) = Raw::connect(b.addr, &opts).await;
    assert!(
        ack.session_present,
        "session present must be 1 on resume [MQTT-3.2.2-2]"
    );
    let again = s.recv_publish().await;
    assert_publish(&again, "r/q2", b"m1");
    assert_eq!(qos(&again), 2, "redelivered QoS");
    assert!(
        again.dup,
        "redelivered PUBLISH must have DUP=1 [MQTT-3.3.1-1]: {again:?}"
    );
    assert_eq!(again.packet_id, pid, "redelivery must reuse the packet id");

    s.send(&pubrec(pid)).await;
    match s.recv().await {
        Packet::PubRel(r) => assert_eq!(r.packet_id, pid),
        other => panic!("expected PUBREL after PUBREC, got {other:?}"),
    }
    s.send(&pubcomp(pid)).await;
    let extra = s.ping().await;
    assert!(
        extra.is_empty(),
        "nothing more expected after PUBCOMP: {extra:?}"
    );

    // The flow is complete: a later message is delivered normally, once.
    p.publish("r/q2", b"m2", 2, false, 12).await;
    let next = s.recv_and_ack().await;
    assert_publish(&next, "r/q2", b"m2");
    assert!(!next.dup);
}

/// Same, but PUBREC was sent (and PUBREL received) before the cut: on resume the broker must
/// resend PUBREL, not the PUBLISH [MQTT-4.4.0-1].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_pubrel_resent_after_cut_following_pubrec_mqtt_4_4_0_1() {
    let b = start().await;
    let opts = ConnectOpts::v311("redeliver-rel").clean(false);
    let (mut s, _) = Raw::connect(b.addr, &opts).await;
    assert_eq!(s.subscribe(1, "r/rel", 2).await, 2);

    let mut p = Raw::connect_v311(b.addr, "redeliver-rel-pub").await;
    p.publish("r/rel", b"m1", 2, false, 21).await;

    let first = s.recv_publish().await;
    assert_publish(&first, "r/rel", b"m1");
    let pid = first.packet_id;
    s.send(&pubrec(pid)).await;
    match s.recv().await {
        Packet::PubRel(r) => assert_eq!(r.packet_id, pid),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    drop(s); // cut without PUBCOMP

    let (mut s, ack) = Raw::connect(b.addr, &opts).await;
    assert!(
        ack.session_present,
        "session present on resume [MQTT-3.2.2-2]"
    );
    match s.recv().await {
        Packet::PubRel(r) => assert_eq!(r.packet_id, pid, "resent PUBREL packet id"),
        other => panic!("expected the PUBREL to be resent (not the PUBLISH), got {other:?}"),
    }
    s.send(&pubcomp(pid)).await;
    let extra = s.ping().await;
    assert!(
        extra.is_empty(),
        "nothing more expected after PUBCOMP: {extra:?}"
    );
    p.publish("r/rel", b"marker", 0, false, 0).await;
    assert_publish(&s.recv_publish().await, "r/rel", b"marker");
}

/// QoS 1 variant: an unacknowledged PUBLISH is resent with DUP=1 and the same packet id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_publish_resent_with_dup_after_cut_mqtt_4_4_0_1() {
    let b = start().await;
    let opts = ConnectOpts::v311("redeliver-q1").clean(false);
    let (mut s, _) = Raw::connect(b.addr, &opts).await;
    assert_eq!(s.subscribe(1, "r/q1", 1).await, 1);
    let mut p = Raw::connect_v311(b.addr, "redeliver-q1-pub").await;
    p.publish("r/q1", b"a", 1, false, 1).await;
    p.publish("r/q1", b"b", 1, false, 2).await;
    let a = s.recv_publish().await;
    let bb = s.recv_publish().await;
    assert_publish(&a, "r/q1", b"a");
    assert_publish(&bb, "r/q1", b"b");
    s.send(&puback(a.packet_id)).await; // only the first is acknowledged
    let _ = s.ping().await; // the PUBACK has been processed
    drop(s);

    let (mut s, ack) = Raw::connect(b.addr, &opts).await;
    assert!(ack.session_present);
    let again = s.recv_publish().await;
    assert_publish(&again, "r/q1", b"b");
    assert!(again.dup, "resent QoS 1 PUBLISH must have DUP=1: {again:?}");
    assert_eq!(again.packet_id, bb.packet_id);
    s.send(&puback(again.packet_id)).await;
    let extra = s.ping().await;
    assert!(
        extra.is_empty(),
        "acknowledged message must not be resent: {extra:?}"
    );
}

/// A client acknowledges a whole batch in one write, as most do: every PUBACK in the read
/// completes its delivery [MQTT-4.3.2-2] and frees window room, also when other packets
/// follow in the same read. With a window of 2, the next messages come only if both PUBACKs
/// of a write were taken; a resumed session then has nothing to resend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubacks_written_together_each_complete_their_delivery_mqtt_4_3_2_2() {
    let mut cfg = test_config();
    cfg.mqtt.max_inflight = 2;
    let b = start_with(cfg).await;
    let opts = ConnectOpts::v311("batched-acks").clean(false);
    let (mut s, _) = Raw::connect(b.addr, &opts).await;
    assert_eq!(s.subscribe(1, "acks/t", 1).await, 1);
    let mut p = Raw::connect_v311(b.addr, "batched-acks-pub").await;
    for (i, payload) in [b"1", b"2", b"3", b"4", b"5", b"6"].iter().enumerate() {
        p.publish("acks/t", *payload, 1, false, i as u16 + 1).await;
    }
    let mut got = Vec::new();
    let mut pongs = 0;
    for round in 0..3 {
        let mut batch = Vec::new();
        while batch.len() < 2 {
            match s.recv().await {
                Packet::Publish(p) => batch.push(p),
                Packet::PingResp => pongs += 1,
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
        let (a, c) = (&batch[0], &batch[1]);
        got.push(a.payload.clone());
        got.push(c.payload.clone());
        let mut write = puback(a.packet_id);
        write.extend(puback(c.packet_id));
        if round == 1 {
            // Another packet behind the acknowledgements in the same read.
            write.extend_from_slice(&PINGREQ);
        }
        s.send(&write).await;
    }
    let rest = s.ping().await;
    let payloads: Vec<&[u8]> = got.iter().map(|p| &p[..]).collect();
    assert_eq!(
        payloads,
        [b"1", b"2", b"3", b"4", b"5", b"6"].map(|p| &p[..])
    );
    let pongs = pongs
        + rest
            .iter()
            .filter(|p| matches!(p, Packet::PingResp))
            .count();
    assert_eq!(pongs, 1, "the PINGREQ behind the PUBACKs is answered");
    assert!(
        rest.iter().all(|p| matches!(p, Packet::PingResp)),
        "nothing more after the six: {rest:?}"
    );
    drop(s);
    let (mut s, ack) = Raw::connect(b.addr, &opts).await;
    assert!(ack.session_present);
    let resent = s.ping().await;
    assert!(
        resent.is_empty(),
        "every acknowledged message stays acknowledged: {resent:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Inbound QoS 2 [MQTT-4.3.3-2]
// ---------------------------------------------------------------------------------------------

/// The publisher sends the same QoS 2 PUBLISH (same packet id) twice before PUBREL: the
/// broker answers PUBREC to both but forwards the message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_qos2_duplicate_forwarded_once_mqtt_4_3_3_2() {
    let b = start().await;
    let mut s = Raw::connect_v311(b.addr, "dedup-sub").await;
    assert_eq!(s.subscribe(1, "d/q2", 2).await, 2);
    let mut p = Raw::connect_v311(b.addr, "dedup-pub").await;

    p.send(&publish_packet("d/q2", b"once", 2, false, false, 5))
        .await;
    match p.recv().await {
        Packet::PubRec(r) => assert_eq!(r.packet_id, 5),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    p.send(&publish_packet("d/q2", b"once", 2, false, true, 5))
        .await;
    match p.recv().await {
        Packet::PubRec(r) => assert_eq!(r.packet_id, 5, "duplicate must be acknowledged again"),
        other => panic!("expected PUBREC for the duplicate, got {other:?}"),
    }
    p.send(&pubrel(5)).await;
    match p.recv().await {
        Packet::PubComp(r) => assert_eq!(r.packet_id, 5),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    p.publish("d/q2", b"marker", 0, false, 0).await;

    let first = s.recv_and_ack().await;
    assert_publish(&first, "d/q2", b"once");
    let second = s.recv_publish().await;
    assert_publish(&second, "d/q2", b"marker"); // not a second copy of "once"

    // After PUBCOMP the packet id is free again: a new message with id 5 is a new message.
    p.publish("d/q2", b"again", 2, false, 5).await;
    assert_publish(&s.recv_and_ack().await, "d/q2", b"again");
}

// ---------------------------------------------------------------------------------------------
// Keep-alive [MQTT-3.1.2-24]
// ---------------------------------------------------------------------------------------------

/// How late the broker may close after the 1.5 x keep-alive deadline and still pass: it polls
/// no clock of its own, but a loaded test machine can delay the timer and our read.
const KEEP_ALIVE_SLACK: Duration = Duration::from_millis(1000);
/// Timer rounding and the two clocks (ours, the broker's) may disagree by this little.
const KEEP_ALIVE_MARGIN: Duration = Duration::from_millis(50);

/// A client with keep-alive 1 s that sends nothing is disconnected once 1.5 s have passed
/// without a packet [MQTT-3.1.2-24], not earlier (a close at 1.0 x keep-alive fails), and its
/// will is published [MQTT-3.1.2-8].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_timeout_closes_and_publishes_will_mqtt_3_1_2_24() {
    let b = start().await;
    let mut s = Raw::connect_v311(b.addr, "ka-watch").await;
    assert_eq!(s.subscribe(1, "will/ka", 1).await, 1);

    let opts = ConnectOpts::v311("ka-silent")
        .keep_alive(1)
        .will("will/ka", b"ka-gone", 1, false);
    // Taken before CONNECT is sent: the broker's keep-alive clock cannot start earlier.
    let t0 = Instant::now();
    let (mut w, _) = Raw::connect(b.addr, &opts).await;
    let deadline = Duration::from_millis(1500);
    let closed = w.closed_within(deadline + KEEP_ALIVE_SLACK).await;
    let elapsed = t0.elapsed();
    match closed {
        Ok((seen, _)) => assert!(
            seen.is_empty(),
            "3.1.1 gets no packet before the close: {seen:?}"
        ),
        Err(seen) => panic!("still open {elapsed:?} after CONNECT (keep-alive 1 s); got {seen:?}"),
    }
    assert!(
        elapsed + KEEP_ALIVE_MARGIN >= deadline,
        "closed after {elapsed:?}: before 1.5 x keep-alive [MQTT-3.1.2-24]"
    );

    let will = s.recv_publish().await;
    assert_publish(&will, "will/ka", b"ka-gone");
    assert_eq!(qos(&will), 1, "will QoS");
    s.send(&puback(will.packet_id)).await;
}

/// The keep-alive deadline counts from the last packet received, not from CONNECT: a PINGREQ
/// at ~1 s moves the close to 1.5 s after that PINGREQ [MQTT-3.1.2-24].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_deadline_counts_from_the_last_packet_mqtt_3_1_2_24() {
    let b = start().await;
    let (mut c, _) = Raw::connect(b.addr, &ConnectOpts::v311("ka-late-ping").keep_alive(1)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Taken before the PINGREQ is written: the broker reads it later than this.
    let t_ping = Instant::now();
    assert!(c.ping().await.is_empty());
    let deadline = Duration::from_millis(1500);
    let closed = c.closed_within(deadline + KEEP_ALIVE_SLACK).await;
    let elapsed = t_ping.elapsed();
    match closed {
        Ok((seen, _)) => assert!(seen.is_empty(), "got {seen:?} before the close"),
        Err(seen) => panic!("still open {elapsed:?} after the PINGREQ; got {seen:?}"),
    }
    assert!(
        elapsed + KEEP_ALIVE_MARGIN >= deadline,
        "closed {elapsed:?} after a PINGREQ: the deadline must restart at every packet"
    );
}

/// Keep-alive 0 turns the mechanism off; and a keep-alive 1 s client that sends PINGREQ every
/// 0.5 s is never timed out. Neither client's will is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_zero_and_regular_pings_never_time_out_mqtt_3_1_2_24() {
    let b = start().await;
    let mut s = Raw::connect_v311(b.addr, "ka0-watch").await;
    assert_eq!(s.subscribe(1, "will/ka0/#", 0).await, 0);

    let (mut idle, _) = Raw::connect(
        b.addr,
        &ConnectOpts::v311("ka0-idle")
            .keep_alive(0)
            .will("will/ka0/idle", b"bad", 0, false),
    )
    .await;
    let (mut pinger, _) = Raw::connect(
        b.addr,
        &ConnectOpts::v311("ka1-pinger")
            .keep_alive(1)
            .will("will/ka0/pinger", b"bad", 0, false),
    )
    .await;
    // 2.5 s: well past 1.5 x 1 s. The idle client sends nothing at all.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = pinger.ping().await;
        assert!(before.is_empty(), "pinger got {before:?}");
    }
    let before = idle.ping().await;
    assert!(before.is_empty(), "idle client got {before:?}");
    let mut p = Raw::connect_v311(b.addr, "ka0-pub").await;
    p.publish("will/ka0/marker", b"marker", 0, false, 0).await;
    let got = s.recv_publish().await;
    assert_publish(&got, "will/ka0/marker", b"marker");
}

// ---------------------------------------------------------------------------------------------
// Wills
// ---------------------------------------------------------------------------------------------

/// DISCONNECT discards the will [MQTT-3.1.2-10].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_will_after_disconnect_mqtt_3_1_2_10() {
    let b = start().await;
    let mut s = Raw::connect_v311(b.addr, "nd-watch").await;
    assert_eq!(s.subscribe(1, "will/nd", 1).await, 1);
    let (mut w, _) = Raw::connect(
        b.addr,
        &ConnectOpts::v311("nd-client").will("will/nd", b"will-must-not-appear", 1, false),
    )
    .await;
    w.send(&DISCONNECT).await;
    w.expect_closed("after DISCONNECT").await;
    // Bounded wait for a will that must not come, then a positive control.
    tokio::time::sleep(QUIET).await;
    let mut p = Raw::connect_v311(b.addr, "nd-pub").await;
    p.publish("will/nd", b"marker", 1, false, 1).await;
    let got = s.recv_and_ack().await;
    assert_publish(&got, "will/nd", b"marker");
}

/// A socket dropped without DISCONNECT publishes the will [MQTT-3.1.2-8] with its QoS; a
/// retained will is stored [MQTT-3.1.2-17] and reaches a later subscriber with RETAIN=1, while
/// the existing subscriber gets RETAIN=0 [MQTT-3.3.1-9].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_on_abrupt_close_honours_qos_and_retain_mqtt_3_1_2_8() {
    let b = start().await;
    let mut s = Raw::connect_v311(b.addr, "ab-watch").await;
    assert_eq!(s.subscribe(1, "will/ab", 2).await, 2);
    let (w, _) = Raw::connect(
        b.addr,
        &ConnectOpts::v311("ab-client").will("will/ab", b"dead", 1, true),
    )
    .await;
    drop(w);

    let got = s.recv_publish().await;
    assert_publish(&got, "will/ab", b"dead");
    assert_eq!(qos(&got), 1, "will QoS 1 (subscription allows 2)");
    assert!(
        !got.retain,
        "forwarded to an existing subscriber with RETAIN=0 [MQTT-3.3.1-9]"
    );
    s.send(&puback(got.packet_id)).await;

    let mut late = Raw::connect_v311(b.addr, "ab-late").await;
    assert_eq!(late.subscribe(1, "will/ab", 2).await, 2);
    let kept = late.recv_publish().await;
    assert_publish(&kept, "will/ab", b"dead");
    assert!(
        kept.retain,
        "retained will must be delivered with RETAIN=1 [MQTT-3.3.1-8]"
    );
    assert_eq!(qos(&kept), 1);
}

// ---------------------------------------------------------------------------------------------
// CONNACK return codes
// ---------------------------------------------------------------------------------------------

/// Protocol level 6 → CONNACK return code 0x01, then close [MQTT-3.1.2-2].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_unacceptable_protocol_level_mqtt_3_1_2_2() {
    let b = start().await;
    let mut opts = ConnectOpts::v311("lvl6");
    opts.level = 6;
    let (mut c, ack) = Raw::connect_raw(b.addr, &opts).await;
    assert_eq!(ack.code.0, 1, "return code for protocol level 6: {ack:?}");
    assert!(
        !ack.session_present,
        "session present must be 0 with a non-zero code [MQTT-3.2.2-4]"
    );
    c.expect_closed("after CONNACK 0x01 [MQTT-3.2.2-5]").await;
}

/// 3.1.1: empty client id with clean session 0 → return code 0x02 and close [MQTT-3.1.3-8].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_empty_client_id_persistent_rejected_mqtt_3_1_3_8() {
    let b = start().await;
    let (mut c, ack) = Raw::connect_raw(b.addr, &ConnectOpts::v311("").clean(false)).await;
    assert_eq!(ack.code.0, 2, "{ack:?}");
    c.expect_closed("after CONNACK 0x02").await;
}

/// 3.1.1: empty client id with clean session 1 is accepted and gets a working session
/// [MQTT-3.1.3-6].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_empty_client_id_clean_accepted_mqtt_3_1_3_6() {
    let b = start().await;
    let (mut c, ack) = Raw::connect_raw(b.addr, &ConnectOpts::v311("")).await;
    assert_eq!(ack.code.0, 0, "{ack:?}");
    assert!(!ack.session_present);
    assert_eq!(c.subscribe(1, "anon/t", 1).await, 1);
    c.publish("anon/t", b"self", 1, false, 2).await;
    let got = c.recv_and_ack().await;
    assert_publish(&got, "anon/t", b"self");
}

/// MQTT 3.1 (`MQIsdp`, level 3) requires a client id of 1..23 characters: empty → 0x02.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_v31_empty_client_id_rejected() {
    let b = start().await;
    let (mut c, ack) = Raw::connect_raw(b.addr, &ConnectOpts::v31("")).await;
    assert_eq!(ack.code.0, 2, "{ack:?}");
    c.expect_closed("after CONNACK 0x02").await;
    // And a normal 3.1 client works.
    let (mut ok, ack) = Raw::connect(b.addr, &ConnectOpts::v31("v31-ok")).await;
    assert!(!ack.session_present);
    assert_eq!(ok.subscribe(1, "v31/t", 2).await, 2);
    ok.publish("v31/t", b"x", 2, false, 3).await;
    assert_publish(&ok.recv_and_ack().await, "v31/t", b"x");
}

/// A 3.x keep-alive above `mqtt.max_keepalive` cannot be negotiated down: rejected with 0x02.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_keep_alive_above_max_keepalive_rejected_v3() {
    let mut cfg = test_config();
    cfg.mqtt.max_keepalive = 10;
    let b = start_with(cfg).await;
    let (mut c, ack) = Raw::connect_raw(b.addr, &ConnectOpts::v311("ka-high").keep_alive(11)).await;
    assert_eq!(ack.code.0, 2, "3.1.1 keep-alive 11 > max 10: {ack:?}");
    c.expect_closed("after CONNACK 0x02").await;
    let (mut c, ack) =
        Raw::connect_raw(b.addr, &ConnectOpts::v31("ka-high31").keep_alive(600)).await;
    assert_eq!(ack.code.0, 2, "3.1 keep-alive 600 > max 10: {ack:?}");
    c.expect_closed("after CONNACK 0x02").await;
    let (mut c, ack) = Raw::connect_raw(b.addr, &ConnectOpts::v311("ka-eq").keep_alive(10)).await;
    assert_eq!(
        ack.code.0, 0,
        "keep-alive equal to the max is accepted: {ack:?}"
    );
    assert!(c.ping().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Connect timeout, PING
// ---------------------------------------------------------------------------------------------

/// A TCP connection that sends nothing (or only part of a CONNECT) is closed after
/// `connect_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_closes_silent_and_partial_connections() {
    let mut cfg = test_config();
    cfg.mqtt.connect_timeout = Duration::from_millis(300);
    let b = start_with(cfg).await;

    let t0 = Instant::now();
    let mut silent = Raw::open(b.addr).await;
    let mut partial = Raw::open(b.addr).await;
    let connect = ConnectOpts::v311("partial").encode();
    partial.send(&connect[..5]).await;

    silent
        .expect_closed("silent connection after connect_timeout")
        .await;
    let e = t0.elapsed();
    assert!(e >= Duration::from_millis(250), "closed too early: {e:?}");
    partial
        .expect_closed("partial CONNECT after connect_timeout")
        .await;

    // A normal client is unaffected.
    let mut ok = Raw::connect_v311(b.addr, "after-timeout").await;
    assert!(ok.ping().await.is_empty());
}

/// PINGREQ → PINGRESP [MQTT-3.12.4-1], repeatedly, for 3.1.1 and 3.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingreq_gets_pingresp_mqtt_3_12_4_1() {
    let b = start().await;
    let mut c = Raw::connect_v311(b.addr, "pinger").await;
    for _ in 0..3 {
        assert!(c.ping().await.is_empty());
    }
    assert_eq!(&c.last_frame[..], &[0xD0, 0x00], "PINGRESP bytes");
    let (mut c31, _) = Raw::connect(b.addr, &ConnectOpts::v31("pinger31")).await;
    assert!(c31.ping().await.is_empty());
    assert_eq!(&c31.last_frame[..], &[0xD0, 0x00], "PINGRESP bytes");
}

// ---------------------------------------------------------------------------------------------
// Retained messages
// ---------------------------------------------------------------------------------------------

/// RETAIN=1 on delivery caused by a new subscription [MQTT-3.3.1-8], RETAIN=0 on normal
/// forwarding [MQTT-3.3.1-9], replacement [MQTT-3.3.1-5], and a zero-length retained PUBLISH
/// is forwarded normally and clears the topic [MQTT-3.3.1-10][MQTT-3.3.1-11].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_flags_replace_and_clear_mqtt_3_3_1_8_to_11() {
    let b = start().await;
    let mut p = Raw::connect_v311(b.addr, "ret-pub").await;
    p.publish("ret/a", b"r1", 1, true, 1).await;

    let mut s1 = Raw::connect_v311(b.addr, "ret-s1").await;
    assert_eq!(s1.subscribe(1, "ret/#", 1).await, 1);
    let got = s1.recv_and_ack().await;
    assert_publish(&got, "ret/a", b"r1");
    assert!(
        got.retain,
        "delivery caused by SUBSCRIBE must have RETAIN=1 [MQTT-3.3.1-8]"
    );

    p.publish("ret/a", b"r2", 1, true, 2).await;
    let got = s1.recv_and_ack().await;
    assert_publish(&got, "ret/a", b"r2");
    assert!(
        !got.retain,
        "normal forwarding must have RETAIN=0 [MQTT-3.3.1-9]"
    );

    let mut s2 = Raw::connect_v311(b.addr, "ret-s2").await;
    assert_eq!(s2.subscribe(1, "ret/+", 1).await, 1);
    let got = s2.recv_and_ack().await;
    assert_publish(&got, "ret/a", b"r2"); // replaced, only the latest
    assert!(got.retain);
    p.publish("ret/marker", b"m", 0, false, 0).await;
    assert_publish(&s2.recv_publish().await, "ret/marker", b"m");
    assert_publish(&s1.recv_publish().await, "ret/marker", b"m");

    // Clear with a zero-length retained message: existing subscribers still get it.
    p.publish("ret/a", b"", 1, true, 3).await;
    let got = s1.recv_and_ack().await;
    assert_publish(&got, "ret/a", b"");
    assert!(!got.retain, "RETAIN=0 on normal forwarding");

    let mut s3 = Raw::connect_v311(b.addr, "ret-s3").await;
    assert_eq!(s3.subscribe(1, "ret/#", 1).await, 1);
    p.publish("ret/marker", b"m2", 0, false, 0).await;
    let got = s3.recv_publish().await;
    assert_publish(&got, "ret/marker", b"m2"); // no retained message any more
}

/// A retained QoS 2 message is delivered at min(stored QoS, granted QoS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_delivered_at_min_of_stored_and_granted_qos() {
    let b = start().await;
    let mut p = Raw::connect_v311(b.addr, "retq-pub").await;
    p.publish("retq/t", b"q2", 2, true, 1).await;
    let mut s = Raw::connect_v311(b.addr, "retq-s").await;
    assert_eq!(s.subscribe(1, "retq/t", 1).await, 1);
    let got = s.recv_and_ack().await;
    assert_publish(&got, "retq/t", b"q2");
    assert_eq!(qos(&got), 1);
    assert!(got.retain);
}

// ---------------------------------------------------------------------------------------------
// Sessions, subscriptions
// ---------------------------------------------------------------------------------------------

/// Session present: 0 on a new session [MQTT-3.2.2-3], 1 on resume [MQTT-3.2.2-2], 0 with
/// clean session 1, which also discards the stored subscriptions [MQTT-3.2.2-1][MQTT-3.1.2-6].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_present_and_clean_session_discards_state_mqtt_3_2_2_1() {
    let b = start().await;
    let persistent = ConnectOpts::v311("sp-client").clean(false);
    let (mut s, ack) = Raw::connect(b.addr, &persistent).await;
    assert!(!ack.session_present);
    assert_eq!(s.subscribe(1, "sp/old", 1).await, 1);
    s.send(&DISCONNECT).await;
    s.expect_closed("after DISCONNECT").await;

    let (mut s, ack) = Raw::connect(b.addr, &persistent).await;
    assert!(
        ack.session_present,
        "resume must report session present [MQTT-3.2.2-2]"
    );
    s.send(&DISCONNECT).await;
    s.expect_closed("after DISCONNECT").await;

    let (mut s, ack) = Raw::connect(b.addr, &ConnectOpts::v311("sp-client")).await;
    assert!(
        !ack.session_present,
        "clean session 1 → session present 0 [MQTT-3.2.2-1]"
    );
    assert_eq!(s.subscribe(2, "sp/marker", 0).await, 0);
    let mut p = Raw::connect_v311(b.addr, "sp-pub").await;
    p.publish("sp/old", b"stale-subscription", 1, false, 1)
        .await;
    p.publish("sp/marker", b"marker", 0, false, 0).await;
    assert_publish(&s.recv_publish().await, "sp/marker", b"marker");
}

/// UNSUBSCRIBE answers UNSUBACK with the same packet id [MQTT-3.10.4-4] and stops delivery
/// [MQTT-3.10.4-2]; a delivery is downgraded to the granted QoS (section 3.8.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_and_qos_is_downgraded() {
    let b = start().await;
    let mut s = Raw::connect_v311(b.addr, "unsub-s").await;
    assert_eq!(s.subscribe(1, "u/t", 1).await, 1);
    assert_eq!(s.subscribe(2, "u/m", 0).await, 0);
    let mut p = Raw::connect_v311(b.addr, "unsub-p").await;
    p.publish("u/t", b"q2-down-to-1", 2, false, 1).await;
    let got = s.recv_and_ack().await;
    assert_publish(&got, "u/t", b"q2-down-to-1");
    assert_eq!(qos(&got), 1, "delivered at min(published 2, granted 1)");

    s.send(&unsubscribe_packet(77, &["u/t"])).await;
    match s.recv().await {
        Packet::UnsubAck(u) => assert_eq!(u.packet_id, 77),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    p.publish("u/t", b"after-unsubscribe", 1, false, 2).await;
    p.publish("u/m", b"marker", 0, false, 0).await;
    let got = s.recv_publish().await;
    assert_publish(&got, "u/m", b"marker");
    assert_eq!(got.qos, QoS::AtMostOnce);
}

/// A QoS 0 message is delivered with DUP=0 and no packet id; the broker does not propagate the
/// publisher's DUP flag [MQTT-3.3.1-3].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dup_flag_not_propagated_mqtt_3_3_1_3() {
    let b = start().await;
    let mut s = Raw::connect_v311(b.addr, "dupprop-s").await;
    assert_eq!(s.subscribe(1, "dp/t", 1).await, 1);
    let mut p = Raw::connect_v311(b.addr, "dupprop-p").await;
    p.send(&publish_packet("dp/t", b"dup-in", 1, false, true, 9))
        .await;
    match p.recv().await {
        Packet::PubAck(a) => assert_eq!(a.packet_id, 9),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let got = s.recv_and_ack().await;
    assert_publish(&got, "dp/t", b"dup-in");
    assert!(
        !got.dup,
        "first delivery to the subscriber must have DUP=0 [MQTT-3.3.1-3]"
    );
}

/// MQTT 3.1 CONNACK: the first byte of the variable header is reserved in 3.1 (there is no
/// session present flag before 3.1.1), so it must be 0 even when a persistent session resumes;
/// the resumed session's queued messages are still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v31_connack_reserved_byte_zero_on_resume() {
    let b = start().await;
    let opts = ConnectOpts::v31("v31-persist").clean(false);
    let (mut s, _) = Raw::connect(b.addr, &opts).await;
    assert_eq!(&s.last_frame[..], &[0x20, 0x02, 0x00, 0x00]);
    assert_eq!(s.subscribe(1, "v31p/t", 1).await, 1);
    s.send(&DISCONNECT).await;
    s.expect_closed("after DISCONNECT").await;
    let mut p = Raw::connect_v311(b.addr, "v31-persist-pub").await;
    p.publish("v31p/t", b"queued", 1, false, 1).await;

    let (mut s, _) = Raw::connect(b.addr, &opts).await;
    let connack = s.last_frame.clone();
    let got = s.recv_and_ack().await;
    assert_publish(&got, "v31p/t", b"queued");
    assert_eq!(
        &connack[..],
        &[0x20, 0x02, 0x00, 0x00],
        "3.1 CONNACK on resume must not set the reserved byte (no session present in 3.1)"
    );
}

// ---------------------------------------------------------------------------------------------
// Ordering, takeover with a live connection, retained `$` topics, payload transparency
// ---------------------------------------------------------------------------------------------

/// 100 QoS 1 messages through an inflight window of 20 arrive in publish order
/// [MQTT-4.6.0-2][MQTT-4.6.0-6], each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_order_preserved_across_inflight_window_mqtt_4_6_0() {
    let mut cfg = test_config();
    cfg.mqtt.max_inflight = 20;
    let b = start_with(cfg).await;
    let mut s = Raw::connect_v311(b.addr, "order-s").await;
    assert_eq!(s.subscribe(1, "ord/t", 1).await, 1);
    let mut p = Raw::connect_v311(b.addr, "order-p").await;
    for i in 0..100u16 {
        p.publish("ord/t", format!("{i}").as_bytes(), 1, false, i + 1)
            .await;
    }
    for i in 0..100 {
        let got = s.recv_and_ack().await;
        assert_publish(&got, "ord/t", format!("{i}").as_bytes());
    }
    assert!(s.ping().await.is_empty());
}

/// A second connection with the same client id (clean session 0) takes over a live one
/// [MQTT-3.1.4-2]: the old socket is closed, the new one gets session present = 1, the kept
/// subscription, and the unacknowledged QoS 1 message again with DUP=1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_of_live_connection_resumes_session_mqtt_3_1_4_2() {
    let b = start().await;
    let opts = ConnectOpts::v311("to-live").clean(false);
    let (mut old, _) = Raw::connect(b.addr, &opts).await;
    assert_eq!(old.subscribe(1, "tl/t", 1).await, 1);
    let mut p = Raw::connect_v311(b.addr, "to-live-pub").await;
    p.publish("tl/t", b"unacked", 1, false, 1).await;
    let first = old.recv_publish().await;
    assert_publish(&first, "tl/t", b"unacked");

    let (mut new, ack) = Raw::connect(b.addr, &opts).await;
    assert!(
        ack.session_present,
        "takeover with clean session 0 keeps the session"
    );
    old.expect_closed("taken-over connection [MQTT-3.1.4-2]")
        .await;
    let again = new.recv_publish().await;
    assert_publish(&again, "tl/t", b"unacked");
    assert!(again.dup, "resent with DUP=1: {again:?}");
    new.send(&puback(again.packet_id)).await;
    p.publish("tl/t", b"after", 1, false, 2).await;
    assert_publish(&new.recv_and_ack().await, "tl/t", b"after");
}

/// Retained messages on `$` topics are not delivered to `#` or `+/...` subscriptions
/// [MQTT-4.7.2-1], but are to `$foo/#`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_dollar_topics_not_matched_by_leading_wildcards_mqtt_4_7_2_1() {
    let b = start().await;
    let mut p = Raw::connect_v311(b.addr, "rd-pub").await;
    p.publish("$foo/ret", b"dollar", 1, true, 1).await;
    p.publish("plain/ret", b"plain", 1, true, 2).await;

    for filter in ["#", "+/ret", "+/+"] {
        let mut s = Raw::connect_v311(b.addr, "rd-sub").await;
        assert_eq!(s.subscribe(1, filter, 0).await, 0);
        let got = s.recv_publish().await;
        assert_publish(&got, "plain/ret", b"plain");
        let extra = s.ping().await;
        assert!(
            extra.is_empty(),
            "filter {filter:?} must not get retained $-topic messages: {extra:?}"
        );
        s.send(&DISCONNECT).await;
        s.expect_closed("after DISCONNECT").await;
    }
    let mut s = Raw::connect_v311(b.addr, "rd-sub2").await;
    assert_eq!(s.subscribe(1, "$foo/#", 0).await, 0);
    let got = s.recv_publish().await;
    assert_publish(&got, "$foo/ret", b"dollar");
    assert!(got.retain);
}

/// PUBREL for a packet id the broker does not know still gets PUBCOMP (3.1.1 section 4.3.3:
/// the receiver MUST respond to PUBREL with PUBCOMP containing the same packet id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubrel_for_unknown_id_gets_pubcomp_mqtt_4_3_3() {
    let b = start().await;
    let mut c = Raw::connect_v311(b.addr, "rel-unknown").await;
    c.send(&pubrel(4242)).await;
    match c.recv().await {
        Packet::PubComp(r) => assert_eq!(r.packet_id, 4242),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
}

/// Payloads are opaque bytes (not UTF-8 checked) and topics may hold any UTF-8 (spaces,
/// non-ASCII); an empty non-retained payload is delivered as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_payloads_and_unicode_topics_are_transparent() {
    let b = start().await;
    let mut s = Raw::connect_v311(b.addr, "bin-s").await;
    assert_eq!(s.subscribe(1, "bin/+/€", 2).await, 2);
    let mut p = Raw::connect_v311(b.addr, "bin-p").await;
    let payload = [0xFF, 0x00, 0xC3, 0x28, 0x80, b'\n'];
    p.publish("bin/ä ö/€", &payload, 2, false, 1).await;
    p.publish("bin/x/€", b"", 1, false, 2).await;
    let got = s.recv_and_ack().await;
    assert_publish(&got, "bin/ä ö/€", &payload);
    let got = s.recv_and_ack().await;
    assert_publish(&got, "bin/x/€", b"");
}

/// `max_queued_messages` bounds an offline session's queue: with a limit of 5, the first 5 of 10
/// queued QoS 1 messages are kept (later ones dropped) and the session works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_bounded_by_max_queued_messages() {
    let mut cfg = test_config();
    cfg.mqtt.max_queued_messages = 5;
    let b = start_with(cfg).await;
    let opts = ConnectOpts::v311("mq-limit").clean(false);
    let (mut s, _) = Raw::connect(b.addr, &opts).await;
    assert_eq!(s.subscribe(1, "mql/t", 1).await, 1);
    s.send(&DISCONNECT).await;
    s.expect_closed("after DISCONNECT").await;
    b.wait_until("the subscriber is offline", |st| {
        st.metrics().clients_connected.get() == 0
    })
    .await;
    let mut p = Raw::connect_v311(b.addr, "mq-limit-pub").await;
    for i in 0..10u16 {
        p.publish("mql/t", format!("{i}").as_bytes(), 1, false, i + 1)
            .await;
    }
    let (mut s, ack) = Raw::connect(b.addr, &opts).await;
    assert!(ack.session_present);
    for i in 0..5 {
        assert_publish(&s.recv_and_ack().await, "mql/t", format!("{i}").as_bytes());
    }
    assert!(s.ping().await.is_empty(), "only 5 messages may be queued");
    assert_eq!(b.state().metrics().dropped_queue_full.get(), 5);
    p.publish("mql/t", b"live", 1, false, 99).await;
    assert_publish(&s.recv_and_ack().await, "mql/t", b"live");
}

/// "Clients are allowed to send further Control Packets immediately after sending a CONNECT
/// Packet; Clients need not wait for a CONNACK" (3.1.1 and 5.0, section 3.1.4). Sent in
/// the same write, they arrive in the same read as the CONNECT: they must be handled then, not
/// when the client next sends something (which a subscriber may never do). Found by a chaos
/// run: paho's connect() then subscribe() lost one subscription in five.
#[tokio::test]
async fn packets_pipelined_behind_connect_are_handled_spec_3_1_4() {
    let b = start().await;
    for (i, opts) in [
        ConnectOpts::v311("pipelined"),
        ConnectOpts::v31("pipelined31"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = Raw::open(b.addr).await;
        let topic = format!("pipe/{i}");
        let bytes = [
            opts.encode(),
            subscribe_packet(1, &[(&topic, 1)]),
            publish_packet(&topic, b"behind-connect", 1, false, false, 2),
        ]
        .concat();
        c.send(&bytes).await;
        assert!(
            matches!(c.recv().await, Packet::ConnAck(_)),
            "CONNACK first"
        );
        assert!(matches!(c.recv().await, Packet::SubAck(_)), "then SUBACK");
        let (mut acked, mut delivered) = (false, false);
        while !(acked && delivered) {
            match c.recv().await {
                Packet::PubAck(a) if a.packet_id == 2 => acked = true,
                Packet::Publish(p) => {
                    assert_eq!(&p.payload[..], b"behind-connect");
                    delivered = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

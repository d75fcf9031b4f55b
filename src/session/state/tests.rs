//! Unit tests for [`SessionState`](super::SessionState).
use super::*;
use bytes::Bytes;

fn limits() -> Limits {
    Limits {
        max_queued_messages: 3,
        max_queued_bytes: 0,
    }
}

pub(super) fn delivery(qos: QoS) -> Delivery {
    Delivery {
        msg: Arc::new(Message::new("t", Bytes::from_static(b"x"), qos, false)),
        qos,
        retain: false,
        subscription_ids: Vec::new(),
        shared: None,
        stored: None,
    }
}

pub(super) fn take(s: &mut SessionState, window: usize) -> Vec<(u16, Delivery)> {
    let mut out = Vec::new();
    s.take_ready(
        window,
        usize::MAX,
        Instant::now(),
        &mut out,
        &mut |_, _| {},
        &|_| true,
    );
    out
}

#[test]
fn offline_qos0_is_not_queued_but_qos1_is() {
    let mut s = SessionState::new(limits());
    assert_eq!(
        s.enqueue(delivery(QoS::AtMostOnce)).unwrap_err(),
        DropReason::Offline
    );
    assert!(s.enqueue(delivery(QoS::AtLeastOnce)).is_ok());
    assert_eq!(s.queued_len(), 1);
}

#[test]
fn queue_limit_drops_excess() {
    let mut s = SessionState::new(limits());
    s.set_online(true);
    for _ in 0..3 {
        s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    }
    assert_eq!(
        s.enqueue(delivery(QoS::AtMostOnce)).unwrap_err(),
        DropReason::QueueFull
    );
}

#[test]
fn byte_limit_drops_excess() {
    let mut s = SessionState::new(Limits {
        max_queued_messages: 100,
        max_queued_bytes: 1,
    });
    s.set_online(true);
    // The first always fits so one oversized message can still flow.
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    assert_eq!(
        s.enqueue(delivery(QoS::AtLeastOnce)).unwrap_err(),
        DropReason::QueueFull
    );
}

#[test]
fn window_limits_qos1_but_not_qos0() {
    let mut s = SessionState::new(Limits {
        max_queued_messages: 10,
        max_queued_bytes: 0,
    });
    s.set_online(true);
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    let out = take(&mut s, 1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1);
    assert!(!s.has_ready(1));
    assert!(s.on_puback(1).is_some());
    assert!(s.has_ready(1));
    let out = take(&mut s, 1);
    assert_eq!(out[0].0, 2);
    s.enqueue(delivery(QoS::AtMostOnce)).unwrap();
    let out = take(&mut s, 1);
    assert_eq!(
        out[0].0, 0,
        "QoS 0 carries no packet id and needs no window"
    );
}

#[test]
fn qos2_outbound_flow_and_resume_order() {
    let mut s = SessionState::new(Limits {
        max_queued_messages: 10,
        max_queued_bytes: 0,
    });
    s.set_online(true);
    s.enqueue(delivery(QoS::ExactlyOnce)).unwrap();
    s.enqueue(delivery(QoS::ExactlyOnce)).unwrap();
    let out = take(&mut s, 10);
    assert_eq!(out.len(), 2);
    assert!(s.on_puback(1).is_none(), "PUBACK does not complete QoS 2");
    assert!(s.on_pubrec(1, false));
    assert!(s.on_pubrec(1, false), "a repeated PUBREC is answered again");
    let resend = s.resume(usize::MAX);
    assert!(matches!(resend[0], Resend::PubRel(1)));
    assert!(matches!(resend[1], Resend::Publish(2, _)));
    assert!(s.on_pubcomp(1));
    assert!(!s.on_pubcomp(1));
    assert_eq!(s.inflight_len(), 1);
}

#[test]
fn failed_pubrec_ends_the_flow() {
    let mut s = SessionState::new(limits());
    s.set_online(true);
    s.enqueue(delivery(QoS::ExactlyOnce)).unwrap();
    take(&mut s, 10);
    assert!(!s.on_pubrec(1, true));
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn inbound_qos2_dedup_until_pubrel() {
    let mut s = SessionState::new(limits());
    assert!(s.inbound_qos2_publish(7));
    assert!(
        !s.inbound_qos2_publish(7),
        "[MQTT-4.3.3-9] a resent PUBLISH is not forwarded again"
    );
    assert!(s.inbound_pubrel(7));
    assert!(!s.inbound_pubrel(7));
    assert!(
        s.inbound_qos2_publish(7),
        "the id is free again after PUBREL"
    );
}

#[test]
fn shared_qos1_inflight_and_unsent_move_but_sent_qos2_stays() {
    let mut s = SessionState::new(Limits {
        max_queued_messages: 10,
        max_queued_bytes: 0,
    });
    s.set_online(true);
    let share: std::sync::Arc<str> = "$share/g/t".into();
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtLeastOnce] {
        let mut d = delivery(qos);
        d.shared = Some(share.clone());
        s.enqueue(d).unwrap();
    }
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    take(&mut s, 2); // the first QoS 1 and the QoS 2 are now in flight
    let (moved, _, sent_ids) = s.take_shared(true, |_| true);
    assert_eq!(sent_ids.len(), 1, "the sent QoS 1 had a packet id");
    let qos: Vec<QoS> = moved.iter().map(|d| d.qos).collect();
    assert_eq!(
        qos,
        vec![QoS::AtLeastOnce, QoS::AtLeastOnce],
        "[MQTT-4.8.2-4]"
    );
    assert_eq!(s.inflight_len(), 1, "the sent QoS 2 stays");
    assert_eq!(s.queued_len(), 1, "the non-shared message stays");
}

/// A member still connected keeps what it was sent (it may yet acknowledge it, under a packet
/// id that must stay taken until then); only its unsent shared messages move.
#[test]
fn only_unsent_shared_messages_move_from_a_connected_member() {
    let mut s = SessionState::new(Limits {
        max_queued_messages: 10,
        max_queued_bytes: 0,
    });
    s.set_online(true);
    for _ in 0..3 {
        let mut d = delivery(QoS::AtLeastOnce);
        d.shared = Some("$share/g/t".into());
        s.enqueue(d).unwrap();
    }
    take(&mut s, 1);
    let (moved, _, sent_ids) = s.take_shared(false, |_| true);
    assert_eq!((moved.len(), sent_ids.len()), (2, 0));
    assert_eq!((s.inflight_len(), s.queued_len()), (1, 0));
}

#[test]
fn clear_forgets_everything() {
    let mut s = SessionState::new(limits());
    s.set_online(true);
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    s.add_subscription("a/#", SubscriptionOptions::new(QoS::AtLeastOnce), None);
    s.inbound_qos2_publish(3);
    assert!(s.clear() > 0);
    assert_eq!(s.queued_len(), 0);
    assert_eq!(s.subscription_count(), 0);
    assert_eq!(s.inbound_qos2_len(), 0);
}

/// The table is a B-tree, which frees its nodes as it empties (a hash map kept its capacity
/// and needed shrinking); what is checked here is that removals and a clean start leave
/// exactly what they should.
#[test]
fn emptied_subscription_table_keeps_only_what_remains() {
    let mut s = SessionState::new(limits());
    let opts = SubscriptionOptions::new(QoS::AtMostOnce);
    for i in 0..10_000 {
        s.add_subscription(&format!("t/{i}"), opts, None);
    }
    for i in 1..10_000 {
        assert!(s.remove_subscription(&format!("t/{i}")));
    }
    assert_eq!(s.subscription_count(), 1);
    assert!(s.has_subscription("t/0"));
    s.clear();
    assert!(s.body.is_none(), "a clean start keeps no table");
}

#[test]
fn repeated_filter_replaces() {
    let mut s = SessionState::new(limits());
    assert!(!s.add_subscription("a", SubscriptionOptions::new(QoS::AtMostOnce), None));
    assert!(
        s.add_subscription("a", SubscriptionOptions::new(QoS::AtLeastOnce), None),
        "[MQTT-3.8.4-3]"
    );
    assert_eq!(s.subscription_count(), 1);
}

#[test]
fn expired_messages_are_dropped_not_sent() {
    let mut s = SessionState::new(limits());
    s.set_online(true);
    let mut m = Message::new("t", Bytes::from_static(b"x"), QoS::AtLeastOnce, false);
    m.expires_at = Some(Instant::now() - std::time::Duration::from_secs(1));
    s.enqueue(Delivery {
        msg: Arc::new(m),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![],
        shared: None,
        stored: None,
    })
    .unwrap();
    let mut out = Vec::new();
    let mut dropped = 0;
    s.take_ready(
        10,
        10,
        Instant::now(),
        &mut out,
        &mut |_, r| {
            assert_eq!(r, DropReason::Expired);
            dropped += 1;
        },
        &|_| true,
    );
    assert!(out.is_empty());
    assert_eq!(dropped, 1);
    assert_eq!(s.queued_bytes(), 0);
}

fn retained(topic: &str, qos: QoS) -> (Arc<str>, Arc<Message>) {
    let m = Message::new(topic, Bytes::from_static(b"r"), qos, true);
    (m.topic.clone(), Arc::new(m))
}

/// Answers the front stream's request from `store` (sorted topics), as the broker would.
fn feed(s: &mut SessionState, store: &[(Arc<str>, Arc<Message>)]) -> bool {
    let Some(req) = s.retained_request() else {
        return false;
    };
    let batch: Vec<_> = store
        .iter()
        .filter(|(t, _)| req.after.as_ref().is_none_or(|a| t > a))
        .take(req.max)
        .cloned()
        .collect();
    s.fill_retained(&req, batch, &|_| true);
    true
}

#[test]
fn retained_stream_goes_before_the_queue_and_is_never_limited_by_it() {
    let mut s = SessionState::new(limits()); // max_queued_messages 3
    s.set_online(true);
    let store: Vec<_> = (0..200)
        .map(|i| retained(&format!("r/{i:03}"), QoS::AtLeastOnce))
        .collect();
    let opts = SubscriptionOptions::new(QoS::AtMostOnce);
    s.start_retained("r/#", opts, Some(7));
    s.enqueue(delivery(QoS::AtMostOnce)).unwrap(); // a live message arriving meanwhile
    let mut got = Vec::new();
    while s.has_ready(10) {
        feed(&mut s, &store);
        got.extend(take(&mut s, 10));
    }
    assert_eq!(got.len(), 201);
    for (i, (_, d)) in got[..200].iter().enumerate() {
        assert_eq!(*d.msg.topic, *format!("r/{i:03}"));
        assert!(d.retain, "[MQTT-3.3.1-8] RETAIN=1 on subscribe");
        assert_eq!(d.qos, QoS::AtMostOnce, "min(message QoS, granted QoS)");
        assert_eq!(d.subscription_ids, [7]);
    }
    assert_eq!(
        &*got[200].1.msg.topic, "t",
        "the live message waited behind the stream"
    );
    assert_eq!(s.retained_streams(), 0);
}

#[test]
fn retained_stream_qos1_is_paced_by_the_window() {
    let mut s = SessionState::new(limits());
    s.set_online(true);
    let store: Vec<_> = (0..5)
        .map(|i| retained(&format!("r/{i}"), QoS::AtLeastOnce))
        .collect();
    s.start_retained("r/#", SubscriptionOptions::new(QoS::AtLeastOnce), None);
    feed(&mut s, &store);
    assert_eq!(take(&mut s, 2).len(), 2);
    assert!(!s.has_ready(2), "window full");
    assert!(s.on_puback(1).is_some());
    assert_eq!(take(&mut s, 2).len(), 1);
}

#[test]
fn a_stopped_or_replaced_stream_reads_no_more() {
    let mut s = SessionState::new(limits());
    s.set_online(true);
    let store: Vec<_> = (0..200)
        .map(|i| retained(&format!("r/{i:03}"), QoS::AtMostOnce))
        .collect();
    let opts = SubscriptionOptions::new(QoS::AtMostOnce);
    s.add_subscription("r/#", opts, None);
    s.start_retained("r/#", opts, None);
    let stale = s.retained_request().unwrap();
    s.start_retained("r/#", opts, None);
    assert_eq!(s.retained_streams(), 1, "a repeated SUBSCRIBE starts over");
    assert_eq!(s.fill_retained(&stale, store[..64].to_vec(), &|_| true), 0);
    assert!(feed(&mut s, &store));
    s.remove_subscription("r/#");
    assert_eq!(take(&mut s, 10).len(), 64, "what was read is still sent");
    assert_eq!(s.retained_streams(), 0);
    assert!(s.retained_request().is_none());
}

#[test]
fn clear_frees_what_streams_buffered() {
    let mut s = SessionState::new(limits());
    s.set_online(true);
    let store = vec![retained("r/1", QoS::AtMostOnce)];
    s.start_retained("r/#", SubscriptionOptions::new(QoS::AtMostOnce), None);
    s.start_retained("r/+", SubscriptionOptions::new(QoS::AtMostOnce), None);
    feed(&mut s, &store);
    assert!(s.clear() > 0);
    assert_eq!(s.retained_streams(), 0);
}

/// An idle session (the common case) reads as empty, is cleared and restored without ever
/// allocating its body: reads run every connection turn.
#[test]
fn an_idle_session_allocates_no_body() {
    let mut s = SessionState::new(limits());
    s.set_online(true);
    s.set_persistence(None);
    s.restore(Vec::new(), Vec::new());
    assert!(!s.has_ready(usize::MAX));
    assert_eq!(
        s.queue_depth() + s.inflight_len() + s.subscription_count(),
        0
    );
    assert!(s.retained_request().is_none() && s.refill_request(10, false).is_none());
    assert!(s.resume(usize::MAX).is_empty() && s.shared_groups().is_empty());
    assert!(!s.inbound_pubrel(1) && s.on_puback(1).is_none() && !s.on_pubcomp(1));
    assert!(!s.remove_subscription("a") && !s.is_persistent());
    assert_eq!(s.clear(), 0);
    assert_eq!(s.take_shared(true, |_| true).1, 0);
    assert_eq!(take(&mut s, 10).len(), 0);
    assert!(s.body.is_none());
    assert!(
        s.enqueue(delivery(QoS::AtMostOnce)).is_ok(),
        "the first delivery makes the body"
    );
    assert!(s.body.is_some());
}

/// A clean start drops the body; a retained batch read for a stream of the old body (a
/// connection still finishing its read) must not fill a stream started since.
#[test]
fn a_batch_for_a_stream_dropped_by_a_clean_start_fills_nothing() {
    let mut s = SessionState::new(limits());
    s.set_online(true);
    let opts = SubscriptionOptions::new(QoS::AtMostOnce);
    s.add_subscription("r/#", opts, None);
    s.start_retained("r/#", opts, None);
    let stale = s.retained_request().unwrap();
    s.clear();
    s.add_subscription("r/#", opts, None);
    s.start_retained("r/#", opts, None);
    let fresh = s.retained_request().unwrap();
    assert_ne!(stale.id, fresh.id);
    let batch = vec![retained("r/1", QoS::AtMostOnce)];
    assert_eq!(s.fill_retained(&stale, batch, &|_| true), 0);
    assert!(
        s.retained_request().is_some(),
        "the new stream still wants its read"
    );
}

/// A persistent session's clean start keeps its store positions going (and trusts none of
/// the entries before them).
#[test]
fn a_clean_start_keeps_a_persistent_sessions_store_positions() {
    let mut s = SessionState::new(limits());
    s.set_persistence(Some(Persistence {
        memory_cap: 10,
        next_seq: 7,
        trusted_until: 0,
        backlog: Some((3, 4)),
        next_nth: 0,
    }));
    assert_eq!(s.backlog_len(), 4);
    s.clear();
    assert!(s.is_persistent());
    assert_eq!(s.next_seq(), Some(7));
    assert_eq!(s.backlog_len(), 0);
}

fn big(qos: QoS, len: usize) -> Delivery {
    Delivery {
        msg: Arc::new(Message::new("t", Bytes::from(vec![b'x'; len]), qos, false)),
        ..delivery(qos)
    }
}

/// A persistent session with a store, online, with room for 10 deliveries in memory.
fn stored_session() -> SessionState {
    let mut s = SessionState::new(Limits {
        max_queued_messages: 100,
        max_queued_bytes: 0,
    });
    s.set_online(true);
    s.set_persistence(Some(Persistence {
        memory_cap: 10,
        next_seq: 0,
        trusted_until: 0,
        backlog: None,
        next_nth: 0,
    }));
    s
}

/// A stored entry read back from disk.
fn stored(seq: u64) -> Delivery {
    Delivery {
        stored: Some(Stored::Queue(seq)),
        ..delivery(QoS::AtLeastOnce)
    }
}

fn queued_seqs(s: &mut SessionState) -> Vec<Option<u64>> {
    take(s, 100).into_iter().map(|(_, d)| d.seq()).collect()
}

/// Shedding (a subscriber holding the saturated global budget) takes out what is only in
/// memory, to drop, and moves what is stored back to the disk backlog: nothing stays in memory.
#[test]
fn shedding_drops_what_is_in_memory_only_and_moves_the_rest_to_disk() {
    let mut s = stored_session();
    for qos in [
        QoS::AtMostOnce,
        QoS::AtLeastOnce,
        QoS::AtMostOnce,
        QoS::ExactlyOnce,
    ] {
        s.enqueue(delivery(qos)).unwrap();
    }
    let before = s.queued_bytes();
    let shed = s.shed();
    assert_eq!(shed.dropped.len(), 2);
    assert!(shed
        .dropped
        .iter()
        .all(|d| d.qos == QoS::AtMostOnce && d.seq().is_none()));
    assert_eq!(shed.spilled, 2);
    assert_eq!((s.queued_len(), s.queued_bytes()), (0, 0));
    assert!(shed.freed >= before, "everything counted went back");
    assert_eq!(s.backlog_len(), 2);
    assert_eq!(s.queue_depth(), 2, "still owed, for the queue limit");
    let (from, _) = s.refill_request(10, false).unwrap();
    assert_eq!(from, 0);
    assert!(s.refill(vec![stored(0), stored(1)]) > 0);
    assert_eq!(s.backlog_len(), 0);
    assert_eq!(queued_seqs(&mut s), vec![Some(0), Some(1)], "in order");
}

/// Every stored delivery moves to disk; a QoS 0 one stays in memory and so goes out before the
/// stored ones queued ahead of it. Order is kept per topic and QoS [MQTT-4.6.0-6].
#[test]
fn a_spill_keeps_the_order_per_qos() {
    let mut s = stored_session();
    for qos in [QoS::AtLeastOnce, QoS::AtMostOnce, QoS::AtLeastOnce] {
        s.enqueue(delivery(qos)).unwrap();
    }
    assert_eq!(s.spill().0, 2);
    assert_eq!(s.queued_len(), 1);
    assert_eq!(s.spill(), (0, 0), "nothing left to move");
    s.refill(vec![stored(0), stored(1)]);
    assert_eq!(
        queued_seqs(&mut s),
        vec![None, Some(0), Some(1)],
        "QoS 0 first, then the stored ones in order"
    );
}

/// Positions moved to disk can have gaps (a shared-subscription hand-over took the deliveries
/// between them). A refill steps over a gap, even when the store still has the entry (its
/// removal on its way), and stops at a moved position the store does not have yet (its write
/// on its way), to read it at the next refill.
#[test]
fn a_refill_of_moved_positions_steps_over_gaps_and_waits_for_writes() {
    let mut s = stored_session();
    for i in 0..5 {
        let mut d = delivery(QoS::AtLeastOnce);
        if i % 2 == 1 {
            d.shared = Some(Arc::from("g"));
        }
        s.enqueue(d).unwrap();
    }
    let (moved, _, _) = s.take_shared(true, |_| true);
    assert_eq!(moved.len(), 2);
    assert_eq!(s.spill().0, 3);
    // Arriving while a backlog waits, it joins it.
    assert_eq!(s.enqueue(delivery(QoS::AtLeastOnce)).unwrap().seq, Some(5));
    assert_eq!(s.backlog_len(), 4);
    // Position 2 is not in the store yet; 1 was handed over.
    s.refill(vec![stored(0), stored(1), stored(4), stored(5)]);
    assert_eq!(s.backlog_len(), 3);
    assert_eq!(s.refill_request(10, false).map(|r| r.0), Some(2));
    s.refill(vec![stored(2), stored(3), stored(4), stored(5)]);
    assert_eq!(s.backlog_len(), 0);
    assert_eq!(
        queued_seqs(&mut s),
        vec![Some(0), Some(2), Some(4), Some(5)]
    );
}

/// A shared-subscription delivery moved to disk comes back with its share group (the store
/// does not keep it), so it still goes to another member if this one leaves later.
#[test]
fn a_spilled_shared_delivery_comes_back_shared() {
    let mut s = stored_session();
    for i in 0..3 {
        let mut d = delivery(QoS::AtLeastOnce);
        if i == 1 {
            d.shared = Some(Arc::from("$share/g/t"));
        }
        s.enqueue(d).unwrap();
    }
    assert_eq!(s.spill().0, 3);
    s.refill(vec![stored(0), stored(1), stored(2)]);
    let shared: Vec<bool> = take(&mut s, 10)
        .into_iter()
        .map(|(_, d)| d.shared.is_some())
        .collect();
    assert_eq!(shared, [false, true, false]);
}

/// Moved to disk twice before the first ones were all read back: the newer move goes first,
/// as it was ahead of them in memory.
#[test]
fn a_second_spill_goes_before_the_first() {
    let mut s = stored_session();
    for _ in 0..3 {
        s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    }
    s.spill();
    s.refill(vec![stored(0)]);
    assert_eq!(s.backlog_len(), 2);
    assert_eq!(s.spill().0, 1);
    assert_eq!(s.backlog_len(), 3);
    s.refill(vec![stored(0), stored(1), stored(2)]);
    assert_eq!(queued_seqs(&mut s), vec![Some(0), Some(1), Some(2)]);
}

/// A stuck subscriber reads its backlog back only when its window has room: what it read would
/// sit in memory and hold the global budget again.
#[test]
fn a_stuck_subscriber_with_a_full_window_reads_nothing_back() {
    let mut s = stored_session();
    for _ in 0..2 {
        s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    }
    assert_eq!(take(&mut s, 1).len(), 1);
    s.spill();
    assert!(s.refill_request(1, true).is_none());
    assert!(s.refill_request(1, false).is_some());
    assert!(s.refill_request(2, true).is_some());
}

/// A stuck subscriber's memory queue holds at most `STUCK_QUEUE_BYTES` of payload: a clean
/// session drops the rest, a persistent one keeps it on disk only.
#[test]
fn a_stuck_subscriber_holds_little_in_memory() {
    let big_limits = Limits {
        max_queued_messages: 100,
        max_queued_bytes: 0,
    };
    let half = STUCK_QUEUE_BYTES as usize / 2 + 1;
    let mut clean = SessionState::new(big_limits);
    clean.set_online(true);
    let epoch = clean.epoch();
    assert!(clean
        .try_enqueue_at(epoch, big(QoS::AtLeastOnce, half), true)
        .is_ok());
    let (why, _) = clean
        .try_enqueue_at(epoch, big(QoS::AtLeastOnce, half), true)
        .unwrap_err();
    assert_eq!(why, DropReason::QueueFull);
    assert!(clean
        .try_enqueue_at(epoch, big(QoS::AtLeastOnce, half), false)
        .is_ok());

    let mut stored = SessionState::new(big_limits);
    stored.set_online(true);
    stored.set_persistence(Some(Persistence {
        memory_cap: 10,
        next_seq: 0,
        trusted_until: 0,
        backlog: None,
        next_nth: 0,
    }));
    let epoch = stored.epoch();
    for _ in 0..3 {
        assert!(stored
            .try_enqueue_at(epoch, big(QoS::AtLeastOnce, half), true)
            .is_ok());
    }
    assert_eq!(stored.queued_len(), 1, "the rest waits on disk");
    assert_eq!(stored.backlog_len(), 2);
}

/// An ending session's backlog is taken out in order without coming into memory, spilled
/// entries with the share group they had, and stops at a position not in the store yet.
#[test]
fn a_drained_backlog_gives_its_entries_out_in_order_with_their_groups() {
    let mut s = stored_session();
    for i in 0..3 {
        let mut d = delivery(QoS::AtLeastOnce);
        if i == 1 {
            d.shared = Some(Arc::from("$share/g/t"));
        }
        s.enqueue(d).unwrap();
    }
    assert_eq!(s.spill().0, 3);
    s.set_online(false);
    // Offline: later deliveries join the backlog directly, after the spilled ones.
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    assert_eq!(s.drain_from(), Some(0));
    // Position 2 has not reached the store yet: the drain stops before it.
    let first = s.drain_backlog(vec![stored(0), stored(1), stored(3)]);
    let got: Vec<_> = first
        .iter()
        .map(|d| (d.seq(), d.shared.is_some()))
        .collect();
    assert_eq!(got, [(Some(0), false), (Some(1), true)]);
    assert_eq!(s.drain_from(), Some(2));
    let rest = s.drain_backlog(vec![stored(2), stored(3)]);
    assert_eq!(
        rest.iter().map(|d| d.seq()).collect::<Vec<_>>(),
        [Some(2), Some(3)]
    );
    assert_eq!(s.drain_from(), None, "nothing left on disk");
    assert_eq!(
        (s.queued_len(), s.queued_bytes()),
        (0, 0),
        "nothing came into memory"
    );
}

/// A delivery read back from the store (which does not keep its share group) gets it from the
/// session's shared subscription matching its topic, unless an own subscription matches too.
#[test]
fn a_refilled_delivery_gets_its_share_group_from_the_subscriptions() {
    let mut s = stored_session();
    let qos1 = SubscriptionOptions::new(QoS::AtLeastOnce);
    s.add_subscription("$share/g/t", qos1, None);
    s.add_subscription("own/#", qos1, None);
    s.set_online(false);
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    let mut mine = delivery(QoS::AtLeastOnce);
    mine.msg = Arc::new(Message::new("own/x", Bytes::new(), QoS::AtLeastOnce, false));
    s.enqueue(mine.clone()).unwrap();
    s.set_online(true);
    let mut own_entry = stored(1);
    own_entry.msg = mine.msg;
    s.refill(vec![stored(0), own_entry]);
    let groups: Vec<Option<String>> = take(&mut s, 10)
        .into_iter()
        .map(|(_, d)| d.shared.map(|g| g.to_string()))
        .collect();
    assert_eq!(groups, [Some("$share/g/t".to_string()), None]);
}

/// Two shared subscriptions of the session match the topic: the refilled delivery may be
/// either's copy, so it gets no group (handed to the wrong group, one of its members would
/// get the message twice; the model soak's QoS 2 check found it).
#[test]
fn a_refilled_delivery_matched_by_two_shared_subscriptions_gets_no_group() {
    let mut s = stored_session();
    let qos1 = SubscriptionOptions::new(QoS::AtLeastOnce);
    s.add_subscription("$share/g/t", qos1, None);
    s.add_subscription("$share/g/+", qos1, None);
    s.set_online(false);
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    s.set_online(true);
    s.refill(vec![stored(0)]);
    let groups: Vec<Option<String>> = take(&mut s, 10)
        .into_iter()
        .map(|(_, d)| d.shared.map(|g| g.to_string()))
        .collect();
    assert_eq!(groups, [None]);
}

/// A retained message sent to a new subscription of a persistent session is stored in its
/// inflight record (it has no queue position), ordered before the first queue entry not yet
/// sent, so a restart resends it in its place [MQTT-4.4.0-1] [MQTT-4.6.0-1].
#[test]
fn retained_sent_to_a_persistent_session_is_stored_in_its_inflight_record() {
    let mut s = stored_session();
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    assert_eq!(queued_seqs(&mut s), [Some(0)]);
    let store: Vec<_> = (0..3)
        .map(|i| retained(&format!("r/{i}"), QoS::ExactlyOnce))
        .chain([retained("r/q0", QoS::AtMostOnce)])
        .collect();
    s.start_retained("r/#", SubscriptionOptions::new(QoS::ExactlyOnce), None);
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap(); // live, waits behind the stream: seq 1
    assert!(feed(&mut s, &store));
    let sent: Vec<_> = take(&mut s, 100)
        .into_iter()
        .map(|(pid, d)| (pid, d.stored))
        .collect();
    let owned = |nth| Some(Stored::Inflight { before: 1, nth });
    assert_eq!(
        sent,
        [
            (2, owned(0)),
            (3, owned(1)),
            (4, owned(2)),
            (0, None),
            (5, Some(Stored::Queue(1)))
        ]
    );
    assert!(s.on_pubrec(3, false));
    assert_eq!(s.inflight_stored(3), owned(1));

    // Restored, the counter goes on past the window's records.
    let mut back = stored_session();
    let restored = |nth| Inflight::Released {
        stored: Some(Stored::Inflight { before: 0, nth }),
    };
    back.restore(vec![(8, restored(6)), (9, restored(2))], Vec::new());
    back.start_retained("r/#", SubscriptionOptions::new(QoS::AtLeastOnce), None);
    assert!(feed(&mut back, &store[..1]));
    let sent = take(&mut back, 100);
    assert_eq!(
        sent[0].1.stored,
        Some(Stored::Inflight { before: 0, nth: 7 })
    );

    // Without a store nothing is recorded.
    let mut plain = SessionState::new(limits());
    plain.set_online(true);
    plain.start_retained("r/#", SubscriptionOptions::new(QoS::AtLeastOnce), None);
    assert!(feed(&mut plain, &store[..1]));
    assert_eq!(take(&mut plain, 100)[0].1.stored, None);
}

/// Every queued message holds a `Delivery`: how it is stored costs it no more than the
/// queue position it replaced did.
#[test]
fn a_delivery_stays_72_bytes() {
    assert_eq!(std::mem::size_of::<Option<Stored>>(), 16);
    assert!(std::mem::size_of::<Delivery>() <= 72);
}

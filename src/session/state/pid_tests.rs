//! Unit tests of outbound packet ids: never 0 [MQTT-2.3.1-1], never one still in flight
//! [MQTT-2.3.1-2], with the counter coming round, large windows and restored windows.

use super::tests::{delivery, take};
use super::*;

#[test]
fn packet_ids_are_nonzero_and_not_reused_while_inflight() {
    let mut s = SessionState::new(Limits {
        max_queued_messages: 10,
        max_queued_bytes: 0,
    });
    s.set_online(true);
    lap_to(&mut s, u16::MAX);
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    let out = take(&mut s, 10);
    assert_eq!(out[0].0, u16::MAX);
    assert_eq!(out[1].0, 1, "[MQTT-2.3.1-1] packet id 0 is skipped");
    lap_to(&mut s, 1);
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    let out = take(&mut s, 10);
    assert_eq!(out[0].0, 2, "id 1 is still in flight");
}

/// Moves the packet id counter to `pid` as if it had come round the whole id space since
/// the ids in flight were handed out.
fn lap_to(s: &mut SessionState, pid: u16) {
    let b = s.body_mut();
    b.next_packet_id = pid;
    b.pids_in_order = false;
}

/// The counter really comes round: one message stays unacknowledged while 65,534 others are
/// sent and acknowledged one by one. Its id is skipped [MQTT-2.3.1-2], as are later ones still
/// in flight once the counter passed the oldest.
#[test]
fn an_id_held_for_a_whole_lap_of_the_counter_is_skipped() {
    let mut s = SessionState::new(Limits {
        max_queued_messages: 10,
        max_queued_bytes: 0,
    });
    s.set_online(true);
    s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    let held = take(&mut s, 10)[0].0;
    assert_eq!(held, 1);
    for _ in 0..u16::MAX - 2 {
        s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
        let (pid, _) = take(&mut s, 10)[0];
        assert!(s.on_puback(pid).is_some());
    }
    // Ids 2..=65534 went by; 65535 is next, then 1 (held), so 2.
    for _ in 0..3 {
        s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    }
    let ids: Vec<u16> = take(&mut s, 10).iter().map(|(p, _)| *p).collect();
    assert_eq!(
        ids,
        [u16::MAX, 2, 3],
        "[MQTT-2.3.1-1] no 0, [MQTT-2.3.1-2] 1 is held"
    );
    // Acknowledge 2 and 65535 but not 3, with 1 still held: round again, both are skipped.
    assert!(s.on_puback(2).is_some());
    assert!(s.on_puback(u16::MAX).is_some());
    for _ in 0..70_000 {
        s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
        let (pid, _) = take(&mut s, 10)[0];
        assert!(pid != 1 && pid != 3, "id {pid} is in flight");
        assert!(s.on_puback(pid).is_some());
    }
}

/// A restored window can hold its ids in any order: none of them is handed out again.
#[test]
fn a_restored_window_in_any_order_keeps_its_ids() {
    let mut s = SessionState::new(Limits {
        max_queued_messages: 10,
        max_queued_bytes: 0,
    });
    s.set_online(true);
    let restored = [7u16, 9, 2, 8];
    s.restore(
        restored
            .iter()
            .map(|p| (*p, Inflight::Publish(delivery(QoS::AtLeastOnce))))
            .collect(),
        Vec::new(),
    );
    // The counter goes on after the last one restored (8): 9 is in flight, as are 2 and 7
    // when it comes round.
    for _ in 0..6 {
        s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    }
    let ids: Vec<u16> = take(&mut s, 10).iter().map(|(p, _)| *p).collect();
    assert_eq!(ids, [10, 11, 12, 13, 14, 15]);
    lap_to(&mut s, 1);
    for _ in 0..3 {
        s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    }
    let ids: Vec<u16> = take(&mut s, 20).iter().map(|(p, _)| *p).collect();
    assert_eq!(ids, [1, 3, 4]);
}

/// Above `PID_SCAN_MAX` in flight the ids in use come from a per-batch bit set: the same
/// guarantees hold across the wrap, with old messages still holding ids the counter reaches
/// again [MQTT-2.3.1-2] (an id is not reused while its flow is unfinished).
#[test]
fn large_windows_never_hand_out_an_id_in_flight() {
    let mut s = SessionState::new(Limits {
        max_queued_messages: 5_000,
        max_queued_bytes: 0,
    });
    s.set_online(true);
    let window = 3_000;
    for _ in 0..window {
        s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    }
    let first = take(&mut s, window);
    assert_eq!(first.len(), window);
    // Acknowledge all but every tenth, so old ids stay in flight, then run the counter up to
    // just before the oldest ids.
    for (pid, _) in &first {
        if pid % 10 != 0 {
            assert!(s.on_puback(*pid).is_some());
        }
    }
    lap_to(&mut s, u16::MAX - 5);
    for _ in 0..window {
        s.enqueue(delivery(QoS::AtLeastOnce)).unwrap();
    }
    let second = take(&mut s, window);
    assert_eq!(
        second.len(),
        window - window / 10,
        "the window limits the batch"
    );
    let mut seen = std::collections::HashSet::new();
    for (pid, _) in first.iter().filter(|(p, _)| p % 10 == 0).chain(&second) {
        assert_ne!(*pid, 0, "[MQTT-2.3.1-1]");
        assert!(seen.insert(*pid), "id {pid} handed out while in flight");
    }
    assert_eq!(second[6].0, 1, "the counter wraps past 0");
    assert_eq!(second[15].0, 11, "id 10 is still in flight");
}

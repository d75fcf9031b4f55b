//! Ownership transitions of [`Session`]: attach, detach (takeover), release, discard, and the
//! generation check that keeps a superseded connection from touching its successor's session.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::noop_waker_ref;

use super::*;
use crate::codec::QoS;
use crate::message::Message;

fn session() -> Session {
    Session::new(
        Arc::from("c"),
        Limits {
            max_queued_messages: 10,
            max_queued_bytes: 0,
        },
    )
}

/// The request waiting for connection `generation`, if any (polled as its task would).
fn take_control(s: &Session, generation: u64) -> Option<Control> {
    match s.poll_control(generation, &mut Context::from_waker(noop_waker_ref())) {
        Poll::Ready(c) => Some(c),
        Poll::Pending => None,
    }
}

fn delivery(qos: QoS) -> Delivery {
    Delivery {
        msg: Arc::new(Message::new("t", Bytes::from_static(b"x"), qos, false)),
        qos,
        retain: false,
        subscription_ids: Vec::new(),
        shared: None,
        stored: None,
    }
}

/// Every client id holds a `Session` (in an `Arc`, 16 bytes more), connected or not: glibc
/// serves it from 16-byte size classes, so growth past the budget costs every session. Debug
/// builds' locks carry their rank (lock-order checks), hence two budgets. The queues and
/// tables are allocated only once used (see [`SessionState`]), so an idle session's record is
/// its links, its metadata and its atomics.
#[test]
fn session_record_stays_within_its_budget() {
    let size = std::mem::size_of::<Session>();
    println!("Session: {size} bytes");
    let budget = if cfg!(debug_assertions) { 264 } else { 232 };
    assert!(size <= budget, "Session is {size} bytes, over {budget}");
}

/// A failed `try_lock_connect` leaves the holder's claim alone (an operator's discard racing a
/// CONNECT; its first version dropped an unused guard, which released the CONNECT's claim).
#[tokio::test]
async fn a_failed_try_lock_keeps_the_holders_claim() {
    let s = Arc::new(session());
    let held = s.lock_connect().await;
    assert!(s.try_lock_connect().is_none());
    assert!(s.try_lock_connect().is_none(), "still held");
    drop(held);
    assert!(
        s.try_lock_connect().is_some(),
        "free once the holder lets go"
    );
}

/// A second CONNECT for the session waits until the first lets go, also when the first is
/// dropped halfway; the wait does not miss a release.
#[tokio::test]
async fn connect_claims_are_serialised() {
    let s = Arc::new(session());
    let first = s.lock_connect().await;
    let mut second = Box::pin(s.lock_connect());
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(
        second.as_mut().poll(&mut cx).is_pending(),
        "held by the first"
    );
    drop(first);
    let second = second.await;
    // A waiter dropped while waiting leaves nothing behind.
    let mut third = Box::pin(s.lock_connect());
    assert!(third.as_mut().poll(&mut cx).is_pending());
    drop(third);
    drop(second);
    let again = tokio::time::timeout(std::time::Duration::from_secs(5), s.lock_connect()).await;
    assert!(again.is_ok(), "free again");
}

#[test]
fn a_new_session_is_offline_and_was_never_attached() {
    let s = session();
    assert!(!s.is_connected());
    assert!(
        !s.was_attached(),
        "a fresh session is not present [MQTT-3.2.2-3]"
    );
    assert!(!s.is_removed());
    assert_eq!(
        s.try_deliver(delivery(QoS::AtMostOnce), 0).unwrap_err().0,
        DropReason::Offline,
        "QoS 0 is not queued while nobody is attached"
    );
}

#[test]
fn attach_makes_the_connection_the_owner() {
    let s = session();
    let own = s.attach();
    assert!(s.is_connected());
    assert!(s.was_attached());
    assert!(s.owned_by(own.generation));
    assert!(s.with_state(|st| st.is_online()));
    assert!(s.try_deliver(delivery(QoS::AtMostOnce), 0).is_ok());
}

#[test]
fn release_by_the_owner_takes_the_session_offline_and_keeps_it() {
    let s = session();
    let own = s.attach();
    assert!(s.release(own.generation, false));
    assert!(!s.is_removed(), "no discard requested");
    assert!(!s.is_connected());
    assert!(!s.is_removed());
    assert!(!s.with_state(|st| st.is_online()));
    // Still the last owner until someone else claims it (session expiry relies on this).
    assert!(s.owned_by(own.generation));
    assert!(
        s.was_attached(),
        "a resumed session is present [MQTT-3.2.2-2]"
    );
}

#[test]
fn release_with_discard_marks_the_session_until_the_discard_finishes() {
    let s = session();
    let own = s.attach();
    assert!(s.release(own.generation, true));
    assert!(s.is_removed());
    assert!(!s.is_gone(), "the broker has not dropped its state yet");
    assert!(
        s.detach_current().is_err(),
        "a CONNECT that raced with the discard must wait and look the id up again"
    );
    assert!(
        !s.release(own.generation, true),
        "a second release of a discarded session does nothing"
    );
    let waiter = s.discarded();
    s.finish_discard();
    assert!(s.is_gone());
    let woken = futures_util::FutureExt::now_or_never(waiter);
    assert!(
        woken.is_some(),
        "a CONNECT waiting for the discard is woken"
    );
    assert!(s.detach_current().is_err());
}

#[test]
fn a_delivery_routed_before_a_clear_is_refused() {
    let s = session();
    let _own = s.attach();
    let epoch = s.with_state(|st| st.epoch());
    assert!(s.try_deliver(delivery(QoS::AtLeastOnce), epoch).is_ok());
    s.with_state(|st| st.clear());
    assert_eq!(
        s.try_deliver(delivery(QoS::AtLeastOnce), epoch)
            .unwrap_err()
            .0,
        DropReason::Unsubscribed,
        "a subscription dropped by a clean start must not deliver afterwards"
    );
    let now = s.with_state(|st| st.epoch());
    assert!(s.try_deliver(delivery(QoS::AtLeastOnce), now).is_ok());
}

#[test]
fn takeover_detaches_the_old_owner_and_hands_over_its_control_and_close_signal() {
    let s = session();
    let old = s.attach();
    let previous = s
        .detach_current()
        .expect("not removed")
        .expect("the old connection was attached");
    assert_eq!(previous.generation, old.generation);
    assert!(!s.is_connected(), "detached before the new owner attaches");
    assert!(
        !s.owned_by(old.generation),
        "the old owner loses the session at detach, before the new one attaches"
    );
    s.send_control_to(
        previous.generation,
        Control::TakenOver {
            session_ends: false,
        },
    );
    assert!(matches!(
        take_control(&s, old.generation),
        Some(Control::TakenOver {
            session_ends: false
        })
    ));
    assert!(take_control(&s, old.generation).is_none(), "taken once");

    // The new CONNECT waits on `closed` until the old connection task is gone.
    let mut closed = Box::pin(s.closed(previous.generation));
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(closed.as_mut().poll(&mut cx).is_pending());
    s.connection_finished(old.generation);
    assert!(closed.as_mut().poll(&mut cx).is_ready());
}

#[test]
fn a_request_for_a_superseded_connection_stays_with_it() {
    let s = session();
    let old = s.attach();
    let previous = s.detach_current().unwrap().unwrap();
    s.send_control_to(previous.generation, Control::Shutdown);
    let new = s.attach();
    assert!(
        take_control(&s, new.generation).is_none(),
        "not for the new owner"
    );
    assert!(matches!(
        take_control(&s, old.generation),
        Some(Control::Shutdown)
    ));
    s.send_control(Control::Disconnect(
        ReasonCode::ADMINISTRATIVE_ACTION,
        "test",
    ));
    assert!(matches!(
        take_control(&s, new.generation),
        Some(Control::Disconnect(ReasonCode::ADMINISTRATIVE_ACTION, _))
    ));
}

#[test]
fn attach_without_detach_tells_the_displaced_connection() {
    let s = session();
    let old = s.attach();
    let _new = s.attach();
    assert!(matches!(
        take_control(&s, old.generation),
        Some(Control::TakenOver { session_ends: true })
    ));
}

#[test]
fn stale_release_after_a_takeover_does_not_touch_the_new_owner() {
    let s = session();
    let old = s.attach();
    let _previous = s.detach_current().unwrap().unwrap();
    let new = s.attach();
    assert_ne!(old.generation, new.generation);

    // The old connection ends late, as a session that ends with its connection would.
    let still_owner = s.release(old.generation, true);
    assert!(
        !still_owner,
        "a superseded connection no longer owns the session"
    );
    assert!(!s.is_removed(), "the new owner's session is not discarded");
    assert!(s.is_connected(), "the new owner stays attached");
    assert!(s.owned_by(new.generation));
    assert!(!s.owned_by(old.generation));
    assert!(
        s.with_state(|st| st.is_online()),
        "the stale release must not take the new owner's session offline"
    );

    // The new owner's release still works.
    assert!(s.release(new.generation, false));
    assert!(!s.is_connected());
}

#[test]
fn stale_release_between_detach_and_attach_is_refused() {
    let s = session();
    let old = s.attach();
    let _previous = s.detach_current().unwrap().unwrap();
    // The taking-over CONNECT waits for the old connection to finish before attaching: the
    // old connection's release in that window must not count as the owner's.
    assert!(
        !s.release(old.generation, true),
        "not the owner: no discard"
    );
    assert!(!s.is_removed());
    let new = s.attach();
    assert!(s.owned_by(new.generation));
}

#[test]
fn detach_of_an_offline_session_has_no_previous_connection() {
    let s = session();
    let own = s.attach();
    assert!(s.release(own.generation, false));
    assert!(s.detach_current().unwrap().is_none());
    assert!(
        !s.owned_by(own.generation),
        "a pending expiry of the old owner must not fire after a new CONNECT claimed it"
    );
}

#[test]
fn send_control_reaches_the_attached_connection_once() {
    let s = session();
    let own = s.attach();
    s.send_control(Control::Disconnect(
        ReasonCode::SERVER_SHUTTING_DOWN,
        "test",
    ));
    s.send_control(Control::TakenOver {
        session_ends: false,
    });
    assert!(matches!(
        take_control(&s, own.generation),
        Some(Control::Disconnect(ReasonCode::SERVER_SHUTTING_DOWN, _))
    ));
    // The first request won; nothing else is queued behind it.
    assert!(take_control(&s, own.generation).is_none());
    // With nobody attached it is a no-op.
    assert!(s.release(own.generation, false));
    s.send_control(Control::TakenOver {
        session_ends: false,
    });
    assert!(take_control(&s, own.generation).is_none());
}

fn pending(topic: &str) -> PendingWill {
    PendingWill {
        will: crate::codec::Will {
            topic: topic.to_owned(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: crate::codec::Properties::default(),
        },
        since_unix_ms: 0,
    }
}

#[test]
fn a_pending_will_is_due_to_its_timer_unless_a_claim_took_it_first() {
    let s = session();
    let own = s.attach();
    assert!(s.release(own.generation, false));
    s.set_pending_will(own.generation, pending("a"));
    assert!(s.due_will(own.generation + 1).is_none(), "another timer's");
    let due = s.due_will(own.generation).expect("due to its own timer");
    assert_eq!(due.will.topic, "a");
    assert!(s.due_will(own.generation).is_none(), "published once");

    // A CONNECT claims the session within the delay: the claim takes the will, the timer
    // finds nothing [MQTT-3.1.3-9].
    s.set_pending_will(own.generation, pending("b"));
    assert!(s.detach_current().expect("live").is_none());
    assert_eq!(
        s.take_pending_will().map(|p| p.will.topic),
        Some("b".into())
    );
    assert!(s.due_will(own.generation).is_none());

    // A will of a connection superseded before it stored it is dropped.
    s.set_pending_will(own.generation, pending("c"));
    assert!(s.take_pending_will().is_none());
}

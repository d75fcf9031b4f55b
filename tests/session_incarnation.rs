//! A persistent session's acknowledgement that reaches the store only after the session was
//! deleted (its client came back with a clean session, or it expired or was discarded while
//! the ack's `Dequeue` was still on its way) must not cost the next session under the same
//! client id a message.
//!
//! The store remembers a `Dequeue` that finds no entry and skips the `Enqueue` of that entry
//! when it comes (`storage::early`). A new session used to number its queue from 0 again, so
//! the old session's late `Dequeue(client, 0)` skipped the new session's `Enqueue(client, 0)`:
//! the publisher got its PUBACK, but the message never reached the disk and a restart lost it.
//!
//! Which writes race is up to the scheduler; here a store wrapper holds the old session's
//! `Dequeue`s until the `DeleteSession` has been written and writes them right after it,
//! which is the order the race produces.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use parking_lot::Mutex;
use starling::storage::{
    FjallOptions, FjallStore, Op, Snapshot, Store, StoreError, StoredDelivery,
};
use starling::Broker;
use tokio::sync::watch;

const CLIENT: &str = "incarnation-sub";

/// A disk store that, while armed, holds back the ops of [`CLIENT`] that `late` picks (its
/// `Dequeue`s or its `Enqueue`s) and writes them just after the next `DeleteSession` of
/// [`CLIENT`] (then disarms).
struct LateOps {
    inner: FjallStore,
    late: fn(&Op) -> bool,
    state: Mutex<Late>,
    /// How many `Dequeue`s are held; `usize::MAX` once they were written after the delete.
    held: watch::Sender<usize>,
}

#[derive(Default)]
struct Late {
    armed: bool,
    held: Vec<Op>,
}

/// Writes after the `DeleteSession` happened.
const RELEASED: usize = usize::MAX;

impl LateOps {
    fn open(dir: &Path, late: fn(&Op) -> bool) -> LateOps {
        LateOps {
            inner: FjallStore::open(dir, &FjallOptions::default()).expect("store opens"),
            late,
            state: Mutex::new(Late {
                armed: true,
                held: Vec::new(),
            }),
            held: watch::channel(0).0,
        }
    }
}

fn dequeue_of_client(op: &Op) -> bool {
    matches!(op, Op::Dequeue { client_id, .. } if client_id == CLIENT)
}

fn enqueue_of_client(op: &Op) -> bool {
    matches!(op, Op::Enqueue { client_id, .. } if client_id == CLIENT)
}

fn deletes_client(op: &Op) -> bool {
    matches!(op, Op::DeleteSession { client_id, .. } if client_id == CLIENT)
}

impl Store for LateOps {
    fn write(&self, batch: &[Op], sync: bool) -> Result<(), StoreError> {
        let mut st = self.state.lock();
        if !st.armed {
            return self.inner.write(batch, sync);
        }
        let (late, rest): (Vec<Op>, Vec<Op>) = batch.iter().cloned().partition(self.late);
        st.held.extend(late);
        self.inner.write(&rest, sync)?;
        if rest.iter().any(deletes_client) {
            st.armed = false;
            let late = std::mem::take(&mut st.held);
            self.inner.write(&late, sync)?;
            self.held.send_replace(RELEASED);
        } else {
            self.held.send_replace(st.held.len());
        }
        Ok(())
    }
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
    fn queue_range(
        &self,
        client_id: &str,
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, StoredDelivery)>, StoreError> {
        self.inner.queue_range(client_id, from_seq, max)
    }
    fn queue_len(&self, client_id: &str) -> Result<u64, StoreError> {
        self.inner.queue_len(client_id)
    }
}

/// Waits (bounded) until the held count satisfies `ok`.
async fn until_held(rx: &mut watch::Receiver<usize>, what: &str, ok: impl Fn(usize) -> bool) {
    let waited = tokio::time::timeout(WAIT, rx.wait_for(|n| ok(*n))).await;
    assert!(
        matches!(waited, Ok(Ok(_))),
        "timed out waiting until {what}"
    );
}

/// Sends DISCONNECT and waits until the broker closed the connection.
async fn disconnect(mut c: Raw) {
    c.send(&DISCONNECT).await;
    assert!(
        c.closed_within(WAIT).await.is_ok(),
        "closed after DISCONNECT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_ack_of_a_deleted_session_does_not_lose_the_next_sessions_message() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LateOps::open(dir.path(), dequeue_of_client));
    let mut held = store.held.subscribe();
    let h = Broker::builder(test_config())
        .store(store.clone())
        .start()
        .await
        .expect("broker starts");
    let addr = h.local_addrs()[0];

    // The first session gets one message and acknowledges it; the ack's Dequeue is late.
    let (mut sub, _) = Raw::connect(addr, &ConnectOpts::v311(CLIENT).clean(false)).await;
    assert_eq!(sub.subscribe(1, "inc/t", 1).await, 1);
    let mut publ = Raw::connect_v311(addr, "incarnation-pub").await;
    publ.publish("inc/t", b"first", 1, false, 1).await;
    let p = sub.recv_publish().await;
    assert_publish(&p, "inc/t", b"first");
    sub.send(&puback(p.packet_id)).await;
    until_held(
        &mut held,
        "the first session's Dequeue reached the store",
        |n| n >= 1,
    )
    .await;

    // Its client comes back with a clean session (taking the first one over), which deletes it,
    // and then once more with a persistent one.
    let (clean, _) = Raw::connect(addr, &ConnectOpts::v311(CLIENT).clean(true)).await;
    disconnect(clean).await;
    let (mut sub, ack) = Raw::connect(addr, &ConnectOpts::v311(CLIENT).clean(false)).await;
    assert!(!ack.session_present);
    assert_eq!(sub.subscribe(2, "inc/t", 1).await, 1);
    until_held(
        &mut held,
        "the late Dequeue was written after the delete",
        |n| n == RELEASED,
    )
    .await;
    disconnect(sub).await;

    // Acknowledged to its publisher: it is on disk and survives a restart.
    publ.publish("inc/t", b"second", 1, false, 2).await;
    h.shutdown();
    h.wait().await;
    drop(store);

    let store = Arc::new(FjallStore::open(dir.path(), &FjallOptions::default()).unwrap());
    let queued: Vec<_> = store
        .queue_range(CLIENT, 0, 10)
        .unwrap()
        .into_iter()
        .map(|(_, d)| d.msg.payload.clone())
        .collect();
    assert_eq!(
        queued,
        [&b"second"[..]],
        "the second session's stored queue"
    );
    let h = Broker::builder(test_config())
        .store(store)
        .start()
        .await
        .expect("broker restarts");
    let (mut sub, ack) =
        Raw::connect(h.local_addrs()[0], &ConnectOpts::v311(CLIENT).clean(false)).await;
    assert!(ack.session_present);
    let p = sub.recv_publish().await;
    assert_publish(&p, "inc/t", b"second");
    h.shutdown();
}

/// Reads the stored queue of [`CLIENT`] after a clean shutdown: the payloads, in order.
fn stored_queue(dir: &Path) -> Vec<bytes::Bytes> {
    let store = FjallStore::open(dir, &FjallOptions::default()).unwrap();
    store
        .queue_range(CLIENT, 0, 10)
        .unwrap()
        .into_iter()
        .map(|(_, d)| d.msg.payload.clone())
        .collect()
}

/// A message queued for a persistent session whose `Enqueue` reaches the store only after the
/// session was deleted (a publisher's batch that waited for room in the writer's queue while
/// the client came back with a clean session) must not turn up in the next session under the
/// same client id after a restart: that session never subscribed while it was published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_enqueue_of_a_deleted_session_does_not_reach_the_next_session() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LateOps::open(dir.path(), enqueue_of_client));
    let mut held = store.held.subscribe();
    let h = Broker::builder(test_config())
        .store(store.clone())
        .start()
        .await
        .expect("broker starts");
    let addr = h.local_addrs()[0];

    // The first session is sent one message (left unacknowledged); its Enqueue is late.
    let (mut sub, _) = Raw::connect(addr, &ConnectOpts::v311(CLIENT).clean(false)).await;
    assert_eq!(sub.subscribe(1, "inc/t", 1).await, 1);
    let mut publ = Raw::connect_v311(addr, "incarnation-pub").await;
    publ.publish("inc/t", b"stale", 1, false, 1).await;
    assert_publish(&sub.recv_publish().await, "inc/t", b"stale");
    until_held(&mut held, "the first session's Enqueue is held", |n| n >= 1).await;

    // A clean session deletes the first one; the late Enqueue is written after the delete.
    let (clean, _) = Raw::connect(addr, &ConnectOpts::v311(CLIENT).clean(true)).await;
    until_held(
        &mut held,
        "the late Enqueue was written after the delete",
        |n| n == RELEASED,
    )
    .await;
    disconnect(clean).await;
    drop(sub);

    // The next persistent session subscribes and is sent one message while offline.
    let (mut sub, ack) = Raw::connect(addr, &ConnectOpts::v311(CLIENT).clean(false)).await;
    assert!(!ack.session_present);
    assert_eq!(sub.subscribe(2, "inc/t", 1).await, 1);
    disconnect(sub).await;
    publ.publish("inc/t", b"second", 1, false, 2).await;
    h.shutdown();
    h.wait().await;
    drop(store);

    assert_eq!(
        stored_queue(dir.path()),
        [&b"second"[..]],
        "the next session's stored queue holds no orphan of the deleted one"
    );
}

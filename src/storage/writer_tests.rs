//! Group commit: grouping, ordering, backpressure, error propagation, modes, shutdown.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::*;
use crate::storage::encoding::tests::message;
use crate::storage::tests::{enqueue, session, Fixture};
use crate::storage::{InflightStage, MemoryStore, Snapshot, StoredDelivery};

/// A store that records each write and can hold writes until released, or fail them.
#[derive(Default)]
struct Probe {
    inner: MemoryStore,
    /// (ops, sync) of each `write` call.
    calls: Mutex<Vec<(usize, bool)>>,
    held: Mutex<bool>,
    released: Condvar,
    /// Entered `write` while held.
    waiting: Mutex<usize>,
    entered: Condvar,
    fail_with: Mutex<Option<StoreError>>,
}

impl Probe {
    fn hold(&self) {
        *self.held.lock() = true;
    }
    fn release(&self) {
        *self.held.lock() = false;
        self.released.notify_all();
    }
    /// Blocks until a write is parked on the hold.
    fn wait_for_parked_write(&self) {
        let mut w = self.waiting.lock();
        while *w == 0 {
            self.entered.wait(&mut w);
        }
    }
    fn calls(&self) -> Vec<(usize, bool)> {
        self.calls.lock().clone()
    }
}

impl Store for Probe {
    fn write(&self, batch: &[Op], sync: bool) -> Result<(), StoreError> {
        {
            let mut held = self.held.lock();
            if *held {
                *self.waiting.lock() += 1;
                self.entered.notify_all();
                while *held {
                    self.released.wait(&mut held);
                }
                *self.waiting.lock() -= 1;
            }
        }
        self.calls.lock().push((batch.len(), sync));
        if let Some(e) = self.fail_with.lock().clone() {
            return Err(e);
        }
        self.inner.write(batch, sync)
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

fn put(i: u64) -> Vec<Op> {
    vec![Op::PutRetained(message(&format!("t/{i}"), b"x"))]
}

/// A delete after an ack, as `submit_nowait` takes.
fn ack(packet_id: u16) -> Vec<Op> {
    vec![Op::DeleteInflight {
        client_id: "c".into(),
        packet_id,
    }]
}

/// Parks the writer in a write of one request, so that what is submitted next queues up.
async fn park(
    probe: &Arc<Probe>,
    writer: &Arc<StoreWriter>,
) -> tokio::task::JoinHandle<Result<(), StoreError>> {
    probe.hold();
    let w = writer.clone();
    let first = tokio::spawn(async move { w.submit(put(9999)).await });
    let p = probe.clone();
    tokio::task::spawn_blocking(move || p.wait_for_parked_write())
        .await
        .unwrap();
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_submits_complete_and_are_readable() {
    let fixture = Fixture::fjall();
    let store = fixture.store();
    let writer = Arc::new(StoreWriter::spawn(store.clone(), SyncMode::Batch, 128));
    let msg = Arc::new(message("t", b"payload"));
    let mut tasks = Vec::new();
    for i in 0..1000u64 {
        let (w, m) = (writer.clone(), msg.clone());
        tasks.push(tokio::spawn(async move {
            let c = format!("c{}", i % 10);
            w.submit(vec![Op::PutSession(session(&c)), enqueue(&c, i, i, &m)])
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = writer.stats();
    assert_eq!(stats.requests, 1000);
    assert!(stats.groups <= 1000);
    assert_eq!(stats.groups, stats.syncs, "batch mode: one fsync per group");
    println!("1000 submits: {} groups", stats.groups);
    let mut total = 0;
    for c in 0..10 {
        let q = store.queue_range(&format!("c{c}"), 0, 2000).unwrap();
        assert_eq!(q.len(), 100);
        total += q.len();
    }
    assert_eq!(total, 1000);
    writer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_during_a_write_form_one_group() {
    let probe = Arc::new(Probe::default());
    let writer = Arc::new(StoreWriter::spawn(probe.clone(), SyncMode::Batch, 1000));
    let first = park(&probe, &writer).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move { w.submit(put(i)).await }));
    }
    // Let every task queue its request.
    while writer.shared.state.lock().queue.len() < 50 {
        tokio::task::yield_now().await;
    }
    probe.release();
    first.await.unwrap().unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(probe.calls(), vec![(1, true), (50, true)]);
    assert_eq!(probe.load().unwrap().retained.len(), 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nowait_writes_keep_their_order() {
    let probe = Arc::new(Probe::default());
    let writer = Arc::new(StoreWriter::spawn(probe.clone(), SyncMode::Batch, 4));
    let m = Arc::new(message("t", b"x"));
    let first = park(&probe, &writer).await;
    // Inflight id 1 is acked (delete, not awaited) and then reused for a new message.
    writer
        .submit_nowait(vec![Op::DeleteInflight {
            client_id: "c".into(),
            packet_id: 1,
        }])
        .unwrap();
    let w = writer.clone();
    let reuse = tokio::spawn(async move {
        w.submit(vec![
            Op::PutSession(session("c")),
            enqueue("c", 1, 1, &m),
            Op::PutInflight {
                client_id: "c".into(),
                packet_id: 1,
                seq: 1,
                stage: InflightStage::Publish,
            },
        ])
        .await
    });
    while writer.shared.state.lock().queue.len() < 2 {
        tokio::task::yield_now().await;
    }
    probe.release();
    first.await.unwrap().unwrap();
    reuse.await.unwrap().unwrap();
    let snap = probe.load().unwrap();
    assert_eq!(snap.sessions[0].inflight.len(), 1, "the delete ran first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_submitters_wait() {
    let probe = Arc::new(Probe::default());
    let writer = Arc::new(StoreWriter::spawn(probe.clone(), SyncMode::Batch, 2));
    let first = park(&probe, &writer).await;
    let mut tasks = Vec::new();
    for i in 0..2 {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move { w.submit(put(i)).await }));
    }
    while writer.shared.state.lock().queue.len() < 2 {
        tokio::task::yield_now().await;
    }
    // The queue is full: a third submit cannot even queue.
    let w = writer.clone();
    let mut third = tokio::spawn(async move { w.submit(put(3)).await });
    assert!(tokio::time::timeout(Duration::from_millis(100), &mut third)
        .await
        .is_err());
    assert_eq!(writer.shared.state.lock().queue.len(), 2);
    // A required write is queued regardless (over the bound).
    writer.submit_required(put(4)).unwrap();
    assert_eq!(writer.shared.state.lock().queue.len(), 3);
    probe.release();
    first.await.unwrap().unwrap();
    third.await.unwrap().unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    writer.shutdown().await.unwrap();
    assert_eq!(probe.load().unwrap().retained.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_fails_current_and_later_waiters() {
    let probe = Arc::new(Probe::default());
    let writer = Arc::new(StoreWriter::spawn(probe.clone(), SyncMode::Batch, 100));
    writer.submit(put(0)).await.unwrap();
    let first = park(&probe, &writer).await;
    let mut tasks = Vec::new();
    for i in 0..5 {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move { w.submit(put(i)).await }));
    }
    while writer.shared.state.lock().queue.len() < 5 {
        tokio::task::yield_now().await;
    }
    *probe.fail_with.lock() = Some(StoreError::Io(Arc::new(std::io::Error::other(
        "fsync: EIO",
    ))));
    probe.release();
    assert!(first.await.unwrap().unwrap_err().is_fatal());
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("EIO"), "{err}");
    }
    // The failure is sticky, without touching the store again.
    *probe.fail_with.lock() = None;
    let calls = probe.calls().len();
    assert!(writer.submit(put(7)).await.unwrap_err().is_fatal());
    assert!(writer.submit_nowait(ack(8)).is_err());
    assert!(writer.submit_required(put(8)).is_err());
    assert_eq!(probe.calls().len(), calls);
    let err = writer.shutdown().await.unwrap_err();
    assert!(err.to_string().contains("EIO"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_fails_alone() {
    let probe = Arc::new(Probe::default());
    let writer = Arc::new(StoreWriter::spawn(probe.clone(), SyncMode::Batch, 100));
    let first = park(&probe, &writer).await;
    let mut tasks = Vec::new();
    for i in 0..3u64 {
        let w = writer.clone();
        let topic = if i == 1 {
            "x".repeat(crate::storage::MAX_KEY_LEN + 1)
        } else {
            format!("ok/{i}")
        };
        tasks.push(tokio::spawn(async move {
            w.submit(vec![Op::PutRetained(message(&topic, b"v"))]).await
        }));
        while writer.shared.state.lock().queue.len() < i as usize + 1 {
            tokio::task::yield_now().await;
        }
    }
    probe.release();
    first.await.unwrap().unwrap();
    let results: Vec<_> = futures_join(tasks).await;
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(StoreError::TooLarge(_))));
    assert!(results[2].is_ok());
    // The writer goes on.
    writer.submit(put(5)).await.unwrap();
    let topics: Vec<_> = probe
        .load()
        .unwrap()
        .retained
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(topics, ["ok/0", "ok/2", "t/5", "t/9999"]);
}

async fn futures_join(
    tasks: Vec<tokio::task::JoinHandle<Result<(), StoreError>>>,
) -> Vec<Result<(), StoreError>> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_mode_syncs_every_request() {
    let probe = Arc::new(Probe::default());
    let writer = Arc::new(StoreWriter::spawn(probe.clone(), SyncMode::Always, 100));
    let first = park(&probe, &writer).await;
    let mut tasks = Vec::new();
    for i in 0..3 {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move { w.submit(put(i)).await }));
    }
    while writer.shared.state.lock().queue.len() < 3 {
        tokio::task::yield_now().await;
    }
    probe.release();
    first.await.unwrap().unwrap();
    futures_join(tasks).await;
    assert_eq!(probe.calls(), vec![(1, true); 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_mode_completes_before_fsync_and_syncs_when_idle() {
    let probe = Arc::new(Probe::default());
    let writer = StoreWriter::spawn(
        probe.clone(),
        SyncMode::Interval(Duration::from_secs(1)),
        100,
    );
    // Right after spawn the interval has not passed: written without fsync.
    writer.submit(put(1)).await.unwrap();
    assert_eq!(probe.calls(), vec![(1, false)]);
    // With nothing else to do, the writer fsyncs once the interval is over.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !probe.calls().contains(&(0, true)) {
        assert!(std::time::Instant::now() < deadline, "{:?}", probe.calls());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let syncs = writer.stats().syncs;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(writer.stats().syncs, syncs, "no fsync without new writes");
    writer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_and_syncs() {
    let probe = Arc::new(Probe::default());
    let writer = StoreWriter::spawn(probe.clone(), SyncMode::None, 100);
    for i in 0..100 {
        writer.submit_required(put(i)).unwrap();
    }
    writer.shutdown().await.unwrap();
    assert_eq!(probe.load().unwrap().retained.len(), 100);
    assert!(probe.calls().iter().all(|(n, sync)| *n == 0 || !sync));
    assert_eq!(probe.calls().last(), Some(&(0, true)), "final fsync");
    assert!(matches!(
        writer.submit(put(1)).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        writer.submit_nowait(ack(1)),
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        writer.submit_required(put(1)),
        Err(StoreError::Closed)
    ));
    assert!(matches!(writer.shutdown().await, Err(StoreError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_writer_still_writes_what_was_queued() {
    let probe = Arc::new(Probe::default());
    let writer = StoreWriter::spawn(probe.clone(), SyncMode::Batch, 100);
    writer.submit_required(put(1)).unwrap();
    drop(writer);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while probe.calls().last() != Some(&(0, true)) {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(probe.load().unwrap().retained.len(), 1);
}

/// A store whose writes each wait for a ticket from the test, so the writer can be held
/// between any two groups. Pure fsyncs (empty batches) pass.
#[derive(Default)]
struct Gate {
    inner: MemoryStore,
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    tickets: usize,
    /// Writes waiting for a ticket.
    blocked: usize,
    /// Ops of each write, in order.
    groups: Vec<usize>,
}

impl Gate {
    fn open(&self, writes: usize) {
        self.state.lock().tickets += writes;
        self.changed.notify_all();
    }
    fn blocked(&self) -> usize {
        self.state.lock().blocked
    }
    fn groups(&self) -> Vec<usize> {
        self.state.lock().groups.clone()
    }
}

impl Store for Gate {
    fn write(&self, batch: &[Op], sync: bool) -> Result<(), StoreError> {
        if !batch.is_empty() {
            let mut st = self.state.lock();
            st.blocked += 1;
            while st.tickets == 0 {
                self.changed.wait(&mut st);
            }
            st.tickets -= 1;
            st.blocked -= 1;
            st.groups.push(batch.len());
        }
        self.inner.write(batch, sync)
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

/// Waits (up to 10 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A writer of `capacity` stalled in the write of a first tracked request (already taken off
/// the queue, so every permit is free).
async fn stalled(
    capacity: usize,
) -> (
    Arc<Gate>,
    StoreWriter,
    tokio::task::JoinHandle<Result<(), StoreError>>,
) {
    let gate = Arc::new(Gate::default());
    let writer = StoreWriter::spawn(gate.clone(), SyncMode::Batch, capacity);
    let first = tokio::spawn(writer.submit_tracked(put(0)));
    until("the writer stalls", || gate.blocked() == 1).await;
    (gate, writer, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_submits_wait_for_a_permit_and_never_queue_past_the_bound() {
    let (gate, writer, first) = stalled(3).await;
    let mut tasks = vec![first];
    for i in 1..=10 {
        let t = writer.submit_tracked(put(i));
        assert_eq!(t.is_waiting(), i > 3, "request {i}");
        tasks.push(tokio::spawn(t));
    }
    let s = writer.stats();
    assert_eq!((s.queued, s.waiting), (3, 7));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(writer.stats().queued, 3, "polled, they still wait");
    // Each group the writer takes frees three permits: the next three get in, in order.
    for waiting in [4, 1, 0] {
        gate.open(1);
        until("permits are handed on", || {
            writer.stats().waiting == waiting
        })
        .await;
        until("the writer stalls again", || gate.blocked() == 1).await;
        assert!(writer.stats().queued <= 3, "{:?}", writer.stats());
    }
    gate.open(10);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(gate.groups(), [1, 3, 3, 3, 1], "no group above the bound");
    let s = writer.stats();
    assert_eq!((s.queued, s.waiting, s.over_bound), (0, 0, 0));
    writer.shutdown().await.unwrap();
    assert_eq!(gate.load().unwrap().retained.len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nowait_delete_is_dropped_and_counted_when_the_queue_is_full() {
    let (gate, writer, first) = stalled(2).await;
    assert!(writer.submit_nowait(ack(1)).unwrap(), "room: queued");
    let full = tokio::spawn(writer.submit_tracked(put(1)));
    let waiting = writer.submit_tracked(put(2));
    assert!(waiting.is_waiting());
    let waiting = tokio::spawn(waiting);
    // Full, with a tracked batch waiting: deletes are dropped at once, never waited for.
    let started = std::time::Instant::now();
    for pid in 2..102 {
        assert!(!writer.submit_nowait(ack(pid)).unwrap());
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    let s = writer.stats();
    assert_eq!((s.queued, s.waiting, s.deletes_dropped), (2, 1, 100));
    gate.open(10);
    for t in [first, full, waiting] {
        t.await.unwrap().unwrap();
    }
    // Room again: a delete is queued.
    assert!(writer.submit_nowait(ack(1)).unwrap());
    writer.shutdown().await.unwrap();
    assert_eq!(gate.groups(), [1, 2, 1, 1]);
    assert_eq!(writer.stats().deletes_dropped, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_writes_and_abandoned_tracked_batches_are_never_lost() {
    let (gate, writer, first) = stalled(1).await;
    let queued = writer.submit_tracked(put(1));
    let waiting = writer.submit_tracked(put(2));
    assert!(!queued.is_waiting() && waiting.is_waiting());
    // Over the bound, in order: a required write, then a batch whose waiter went away.
    writer.submit_required(put(3)).unwrap();
    drop(waiting);
    let s = writer.stats();
    assert_eq!((s.queued, s.waiting, s.over_bound), (3, 0, 2));
    gate.open(10);
    first.await.unwrap().unwrap();
    queued.await.unwrap();
    writer.shutdown().await.unwrap();
    assert_eq!(gate.groups(), [1, 3]);
    assert_eq!(gate.load().unwrap().retained.len(), 4);
    assert_eq!(writer.stats().queued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_tracked_batch_queues_only_when_polled_and_in_turn() {
    let (gate, writer, first) = stalled(2).await;
    let mut later = writer.submit_tracked_later(put(1));
    assert!(
        later.is_waiting(),
        "a permit is free, but it waits to be polled"
    );
    assert_eq!(writer.stats().queued, 0);
    std::future::poll_fn(|cx| later.poll_queued(cx)).await;
    assert!(!later.is_waiting());
    assert_eq!(writer.stats().queued, 1);
    gate.open(10);
    first.await.unwrap().unwrap();
    later.await.unwrap();
    writer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_tracked_batch_fails_when_the_writer_shuts_down() {
    let (gate, writer, first) = stalled(1).await;
    let queued = tokio::spawn(writer.submit_tracked(put(1)));
    let waiting = writer.submit_tracked(put(2));
    assert!(waiting.is_waiting());
    let waiting = tokio::spawn(waiting);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let writer = Arc::new(writer);
    let w = writer.clone();
    let shutdown = tokio::spawn(async move { w.shutdown().await });
    assert!(matches!(waiting.await.unwrap(), Err(StoreError::Closed)));
    gate.open(10);
    first.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    shutdown.await.unwrap().unwrap();
}

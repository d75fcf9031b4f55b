//! [`StoreWriter`]: group commit. One writer thread owns every write to the [`Store`]; async
//! callers hand it batches through a bounded queue and await durability.
//!
//! The writer takes *everything* queued when it becomes free, writes it with one
//! [`Store::write`] call and one fsync, then completes every waiter. Requests that arrive while
//! it writes form the next group, so the group size adapts to load with no artificial delay:
//! one request alone is written at once, and under load one fsync covers hundreds.
//!
//! The queue is bounded by `capacity` permits of a (fair, FIFO) semaphore. A request holds a
//! permit from when it is queued until the writer takes it. What each way in does when no
//! permit is free:
//! - [`StoreWriter::submit`] waits for one.
//! - [`StoreWriter::submit_tracked`] (an acknowledgement that follows the disk) queues at once
//!   when a permit is free and otherwise returns a [`Tracked`] that waits for one when polled
//!   and queues its batch then. A connection with such a batch stops reading and handling
//!   packets until it is queued (`Outbox::parked`), so a full queue paces publishers instead
//!   of growing; they are not failed.
//! - [`StoreWriter::submit_nowait`] (a delete after an acknowledgement: `DeleteInflight`,
//!   `Dequeue`) never waits: it is dropped and counted (`store_deletes_dropped`). A lost delete
//!   leaves a record behind: after a restart its message may be sent again (an inflight record
//!   is resent with DUP=1), or nothing reads it again and it goes with its session. Nothing
//!   is lost and nothing else changes while the broker runs.
//! - [`StoreWriter::submit_required`] is for writes that must not be lost but whose callers
//!   cannot wait: session records, subscription deletes, deliveries that nobody acknowledges
//!   (wills, `$SYS`, retained messages on SUBSCRIBE, shared messages handed on) queued for
//!   offline sessions, and a [`Tracked`] batch dropped before it was queued (its connection
//!   closed). They are made in synchronous broker code, some under locks, so they cannot wait,
//!   and dropping them would lose state. Decision: they take a permit when one is free and are
//!   otherwise queued over the bound, counted (`store_writes_over_bound`). Their number is
//!   bounded by what causes them, each a per-connection or per-session event (connect,
//!   disconnect, expiry, SUBSCRIBE, UNSUBSCRIBE, a will) or, for the in-flight records of
//!   QoS 1 deliveries, by each connection's send window; and the excess lasts only until the
//!   writer next takes the queue, which it takes whole.
//!
//! So the queue holds at most `capacity` requests plus the required writes made while it was
//! full. Gauges: `store_queue_depth` (requests queued) and `store_submits_waiting` (tracked
//! batches waiting for a permit), in [`StoreMetrics`].
//!
//! Invariants:
//! - Requests are applied in the order they entered the queue, waited or not, so a
//!   `submit_nowait` delete is never overtaken by a later write of the same key (packet ids are
//!   reused). This is why the queue is a mutex-guarded `VecDeque` and not an mpsc channel with
//!   a side path for non-waiting writes. Permits are handed out in FIFO order and `try_acquire`
//!   fails while anyone waits, so a delete cannot pass a waiting [`Tracked`] batch either: it
//!   is dropped instead.
//! - A waiter completes only after its group's write returned, and in `Batch` and `Always`
//!   modes after its fsync. If a write or fsync fails with a fatal error, that group's waiters
//!   get the error and so does every later request: the writer never writes again. A
//!   non-fatal error (a batch too large) fails only the request that caused it: the group is
//!   retried one request at a time.
//! - `shutdown` writes everything queued, fsyncs, and stops the thread.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::{oneshot, AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::{Op, Prepared, Store, StoreError};
use crate::metrics::StoreMetrics;

/// When the writer fsyncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// One fsync per group of requests; waiters complete after it. The default.
    #[default]
    Batch,
    /// One write and one fsync per request: slowest, for comparison and paranoia.
    Always,
    /// Waiters complete after the write (in the OS page cache, safe from a process crash); an
    /// fsync runs at most once per interval, also when idle. A power loss can lose that long.
    Interval(Duration),
    /// Never fsync while running (only at shutdown): the OS decides.
    None,
}

/// Counters, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Requests written (successfully or not).
    pub requests: u64,
    /// `Store::write` calls that carried requests.
    pub groups: u64,
    /// fsyncs.
    pub syncs: u64,
    /// Requests in the queue now.
    pub queued: u64,
    /// Tracked batches waiting for a permit now.
    pub waiting: u64,
    /// `submit_nowait` deletes dropped because the queue was full.
    pub deletes_dropped: u64,
    /// Requests queued without a permit (over the bound).
    pub over_bound: u64,
}

/// The writer's answer to one request.
type Answer = oneshot::Sender<Result<(), StoreError>>;

struct Request {
    /// Encoded by the submitter, so the writer thread only plans and commits.
    ops: Prepared,
    done: Option<Answer>,
    /// Returned to the queue's budget when the writer takes the request; None for a request
    /// queued over the bound.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Request {
    fn complete(&mut self, result: Result<(), StoreError>) {
        if let Some(tx) = self.done.take() {
            // The waiter may have given up (its task was cancelled); nothing to do then.
            let _ = tx.send(result);
        }
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Request>,
    closed: bool,
    failed: Option<StoreError>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    permits: Arc<Semaphore>,
    capacity: usize,
    requests: AtomicU64,
    groups: AtomicU64,
    syncs: AtomicU64,
    metrics: StoreMetrics,
}

impl Shared {
    /// Queues a request; without `permit` it is over the bound (and counted).
    fn push(
        &self,
        ops: Vec<Op>,
        done: Option<Answer>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), StoreError> {
        let ops = Prepared::new(ops);
        {
            let mut st = self.state.lock();
            if let Some(e) = refusal(&st) {
                return Err(e);
            }
            if permit.is_none() {
                self.metrics.store_writes_over_bound.inc();
            }
            st.queue.push_back(Request {
                ops,
                done,
                _permit: permit,
            });
            self.metrics.store_queue_depth.inc();
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Queues a request and returns where its answer arrives.
    fn push_tracked(
        &self,
        ops: Vec<Op>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.push(ops, Some(tx), permit)?;
        Ok(rx)
    }

    /// Why requests are refused now, if they are.
    fn refusal(&self) -> Option<StoreError> {
        refusal(&self.state.lock())
    }
}

fn refusal(st: &State) -> Option<StoreError> {
    match (&st.failed, st.closed) {
        (Some(e), _) => Some(e.clone()),
        (None, true) => Some(StoreError::Closed),
        (None, false) => None,
    }
}

/// The ops `submit_nowait` takes: deletes whose loss costs at most a redelivery.
fn droppable(op: &Op) -> bool {
    matches!(op, Op::DeleteInflight { .. } | Op::Dequeue { .. })
}

/// The group-commit front end of a [`Store`].
pub struct StoreWriter {
    shared: Arc<Shared>,
    exited: Mutex<Option<oneshot::Receiver<Result<(), StoreError>>>>,
}

impl StoreWriter {
    /// Starts the writer thread. `capacity` (at least 1) bounds the requests waiting to be
    /// written (see the module documentation for what happens when it is reached).
    pub fn spawn(store: Arc<dyn Store>, mode: SyncMode, capacity: usize) -> StoreWriter {
        let capacity = capacity.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            requests: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            metrics: StoreMetrics::default(),
        });
        let (exit_tx, exit_rx) = oneshot::channel();
        let worker = Worker {
            shared: shared.clone(),
            store,
            mode,
            last_sync: Instant::now(),
            dirty: false,
        };
        let spawned = std::thread::Builder::new()
            .name("starling-store".into())
            .spawn(move || {
                let result = worker.run();
                let _ = exit_tx.send(result);
            });
        if let Err(e) = spawned {
            // The closure (and its sender) is dropped: `shutdown` reports Closed. Fail every
            // request with the reason instead of hanging.
            shared.state.lock().failed = Some(StoreError::WriterThread(Arc::new(e)));
        }
        StoreWriter {
            shared,
            exited: Mutex::new(Some(exit_rx)),
        }
    }

    /// Queues `batch` (waiting while the queue is full) and resolves once it is written and,
    /// per the [`SyncMode`], durable. The batch is atomic.
    pub async fn submit(&self, batch: Vec<Op>) -> Result<(), StoreError> {
        let permit = self
            .shared
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.refusal())?;
        let rx = self.shared.push_tracked(batch, Some(permit))?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Queues `batch` at once when a permit is free; otherwise the returned [`Tracked`] waits
    /// for one when polled (the caller stops producing writes meanwhile: see the module
    /// documentation). It resolves once the batch is durable per the [`SyncMode`]. For
    /// acknowledgements that follow the disk from a connection's event loop.
    pub fn submit_tracked(&self, batch: Vec<Op>) -> Tracked {
        match self.shared.permits.clone().try_acquire_owned() {
            Ok(permit) => Tracked::queue(&self.shared, batch, Some(permit)),
            Err(TryAcquireError::NoPermits) => Tracked::waiting(&self.shared, batch),
            Err(TryAcquireError::Closed) => Tracked::refused(self.refusal()),
        }
    }

    /// Like [`StoreWriter::submit_tracked`], but queues `batch` only once polled, even with a
    /// permit free: for a batch that must not overtake an earlier [`Tracked`] of the same
    /// caller that is still waiting.
    pub fn submit_tracked_later(&self, batch: Vec<Op>) -> Tracked {
        Tracked::waiting(&self.shared, batch)
    }

    /// Queues `batch` if a permit is free, without waiting for durability: for deletes after an
    /// acknowledgement (`DeleteInflight`, `Dequeue`), whose loss only means a redelivery.
    /// Returns false when the queue was full and the batch was dropped (counted in
    /// `store_deletes_dropped`); never waits. Errors only when the writer has failed or shut
    /// down.
    pub fn submit_nowait(&self, batch: Vec<Op>) -> Result<bool, StoreError> {
        debug_assert!(
            batch.iter().all(droppable),
            "submit_nowait takes deletes only"
        );
        match self.shared.permits.clone().try_acquire_owned() {
            Ok(permit) => self.shared.push(batch, None, Some(permit)).map(|()| true),
            Err(TryAcquireError::NoPermits) => match self.shared.refusal() {
                Some(e) => Err(e),
                None => {
                    self.shared.metrics.store_deletes_dropped.inc();
                    Ok(false)
                }
            },
            Err(TryAcquireError::Closed) => Err(self.refusal()),
        }
    }

    /// Queues `batch` without waiting for room or for durability, and never drops it: with no
    /// permit free it is queued over the bound (counted in `store_writes_over_bound`). For
    /// writes that must not be lost and whose callers cannot wait; see the module
    /// documentation for why this stays bounded. Errors only when the writer has failed or
    /// shut down.
    pub fn submit_required(&self, batch: Vec<Op>) -> Result<(), StoreError> {
        let permit = self.shared.permits.clone().try_acquire_owned().ok();
        self.shared.push(batch, None, permit)
    }

    /// Why a request is refused once the queue is closed.
    fn refusal(&self) -> StoreError {
        self.shared.refusal().unwrap_or(StoreError::Closed)
    }

    /// Counters and gauges, read now.
    pub fn stats(&self) -> WriterStats {
        let m = &self.shared.metrics;
        WriterStats {
            requests: self.shared.requests.load(Ordering::Relaxed),
            groups: self.shared.groups.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            queued: m.store_queue_depth.get(),
            waiting: m.store_submits_waiting.get(),
            deletes_dropped: m.store_deletes_dropped.get(),
            over_bound: m.store_writes_over_bound.get(),
        }
    }

    /// The queue's counters and gauges, for the exporters.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.shared.metrics
    }

    /// How many requests the queue holds before submitters wait (or deletes are dropped).
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Refuses new requests, writes everything already queued, fsyncs and stops the thread.
    /// Returns the first fatal error the writer met, if any. Later calls return `Closed`.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.close();
        let rx = self.exited.lock().take();
        match rx {
            Some(rx) => rx.await.unwrap_or(Err(StoreError::Closed)),
            None => Err(StoreError::Closed),
        }
    }

    fn close(&self) {
        self.shared.state.lock().closed = true;
        self.shared.permits.close();
        self.shared.wake.notify_one();
    }
}

impl Drop for StoreWriter {
    /// Without `shutdown`, the thread still writes what is queued, fsyncs and exits.
    fn drop(&mut self) {
        self.close();
    }
}

/// A batch from [`StoreWriter::submit_tracked`]: queued, or waiting for a permit. As a future,
/// it queues the batch once it gets a permit, then resolves like [`StoreWriter::submit`].
///
/// Never lost: dropped while it waits, it is queued at once, over the bound if no permit is
/// free (its submitter is gone, so nothing can wait any more).
pub struct Tracked {
    stage: Stage,
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

enum Stage {
    /// Not queued yet: waits for a permit.
    Waiting {
        ops: Vec<Op>,
        shared: Arc<Shared>,
        permit: Acquire,
    },
    /// In the queue; the writer answers here.
    Queued(oneshot::Receiver<Result<(), StoreError>>),
    /// Refused (the error, until reported), or answered.
    Done(Option<StoreError>),
}

impl Stage {
    fn queue(shared: &Shared, ops: Vec<Op>, permit: Option<OwnedSemaphorePermit>) -> Stage {
        match shared.push_tracked(ops, permit) {
            Ok(rx) => Stage::Queued(rx),
            Err(e) => Stage::Done(Some(e)),
        }
    }
}

impl Tracked {
    fn queue(shared: &Shared, ops: Vec<Op>, permit: Option<OwnedSemaphorePermit>) -> Tracked {
        Tracked {
            stage: Stage::queue(shared, ops, permit),
        }
    }

    fn waiting(shared: &Arc<Shared>, ops: Vec<Op>) -> Tracked {
        shared.metrics.store_submits_waiting.inc();
        let permit = Box::pin(shared.permits.clone().acquire_owned());
        Tracked {
            stage: Stage::Waiting {
                ops,
                shared: shared.clone(),
                permit,
            },
        }
    }

    fn refused(e: StoreError) -> Tracked {
        Tracked {
            stage: Stage::Done(Some(e)),
        }
    }

    /// A receipt answered on `rx` by something other than the writer: the cluster answers
    /// once another node is sure to get a message (and tests of what waits on receipts). A
    /// sender dropped unanswered reads as [`StoreError::Closed`].
    pub fn answered_by(rx: oneshot::Receiver<Result<(), StoreError>>) -> Tracked {
        Tracked {
            stage: Stage::Queued(rx),
        }
    }

    /// True while the batch waits for a permit, not yet queued.
    pub fn is_waiting(&self) -> bool {
        matches!(self.stage, Stage::Waiting { .. })
    }

    /// Waits for a permit and queues the batch with it. Ready once the batch is queued (or
    /// refused: polling the `Tracked` then reports why). Cancellation-safe: a permit is kept
    /// only by queueing.
    pub fn poll_queued(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Stage::Waiting { permit, .. } = &mut self.stage else {
            return Poll::Ready(());
        };
        // An error means the writer closed: the push below reports it.
        let permit = ready!(permit.as_mut().poll(cx)).ok();
        if let Some((ops, shared)) = self.take_waiting() {
            self.stage = Stage::queue(&shared, ops, permit);
        }
        Poll::Ready(())
    }

    /// Queues the batch now if it is still waiting, over the bound if no permit is free: its
    /// submitter will not wait for it (a connection closing).
    pub fn queue_now(&mut self) {
        if let Some((ops, shared)) = self.take_waiting() {
            let permit = shared.permits.clone().try_acquire_owned().ok();
            self.stage = Stage::queue(&shared, ops, permit);
        }
    }

    /// Leaves the waiting stage (giving up its place among the semaphore's waiters).
    fn take_waiting(&mut self) -> Option<(Vec<Op>, Arc<Shared>)> {
        if !self.is_waiting() {
            return None;
        }
        match std::mem::replace(&mut self.stage, Stage::Done(None)) {
            Stage::Waiting { ops, shared, .. } => {
                shared.metrics.store_submits_waiting.sub(1);
                Some((ops, shared))
            }
            _ => None,
        }
    }
}

impl Future for Tracked {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        ready!(this.poll_queued(cx));
        let result = match &mut this.stage {
            Stage::Queued(rx) => ready!(Pin::new(rx).poll(cx)).unwrap_or(Err(StoreError::Closed)),
            Stage::Done(e) => Err(e.take().unwrap_or(StoreError::Closed)),
            Stage::Waiting { .. } => return Poll::Pending,
        };
        this.stage = Stage::Done(None);
        Poll::Ready(result)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.queue_now();
    }
}

struct Worker {
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
    mode: SyncMode,
    last_sync: Instant,
    /// Written but not fsynced (interval mode).
    dirty: bool,
}

/// What the worker does next.
enum Next {
    Write(Vec<Request>),
    /// Interval mode: the deadline passed with unsynced writes.
    Sync,
    Exit,
}

impl Worker {
    fn run(mut self) -> Result<(), StoreError> {
        loop {
            match self.next() {
                Next::Write(reqs) => self.write(reqs),
                Next::Sync => {
                    let _ = self.sync();
                }
                Next::Exit => break,
            }
        }
        // Final fsync, also in `None` and `Interval` modes.
        if let Some(e) = self.shared.state.lock().failed.clone() {
            return Err(e);
        }
        self.sync()
    }

    fn next(&mut self) -> Next {
        let mut st = self.shared.state.lock();
        loop {
            if !st.queue.is_empty() {
                self.shared
                    .metrics
                    .store_queue_depth
                    .sub(st.queue.len() as u64);
                return Next::Write(st.queue.drain(..).collect());
            }
            if st.closed {
                return Next::Exit;
            }
            match self.mode {
                SyncMode::Interval(d) if self.dirty && st.failed.is_none() => {
                    let deadline = self.last_sync + d;
                    if Instant::now() >= deadline {
                        return Next::Sync;
                    }
                    self.shared.wake.wait_until(&mut st, deadline);
                }
                _ => self.shared.wake.wait(&mut st),
            }
        }
    }

    fn fail(&self, e: &StoreError) {
        let mut st = self.shared.state.lock();
        if st.failed.is_none() {
            tracing::error!("store writer: {e}; every later write fails");
            st.failed = Some(e.clone());
        }
    }

    /// An fsync on its own (interval deadline, shutdown).
    fn sync(&mut self) -> Result<(), StoreError> {
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        let result = self.store.write(&[], true);
        self.last_sync = Instant::now();
        self.dirty = false;
        if let Err(e) = &result {
            self.fail(e);
        }
        result
    }

    fn write(&mut self, mut reqs: Vec<Request>) {
        self.shared
            .requests
            .fetch_add(reqs.len() as u64, Ordering::Relaxed);
        for r in &mut reqs {
            // Room in the queue again: the next group can form while this one is written.
            r._permit = None;
        }
        let failed = self.shared.state.lock().failed.clone();
        if let Some(e) = failed {
            for r in &mut reqs {
                r.complete(Err(e.clone()));
            }
            return;
        }
        match self.mode {
            SyncMode::Always => {
                for i in 0..reqs.len() {
                    let ops = std::mem::take(&mut reqs[i].ops);
                    let result = self.group_write(&ops, true);
                    reqs[i].complete(result.clone());
                    if let Err(e) = result.filter_fatal() {
                        for r in &mut reqs[i + 1..] {
                            r.complete(Err(e.clone()));
                        }
                        return;
                    }
                }
            }
            SyncMode::Batch => self.write_group(reqs, true),
            SyncMode::None => self.write_group(reqs, false),
            SyncMode::Interval(d) => {
                let sync = self.last_sync.elapsed() >= d;
                self.write_group(reqs, sync);
                if sync {
                    self.last_sync = Instant::now();
                    self.dirty = false;
                } else {
                    self.dirty = true;
                }
            }
        }
    }

    fn group_write(&self, ops: &Prepared, sync: bool) -> Result<(), StoreError> {
        self.shared.groups.fetch_add(1, Ordering::Relaxed);
        if sync {
            self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        let result = self.store.write_prepared(ops, sync);
        if let Err(e) = &result {
            if e.is_fatal() {
                self.fail(e);
            }
        }
        result
    }

    /// One write for the whole group; on a non-fatal error, one write per request so only the
    /// culprit fails.
    fn write_group(&self, mut reqs: Vec<Request>, sync: bool) {
        let mut ops = Prepared::default();
        let mut lens = Vec::with_capacity(reqs.len());
        for r in &mut reqs {
            lens.push(r.ops.len());
            ops.append(&mut r.ops);
        }
        match self.group_write(&ops, sync) {
            Ok(()) => reqs.iter_mut().for_each(|r| r.complete(Ok(()))),
            Err(e) if !e.is_fatal() && reqs.len() > 1 => {
                // Back into one batch per request, in order.
                let mut parts = Vec::with_capacity(lens.len());
                for len in lens.iter().rev() {
                    let at = ops.len() - len;
                    parts.push(ops.split_off(at));
                }
                parts.reverse();
                for (i, part) in parts.into_iter().enumerate() {
                    let result = self.group_write(&part, sync);
                    reqs[i].complete(result.clone());
                    if let Err(e) = result.filter_fatal() {
                        for r in &mut reqs[i + 1..] {
                            r.complete(Err(e.clone()));
                        }
                        return;
                    }
                }
            }
            Err(e) => reqs.iter_mut().for_each(|r| r.complete(Err(e.clone()))),
        }
    }
}

trait FilterFatal {
    /// `Err` only for fatal errors.
    fn filter_fatal(self) -> Result<(), StoreError>;
}

impl FilterFatal for Result<(), StoreError> {
    fn filter_fatal(self) -> Result<(), StoreError> {
        match self {
            Err(e) if e.is_fatal() => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;

//! [`StoreWriter`]: group commit. One writer thread owns every write to the [`Store`]; async
//! callers hand it batches through a bounded queue and await durability.
//!
//! The writer takes *everything* queued when it becomes free, writes it with one
//! [`Store::write`] call and one fsync, then completes every waiter. Requests that arrive while
//! it writes form the next group, so the group size adapts to load with no artificial delay:
//! one request alone is written at once, and under load one fsync covers hundreds.
//!
//! Invariants:
//! - Requests are applied in the order they entered the queue, waited or not, so a
//!   `submit_nowait` delete is never overtaken by a later write of the same key (packet ids are
//!   reused). This is why the queue is a mutex-guarded `VecDeque` and not an mpsc channel with
//!   a side path for non-waiting writes.
//! - Bounded: `submit` waits for one of `queue_capacity` permits before queueing
//!   (backpressure), and a permit is returned when the writer takes the request. `submit_nowait`
//!   never waits: it takes a permit when one is free and is queued regardless otherwise, since
//!   its writes (deletes after acks) are caused by earlier, throttled writes.
//! - A waiter completes only after its group's write returned, and in `Batch` and `Always`
//!   modes after its fsync. If a write or fsync fails with a fatal error, that group's waiters
//!   get the error and so does every later request: the writer never writes again. A
//!   non-fatal error (a batch too large) fails only the request that caused it: the group is
//!   retried one request at a time.
//! - `shutdown` writes everything queued, fsyncs, and stops the thread.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::{Op, Store, StoreError};

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
}

struct Request {
    ops: Vec<Op>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
    /// Returned to the queue's budget when the writer takes the request.
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
    requests: AtomicU64,
    groups: AtomicU64,
    syncs: AtomicU64,
}

/// The group-commit front end of a [`Store`].
pub struct StoreWriter {
    shared: Arc<Shared>,
    exited: Mutex<Option<oneshot::Receiver<Result<(), StoreError>>>>,
}

impl StoreWriter {
    /// Starts the writer thread. `queue_capacity` (at least 1) bounds the requests waiting to
    /// be written.
    pub fn spawn(store: Arc<dyn Store>, mode: SyncMode, queue_capacity: usize) -> StoreWriter {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            permits: Arc::new(Semaphore::new(queue_capacity.max(1))),
            requests: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
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
        let (tx, rx) = oneshot::channel();
        self.push(Request {
            ops: batch,
            done: Some(tx),
            _permit: Some(permit),
        })?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Queues `batch` at once (without waiting for room: the caller bounds how many it has
    /// outstanding) and returns a receiver that completes when the batch is durable per the
    /// [`SyncMode`]. For acknowledgements that follow the disk from a connection's event loop.
    pub fn submit_tracked(
        &self,
        batch: Vec<Op>,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let permit = self.shared.permits.clone().try_acquire_owned().ok();
        let (tx, rx) = oneshot::channel();
        self.push(Request {
            ops: batch,
            done: Some(tx),
            _permit: permit,
        })?;
        Ok(rx)
    }

    /// Queues `batch` without waiting for room or for durability: for writes whose loss only
    /// means a redelivery (deletes after acks). Errors only when the writer has failed or shut
    /// down.
    pub fn submit_nowait(&self, batch: Vec<Op>) -> Result<(), StoreError> {
        let permit = self.shared.permits.clone().try_acquire_owned().ok();
        self.push(Request {
            ops: batch,
            done: None,
            _permit: permit,
        })
    }

    fn push(&self, req: Request) -> Result<(), StoreError> {
        {
            let mut st = self.shared.state.lock();
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.closed {
                return Err(StoreError::Closed);
            }
            st.queue.push_back(req);
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Why a request is refused once the queue is closed.
    fn refusal(&self) -> StoreError {
        self.shared
            .state
            .lock()
            .failed
            .clone()
            .unwrap_or(StoreError::Closed)
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            requests: self.shared.requests.load(Ordering::Relaxed),
            groups: self.shared.groups.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
        }
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

    fn group_write(&self, ops: &[Op], sync: bool) -> Result<(), StoreError> {
        self.shared.groups.fetch_add(1, Ordering::Relaxed);
        if sync {
            self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        let result = self.store.write(ops, sync);
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
        let mut ops = Vec::new();
        let mut ranges: Vec<Range<usize>> = Vec::with_capacity(reqs.len());
        for r in &mut reqs {
            let start = ops.len();
            ops.append(&mut r.ops);
            ranges.push(start..ops.len());
        }
        match self.group_write(&ops, sync) {
            Ok(()) => reqs.iter_mut().for_each(|r| r.complete(Ok(()))),
            Err(e) if !e.is_fatal() && reqs.len() > 1 => {
                for (i, range) in ranges.into_iter().enumerate() {
                    let result = self.group_write(&ops[range], sync);
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

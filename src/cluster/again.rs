//! Publishing again what a stream did not acknowledge.
//!
//! A batch of messages (or claims), or a retained update, that went to NATS may never reach
//! its stream: the NATS server dies with it unread, a server of a NATS cluster is lost, the
//! stream has no leader for the seconds an election takes. The stream's acknowledgement then
//! fails or times out. Dropping the batch would lose, for the other nodes, messages whose
//! publishers were acknowledged. Instead the batch is published again, in order, under the
//! same message id (`Nats-Msg-Id`): a copy the stream did take, only its acknowledgement lost,
//! is stored once ([`super::messages::DUPLICATE_WINDOW`]; the retained stream keeps NATS's
//! default window).
//!
//! - The receipts of the batch's publishers are answered once the stream has it, or after
//!   [`HOLD`] from its first publish, whichever comes first: as while NATS is away, a
//!   publisher is not held longer than a stream's answer may take.
//! - Until everything waiting here is in the stream, the publishing task sends nothing new
//!   (for up to [`HOLD`] from when something began to wait), so what it sends next stays
//!   behind. A batch that had already gone after the failed one may still land before it.
//! - A batch is given up after [`GIVE_UP`] (counted in
//!   `starling_cluster_messages_dropped_total`), and so is one that finds [`BATCHES`] waiting
//!   already. Their bytes count, with those of the batches awaiting their stream's answer,
//!   within [`UNACKED_KIB`]: beyond it the publishing task waits. Batches published again are
//!   counted in `starling_cluster_messages_republished_total`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::messages::Messages;
use super::retained;
use crate::metrics::ClusterMetrics;
use crate::storage::StoreError;

/// How long a batch's publishers wait for the stream at most (async-nats waits as long for a
/// stream's acknowledgement).
pub(super) const HOLD: Duration = Duration::from_secs(5);

/// How long a batch is published again before it is given up: less than the stream's
/// duplicate window, so that a copy the stream took meanwhile is still recognised.
pub(super) const GIVE_UP: Duration = Duration::from_secs(20);

/// Batches waiting to be published again, at most.
pub(super) const BATCHES: usize = 4096;

/// The first pause between two attempts; it doubles up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// One attempt's bound: the publish and the stream's answer.
const ATTEMPT: Duration = Duration::from_secs(6);

/// How often receipts are checked against [`HOLD`] while an attempt or a pause lasts.
const TICK: Duration = Duration::from_millis(250);

/// Answers a receipt from [`crate::broker::cluster::Cluster::routed`] when dropped: after the stream took the
/// message's batch and its shared copies reached NATS (the acknowledgement task drops it
/// then), or once that cannot happen (the queue to NATS was full, NATS refused the batch, the
/// node stops). In those cases the message reaches only this node, counted in
/// `starling_cluster_messages_dropped_total`, as when NATS is unreachable, and its publisher
/// is not held back for it. Its publisher waits at most [`HOLD`] from when it was
/// made, however long it waited for the publishing task.
pub(super) struct StreamAck(
    Option<oneshot::Sender<Result<(), StoreError>>>,
    pub(super) Instant,
);

impl StreamAck {
    pub(super) fn new(tx: oneshot::Sender<Result<(), StoreError>>) -> StreamAck {
        StreamAck(Some(tx), std::time::Instant::now())
    }
}

impl Drop for StreamAck {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(Ok(()));
        }
    }
}

/// Where a batch goes.
#[derive(Clone)]
pub(super) enum Target {
    /// The messages stream.
    Messages,
    /// The retained stream, on this subject. Published again only while the stream holds no
    /// later update of this node's for the topic: an earlier one landing last would undo it.
    Retained(String),
}

/// What is needed to publish a batch again.
pub(super) struct Again {
    pub(super) target: Target,
    /// Its message id.
    pub(super) id: String,
    pub(super) body: Bytes,
    /// Messages (or claims) in it, for the counters.
    pub(super) count: u64,
    /// Its first publish.
    pub(super) since: Instant,
    /// Its share of [`UNACKED`], given back once the stream has it or it is given up.
    pub(super) _held: Option<OwnedSemaphorePermit>,
}

/// Bytes of batches published and not yet acknowledged by their stream (or waiting to be
/// published again), at most, in KiB: their bodies are kept until then. Beyond it the
/// publishing task waits for acknowledgements; what the broker queues for it meanwhile waits
/// in `[cluster] queue`, and beyond that is dropped (counted).
pub(super) const UNACKED_KIB: usize = 64 * 1024;

/// Takes the share of the unacknowledged bytes a body of `len` bytes needs (waiting for it).
pub(super) async fn hold(unacked: &Arc<Semaphore>, len: usize) -> Option<OwnedSemaphorePermit> {
    let kib = len.div_ceil(1024).clamp(1, UNACKED_KIB);
    let kib = u32::try_from(kib).unwrap_or(u32::MAX);
    unacked.clone().acquire_many_owned(kib).await.ok()
}

/// Message ids for this node's batches: unique to this life of the node (a random start),
/// then counted.
pub(super) struct Ids {
    life: u64,
    next: AtomicU64,
}

impl Ids {
    pub(super) fn new() -> Ids {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            // Without randomness, the time still tells this life from the earlier ones.
            bytes = crate::storage::unix_ms_now().to_be_bytes();
        }
        Ids {
            life: u64::from_be_bytes(bytes),
            next: AtomicU64::new(0),
        }
    }

    /// The next batch's id.
    pub(super) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{:016x}-{n:x}", self.life)
    }
}

/// Whether message id `other` was given after `mine` by the same life of a node (ids of
/// another node or life are not ordered with it).
fn later(other: &str, mine: &str) -> bool {
    let split = |id: &str| {
        let (life, n) = id.split_once('-')?;
        Some((life.to_owned(), u64::from_str_radix(n, 16).ok()?))
    };
    match (split(other), split(mine)) {
        (Some((life_o, o)), Some((life_m, m))) => life_o == life_m && o > m,
        _ => false,
    }
}

/// A batch the stream did not acknowledge, and the receipts waiting for it.
pub(super) struct Failed {
    pub(super) again: Again,
    pub(super) receipts: Vec<StreamAck>,
}

/// What waits to be published again: shared by the acknowledgement task (which hands batches
/// over), the republishing task and the publishing task (which waits until it is empty).
#[derive(Default)]
pub(super) struct Backlog {
    batches: AtomicUsize,
    empty: Notify,
}

impl Backlog {
    /// Counts a batch in; false (nothing counted) when [`BATCHES`] wait already. (Their
    /// bytes are bounded with the unacknowledged ones, [`UNACKED_KIB`].)
    pub(super) fn admit(&self) -> bool {
        let mut n = self.batches.load(Ordering::Acquire);
        loop {
            if n >= BATCHES {
                return false;
            }
            match self
                .batches
                .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
    }

    /// A batch is done with (in the stream, or given up).
    pub(super) fn done(&self) {
        if self.batches.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.empty.notify_waiters();
        }
    }

    /// Whether nothing waits to be published again.
    pub(super) fn is_empty(&self) -> bool {
        self.batches.load(Ordering::Acquire) == 0
    }

    /// Returns once nothing waits to be published again.
    pub(super) async fn until_empty(&self) {
        if self.is_empty() {
            return;
        }
        loop {
            let empty = self.empty.notified();
            tokio::pin!(empty);
            // Registered before the check, so a notification in between is not missed.
            empty.as_mut().enable();
            if self.is_empty() {
                return;
            }
            empty.await;
        }
    }
}

/// The republishing task: takes failed batches in order and publishes each until the stream
/// has it or [`GIVE_UP`] passes.
pub(super) async fn run(
    mut rx: mpsc::Receiver<Failed>,
    streams: (Messages, retained::Sync),
    backlog: Arc<Backlog>,
    metrics: Arc<ClusterMetrics>,
    shutdown: CancellationToken,
) {
    let mut queue: VecDeque<Failed> = VecDeque::new();
    let mut pause = FIRST_PAUSE;
    while take(&mut rx, &mut queue, &shutdown).await {
        let Some(head) = queue.front() else { continue };
        if head.again.since.elapsed() > GIVE_UP {
            // Old already (NATS away for long): given up without another wait.
            give_up(&mut queue, &backlog, &metrics, "too long without NATS");
            continue;
        }
        let job = Job::of(&head.again);
        let attempt = attempt(&streams, job);
        let Some(result) = waiting(attempt, &mut rx, &mut queue, &shutdown).await else {
            break;
        };
        match result {
            Ok(()) => {
                pause = FIRST_PAUSE;
                if let Some(done) = queue.pop_front() {
                    metrics.republished.add(done.again.count);
                    backlog.done();
                }
            }
            Err(e)
                if queue
                    .front()
                    .is_some_and(|h| h.again.since.elapsed() > GIVE_UP) =>
            {
                give_up(&mut queue, &backlog, &metrics, &e);
            }
            Err(_) => {
                let sleep = tokio::time::sleep(pause);
                if waiting(sleep, &mut rx, &mut queue, &shutdown)
                    .await
                    .is_none()
                {
                    break;
                }
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
        }
    }
    // Stopping: what still waits is not sent.
    while let Ok(failed) = rx.try_recv() {
        queue.push_back(failed);
    }
    for failed in queue {
        metrics.dropped.add(failed.again.count);
        backlog.done();
    }
}

/// Waits for a failed batch when none waits, then takes what else has come; false when
/// stopping.
async fn take(
    rx: &mut mpsc::Receiver<Failed>,
    queue: &mut VecDeque<Failed>,
    shutdown: &CancellationToken,
) -> bool {
    if queue.is_empty() {
        let failed = tokio::select! {
            f = rx.recv() => f,
            _ = shutdown.cancelled() => None,
        };
        let Some(failed) = failed else { return false };
        queue.push_back(failed);
    }
    while let Ok(failed) = rx.try_recv() {
        queue.push_back(failed);
    }
    release_held(queue);
    true
}

/// Awaits `work` (an attempt, a pause) while taking what comes and answering the receipts
/// that have waited [`HOLD`] (every [`TICK`]); None when stopping.
async fn waiting<T>(
    work: impl std::future::Future<Output = T>,
    rx: &mut mpsc::Receiver<Failed>,
    queue: &mut VecDeque<Failed>,
    shutdown: &CancellationToken,
) -> Option<T> {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            r = &mut work => return Some(r),
            _ = tick.tick() => {
                while let Ok(failed) = rx.try_recv() {
                    queue.push_back(failed);
                }
                release_held(queue);
            }
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// What one attempt publishes: a batch's target, id and body.
struct Job {
    target: Target,
    id: String,
    body: Bytes,
}

impl Job {
    fn of(again: &Again) -> Job {
        Job {
            target: again.target.clone(),
            id: again.id.clone(),
            body: again.body.clone(),
        }
    }
}

/// Gives the first batch of `queue` up, counted as dropped.
fn give_up(queue: &mut VecDeque<Failed>, backlog: &Backlog, metrics: &ClusterMetrics, why: &str) {
    if let Some(done) = queue.pop_front() {
        metrics.dropped.add(done.again.count);
        backlog.done();
        if crate::logging::refusal_allowed() {
            tracing::warn!(
                error = why,
                messages = done.again.count,
                "cluster: NATS did not take a batch for the other nodes within {GIVE_UP:?}; \
                 given up"
            );
        }
    }
}

/// Answers the receipts of batches first published more than [`HOLD`] ago.
fn release_held(queue: &mut VecDeque<Failed>) {
    for failed in queue.iter_mut() {
        if failed.again.since.elapsed() >= HOLD {
            failed.receipts.clear();
        }
    }
}

/// Publishes `job` once more and waits for the stream's answer.
async fn attempt(
    (messages, retained): &(Messages, retained::Sync),
    job: Job,
) -> Result<(), String> {
    let publish = async {
        let ack = match &job.target {
            Target::Messages => messages.publish(job.body.clone(), &job.id).await?,
            Target::Retained(subject) => {
                if retained
                    .last_id(subject)
                    .await
                    .is_some_and(|last| last == job.id || later(&last, &job.id))
                {
                    // The stream has it, or a later update of the topic from here.
                    return Ok(());
                }
                retained.publish(subject, job.body.clone(), &job.id).await?
            }
        };
        ack.await.map(|_| ()).map_err(|e| e.to_string())
    };
    match tokio::time::timeout(ATTEMPT, publish).await {
        Ok(r) => r,
        Err(_) => Err("no answer".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_within_a_life_and_across_lives() {
        let (a, b) = (Ids::new(), Ids::new());
        let (a1, a2, b1) = (a.next(), a.next(), b.next());
        assert_ne!(a1, a2);
        assert_ne!(a1, b1);
        assert!(a1.len() <= 40, "{a1}");
    }

    #[test]
    fn only_a_later_id_of_the_same_life_is_later() {
        let ids = Ids::new();
        let (first, second) = (ids.next(), ids.next());
        assert!(later(&second, &first));
        assert!(!later(&first, &second));
        assert!(!later(&first, &first));
        let other = Ids::new();
        let (o1, o2) = (other.next(), other.next());
        assert!(
            !later(&o2, &first),
            "another life's ids are not ordered with ours"
        );
        assert!(!later(&o1, &second));
        assert!(!later("garbage", &first));
        assert!(!later(&second, "garbage"));
    }

    #[tokio::test]
    async fn the_backlog_is_bounded_and_says_when_it_is_empty() {
        let backlog = Arc::new(Backlog::default());
        assert!(backlog.admit());
        let waiter = tokio::spawn({
            let backlog = backlog.clone();
            async move { backlog.until_empty().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        backlog.done();
        waiter.await.unwrap();
        backlog.until_empty().await;
        for _ in 0..BATCHES {
            assert!(backlog.admit());
        }
        assert!(!backlog.admit(), "past the batch bound");
    }
}

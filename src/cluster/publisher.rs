//! The task that publishes what the broker's hooks queue for the other nodes, in order, in
//! batches (see [`super::messages`], [`super::claims`], [`super::retained`]), and the task
//! that awaits the streams' acknowledgements and answers the receipts waiting for them (what
//! a stream did not take goes to [`super::again`]).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::again::{self, StreamAck};
use super::{claims, messages, retained, shares};
use crate::message::Message;
use crate::metrics::ClusterMetrics;

/// What the hooks queue for the publishing task.
pub(super) enum Outbound {
    /// A routed message; true: its shared copy goes out too (see [`super::shares`]). With the answer
    /// its publisher's acknowledgement waits for, if it waits.
    Message(Arc<Message>, bool, Option<StreamAck>),
    /// A client id claimed here, and the claim's number (see [`super::claims::Claims`]); with the
    /// answer its CONNACK waits for, if it waits.
    Claim(String, u64, Option<StreamAck>),
    Retained(Arc<Message>),
}

/// The subjects of one cluster.
#[derive(Clone)]
pub(super) struct Subjects {
    pub(super) prefix: String,
    pub(super) node: String,
}

/// How long the acknowledgement task waits for the shares connection to flush (async-nats
/// waits as long for a stream's acknowledgement).
const SHARES_FLUSH: Duration = Duration::from_secs(5);

/// How long a stopping node spends sending what is still queued for the other nodes.
const SHUTDOWN_SEND: Duration = Duration::from_secs(2);

/// A stream's acknowledgement of one publish, and what else waits for it.
pub(super) struct PendingAck {
    ack: PublishAckFuture,
    /// What it takes to publish it again if the stream does not acknowledge it (see
    /// [`again`]). Its answer is awaited until [`again::HOLD`] after `again.since`: async-nats
    /// counts its own wait from when the answer is awaited, and this task awaits the answers
    /// one after the other.
    again: again::Again,
    /// Flushes the shares connection, when shared copies went out with the batch: they go over
    /// core NATS, so its acknowledgement does not cover them.
    flush: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Answered once the stream took the batch and the shared copies reached NATS.
    receipts: Vec<StreamAck>,
}

impl PendingAck {
    fn new(ack: PublishAckFuture, again: again::Again, receipts: Vec<StreamAck>) -> PendingAck {
        PendingAck {
            ack,
            again,
            flush: None,
            receipts,
        }
    }
}

/// The task that publishes what the hooks queue, in order.
pub(super) struct Publisher {
    pub(super) client: async_nats::Client,
    pub(super) share_client: async_nats::Client,
    pub(super) subjects: Subjects,
    pub(super) sync: retained::Sync,
    pub(super) messages: messages::Messages,
    /// The stream's acknowledgements of what this task publishes, for [`ack_task`].
    pub(super) acks: mpsc::Sender<PendingAck>,
    pub(super) metrics: Arc<ClusterMetrics>,
    pub(super) claims: Arc<claims::Claims>,
    /// Message ids of the batches it publishes into the messages stream.
    pub(super) ids: again::Ids,
    /// Batches the stream did not acknowledge, waiting to be published again: nothing new
    /// goes before them.
    pub(super) backlog: Arc<again::Backlog>,
    /// The bytes of batches not acknowledged yet (see [`again::UNACKED_KIB`]).
    pub(super) unacked: Arc<tokio::sync::Semaphore>,
}

impl Publisher {
    pub(super) async fn run(self, mut rx: mpsc::Receiver<Outbound>, shutdown: CancellationToken) {
        // An item taken from the queue that ended a batch: it goes next.
        let mut next: Option<Outbound> = None;
        // Since when something has waited to be published again, as far as this task saw.
        let mut behind_since: Option<std::time::Instant> = None;
        loop {
            let item = match next.take() {
                Some(item) => item,
                None => {
                    let item = tokio::select! {
                        item = rx.recv() => item,
                        _ = shutdown.cancelled() => break,
                    };
                    let Some(item) = item else { return };
                    item
                }
            };
            // Behind what waits to be published again, for [`again::HOLD`] at most from when
            // something began to wait: so that a NATS failover does not reorder, and a stream
            // that keeps refusing does not hold publishers for long.
            if self.backlog.is_empty() {
                behind_since = None;
            } else {
                let since = *behind_since.get_or_insert_with(std::time::Instant::now);
                let until = tokio::time::Instant::from_std(since + again::HOLD);
                tokio::select! {
                    _ = tokio::time::timeout_at(until, self.backlog.until_empty()) => {}
                    _ = shutdown.cancelled() => {
                        next = Some(item);
                        break;
                    }
                }
            }
            next = self.send(item, &mut rx).await;
        }
        // At shutdown: what is queued still goes (the last wills, retained updates), within
        // a bound, then the connections are flushed.
        let rest = async {
            while let Some(item) = next.take().or_else(|| rx.try_recv().ok()) {
                next = self.send(item, &mut rx).await;
            }
            let _ = self.client.flush().await;
            let _ = self.share_client.flush().await;
        };
        if tokio::time::timeout(SHUTDOWN_SEND, rest).await.is_err() {
            tracing::warn!(node = %self.subjects.node,
                "cluster: could not send everything queued for the other nodes at shutdown");
        }
    }

    /// Sends `item`; a message takes the messages queued right behind it into its batch.
    /// Returns the item that ended the batch, if one did.
    async fn send(&self, item: Outbound, rx: &mut mpsc::Receiver<Outbound>) -> Option<Outbound> {
        let (sent, next) = match item {
            Outbound::Message(msg, shares, ack) => {
                let limit = messages::batch_limit(self.client.max_payload());
                let (batch, acks, next) = gather_messages((msg, shares, ack), rx, limit);
                (self.send_batch(batch, acks).await, next)
            }
            Outbound::Claim(client_id, number, ack) => {
                let mut batch = claims::ClaimBatch::default();
                let mut acks: Vec<StreamAck> = ack.into_iter().collect();
                batch.push(client_id, number);
                let next = gather(rx, |item| match item {
                    Outbound::Claim(client_id, number, ack) => {
                        batch.push(client_id, number);
                        acks.extend(ack);
                        Ok(batch.is_full())
                    }
                    other => Err(other),
                });
                (self.send_claims(batch, acks).await, next)
            }
            Outbound::Retained(msg) => (self.store_retained(&msg).await, None),
        };
        if let Err(e) = sent {
            self.metrics.dropped.inc();
            if crate::logging::refusal_allowed() {
                tracing::warn!(error = %e, "cluster: NATS refused a publish; dropped");
            }
        }
        next
    }

    /// One stream message for the claims, in the messages stream so that they take their
    /// place in its order (see [`claims`]).
    /// `acks` are answered once the stream has them.
    async fn send_claims(
        &self,
        batch: claims::ClaimBatch,
        acks: Vec<StreamAck>,
    ) -> Result<(), String> {
        let (body, claimed) = batch.finish();
        let again = self.again(body.clone(), claimed.len(), &acks).await;
        match self.messages.publish(body, &again.id).await {
            Ok(ack) => {
                for (client_id, number) in &claimed {
                    self.claims.sent(client_id, *number);
                }
                let pending = PendingAck::new(ack, again, acks);
                self.acks.send(pending).await.map_err(|e| e.to_string())
            }
            Err(e) => {
                for (client_id, number) in &claimed {
                    self.claims.settled(client_id, *number);
                }
                Err(e)
            }
        }
    }

    /// One stream message for the batch, then the shared copies (one per message: they go by
    /// topic). `acks` are answered once the stream has the batch and the shared copies are
    /// with the NATS server.
    async fn send_batch(&self, batch: messages::Batch, acks: Vec<StreamAck>) -> Result<(), String> {
        let (count, body, shared) = batch.finish();
        let again = self.again(body.clone(), count as usize, &acks).await;
        let published = self.messages.publish(body, &again.id).await;
        let mut shares_sent = Ok(());
        for msg in &shared {
            let r = shares::publish(&self.share_client, &self.subjects.prefix, msg).await;
            shares_sent = shares_sent.and(r);
        }
        let sent = match published {
            Ok(ack) => {
                let flush = (!shared.is_empty()).then(|| {
                    let client = self.share_client.clone();
                    Box::pin(async move {
                        // Bounded like the stream's acknowledgement: while NATS is away the
                        // publishers are not held longer than that.
                        let _ = tokio::time::timeout(SHARES_FLUSH, client.flush()).await;
                    }) as Pin<Box<dyn Future<Output = ()> + Send>>
                });
                let pending = PendingAck {
                    flush,
                    ..PendingAck::new(ack, again, acks)
                };
                self.acks.send(pending).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        match &sent {
            Ok(()) => self.metrics.sent.add(count),
            Err(_) => self.metrics.dropped.add(count.saturating_sub(1)),
        }
        sent.and(shares_sent)
    }
}

impl Publisher {
    /// Writes a retained update to the retained stream; the acknowledgement task awaits the
    /// stream's answer.
    async fn store_retained(&self, msg: &Message) -> Result<(), String> {
        let (subject, body) = self.sync.update(msg);
        let again = again::Again {
            target: again::Target::Retained(subject.clone()),
            ..self.again(body.clone(), 1, &[]).await
        };
        let ack = self.sync.publish(&subject, body, &again.id).await?;
        let pending = PendingAck::new(ack, again, Vec::new());
        self.acks.send(pending).await.map_err(|e| e.to_string())
    }

    /// What it takes to publish `body` (of `count` messages or claims, whose publishers wait
    /// on `acks`) again, once its bytes fit within [`again::UNACKED_KIB`]. It counts from the
    /// oldest receipt: a publisher's wait includes its wait in the queue.
    async fn again(&self, body: bytes::Bytes, count: usize, acks: &[StreamAck]) -> again::Again {
        let held = again::hold(&self.unacked, body.len()).await;
        let now = std::time::Instant::now();
        again::Again {
            target: again::Target::Messages,
            id: self.ids.next(),
            body,
            count: count as u64,
            since: acks.iter().map(|a| a.1).min().unwrap_or(now),
            _held: held,
        }
    }
}

/// A batch of at most `limit` bytes: `first`, then the messages queued right behind it (see
/// [`gather`]); with the receipts they carry, and the item that ended the batch, if one did
/// (a message that did not fit starts the next one).
fn gather_messages(
    (msg, shares, ack): (Arc<Message>, bool, Option<StreamAck>),
    rx: &mut mpsc::Receiver<Outbound>,
    limit: usize,
) -> (messages::Batch, Vec<StreamAck>, Option<Outbound>) {
    let mut batch = messages::Batch::new(limit);
    let mut acks: Vec<StreamAck> = ack.into_iter().collect();
    // An empty batch takes any message.
    let _ = batch.push(msg, shares);
    let next = gather(rx, |item| match item {
        Outbound::Message(msg, shares, ack) => match batch.push(msg, shares) {
            Ok(()) => {
                acks.extend(ack);
                Ok(batch.is_full())
            }
            Err(msg) => Err(Outbound::Message(msg, shares, ack)),
        },
        other => Err(other),
    });
    (batch, acks, next)
}

/// Hands `take` the items queued right behind a batch's first, while it takes them (`Ok`,
/// true once the batch is full) and they are already there: a batch never waits for more.
/// Returns the item `take` gave back, which ended the batch, if one did.
fn gather(
    rx: &mut mpsc::Receiver<Outbound>,
    mut take: impl FnMut(Outbound) -> Result<bool, Outbound>,
) -> Option<Outbound> {
    while let Ok(item) = rx.try_recv() {
        match take(item) {
            Ok(false) => {}
            Ok(true) => return None,
            Err(other) => return Some(other),
        }
    }
    None
}

/// Awaits the streams' acknowledgements of what the publishing task wrote, in order, and
/// answers the receipts waiting for them (by dropping them). A batch (or retained update) that
/// was not taken goes, with its receipts, to be published again (see [`again`]).
pub(super) async fn ack_task(
    mut rx: mpsc::Receiver<PendingAck>,
    (retry, backlog): (mpsc::Sender<again::Failed>, Arc<again::Backlog>),
    metrics: Arc<ClusterMetrics>,
) {
    while let Some(pending) = rx.recv().await {
        let deadline = tokio::time::Instant::from_std(pending.again.since + again::HOLD);
        let taken = tokio::time::timeout_at(deadline, pending.ack.into_future())
            .await
            .is_ok_and(|answer| answer.is_ok());
        if let Some(flush) = pending.flush {
            flush.await;
        }
        if taken {
            continue;
        }
        let again = pending.again;
        let count = again.count;
        if !backlog.admit() {
            not_taken(&metrics, count, "too much waits to be published again");
            continue;
        }
        let failed = again::Failed {
            again,
            receipts: pending.receipts,
        };
        // Full only if the backlog's bound were larger than the channel; closed when stopping.
        if retry.try_send(failed).is_err() {
            backlog.done();
            not_taken(&metrics, count, "stopping");
        }
    }
}

/// Counts `count` messages (or claims, or a retained update) a stream did not take, and says
/// why (rate-limited).
fn not_taken(metrics: &ClusterMetrics, count: u64, why: &str) {
    metrics.dropped.add(count);
    if crate::logging::refusal_allowed() {
        tracing::warn!(
            error = why,
            count,
            "cluster: a stream did not take messages or a retained update for the other nodes"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;

    #[test]
    fn a_message_that_would_take_a_batch_past_its_limit_starts_the_next_one() {
        let message = |size: usize| {
            let payload = bytes::Bytes::from(vec![1; size]);
            Arc::new(Message::new("t", payload, QoS::AtLeastOnce, false))
        };
        let (tx, mut rx) = mpsc::channel(16);
        for _ in 0..3 {
            tx.try_send(Outbound::Message(message(1000), false, None))
                .unwrap();
        }
        tx.try_send(Outbound::Message(message(6000), false, None))
            .unwrap();
        tx.try_send(Outbound::Message(message(1000), false, None))
            .unwrap();
        let limit = 8 * 1024;
        let (batch, _, next) = gather_messages((message(1000), false, None), &mut rx, limit);
        let (count, body, _) = batch.finish();
        assert_eq!(count, 4, "the four small ones");
        assert!(body.len() <= limit);
        let Some(Outbound::Message(large, ..)) = next else {
            panic!("the large message ends the batch and comes next");
        };
        assert_eq!(large.payload.len(), 6000);
        let (batch, _, next) = gather_messages((large, false, None), &mut rx, limit);
        assert_eq!(
            batch.finish().0,
            2,
            "the large one, then the last small one"
        );
        assert!(next.is_none());
    }
}

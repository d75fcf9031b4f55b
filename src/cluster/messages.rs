//! Messages between nodes, through the JetStream stream `<prefix>_messages` (subjects
//! `<prefix>.msg.<node>`, interest retention: a message leaves once every node's consumer has
//! acknowledged it).
//!
//! Each node reads the stream through a durable consumer named after it, and acknowledges a
//! message only once its subscribers here have it: queued, and on disk where a persistent
//! session holds it ([`BrokerState::publish_from_peer`]). So a node that stops, crashes or
//! loses NATS for a while resumes where it was: messages published on the other nodes while it
//! was away reach its persistent sessions when it is back (within `[cluster] history` and
//! `history_max_bytes`). Its own messages come back to it too (the consumer takes the whole
//! stream) and are acknowledged unread.
//!
//! A node that crashes after routing a message and before acknowledging it gets the message
//! again: its subscribers may then see it twice (as QoS 1 allows; at QoS 2, a duplicate after a
//! crash of their node).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishAckFuture, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerState;
use crate::config::ClusterConfig;
use crate::message::{Message, Origin};
use crate::metrics::ClusterMetrics;
use crate::persistence::Receipt;
use crate::storage::{decode_message_record, encode_message_record, StoredMessage};

/// Messages routed here and not yet acknowledged to the stream (their store writes pending).
const ACK_WINDOW: usize = 4096;

/// How long the stream waits for a node's acknowledgement before it sends the message again:
/// longer than a message can wait on full queues here (`broker::STUCK_AFTER`) and for the
/// store.
const ACK_WAIT: Duration = Duration::from_secs(120);

/// The messages stream of one cluster, as one node uses it; cheap to clone.
#[derive(Clone)]
pub(super) struct Messages {
    js: jetstream::Context,
    stream: String,
    /// `<prefix>.msg`
    subjects: String,
    node: String,
    replicas: usize,
    history: Duration,
    history_bytes: i64,
    /// How long NATS keeps this node's consumer while the node is away: `history` for a named
    /// node, which resumes; [`UNNAMED_KEPT`] for a random name, which nobody resumes.
    kept: Duration,
}

/// How long NATS keeps the consumer of a node with a random name while it is away: long enough
/// for a reconnection, short enough that what waits for it does not pile up after it stopped.
const UNNAMED_KEPT: Duration = Duration::from_secs(60);

impl Messages {
    pub(super) fn new(client: &async_nats::Client, config: &ClusterConfig, node: &str) -> Messages {
        Messages {
            js: jetstream::new(client.clone()),
            stream: format!("{}_messages", config.prefix),
            subjects: format!("{}.msg", config.prefix),
            node: node.to_owned(),
            replicas: config.replicas,
            history: config.history,
            history_bytes: i64::try_from(config.history_max_bytes).unwrap_or(i64::MAX),
            kept: if config.node.is_empty() {
                UNNAMED_KEPT.min(config.history)
            } else {
                config.history
            },
        }
    }

    /// Creates the stream if it is not there.
    pub(super) async fn ensure(&self) -> Result<stream::Stream, String> {
        self.js
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![format!("{}.*", self.subjects)],
                retention: stream::RetentionPolicy::Interest,
                max_age: self.history,
                max_bytes: self.history_bytes,
                discard: stream::DiscardPolicy::Old,
                num_replicas: self.replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("stream {}: {e}", self.stream))
    }

    /// Publishes a batch of routed messages ([`Batch::finish`]) for the other nodes; the
    /// stream's acknowledgement is awaited by the caller's acknowledgement task.
    pub(super) async fn publish(&self, body: Bytes) -> Result<PublishAckFuture, String> {
        self.js
            .publish(format!("{}.{}", self.subjects, self.node), body)
            .await
            .map_err(|e| e.to_string())
    }

    /// This node's consumer. One left by a previous life of this node with messages it had
    /// taken and not acknowledged (it crashed, or lost NATS with acknowledgements in flight)
    /// is replaced by a new one starting after the last acknowledged message: NATS would
    /// otherwise send those again only when their `ACK_WAIT` ran out, minutes later and out of
    /// order. The new one is made before the old one goes, so that interest retention keeps
    /// every message in between.
    async fn consumer(&self) -> Result<consumer::Consumer<consumer::pull::Config>, String> {
        let stream = self.ensure().await?;
        let base = format!("{}_node_{}", self.stream, self.node);
        let mine = self.own_consumers(&stream, &base).await?;
        let mut start = None;
        let mut next_generation = 0;
        if let Some((generation, name)) = mine.last() {
            next_generation = generation + 1;
            let info = stream
                .consumer_info(name)
                .await
                .map_err(|e| format!("consumer {name}: {e}"))?;
            if info.num_ack_pending == 0 || info.ack_floor.stream_sequence == 0 {
                // Nothing taken and left, or nothing acknowledged to start after (then NATS
                // sends the rest again after ACK_WAIT).
                return self.open(&stream, name, None).await;
            }
            tracing::info!(
                unacknowledged = info.num_ack_pending,
                "cluster: resuming after the last message this node acknowledged"
            );
            start = Some(info.ack_floor.stream_sequence + 1);
        }
        let name = match next_generation {
            0 => base,
            g => format!("{base}_g{g}"),
        };
        let consumer = self.open(&stream, &name, start).await?;
        for (_, old) in mine {
            if let Err(e) = stream.delete_consumer(&old).await {
                tracing::warn!(consumer = old, error = %e, "cluster: old consumer not deleted");
            }
        }
        Ok(consumer)
    }

    /// This node's consumers (`<base>` is generation 0, `<base>_g<n>` generation n), oldest
    /// first.
    async fn own_consumers(
        &self,
        stream: &stream::Stream,
        base: &str,
    ) -> Result<Vec<(u64, String)>, String> {
        let mut names = stream.consumer_names();
        let mut mine = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| e.to_string())?;
            let generation = match name.strip_prefix(base) {
                Some("") => Some(0),
                Some(rest) => rest.strip_prefix("_g").and_then(|g| g.parse().ok()),
                None => None,
            };
            if let Some(g) = generation {
                mine.push((g, name));
            }
        }
        mine.sort();
        Ok(mine)
    }

    /// Gets or makes the consumer `name`; a new one starts at stream sequence `start`, or with
    /// what is published from now on.
    async fn open(
        &self,
        stream: &stream::Stream,
        name: &str,
        start: Option<u64>,
    ) -> Result<consumer::Consumer<consumer::pull::Config>, String> {
        let deliver_policy = match start {
            Some(start_sequence) => consumer::DeliverPolicy::ByStartSequence { start_sequence },
            None => consumer::DeliverPolicy::New,
        };
        stream
            .get_or_create_consumer(
                name,
                consumer::pull::Config {
                    durable_name: Some(name.to_owned()),
                    filter_subject: format!("{}.*", self.subjects),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: i64::try_from(ACK_WINDOW * 4).unwrap_or(i64::MAX),
                    deliver_policy,
                    // The consumer of a node that is gone for good goes, and so do the
                    // messages that waited for it.
                    inactive_threshold: self.kept,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("consumer {name}: {e}"))
    }
}

/// Reads the other nodes' messages from the stream while NATS is up, and routes them; starts
/// again after each reconnection. `caught_up` is told once what waited for this node has been
/// routed (the start waits for it before serving clients, so that what was published while
/// this node was away goes to the sessions it had, not to clients that subscribe later).
pub(super) async fn consume(
    state: Arc<BrokerState>,
    messages: Messages,
    mut up: watch::Receiver<bool>,
    shutdown: CancellationToken,
    caught_up: oneshot::Sender<()>,
) {
    let metrics = state.metrics().cluster.clone();
    let mut caught_up = Some(caught_up);
    loop {
        tokio::select! {
            r = up.wait_for(|up| *up) => if r.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
        match messages.consumer().await {
            Ok(consumer) => {
                let r = read(
                    &state,
                    &messages,
                    consumer,
                    &metrics,
                    &shutdown,
                    &mut caught_up,
                );
                if let Err(e) = r.await {
                    tracing::warn!(error = %e, "cluster: reading the messages stream stopped");
                }
            }
            Err(e) => tracing::warn!(error = %e,
                "cluster: no consumer on the messages stream (is JetStream enabled?)"),
        }
        if shutdown.is_cancelled() {
            return;
        }
        // Again once NATS is back, or after a pause if it never went.
        tokio::select! {
            _ = up.wait_for(|up| !*up) => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The first byte of a batch.
const BATCH_V1: u8 = 0xB1;

/// Messages in one stream message, at most; a batch forms only from what is already queued,
/// so a message is never held back for one.
const BATCH_MESSAGES: usize = 512;

/// Bytes of one batch, about at most (NATS's `max_payload` is 1 MB by default).
const BATCH_BYTES: usize = 256 * 1024;

/// Routed messages for one stream message: `0xB1`, then each message's record (the store's
/// format) with its length (u32, big-endian) in front. Batching what is queued together costs
/// the stream one write and one acknowledgement per batch instead of per message.
pub(super) struct Batch {
    body: Vec<u8>,
    count: u64,
    /// Messages whose shared copies go out too.
    shared: Vec<Arc<Message>>,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            body: vec![BATCH_V1],
            count: 0,
            shared: Vec::new(),
        }
    }
}

impl Batch {
    pub(super) fn push(&mut self, msg: Arc<Message>, shares: bool) {
        let record = encode_message_record(&StoredMessage::from_message(&msg));
        let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
        self.body.extend_from_slice(&len.to_be_bytes());
        self.body.extend_from_slice(&record);
        self.count += 1;
        if shares {
            self.shared.push(msg);
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.count as usize >= BATCH_MESSAGES || self.body.len() >= BATCH_BYTES
    }

    /// How many messages, the body, and the messages whose shared copies go out.
    pub(super) fn finish(self) -> (u64, Bytes, Vec<Arc<Message>>) {
        (self.count, Bytes::from(self.body), self.shared)
    }
}

/// The records of a batch; an error for the first one that does not decode (the rest of the
/// batch cannot be framed after it).
fn records(body: &[u8]) -> impl Iterator<Item = Result<StoredMessage, String>> + '_ {
    let mut rest = match body.split_first() {
        Some((&BATCH_V1, rest)) => Ok(rest),
        Some((b, _)) => Err(format!("unknown batch version {b:#x}")),
        None => Err("empty batch".to_string()),
    };
    std::iter::from_fn(move || {
        let body = match &mut rest {
            Ok([]) => return None,
            Ok(body) => body,
            Err(e) => {
                let e = std::mem::take(e);
                rest = Ok(&[]);
                return Some(Err(e));
            }
        };
        let Some((len, tail)) = body.split_first_chunk::<4>() else {
            rest = Ok(&[]);
            return Some(Err("truncated batch".into()));
        };
        let len = u32::from_be_bytes(*len) as usize;
        let Some((record, tail)) = tail.split_at_checked(len) else {
            rest = Ok(&[]);
            return Some(Err("truncated batch".into()));
        };
        *body = tail;
        Some(decode_message_record(record))
    })
}

/// One stream message routed here and waiting for its store writes before it is acknowledged.
type Routed = (Vec<Receipt>, jetstream::Message);

async fn read(
    state: &Arc<BrokerState>,
    messages: &Messages,
    mut consumer: consumer::Consumer<consumer::pull::Config>,
    metrics: &Arc<ClusterMetrics>,
    shutdown: &CancellationToken,
    caught_up: &mut Option<oneshot::Sender<()>>,
) -> Result<(), String> {
    let waiting = consumer
        .info()
        .await
        .map_err(|e| e.to_string())?
        .num_pending;
    if waiting == 0 {
        tell(caught_up);
    } else {
        tracing::info!(
            waiting,
            "cluster: routing what the other nodes published meanwhile"
        );
    }
    let mut stream = consumer.messages().await.map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<Routed>(ACK_WINDOW);
    let acks = tokio::spawn(acknowledge(rx));
    let own = format!("{}.{}", messages.subjects, messages.node);
    // One `Arc` per node name, shared by all of its messages.
    let mut origins: std::collections::HashMap<String, Arc<String>> = Default::default();
    let result = loop {
        let next = tokio::select! {
            m = stream.next() => m,
            _ = shutdown.cancelled() => break Ok(()),
        };
        let m = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => break Err(e.to_string()),
            None => break Ok(()),
        };
        // The last one waiting: caught up once it is routed.
        let last = m.info().is_ok_and(|i| i.pending == 0);
        if m.subject.as_str() == own {
            if last {
                tell(caught_up);
            }
            let _ = tx.send((Vec::new(), m)).await;
            continue;
        }
        let node = m.subject.rsplit('.').next().unwrap_or_default();
        let origin = match origins.get(node) {
            Some(o) => o.clone(),
            None => {
                let o = Arc::new(node.to_owned());
                origins.insert(node.to_owned(), o.clone());
                o
            }
        };
        let receipts = route_batch(state, &m.payload, &origin, metrics).await;
        if last {
            tell(caught_up);
        }
        if tx.send((receipts, m)).await.is_err() {
            break Err("the acknowledgement task ended".into());
        }
    };
    drop(tx);
    let _ = acks.await;
    result
}

/// Routes the messages of one batch from the node `origin`; returns the receipts of their store
/// writes.
async fn route_batch(
    state: &BrokerState,
    body: &[u8],
    origin: &Arc<String>,
    metrics: &ClusterMetrics,
) -> Vec<Receipt> {
    let mut receipts = Vec::new();
    for record in records(body) {
        match record {
            Ok(stored) => {
                metrics.received.inc();
                let mut msg = stored.to_message();
                msg.origin = Origin::Peer(origin.clone());
                receipts.extend(state.publish_from_peer(Arc::new(msg)).await);
            }
            Err(e) => {
                metrics.dropped.inc();
                if crate::logging::refusal_allowed() {
                    tracing::warn!(node = %origin, error = %crate::logging::bounded(&e),
                        "cluster: a message from another node did not decode; dropped");
                }
            }
        }
    }
    receipts
}

fn tell(caught_up: &mut Option<oneshot::Sender<()>>) {
    if let Some(tx) = caught_up.take() {
        let _ = tx.send(());
    }
}

/// Acknowledges routed messages to the stream, in order, once their store writes are done. A
/// write that failed is not acknowledged: the stream sends the message again.
async fn acknowledge(mut rx: mpsc::Receiver<Routed>) {
    'next: while let Some((receipts, m)) = rx.recv().await {
        for r in receipts {
            if let Err(e) = r.await {
                tracing::warn!(error = %e,
                    "cluster: a message from another node was not stored; NATS sends it again");
                continue 'next;
            }
        }
        if let Err(e) = m.ack().await {
            tracing::debug!(error = %e, "cluster: acknowledgement to the stream failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;

    #[test]
    fn batches_round_trip_and_garbage_is_an_error() {
        let mut batch = Batch::default();
        for i in 0..3u8 {
            let m = Message::new(
                &format!("t/{i}"),
                Bytes::from(vec![i; 3]),
                QoS::AtLeastOnce,
                i == 1,
            );
            batch.push(Arc::new(m), i == 2);
        }
        let (count, body, shared) = batch.finish();
        assert_eq!((count, shared.len()), (3, 1));
        let got: Vec<StoredMessage> = records(&body).map(|r| r.expect("decodes")).collect();
        assert_eq!(got.len(), 3);
        assert_eq!((got[1].topic.as_str(), got[1].retain), ("t/1", true));
        assert_eq!(&got[2].payload[..], &[2, 2, 2]);
        // Truncated, unknown version, empty: an error, once, and no panic.
        for bad in [&body[..body.len() - 2], &[0x01, 0, 0][..], &[][..]] {
            let results: Vec<_> = records(bad).collect();
            assert!(results.last().is_some_and(|r| r.is_err()), "{bad:?}");
        }
        assert!(records(&[BATCH_V1]).next().is_none());
    }
}

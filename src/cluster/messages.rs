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
//! stream) and are acknowledged unread. The stream carries the nodes' session claims too,
//! in batches of their own, which every node reads, its own included (see [`super::claims`]).
//!
//! A node that crashes after routing a message and before acknowledging it gets the message
//! again. It applies it only once: the store writes a message makes for persistent sessions
//! carry a mark ([`Applied`], `storage::Op::PutMark`) naming the message, in the same atomic
//! batch, and what the stream sends again at or before the mark is acknowledged unread
//! (`starling_cluster_messages_redelivered_skipped_total`). Within one run, what was routed is
//! remembered the same way (a lost NATS connection also makes the stream send messages again).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishAckFuture, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::claims::{ClaimReader, Claims, CLAIMS_V1};
use crate::broker::BrokerState;
use crate::config::ClusterConfig;
use crate::message::{Message, Origin};
use crate::metrics::ClusterMetrics;
use crate::persistence::Receipt;
use crate::storage::{decode_message_record, encode_message_record, Op, StoredMessage};

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

/// How long the stream remembers a batch's message id, to store a batch published again once
/// (NATS's default is 2 minutes; each id costs the NATS server memory for that long). Longer
/// than [`super::again::GIVE_UP`]. A stream made by an earlier build keeps its window.
pub(super) const DUPLICATE_WINDOW: Duration = Duration::from_secs(30);

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
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("stream {}: {e}", self.stream))
    }

    /// Publishes a batch of routed messages ([`Batch::finish`]) or claims for the other nodes,
    /// under the message id `id`: the stream stores a batch published again under the same id
    /// (within [`DUPLICATE_WINDOW`]) only once (see [`super::again`]). The stream's
    /// acknowledgement is awaited by the caller.
    pub(super) async fn publish(&self, body: Bytes, id: &str) -> Result<PublishAckFuture, String> {
        let message = jetstream::message::PublishMessage::build()
            .payload(body)
            .message_id(id);
        self.js
            .send_publish(format!("{}.{}", self.subjects, self.node), message)
            .await
            .map_err(|e| e.to_string())
    }

    /// This node's consumer, and the creation time of the stream (which tells a stream made
    /// again, whose sequence numbers start over, from the one a mark names). One left by a
    /// previous life of this node with messages it had
    /// taken and not acknowledged (it crashed, or lost NATS with acknowledgements in flight)
    /// is replaced by a new one starting after the last acknowledged message: NATS would
    /// otherwise send those again only when their `ACK_WAIT` ran out, minutes later and out of
    /// order. The new one is made before the old one goes, so that interest retention keeps
    /// every message in between.
    async fn consumer(&self) -> Result<(consumer::Consumer<consumer::pull::Config>, i128), String> {
        let mut stream = self.ensure().await?;
        let created = stream
            .info()
            .await
            .map_err(|e| format!("stream {}: {e}", self.stream))?
            .created
            .unix_timestamp_nanos();
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
                return Ok((self.open(&stream, name, None).await?, created));
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
        Ok((consumer, created))
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
    (messages, claims): (Messages, Arc<Claims>),
    mut up: watch::Receiver<bool>,
    shutdown: CancellationToken,
    caught_up: oneshot::Sender<()>,
) {
    let metrics = state.metrics().cluster.clone();
    let mut caught_up = Some(caught_up);
    let mark = mark_name(&messages.stream);
    let mut applied = state
        .persistence()
        .and_then(|p| p.mark_at_start(&mark))
        .and_then(Applied::decode)
        .unwrap_or_default();
    loop {
        tokio::select! {
            r = up.wait_for(|up| *up) => if r.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
        match messages.consumer().await {
            Ok((consumer, created)) => {
                if applied.created != created {
                    // A stream this node has not read from: nothing of it applied yet.
                    applied = Applied {
                        created,
                        ..Applied::default()
                    };
                }
                let reader = Reader {
                    state: &state,
                    metrics: &metrics,
                    mark: &mark,
                    claims: &claims,
                };
                let r = reader.read(&messages, consumer, &shutdown, &mut caught_up, &mut applied);
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

/// Bytes of one batch at most, unless one message alone is larger; less when NATS's
/// `max_payload` (1 MB by default) is smaller (see [`batch_limit`]).
const BATCH_BYTES: usize = 256 * 1024;

/// What a batch's headers and framing may take of NATS's `max_payload`, besides its body.
const HEADROOM: usize = 1024;

/// The bytes a batch may hold when the NATS server takes messages of `max_payload` bytes: a
/// batch is never made larger than NATS takes, only a message that is larger alone.
pub(super) fn batch_limit(max_payload: usize) -> usize {
    BATCH_BYTES.min(max_payload.saturating_sub(HEADROOM))
}

/// Routed messages for one stream message: `0xB1`, then each message's record (the store's
/// format) with its length (u32, big-endian) in front. Batching what is queued together costs
/// the stream one write and one acknowledgement per batch instead of per message.
pub(super) struct Batch {
    body: Vec<u8>,
    count: u64,
    /// Messages whose shared copies go out too.
    shared: Vec<Arc<Message>>,
    /// Bytes the body may hold (see [`batch_limit`]).
    limit: usize,
}

impl Batch {
    /// An empty batch of at most `limit` bytes.
    pub(super) fn new(limit: usize) -> Batch {
        Batch {
            body: vec![BATCH_V1],
            count: 0,
            shared: Vec::new(),
            limit,
        }
    }

    /// Adds `msg`, or gives it back when it would take the batch past its limit: it starts
    /// the next batch then. (NATS refuses a batch larger than its `max_payload`, and every
    /// message in it would be lost for the other nodes.) An empty batch takes any message.
    pub(super) fn push(&mut self, msg: Arc<Message>, shares: bool) -> Result<(), Arc<Message>> {
        let record = encode_message_record(&StoredMessage::from_message(&msg));
        if self.count > 0 && self.body.len() + 4 + record.len() > self.limit {
            return Err(msg);
        }
        let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
        self.body.extend_from_slice(&len.to_be_bytes());
        self.body.extend_from_slice(&record);
        self.count += 1;
        if shares {
            self.shared.push(msg);
        }
        Ok(())
    }

    pub(super) fn is_full(&self) -> bool {
        self.count as usize >= BATCH_MESSAGES || self.body.len() >= self.limit
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

/// What reading the stream needs besides the stream: the broker, the counters, and the name
/// of the store mark it keeps.
struct Reader<'a> {
    state: &'a Arc<BrokerState>,
    metrics: &'a Arc<ClusterMetrics>,
    mark: &'a str,
    claims: &'a Claims,
}

impl Reader<'_> {
    /// Routes what the consumer brings until it ends, NATS goes or the broker stops; `applied`
    /// follows what has been routed.
    async fn read(
        &self,
        messages: &Messages,
        mut consumer: consumer::Consumer<consumer::pull::Config>,
        shutdown: &CancellationToken,
        caught_up: &mut Option<oneshot::Sender<()>>,
        applied: &mut Applied,
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
        let mut origins = HashMap::new();
        let mut claims = ClaimReader {
            state: self.state,
            claims: self.claims,
            // Claims read before catching up after a start are weighed together at the end.
            deferred: caught_up.is_some().then(HashMap::new),
        };
        let mut backlog = waiting;
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
            let info = m.info().ok().map(|i| (i.pending, i.stream_sequence));
            // The last one waiting: caught up once it is routed.
            let last = info.is_some_and(|(pending, _)| pending == 0);
            let is_own = m.subject.as_str() == own;
            let receipts = if m.payload.first() == Some(&CLAIMS_V1) {
                let seq = info.map_or(0, |(_, seq)| seq);
                // Read again (after a lost NATS connection): applied already, and a claim
                // taken again after a later one of ours would end a session it must not.
                if seq == 0 || !applied.covers(seq, 0) {
                    let origin = origin_of(&mut origins, &m.subject);
                    claims.read(&m.payload, &origin, is_own);
                    if seq != 0 {
                        (applied.seq, applied.index) = (seq, 0);
                    }
                }
                Vec::new()
            } else if is_own {
                Vec::new()
            } else {
                let origin = origin_of(&mut origins, &m.subject);
                let seq = info.map_or(0, |(_, seq)| seq);
                self.route_batch(&m.payload, &origin, seq, applied).await
            };
            if last {
                tell(caught_up);
            }
            // The claims made while this node was away are weighed once it has read what
            // waited for it at the start (not "caught up": under load that may never come).
            backlog = backlog.saturating_sub(1);
            if last || backlog == 0 {
                claims.caught_up();
            }
            if tx.send((receipts, m)).await.is_err() {
                break Err("the acknowledgement task ended".into());
            }
        };
        drop(tx);
        let _ = acks.await;
        result
    }

    /// Routes the messages of one batch (stream sequence `seq`, 0 if unknown) from the node
    /// `origin`, but those `applied` covers; returns the receipts of their store writes, which
    /// carry the mark.
    async fn route_batch(
        &self,
        body: &[u8],
        origin: &Arc<String>,
        seq: u64,
        applied: &mut Applied,
    ) -> Vec<Receipt> {
        let mut receipts = Vec::new();
        for (index, record) in records(body).enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            if seq != 0 {
                if applied.covers(seq, index) {
                    self.metrics.redelivered_skipped.inc();
                    continue;
                }
                (applied.seq, applied.index) = (seq, index);
            }
            match record {
                Ok(stored) => {
                    self.metrics.received.inc();
                    let mut msg = stored.to_message();
                    msg.origin = Origin::Peer(origin.clone());
                    let at = *applied;
                    let mark = || Op::PutMark {
                        name: self.mark.to_owned(),
                        value: at.encode(),
                    };
                    let receipt = self.state.publish_from_peer(Arc::new(msg), mark).await;
                    receipts.extend(receipt);
                }
                Err(e) => {
                    self.metrics.dropped.inc();
                    if crate::logging::refusal_allowed() {
                        tracing::warn!(node = %origin, error = %crate::logging::bounded(&e),
                            "cluster: a message from another node did not decode; dropped");
                    }
                }
            }
        }
        receipts
    }
}

/// The node a stream message came from (the last token of its subject), one `Arc` per node
/// name, shared by all of its messages.
fn origin_of(origins: &mut HashMap<String, Arc<String>>, subject: &str) -> Arc<String> {
    let node = subject.rsplit('.').next().unwrap_or_default();
    if let Some(o) = origins.get(node) {
        return o.clone();
    }
    let o = Arc::new(node.to_owned());
    origins.insert(node.to_owned(), o.clone());
    o
}

/// The store mark that records where this node is in the messages stream `stream`.
fn mark_name(stream: &str) -> String {
    format!("cluster/{stream}")
}

/// The last record of the messages stream applied here: record `index` of the batch at stream
/// sequence `seq`, in the stream created at `created` (Unix nanoseconds; a stream made again
/// numbers from 1 again). Kept in memory as records are routed, and in the store beside the
/// queue entries they made.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Applied {
    created: i128,
    seq: u64,
    index: u32,
}

impl Applied {
    /// The first byte of an encoded mark.
    const V1: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(29);
        out.push(Self::V1);
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out
    }

    /// None for anything but a mark [`Self::encode`] wrote.
    fn decode(bytes: &[u8]) -> Option<Applied> {
        let (&version, rest) = bytes.split_first()?;
        if version != Self::V1 || rest.len() != 28 {
            return None;
        }
        let (created, rest) = rest.split_at(16);
        let (seq, index) = rest.split_at(8);
        Some(Applied {
            created: i128::from_be_bytes(created.try_into().ok()?),
            seq: u64::from_be_bytes(seq.try_into().ok()?),
            index: u32::from_be_bytes(index.try_into().ok()?),
        })
    }

    /// Whether record `index` of the batch at `seq` was applied already.
    fn covers(&self, seq: u64, index: u32) -> bool {
        (seq, index) <= (self.seq, self.index) && self.seq != 0
    }
}

fn tell(caught_up: &mut Option<oneshot::Sender<()>>) {
    if let Some(tx) = caught_up.take() {
        let _ = tx.send(());
    }
}

/// Acknowledges routed messages to the stream, in order, once their store writes are done. A
/// write that failed is not acknowledged (the store fails every later write too, so the node
/// is not in a state to take them).
async fn acknowledge(mut rx: mpsc::Receiver<Routed>) {
    'next: while let Some((receipts, m)) = rx.recv().await {
        for r in receipts {
            if let Err(e) = r.await {
                tracing::warn!(error = %e,
                    "cluster: a message from another node was not stored for the persistent \
                     sessions here (they hold it in memory only); not acknowledged to the stream");
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
    fn marks_round_trip_and_cover_what_was_applied() {
        let at = Applied {
            created: -5,
            seq: 7,
            index: 3,
        };
        let bytes = at.encode();
        assert_eq!(Applied::decode(&bytes), Some(at));
        assert_eq!(Applied::decode(&bytes[..28]), None);
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(Applied::decode(&other), None);
        assert!(at.covers(6, 400));
        assert!(at.covers(7, 3));
        assert!(!at.covers(7, 4));
        assert!(!at.covers(8, 0));
        // Nothing applied covers nothing.
        assert!(!Applied::default().covers(1, 0));
        assert_eq!(mark_name("p_messages"), "cluster/p_messages");
    }

    #[test]
    fn batches_stay_within_their_limit_unless_one_message_is_larger() {
        let message = |size: usize| {
            Arc::new(Message::new(
                "t",
                Bytes::from(vec![7; size]),
                QoS::AtLeastOnce,
                false,
            ))
        };
        let limit = batch_limit(4096);
        assert_eq!(limit, 4096 - HEADROOM);
        assert_eq!(batch_limit(100 << 20), BATCH_BYTES);
        let mut batch = Batch::new(limit);
        let mut taken = 0;
        while batch.push(message(500), false).is_ok() {
            taken += 1;
        }
        assert!(taken >= 2, "{taken}");
        let (count, body, _) = batch.finish();
        assert_eq!(count, taken);
        assert!(body.len() <= limit, "{} > {limit}", body.len());
        // A message larger than the limit goes alone.
        let mut alone = Batch::new(limit);
        assert!(alone.push(message(limit * 2), false).is_ok());
        assert!(alone.is_full());
        assert!(alone.push(message(1), false).is_err());
    }

    #[test]
    fn batches_round_trip_and_garbage_is_an_error() {
        let mut batch = Batch::new(BATCH_BYTES);
        for i in 0..3u8 {
            let m = Message::new(
                &format!("t/{i}"),
                Bytes::from(vec![i; 3]),
                QoS::AtLeastOnce,
                i == 1,
            );
            batch.push(Arc::new(m), i == 2).expect("room");
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

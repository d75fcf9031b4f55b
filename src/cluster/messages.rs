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

    /// Publishes a routed message for the other nodes; the stream's acknowledgement is
    /// awaited by the caller's acknowledgement task.
    pub(super) async fn publish(&self, msg: &Message) -> Result<PublishAckFuture, String> {
        let body = Bytes::from(encode_message_record(&StoredMessage::from_message(msg)));
        self.js
            .publish(format!("{}.{}", self.subjects, self.node), body)
            .await
            .map_err(|e| e.to_string())
    }

    async fn consumer(&self) -> Result<consumer::Consumer<consumer::pull::Config>, String> {
        let stream = self.ensure().await?;
        let name = format!("{}_node_{}", self.stream, self.node);
        stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("{}.*", self.subjects),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: i64::try_from(ACK_WINDOW * 4).unwrap_or(i64::MAX),
                    // A new node starts from now; a known one resumes where it was.
                    deliver_policy: consumer::DeliverPolicy::New,
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

/// One message routed here and waiting for its store writes before it is acknowledged.
type Routed = (Option<Receipt>, jetstream::Message);

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
            let _ = tx.send((None, m)).await;
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
        let receipt = match decode_message_record(&m.payload) {
            Ok(stored) => {
                metrics.received.inc();
                let mut msg = stored.to_message();
                msg.origin = Origin::Peer(origin);
                state.publish_from_peer(Arc::new(msg)).await
            }
            Err(e) => {
                metrics.dropped.inc();
                if crate::logging::refusal_allowed() {
                    tracing::warn!(node, error = %crate::logging::bounded(&e),
                        "cluster: a message from another node did not decode; dropped");
                }
                None
            }
        };
        if last {
            tell(caught_up);
        }
        if tx.send((receipt, m)).await.is_err() {
            break Err("the acknowledgement task ended".into());
        }
    };
    drop(tx);
    let _ = acks.await;
    result
}

fn tell(caught_up: &mut Option<oneshot::Sender<()>>) {
    if let Some(tx) = caught_up.take() {
        let _ = tx.send(());
    }
}

/// Acknowledges routed messages to the stream, in order, once their store writes are done. A
/// write that failed is not acknowledged: the stream sends the message again.
async fn acknowledge(mut rx: mpsc::Receiver<Routed>) {
    while let Some((receipt, m)) = rx.recv().await {
        if let Some(r) = receipt {
            if let Err(e) = r.await {
                tracing::warn!(error = %e,
                    "cluster: a message from another node was not stored; NATS sends it again");
                continue;
            }
        }
        if let Err(e) = m.ack().await {
            tracing::debug!(error = %e, "cluster: acknowledgement to the stream failed");
        }
    }
}

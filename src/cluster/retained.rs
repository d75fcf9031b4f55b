//! The cluster's retained messages: a JetStream stream, `<prefix>_retained`, holding the last
//! message of each retained topic (subject `<prefix>.ret.<sha256 of topic>`, at most one
//! message per subject; a deletion is kept as an empty payload so that a node that was away
//! learns of it).
//!
//! Live updates reach the other nodes as routed messages with RETAIN; the stream is for the
//! node that was not there: it reads the last message of every subject at start, and after a
//! reconnection every change from the sequence it had reached on, applying for each topic the
//! last change unless that one was its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishAckFuture, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::broker::BrokerState;
use crate::config::ClusterConfig;
use crate::message::{Message, Origin};
use crate::storage::{decode_message_record, encode_message_record, StoredMessage};

/// The header naming the node that wrote a stream entry.
const NODE_HEADER: &str = "Starling-Node";

/// How long one read from the stream may take before the catch-up gives up (and tries again
/// at the next reconnection).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads and writes the retained stream; cheap to clone.
#[derive(Clone)]
pub(super) struct Sync {
    js: jetstream::Context,
    stream: String,
    /// `<prefix>.ret`
    subjects: String,
    node: Arc<String>,
    replicas: usize,
    /// The last stream sequence this node has read (0: none yet).
    applied: Arc<AtomicU64>,
}

impl Sync {
    /// The stream of the cluster `config` describes, for `node`.
    pub(super) fn new(client: &async_nats::Client, config: &ClusterConfig, node: &str) -> Sync {
        Sync {
            js: jetstream::new(client.clone()),
            stream: format!("{}_retained", config.prefix),
            subjects: format!("{}.ret", config.prefix),
            node: Arc::new(node.to_owned()),
            replicas: config.replicas,
            applied: Arc::new(AtomicU64::new(0)),
        }
    }

    async fn ensure(&self) -> Result<stream::Stream, String> {
        self.js
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![format!("{}.>", self.subjects)],
                max_messages_per_subject: 1,
                num_replicas: self.replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("stream {}: {e}", self.stream))
    }

    /// The subject and the body of a retained update (a deletion: empty payload) in the stream.
    pub(super) fn update(&self, msg: &Message) -> (String, Bytes) {
        let subject = format!("{}.{}", self.subjects, topic_key(&msg.topic));
        let body = Bytes::from(encode_message_record(&StoredMessage::from_message(msg)));
        (subject, body)
    }

    /// Writes a retained update to the stream under the message id `id`; the acknowledgement
    /// is awaited by the caller.
    pub(super) async fn publish(
        &self,
        subject: &str,
        body: Bytes,
        id: &str,
    ) -> Result<PublishAckFuture, String> {
        let message = jetstream::message::PublishMessage::build()
            .payload(body)
            .message_id(id)
            .header(NODE_HEADER, self.node.as_str());
        self.js
            .send_publish(subject.to_owned(), message)
            .await
            .map_err(|e| e.to_string())
    }

    /// The message id of the update the stream holds last for `subject`, if it can tell.
    pub(super) async fn last_id(&self, subject: &str) -> Option<String> {
        let stream = self.js.get_stream(&self.stream).await.ok()?;
        let last = stream.get_last_raw_message_by_subject(subject).await.ok()?;
        let id = last.headers.get(async_nats::header::NATS_MESSAGE_ID)?;
        Some(id.as_str().to_owned())
    }

    /// Reads what the stream holds that this node has not read, and applies it. Logs, and
    /// leaves it for the next reconnection, when NATS fails it.
    pub(super) async fn catch_up(&self, state: &BrokerState) {
        match self.try_catch_up(state).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    retained = n,
                    "cluster: retained messages read from the stream"
                )
            }
            Err(e) => tracing::warn!(error = %e,
                "cluster: could not read the retained stream; trying again at the next \
                 reconnection"),
        }
    }

    async fn try_catch_up(&self, state: &BrokerState) -> Result<u64, String> {
        let mut stream = self.ensure().await?;
        let last = stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .last_sequence;
        let from = self.applied.load(Ordering::Relaxed);
        if last == 0 || last <= from {
            return Ok(0);
        }
        // The first time, the last message of each subject; then every change since.
        let deliver_policy = if from == 0 {
            consumer::DeliverPolicy::LastPerSubject
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from + 1,
            }
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy,
                filter_subject: format!("{}.>", self.subjects),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let (latest, reached) = read_changes(consumer, from, last).await?;
        let mut applied = 0;
        for (node, body) in latest.into_values() {
            // After a reconnection, this node's own last change is what it holds already.
            if from != 0 && *node == *self.node {
                continue;
            }
            if self.apply(state, node, &body) {
                applied += 1;
            }
        }
        self.applied.store(reached, Ordering::Relaxed);
        state.metrics().cluster.retained_loaded.add(applied);
        Ok(applied)
    }

    /// Stores one stream entry in the broker's retained store; false if it did not decode.
    fn apply(&self, state: &BrokerState, node: Arc<String>, body: &[u8]) -> bool {
        match decode_message_record(body) {
            Ok(stored) => {
                let mut msg = stored.to_message();
                msg.retain = true;
                // From a peer, so it is not written back to the cluster.
                msg.origin = Origin::Peer(node);
                state.apply_peer_retained(Arc::new(msg));
                true
            }
            Err(e) => {
                state.metrics().cluster.dropped.inc();
                tracing::warn!(error = %crate::logging::bounded(&e),
                    "cluster: a retained stream entry did not decode; skipped");
                false
            }
        }
    }
}

/// Reads a consumer until the stream's sequence `last`: for each subject, its last entry's
/// node and body; and the highest sequence read (`from` if none).
async fn read_changes(
    consumer: consumer::Consumer<consumer::pull::OrderedConfig>,
    from: u64,
    last: u64,
) -> Result<(HashMap<String, (Arc<String>, Bytes)>, u64), String> {
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut latest: HashMap<String, (Arc<String>, Bytes)> = HashMap::new();
    let mut reached = from;
    loop {
        let next = tokio::time::timeout(READ_TIMEOUT, messages.next())
            .await
            .map_err(|_| "the stream stopped sending".to_string())?;
        let Some(m) = next else { break };
        let m = m.map_err(|e| e.to_string())?;
        let (seq, pending) = {
            let info = m.info().map_err(|e| e.to_string())?;
            (info.stream_sequence, info.pending)
        };
        let node = m
            .headers
            .as_ref()
            .and_then(|h| h.get(NODE_HEADER))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        latest.insert(m.subject.to_string(), (Arc::new(node), m.payload.clone()));
        reached = reached.max(seq);
        if pending == 0 || seq >= last {
            break;
        }
    }
    Ok((latest, reached))
}

/// The subject token of a topic: the hex SHA-256 of it, since a topic may hold characters a
/// NATS subject cannot (`.`, `*`, `>`, spaces) and be longer than a subject should be.
fn topic_key(topic: &str) -> String {
    Sha256::digest(topic.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::topic_key;

    #[test]
    fn topic_keys_are_subject_tokens() {
        for topic in ["a/b", "a.b", "*", ">", "with space", ""] {
            let k = topic_key(topic);
            assert_eq!(k.len(), 64);
            assert!(k.bytes().all(|b| b.is_ascii_hexdigit()), "{topic}");
        }
        assert_ne!(topic_key("a/b"), topic_key("a.b"));
    }
}

//! Retained messages as the broker uses them: updated by a PUBLISH with RETAIN within the
//! `[retained]` bounds, restored from the store, and read a batch at a time for a new
//! subscription's stream.

use std::sync::Arc;

use crate::message::{Message, RetainedMessage};
use crate::session::StreamRequest;
use crate::storage::Op;

use crate::router::retained::{RetainedStore, RetainedValue};

use super::{cluster, BrokerState};

/// The retained store and the bytes it holds (payload and topic of each message), checked
/// against `[retained] max_bytes`. Guarded by the broker's retained lock.
#[derive(Default)]
pub(super) struct Retained {
    store: RetainedStore<Arc<RetainedMessage>>,
    bytes: u64,
}

impl RetainedValue for Arc<RetainedMessage> {
    fn topic(&self) -> &Arc<str> {
        &self.topic
    }
}

/// What a retained message counts for `[retained] max_bytes`.
fn weight(topic: &str, payload: &[u8]) -> u64 {
    (payload.len() + topic.len()) as u64
}

impl Retained {
    /// Stores `kept`, the only reference to a new record.
    fn insert(&mut self, mut kept: Arc<RetainedMessage>) {
        // A replacement takes the topic string of the record it replaces, which the trie's keys
        // usually hold already: one copy of the topic stays in memory, not two.
        if let (Some(old), Some(new)) = (self.store.get(&kept.topic), Arc::get_mut(&mut kept)) {
            new.topic = old.topic.clone();
        }
        self.bytes += weight(&kept.topic, &kept.payload);
        if let Some(old) = self.store.insert(kept) {
            self.bytes -= weight(&old.topic, &old.payload);
        }
    }

    fn remove(&mut self, topic: &str) {
        if let Some(old) = self.store.remove(topic) {
            self.bytes -= weight(&old.topic, &old.payload);
        }
    }

    /// Whether one more topic of `weight` bytes would pass a bound (0 = no bound).
    fn full(&self, max_messages: u64, max_bytes: u64, weight: u64) -> bool {
        (max_messages > 0 && self.store.len() as u64 >= max_messages)
            || (max_bytes > 0 && self.bytes + weight > max_bytes)
    }
}

impl BrokerState {
    /// Adds a retained message restored from the store (at start, before serving). Every one
    /// is kept, even over the `[retained]` bounds: see [`Self::warn_if_retained_over_bounds`].
    pub fn restore_retained(&self, msg: Arc<Message>) {
        let kept = Arc::new(RetainedMessage::new(&msg));
        self.retained.write().insert(kept);
    }

    /// After a restore: says so when the store holds more than `[retained]` allows. Nothing is
    /// dropped; new topics are refused until deletions bring it back under the bounds.
    pub fn warn_if_retained_over_bounds(&self) {
        let cfg = &self.config.retained;
        let (count, bytes) = (self.retained_count() as u64, self.retained_bytes());
        if (cfg.max_messages > 0 && count > cfg.max_messages)
            || (cfg.max_bytes > 0 && bytes > cfg.max_bytes)
        {
            tracing::warn!(
                count,
                bytes,
                max_messages = cfg.max_messages,
                max_bytes = cfg.max_bytes,
                "restored retained messages exceed [retained] bounds: all kept; new retained \
                 topics are not stored until the store is back under them"
            );
        }
    }

    /// Topics with a retained message.
    pub fn retained_count(&self) -> usize {
        self.retained.read().store.len()
    }

    /// Bytes the retained messages hold, as `[retained] max_bytes` counts them.
    pub fn retained_bytes(&self) -> u64 {
        self.retained.read().bytes
    }

    /// Reads the next batch of retained messages a subscription's stream asks for
    /// [MQTT-3.3.1-6] (see [`crate::session::stream`]). Only the store's read lock is taken,
    /// to clone the records; the messages delivered are built from them after it is released.
    pub fn retained_batch(&self, req: &StreamRequest) -> Vec<(Arc<str>, Arc<Message>)> {
        let mut kept = Vec::with_capacity(req.max);
        self.retained.read().store.matches_after(
            &req.filter,
            req.after.as_deref(),
            req.max,
            &mut kept,
        );
        kept.into_iter()
            .map(|r| (r.topic.clone(), Arc::new(r.to_message())))
            .collect()
    }

    /// Stores or deletes a retained message; the store write is added to `ops`. A new topic
    /// past the `[retained]` bounds is not stored (the message is still routed as usual).
    pub(super) fn update_retained(&self, msg: &Arc<Message>, ops: &mut Vec<Op>) {
        if !self.store_retained(msg) {
            self.metrics.retained_refused.inc();
            if crate::logging::refusal_allowed() {
                tracing::warn!(topic = %crate::logging::bounded(&msg.topic),
                    client_id = %crate::logging::bounded(msg.publisher.as_deref().unwrap_or("")),
                    "retained message not stored: [retained] max_messages or max_bytes reached");
            }
            return;
        }
        if cluster::forwards(msg) {
            self.cluster.retained_changed(msg);
        }
        // $SYS is republished by the broker after a restart; it is not stored.
        if let (Some(p), false) = (&self.persistence, msg.topic.starts_with("$SYS")) {
            ops.push(if msg.payload.is_empty() {
                Op::DeleteRetained {
                    topic: msg.topic.to_string(),
                }
            } else {
                Op::PutRetained(p.stored_copy(msg))
            });
        }
    }

    /// Applies a retained PUBLISH to the store. False when it would add a topic past the
    /// bounds; replacing or deleting is always accepted, and `$SYS` (the broker's own, a
    /// fixed set) is not bounded.
    fn store_retained(&self, msg: &Arc<Message>) -> bool {
        let cfg = &self.config.retained;
        // Built (its payload copied, see `RetainedMessage::new`) before taking the lock.
        let kept = (!msg.payload.is_empty()).then(|| Arc::new(RetainedMessage::new(msg)));
        let mut retained = self.retained.write();
        let Some(kept) = kept else {
            retained.remove(&msg.topic);
            return true;
        };
        let new_topic = retained.store.get(&msg.topic).is_none();
        if new_topic
            && !msg.topic.starts_with("$SYS")
            && retained.full(
                cfg.max_messages,
                cfg.max_bytes,
                weight(&msg.topic, &msg.payload),
            )
        {
            return false;
        }
        retained.insert(kept);
        true
    }
}

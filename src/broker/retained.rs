//! Retained messages as the broker uses them: updated by a PUBLISH with RETAIN, restored from
//! the store, and read a batch at a time for a new subscription's stream.

use std::sync::Arc;

use crate::message::Message;
use crate::session::StreamRequest;
use crate::storage::Op;

use super::{cluster, BrokerState};

impl BrokerState {
    /// Adds a retained message restored from the store (at start, before serving).
    pub fn restore_retained(&self, msg: Arc<Message>) {
        let topic = msg.topic.clone();
        self.retained.write().insert(&topic, msg);
    }

    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Reads the next batch of retained messages a subscription's stream asks for
    /// [MQTT-3.3.1-6] (see [`crate::session::stream`]). Only the store's read lock is taken.
    pub fn retained_batch(&self, req: &StreamRequest) -> Vec<(Arc<str>, Arc<Message>)> {
        let mut out = Vec::with_capacity(req.max);
        self.retained
            .read()
            .matches_after(&req.filter, req.after.as_deref(), req.max, &mut out);
        out
    }

    /// Stores or deletes a retained message; the store write is added to `ops`.
    pub(super) fn update_retained(&self, msg: &Arc<Message>, ops: &mut Vec<Op>) {
        {
            let mut retained = self.retained.write();
            if msg.payload.is_empty() {
                retained.remove(&msg.topic);
            } else {
                retained.insert(&msg.topic, msg.clone());
            }
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
                Op::PutRetained(p.stored(msg).1.as_ref().clone())
            });
        }
    }
}

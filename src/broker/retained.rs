//! Retained messages as the broker uses them: updated by a PUBLISH with RETAIN, restored from
//! the store, and queued for a new subscription.

use std::sync::Arc;
use std::time::Instant;

use crate::codec::SubscriptionOptions;
use crate::message::Message;
use crate::session::{Delivery, Session};
use crate::storage::Op;

use super::{cluster, BrokerState, Routed};

impl BrokerState {
    /// Adds a retained message restored from the store (at start, before serving).
    pub fn restore_retained(&self, msg: Arc<Message>) {
        let topic = msg.topic.clone();
        self.retained.write().insert(&topic, msg);
    }

    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Queues the retained messages matching `filter` for `session` [MQTT-3.3.1-6].
    pub fn deliver_retained(
        &self,
        session: &Arc<Session>,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) {
        let mut found = Vec::new();
        self.retained.read().matches(filter, &mut found);
        let now = Instant::now();
        let auth = self.auth.read().clone();
        let epoch = session.with_state(|s| s.epoch());
        let mut ops = Vec::new();
        for (_, msg) in found {
            if msg.is_expired(now) {
                continue;
            }
            if auth.acl.is_some() && !self.may_read(&auth, session, &msg.topic) {
                continue;
            }
            let d = Delivery {
                qos: msg.qos.min(options.qos),
                // Retained messages sent because of a new subscription carry RETAIN=1.
                retain: true,
                subscription_ids: id.into_iter().collect(),
                shared: None,
                seq: None,
                msg,
            };
            let routed = Routed {
                session: session.clone(),
                epoch,
                delivery: d,
            };
            self.deliver(routed, &mut ops);
        }
        self.submit(ops);
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

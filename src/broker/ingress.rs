//! Messages that enter routing from outside a client connection (a bridge, a cluster peer, an
//! admin API publish), with a way to learn when the broker has taken responsibility for them:
//! the moment a client's PUBLISH would get its PUBACK or PUBREC.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::message::Message;

use super::{BrokerState, STUCK_AFTER};

/// How often deliveries blocked on a full queue are retried when the subscriber does not
/// signal room (it may have gone away).
const BLOCKED_POLL: Duration = Duration::from_millis(20);

/// Why a message fed in from outside was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The store refused or lost the write that acknowledging needs.
    #[error("store write failed: {0}")]
    Store(String),
}

impl BrokerState {
    /// Routes `msg` like a client's PUBLISH and resolves once it is acknowledged everywhere:
    /// stored where the store must hold it (queues of persistent sessions, the retained
    /// store) and queued for every matching subscriber. A subscriber whose queue stays full
    /// for [`STUCK_AFTER`] is marked stuck and its copy dropped (counted), as for clients, so
    /// one stalled subscriber cannot hold the sender back for longer. Set `msg.origin` so the
    /// message is not sent back where it came from. (For messages nobody acknowledges, see
    /// [`BrokerState::publish_unacknowledged`].)
    pub async fn publish_acknowledged(&self, msg: Arc<Message>) -> Result<(), IngressError> {
        let ops = self.publish_waiting(msg).await;
        match (&self.persistence, ops.is_empty()) {
            (Some(p), false) => p
                .receipt(ops)
                .await
                .map_err(|e| IngressError::Store(e.to_string())),
            _ => Ok(()),
        }
    }

    /// Routes a message from a cluster peer: like [`Self::publish_acknowledged`], it waits
    /// (at most [`STUCK_AFTER`]) for full queues, so the peer's messages keep their order and
    /// a slow subscriber here slows the link as it would slow a local publisher; but nobody
    /// waits for the store, so the writes are submitted and not waited for.
    pub async fn publish_from_peer(&self, msg: Arc<Message>) {
        let ops = self.publish_waiting(msg).await;
        self.submit(ops);
    }

    /// Stores or deletes (empty payload) a retained message read from the cluster's retained
    /// stream, without routing it: its subscribers had it when it was published.
    pub fn apply_peer_retained(&self, msg: Arc<Message>) {
        let mut ops = Vec::new();
        self.update_retained(&msg, &mut ops);
        self.submit(ops);
    }

    /// Routes `msg` and waits until its deliveries are queued (or their subscribers marked
    /// stuck); returns the store writes.
    async fn publish_waiting(&self, msg: Arc<Message>) -> Vec<crate::storage::Op> {
        let publication = self.publish(msg);
        let mut ops = publication.ops;
        let mut blocked = publication.blocked;
        let since = Instant::now();
        while let Some(first) = blocked.first().map(|r| r.session.clone()) {
            let _ = tokio::time::timeout(BLOCKED_POLL, first.room_made()).await;
            blocked = self.retry_blocked(blocked, &mut ops);
            if !blocked.is_empty() && since.elapsed() >= STUCK_AFTER {
                self.abandon_blocked(std::mem::take(&mut blocked));
            }
        }
        ops
    }
}

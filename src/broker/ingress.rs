//! Messages that enter routing from outside a client connection (a bridge, a cluster peer, an
//! admin API publish), with a way to learn when the broker has taken responsibility for them:
//! the moment a client's PUBLISH would get its PUBACK or PUBREC.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::message::Message;
use crate::persistence::Receipt;
use crate::router::trie::Subscription;
use crate::session::Delivery;
use crate::storage::Op;

use super::{BrokerState, Routed, SubHandle, STUCK_AFTER};

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
        let (ops, cluster) = self.publish_waiting(msg).await;
        if let (Some(p), false) = (&self.persistence, ops.is_empty()) {
            p.receipt(ops)
                .await
                .map_err(|e| IngressError::Store(e.to_string()))?;
        }
        // The other nodes of a cluster have it too.
        if let Some(cluster) = cluster {
            cluster
                .await
                .map_err(|e| IngressError::Store(e.to_string()))?;
        }
        Ok(())
    }

    /// Routes a message from a cluster peer: like [`Self::publish_acknowledged`], it waits
    /// (at most [`STUCK_AFTER`]) for full queues, so the peer's messages keep their order and
    /// a slow subscriber here slows the link as it would slow a local publisher. Returns the
    /// receipt of its store writes, if it made any, for the caller to acknowledge the message
    /// to the cluster once it is done; the caller goes on routing meanwhile. `mark`, asked
    /// only when there are writes, is written with them, atomically: the caller's record that
    /// this message was applied, so that a restart after a crash does not apply it twice.
    pub async fn publish_from_peer(
        &self,
        msg: Arc<Message>,
        mark: impl FnOnce() -> Op,
    ) -> Option<Receipt> {
        // A peer's message is not forwarded again, so there is no cluster receipt.
        let (mut ops, _) = self.publish_waiting(msg).await;
        match (&self.persistence, ops.is_empty()) {
            (Some(p), false) => {
                ops.push(mark());
                Some(p.receipt(ops))
            }
            _ => None,
        }
    }

    /// Stores or deletes (empty payload) a retained message read from the cluster's retained
    /// stream, without routing it: its subscribers had it when it was published.
    pub fn apply_peer_retained(&self, msg: Arc<Message>) {
        let mut ops = Vec::new();
        self.update_retained(&msg, &mut ops);
        self.submit(ops);
    }

    /// Delivers a message the cluster handed to this node's shared group `share_filter`
    /// (`$share/<group>/<filter>`): to one member, chosen as routing chooses (a connected one
    /// first), checked against the ACL, waiting on a full queue as
    /// [`Self::publish_from_peer`] does. The retained store is not touched: the message's
    /// ordinary copy did that. False when the group has no member here any more.
    pub async fn publish_to_shared(&self, msg: Arc<Message>, share_filter: &str) -> bool {
        let Some(routed) = self.pick_shared_member(&msg, share_filter) else {
            return false;
        };
        if let Some(auth) = self.routing_auth() {
            if !self.may_read(&auth, auth.uniform(), &routed.session, &msg.topic) {
                return true;
            }
        }
        let (mut ops, mut blocked, mut pace) = (Vec::new(), Vec::new(), None);
        let cost = self.deliver_or_block(routed, &mut blocked, &mut ops, &mut pace);
        self.budget.add(cost);
        self.wait_blocked(blocked, &mut ops).await;
        self.submit(ops);
        true
    }

    /// The delivery of `msg` to the member of `share_filter`'s group that routing would pick.
    fn pick_shared_member(&self, msg: &Arc<Message>, share_filter: &str) -> Option<Routed> {
        let trie = self.subscriptions.read();
        let ready = |s: &Subscription<SubHandle>| {
            s.handle.session.is_connected() && !s.handle.session.is_stuck()
        };
        let sub = trie
            .pick_shared(share_filter, ready)
            .or_else(|| trie.pick_shared(share_filter, |_| true))?;
        Some(Routed {
            session: sub.handle.session.clone(),
            epoch: sub.handle.epoch,
            delivery: Delivery {
                msg: msg.clone(),
                qos: msg.qos.min(sub.options.qos),
                retain: sub.options.retain_as_published && msg.retain,
                subscription_ids: sub.id.into_iter().collect(),
                shared: sub.handle.share.clone(),
                stored: None,
            },
        })
    }

    /// Routes `msg` and waits until its deliveries are queued (or their subscribers marked
    /// stuck); returns the store writes and the cluster's receipt.
    async fn publish_waiting(&self, msg: Arc<Message>) -> (Vec<Op>, Option<Receipt>) {
        let publication = self.publish(msg);
        let mut ops = publication.ops;
        self.wait_blocked(publication.blocked, &mut ops).await;
        (ops, publication.cluster_receipt)
    }

    /// Retries blocked deliveries until they are queued or, after [`STUCK_AFTER`], their
    /// subscribers are marked stuck and the copies dropped.
    async fn wait_blocked(&self, mut blocked: Vec<Routed>, ops: &mut Vec<Op>) {
        let since = Instant::now();
        while let Some(first) = blocked.first().map(|r| r.session.clone()) {
            let _ = tokio::time::timeout(BLOCKED_POLL, first.room_made()).await;
            blocked = self.retry_blocked(blocked, ops);
            if !blocked.is_empty() && since.elapsed() >= STUCK_AFTER {
                self.abandon_blocked(std::mem::take(&mut blocked));
            }
        }
    }
}

//! The seam a cluster plugs into: where routing, session claims and retained updates would
//! reach other nodes. A single node runs [`LocalCluster`], which does nothing.
//!
//! Every hook is called after the local work is done and with no broker lock held, so an
//! implementation may take its own locks or hand work to a task; it must not block (queue the
//! work and return).

use std::sync::Arc;

use crate::message::{Message, Origin};
use crate::persistence::Receipt;

/// What the broker tells the other nodes of a cluster.
pub trait Cluster: Send + Sync + 'static {
    /// A message was routed on this node. Called only for messages whose
    /// [`Origin`] is not a cluster peer, so a message never travels back to the node it came
    /// from. `shares`: routing left the shared groups to the cluster (it asked
    /// [`Cluster::shares_via_cluster`] and got true), which must hand the message to them.
    ///
    /// Returns, for a QoS 1 or 2 message while the other nodes can be reached, a receipt that
    /// resolves once they are sure to get it: its publisher's acknowledgement waits for it, so
    /// that losing this node right after the PUBACK loses nothing for the others.
    fn routed(&self, msg: &Arc<Message>, shares: bool) -> Option<Receipt>;

    /// A CONNECT claimed `client_id` on this node: a peer holding a session for that client id
    /// must close its connection (takeover across nodes) [MQTT-3.1.4-2].
    ///
    /// Returns, while the other nodes can be reached, a receipt that resolves once they are
    /// sure to see the claim in its place: CONNACK waits for it, so that a client that
    /// connects elsewhere after its CONNACK here is ordered after this claim.
    fn session_claimed(&self, client_id: &str) -> Option<Receipt>;

    /// The retained message on `msg.topic` was replaced, or deleted (empty payload), by a
    /// message that did not come from a peer.
    fn retained_changed(&self, msg: &Arc<Message>);

    /// Whether other nodes may have subscribers for what this node routes. Without peers, a
    /// message no local subscription matched reached nobody, which MQTT 5 lets the
    /// acknowledgement say (0x10 No matching subscribers).
    fn has_peers(&self) -> bool {
        true
    }

    /// Whether shared subscriptions are served through the cluster right now: the cluster
    /// hands each message to one member node of each group (this one included), which calls
    /// [`BrokerState::publish_to_shared`](super::BrokerState::publish_to_shared). Asked with no
    /// lock held, once for every message [`forwards`] lets out; the answer goes to
    /// [`Cluster::routed`].
    fn shares_via_cluster(&self) -> bool {
        false
    }

    /// Whether the cluster serves this node's shared group `share_filter`
    /// (`$share/<group>/<filter>`) while [`Cluster::shares_via_cluster`]: then routing leaves
    /// it out. A group the cluster does not serve yet (its first member here just subscribed)
    /// is served by routing, as on a single node.
    fn serves_share(&self, _share_filter: &str) -> bool {
        false
    }

    /// Whether what [`Cluster::routed`] queues for the other nodes piles up (NATS slower than
    /// the publishers here): the publisher of the message just routed is then paced, so that
    /// the queue need not drop what was acknowledged. Asked after `routed`, no lock held.
    fn congested(&self) -> bool {
        false
    }

    /// A `$share/...` subscription was added or removed here: the set of shared groups with
    /// members here may have changed (see `SubscriptionTrie::shared_groups`).
    fn shares_changed(&self) {}

    /// For a bridge run on every node (`cluster = "each_node"`): follows whether this node
    /// brings the remote broker's messages in (holds the bridge's lease). None: it always
    /// does (a bridge run on one node, or no cluster).
    fn bridge_inbound(&self, _bridge: &str) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
}

/// A broker with no peers.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalCluster;

impl Cluster for LocalCluster {
    fn routed(&self, _msg: &Arc<Message>, _shares: bool) -> Option<Receipt> {
        None
    }
    fn session_claimed(&self, _client_id: &str) -> Option<Receipt> {
        None
    }
    fn retained_changed(&self, _msg: &Arc<Message>) {}
    fn has_peers(&self) -> bool {
        false
    }
}

/// Whether a message goes out to the cluster: anything that did not come from a peer, except
/// `$SYS`, which every node publishes for itself.
pub(super) fn forwards(msg: &Message) -> bool {
    !matches!(msg.origin, Origin::Peer(_)) && !msg.topic.starts_with("$SYS")
}

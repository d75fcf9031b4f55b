//! The cluster link's families (`[cluster]`), written only when a cluster is configured.

use super::Exposition;
use crate::broker::BrokerState;
use crate::metrics::ClusterMetrics;

/// A family: its name, type, help, and its value.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ClusterMetrics) -> u64,
);

const FAMILIES: [Family; 10] = [
    (
        "starling_cluster_up",
        "gauge",
        "1 while this node is connected to NATS, else 0.",
        |m| m.up.get(),
    ),
    (
        "starling_cluster_connects_total",
        "counter",
        "Times the NATS connection was made.",
        |m| m.connects.get(),
    ),
    (
        "starling_cluster_messages_sent_total",
        "counter",
        "Messages sent to the other nodes.",
        |m| m.sent.get(),
    ),
    (
        "starling_cluster_messages_received_total",
        "counter",
        "Messages received from the other nodes.",
        |m| m.received.get(),
    ),
    (
        "starling_cluster_messages_redelivered_skipped_total",
        "counter",
        "Messages the stream sent again that this node had already applied (after a crash or \
         a lost NATS connection), skipped rather than delivered twice.",
        |m| m.redelivered_skipped.get(),
    ),
    (
        "starling_cluster_messages_republished_total",
        "counter",
        "Messages published to the other nodes again because NATS did not acknowledge them \
         the first time (a NATS server lost or restarted, a stream leader being elected).",
        |m| m.republished.get(),
    ),
    (
        "starling_cluster_messages_dropped_total",
        "counter",
        "Messages, takeover notices and retained updates for the other nodes that were not \
         sent (the queue to NATS full, NATS refusing them), and received ones that did not \
         decode or arrived faster than this node routed them.",
        |m| m.dropped.get(),
    ),
    (
        "starling_cluster_takeovers_total",
        "counter",
        "Sessions of this node ended because their client connected to another node.",
        |m| m.takeovers.get(),
    ),
    (
        "starling_cluster_retained_loaded_total",
        "counter",
        "Retained messages read from the cluster's stream (at start, after reconnections).",
        |m| m.retained_loaded.get(),
    ),
    (
        "starling_cluster_shared_groups",
        "gauge",
        "Shared subscription groups with members on this node that the cluster serves (their \
         NATS queue subscriptions made).",
        |m| m.shared_groups.get(),
    ),
];

/// Writes the cluster families, when `[cluster]` is configured.
pub(super) fn write(out: &mut Exposition, b: &BrokerState) {
    if b.config().cluster.is_none() {
        return;
    }
    let m = &b.metrics().cluster;
    for (name, kind, help, value) in FAMILIES {
        out.family(name, kind, help);
        out.sample(name, &[], value(m));
    }
}

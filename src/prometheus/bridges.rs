//! The bridges' families: per `[[bridges]]` entry, labelled with its name.

use super::Exposition;
use crate::broker::BrokerState;
use crate::metrics::BridgeMetrics;

/// A family: its name, type, help, and the value it takes from one bridge's counters.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&BridgeMetrics) -> u64,
);

const FAMILIES: [Family; 8] = [
    (
        "starling_bridge_up",
        "gauge",
        "1 while the bridge's links to the remote broker and to this one are up and their \
         subscriptions acknowledged, else 0.",
        |m| m.up.get(),
    ),
    (
        "starling_bridge_connects_total",
        "counter",
        "Times the bridge came up.",
        |m| m.connects.get(),
    ),
    (
        "starling_bridge_connect_failures_total",
        "counter",
        "Connection attempts of the bridge that failed before it was up (remote broker \
         unreachable or refusing, TLS, login).",
        |m| m.failures.get(),
    ),
    (
        "starling_bridge_messages_sent_total",
        "counter",
        "Messages the bridge sent to the remote broker.",
        |m| m.sent.get(),
    ),
    (
        "starling_bridge_messages_received_total",
        "counter",
        "Messages the bridge brought in from the remote broker.",
        |m| m.received.get(),
    ),
    (
        "starling_bridge_messages_dropped_total",
        "counter",
        "Messages the bridge acknowledged and dropped: no topic line maps them (a subscription \
         left in a persistent session by an earlier configuration), or the receiving broker \
         does not take their size.",
        |m| m.dropped.get(),
    ),
    (
        "starling_bridge_inbound",
        "gauge",
        "1 while this node brings the remote broker's messages in: always for a bridge run on \
         one node; for one run on every node (cluster = \"each_node\"), while this node holds \
         its lease.",
        |m| m.inbound.get(),
    ),
    (
        "starling_bridge_messages_standby_total",
        "counter",
        "Messages of a bridge run on every node that this node's link received and dropped \
         while another node held the bridge's lease (that node brought them in).",
        |m| m.standby.get(),
    ),
];

/// Writes the bridge families, when bridges are configured.
pub(super) fn write(out: &mut Exposition, b: &BrokerState) {
    let bridges = &b.config().bridges;
    if bridges.is_empty() {
        return;
    }
    let metrics = &b.metrics().bridges;
    for (name, kind, help, value) in FAMILIES {
        out.family(name, kind, help);
        for (cfg, m) in bridges.iter().zip(metrics) {
            out.sample(name, &[("bridge", &cfg.name)], value(m));
        }
    }
}

//! Mosquitto bridges (`try_private`). A Mosquitto bridge marks its CONNECT by setting the top
//! bit of the protocol level (0x83 for 3.1, 0x84 for 3.1.1; Mosquitto never sets it with 5.0,
//! whose subscription options do the same job). Starling treats such a connection as
//! Mosquitto does:
//!
//! - its subscriptions get No Local and Retain As Published: a message the bridge published is
//!   not sent back to it (the loop prevention the bit exists for), and a message forwarded to
//!   it keeps the RETAIN flag it was published with, so retained messages propagate;
//!
//! The bit grants nothing else: the ACL applies to a bridge as to any client. Any client (bridge
//! bit or not: Mosquitto's MQTT 5 bridges never set it) may set its will on, and publish to,
//! `$SYS/broker/connection/<its client id>/state`, where Mosquitto's bridge notifications go
//! (`1` when up, its will `0` when down), as Mosquitto allows; the rest of `$SYS` stays refused.

use crate::codec::SubscriptionOptions;

/// Whether `topic` is `$SYS/broker/connection/<client_id>/state`, the one place in `$SYS` a
/// client (a bridge's notifications) may write to.
pub(super) fn is_own_state(topic: &str, client_id: &str) -> bool {
    topic
        .strip_prefix("$SYS/broker/connection/")
        .and_then(|rest| rest.strip_suffix("/state"))
        == Some(client_id)
}

/// A bridge's subscription, as Mosquitto makes it: Retain As Published, and No Local except on
/// a shared subscription (where the spec forbids it [MQTT-3.8.3-4]).
pub(super) fn bridge_options(opts: &mut SubscriptionOptions, shared: bool) {
    opts.retain_as_published = true;
    opts.no_local = !shared;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_state_topic_only() {
        assert!(is_own_state("$SYS/broker/connection/b1/state", "b1"));
        assert!(!is_own_state("$SYS/broker/connection/b2/state", "b1"));
        assert!(!is_own_state("$SYS/broker/connection/b1/state/x", "b1"));
        assert!(!is_own_state("$SYS/broker/connection/b1", "b1"));
        assert!(!is_own_state("$SYS/broker/uptime", "b1"));
        // A client id with a slash names exactly its own topic.
        assert!(is_own_state("$SYS/broker/connection/a/b/state", "a/b"));
    }
}

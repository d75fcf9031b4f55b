//! A bridge's topic map: which filters it subscribes to on each side, and how a topic is
//! renamed when its message crosses (the prefix of one side swapped for the other's).

use std::sync::Arc;

use crate::codec::topic::matches;
use crate::codec::{QoS, SubscriptionOptions};
use crate::config::BridgeTopic;

/// The topic lines of one bridge, in configuration order: the first line that matches a
/// topic decides how it is renamed (as Mosquitto).
#[derive(Debug, Clone)]
pub struct TopicMap {
    lines: Vec<Line>,
}

#[derive(Debug, Clone)]
struct Line {
    local_filter: String,
    remote_filter: String,
    local_prefix: String,
    remote_prefix: String,
    qos: QoS,
    out: bool,
    inbound: bool,
}

impl TopicMap {
    /// The map of `topics` (validated: QoS 0..=2, filters that parse).
    pub fn new(topics: &[BridgeTopic]) -> TopicMap {
        let lines = topics
            .iter()
            .map(|t| Line {
                local_filter: t.local_filter(),
                remote_filter: t.remote_filter(),
                local_prefix: t.local_prefix.clone(),
                remote_prefix: t.remote_prefix.clone(),
                qos: QoS::from_u8(t.qos).unwrap_or(QoS::AtMostOnce),
                out: t.direction.is_out(),
                inbound: t.direction.is_in(),
            })
            .collect();
        TopicMap { lines }
    }

    /// The subscriptions to make here, for the `out` lines. No Local: what the bridge brings
    /// in is not sent back out (loop prevention); Retain As Published: RETAIN crosses as set.
    pub fn local_subscriptions(&self) -> Vec<(String, SubscriptionOptions)> {
        self.lines
            .iter()
            .filter(|l| l.out)
            .map(|l| (l.local_filter.clone(), bridge_options(l.qos)))
            .collect()
    }

    /// The subscriptions to make at the remote broker, for the `in` lines (the options do
    /// what the bridge bit does for 3.x; 3.x encodes only the QoS).
    pub fn remote_subscriptions(&self) -> Vec<(String, SubscriptionOptions)> {
        self.lines
            .iter()
            .filter(|l| l.inbound)
            .map(|l| (l.remote_filter.clone(), bridge_options(l.qos)))
            .collect()
    }

    /// The remote name of `topic`, published here: the first `out` line whose local filter
    /// matches it swaps its prefix. `None` when no line matches (the local broker sent what
    /// the bridge did not subscribe to: not forwarded).
    pub fn to_remote(&self, topic: &Arc<str>) -> Option<Arc<str>> {
        let l = self
            .lines
            .iter()
            .find(|l| l.out && matches(&l.local_filter, topic))?;
        Some(swap(topic, &l.local_prefix, &l.remote_prefix))
    }

    /// The local name of `topic`, published at the remote broker (see [`Self::to_remote`]).
    pub fn to_local(&self, topic: &Arc<str>) -> Option<Arc<str>> {
        let l = self
            .lines
            .iter()
            .find(|l| l.inbound && matches(&l.remote_filter, topic))?;
        Some(swap(topic, &l.remote_prefix, &l.local_prefix))
    }
}

/// `topic` with `from` (which it starts with, since the filter holds it) replaced by `to`;
/// the same topic, not a copy, when the prefixes are the same (most lines have none).
fn swap(topic: &Arc<str>, from: &str, to: &str) -> Arc<str> {
    if from == to {
        return topic.clone();
    }
    let rest = topic.strip_prefix(from).unwrap_or(topic);
    Arc::from(format!("{to}{rest}"))
}

/// No Local, Retain As Published, and retained messages only when the subscription is new
/// (Retain Handling 1): a session resumed after a reconnection already had them, and what was
/// retained meanwhile reached it as a message.
fn bridge_options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local: true,
        retain_as_published: true,
        retain_handling: 1,
        local_origin: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Direction;

    fn t(topic: &str) -> Arc<str> {
        Arc::from(topic)
    }

    fn line(pattern: &str, direction: Direction, local: &str, remote: &str) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.into(),
            direction,
            qos: 1,
            local_prefix: local.into(),
            remote_prefix: remote.into(),
        }
    }

    #[test]
    fn prefixes_are_swapped_by_the_first_matching_line() {
        let map = TopicMap::new(&[
            line("sensors/#", Direction::Out, "site/", "plant1/"),
            line("cmd/#", Direction::In, "", "plant1/"),
            line("#", Direction::Both, "", ""),
        ]);
        assert_eq!(
            map.to_remote(&t("site/sensors/t")).as_deref(),
            Some("plant1/sensors/t")
        );
        assert_eq!(map.to_local(&t("plant1/cmd/x")).as_deref(), Some("cmd/x"));
        // Only the catch-all `both` line matches these.
        assert_eq!(map.to_remote(&t("other")).as_deref(), Some("other"));
        assert_eq!(map.to_local(&t("a/b")).as_deref(), Some("a/b"));
        let local: Vec<_> = map.local_subscriptions().into_iter().map(|s| s.0).collect();
        assert_eq!(local, ["site/sensors/#", "#"]);
        let remote: Vec<_> = map
            .remote_subscriptions()
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(remote, ["plant1/cmd/#", "#"]);
        assert!(map
            .local_subscriptions()
            .iter()
            .all(|(_, o)| o.no_local && o.retain_as_published && o.qos == QoS::AtLeastOnce));
    }

    #[test]
    fn an_empty_pattern_maps_one_topic_to_another() {
        let map = TopicMap::new(&[line("", Direction::Both, "a/b", "c/d/e")]);
        assert_eq!(map.to_remote(&t("a/b")).as_deref(), Some("c/d/e"));
        assert_eq!(map.to_local(&t("c/d/e")).as_deref(), Some("a/b"));
        assert_eq!(map.to_remote(&t("a/b/c")), None);
    }

    #[test]
    fn a_topic_no_line_carries_is_not_mapped() {
        let map = TopicMap::new(&[line("x/#", Direction::Out, "", "")]);
        assert_eq!(
            map.to_local(&t("x/1")),
            None,
            "an out line brings nothing in"
        );
        assert_eq!(map.to_remote(&t("y")), None);
    }
}

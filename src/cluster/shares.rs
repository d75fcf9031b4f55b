//! Shared subscriptions across the cluster: each message goes to one member of each group,
//! whichever nodes the members are on (MQTT 5.0 4.8.2: a message is sent to only one of the
//! group's sessions).
//!
//! NATS queue groups do the choosing between nodes. A node with members of `$share/g/f`
//! subscribes to the subjects of `f` under `<p>.sh` in the queue group of `$share/g/f`; NATS
//! gives each message to one subscriber of each queue group, and that node gives it to one of
//! its members ([`BrokerState::publish_to_shared`]). Every routed message is also published
//! once to the subject of its topic (NATS drops it when no node has a group that matches), and
//! routing leaves out this node's own groups that NATS serves, since they get it the same way,
//! through a second NATS connection that, unlike the first, hears its own messages.
//!
//! Shared copies go over core NATS, not the stream: a publisher's acknowledgement waits until
//! they reach the NATS server (a flush of this connection), but a copy NATS hands to a node
//! that dies before routing it is lost for the group (a node that is away is not in the queue
//! group, so NATS picks another).
//!
//! While this connection is down, routing serves the node's own groups directly, as a single
//! node would; so it does for a group whose queue subscription is still being made (its first
//! member here just subscribed), at the price of a possible second copy for the group if
//! another node serves it too in that moment, rather than a lost one.
//!
//! Subjects: `<p>.sh.t.<levels>` for topics, `<p>.sh.d.<levels>` for topics beginning with
//! `$`, so that a filter with a wildcard first level never matches them [MQTT-4.7.2-1]. A level
//! made only of letters, digits, `-` and `_` is its own token; any other level (empty, `.`,
//! `*`, `>`, spaces, other characters) is `~` and its bytes in hex, so the mapping is one to one.
//! A filter maps `+` to `*` and a final `#` to `>` plus its parent (`a/#` matches `a`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::BrokerState;
use crate::codec::topic::parse_shared;
use crate::message::{Message, Origin};
use crate::metrics::ClusterMetrics;
use crate::storage::{decode_message_record, encode_message_record, StoredMessage};

/// What the broker's hooks and the shares tasks share.
#[derive(Default)]
pub(super) struct SharesState {
    /// The shares connection is up: routing leaves the shared groups to the cluster.
    pub(super) up: AtomicBool,
    /// A `$share` subscription came or went.
    pub(super) changed: Notify,
    /// The groups (`$share/<group>/<filter>`) whose queue subscriptions are made.
    pub(super) served: dashmap::DashSet<String>,
}

/// The header a node sets when it passes on a shared message it had no member for (it left
/// the group meanwhile), so that the message is passed on once at most.
const PASSED_ON: &str = "Starling-Passed-On";

/// How long a group's subscription waits for NATS to confirm it, and a group that lost its
/// last member here for NATS to confirm the unsubscription (passing on what arrives meanwhile).
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn plain(level: &str) -> bool {
    !level.is_empty()
        && level
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn push_level(out: &mut String, level: &str) {
    out.push('.');
    if plain(level) {
        out.push_str(level);
    } else {
        out.push('~');
        for b in level.bytes() {
            out.push_str(&format!("{b:02x}"));
        }
    }
}

/// The subject a topic's shared copy is published on.
pub(super) fn topic_subject(prefix: &str, topic: &str) -> String {
    let mut s = format!(
        "{prefix}.sh.{}",
        if topic.starts_with('$') { 'd' } else { 't' }
    );
    for level in topic.split('/') {
        push_level(&mut s, level);
    }
    s
}

/// The subjects that a filter (without `$share/<group>/`) matches topics' subjects on.
pub(super) fn filter_subjects(prefix: &str, filter: &str) -> Vec<String> {
    let branch = if filter.starts_with('$') { 'd' } else { 't' };
    let mut s = format!("{prefix}.sh.{branch}");
    let levels: Vec<&str> = filter.split('/').collect();
    let mut out = Vec::new();
    for (i, level) in levels.iter().enumerate() {
        match *level {
            "#" if i + 1 == levels.len() => {
                // `a/#` matches `a` too [MQTT-4.7.1-2]; `#` alone matches every non-`$` topic.
                if i > 0 {
                    out.push(s.clone());
                }
                s.push_str(".>");
                out.push(s);
                return out;
            }
            "+" => s.push_str(".*"),
            other => push_level(&mut s, other),
        }
    }
    out.push(s);
    out
}

/// The NATS queue group of a `$share/<group>/<filter>`.
fn queue_group(prefix: &str, share_filter: &str) -> String {
    let digest = Sha256::digest(share_filter.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// Publishes a message's shared copy.
pub(super) async fn publish(
    client: &async_nats::Client,
    prefix: &str,
    msg: &Message,
) -> Result<(), String> {
    let body = Bytes::from(encode_message_record(&StoredMessage::from_message(msg)));
    client
        .publish(topic_subject(prefix, &msg.topic), body)
        .await
        .map_err(|e| e.to_string())
}

/// Keeps this node's NATS queue subscriptions in step with its shared groups: one task per
/// group, started when the group gets its first member here and stopped when it loses its
/// last.
pub(super) async fn follow_groups(
    state: Arc<BrokerState>,
    client: async_nats::Client,
    prefix: String,
    shares: Arc<SharesState>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut serving: HashMap<String, CancellationToken> = HashMap::new();
    let mut version = None;
    loop {
        let (v, groups) = state.shared_groups();
        if version != Some(v) {
            version = Some(v);
            serving.retain(|g, stop| {
                let keep = groups.contains(g);
                if !keep {
                    // Routing serves it again (if it comes back before the task is gone).
                    shares.served.remove(g);
                    stop.cancel();
                }
                keep
            });
            for g in groups {
                if serving.contains_key(&g) {
                    continue;
                }
                let stop = shutdown.child_token();
                match subscribe(&client, &prefix, &g).await {
                    Ok(subs) => {
                        tracker.spawn(serve_group(
                            state.clone(),
                            client.clone(),
                            g.clone(),
                            subs,
                            (stop.clone(), shutdown.clone()),
                        ));
                        shares.served.insert(g.clone());
                        serving.insert(g, stop);
                    }
                    Err(e) => tracing::warn!(group = %crate::logging::bounded(&g), error = %e,
                        "cluster: could not subscribe a shared group; its members here get \
                         only what is published on this node"),
                }
            }
        }
        state
            .metrics()
            .cluster
            .shared_groups
            .set(shares.served.len() as u64);
        tokio::select! {
            _ = shares.changed.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn subscribe(
    client: &async_nats::Client,
    prefix: &str,
    share_filter: &str,
) -> Result<Vec<async_nats::Subscriber>, String> {
    let Some((_, filter)) = parse_shared(share_filter) else {
        return Err("not a shared subscription".into());
    };
    let group = queue_group(prefix, share_filter);
    let mut subs = Vec::new();
    for subject in filter_subjects(prefix, filter) {
        subs.push(
            client
                .queue_subscribe(subject, group.clone())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    confirmed(client).await?;
    Ok(subs)
}

/// Returns once the NATS server has taken everything this connection sent before (it handles
/// a connection's operations in order, and this one hears itself): a queue subscription is in
/// place at the server before routing leaves its group to NATS.
async fn confirmed(client: &async_nats::Client) -> Result<(), String> {
    let inbox = client.new_inbox();
    let mut sub = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish(inbox, Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(DRAIN_WAIT, sub.next()).await {
        Ok(Some(_)) => Ok(()),
        _ => Err("the NATS server did not confirm the subscription".into()),
    }
}

/// Gives the messages NATS hands this node for `share_filter` to one member each.
async fn serve_group(
    state: Arc<BrokerState>,
    client: async_nats::Client,
    share_filter: String,
    subs: Vec<async_nats::Subscriber>,
    (stop, shutdown): (CancellationToken, CancellationToken),
) {
    let metrics = state.metrics().cluster.clone();
    let origin = Arc::new("cluster".to_owned());
    let mut all = futures_util::stream::select_all(subs);
    loop {
        let m = tokio::select! {
            m = all.next() => m,
            _ = stop.cancelled() => break,
        };
        let Some(m) = m else { break };
        let msg = match decode_message_record(&m.payload) {
            Ok(stored) => {
                let mut msg = stored.to_message();
                msg.origin = Origin::Peer(origin.clone());
                Arc::new(msg)
            }
            Err(e) => {
                metrics.dropped.inc();
                tracing::warn!(error = %crate::logging::bounded(&e),
                    "cluster: a shared message did not decode; dropped");
                continue;
            }
        };
        metrics.received.inc();
        if !state.publish_to_shared(msg, &share_filter).await {
            pass_on(&client, &m, &metrics).await;
        }
    }
    if shutdown.is_cancelled() {
        return;
    }
    // The group has no member here any more. Drained: NATS stops sending, and the streams
    // end after what it had already sent, which goes to the members elsewhere. Bounded, for a
    // NATS that is gone.
    for sub in all.iter_mut() {
        let _ = sub.drain().await;
    }
    let rest = async {
        while let Some(m) = all.next().await {
            pass_on(&client, &m, &metrics).await;
        }
    };
    if tokio::time::timeout(DRAIN_WAIT, rest).await.is_err() {
        tracing::warn!(group = %crate::logging::bounded(&share_filter),
            "cluster: NATS did not confirm the end of a shared group's subscription");
    }
}

/// A shared message for a group that has no member here any more: published again, once, for
/// another node's members (NATS drops it when there is none).
async fn pass_on(client: &async_nats::Client, m: &async_nats::Message, metrics: &ClusterMetrics) {
    if m.headers
        .as_ref()
        .is_some_and(|h| h.get(PASSED_ON).is_some())
    {
        metrics.dropped.inc();
        return;
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(PASSED_ON, "1");
    if client
        .publish_with_headers(m.subject.clone(), headers, m.payload.clone())
        .await
        .is_err()
    {
        metrics.dropped.inc();
    }
}

/// Sets `shares.up` from the shares connection's events.
pub(super) fn on_event(event: &async_nats::Event, shares: &SharesState) {
    match event {
        async_nats::Event::Connected => {
            shares.up.store(true, Ordering::Release);
            // Resubscribing is the client's job; a group list read while down is current.
            shares.changed.notify_one();
        }
        async_nats::Event::Disconnected => shares.up.store(false, Ordering::Release),
        other => tracing::info!(event = %other, "cluster: NATS (shares connection)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_subjects_one_to_one() {
        assert_eq!(topic_subject("p", "a/b"), "p.sh.t.a.b");
        assert_eq!(topic_subject("p", "a.b/c d"), "p.sh.t.~612e62.~632064");
        assert_eq!(topic_subject("p", "/x/"), "p.sh.t.~.x.~");
        assert_eq!(topic_subject("p", "$SYS/x"), "p.sh.d.~24535953.x");
        assert_eq!(topic_subject("p", "*/>"), "p.sh.t.~2a.~3e");
        assert_ne!(topic_subject("p", "a/b"), topic_subject("p", "a.b"));
    }

    #[test]
    fn filters_map_to_the_subjects_of_the_topics_they_match() {
        assert_eq!(filter_subjects("p", "a/+/c"), ["p.sh.t.a.*.c"]);
        assert_eq!(filter_subjects("p", "a/#"), ["p.sh.t.a", "p.sh.t.a.>"]);
        assert_eq!(filter_subjects("p", "#"), ["p.sh.t.>"]);
        assert_eq!(filter_subjects("p", "+/x"), ["p.sh.t.*.x"]);
        assert_eq!(
            filter_subjects("p", "$SYS/#"),
            ["p.sh.d.~24535953", "p.sh.d.~24535953.>"]
        );
        assert_eq!(filter_subjects("p", "a b/c"), ["p.sh.t.~612062.c"]);
    }

    #[test]
    fn queue_groups_differ_per_group_and_filter() {
        let a = queue_group("p", "$share/g/a");
        assert_ne!(a, queue_group("p", "$share/h/a"));
        assert_ne!(a, queue_group("p", "$share/g/b"));
        assert!(a.starts_with("p-") && a.len() == 2 + 32);
    }
}

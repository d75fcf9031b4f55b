//! Leases for bridges run on every node (`[[bridges]] cluster = "each_node"`): each node's
//! bridge forwards what was published on that node, but what the remote broker sends reaches
//! every node's link, and one copy must come in. The node holding the bridge's lease brings
//! it in; the others acknowledge and drop it (`starling_bridge_messages_standby_total`).
//!
//! The lease is a key in the JetStream key-value bucket `<prefix>_bridges` (one key per
//! bridge name, its value the holder's node name), whose entries expire [`TTL`] after their
//! last write. Every [`RENEW`] the holder rewrites it, on the revision it last wrote, and the
//! others try to create it. So a holder that stops (or is lost) hands over within `TTL` +
//! `RENEW`; one that shuts down deletes its key and hands over at the next `RENEW`.
//!
//! While this node cannot reach NATS it keeps what it holds: the other nodes may take the
//! lease meanwhile, and until this node learns that (its next rewrite is refused) both bring
//! the remote's messages in. That trades duplicates for losses: a cut-off holder still serves
//! its own clients, and nothing is dropped on both sides.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a lease outlives its last renewal.
pub const TTL: Duration = Duration::from_secs(6);

/// How often the holder renews its leases and the others try to take them.
pub const RENEW: Duration = Duration::from_secs(2);

/// The bridges run on every node, and whether this node holds each one's lease.
pub struct Leases {
    held: HashMap<String, watch::Sender<bool>>,
}

impl Leases {
    /// One lease per bridge name in `bridges`, none held yet.
    pub fn new(bridges: &[String]) -> Leases {
        Leases {
            held: bridges
                .iter()
                .map(|name| (name.clone(), watch::Sender::new(false)))
                .collect(),
        }
    }

    /// Follows whether this node holds `bridge`'s lease; None for a bridge that has none
    /// (run on one node: it always brings its messages in).
    pub fn follow(&self, bridge: &str) -> Option<watch::Receiver<bool>> {
        self.held.get(bridge).map(watch::Sender::subscribe)
    }

    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// The bucket's key for `bridge`: a bridge name may hold characters a key may not.
fn key_of(bridge: &str) -> String {
    let hex: String = bridge.bytes().map(|b| format!("{b:02x}")).collect();
    format!("b{hex}")
}

/// Keeps the leases of `leases` for node `node` until `shutdown`, then gives up those held.
/// `up` follows the connection to NATS.
pub async fn run(
    client: async_nats::Client,
    (prefix, node, replicas): (String, String, usize),
    leases: std::sync::Arc<Leases>,
    mut up: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    if leases.is_empty() {
        return;
    }
    let js = jetstream::new(client);
    let mut store = None;
    let mut revisions: HashMap<String, u64> = HashMap::new();
    let mut tick = tokio::time::interval(RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = up.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
            () = shutdown.cancelled() => break,
        }
        if !*up.borrow() {
            continue;
        }
        if store.is_none() {
            store = bucket(&js, &prefix, replicas).await;
        }
        let Some(kv) = &store else { continue };
        for (name, tx) in &leases.held {
            let held = revisions.get(name).copied();
            match renew(kv, &key_of(name), &node, held).await {
                Renewal::Held(revision) => {
                    if held.is_none() {
                        tracing::info!(bridge = %name, node = %node,
                            "bridge: this node brings the remote broker's messages in");
                    }
                    revisions.insert(name.clone(), revision);
                    tx.send_replace(true);
                }
                Renewal::Lost => {
                    revisions.remove(name);
                    if tx.send_replace(false) {
                        tracing::info!(bridge = %name, node = %node,
                            "bridge: another node brings the remote broker's messages in now");
                    }
                }
                Renewal::Unknown => {}
            }
        }
    }
    give_up(store.as_ref(), &leases, &revisions).await;
}

/// Makes (or finds) the lease bucket, with the streams' replicas: on a NATS cluster the leases
/// live through the loss of a server, as the messages do.
async fn bucket(js: &jetstream::Context, prefix: &str, replicas: usize) -> Option<kv::Store> {
    let config = kv::Config {
        bucket: format!("{prefix}_bridges"),
        description: "Starling: which node brings each bridge's messages in".into(),
        history: 1,
        max_age: TTL,
        num_replicas: replicas,
        ..Default::default()
    };
    match tokio::time::timeout(RENEW, js.create_or_update_key_value(config)).await {
        Ok(Ok(store)) => Some(store),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cluster: cannot make the bridges' lease bucket");
            None
        }
        Err(_) => None,
    }
}

/// What one renewal (or attempt to take a lease) learnt.
enum Renewal {
    /// This node holds it, at this revision.
    Held(u64),
    /// Another node holds it.
    Lost,
    /// NATS did not answer: nothing changes.
    Unknown,
}

/// Rewrites the lease `key` held at `revision`, or tries to take it when not held.
async fn renew(kv: &kv::Store, key: &str, node: &str, revision: Option<u64>) -> Renewal {
    let value = Bytes::copy_from_slice(node.as_bytes());
    match revision {
        Some(revision) => {
            match tokio::time::timeout(RENEW, kv.update(key, value, revision)).await {
                Ok(Ok(revision)) => Renewal::Held(revision),
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Renewal::Lost,
                _ => Renewal::Unknown,
            }
        }
        None => match tokio::time::timeout(RENEW, kv.create(key, value)).await {
            Ok(Ok(revision)) => Renewal::Held(revision),
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => Renewal::Lost,
            _ => Renewal::Unknown,
        },
    }
}

/// At shutdown: deletes the keys this node holds, so another node takes over at its next
/// try instead of after `TTL`.
async fn give_up(store: Option<&kv::Store>, leases: &Leases, revisions: &HashMap<String, u64>) {
    for (name, tx) in &leases.held {
        tx.send_replace(false);
        let (Some(kv), Some(&revision)) = (store, revisions.get(name)) else {
            continue;
        };
        let delete = kv.delete_expect_revision(key_of(name), Some(revision));
        let _ = tokio::time::timeout(Duration::from_secs(1), delete).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hold_any_bridge_name() {
        assert_eq!(key_of("b"), "b62");
        assert_eq!(key_of("a b.c"), "b6120622e63");
        let leases = Leases::new(&["x".to_owned()]);
        assert!(leases.follow("x").is_some_and(|rx| !*rx.borrow()));
        assert!(leases.follow("y").is_none());
    }
}

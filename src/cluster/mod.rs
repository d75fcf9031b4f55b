//! The cluster: Starling nodes joined through NATS, behind the broker's
//! [`Cluster`](crate::broker::cluster::Cluster) seam. `[cluster]` turns it on.
//!
//! What crosses, on subjects under `[cluster] prefix` (`<p>` below):
//! - `<p>.msg.<node>`: every message a node routes (not `$SYS`, not one that came from a peer),
//!   in the store's message record format ([`crate::storage::encode_message_record`]), into
//!   the JetStream stream `<p>_messages`. Each node reads it through a durable consumer named
//!   after it, routes the others' messages as it routes a local publisher's, in order, waiting
//!   on full queues as a publisher would, and acknowledges each once stored where a persistent
//!   session holds it; so a node that was away gets what it missed (see [`messages`]). The
//!   publisher of a QoS 1/2 message is acknowledged only once the stream has it (a receipt
//!   from [`Cluster::routed`], answered by a [`StreamAck`]), so losing the node then loses
//!   nothing acknowledged. While NATS is unreachable up to `[cluster] queue` messages wait in
//!   this node, and publishers are acknowledged without waiting for the stream. A batch the
//!   stream did not acknowledge is published again, under the same message id (see [`again`]).
//! - Claims: a CONNECT on a node claims its client id in the same stream, on the same
//!   subject; any other node holding a session for that id closes its connection (MQTT 5
//!   DISCONNECT 0x8E Session taken over [MQTT-3.1.4-2]) and ends the session there. The
//!   stream orders claims for one client id: the later one wins on every node, whatever the
//!   nodes' clocks say (see [`claims`]).
//! - `<p>.ret.<sha256 of topic>` in the JetStream stream `<p>_retained`, one message per
//!   subject: the retained messages. A node reads them at start, before it serves clients, and
//!   after each reconnection reads what changed while it was away (see [`retained`]).
//!
//! - Shared subscriptions go through NATS queue groups on a second connection (see [`shares`]).
//! - The key-value bucket `<p>_bridges` holds which node brings each bridge run on every node
//!   in (see [`leases`]).
//!
//! The broker calls the hooks with no lock held; they only queue, on one bounded queue
//! (`[cluster] queue`; when full, the item is dropped and counted in
//! `starling_cluster_messages_dropped_total`), for the one task that publishes to NATS.
//! Inbound messages are read by one task and routed through
//! [`BrokerState::publish_from_peer`].

mod again;
mod claims;
mod leases;
mod messages;
mod publisher;

use again::StreamAck;
use publisher::{Outbound, Subjects};
mod retained;
mod shares;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::cluster::Cluster;
use crate::broker::BrokerState;
use crate::codec::QoS;
use crate::config::ClusterConfig;
use crate::message::Message;
use crate::metrics::ClusterMetrics;
use crate::persistence::Receipt;
use crate::storage::unix_ms_now;

/// Stream acknowledgements awaited at once before the publishing task waits for them.
const ACKS_IN_FLIGHT: usize = 4096;

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The NATS client refused the options (a `cafile` it cannot read, a bad server URL).
    #[error("cluster: NATS connection: {0}")]
    Connect(String),
}

/// The broker's view of the cluster: queues what the other nodes must hear.
pub struct NatsCluster {
    tx: mpsc::Sender<Outbound>,
    metrics: Arc<ClusterMetrics>,
    shares: Arc<shares::SharesState>,
    /// Connected to NATS: acknowledgements then wait for the stream (see [`StreamAck`]).
    linked: Arc<AtomicBool>,
    /// Which of the bridges run on every node this node brings in.
    leases: Arc<leases::Leases>,
    /// This node's claims not yet read back from the stream.
    claims: Arc<claims::Claims>,
}

impl NatsCluster {
    /// Queues `item` for the publishing task; false when the queue was full (then dropped).
    fn queue(&self, item: Outbound) -> bool {
        let queued = self.tx.try_send(item).is_ok();
        if !queued {
            self.metrics.dropped.inc();
            if crate::logging::refusal_allowed() {
                tracing::warn!(
                    "cluster: the queue to NATS is full (NATS slow or unreachable); \
                     dropping what the other nodes would get"
                );
            }
        }
        queued
    }
}

impl Cluster for NatsCluster {
    fn routed(&self, msg: &Arc<Message>, shares: bool) -> Option<Receipt> {
        // Only a QoS 1/2 PUBLISH is acknowledged; while NATS is unreachable the node serves
        // alone and does not hold its publishers (what they send waits in the queue).
        if msg.qos == QoS::AtMostOnce || !self.linked.load(Ordering::Acquire) {
            let _ = self.queue(Outbound::Message(msg.clone(), shares, None));
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let ack = StreamAck::new(tx);
        let _ = self.queue(Outbound::Message(msg.clone(), shares, Some(ack)));
        Some(Receipt::answered_by(rx))
    }

    fn session_claimed(&self, client_id: &str) -> Option<Receipt> {
        let number = self.claims.issue(client_id);
        // As for a PUBACK: while NATS is unreachable the node does not hold its clients.
        let (ack, receipt) = if self.linked.load(Ordering::Acquire) {
            let (tx, rx) = oneshot::channel();
            (Some(StreamAck::new(tx)), Some(Receipt::answered_by(rx)))
        } else {
            (None, None)
        };
        if !self.queue(Outbound::Claim(client_id.to_owned(), number, ack)) {
            self.claims.settled(client_id, number);
        }
        receipt
    }

    fn retained_changed(&self, msg: &Arc<Message>) {
        let _ = self.queue(Outbound::Retained(msg.clone()));
    }

    fn shares_via_cluster(&self) -> bool {
        self.shares.up.load(Ordering::Acquire)
    }

    fn serves_share(&self, share_filter: &str) -> bool {
        self.shares.served.contains(share_filter)
    }

    fn shares_changed(&self) {
        self.shares.changed.notify_one();
    }

    fn congested(&self) -> bool {
        // More than half full.
        self.tx.capacity() * 2 < self.tx.max_capacity()
    }

    fn bridge_inbound(&self, bridge: &str) -> Option<watch::Receiver<bool>> {
        self.leases.follow(bridge)
    }
}

/// The cluster between its installation in the broker and its start, once the broker is
/// shared: the other end of the hooks' queue.
pub struct Pending {
    config: ClusterConfig,
    node: String,
    rx: mpsc::Receiver<Outbound>,
    shares: Arc<shares::SharesState>,
    linked: Arc<AtomicBool>,
    leases: Arc<leases::Leases>,
    claims: Arc<claims::Claims>,
}

/// Sets up the cluster `[cluster]` describes: the hooks to install in the broker, and what
/// [`Pending::start`] runs. `bridges`: the names of the bridges run on every node, whose
/// leases the node keeps.
pub fn prepare(
    config: &ClusterConfig,
    bridges: &[String],
    metrics: Arc<ClusterMetrics>,
) -> (Arc<NatsCluster>, Pending) {
    let (tx, rx) = mpsc::channel(config.queue);
    let node = if config.node.is_empty() {
        random_node()
    } else {
        config.node.clone()
    };
    let shares = Arc::new(shares::SharesState::default());
    let linked = Arc::new(AtomicBool::new(false));
    let leases = Arc::new(leases::Leases::new(bridges));
    let claims = Arc::new(claims::Claims::default());
    let cluster = Arc::new(NatsCluster {
        tx,
        metrics,
        shares: shares.clone(),
        linked: linked.clone(),
        leases: leases.clone(),
        claims: claims.clone(),
    });
    let pending = Pending {
        config: config.clone(),
        node,
        rx,
        shares,
        linked,
        leases,
        claims,
    };
    (cluster, pending)
}

/// A node name for a node that has none configured: 12 hex digits from the OS's randomness.
fn random_node() -> String {
    let mut bytes = [0u8; 6];
    // Without randomness, the time still tells two nodes apart.
    if getrandom::fill(&mut bytes).is_err() {
        bytes.copy_from_slice(&unix_ms_now().to_be_bytes()[2..]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Pending {
    /// Connects to NATS and starts the cluster's tasks. Waits up to `connect_timeout` for NATS
    /// and, if it comes, reads the retained messages before returning (so the broker serves
    /// none it should have); if it does not, the node serves alone and joins when NATS comes.
    pub async fn start(
        self,
        state: &Arc<BrokerState>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<(), ClusterError> {
        let Pending {
            config,
            node,
            rx,
            shares,
            linked,
            leases,
            claims,
        } = self;
        let metrics = state.metrics().cluster.clone();
        let (up_tx, mut up_rx) = watch::channel(false);
        let link = Link {
            up: up_tx,
            linked,
            metrics: metrics.clone(),
        };
        let (client, share_client) = connect_both(&config, &node, link, &shares).await?;
        let subjects = Subjects {
            prefix: config.prefix.clone(),
            node: node.clone(),
        };
        tracing::info!(node, servers = ?config.servers, "cluster: joining through NATS");
        let messages = messages::Messages::new(&client, &config, &node);
        let sync = retained::Sync::new(&client, &config, &node);
        let backlog = Arc::new(again::Backlog::default());
        let (failed, failed_rx) = mpsc::channel(again::BATCHES);
        let retry = (failed, backlog.clone());
        tracker.spawn(again::run(
            failed_rx,
            (messages.clone(), sync.clone()),
            backlog.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        let (acks, acks_rx) = mpsc::channel(ACKS_IN_FLIGHT);
        tracker.spawn(publisher::ack_task(acks_rx, retry, metrics.clone()));
        let (caught_up_tx, caught_up) = oneshot::channel();
        tracker.spawn(messages::consume(
            state.clone(),
            (messages.clone(), claims.clone()),
            up_rx.clone(),
            shutdown.clone(),
            caught_up_tx,
        ));
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let connected = tokio::time::timeout_at(deadline, up_rx.wait_for(|up| *up))
            .await
            .is_ok();
        if connected {
            sync.catch_up(state).await;
            // What the other nodes published while this node was away, for the sessions it
            // restored, before clients can subscribe afresh.
            if tokio::time::timeout_at(deadline, caught_up).await.is_err() {
                tracing::warn!(
                    node,
                    "cluster: still routing what the other nodes published \
                    while this node was away; serving meanwhile"
                );
            }
        } else {
            tracing::warn!(node, timeout = ?config.connect_timeout,
                "cluster: NATS not reachable; serving alone until it is");
        }
        let out = publisher::Publisher {
            client: client.clone(),
            share_client: share_client.clone(),
            subjects,
            sync: sync.clone(),
            messages: messages.clone(),
            acks,
            metrics: metrics.clone(),
            claims,
            ids: again::Ids::new(),
            backlog,
            unacked: Arc::new(tokio::sync::Semaphore::new(again::UNACKED_KIB)),
        };
        tracker.spawn(out.run(rx, shutdown.clone()));
        tracker.spawn(leases::run(
            client.clone(),
            (config.prefix.clone(), node.clone(), config.replicas),
            leases,
            up_rx.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(resync_task(state.clone(), sync, up_rx, shutdown.clone()));
        tracker.spawn(shares::follow_groups(
            state.clone(),
            share_client.clone(),
            config.prefix.clone(),
            shares,
            tracker.clone(),
            shutdown.clone(),
        ));
        Ok(())
    }
}

/// What follows the main connection to NATS.
struct Link {
    up: watch::Sender<bool>,
    linked: Arc<AtomicBool>,
    metrics: Arc<ClusterMetrics>,
}

/// The main connection (no echo; `link` follows it) and the shares connection.
async fn connect_both(
    config: &ClusterConfig,
    node: &str,
    link: Link,
    shares: &Arc<shares::SharesState>,
) -> Result<(async_nats::Client, async_nats::Client), ClusterError> {
    let main_events = {
        let link = Arc::new(link);
        move |event: async_nats::Event| on_event(&event, &link)
    };
    let client = connect(config, node, false, main_events).await?;
    let share_events = {
        let shares = shares.clone();
        move |event: async_nats::Event| shares::on_event(&event, &shares)
    };
    let share_client = connect(config, node, true, share_events).await?;
    Ok((client, share_client))
}

/// Makes a NATS client, reconnecting for ever; `events` sees its connection come and go.
/// `echo`: whether it hears what it publishes (the shares connection does, the main one does
/// not, so a node never routes its own messages twice).
async fn connect(
    config: &ClusterConfig,
    node: &str,
    echo: bool,
    events: impl Fn(async_nats::Event) + Send + Sync + 'static,
) -> Result<async_nats::Client, ClusterError> {
    let events = Arc::new(events);
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("starling {node}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .subscription_capacity(config.queue)
        .connection_timeout(config.connect_timeout)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_mul(100).min(2_000))
        })
        .event_callback(move |event| {
            let events = events.clone();
            async move { events(event) }
        });
    if !echo {
        options = options.no_echo();
    }
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &config.cafile {
        if let Err(e) = std::fs::metadata(ca) {
            return Err(ClusterError::Connect(format!(
                "cafile {}: {e}",
                ca.display()
            )));
        }
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let servers: Vec<async_nats::ServerAddr> = config
        .servers
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| ClusterError::Connect(format!("{s}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    options
        .connect(servers)
        .await
        .map_err(|e| ClusterError::Connect(e.to_string()))
}

fn on_event(event: &async_nats::Event, link: &Link) {
    match event {
        async_nats::Event::Connected => {
            link.metrics.up.set(1);
            link.metrics.connects.inc();
            tracing::info!("cluster: connected to NATS");
            link.linked.store(true, Ordering::Release);
            link.up.send_replace(true);
        }
        async_nats::Event::Disconnected => {
            link.metrics.up.set(0);
            tracing::warn!("cluster: lost NATS; messages for the other nodes wait in the queue");
            link.linked.store(false, Ordering::Release);
            link.up.send_replace(false);
        }
        async_nats::Event::SlowConsumer(_) => {
            link.metrics.dropped.inc();
            if crate::logging::refusal_allowed() {
                tracing::warn!(
                    "cluster: messages from the other nodes arrive faster than \
                     this node routes them; some were dropped"
                );
            }
        }
        other => tracing::info!(event = %other, "cluster: NATS"),
    }
}

/// After each reconnection to NATS: reads the retained messages that changed meanwhile.
async fn resync_task(
    state: Arc<BrokerState>,
    sync: retained::Sync,
    mut up: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    loop {
        // Down first, then up again.
        tokio::select! {
            r = up.wait_for(|up| !*up) => if r.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
        tokio::select! {
            r = up.wait_for(|up| *up) => if r.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
        sync.catch_up(&state).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_nodes_are_plain_names() {
        let (a, b) = (random_node(), random_node());
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}

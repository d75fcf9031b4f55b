//! The cluster: Starling nodes joined through NATS, behind the broker's
//! [`Cluster`](crate::broker::cluster::Cluster) seam. `[cluster]` turns it on.
//!
//! What crosses, on subjects under `[cluster] prefix` (`<p>` below):
//! - `<p>.msg.<node>`: every message a node routes (not `$SYS`, not one that came from a peer),
//!   in the store's message record format ([`crate::storage::encode_message_record`]). Each
//!   node subscribes to `<p>.msg.*` and routes what the others send as it routes a local
//!   publisher's messages, in order, waiting on full queues as a publisher would. The NATS
//!   connection is made with no-echo, so a node never hears itself. Core NATS carries these:
//!   between nodes a message goes at most once, and while NATS is unreachable up to
//!   `[cluster] queue` of them wait.
//! - `<p>.claim.<node>`: a CONNECT on `<node>` claimed a client id (wall-clock microseconds,
//!   then the id). Any other node holding a session for that id closes its connection (MQTT 5
//!   DISCONNECT 0x8E Session taken over [MQTT-3.1.4-2]) and ends the session there: the client
//!   was told of the session it has where it connected. A connection made after the claim
//!   (the client came back) is left alone.
//! - `<p>.ret.<sha256 of topic>` in the JetStream stream `<p>_retained`, one message per
//!   subject: the retained messages. A node reads them at start, before it serves clients, and
//!   after each reconnection reads what changed while it was away (see [`retained`]).
//!
//! The broker calls the hooks with no lock held; they only queue, on one bounded queue
//! (`[cluster] queue`; when full, the item is dropped and counted in
//! `starling_cluster_messages_dropped_total`), for the one task that publishes to NATS.
//! Inbound messages are read by one task per subject and routed through
//! [`BrokerState::publish_from_peer`].

mod retained;
mod shares;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::cluster::Cluster;
use crate::broker::BrokerState;
use crate::codec::ReasonCode;
use crate::config::ClusterConfig;
use crate::message::{Message, Origin};
use crate::metrics::ClusterMetrics;
use crate::storage::{decode_message_record, encode_message_record, unix_ms_now, StoredMessage};

/// How long a stopping node spends sending what is still queued for the other nodes.
const SHUTDOWN_SEND: Duration = Duration::from_secs(2);

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The NATS client refused the options (a `cafile` it cannot read, a bad server URL).
    #[error("cluster: NATS connection: {0}")]
    Connect(String),
}

/// What the hooks queue for the publishing task.
enum Outbound {
    /// A routed message; true: its shared copy goes out too (see [`shares`]).
    Message(Arc<Message>, bool),
    /// A client id claimed here, and when (Unix microseconds).
    Claim(String, u64),
    Retained(Arc<Message>),
}

/// The broker's view of the cluster: queues what the other nodes must hear.
pub struct NatsCluster {
    tx: mpsc::Sender<Outbound>,
    metrics: Arc<ClusterMetrics>,
    shares: Arc<shares::SharesState>,
}

impl NatsCluster {
    fn queue(&self, item: Outbound) {
        if self.tx.try_send(item).is_err() {
            self.metrics.dropped.inc();
            if crate::logging::refusal_allowed() {
                tracing::warn!(
                    "cluster: the queue to NATS is full (NATS slow or unreachable); \
                     dropping what the other nodes would get"
                );
            }
        }
    }
}

impl Cluster for NatsCluster {
    fn routed(&self, msg: &Arc<Message>, shares: bool) {
        self.queue(Outbound::Message(msg.clone(), shares));
    }

    fn session_claimed(&self, client_id: &str) {
        self.queue(Outbound::Claim(
            client_id.to_owned(),
            unix_us(SystemTime::now()),
        ));
    }

    fn retained_changed(&self, msg: &Arc<Message>) {
        self.queue(Outbound::Retained(msg.clone()));
    }

    fn shares_via_cluster(&self) -> bool {
        self.shares.up.load(std::sync::atomic::Ordering::Acquire)
    }

    fn serves_share(&self, share_filter: &str) -> bool {
        self.shares.served.contains(share_filter)
    }

    fn shares_changed(&self) {
        self.shares.changed.notify_one();
    }
}

/// The cluster between its installation in the broker and its start, once the broker is
/// shared: the other end of the hooks' queue.
pub struct Pending {
    config: ClusterConfig,
    node: String,
    rx: mpsc::Receiver<Outbound>,
    shares: Arc<shares::SharesState>,
}

/// Sets up the cluster `[cluster]` describes: the hooks to install in the broker, and what
/// [`Pending::start`] runs.
pub fn prepare(
    config: &ClusterConfig,
    metrics: Arc<ClusterMetrics>,
) -> (Arc<NatsCluster>, Pending) {
    let (tx, rx) = mpsc::channel(config.queue);
    let node = if config.node.is_empty() {
        random_node()
    } else {
        config.node.clone()
    };
    let shares = Arc::new(shares::SharesState::default());
    let cluster = Arc::new(NatsCluster {
        tx,
        metrics,
        shares: shares.clone(),
    });
    let pending = Pending {
        config: config.clone(),
        node,
        rx,
        shares,
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

/// The subjects of one cluster.
#[derive(Clone)]
struct Subjects {
    prefix: String,
    node: String,
}

impl Subjects {
    fn messages(&self) -> String {
        format!("{}.msg.{}", self.prefix, self.node)
    }
    fn claims(&self) -> String {
        format!("{}.claim.{}", self.prefix, self.node)
    }
    fn all_messages(&self) -> String {
        format!("{}.msg.*", self.prefix)
    }
    fn all_claims(&self) -> String {
        format!("{}.claim.*", self.prefix)
    }
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
        } = self;
        let metrics = state.metrics().cluster.clone();
        let (up_tx, mut up_rx) = watch::channel(false);
        let main_events = {
            let (up, metrics) = (Arc::new(up_tx), metrics.clone());
            move |event: async_nats::Event| on_event(&event, &up, &metrics)
        };
        let client = connect(&config, &node, false, main_events).await?;
        let share_events = {
            let shares = shares.clone();
            move |event: async_nats::Event| shares::on_event(&event, &shares)
        };
        let share_client = connect(&config, &node, true, share_events).await?;
        let subjects = Subjects {
            prefix: config.prefix.clone(),
            node: node.clone(),
        };
        tracing::info!(node, servers = ?config.servers, "cluster: joining through NATS");
        let messages = client
            .subscribe(subjects.all_messages())
            .await
            .map_err(|e| ClusterError::Connect(e.to_string()))?;
        let claims = client
            .subscribe(subjects.all_claims())
            .await
            .map_err(|e| ClusterError::Connect(e.to_string()))?;
        let (sync, acks) = retained::Sync::new(&client, &config, &node);
        tracker.spawn(retained::ack_task(acks, metrics.clone()));
        let connected = tokio::time::timeout(config.connect_timeout, up_rx.wait_for(|up| *up))
            .await
            .is_ok();
        if connected {
            sync.catch_up(state).await;
        } else {
            tracing::warn!(node, timeout = ?config.connect_timeout,
                "cluster: NATS not reachable; serving alone until it is");
        }
        let out = Publisher {
            client: client.clone(),
            share_client: share_client.clone(),
            subjects,
            sync: sync.clone(),
            metrics: metrics.clone(),
        };
        tracker.spawn(out.run(rx, shutdown.clone()));
        tracker.spawn(inbound_messages(state.clone(), messages, shutdown.clone()));
        tracker.spawn(inbound_claims(state.clone(), claims, shutdown.clone()));
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

fn on_event(event: &async_nats::Event, up: &watch::Sender<bool>, metrics: &ClusterMetrics) {
    match event {
        async_nats::Event::Connected => {
            metrics.up.set(1);
            metrics.connects.inc();
            tracing::info!("cluster: connected to NATS");
            up.send_replace(true);
        }
        async_nats::Event::Disconnected => {
            metrics.up.set(0);
            tracing::warn!("cluster: lost NATS; messages for the other nodes wait in the queue");
            up.send_replace(false);
        }
        async_nats::Event::SlowConsumer(_) => {
            metrics.dropped.inc();
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

/// The task that publishes what the hooks queue, in order.
struct Publisher {
    client: async_nats::Client,
    share_client: async_nats::Client,
    subjects: Subjects,
    sync: retained::Sync,
    metrics: Arc<ClusterMetrics>,
}

impl Publisher {
    async fn run(self, mut rx: mpsc::Receiver<Outbound>, shutdown: CancellationToken) {
        loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                _ = shutdown.cancelled() => break,
            };
            let Some(item) = item else { return };
            self.send(item).await;
        }
        // At shutdown: what is queued still goes (the last wills, retained updates), within
        // a bound, then the connections are flushed.
        let rest = async {
            while let Ok(item) = rx.try_recv() {
                self.send(item).await;
            }
            let _ = self.client.flush().await;
            let _ = self.share_client.flush().await;
        };
        if tokio::time::timeout(SHUTDOWN_SEND, rest).await.is_err() {
            tracing::warn!(node = %self.subjects.node,
                "cluster: could not send everything queued for the other nodes at shutdown");
        }
    }

    async fn send(&self, item: Outbound) {
        let (msg_subject, claim_subject) = (self.subjects.messages(), self.subjects.claims());
        let sent = match item {
            Outbound::Message(msg, shares) => {
                let body = encode_message_record(&StoredMessage::from_message(&msg));
                let sent = self
                    .client
                    .publish(msg_subject, Bytes::from(body))
                    .await
                    .map_err(|e| e.to_string());
                if sent.is_ok() {
                    self.metrics.sent.inc();
                }
                match shares {
                    true => sent.and(
                        shares::publish(&self.share_client, &self.subjects.prefix, &msg).await,
                    ),
                    false => sent,
                }
            }
            Outbound::Claim(client_id, at_us) => {
                let mut body = at_us.to_be_bytes().to_vec();
                body.extend_from_slice(client_id.as_bytes());
                self.client
                    .publish(claim_subject, Bytes::from(body))
                    .await
                    .map_err(|e| e.to_string())
            }
            Outbound::Retained(msg) => self.sync.store(&msg).await,
        };
        if let Err(e) = sent {
            self.metrics.dropped.inc();
            if crate::logging::refusal_allowed() {
                tracing::warn!(error = %e, "cluster: NATS refused a publish; dropped");
            }
        }
    }
}

/// Routes the other nodes' messages, in order.
async fn inbound_messages(
    state: Arc<BrokerState>,
    mut sub: async_nats::Subscriber,
    shutdown: CancellationToken,
) {
    let metrics = state.metrics().cluster.clone();
    // One `Arc` per node name, shared by all of its messages.
    let mut origins: HashMap<String, Arc<String>> = HashMap::new();
    loop {
        let m = tokio::select! {
            m = sub.next() => m,
            _ = shutdown.cancelled() => return,
        };
        let Some(m) = m else { return };
        let node = m.subject.rsplit('.').next().unwrap_or_default();
        let origin = match origins.get(node) {
            Some(o) => o.clone(),
            None => {
                let o = Arc::new(node.to_owned());
                origins.insert(node.to_owned(), o.clone());
                o
            }
        };
        match decode_message_record(&m.payload) {
            Ok(stored) => {
                metrics.received.inc();
                let mut msg = stored.to_message();
                msg.origin = Origin::Peer(origin);
                state.publish_from_peer(Arc::new(msg)).await;
            }
            Err(e) => {
                metrics.dropped.inc();
                if crate::logging::refusal_allowed() {
                    tracing::warn!(node, error = %crate::logging::bounded(&e),
                        "cluster: a message from another node did not decode; dropped");
                }
            }
        }
    }
}

/// Closes local sessions that a CONNECT on another node claimed.
async fn inbound_claims(
    state: Arc<BrokerState>,
    mut sub: async_nats::Subscriber,
    shutdown: CancellationToken,
) {
    loop {
        let m = tokio::select! {
            m = sub.next() => m,
            _ = shutdown.cancelled() => return,
        };
        let Some(m) = m else { return };
        let node = m.subject.rsplit('.').next().unwrap_or_default();
        let Some((at_us, client_id)) = parse_claim(&m.payload) else {
            tracing::warn!(node, "cluster: a takeover notice did not decode; ignored");
            continue;
        };
        claimed_elsewhere(&state, node, client_id, at_us);
    }
}

/// A claim's body: Unix microseconds (8 bytes, big-endian), then the client id.
fn parse_claim(body: &[u8]) -> Option<(u64, &str)> {
    let (at, id) = body.split_at_checked(8)?;
    let at = u64::from_be_bytes(at.try_into().ok()?);
    Some((at, std::str::from_utf8(id).ok()?))
}

/// `client_id` connected on `node` at `at_us`: its session here ends, unless its connection
/// here is newer (the client came back before the notice arrived). Microseconds, so a client
/// that moves back within the same millisecond is not closed by the notice of its move away;
/// between machines this needs clocks kept in step (NTP): a client that moves back faster than
/// their skew may be disconnected once, and reconnects.
fn claimed_elsewhere(state: &Arc<BrokerState>, node: &str, client_id: &str, at_us: u64) {
    if state.is_bridge_id(client_id) {
        return;
    }
    let Some(info) = state.session_info(client_id) else {
        return;
    };
    let since_us = info.connected_since.map(unix_us);
    if info.connected && since_us.is_some_and(|since| since > at_us) {
        tracing::info!(client_id = %crate::logging::bounded(client_id), node,
            "cluster: client connected here after it connected on another node; kept");
        return;
    }
    state.metrics().cluster.takeovers.inc();
    tracing::info!(client_id = %crate::logging::bounded(client_id), node,
        "cluster: client connected on another node; its session here ends");
    state.disconnect_client_because(
        client_id,
        ReasonCode::SESSION_TAKEN_OVER,
        true,
        "session taken over on another node",
    );
}

/// Microseconds since the Unix epoch.
fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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
    fn claims_round_trip_and_garbage_is_refused() {
        let mut body = 1234u64.to_be_bytes().to_vec();
        body.extend_from_slice("client-é".as_bytes());
        assert_eq!(parse_claim(&body), Some((1234, "client-é")));
        assert_eq!(parse_claim(&body[..7]), None);
        let mut bad = 1u64.to_be_bytes().to_vec();
        bad.push(0xff);
        assert_eq!(parse_claim(&bad), None);
    }

    #[test]
    fn random_nodes_are_plain_names() {
        let (a, b) = (random_node(), random_node());
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}

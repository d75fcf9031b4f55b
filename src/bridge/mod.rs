//! Bridges (`[[bridges]]`): this broker as a client of another, carrying the configured topics
//! each way, as Mosquitto's `connection` blocks do.
//!
//! A bridge is two MQTT connections joined by one task: one to the remote broker, and one to
//! this broker over an in-process pipe, served by [`crate::connection`] like any client (peer
//! `bridge:<name>`, listener [`BRIDGE_LISTENER`](crate::auth::listeners::BRIDGE_LISTENER),
//! outside the password file and ACL). Nothing in the broker knows it is a bridge beyond that:
//! the local end is an MQTT 5 session subscribed to the `out` topics with No Local (what the
//! bridge brings in is not sent back) and Retain As Published.
//!
//! The local end is connected only while the remote one is. With `cleansession = false` (the
//! default) both sessions outlive their connections: while the link is down messages for the
//! remote broker wait in the local session's queue, on disk with a store, within the usual
//! queue limits, and QoS 1/2 messages resume under the ids both sides know (see
//! [`pump`]). A failed link is retried after `restart_timeout`, doubled after each failure up
//! to `restart_timeout_max`.
//!
//! In a cluster, a bridge with `cluster = "each_node"` runs on every node: its local session's
//! subscriptions match only messages published on this node (the broker sets
//! [`local_origin`](crate::codec::SubscriptionOptions::local_origin) on them), and what the
//! remote broker sends comes in only while this node holds the bridge's lease
//! ([`BrokerState::bridge_inbound`]); the rest is acknowledged and dropped.
//!
//! Lock use: none. The task holds only its own state; the local end goes through the
//! connection code and takes the broker's locks there, in their documented order.

mod link;
mod prepare;
mod pump;
mod topics;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::BrokerState;
use crate::codec::{Publish, QoS};
use crate::config::{BridgeConfig, MQTT_MAX_PACKET_SIZE};
use crate::message::Message;
use crate::metrics::BridgeMetrics;

pub use prepare::prepare_sessions;
pub use topics::TopicMap;

/// Why a bridge's link failed (logged; the link is then made again).
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("connection refused, CONNACK code {0:#04x}")]
    Refused(u8),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("malformed packet: {0}")]
    Decode(#[from] crate::codec::DecodeError),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("connection closed {0}")]
    Closed(&'static str),
    #[error("remote broker sent DISCONNECT {0:#04x}")]
    Disconnected(u8),
    #[error("this broker ended the bridge's session (DISCONNECT {0:#04x})")]
    LocalDisconnected(u8),
}

/// Starts every configured bridge on `tracker`; each runs until `shutdown`.
pub fn spawn_all(broker: &Arc<BrokerState>, tracker: &TaskTracker, shutdown: &CancellationToken) {
    for (index, cfg) in broker.config().bridges.iter().enumerate() {
        let tls = match link::tls_connector(cfg) {
            Ok(tls) => tls,
            Err(e) => {
                // Checked at start by `check_tls`; a file that changed since is reported.
                tracing::error!(bridge = %cfg.name, error = %e, "bridge: TLS files do not load; bridge not started");
                continue;
            }
        };
        let bridge = Bridge {
            cfg: cfg.clone(),
            names: link::Names::of(cfg, broker.config().cluster_node()),
            map: TopicMap::new(&cfg.topics),
            tls,
            broker: broker.clone(),
            index,
            will: link::WillShape::default(),
            current: 0,
            inbound: broker.bridge_inbound(&cfg.name),
        };
        tracker.spawn(bridge.run(shutdown.clone()));
    }
}

/// The bridges' local client ids, which only they may use.
pub fn local_ids(config: &crate::config::Config) -> Vec<String> {
    config
        .bridges
        .iter()
        .map(|b| link::Names::of(b, config.cluster_node()).local_id)
        .collect()
}

/// The names of the bridges run on every node of a cluster (`cluster = "each_node"`).
pub fn each_node(config: &crate::config::Config) -> Vec<String> {
    config
        .bridges
        .iter()
        .filter(|b| b.cluster == crate::config::BridgeCluster::EachNode)
        .map(|b| b.name.clone())
        .collect()
}

/// Loads the TLS files of every bridge, so that a start with files that do not load fails
/// and says why.
pub fn check_tls(bridges: &[BridgeConfig]) -> Result<(), String> {
    for b in bridges {
        link::tls_connector(b).map_err(|e| format!("bridges `{}`: {e}", b.name))?;
    }
    Ok(())
}

/// `wait` less up to half of it at random: the sites of a central broker that restarts do
/// not all come back in the same instant.
fn jittered(wait: Duration) -> Duration {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    wait.mul_f64(1.0 - fraction / 2.0)
}

/// One bridge's settings and the broker it belongs to.
struct Bridge {
    cfg: BridgeConfig,
    names: link::Names,
    map: TopicMap,
    tls: Option<tokio_rustls::TlsConnector>,
    broker: Arc<BrokerState>,
    /// Its place in `Config::bridges` (and in the metrics).
    index: usize,
    /// How its will is sent (changed once the remote broker refuses it).
    will: link::WillShape,
    /// The address in use or to try next: 0 is `address`, then the fallbacks.
    current: usize,
    /// For a bridge run on every node: whether this node brings the remote broker's messages
    /// in (see [`crate::config::BridgeCluster`]). None: always.
    inbound: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Bridge {
    /// Connects, forwards, and after a failure connects again, until `shutdown`: to the next
    /// address at once while some of them have not been tried since the last wait, else after
    /// the backoff wait.
    async fn run(mut self, shutdown: CancellationToken) {
        let mut wait = self.cfg.restart_timeout;
        let count = self.cfg.addresses().count();
        let mut tried = 0;
        while !shutdown.is_cancelled() {
            // Not raced against `shutdown`: `once` watches it itself, and once the links are
            // up the pump answers it with the `0` notification and DISCONNECT, which dropping
            // `once` here would lose (the remote broker would then publish the will).
            match self.once(&shutdown).await {
                Ok(pump::End::Shutdown) => {
                    // Retained, and kept by a store: after a restart it must not say `1`.
                    self.notify_local(b"0");
                    return;
                }
                Ok(pump::End::MainBack) => {
                    tracing::info!(bridge = %self.cfg.name, address = %self.cfg.address,
                        "bridge: the main broker accepts connections again; leaving the fallback");
                    self.notify_local(b"0");
                    (self.current, tried, wait) = (0, 0, self.cfg.restart_timeout);
                    continue;
                }
                Err((e, connected)) => {
                    if let (false, Some(m)) = (connected, self.metrics()) {
                        m.failures.inc();
                    }
                    // Tried again at once with the will as the remote takes it (at most twice:
                    // each step only lowers it).
                    if matches!(e, BridgeError::Refused(code) if self.accept_will_refusal(code)) {
                        continue;
                    }
                    if connected {
                        self.notify_local(b"0");
                        (tried, wait) = (0, self.cfg.restart_timeout);
                    }
                    tracing::warn!(bridge = %self.cfg.name, address = %self.address(),
                        error = %e, "bridge: link down");
                    self.current = (self.current + 1) % count;
                    tried += 1;
                    if tried < count {
                        continue;
                    }
                    tried = 0;
                }
            }
            tracing::info!(bridge = %self.cfg.name, retry_in = ?wait,
                "bridge: waiting before connecting again");
            tokio::select! {
                () = tokio::time::sleep(jittered(wait)) => {}
                () = shutdown.cancelled() => return,
            }
            wait = (wait * 2).min(self.cfg.restart_timeout_max);
        }
    }

    /// The address this attempt goes to.
    fn address(&self) -> &str {
        self.cfg
            .addresses()
            .nth(self.current)
            .unwrap_or(&self.cfg.address)
    }

    /// One connection of both links and its life. The error says whether the links had
    /// come up (the notification then says they are down).
    async fn once(&self, shutdown: &CancellationToken) -> Result<pump::End, (BridgeError, bool)> {
        let (cfg, names) = (&self.cfg, &self.names);
        let own_max = self.broker.config().mqtt.max_packet_size;
        let connect = async {
            let limits = (own_max, self.will);
            let to = (names, self.address());
            let remote = link::connect_remote(cfg, to, self.tls.as_ref(), limits).await?;
            let receive_max = cfg.max_inflight.min(remote.receive_max);
            let local =
                link::connect_local(&self.broker, cfg, names, receive_max, remote.max_packet)
                    .await?;
            Ok::<_, BridgeError>((remote, local))
        };
        // Connecting may take up to its timeout: shutdown does not wait for it.
        let (remote, local) = tokio::select! {
            r = connect => r.map_err(|e| (e, false))?,
            () = shutdown.cancelled() => return Ok(pump::End::Shutdown),
        };
        tracing::info!(bridge = %cfg.name, address = %self.address(), remote_client_id = %names.remote_id,
            remote_session = remote.session_present, local_session = local.session_present,
            "bridge: connected");
        let remote_notes = cfg.notifications && !cfg.notifications_local_only;
        let fallback = BridgeMetrics::default();
        let setup = pump::Setup {
            broker: &self.broker,
            metrics: self.metrics().unwrap_or(&fallback),
            bridge: &cfg.name,
            map: &self.map,
            remote_max_in: if remote.version.is_v5() {
                own_max
            } else {
                MQTT_MAX_PACKET_SIZE
            },
            local_max_in: remote.max_packet,
            hello: remote_notes.then(|| self.notification(b"1", remote.retain_available)),
            farewell: remote_notes.then(|| self.notification(b"0", remote.retain_available)),
            local_hello: cfg.notifications.then(|| self.local_state(b"1")),
            inbound: self.inbound.as_ref(),
        };
        // On a fallback, unless all addresses are equals: back to the main broker once it
        // accepts connections.
        let main_back: Option<pump::MainBack<'_>> = (!cfg.round_robin && self.current != 0)
            .then(|| Box::pin(link::accepting(cfg, &cfg.address, cfg.keepalive_interval)) as _);
        pump::run(setup, (remote, local), main_back, shutdown)
            .await
            .map_err(|e| (e, true))
    }

    /// After a CONNACK refusal: when the will was its reason, the next attempt sends it as
    /// the remote broker takes it (see [`link::WillShape`]).
    fn accept_will_refusal(&mut self, code: u8) -> bool {
        let Some(shape) = self.will.after_refusal(code) else {
            return false;
        };
        tracing::info!(bridge = %self.cfg.name, code, retain = shape.retain,
            qos = shape.qos as u8, "bridge: the remote broker refused the will as it was; \
            sending it as it takes it");
        self.will = shape;
        true
    }

    /// This bridge's counters (always there: one per configured bridge).
    fn metrics(&self) -> Option<&BridgeMetrics> {
        self.broker.metrics().bridges.get(self.index)
    }

    /// The notification PUBLISH for the remote broker (QoS 0: no packet id of its own, which
    /// could clash with the ids the bridge carries; the will says `0` if the link breaks).
    fn notification(&self, state: &'static [u8], retain: bool) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain,
            topic: Arc::from(self.names.notification_topic.as_str()),
            packet_id: 0,
            properties: Default::default(),
            payload: Bytes::from_static(state),
        }
    }

    /// Publishes the link state here (retained), when notifications are on.
    fn notify_local(&self, state: &'static [u8]) {
        if self.cfg.notifications {
            self.broker.publish_unacknowledged(self.local_state(state));
        }
    }

    /// The local notification message.
    fn local_state(&self, state: &'static [u8]) -> Arc<Message> {
        let topic = &self.names.notification_topic;
        let payload = Bytes::from_static(state);
        Arc::new(Message::new(topic, payload, QoS::AtLeastOnce, true))
    }
}

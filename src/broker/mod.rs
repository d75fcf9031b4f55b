//! The broker's shared state and the operations connections perform on it: claiming a session
//! (takeover), routing a PUBLISH to every matching session, subscribing and unsubscribing, and
//! ending a session.
//!
//! # Lock hierarchy
//!
//! Locks are taken in this order only, outermost first; each is held for a short synchronous
//! section, never across `.await` or a socket write. Debug and test builds check the order on
//! every acquisition ([`crate::sync`]); release builds use plain `parking_lot` locks.
//!
//! 1. the CONNECT claim, `Session::lock_connect` (an async flag; serialises CONNECTs for one
//!    client id, held across the takeover wait only)
//! 2. `Session::link` (which connection owns the session)
//! 3. the subscription trie
//! 4. the retained store
//! 5. the auth snapshot
//! 6. `Session::meta`
//! 7. `Session::state`
//! 8. leaves that are never held together with any lock above nor with each other: the
//!    failed-login table ([`crate::auth::slowdown`]), the metrics endpoint's connection
//!    table and the keep-alive sweep's live list ([`keepalive`])
//!
//! Rules that keep the graph acyclic by construction:
//! - While holding the trie, retained or auth lock, nothing calls into a session, a callback or
//!   another component: routing collects its targets (session, epoch, delivery) under the trie
//!   read lock, drops it, and only then queues into each session. Whether a session is
//!   connected, removed or persistent is kept in atomics so the trie's shared-group pick can
//!   ask without a lock.
//! - A session method never calls out while holding `link` or `state` (no callbacks).
//!   Discarding a session is three steps: `Session::release` marks it as being discarded
//!   (a racing CONNECT waits), the broker then drops its subscriptions and queue with no session
//!   lock held, and `Session::finish_discard` wakes the waiting CONNECTs.
//! - The session registry is a `DashMap`, whose shard locks the checker cannot see: no lock is
//!   taken while holding one of its guards (sessions are collected first), and none is taken
//!   while holding a ranked lock.
//! - A delivery routed by a subscription carries the session state's epoch from when the
//!   subscription was made; a session cleared since (clean start, discard) refuses it, so
//!   routing outside the trie lock never revives a dropped subscription.
//! - The [`cluster::Cluster`] hooks are called with no lock held, and only queue or read the
//!   cluster's own state (atomics, and the set of shared groups NATS serves, a `DashSet`
//!   whose guards are never held across a call); the cluster calls back into the broker
//!   (routing, disconnecting a session taken over on another node) from its own tasks, with
//!   none of its guards held.

mod admin;
mod budget;
pub mod cluster;
pub mod dynsec;
mod handover;
mod ingress;
pub mod keepalive;
mod registry;
mod relief;
mod retained;
mod routing;
mod timers;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::auth::enhanced::Authenticator;
use crate::auth::slowdown::{LoginSlowdown, SlowdownPolicy};
use crate::auth::{AuthConfig, AuthSet, SubscribeVerdict};
use crate::codec::{QoS, ReasonCode};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::persistence::Persistence;
use crate::router::trie::SubscriptionTrie;
use crate::session::{Control, Limits, Login, Session};
use crate::storage::Op;
use crate::sync::{Rank, RwLock};

pub use admin::{Kicked, SessionInfo};
pub use budget::Budget;
pub use ingress::IngressError;
pub use registry::{Claimed, NotOwner};
pub use routing::{Publication, Routed, SubHandle, PACE_AT, PACE_RESUME, PACE_UNTIL, STUCK_AFTER};

/// State shared by every connection.
pub struct BrokerState {
    config: Config,
    metrics: Metrics,
    budget: Budget,
    /// Per-listener publish rate limits, indexed like `config.listeners`.
    listener_rates: Vec<Option<Arc<crate::ratelimit::ListenerRates>>>,
    shutdown: CancellationToken,
    sessions: DashMap<Arc<str>, Arc<Session>>,
    subscriptions: RwLock<SubscriptionTrie<SubHandle>>,
    retained: RwLock<retained::Retained>,
    started: Instant,
    authenticators: Vec<Arc<dyn Authenticator>>,
    /// Client ids only a bridge's local end may use (`[[bridges]]`' local client ids).
    bridge_ids: Vec<String>,
    /// Password file, ACL and `allow_anonymous` of every listener and of `[auth]`, replaced
    /// whole on reload.
    auth: RwLock<Arc<AuthSet>>,
    /// Bumped on every auth reload so connections refresh their cached snapshot.
    auth_generation: AtomicU64,
    /// Mirrors `auth.restricts()`, so routing needs neither the lock nor the snapshot (shared
    /// by every publisher) when no ACL applies.
    auth_restricts: AtomicBool,
    /// Set once shutdown began (every connection is being closed).
    stopping: AtomicBool,
    /// Tasks that need the broker for a while after their cause (a shared member's
    /// hand-over): the broker's `wait` lets them finish (they stop early at shutdown) before
    /// the store is released.
    tasks: tokio_util::task::TaskTracker,
    /// The live connections with a keep-alive, for the one sweep that times them out.
    keep_alive: Arc<keepalive::KeepAlive>,
    /// The store, when persistence is on.
    persistence: Option<Arc<Persistence>>,
    /// The other nodes; [`cluster::LocalCluster`] when there are none.
    cluster: Arc<dyn cluster::Cluster>,
    /// Failed logins per peer address, shared by everything that checks credentials.
    login_slowdown: Arc<LoginSlowdown>,
    /// The dynamic-security control task's queue, when `auth.dynamic_security` is set (see
    /// [`dynsec`]).
    dynsec_control: OnceLock<tokio::sync::mpsc::Sender<dynsec::ControlRequest>>,
}

impl BrokerState {
    pub fn new(config: Config, shutdown: CancellationToken) -> BrokerState {
        let budget = Budget::new(
            config.limits.global_queued_bytes_high,
            config.limits.global_queued_bytes_low,
        );
        let strategy = match config.mqtt.shared_subscription_strategy {
            crate::config::SharedStrategy::RoundRobin => crate::router::SharedStrategy::RoundRobin,
            crate::config::SharedStrategy::Random => crate::router::SharedStrategy::Random,
        };
        let trie = SubscriptionTrie::new_with_strategy(strategy);
        let now = Instant::now();
        let listener_rates = config
            .listeners
            .iter()
            .map(|l| crate::ratelimit::ListenerRates::for_listener(l, now))
            .collect();
        let login_slowdown = Arc::new(LoginSlowdown::new(SlowdownPolicy::from_config(
            &config.auth,
        )));
        BrokerState {
            login_slowdown,
            metrics: Metrics::with_listeners(config.listeners.len())
                .with_bridges(config.bridges.len()),
            config,
            budget,
            listener_rates,
            shutdown,
            sessions: DashMap::new(),
            subscriptions: RwLock::new(Rank::Trie, trie),
            retained: RwLock::new(Rank::Retained, retained::Retained::default()),
            started: Instant::now(),
            authenticators: Vec::new(),
            bridge_ids: Vec::new(),
            auth: RwLock::new(Rank::Auth, Arc::new(AuthSet::default())),
            auth_generation: AtomicU64::new(0),
            auth_restricts: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            tasks: tokio_util::task::TaskTracker::new(),
            keep_alive: Arc::default(),
            persistence: None,
            cluster: Arc::new(cluster::LocalCluster),
            dynsec_control: OnceLock::new(),
        }
    }

    /// Installs the store (at start, before serving).
    pub fn with_persistence(mut self, p: Option<Arc<Persistence>>) -> BrokerState {
        self.persistence = p;
        self
    }

    /// The configuration the broker started with (a reload replaces only what it applies
    /// live, elsewhere).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters behind `$SYS` and `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Failed logins per peer address and the delay their refusals get (see
    /// [`crate::auth::slowdown`]); shared with any other place that checks credentials.
    pub fn login_slowdown(&self) -> &Arc<LoginSlowdown> {
        &self.login_slowdown
    }

    /// The keep-alive sweep's registry (the sweep itself runs from the broker's start).
    pub fn keep_alive(&self) -> &Arc<keepalive::KeepAlive> {
        &self.keep_alive
    }

    /// The global budget of queued bytes.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The publish rate limit shared by the clients of listener `index`, if it has one.
    pub fn listener_rates(&self, index: usize) -> Option<&Arc<crate::ratelimit::ListenerRates>> {
        self.listener_rates.get(index).and_then(|r| r.as_ref())
    }

    /// Cancelled when the broker shuts down; tasks select on it to end.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Installs the cluster (at start, before serving).
    pub fn with_cluster(mut self, cluster: Arc<dyn cluster::Cluster>) -> BrokerState {
        self.cluster = cluster;
        self
    }

    /// The store, when persistence is on.
    pub fn persistence(&self) -> Option<&Arc<Persistence>> {
        self.persistence.as_ref()
    }

    /// Installs the auth snapshots (at start).
    pub fn with_auth(self, auth: AuthSet) -> BrokerState {
        let mut current = self.auth.write();
        self.auth_restricts
            .store(auth.restricts(), Ordering::Release);
        *current = Arc::new(auth);
        drop(current);
        self
    }

    /// The auth snapshots for routing READ checks; None when no snapshot restricts topics.
    pub(super) fn routing_auth(&self) -> Option<Arc<AuthSet>> {
        self.auth_restricts
            .load(Ordering::Acquire)
            .then(|| self.auth.read().clone())
    }

    /// The auth snapshot of listener `index` (`[auth]`'s for `None`) and its generation.
    pub fn auth(&self, listener: Option<usize>) -> (Arc<AuthConfig>, u64) {
        let a = self.auth.read().for_listener(listener).clone();
        (a, self.auth_generation.load(Ordering::Acquire))
    }

    /// Every listener's auth snapshot.
    pub fn auth_set(&self) -> Arc<AuthSet> {
        self.auth.read().clone()
    }

    /// Bumped on every reload of the auth snapshots; a connection whose cached snapshot is of
    /// an older generation fetches its listener's again.
    pub fn auth_generation(&self) -> u64 {
        self.auth_generation.load(Ordering::Acquire)
    }

    /// Replaces the auth snapshots (reload): connected clients their listener's new rules would
    /// no longer let in are disconnected (see [`BrokerState::revoke_logins`]), and
    /// subscriptions their listener's new ACL refuses outright are dropped; READ and WRITE are
    /// checked per message anyway. Returns how many subscriptions were dropped.
    ///
    /// The dynamic-security state is not part of it: the running one is put into every
    /// snapshot of `auth` whatever it held, since only its control API changes it
    /// ([`BrokerState::replace_dynsec`]), so a reload can never undo a change made through it.
    pub fn replace_auth(&self, auth: AuthSet) -> usize {
        self.swap_auth(move |before| auth.with_dynsec(before.dynsec()))
    }

    /// Installs a new dynamic-security state (after its control API changed it and the file
    /// was written) into every listener's snapshot, with the same consequences as
    /// [`BrokerState::replace_auth`]: clients whose record, groups or roles changed are
    /// disconnected and judged afresh when they reconnect, on whichever listener they are.
    pub fn replace_dynsec(&self, dynsec: Arc<crate::auth::dynsec::DynSec>) -> usize {
        self.swap_auth(move |before| before.with_dynsec(Some(&dynsec)))
    }

    /// Derives the next snapshots from the current ones under the auth write lock (`next` only
    /// builds values: it calls nothing out), then applies the consequences with no lock held.
    fn swap_auth(&self, next: impl FnOnce(&AuthSet) -> AuthSet) -> usize {
        let (before, auth) = {
            let mut current = self.auth.write();
            let auth = Arc::new(next(&current));
            self.auth_restricts
                .store(auth.restricts(), Ordering::Release);
            (std::mem::replace(&mut *current, auth.clone()), auth)
        };
        self.auth_generation.fetch_add(1, Ordering::AcqRel);
        self.revoke_logins(&before, &auth);
        let mut dropped = 0;
        for session in self.all_sessions() {
            let meta = session.meta();
            let (now, was) = (
                auth.for_listener(meta.listener_index()),
                before.for_listener(meta.listener_index()),
            );
            if Arc::ptr_eq(now, was) {
                continue;
            }
            let username = meta.username.as_deref();
            for filter in session.with_state(|s| s.subscription_filters()) {
                let verdict = now.check_subscribe(&session.client_id, username, &filter);
                if verdict == SubscribeVerdict::Denied && self.unsubscribe(&session, &filter) {
                    tracing::info!(client_id = %session.client_id, %filter,
                        "subscription removed: the reloaded ACL denies it");
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// The one rule for credentials that change under connected clients: a client whose user
    /// was removed from its listener's password file or whose password changed there, or an
    /// anonymous one once its listener refuses anonymous access, is disconnected with 0x98
    /// Administrative action (its will is published, as for any disconnect by the server) and
    /// must log in again. Clients of a listener whose snapshot did not change are not looked
    /// at, nor are clients let in by a certificate or an enhanced-authentication method.
    fn revoke_logins(&self, before: &AuthSet, now: &AuthSet) {
        for session in self.all_sessions() {
            if !session.is_connected() {
                continue;
            }
            let meta = session.meta();
            let (was, is) = (
                before.for_listener(meta.listener_index()),
                now.for_listener(meta.listener_index()),
            );
            if meta.login == Login::External
                || is.still_admits(was, meta.username.as_deref(), meta.login == Login::Password)
            {
                continue;
            }
            tracing::info!(client_id = %session.client_id,
                username = meta.username.as_deref().unwrap_or(""),
                listener = ?meta.listener,
                "disconnecting: its credentials are no longer valid after the reload");
            session.send_control(Control::Disconnect(
                ReasonCode::ADMINISTRATIVE_ACTION,
                "credentials changed",
            ));
        }
    }

    /// Registers enhanced-authentication methods (before the broker starts serving).
    /// Reserves `ids` for the bridges' local ends: a client connecting with one of them is
    /// refused, so it cannot take a bridge's session over.
    pub fn with_bridge_ids(mut self, ids: Vec<String>) -> BrokerState {
        self.bridge_ids = ids;
        self
    }

    /// For bridge `bridge`: follows whether this node brings the remote broker's messages in
    /// (see [`cluster::Cluster::bridge_inbound`]); None: always.
    pub fn bridge_inbound(&self, bridge: &str) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.cluster.bridge_inbound(bridge)
    }

    /// Whether `client_id` is a bridge's local client id (see [`Self::with_bridge_ids`]).
    pub fn is_bridge_id(&self, client_id: &str) -> bool {
        self.bridge_ids.iter().any(|id| id == client_id)
    }

    pub fn with_authenticators(mut self, a: Vec<Arc<dyn Authenticator>>) -> BrokerState {
        self.authenticators = a;
        self
    }

    /// The authenticator for an MQTT 5 Authentication Method, if one is registered.
    pub fn authenticator(&self, method: &str) -> Option<&Arc<dyn Authenticator>> {
        self.authenticators.iter().find(|a| a.method() == method)
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn session_limits(&self) -> Limits {
        Limits {
            max_queued_messages: u32::try_from(self.config.mqtt.max_queued_messages)
                .unwrap_or(u32::MAX),
            max_queued_bytes: u32::try_from(self.config.mqtt.max_queued_bytes).unwrap_or(u32::MAX),
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.read().len()
    }

    pub fn shared_subscription_count(&self) -> usize {
        self.subscriptions.read().shared_len()
    }

    /// Nodes in the subscription trie ([`SubscriptionTrie::node_count`]): back to its earlier
    /// value once a session's subscriptions are gone. Walks the trie under its read lock, so it
    /// is for tests and diagnostics, not for a periodic metric.
    pub fn subscription_node_count(&self) -> usize {
        self.subscriptions.read().node_count()
    }

    /// Messages waiting in session queues (connected or not), for `$SYS` store figures.
    pub fn queued_messages(&self) -> u64 {
        self.all_sessions()
            .iter()
            .map(|s| s.with_state(|st| st.queued_len() + st.inflight_len()) as u64)
            .sum()
    }

    /// QoS 1 and 2 messages sent and not yet acknowledged, over all sessions.
    pub fn inflight_messages(&self) -> u64 {
        self.all_sessions()
            .iter()
            .map(|s| s.with_state(|st| st.inflight_len()) as u64)
            .sum()
    }

    /// Whether `QoS` is allowed by `max_qos`.
    pub fn max_qos(&self) -> QoS {
        QoS::from_u8(self.config.mqtt.max_qos).unwrap_or(QoS::ExactlyOnce)
    }

    /// Submits writes nothing waits for.
    fn submit(&self, ops: Vec<Op>) {
        if let Some(p) = &self.persistence {
            p.submit(ops);
        }
    }
}

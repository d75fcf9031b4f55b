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
//! 1. `Session::connect_lock` (async; serialises CONNECTs for one client id, held across the
//!    takeover wait only)
//! 2. `Session::link` (which connection owns the session)
//! 3. the subscription trie
//! 4. the retained store
//! 5. the auth snapshot
//! 6. `Session::meta`
//! 7. `Session::state`
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

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::enhanced::Authenticator;
use crate::auth::{Access, AuthConfig, SubscribeVerdict};
use crate::codec::ReasonCode;
use crate::codec::{self, topic, QoS, SubscriptionOptions};
use crate::config::{Config, SlowConsumerPolicy};
use crate::message::Message;
use crate::metrics::Metrics;
use crate::persistence::{self, Persistence};
use crate::router::retained::RetainedStore;
use crate::router::trie::{Subscription, SubscriptionTrie};
use crate::session::{
    Control, Delivery, DropReason, Limits, Ownership, Persistence as SessionPersistence, Session,
    SessionMeta,
};
use crate::storage::{unix_ms_now, Op};
use crate::sync::{Rank, RwLock};

/// How long a CONNECT waits for the connection it takes over to finish closing.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// The global budget of queued bytes (overload rule (b)): above `high` the broker stops reading
/// from publishers until the total falls below `low`.
#[derive(Debug)]
pub struct Budget {
    /// Signed: a connection on another thread can take a delivery out of its queue (and
    /// subtract its cost) before the router that queued it has added that cost, so the sum
    /// may dip below zero for a moment.
    used: AtomicI64,
    high: u64,
    low: u64,
    saturated: AtomicBool,
    relieved: Notify,
}

impl Budget {
    pub fn new(high: u64, low: u64) -> Budget {
        Budget {
            used: AtomicI64::new(0),
            high,
            low,
            saturated: AtomicBool::new(false),
            relieved: Notify::new(),
        }
    }

    pub fn add(&self, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let used = self.used.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if used > clamp(self.high) && !self.saturated.load(Ordering::Relaxed) {
            self.saturated.store(true, Ordering::Relaxed);
            tracing::warn!(
                queued_bytes = used,
                high = self.high,
                "global queue budget exceeded: pausing reads from publishers"
            );
        }
    }

    pub fn sub(&self, n: usize) {
        if n == 0 {
            return;
        }
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let used = self.used.fetch_sub(n, Ordering::Relaxed).saturating_sub(n);
        if used < clamp(self.low) && self.saturated.load(Ordering::Relaxed) {
            self.saturated.store(false, Ordering::Relaxed);
            self.relieved.notify_waiters();
        }
    }

    pub fn used(&self) -> u64 {
        u64::try_from(self.used.load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub fn is_saturated(&self) -> bool {
        self.saturated.load(Ordering::Relaxed)
    }

    /// Resolves once the budget is below its low mark.
    pub async fn relieved(&self) {
        loop {
            let notified = self.relieved.notified();
            if !self.is_saturated() {
                return;
            }
            notified.await;
        }
    }
}

fn clamp(mark: u64) -> i64 {
    i64::try_from(mark).unwrap_or(i64::MAX)
}

/// What the subscription trie holds per subscription: the session to deliver to, the session
/// state's epoch when it subscribed, and for a shared subscription its `$share/g/f` filter.
#[derive(Clone, Debug)]
pub struct SubHandle {
    pub session: Arc<Session>,
    /// See [`crate::session::SessionState::epoch`].
    pub epoch: u64,
    pub share: Option<Arc<str>>,
}

/// A delivery routed to one session, not yet queued (or waiting for room in its queue).
pub struct Routed {
    pub session: Arc<Session>,
    /// The session state's epoch the routing subscription belongs to.
    epoch: u64,
    delivery: Delivery,
}

/// A session as claimed by a CONNECT.
pub struct Claimed {
    pub session: Arc<Session>,
    pub ownership: Ownership,
    pub session_present: bool,
    /// Store writes CONNACK must wait for (a persistent session's record).
    pub store_ops: Vec<Op>,
}

/// What routing one PUBLISH produced.
#[derive(Default)]
pub struct Publication {
    /// QoS 1/2 deliveries that found a connected subscriber's queue full (rule (c)).
    pub blocked: Vec<Routed>,
    /// Store writes the acknowledgement must wait for (queue entries, retained).
    pub ops: Vec<Op>,
}

/// State shared by every connection.
pub struct BrokerState {
    pub config: Config,
    pub metrics: Metrics,
    pub budget: Budget,
    /// Per-listener publish rate limits, indexed like `config.listeners`.
    pub listener_rates: Vec<Option<Arc<crate::ratelimit::ListenerRates>>>,
    pub shutdown: CancellationToken,
    sessions: DashMap<Arc<str>, Arc<Session>>,
    subscriptions: RwLock<SubscriptionTrie<SubHandle>>,
    retained: RwLock<RetainedStore<Arc<Message>>>,
    started: Instant,
    authenticators: Vec<Arc<dyn Authenticator>>,
    /// Password file, ACL and `allow_anonymous`, replaced whole on reload.
    auth: RwLock<Arc<AuthConfig>>,
    /// Bumped on every auth reload so connections refresh their cached snapshot.
    auth_generation: AtomicU64,
    /// The store, when persistence is on.
    persistence: Option<Arc<Persistence>>,
}

/// Another user's CONNECT for a session that belongs to someone else
/// (`auth.session_owner_check`).
#[derive(Debug)]
pub struct NotOwner;

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
        BrokerState {
            metrics: Metrics::with_listeners(config.listeners.len()),
            config,
            budget,
            listener_rates,
            shutdown,
            sessions: DashMap::new(),
            subscriptions: RwLock::new(Rank::Trie, trie),
            retained: RwLock::new(Rank::Retained, RetainedStore::new()),
            started: Instant::now(),
            authenticators: Vec::new(),
            auth: RwLock::new(Rank::Auth, Arc::new(AuthConfig::default())),
            auth_generation: AtomicU64::new(0),
            persistence: None,
        }
    }

    /// Installs the store (at start, before serving).
    pub fn with_persistence(mut self, p: Option<Arc<Persistence>>) -> BrokerState {
        self.persistence = p;
        self
    }

    pub fn persistence(&self) -> Option<&Arc<Persistence>> {
        self.persistence.as_ref()
    }

    /// Runs `f` once `delay` has passed, unless the broker shuts down first. The timer holds
    /// only a weak reference: a pending session expiry or will must not keep the state (and
    /// with it the store and its lock) alive after the broker has stopped.
    pub fn after<F>(self: &Arc<Self>, delay: Duration, f: F)
    where
        F: FnOnce(&Arc<BrokerState>) + Send + 'static,
    {
        let state = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(delay) => {
                    if let Some(state) = state.upgrade() {
                        f(&state);
                    }
                }
            }
        });
    }

    /// Adds a session restored from the store (at start, before serving).
    pub fn restore_session(&self, session: Arc<Session>) {
        self.sessions.insert(session.client_id.clone(), session);
    }

    /// Adds a retained message restored from the store (at start, before serving).
    pub fn restore_retained(&self, msg: Arc<Message>) {
        let topic = msg.topic.clone();
        self.retained.write().insert(&topic, msg);
    }

    /// Installs the auth snapshot (at start).
    pub fn with_auth(self, auth: AuthConfig) -> BrokerState {
        *self.auth.write() = Arc::new(auth);
        self
    }

    /// The current auth snapshot and its generation.
    pub fn auth(&self) -> (Arc<AuthConfig>, u64) {
        let a = self.auth.read().clone();
        (a, self.auth_generation.load(Ordering::Acquire))
    }

    pub fn auth_generation(&self) -> u64 {
        self.auth_generation.load(Ordering::Acquire)
    }

    /// Replaces the auth snapshot (reload) and drops subscriptions the new ACL refuses
    /// outright; READ is checked per message anyway. Returns how many were dropped.
    pub fn replace_auth(&self, auth: AuthConfig) -> usize {
        let auth = Arc::new(auth);
        *self.auth.write() = auth.clone();
        self.auth_generation.fetch_add(1, Ordering::AcqRel);
        let mut dropped = 0;
        for session in self.all_sessions() {
            let username = session.meta().username;
            for filter in session.with_state(|s| s.subscription_filters()) {
                let verdict =
                    auth.check_subscribe(&session.client_id, username.as_deref(), &filter);
                if verdict == SubscribeVerdict::Denied && self.unsubscribe(&session, &filter) {
                    tracing::info!(client_id = %session.client_id, %filter,
                        "subscription removed: the reloaded ACL denies it");
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Registers enhanced-authentication methods (before the broker starts serving).
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
            max_queued_messages: self.config.mqtt.max_queued_messages,
            max_queued_bytes: usize::try_from(self.config.mqtt.max_queued_bytes)
                .unwrap_or(usize::MAX),
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

    /// Every session in the registry, collected so that no session lock is ever taken under
    /// a registry (DashMap shard) guard.
    fn all_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.iter().map(|e| e.value().clone()).collect()
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

    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Claims the session for `client_id` for a new connection, taking it over from a connected
    /// one first [MQTT-3.1.4-2]. CONNECTs for one client id are serialised by the session's
    /// `connect_lock`, so there are never two live owners.
    pub async fn claim_session(
        &self,
        client_id: &str,
        clean_start: bool,
        meta: SessionMeta,
        will: Option<&codec::Will>,
    ) -> Result<Claimed, NotOwner> {
        loop {
            let session = self.lookup_or_create(client_id);
            // Registered before `detach_current`, so the end of a discard it finds under way
            // cannot be missed.
            let discarded = session.discarded();
            let _serial = session.connect_lock.lock().await;
            // A session is resumed or taken over only by the user who created it.
            if self.config.auth.session_owner_check
                && session.was_attached()
                && !session.is_removed()
                && session.meta().username != meta.username
            {
                return Err(NotOwner);
            }
            let Ok(previous) = session.detach_current() else {
                // Being discarded (or discarded) while we waited: once that is done, look the
                // id up again.
                drop(_serial);
                if !session.is_gone()
                    && tokio::time::timeout(TAKEOVER_TIMEOUT, discarded)
                        .await
                        .is_err()
                {
                    tracing::warn!(client_id, "discard of the previous session did not finish");
                }
                continue;
            };
            if let Some(previous) = previous {
                tracing::info!(client_id, "session taken over by a new connection");
                if let Some(tx) = previous.control {
                    let _ = tx.send(Control::TakenOver);
                }
                if tokio::time::timeout(TAKEOVER_TIMEOUT, previous.closed)
                    .await
                    .is_err()
                {
                    tracing::warn!(client_id, "previous connection did not close in time");
                }
            }
            // A session that ended with its connection (clean session / expiry 0) is not
            // resumed, even when that connection was only now taken over [MQTT-3.1.2-6].
            let previous_ended = session.meta().expiry == Some(Duration::ZERO);
            let had_session = session.was_attached() && !previous_ended;
            if clean_start || previous_ended {
                self.discard_state(&session);
            }
            let store_ops = self.persist_claim(&session, &meta, will);
            session.set_meta(meta);
            let ownership = session.attach();
            drop(_serial);
            drop(discarded);
            return Ok(Claimed {
                session_present: had_session && !clean_start,
                session,
                ownership,
                store_ops,
            });
        }
    }

    /// A persistent session (expiry not 0) is stored and spills its queue to disk; a session
    /// that becomes non-persistent is deleted from the store.
    fn persist_claim(
        &self,
        session: &Arc<Session>,
        meta: &SessionMeta,
        will: Option<&codec::Will>,
    ) -> Vec<Op> {
        let Some(p) = &self.persistence else {
            return Vec::new();
        };
        if meta.expiry == Some(Duration::ZERO) {
            if session.is_persistent() {
                p.submit(vec![Op::DeleteSession {
                    client_id: session.client_id.to_string(),
                }]);
                session.set_persistence(None);
            }
            return Vec::new();
        }
        if !session.is_persistent() {
            session.set_persistence(Some(SessionPersistence {
                memory_cap: p.memory_cap,
                next_seq: 0,
                trusted_until: 0,
                backlog: None,
            }));
        }
        vec![Op::PutSession(persistence::session_record(
            &session.client_id,
            meta,
            None,
            will,
        ))]
    }

    /// Records that a persistent session's client went away (for expiry after a restart),
    /// with the will still waiting out its delay, if any.
    pub fn persist_disconnect(&self, session: &Session, pending_will: Option<&codec::Will>) {
        self.persist_disconnected(session, unix_ms_now(), pending_will);
    }

    /// Records that the delayed will of a session disconnected since `disconnected_at_unix_ms`
    /// has been published, so a restart does not publish it again.
    pub fn will_published(&self, session: &Session, disconnected_at_unix_ms: u64) {
        self.persist_disconnected(session, disconnected_at_unix_ms, None);
    }

    fn persist_disconnected(&self, session: &Session, at_unix_ms: u64, will: Option<&codec::Will>) {
        // An expired session's record is gone; rewriting it would resurrect it.
        if session.is_removed() {
            return;
        }
        if let (Some(p), true) = (&self.persistence, session.is_persistent()) {
            let meta = session.meta();
            p.submit(vec![Op::PutSession(persistence::session_record(
                &session.client_id,
                &meta,
                Some(at_unix_ms),
                will,
            ))]);
        }
    }

    /// The registered session for `client_id`, or a new one. A session still being discarded
    /// is returned as it is (the claim waits for the discard); only one whose discard finished
    /// is replaced. Under the map guard only atomics are read.
    fn lookup_or_create(&self, client_id: &str) -> Arc<Session> {
        if let Some(s) = self.sessions.get(client_id) {
            if !s.is_gone() {
                return s.clone();
            }
        }
        let limits = self.session_limits();
        let mut entry = self
            .sessions
            .entry(Arc::from(client_id))
            .or_insert_with(|| Arc::new(Session::new(Arc::from(client_id), limits)));
        if entry.is_gone() {
            *entry = Arc::new(Session::new(Arc::from(client_id), limits));
        }
        entry.clone()
    }

    /// Drops a session's subscriptions and queued state (clean start, or the session ended).
    /// The trie entries go first, so no new routing finds the session; the clear then bumps
    /// its epoch, so deliveries routed before are refused.
    fn discard_state(&self, session: &Arc<Session>) {
        let filters = session.with_state(|s| s.subscription_filters());
        if !filters.is_empty() {
            let mut trie = self.subscriptions.write();
            for f in &filters {
                trie.unsubscribe(f, &session.client_id);
            }
        }
        let freed = session.with_state(|s| s.clear());
        self.budget.sub(freed);
        if let (Some(p), true) = (&self.persistence, session.is_persistent()) {
            p.submit(vec![Op::DeleteSession {
                client_id: session.client_id.to_string(),
            }]);
        }
    }

    /// Called when a connection ends. If it still owned the session and the session ends with
    /// the connection, the session is discarded; otherwise it stays for a later resume.
    pub fn end_connection(&self, session: &Arc<Session>, generation: u64) -> bool {
        let ends = session.meta().expiry == Some(Duration::ZERO);
        let still_owner = session.release(generation, ends);
        if still_owner && ends {
            self.remove_session(session);
        }
        still_owner
    }

    /// Completes a discard begun by `Session::release`: subscriptions and queue dropped, the
    /// registry entry removed, then waiting CONNECTs woken.
    fn remove_session(&self, session: &Arc<Session>) {
        self.discard_state(session);
        self.sessions
            .remove_if(&session.client_id, |_, s| Arc::ptr_eq(s, session));
        session.finish_discard();
    }

    /// Discards a session whose expiry interval passed while no connection claimed it
    /// [MQTT-3.1.2-23]. `generation` is the owner that left; a reconnect since then wins.
    pub fn expire_session(&self, session: &Arc<Session>, generation: u64) {
        if session.is_connected() || !session.owned_by(generation) {
            return;
        }
        self.redistribute_shared(session);
        if session.release(generation, true) {
            self.remove_session(session);
            self.metrics.clients_expired.inc();
            tracing::info!(client_id = %session.client_id, "session expired");
        }
    }

    /// Hands the messages a departing shared-subscription member had not completed to other
    /// members of the same group, connected ones first [MQTT-4.8.2-6]; they are removed from
    /// this session so they are never delivered twice. Messages with no other member stay.
    pub fn redistribute_shared(&self, session: &Arc<Session>) {
        let groups = session.with_state(|s| s.shared_groups());
        if groups.is_empty() {
            return;
        }
        let me = &session.client_id;
        let movable: Vec<Arc<str>> = {
            let trie = self.subscriptions.read();
            groups
                .into_iter()
                .filter(|g| trie.pick_shared(g, |s| s.client_id != *me).is_some())
                .collect()
        };
        let (moved, freed) = session.with_state(|s| {
            s.take_shared(|d| d.shared.as_ref().is_some_and(|g| movable.contains(g)))
        });
        self.budget.sub(freed);
        if moved.is_empty() {
            return;
        }
        tracing::info!(client_id = %me, count = moved.len(),
            "handing unacknowledged shared-subscription messages to other members");
        let mut ops = Vec::new();
        for d in moved {
            self.hand_over(session, d, &mut ops);
        }
        self.submit(ops);
    }

    /// Queues one message a departing shared member gave up with another member: a connected
    /// one if any, else any other. A member discarded in the meantime refuses it and the next
    /// is tried; with none left, it goes back to the departing session.
    fn hand_over(&self, from: &Arc<Session>, d: Delivery, ops: &mut Vec<Op>) {
        let Some(share) = d.shared.clone() else {
            return;
        };
        for _ in 0..3 {
            let target = {
                let trie = self.subscriptions.read();
                let other = |online: bool| {
                    trie.pick_shared(&share, |s| {
                        s.client_id != from.client_id
                            && (!online || s.handle.session.is_connected())
                    })
                };
                other(true)
                    .or_else(|| other(false))
                    .map(|t| (t.handle.clone(), t.options.qos, t.id))
            };
            let Some((handle, qos, id)) = target else {
                break;
            };
            let redirected = Delivery {
                qos: d.msg.qos.min(qos),
                retain: false,
                subscription_ids: id.into_iter().collect(),
                shared: d.shared.clone(),
                seq: None,
                msg: d.msg.clone(),
            };
            let routed = Routed {
                session: handle.session,
                epoch: handle.epoch,
                delivery: redirected,
            };
            if self.deliver(routed, ops) != Some(DropReason::Unsubscribed) {
                return;
            }
        }
        let epoch = from.with_state(|s| s.epoch());
        let back = Routed {
            session: from.clone(),
            epoch,
            delivery: d,
        };
        self.deliver(back, ops);
    }

    /// Submits writes nothing waits for.
    fn submit(&self, ops: Vec<Op>) {
        if let Some(p) = &self.persistence {
            p.submit(ops);
        }
    }

    /// Adds or replaces a subscription. Returns true when it replaced one [MQTT-3.8.4-3].
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> bool {
        let epoch = session.with_state(|s| {
            s.add_subscription(filter, options, id);
            s.epoch()
        });
        self.subscriptions.write().subscribe(
            filter,
            Subscription {
                client_id: session.client_id.clone(),
                handle: SubHandle {
                    session: session.clone(),
                    epoch,
                    share: topic::parse_shared(filter).map(|_| Arc::from(filter)),
                },
                options,
                id,
            },
        )
    }

    /// Removes a subscription; true if it existed.
    pub fn unsubscribe(&self, session: &Arc<Session>, filter: &str) -> bool {
        session.with_state(|s| s.remove_subscription(filter));
        self.subscriptions
            .write()
            .unsubscribe(filter, &session.client_id)
    }

    /// Queues the retained messages matching `filter` for `session` [MQTT-3.3.1-6].
    pub fn deliver_retained(
        &self,
        session: &Arc<Session>,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) {
        let mut found = Vec::new();
        self.retained.read().matches(filter, &mut found);
        let now = Instant::now();
        let auth = self.auth.read().clone();
        let epoch = session.with_state(|s| s.epoch());
        let mut ops = Vec::new();
        for (_, msg) in found {
            if msg.is_expired(now) {
                continue;
            }
            if auth.acl.is_some() && !self.may_read(&auth, session, &msg.topic) {
                continue;
            }
            let d = Delivery {
                qos: msg.qos.min(options.qos),
                // Retained messages sent because of a new subscription carry RETAIN=1.
                retain: true,
                subscription_ids: id.into_iter().collect(),
                shared: None,
                seq: None,
                msg,
            };
            let routed = Routed {
                session: session.clone(),
                epoch,
                delivery: d,
            };
            self.deliver(routed, &mut ops);
        }
        self.submit(ops);
    }

    /// Routes a message to every matching subscription and updates the retained store. One copy
    /// per session for overlapping subscriptions, at the highest granted QoS, carrying every
    /// matching subscription identifier [MQTT-3.3.4-3]; one member per shared group.
    pub fn publish(&self, msg: Arc<Message>) -> Publication {
        let mut ops = Vec::new();
        if msg.retain {
            self.update_retained(&msg, &mut ops);
        }
        let targets = self.route(&msg);
        let auth = self.auth.read().clone();
        let acl = auth.acl.is_some();
        let mut blocked = Vec::new();
        for t in targets {
            // READ is checked per message: a subscription may cover topics the ACL denies.
            if acl && !self.may_read(&auth, &t.session, &msg.topic) {
                continue;
            }
            self.deliver_or_block(t, &mut blocked, &mut ops);
        }
        Publication { blocked, ops }
    }

    /// Stores or deletes a retained message; the store write is added to `ops`.
    fn update_retained(&self, msg: &Arc<Message>, ops: &mut Vec<Op>) {
        {
            let mut retained = self.retained.write();
            if msg.payload.is_empty() {
                retained.remove(&msg.topic);
            } else {
                retained.insert(&msg.topic, msg.clone());
            }
        }
        // $SYS is republished by the broker after a restart; it is not stored.
        if let (Some(p), false) = (&self.persistence, msg.topic.starts_with("$SYS")) {
            ops.push(if msg.payload.is_empty() {
                Op::DeleteRetained {
                    topic: msg.topic.to_string(),
                }
            } else {
                Op::PutRetained(p.stored(msg).1.as_ref().clone())
            });
        }
    }

    /// The deliveries a message makes, collected under the trie read lock, which is released
    /// before anything is queued. Overlapping subscriptions of one session are merged.
    fn route(&self, msg: &Arc<Message>) -> Vec<Routed> {
        let trie = self.subscriptions.read();
        let mut matches = Vec::new();
        trie.matches_with(&msg.topic, &mut matches, &|h| h.session.is_connected());
        // Overlapping subscriptions of one session must yield one copy: bring them together.
        if matches.len() > 1 {
            matches.sort_unstable_by_key(|m| {
                (
                    m.shared_group.is_some(),
                    Arc::as_ptr(&m.sub.handle.session) as usize,
                )
            });
        }
        let mut out: Vec<Routed> = Vec::with_capacity(matches.len());
        for m in &matches {
            let sub = m.sub;
            let is_shared = m.shared_group.is_some();
            if !is_shared
                && sub.options.no_local
                && msg.publisher.as_deref() == Some(&*sub.client_id)
            {
                continue;
            }
            let qos = msg.qos.min(sub.options.qos);
            let retain = sub.options.retain_as_published && msg.retain;
            if let Some(last) = out.last_mut() {
                if !is_shared
                    && last.delivery.shared.is_none()
                    && Arc::ptr_eq(&last.session, &sub.handle.session)
                {
                    let d = &mut last.delivery;
                    d.qos = d.qos.max(qos);
                    d.retain |= retain;
                    d.subscription_ids.extend(sub.id);
                    continue;
                }
            }
            out.push(Routed {
                session: sub.handle.session.clone(),
                epoch: sub.handle.epoch,
                delivery: Delivery {
                    msg: msg.clone(),
                    qos,
                    retain,
                    subscription_ids: sub.id.into_iter().collect(),
                    shared: sub.handle.share.clone(),
                    seq: None,
                },
            });
        }
        out
    }

    fn may_read(&self, auth: &AuthConfig, session: &Session, topic: &str) -> bool {
        let username = session.meta().username;
        auth.check_acl(&session.client_id, username.as_deref(), topic, Access::Read)
    }

    /// Delivers, except that a QoS 1/2 delivery to a connected subscriber whose queue is full is
    /// handed back: the publisher's acknowledgement then waits for room (overload rule (c)). A
    /// subscriber that made no room in time is "stuck" and gets drops instead, so it cannot hold
    /// publishers back for long.
    fn deliver_or_block(&self, r: Routed, blocked: &mut Vec<Routed>, ops: &mut Vec<Op>) {
        let session = &r.session;
        if r.delivery.qos != QoS::AtMostOnce && !session.is_stuck() && session.is_connected() {
            let copy = self.capture(session, &r.delivery);
            match session.try_deliver(r.delivery, r.epoch) {
                Ok(e) => {
                    self.budget.add(e.cost);
                    self.record(session, e.seq, copy, ops);
                }
                Err((DropReason::QueueFull, delivery)) => blocked.push(Routed { delivery, ..r }),
                Err((other, _)) => self.count_drop(session, other),
            }
            return;
        }
        self.deliver(r, ops);
    }

    /// What a stored queue entry needs from a delivery, taken before it moves into the queue
    /// (persistent sessions, QoS 1/2 only).
    fn capture(&self, session: &Session, d: &Delivery) -> Option<Delivery> {
        (self.persistence.is_some() && d.qos != QoS::AtMostOnce && session.is_persistent()).then(
            || Delivery {
                msg: d.msg.clone(),
                qos: d.qos,
                retain: d.retain,
                subscription_ids: d.subscription_ids.clone(),
                shared: None,
                seq: None,
            },
        )
    }

    /// The queue entry of a delivery that got a stored position.
    fn record(
        &self,
        session: &Session,
        seq: Option<u64>,
        copy: Option<Delivery>,
        ops: &mut Vec<Op>,
    ) {
        if let (Some(p), Some(seq), Some(copy)) = (&self.persistence, seq, copy) {
            ops.push(p.enqueue_op(&session.client_id, seq, &copy));
        }
    }

    /// Publishes a message the broker itself originates (a will, `$SYS`): nobody waits for an
    /// acknowledgement, so deliveries that find a full queue are dropped (counted).
    pub fn publish_unacknowledged(&self, msg: Arc<Message>) {
        let publication = self.publish(msg);
        for r in publication.blocked {
            self.count_drop(&r.session, DropReason::QueueFull);
        }
        self.submit(publication.ops);
    }

    /// Retries blocked deliveries; returns those still blocked.
    pub fn retry_blocked(&self, items: Vec<Routed>, ops: &mut Vec<Op>) -> Vec<Routed> {
        let mut still = Vec::new();
        for r in items {
            self.deliver_or_block(r, &mut still, ops);
        }
        still
    }

    /// Gives up on blocked deliveries: their subscribers are marked stuck and the messages
    /// dropped (counted).
    pub fn abandon_blocked(&self, items: Vec<Routed>) {
        for Routed { session, .. } in items {
            if !session.is_stuck() {
                tracing::warn!(client_id = %session.client_id,
                    "slow consumer: queue full and not draining; dropping its messages");
                session.set_stuck(true);
            }
            self.count_drop(&session, DropReason::QueueFull);
        }
    }

    /// Queues a delivery whatever the queue's state; returns why it was refused, if it was
    /// (and counts that).
    fn deliver(&self, r: Routed, ops: &mut Vec<Op>) -> Option<DropReason> {
        let session = &r.session;
        let copy = self.capture(session, &r.delivery);
        match session.deliver(r.delivery, r.epoch) {
            Ok(e) => {
                self.budget.add(e.cost);
                self.record(session, e.seq, copy, ops);
                None
            }
            Err(reason) => {
                self.count_drop(session, reason);
                Some(reason)
            }
        }
    }

    fn count_drop(&self, session: &Session, reason: DropReason) {
        match reason {
            DropReason::QueueFull => {
                self.metrics.dropped_queue_full.inc();
                let limits = &self.config.limits;
                if limits.slow_consumer_policy == SlowConsumerPolicy::Disconnect {
                    let full_for = session.with_state(|s| s.note_full(Instant::now()));
                    if full_for >= limits.slow_consumer_grace {
                        session.send_control(Control::Disconnect(
                            ReasonCode::QUOTA_EXCEEDED,
                            "slow consumer: queue full for longer than slow_consumer_grace",
                        ));
                    }
                }
            }
            DropReason::Offline => self.metrics.dropped_offline_qos0.inc(),
            DropReason::Expired => self.metrics.dropped_expired.inc(),
            // Routed by a subscription dropped since: never owed, not a loss.
            DropReason::Unsubscribed => {}
        }
    }

    /// Closes every connection for shutdown.
    pub fn disconnect_all(&self, reason: ReasonCode) {
        for session in self.all_sessions() {
            session.send_control(Control::Disconnect(reason, "server shutting down"));
        }
    }

    /// Whether `QoS` is allowed by `max_qos`.
    pub fn max_qos(&self) -> QoS {
        QoS::from_u8(self.config.mqtt.max_qos).unwrap_or(QoS::ExactlyOnce)
    }
}

//! The broker's shared state and the operations connections perform on it: claiming a session
//! (takeover), routing a PUBLISH to every matching session, subscribing and unsubscribing, and
//! ending a session.
//!
//! Lock order (never reversed, never held across `.await`): session link -> subscription trie ->
//! session state. Routing takes the trie read lock and then each matching session's state lock
//! for one enqueue.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::RwLock;
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

/// What the subscription trie holds per subscription: the session to deliver to and, for a
/// shared subscription, its `$share/g/f` filter.
#[derive(Clone, Debug)]
pub struct SubHandle {
    pub session: Arc<Session>,
    pub share: Option<Arc<str>>,
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
    pub blocked: Vec<(Arc<Session>, Delivery)>,
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
            subscriptions: RwLock::new(trie),
            retained: RwLock::new(RetainedStore::new()),
            started: Instant::now(),
            authenticators: Vec::new(),
            auth: RwLock::new(Arc::new(AuthConfig::default())),
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
        let sessions: Vec<Arc<Session>> = self.sessions.iter().map(|e| e.value().clone()).collect();
        for session in sessions {
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

    /// Messages waiting in session queues (connected or not), for `$SYS` store figures.
    pub fn queued_messages(&self) -> u64 {
        self.sessions
            .iter()
            .map(|s| s.with_state(|st| st.queued_len() + st.inflight_len()) as u64)
            .sum()
    }

    /// QoS 1 and 2 messages sent and not yet acknowledged, over all sessions.
    pub fn inflight_messages(&self) -> u64 {
        self.sessions
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
                // Discarded while we waited; look the id up again.
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

    fn lookup_or_create(&self, client_id: &str) -> Arc<Session> {
        if let Some(s) = self.sessions.get(client_id) {
            if !s.is_removed() {
                return s.clone();
            }
        }
        let limits = self.session_limits();
        let mut entry = self
            .sessions
            .entry(Arc::from(client_id))
            .or_insert_with(|| Arc::new(Session::new(Arc::from(client_id), limits)));
        if entry.is_removed() {
            *entry = Arc::new(Session::new(Arc::from(client_id), limits));
        }
        entry.clone()
    }

    /// Drops a session's subscriptions and queued state (clean start, or the session ended).
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
        let still_owner = session.release(generation, ends, || self.discard_state(session));
        if still_owner && ends {
            self.sessions
                .remove_if(&session.client_id, |_, s| Arc::ptr_eq(s, session));
        }
        still_owner
    }

    /// Discards a session whose expiry interval passed while no connection claimed it
    /// [MQTT-3.1.2-23]. `generation` is the owner that left; a reconnect since then wins.
    pub fn expire_session(&self, session: &Arc<Session>, generation: u64) {
        if session.is_connected() || !session.owned_by(generation) {
            return;
        }
        self.redistribute_shared(session);
        if session.release(generation, true, || self.discard_state(session)) {
            self.sessions
                .remove_if(&session.client_id, |_, s| Arc::ptr_eq(s, session));
            self.metrics.clients_expired.inc();
            tracing::info!(client_id = %session.client_id, "session expired");
        }
    }

    /// Hands the messages a departing shared-subscription member had not completed to other
    /// members of the same group, connected ones first [MQTT-4.8.2-6]; they are removed from
    /// this session so they are never delivered twice. Messages with no other member stay.
    pub fn redistribute_shared(&self, session: &Arc<Session>) {
        let trie = self.subscriptions.read();
        let me = &session.client_id;
        let other = |d: &Delivery, online: bool| {
            d.shared.as_deref().and_then(|share| {
                trie.pick_shared(share, |s| {
                    s.client_id != *me && (!online || s.handle.session.is_connected())
                })
            })
        };
        let (moved, freed) = session.with_state(|s| s.take_shared(|d| other(d, false).is_some()));
        self.budget.sub(freed);
        if moved.is_empty() {
            return;
        }
        tracing::info!(client_id = %me, count = moved.len(),
            "handing unacknowledged shared-subscription messages to other members");
        let mut ops = Vec::new();
        for d in moved {
            let Some(target) = other(&d, true).or_else(|| other(&d, false)) else {
                continue;
            };
            let redirected = Delivery {
                qos: d.msg.qos.min(target.options.qos),
                retain: false,
                subscription_ids: target.id.into_iter().collect(),
                shared: d.shared.clone(),
                seq: None,
                msg: d.msg,
            };
            self.deliver(&target.handle.session, redirected, &mut ops);
        }
        self.submit(ops);
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
        session.with_state(|s| s.add_subscription(filter, options, id));
        self.subscriptions.write().subscribe(
            filter,
            Subscription {
                client_id: session.client_id.clone(),
                handle: SubHandle {
                    session: session.clone(),
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
            self.deliver(session, d, &mut ops);
        }
        self.submit(ops);
    }

    /// Routes a message to every matching subscription and updates the retained store. One copy
    /// per session for overlapping subscriptions, at the highest granted QoS, carrying every
    /// matching subscription identifier [MQTT-3.3.4-3]; one member per shared group.
    pub fn publish(&self, msg: Arc<Message>) -> Publication {
        let mut blocked = Vec::new();
        let mut ops = Vec::new();
        if msg.retain {
            let mut retained = self.retained.write();
            if msg.payload.is_empty() {
                retained.remove(&msg.topic);
            } else {
                retained.insert(&msg.topic, msg.clone());
            }
            // $SYS is republished by the broker after a restart; it is not stored.
            if let (Some(p), false) = (&self.persistence, msg.topic.starts_with("$SYS")) {
                ops.push(if msg.payload.is_empty() {
                    Op::DeleteRetained {
                        topic: msg.topic.to_string(),
                    }
                } else {
                    Op::PutRetained(p.stored(&msg).1.as_ref().clone())
                });
            }
        }
        let auth = self.auth.read().clone();
        let acl = auth.acl.is_some();
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
        let mut pending: Option<(&SubHandle, Delivery)> = None;
        for m in &matches {
            let sub = m.sub;
            let is_shared = m.shared_group.is_some();
            if !is_shared
                && sub.options.no_local
                && msg.publisher.as_deref() == Some(&*sub.client_id)
            {
                continue;
            }
            // READ is checked per message: a subscription may cover topics the ACL denies.
            if acl && !self.may_read(&auth, &sub.handle.session, &msg.topic) {
                continue;
            }
            let qos = msg.qos.min(sub.options.qos);
            let retain = sub.options.retain_as_published && msg.retain;
            if let Some((h, d)) = pending.as_mut() {
                if !is_shared && Arc::ptr_eq(&h.session, &sub.handle.session) {
                    d.qos = d.qos.max(qos);
                    d.retain |= retain;
                    d.subscription_ids.extend(sub.id);
                    continue;
                }
            }
            if let Some((h, d)) = pending.take() {
                self.deliver_or_block(&h.session, d, &mut blocked, &mut ops);
            }
            let d = Delivery {
                msg: msg.clone(),
                qos,
                retain,
                subscription_ids: sub.id.into_iter().collect(),
                shared: sub.handle.share.clone(),
                seq: None,
            };
            if is_shared {
                self.deliver_or_block(&sub.handle.session, d, &mut blocked, &mut ops);
            } else {
                pending = Some((&sub.handle, d));
            }
        }
        if let Some((h, d)) = pending {
            self.deliver_or_block(&h.session, d, &mut blocked, &mut ops);
        }
        Publication { blocked, ops }
    }

    fn may_read(&self, auth: &AuthConfig, session: &Session, topic: &str) -> bool {
        let username = session.meta().username;
        auth.check_acl(&session.client_id, username.as_deref(), topic, Access::Read)
    }

    /// Delivers, except that a QoS 1/2 delivery to a connected subscriber whose queue is full is
    /// handed back: the publisher's acknowledgement then waits for room (overload rule (c)). A
    /// subscriber that made no room in time is "stuck" and gets drops instead, so it cannot hold
    /// publishers back for long.
    fn deliver_or_block(
        &self,
        session: &Arc<Session>,
        d: Delivery,
        blocked: &mut Vec<(Arc<Session>, Delivery)>,
        ops: &mut Vec<Op>,
    ) {
        if d.qos != QoS::AtMostOnce && !session.is_stuck() && session.is_connected() {
            let copy = self.capture(session, &d);
            match session.try_deliver(d) {
                Ok(e) => {
                    self.budget.add(e.cost);
                    self.record(session, e.seq, copy, ops);
                }
                Err((DropReason::QueueFull, d)) => blocked.push((session.clone(), d)),
                Err((other, _)) => self.count_drop(session, other),
            }
            return;
        }
        self.deliver(session, d, ops);
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
        for (session, _) in publication.blocked {
            self.count_drop(&session, DropReason::QueueFull);
        }
        self.submit(publication.ops);
    }

    /// Retries blocked deliveries; returns those still blocked.
    pub fn retry_blocked(
        &self,
        items: Vec<(Arc<Session>, Delivery)>,
        ops: &mut Vec<Op>,
    ) -> Vec<(Arc<Session>, Delivery)> {
        let mut still = Vec::new();
        for (session, d) in items {
            self.deliver_or_block(&session, d, &mut still, ops);
        }
        still
    }

    /// Gives up on blocked deliveries: their subscribers are marked stuck and the messages
    /// dropped (counted).
    pub fn abandon_blocked(&self, items: Vec<(Arc<Session>, Delivery)>) {
        for (session, _) in items {
            if !session.is_stuck() {
                tracing::warn!(client_id = %session.client_id,
                    "slow consumer: queue full and not draining; dropping its messages");
                session.set_stuck(true);
            }
            self.count_drop(&session, DropReason::QueueFull);
        }
    }

    fn deliver(&self, session: &Session, d: Delivery, ops: &mut Vec<Op>) {
        let copy = self.capture(session, &d);
        match session.deliver(d) {
            Ok(e) => {
                self.budget.add(e.cost);
                self.record(session, e.seq, copy, ops);
            }
            Err(reason) => self.count_drop(session, reason),
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
        }
    }

    /// Closes every connection for shutdown.
    pub fn disconnect_all(&self, reason: ReasonCode) {
        for entry in self.sessions.iter() {
            entry
                .value()
                .send_control(Control::Disconnect(reason, "server shutting down"));
        }
    }

    /// Whether `QoS` is allowed by `max_qos`.
    pub fn max_qos(&self) -> QoS {
        QoS::from_u8(self.config.mqtt.max_qos).unwrap_or(QoS::ExactlyOnce)
    }
}

//! The session registry: claiming a session for a CONNECT (takeover included), ending a
//! connection, expiring and discarding sessions, and the records the store keeps of them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec;
use crate::persistence;
use crate::session::{
    Control, Ownership, Persistence as SessionPersistence, Previous, Session, SessionMeta,
};
use crate::storage::{unix_ms_now, Op};

use super::handover::END_HANDOVER;
use super::BrokerState;

/// How long a CONNECT waits for the connection it takes over to finish closing.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// A session as claimed by a CONNECT.
pub struct Claimed {
    pub session: Arc<Session>,
    pub ownership: Ownership,
    pub session_present: bool,
    /// Store writes CONNACK must wait for (a persistent session's record).
    pub store_ops: Vec<Op>,
    /// The will a previous connection left waiting out its delay, when this claim ended its
    /// session (Clean Start 1): due now [MQTT-3.1.2-8]. The caller publishes it.
    pub ended_will: Option<codec::Will>,
    /// The cluster's receipt for the claim (see `Cluster::session_claimed`): CONNACK waits
    /// for it too.
    pub cluster_receipt: Option<crate::persistence::Receipt>,
}

/// Another user's CONNECT for a session that belongs to someone else
/// (`auth.session_owner_check`).
#[derive(Debug)]
pub struct NotOwner;

/// Closes the connection that owned the session and waits (bounded) until it has finished,
/// will included. Its will goes only if its session ends here (see `Control::TakenOver`).
async fn take_over(session: &Session, previous: Previous, clean_start: bool) {
    let client_id = &*session.client_id;
    tracing::info!(client_id, "session taken over by a new connection");
    let session_ends = clean_start || session.meta().ends_with_connection();
    session.send_control_to(previous.generation, Control::TakenOver { session_ends });
    if tokio::time::timeout(TAKEOVER_TIMEOUT, session.closed(previous.generation))
        .await
        .is_err()
    {
        tracing::warn!(client_id, "previous connection did not close in time");
    }
}

/// The `DeleteSession` of a persistent session, its queue positions retired first so that no
/// later session under the same client id reuses one (see [`persistence::Persistence::first_seq`]).
/// The positions are read after the session stopped taking deliveries (cleared or made
/// non-persistent), or from the counter a cleared session keeps using.
fn delete_session(p: &persistence::Persistence, session: &Session) -> Op {
    let next = session.with_state(|s| s.next_seq());
    if let Some(next) = next {
        p.retire_seqs(next);
    }
    Op::DeleteSession {
        client_id: session.client_id.to_string(),
        retire_below: next.unwrap_or(0),
    }
}

impl BrokerState {
    /// Adds a session restored from the store (at start, before serving).
    pub fn restore_session(&self, session: Arc<Session>) {
        self.sessions.insert(session.client_id.clone(), session);
    }

    /// Every session in the registry, collected so that no session lock is ever taken under
    /// a registry (DashMap shard) guard.
    pub(super) fn all_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.iter().map(|e| e.value().clone()).collect()
    }

    /// Claims the session for `client_id` for a new connection, taking it over from a connected
    /// one first [MQTT-3.1.4-2]. CONNECTs for one client id are serialised by the session's
    /// CONNECT claim ([`Session::lock_connect`]), so there are never two live owners.
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
            let _serial = session.lock_connect().await;
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
                take_over(&session, previous, clean_start).await;
            }
            // A session that ended with its connection (clean session / expiry 0) is not
            // resumed, even when that connection was only now taken over [MQTT-3.1.2-6].
            let previous_ended = session.meta().ends_with_connection();
            let had_session = session.was_attached() && !previous_ended;
            // A will waiting out its delay: this new connection cancels it if it continues
            // the session [MQTT-3.1.3-9]; if it ends the session, the will is due.
            let mut ended_will = session.take_pending_will().map(|p| p.will);
            if clean_start || previous_ended {
                // The old session ends [MQTT-3.1.2-4]: its stored shared-subscription
                // messages go to the other members of their groups first (MQTT 5.0 4.8.2).
                self.spill_for_hand_over(&session);
                if self.backlog_to_hand_over(&session) {
                    self.unsubscribe_all(&session);
                    let deadline = Some(Instant::now() + END_HANDOVER);
                    self.hand_over_backlog(&session, session.generation(), deadline)
                        .await;
                }
                self.discard_state(&session);
            } else {
                ended_will = None;
            }
            let cluster_receipt = self.cluster.session_claimed(client_id);
            let resumed = had_session && !clean_start;
            let store_ops = self.persist_claim(&session, &meta, will, resumed);
            session.set_meta(meta);
            let ownership = session.attach();
            drop(_serial);
            drop(discarded);
            return Ok(Claimed {
                session_present: had_session && !clean_start,
                session,
                ownership,
                store_ops,
                ended_will,
                cluster_receipt,
            });
        }
    }

    /// A persistent session (expiry not 0) is stored and spills its queue to disk; a new
    /// session that is not persistent is deleted from the store. Returns the ops the CONNACK
    /// waits for: the new session's record, or the old one's delete (an earlier delete of a
    /// clean start goes before the new record, in the writer's order).
    ///
    /// A stored session `resumed` with expiry 0 stays stored while this connection lasts: its
    /// queue (on disk, or partly) is still delivered [MQTT-3.1.2-4]/[MQTT-3.1.2-5], and the
    /// record now says expiry 0, so a restart discards it as the end of the connection would
    /// [MQTT-3.1.2-11].
    pub(super) fn persist_claim(
        &self,
        session: &Arc<Session>,
        meta: &SessionMeta,
        will: Option<&codec::Will>,
        resumed: bool,
    ) -> Vec<Op> {
        let Some(p) = &self.persistence else {
            return Vec::new();
        };
        if meta.ends_with_connection() && !(resumed && session.is_persistent()) {
            if !session.is_persistent() {
                return Vec::new();
            }
            // The CONNACK waits for it: a crash after it must not bring back the session it
            // said was discarded [MQTT-3.1.2-6].
            let delete = delete_session(p, session);
            session.set_persistence(None);
            return vec![delete];
        }
        if !session.is_persistent() {
            // Never a position an earlier session under this client id used: its late
            // acknowledgements must not match this session's entries.
            let first = p.first_seq();
            session.set_persistence(Some(SessionPersistence {
                memory_cap: p.memory_cap,
                next_seq: first,
                trusted_until: first,
                backlog: None,
                next_nth: 0,
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

    pub(super) fn persist_disconnected(
        &self,
        session: &Session,
        at_unix_ms: u64,
        will: Option<&codec::Will>,
    ) {
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
    pub(super) fn lookup_or_create(&self, client_id: &str) -> Arc<Session> {
        if let Some(s) = self.sessions.get(client_id) {
            if !s.is_gone() {
                return s.clone();
            }
        }
        let limits = self.session_limits();
        // One copy of the client id, shared by the map key and the session.
        let id: Arc<str> = Arc::from(client_id);
        let mut entry = self
            .sessions
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Session::new(id.clone(), limits)));
        if entry.is_gone() {
            *entry = Arc::new(Session::new(id, limits));
        }
        entry.clone()
    }

    /// Drops a session's subscriptions and queued state (clean start, or the session ended).
    /// The trie entries go first, so no new routing finds the session; the clear then bumps
    /// its epoch, so deliveries routed before are refused (a refused shared delivery goes to
    /// another member, see `deliver_or_block`). The shared-subscription messages the session
    /// still holds are taken in the same critical section as the clear and handed to the rest
    /// of their groups: `redistribute_shared` ran when the connection ended, but routing that
    /// picked this member before its trie entries went may have queued more since.
    pub(super) fn discard_state(&self, session: &Arc<Session>) {
        let filters = self.unsubscribe_all(session);
        let shared_filters = filters
            .iter()
            .filter(|f| codec::topic::parse_shared(f).is_some())
            .map(|f| Arc::from(f.as_str()))
            .collect();
        let movable = self.groups_with_other_members(session, shared_filters);
        let (moved, freed) = session.with_state(|s| {
            let (moved, taken, _) = if movable.is_empty() {
                Default::default()
            } else {
                s.take_shared(true, |d| {
                    d.shared.as_ref().is_some_and(|g| movable.contains(g))
                })
            };
            (moved, taken + s.clear())
        });
        self.budget.sub(freed);
        if filters.len() >= crate::memory::TRIM_AFTER_SUBSCRIPTIONS {
            // No lock is held here; the trim itself runs on a blocking thread.
            drop(filters);
            crate::memory::release_free_memory();
        }
        let mut ops = Vec::new();
        for d in moved {
            // Nobody left to take it: the session is gone, and so is the message.
            let _ = self.hand_over(session, d, &mut ops);
        }
        // After the moved messages' new queue entries: a shared body's stored refcount never
        // drops to zero between.
        if let (Some(p), true) = (&self.persistence, session.is_persistent()) {
            ops.push(delete_session(p, session));
        }
        if !ops.is_empty() {
            self.submit(ops);
        }
    }

    /// Takes `session`'s subscriptions out of the trie, so no routing finds it any more (its
    /// state keeps them); returns their filters.
    fn unsubscribe_all(&self, session: &Session) -> Vec<String> {
        let filters = session.with_state(|s| s.subscription_filters());
        if !filters.is_empty() {
            let mut trie = self.subscriptions.write();
            for f in &filters {
                trie.unsubscribe(f, &session.client_id);
            }
        }
        if filters
            .iter()
            .any(|f| crate::codec::topic::parse_shared(f).is_some())
        {
            self.cluster.shares_changed();
        }
        filters
    }

    /// Called when a connection ends. Its unacknowledged shared-subscription messages go to
    /// other members of their groups now (`redistribute_shared`), unless a persistent session
    /// ends here: then its stored ones are paced with its disk backlog (see
    /// [`Self::end_session`]). If it still owned the session and the session ends with the
    /// connection, the session is discarded; otherwise it stays for a later resume.
    pub fn end_connection(self: &Arc<Self>, session: &Arc<Session>, generation: u64) -> bool {
        let ends = session.meta().ends_with_connection();
        let paced = ends && self.persistence.is_some() && session.is_persistent();
        if !paced {
            self.redistribute_shared(session);
        }
        let still_owner = session.release(generation, ends);
        if still_owner && ends {
            self.end_session(session, generation);
        } else if still_owner {
            // What the session stored waits on disk until the client is back, not in memory,
            // where it would count against the global budget (and pause every publisher) for
            // as long as the client stays away. Unless a new connection claimed it already.
            let (_, freed) = session.with_state(|s| if s.is_online() { (0, 0) } else { s.spill() });
            self.budget.sub(freed);
        }
        still_owner
    }

    /// Completes a discard begun by `Session::release(generation, true)` as
    /// [`Self::remove_session`] does, after handing the stored shared-subscription messages
    /// to the other members of their groups (MQTT 5.0 4.8.2), from a task, paced for at most
    /// [`END_HANDOVER`]: a CONNECT for the client id waits for it. The stored record says
    /// first that the session ended (expiry 0, disconnected now), so that a restart before
    /// the delete does not bring it back: it hands the rest over at start instead.
    pub(super) fn end_session(self: &Arc<Self>, session: &Arc<Session>, generation: u64) {
        self.spill_for_hand_over(session);
        if !self.backlog_to_hand_over(session) {
            self.remove_session(session);
            return;
        }
        if let Some(p) = &self.persistence {
            let mut meta = session.meta();
            meta.set_expiry(Some(Duration::ZERO));
            let record =
                persistence::session_record(&session.client_id, &meta, Some(unix_ms_now()), None);
            p.submit(vec![Op::PutSession(record)]);
        }
        let (state, session) = (self.clone(), session.clone());
        self.spawn_tracked(async move {
            state.unsubscribe_all(&session);
            let deadline = Some(Instant::now() + END_HANDOVER);
            state
                .hand_over_backlog(&session, generation, deadline)
                .await;
            // At shutdown the store keeps the rest, for the next start to hand over.
            if !state.is_stopping() {
                state.remove_session(&session);
            }
        });
    }

    /// Moves an ending session's stored deliveries from memory back to its disk backlog
    /// (where they are already), so that the hand-over paces them with the rest, oldest first,
    /// instead of the discard handing them to full members that drop them.
    fn spill_for_hand_over(&self, session: &Session) {
        if self.persistence.is_some() && session.is_persistent() {
            let (_, freed) = session.with_state(|s| s.spill());
            self.budget.sub(freed);
        }
    }

    /// Completes a discard begun by `Session::release`: subscriptions and queue dropped, the
    /// registry entry removed, then waiting CONNECTs woken.
    pub(super) fn remove_session(&self, session: &Arc<Session>) {
        self.discard_state(session);
        self.sessions
            .remove_if(&session.client_id, |_, s| Arc::ptr_eq(s, session));
        session.finish_discard();
    }

    /// Discards a session whose expiry interval passed while no connection claimed it
    /// [MQTT-3.1.2-23]. `generation` is the owner that left; a reconnect since then wins.
    ///
    /// A shared-subscription member's messages go to the other members of its groups first:
    /// those in memory here, those in its disk backlog from a task that reads them and then
    /// completes the expiry, unless the client came back meanwhile (see
    /// `Self::expire_handing_over`).
    pub fn expire_session(self: &Arc<Self>, session: &Arc<Session>, generation: u64) {
        if session.is_connected() || !session.owned_by(generation) {
            return;
        }
        self.redistribute_shared(session);
        if self.backlog_to_hand_over(session) {
            let (state, session) = (self.clone(), session.clone());
            self.spawn_tracked(
                async move { state.expire_handing_over(&session, generation).await },
            );
            return;
        }
        self.finish_expiry(session, generation);
    }

    /// Expires a session restored only for it (it expired while the broker was down), its
    /// stored shared-subscription messages handed over first: at start, before serving.
    pub async fn expire_restored(self: &Arc<Self>, session: &Arc<Session>) {
        self.expire_handing_over(session, 0).await;
    }

    /// The expiry of a shared member with a disk backlog. The backlog is handed over while the
    /// client may still come back (which stops it); then the session is marked as ending (a
    /// CONNECT now waits) and taken out of the trie, so that nothing more is routed to it, and
    /// what reached its backlog meanwhile (from routing, or from another member's hand-over)
    /// is handed over too (for at most [`END_HANDOVER`]) before it is removed. At shutdown it
    /// is left as it is: the store keeps it, and the next start hands it over.
    async fn expire_handing_over(self: &Arc<Self>, session: &Arc<Session>, generation: u64) {
        self.hand_over_backlog(session, generation, None).await;
        if self.is_stopping() || session.is_connected() || !session.owned_by(generation) {
            return;
        }
        if !session.release(generation, true) {
            return;
        }
        self.unsubscribe_all(session);
        // A CONNECT for the client id waits from here.
        let deadline = Some(Instant::now() + END_HANDOVER);
        self.hand_over_backlog(session, generation, deadline).await;
        if self.is_stopping() {
            return;
        }
        self.remove_session(session);
        self.metrics.clients_expired.inc();
        tracing::info!(client_id = %session.client_id, "session expired");
    }

    fn finish_expiry(&self, session: &Arc<Session>, generation: u64) {
        if session.is_connected() || !session.owned_by(generation) {
            return;
        }
        if session.release(generation, true) {
            self.remove_session(session);
            self.metrics.clients_expired.inc();
            tracing::info!(client_id = %session.client_id, "session expired");
        }
    }

    /// Whether [`Self::disconnect_all`] has begun: set before it asks any connection to
    /// close, so a connection that attaches later sees it when its loop starts (the session's
    /// link lock, or the registry's, orders the two).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Closes every connection for shutdown. From now on departing shared-subscription members
    /// keep their messages (see [`BrokerState::redistribute_shared`]).
    ///
    /// Every connection that owns a session is told here; one that claims a session after
    /// this looked at it sees [`Self::is_stopping`] as its loop starts (`stopping` is set
    /// before the sessions are visited, and both sides take the session's link lock).
    pub fn disconnect_all(&self) {
        self.stopping.store(true, Ordering::Release);
        for session in self.all_sessions() {
            session.send_control(Control::Shutdown);
        }
    }
}

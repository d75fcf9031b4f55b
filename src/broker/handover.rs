//! A shared-subscription member's disk backlog handed to the rest of its groups when its
//! session ends: it expires, or ends for good (its client comes back with a clean session or
//! leaves with expiry 0, or an operator discards it; then for a bounded time).
//!
//! A message routed to a `$share` group goes to a connected member when there is one; with
//! every member offline it waits in one member's session, on disk (a persistent session's
//! offline queue). If that member never comes back (a worker replaced under a new client id is
//! the usual case), its session expires, and the specification asks that the message then go
//! to another member of the group (MQTT 5.0 4.8.2: "If the Client's Session terminates before
//! the Client reconnects, the Server SHOULD send the Application Message to another Client
//! that is subscribed to the same Shared Subscription"). What the session holds in memory is
//! handed over by `redistribute_shared`; this reads the disk backlog a page at a time and does
//! the same with it, before the session is deleted. A member whose session expired while the
//! broker was down does it at start, before clients are served
//! ([`BrokerState::expire_restored`]).
//!
//! The store does not keep the group a delivery came through. A spill remembered it
//! (`SessionState::drain_backlog` gives it back); otherwise it is the session's shared
//! subscription that matches the topic, and a delivery whose topic one of the session's own
//! (non-shared) subscriptions also matches stays and ends with the session, since it may be
//! that subscription's copy. With two shared subscriptions of the session matching, the first
//! takes it.
//!
//! Pacing: a page is handed over once the connected members of the groups (up to
//! [`MEMBERS_LOOKED_AT`]) have room for it in their queues (`max_queued_messages`), waiting for
//! a full one to take messages for at most [`ROOM_WAIT`] at a time; a message no member has
//! room for waits the same way, for as long as the members keep taking messages (up to
//! [`MAX_STALL`] without progress; with no connected member full, nobody will make room, and
//! the rest stays with the session). Otherwise a large backlog would overflow the members'
//! queues and be dropped there. With no member connected, the pages go to offline members'
//! queues, up to their limits.
//!
//! What a page took from the backlog and did not hand over (its own subscription's messages,
//! or the rest after a stall) goes back in front of the session's memory queue at its stored
//! positions, so a client that comes back during the hand-over still gets it, in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::topic::parse_shared;
use crate::session::{Delivery, Session};
use crate::storage::Op;

use super::BrokerState;

/// Stored entries read per page, at most; a quarter of `max_queued_messages` when that is
/// less, so that a page fits in a member's queue.
const PAGE: usize = 256;
/// The longest wait for a member to make room before the next page is handed over anyway.
const ROOM_WAIT: Duration = Duration::from_secs(1);
/// The most members looked at for room.
const MEMBERS_LOOKED_AT: usize = 16;
/// How long a hand-over waits for full members (up to [`ROOM_WAIT`] at a time) while none of
/// them takes a message, before it leaves the rest with the session.
const MAX_STALL: Duration = Duration::from_secs(10);

/// The session's shared subscriptions that have another member to take a message (full
/// `$share/g/f` filters).
struct Filters {
    movable: Vec<Arc<str>>,
}

/// The movable shared subscription a drained delivery came through. A drain gives each
/// delivery its group back ([`crate::session::SessionState::drain_backlog`]: the one a spill
/// remembered, or else the session's shared filter that matches its topic, none when one of
/// its own filters matches too).
fn group_of(d: &Delivery, f: &Filters) -> Option<Arc<str>> {
    let g = d.shared.as_ref()?;
    f.movable.iter().any(|m| m == g).then(|| g.clone())
}

impl BrokerState {
    /// Whether `session` has a disk backlog and shared subscriptions with other members: what
    /// [`Self::hand_over_backlog`] would move.
    pub(super) fn backlog_to_hand_over(&self, session: &Session) -> bool {
        self.persistence.is_some()
            && session.is_persistent()
            && session.with_state(|s| s.drain_from().is_some())
            && !self.movable_filters(session).movable.is_empty()
    }

    fn movable_filters(&self, session: &Session) -> Filters {
        let shared: Vec<Arc<str>> = session
            .with_state(|s| s.subscription_filters())
            .into_iter()
            .filter(|f| parse_shared(f).is_some())
            .map(|f| Arc::from(f.as_str()))
            .collect();
        Filters {
            movable: self.groups_with_other_members(session, shared),
        }
    }

    /// Hands the shared-subscription deliveries of `session`'s disk backlog to other members
    /// of their groups, a page at a time, for as long as connection `generation` is the last
    /// to have owned it and nobody reconnected, and until `deadline` if one is given (a
    /// session that ends for good: what is left then ends with it). Returns how many moved.
    pub(super) async fn hand_over_backlog(
        &self,
        session: &Arc<Session>,
        generation: u64,
        deadline: Option<Instant>,
    ) -> usize {
        let Some(p) = self.persistence.clone() else {
            return 0;
        };
        let moved = self
            .hand_over_pages(&p, session, generation, deadline)
            .await;
        if moved > 0 {
            self.metrics.shared_handed_over.add(moved as u64);
            tracing::info!(client_id = %session.client_id, count = moved,
                "handed an ending session's stored shared-subscription messages to other members");
        }
        moved
    }

    async fn hand_over_pages(
        &self,
        p: &Arc<crate::persistence::Persistence>,
        session: &Arc<Session>,
        generation: u64,
        deadline: Option<Instant>,
    ) -> usize {
        let filters = self.movable_filters(session);
        let limit = self.session_limits().max_queued_messages as usize;
        let page = match limit {
            0 => PAGE,
            limit => (limit / 4).clamp(1, PAGE),
        };
        let mut moved = 0;
        let mut stalled_since = None;
        loop {
            if !self.still_expiring(session, generation) || past(deadline) {
                break;
            }
            let Some(from) = session.with_state(|s| s.drain_from()) else {
                break;
            };
            let _ = self.room_for(page, limit, session, &filters).await;
            let read = p
                .clone()
                .read_queue(session.client_id.clone(), from, page)
                .await;
            let entries = match read {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(client_id = %session.client_id, error = %e,
                        "cannot read an expiring session's backlog to hand it over");
                    break;
                }
            };
            let taken = session.with_state(|s| s.drain_backlog(entries));
            if taken.is_empty() {
                break;
            }
            let page = Page {
                generation,
                deadline,
                limit,
                filters: &filters,
                stalled_since: &mut stalled_since,
            };
            let (n, complete) = self.hand_over_page(session, taken, page).await;
            moved += n;
            if !complete {
                break;
            }
        }
        moved
    }

    /// Whether the hand-over goes on: no shutdown, and the client has not come back.
    fn still_expiring(&self, session: &Session, generation: u64) -> bool {
        !self.is_stopping() && !session.is_connected() && session.owned_by(generation)
    }

    /// Returns once the connected members of the groups in `f` have room for `page` more in
    /// their queues (of `limit`, 0 = unlimited), or after waiting [`ROOM_WAIT`] for a full one
    /// to make room. False when there was none to wait for.
    async fn room_for(&self, page: usize, limit: usize, session: &Session, f: &Filters) -> bool {
        if limit == 0 {
            return false;
        }
        let members = self.connected_members(session, f);
        let Some(full) = members.iter().find(|m| m.queue_depth() + page > limit) else {
            return false;
        };
        self.metrics.shared_handover_waits.inc();
        let _ = tokio::time::timeout(ROOM_WAIT, full.room_made()).await;
        true
    }

    /// Up to [`MEMBERS_LOOKED_AT`] connected members of the groups in `f` other than
    /// `session`. Collected under the trie's read lock, which only reads their atomics; their
    /// queues are looked at after it is released.
    fn connected_members(&self, session: &Session, f: &Filters) -> Vec<Arc<Session>> {
        let mut members: Vec<Arc<Session>> = Vec::new();
        for group in &f.movable {
            while members.len() < MEMBERS_LOOKED_AT {
                let next = {
                    let trie = self.subscriptions.read();
                    trie.pick_shared(group, |s| {
                        s.client_id != session.client_id
                            && s.handle.session.is_connected()
                            && !members.iter().any(|m| Arc::ptr_eq(m, &s.handle.session))
                    })
                    .map(|s| s.handle.session.clone())
                };
                match next {
                    Some(m) => members.push(m),
                    None => break,
                }
            }
        }
        members
    }

    /// Queues each delivery of `taken` that came through a movable group with another member,
    /// and removes the moved ones from this session's store in the same batch, after their
    /// new entries (a shared body's refcount never drops to zero between). A full member (or
    /// none left) is waited for while the members make progress; after [`MAX_STALL`] without
    /// any, the hand-over stops: returns (moved, false). What is not moved goes back in front
    /// of this session's memory queue, at its stored positions: it ends with the session, or
    /// goes to its client if that came back.
    async fn hand_over_page(
        &self,
        session: &Arc<Session>,
        taken: Vec<Delivery>,
        page: Page<'_>,
    ) -> (usize, bool) {
        let mut ops = Vec::new();
        let mut released = Vec::new();
        let mut stay = Vec::new();
        let mut complete = true;
        let mut moved = 0;
        for mut d in taken {
            let Some(group) = group_of(&d, page.filters) else {
                stay.push(d);
                continue;
            };
            let own_group = d.shared.replace(group);
            let seq = d.seq;
            let mut item = Some(d);
            while let Some(d) = item.take() {
                let back = if complete {
                    self.hand_over_unless_full(session, d, &mut ops, true)
                } else {
                    Some(d)
                };
                let Some(mut d) = back else {
                    moved += 1;
                    *page.stalled_since = None;
                    released.extend(seq.map(|seq| dequeue(session, seq)));
                    continue;
                };
                let stalled = *page.stalled_since.get_or_insert_with(Instant::now);
                if complete
                    && stalled.elapsed() < MAX_STALL
                    && !past(page.deadline)
                    && self.still_expiring(session, page.generation)
                {
                    // Let what was handed over so far go out (with this session's records of
                    // it, after its new entries), and wait for a full member to make room.
                    ops.append(&mut released);
                    self.submit(std::mem::take(&mut ops));
                    if self.room_for(1, page.limit, session, page.filters).await {
                        item = Some(d);
                        continue;
                    }
                }
                complete = false;
                d.shared = own_group.clone();
                stay.push(d);
            }
        }
        ops.extend(released);
        if !ops.is_empty() {
            self.submit(ops);
        }
        let cost = session.with_state(|s| s.return_drained(stay));
        if cost > 0 {
            self.budget.add(cost);
            session.wake();
        }
        (moved, complete)
    }
}

/// What one page of a hand-over works with.
struct Page<'a> {
    /// The connection that last owned the expiring session.
    generation: u64,
    /// When the hand-over stops waiting for room, if ever.
    deadline: Option<Instant>,
    /// `max_queued_messages` (0 = unlimited).
    limit: usize,
    filters: &'a Filters,
    /// Since when no delivery could be handed over (None while the members take them).
    stalled_since: &'a mut Option<Instant>,
}

/// Whether `deadline` has passed.
fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// The store op that removes `session`'s queue entry `seq`.
fn dequeue(session: &Session, seq: u64) -> Op {
    Op::Dequeue {
        client_id: session.client_id.to_string(),
        seq,
    }
}

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
/// How long a session that ends for good (clean start, expiry 0, discarded by an operator)
/// spends handing its stored shared-subscription messages to other members while they make
/// room; then the rest goes to members with room, or is dropped where they are full.
pub(super) const END_HANDOVER: Duration = Duration::from_secs(4);
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
    /// to have owned it and nobody reconnected. With a `deadline` the session ends for good:
    /// once it passes (or the members stop making room), the rest is handed over without
    /// waiting, to members with room, and dropped (counted as `queue_full`) where they are
    /// full. Returns how many moved.
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
        let mut unpaced = false;
        loop {
            if !self.still_expiring(session, generation) {
                break;
            }
            let Some(from) = session.with_state(|s| s.drain_from()) else {
                break;
            };
            unpaced |= past(deadline);
            if !unpaced {
                let _ = self.room_for(page, limit, session, &filters).await;
            }
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
            let (epoch, taken) = session.with_state(|s| (s.epoch(), s.drain_backlog(entries)));
            if taken.is_empty() {
                break;
            }
            let page = Page {
                generation,
                epoch,
                orphaned: false,
                deadline,
                unpaced: &mut unpaced,
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
        tokio::select! {
            _ = tokio::time::timeout(ROOM_WAIT, full.room_made()) => {}
            _ = self.shutdown.cancelled() => {}
        }
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
    /// none left) is waited for while the members make progress (see [`Self::place`]); after
    /// a give-up, the hand-over stops: returns (moved, false). What is not moved goes back in
    /// front of this session's memory queue, at its stored positions: it ends with the
    /// session, or goes to its client if that came back.
    async fn hand_over_page(
        &self,
        session: &Arc<Session>,
        taken: Vec<Delivery>,
        mut page: Page<'_>,
    ) -> (usize, bool) {
        let (mut ops, mut released, mut stay) = (Vec::new(), Vec::new(), Vec::new());
        let mut complete = true;
        let mut moved = 0;
        for mut d in taken {
            let group = if complete {
                group_of(&d, page.filters)
            } else {
                None
            };
            let Some(group) = group else {
                stay.push(d);
                continue;
            };
            let own_group = d.shared.replace(group);
            let seq = d.seq();
            let back = match self
                .place(session, d, &mut page, &mut ops, &mut released)
                .await
            {
                Placed::Moved => {
                    moved += 1;
                    None
                }
                Placed::Dropped => None,
                Placed::Stays(d) => Some(d),
                Placed::GaveUp(d) => {
                    complete = false;
                    Some(d)
                }
            };
            match back {
                None => released.extend(seq.map(|seq| dequeue(session, seq))),
                Some(mut d) => {
                    d.shared = own_group;
                    stay.push(d);
                }
            }
        }
        let orphans = self.return_stays(session, page.epoch, stay);
        if !orphans.is_empty() {
            moved += self
                .place_orphans(session, orphans, &page, &mut ops, &mut released)
                .await;
        }
        ops.extend(released);
        if !ops.is_empty() {
            self.submit(ops);
        }
        (moved, complete)
    }

    /// Hands one delivery to another member of its group. Paced: a member whose queue is full
    /// passes it on, and with none taking it the hand-over waits for a full member to make
    /// room while the members make progress (up to [`MAX_STALL`] without any, and until the
    /// deadline). Then a session that ends for good stops waiting (`unpaced`): a member with
    /// room takes it, or a full one drops it (counted as `queue_full`); any other gives up.
    async fn place(
        &self,
        session: &Arc<Session>,
        mut d: Delivery,
        page: &mut Page<'_>,
        ops: &mut Vec<Op>,
        released: &mut Vec<Op>,
    ) -> Placed {
        loop {
            let Some(back) = self.hand_over_unless_full(session, d, ops, true) else {
                *page.stalled_since = None;
                return Placed::Moved;
            };
            if *page.unpaced {
                return match self.hand_over(session, back, ops) {
                    None => Placed::Dropped,
                    Some(d) => Placed::Stays(d),
                };
            }
            d = back;
            let stalled = *page.stalled_since.get_or_insert_with(Instant::now);
            let expiring = if page.orphaned {
                !self.is_stopping()
            } else {
                self.still_expiring(session, page.generation)
            };
            if stalled.elapsed() < MAX_STALL && !past(page.deadline) && expiring {
                // Let what was handed over so far go out (with this session's records of it,
                // after its new entries), and wait for a full member to make room.
                ops.append(released);
                self.submit(std::mem::take(ops));
                if self.room_for(1, page.limit, session, page.filters).await {
                    continue;
                }
            }
            if page.deadline.is_none() || !expiring {
                return Placed::GaveUp(d);
            }
            *page.unpaced = true;
        }
    }

    /// Puts what a page does not hand over back in front of the session's memory queue,
    /// unless the session was cleared since the drain (a clean start claimed it while the page
    /// waited for room): then it is no longer this session's, and is returned, for the group.
    fn return_stays(&self, session: &Session, epoch: u64, stay: Vec<Delivery>) -> Vec<Delivery> {
        let (cost, orphans) = session.with_state(|s| {
            if s.epoch() == epoch {
                (s.return_drained(stay), Vec::new())
            } else {
                (0, stay)
            }
        });
        if cost > 0 {
            self.budget.add(cost);
            session.wake();
        }
        orphans
    }

    /// Hands over what a page drained from a session that a clean start has claimed since,
    /// paced as for a session that ends for good ([`END_HANDOVER`]); what no member takes
    /// ends here. Returns how many moved.
    async fn place_orphans(
        &self,
        session: &Arc<Session>,
        orphans: Vec<Delivery>,
        page: &Page<'_>,
        ops: &mut Vec<Op>,
        released: &mut Vec<Op>,
    ) -> usize {
        let (mut unpaced, mut stalled_since) = (false, None);
        let mut page = Page {
            generation: page.generation,
            epoch: page.epoch,
            deadline: Some(Instant::now() + END_HANDOVER),
            orphaned: true,
            unpaced: &mut unpaced,
            limit: page.limit,
            filters: page.filters,
            stalled_since: &mut stalled_since,
        };
        let mut moved = 0;
        for d in orphans {
            if d.shared.is_some() {
                if let Placed::Moved = self.place(session, d, &mut page, ops, released).await {
                    moved += 1;
                }
            }
        }
        moved
    }
}

/// What became of one delivery a hand-over tried to place ([`BrokerState::place`]).
enum Placed {
    /// Queued with another member.
    Moved,
    /// Dropped at a full member (counted there); gone from this session all the same.
    Dropped,
    /// Stays with the session: no member of its group is left.
    Stays(Delivery),
    /// Stays with the session, and so does the rest: the hand-over gave up.
    GaveUp(Delivery),
}

/// What one page of a hand-over works with.
struct Page<'a> {
    /// The connection that last owned the expiring session.
    generation: u64,
    /// The session's epoch when the page was drained: a clear since means a new session.
    epoch: u64,
    /// The page's deliveries belong to no session any more (see `place_orphans`): the
    /// hand-over goes on whoever owns the session now.
    orphaned: bool,
    /// Set once a session that ends for good stops waiting for room (see `hand_over_backlog`).
    unpaced: &'a mut bool,
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

//! Dequeues that reached the store before the Enqueue they undo.
//!
//! The broker changes a session's queue in memory first and submits the matching store writes
//! afterwards, from whichever task made the change. Two tasks can therefore submit in the
//! opposite order to the one their changes happened in: a publisher's batch with
//! `Enqueue(B, 7)` can wait for room in the store's queue while B's connection already sent
//! message 7, got it acknowledged and submitted `Dequeue(B, 7)`; or a departing shared-group
//! member hands message 7 on while the publisher's `Enqueue` is still on its way. Applied in
//! that order, the late `Enqueue` would bring back a message that was already delivered, and a
//! restart would deliver it again (a QoS 2 duplicate).
//!
//! So a `Dequeue` of an entry that is not (yet) in the store is remembered here, and the
//! `Enqueue` of that entry, when it comes, is skipped. Remembered entries are few and short
//! lived; they are bounded by [`MAX_EARLY`] (the oldest is forgotten first) and dropped with
//! their session.
//!
//! Entries are matched by client id and seq only. A session's `Dequeue` can also arrive after
//! its `DeleteSession` (an ack or an expiry's hand-over still on its way when the client came
//! back with a clean session); it is then remembered for a session that is gone. That is
//! harmless because the broker never gives a seq of a deleted session to a later session
//! under the same client id (`Persistence::first_seq`): the remembered entry can only cancel
//! the deleted session's own late `Enqueue`, or is forgotten.
//!
//! A deleted session's late `Enqueue` with no `Dequeue` before it (its message was never
//! acknowledged, or the session ended first) is skipped too: a `DeleteSession` says below
//! which position the queue was that session's ([`EarlyDequeues::retire`]), and the next
//! session under the client id numbers its queue from there on. Written, such an entry would
//! be an orphan in the next session's queue, delivered to it after a restart. Retired bounds
//! are bounded the same way, by [`MAX_EARLY`] client ids; one forgotten can only let an
//! orphan through again (a spurious delivery after a restart, never a loss).

use std::collections::{HashMap, HashSet, VecDeque};

/// The most early dequeues remembered; beyond it the oldest is forgotten. A dequeue that stays
/// unmatched this long was for an entry that never existed (nothing is lost by forgetting it).
pub(crate) const MAX_EARLY: usize = 65_536;

/// Early dequeues by client id, and the queue positions of deleted sessions.
#[derive(Default)]
pub(crate) struct EarlyDequeues {
    by_client: HashMap<String, HashSet<u64>>,
    order: VecDeque<(String, u64)>,
    /// Per client id: positions below this were a deleted session's.
    retired: HashMap<String, u64>,
    /// Client ids in `retired`, in the order they were first retired.
    retired_order: VecDeque<String>,
}

impl EarlyDequeues {
    /// Remembers that `Dequeue(client_id, seq)` found no entry.
    pub(crate) fn note(&mut self, client_id: &str, seq: u64) {
        if self.order.len() >= MAX_EARLY {
            if let Some((c, s)) = self.order.pop_front() {
                self.remove(&c, s);
            }
        }
        self.by_client
            .entry(client_id.to_string())
            .or_default()
            .insert(seq);
        self.order.push_back((client_id.to_string(), seq));
    }

    /// True (and forgotten) if `(client_id, seq)` was dequeued before this enqueue of it.
    pub(crate) fn take(&mut self, client_id: &str, seq: u64) -> bool {
        if self.by_client.is_empty() {
            return false;
        }
        self.remove(client_id, seq)
    }

    /// The session is deleted: its early dequeues no longer apply.
    pub(crate) fn forget_client(&mut self, client_id: &str) {
        self.by_client.remove(client_id);
    }

    fn remove(&mut self, client_id: &str, seq: u64) -> bool {
        let Some(seqs) = self.by_client.get_mut(client_id) else {
            return false;
        };
        let found = seqs.remove(&seq);
        if seqs.is_empty() {
            self.by_client.remove(client_id);
        }
        if self.by_client.is_empty() {
            self.order.clear();
        }
        found
    }

    /// A session of `client_id` was deleted; it had used the queue positions below `below`.
    pub(crate) fn retire(&mut self, client_id: &str, below: u64) {
        if below == 0 {
            return;
        }
        let bound = self.retired.entry(client_id.to_string()).or_insert(0);
        if below <= *bound {
            return;
        }
        let fresh = *bound == 0;
        *bound = below;
        if fresh {
            self.retired_order.push_back(client_id.to_string());
        }
        while self.retired.len() > MAX_EARLY {
            let Some(oldest) = self.retired_order.pop_front() else {
                break;
            };
            self.retired.remove(&oldest);
        }
    }

    /// True if position `seq` of `client_id` belonged to a session deleted since.
    pub(crate) fn is_retired(&self, client_id: &str, seq: u64) -> bool {
        !self.retired.is_empty() && self.retired.get(client_id).is_some_and(|&b| seq < b)
    }

    /// How many are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_client.values().map(HashSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noted_dequeue_cancels_one_enqueue_of_the_same_entry() {
        let mut e = EarlyDequeues::default();
        e.note("a", 7);
        assert!(!e.take("b", 7));
        assert!(!e.take("a", 8));
        assert!(e.take("a", 7));
        assert!(!e.take("a", 7), "only once");
        assert_eq!(e.len(), 0);
    }

    #[test]
    fn bounded_and_dropped_with_the_session() {
        let mut e = EarlyDequeues::default();
        for s in 0..(MAX_EARLY as u64 + 10) {
            e.note("a", s);
        }
        assert!(e.len() <= MAX_EARLY);
        assert!(!e.take("a", 0), "the oldest was forgotten");
        assert!(e.take("a", MAX_EARLY as u64 + 9));
        e.note("b", 1);
        e.forget_client("b");
        assert!(!e.take("b", 1));
    }

    #[test]
    fn a_retired_position_is_below_the_deleted_sessions_bound_only() {
        let mut e = EarlyDequeues::default();
        assert!(!e.is_retired("a", 0));
        e.retire("a", 5);
        assert!(e.is_retired("a", 0) && e.is_retired("a", 4));
        assert!(!e.is_retired("a", 5), "the next session's first position");
        assert!(!e.is_retired("b", 0), "per client id");
        e.retire("a", 3);
        assert!(e.is_retired("a", 4), "a bound never goes down");
        e.retire("b", 0);
        assert!(!e.is_retired("b", 0), "nothing to guard");
    }

    #[test]
    fn retired_bounds_are_bounded() {
        let mut e = EarlyDequeues::default();
        for i in 0..MAX_EARLY + 10 {
            e.retire(&format!("c{i}"), 1);
        }
        assert_eq!(e.retired.len(), MAX_EARLY);
        assert!(!e.is_retired("c0", 0), "the oldest was forgotten");
        assert!(e.is_retired(&format!("c{}", MAX_EARLY + 9), 0));
    }
}

//! A persistent session's disk backlog: the stored QoS 1/2 deliveries that are not in memory,
//! and how a refill reads them back in order.
//!
//! The backlog is a range of stored queue positions, read back from its first one (`from`).
//! Positions missing from the store in that range are either acknowledged already (below the
//! `trusted_until` of what was loaded at start) or writes still on their way, which a refill
//! must wait for. Deliveries moved back to disk from the memory queue ([`Body::spill`]) come
//! with the exact positions they had, since a shared-subscription hand-over may have left gaps
//! between them that are neither: the refill takes those positions, steps over the gaps, and
//! waits for any of them not in the store yet.

use std::collections::VecDeque;
use std::sync::Arc;

use super::body::Body;
use super::{Delivery, SessionState};

/// QoS 1/2 deliveries that are in the store but not in memory: the stored queue from `from`
/// (inclusive) up to the session's next position (exclusive). Everything that arrives while a
/// backlog exists joins it, so order is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Backlog {
    /// The next position a refill expects.
    pub(super) from: u64,
    /// Entries in it, for the queue limit (exact for live spills, counted at load otherwise).
    pub(super) count: u64,
    /// The largest payload spilled into it since it started (0 when loaded at start): sizes
    /// refills so that one does not read far more than [`super::MEMORY_BYTES`] from disk.
    pub(super) max_payload: u32,
    /// Positions moved back from memory, ahead of the rest; None once all are read back.
    /// Boxed: most backlogs never have any.
    spilled: Option<Box<Spilled>>,
}

/// The positions of deliveries moved back to disk from memory.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Spilled {
    /// Runs of consecutive positions `[start, end)`, in order; `Backlog::from` is the first
    /// one's start.
    runs: VecDeque<(u64, u64)>,
    /// Where the backlog goes on after them, as an ordinary range.
    tail: u64,
    /// The shared subscription each spilled shared-subscription delivery came through, by
    /// position, in order: the store does not keep it, and a delivery read back without it
    /// would no longer go to another member when this one leaves.
    groups: VecDeque<(u64, Arc<str>)>,
}

/// What a refill does with an entry read from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// It is the next one owed: take it into memory.
    Take,
    /// Not owed (before `from`, or in a gap between spilled positions): step over it.
    Skip,
    /// An owed position before it is not in the store yet: stop, and read again later.
    Stop,
}

impl Backlog {
    /// A backlog starting at `from` with `count` entries.
    pub(super) fn new(from: u64, count: u64) -> Backlog {
        Backlog {
            from,
            count,
            max_payload: 0,
            spilled: None,
        }
    }

    /// What a refill does with the stored entry at `seq` (entries come in position order).
    pub(super) fn next(&self, seq: u64, trusted_until: u64) -> Next {
        if seq < self.from {
            return Next::Skip;
        }
        if seq == self.from {
            return Next::Take;
        }
        match &self.spilled {
            Some(s) if seq < s.tail => {
                if s.runs.iter().any(|&(a, b)| (a..b).contains(&seq)) {
                    Next::Stop
                } else {
                    Next::Skip
                }
            }
            // Spilled positions before it are missing.
            Some(_) => Next::Stop,
            None if seq < trusted_until => Next::Take,
            None => Next::Stop,
        }
    }

    /// Records that the entry at `seq` (judged [`Next::Take`]) left for memory; returns the
    /// shared subscription it came through, if it was spilled with one.
    pub(super) fn took(&mut self, seq: u64) -> Option<Arc<str>> {
        self.count = self.count.saturating_sub(1);
        let Some(s) = self.spilled.as_mut() else {
            self.from = seq + 1;
            return None;
        };
        while s.groups.front().is_some_and(|(at, _)| *at < seq) {
            s.groups.pop_front();
        }
        let group = match s.groups.front() {
            Some((at, _)) if *at == seq => s.groups.pop_front().map(|(_, g)| g),
            _ => None,
        };
        if let Some(run) = s.runs.front_mut() {
            run.0 += 1;
            if run.0 >= run.1 {
                s.runs.pop_front();
            }
        }
        match s.runs.front() {
            Some(&(start, _)) => self.from = start,
            None => {
                self.from = s.tail;
                self.spilled = None;
            }
        }
        group
    }
}

impl Body {
    /// Moves the stored deliveries of the memory queue back to the disk backlog, where they
    /// already are, and returns how many moved and what they give back to the global budget.
    /// What is not stored (QoS 0) stays in memory and so goes out before them: order is kept
    /// per topic and QoS, as the specification asks [MQTT-4.6.0-6]. Nothing moves without a
    /// store, or when the positions are not in order below the backlog (which routing never
    /// produces).
    pub(super) fn spill(&mut self) -> (usize, usize) {
        let Some(next_seq) = self.persistence.as_deref().map(|p| p.next_seq) else {
            return (0, 0);
        };
        // The moved positions go before the backlog's.
        let tail = self.backlog.as_ref().map_or(next_seq, |b| b.from);
        let mut runs: VecDeque<(u64, u64)> = VecDeque::new();
        for seq in self.queue.iter().filter_map(Delivery::seq) {
            match runs.back_mut() {
                Some(run) if run.1 == seq => run.1 += 1,
                Some(run) if run.1 > seq => return (0, 0),
                _ => runs.push_back((seq, seq + 1)),
            }
        }
        if runs.back().is_none_or(|run| run.1 > tail) {
            return (0, 0);
        }
        let (moved, freed) = self.take_queued(|d| d.seq().is_some());
        let largest = moved.iter().map(|d| d.msg.payload.len()).max().unwrap_or(0);
        let mut b = self.backlog.take().unwrap_or_else(|| Backlog::new(tail, 0));
        b.count += moved.len() as u64;
        b.max_payload = b
            .max_payload
            .max(u32::try_from(largest).unwrap_or(u32::MAX));
        let mut groups: VecDeque<(u64, Arc<str>)> = moved
            .iter()
            .filter_map(|d| Some((d.seq()?, d.shared.clone()?)))
            .collect();
        // Spilled twice before a refill read the first ones back: the new ones go first.
        let (mut older, mut older_groups, tail) = match b.spilled.take() {
            Some(s) => (s.runs, s.groups, s.tail),
            None => (VecDeque::new(), VecDeque::new(), b.from),
        };
        runs.append(&mut older);
        groups.append(&mut older_groups);
        b.from = runs.front().map_or(tail, |run| run.0);
        b.spilled = Some(Box::new(Spilled { runs, tail, groups }));
        self.backlog = Some(b);
        (moved.len(), freed)
    }
}

impl Body {
    /// Takes entries read from the store (in position order) out of the backlog, as far as
    /// they follow each other ([`Next`]) and `fits` accepts them, and hands each to `sink`
    /// with its share group: the one a spill remembered, or else the guess from the session's
    /// subscriptions ([`ShareGuess`]). What is not taken stays in the backlog. Shared by the
    /// refill (into memory) and the drain (out to a shared group's other members).
    pub(super) fn take_backlog(
        &mut self,
        entries: Vec<Delivery>,
        mut fits: impl FnMut(&Body, &Delivery) -> bool,
        mut sink: impl FnMut(&mut Body, Delivery),
    ) {
        let Some(p) = self.persistence.as_deref().copied() else {
            return;
        };
        let Some(mut b) = self.backlog.take() else {
            return;
        };
        let guess = ShareGuess::of(self);
        for mut d in entries {
            let Some(seq) = d.seq() else { continue };
            match b.next(seq, p.trusted_until) {
                Next::Skip => continue,
                Next::Stop => break,
                Next::Take => {}
            }
            if !fits(self, &d) {
                break;
            }
            if let Some(group) = b.took(seq) {
                d.shared = Some(group);
            }
            ShareGuess::fill(guess.as_ref(), &mut d);
            sink(self, d);
        }
        self.backlog = (b.from < p.next_seq).then_some(b);
    }
}

impl SessionState {
    /// Where the next read of a backlog being handed over starts ([`Self::drain_backlog`]);
    /// None when there is no backlog.
    pub fn drain_from(&self) -> Option<u64> {
        self.body()?.backlog.as_ref().map(|b| b.from)
    }

    /// Takes stored entries read from [`Self::drain_from`] (in position order) out of the
    /// backlog, without bringing them into memory: for a session that ends and hands its
    /// shared-subscription messages to the other members of their groups. Takes as far as the
    /// entries follow each other, as a refill does ([`Next`]); a spilled entry gets back the
    /// share group the spill remembered.
    pub fn drain_backlog(&mut self, entries: Vec<Delivery>) -> Vec<Delivery> {
        let mut out = Vec::new();
        if let Some(body) = self.body_if() {
            body.take_backlog(entries, |_, _| true, |_, d| out.push(d));
        }
        out
    }

    /// Puts deliveries a drain took ([`Self::drain_backlog`]) and did not hand over back in
    /// front of the memory queue, in their order. They are still stored at their positions,
    /// below anything queued or read back since, so they go first; a client that came back
    /// meanwhile gets them, and an ending session drops them with the rest. Returns the
    /// memory they add.
    pub fn return_drained(&mut self, entries: Vec<Delivery>) -> usize {
        if entries.is_empty() {
            return 0;
        }
        let body = self.body_mut();
        let mut cost = 0;
        for d in entries.into_iter().rev() {
            body.queued_bytes += d.cost();
            body.queued_payload += d.msg.payload.len();
            cost += d.msg.charge();
            body.queue.push_front(d);
        }
        cost
    }
}

/// The share group of a delivery read back from the store, which does not keep it (in flight
/// at a restart, or queued on disk without a spill that remembered it): the session's shared
/// subscription whose filter matches the topic, unless one of its own (non-shared)
/// subscriptions matches too, since it may be that one's copy, and none when two of its
/// shared subscriptions match (either's copy). Without it, a delivery of a member that leaves
/// or expires would not go to another member of the group.
pub(super) struct ShareGuess {
    shared: Vec<(Arc<str>, String)>,
    own: Vec<String>,
}

impl ShareGuess {
    /// None when the session has no shared subscription (nothing to guess).
    pub(super) fn of(body: &Body) -> Option<ShareGuess> {
        let is_shared = |f: &str| crate::codec::topic::parse_shared(f).is_some();
        if !body.subscriptions.keys().any(|f| is_shared(f)) {
            return None;
        }
        let mut guess = ShareGuess {
            shared: Vec::new(),
            own: Vec::new(),
        };
        for f in body.subscriptions.keys() {
            match crate::codec::topic::parse_shared(f) {
                Some((_, filter)) => guess.shared.push((Arc::from(f.as_str()), filter.into())),
                None => guess.own.push(f.clone()),
            }
        }
        Some(guess)
    }

    /// Sets `d`'s group when it has none and one is guessed.
    pub(super) fn fill(guess: Option<&ShareGuess>, d: &mut Delivery) {
        if d.shared.is_some() {
            return;
        }
        let Some(g) = guess else {
            return;
        };
        let topic = &*d.msg.topic;
        if g.own.iter().any(|f| crate::codec::topic::matches(f, topic)) {
            return;
        }
        // With two of its shared subscriptions matching, the delivery may be either's copy:
        // handed to the wrong one's group, a member of that group would get the message
        // twice. It stays with the session instead.
        let mut matching = g
            .shared
            .iter()
            .filter(|(_, f)| crate::codec::topic::matches(f, topic));
        if let (Some((group, _)), None) = (matching.next(), matching.next()) {
            d.shared = Some(group.clone());
        }
    }
}

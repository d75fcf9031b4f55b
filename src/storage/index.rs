//! What the writer knows about a session's queue entries without reading them, so that the
//! hot path (an Enqueue, then its Dequeue after the PUBACK) plans blind key writes.
//!
//! Per client it keeps the seqs this process has stored, as ranges: those holding the body
//! inline and those naming a shared (refcounted) body, plus a `floor`: one more than the
//! highest seq that was on disk when the client was first touched by this process (one
//! `last_key` read per client per run). Then:
//! - a seq in `inline` holds an inline entry: a Dequeue is one blind delete, an Enqueue one
//!   blind put;
//! - a seq in `shared`, or below `floor` (a record of an earlier run, maybe of format 1), is
//!   read first, so its body reference is released;
//! - any other seq has no entry: a Dequeue of it arrived before its Enqueue (see `early`).
//!
//! Invariants:
//! - Every queue entry this process wrote with seq ≥ `floor` is in exactly one of the sets,
//!   and every seq in a set has an entry. Changes are staged by the planner and committed only
//!   after the batch was (see [`QueueIndex::commit`]), so a refused batch changes nothing.
//! - Memory is per client a few ranges: entries are appended in seq order and acknowledged
//!   mostly in order, so a queue of a million entries is one range. An entry is dropped with
//!   its session (`DeleteSession`).

use std::collections::{BTreeMap, HashMap};

/// A set of u64, stored as disjoint half-open ranges `start -> end`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seqs(BTreeMap<u64, u64>);

impl Seqs {
    pub(crate) fn contains(&self, x: u64) -> bool {
        self.0
            .range(..=x)
            .next_back()
            .is_some_and(|(_, &end)| x < end)
    }

    pub(crate) fn insert(&mut self, x: u64) {
        if self.contains(x) {
            return;
        }
        let end = x.saturating_add(1);
        let mut start = x;
        let mut new_end = end;
        // Joins a range that ends at x.
        if let Some((&s, &e)) = self.0.range(..x).next_back() {
            if e == x {
                start = s;
            }
        }
        // Joins a range that starts at x + 1.
        if let Some(e) = self.0.get(&end).copied() {
            self.0.remove(&end);
            new_end = e;
        }
        self.0.insert(start, new_end);
    }

    /// Removes `x`; returns whether it was there.
    pub(crate) fn remove(&mut self, x: u64) -> bool {
        let Some((&s, &e)) = self.0.range(..=x).next_back() else {
            return false;
        };
        if x >= e {
            return false;
        }
        self.0.remove(&s);
        if s < x {
            self.0.insert(s, x);
        }
        if x + 1 < e {
            self.0.insert(x + 1, e);
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn ranges(&self) -> usize {
        self.0.len()
    }
}

/// One client's queue, as far as this process wrote it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientQueue {
    /// Seqs below this may hold records of an earlier run.
    pub floor: u64,
    pub inline: Seqs,
    pub shared: Seqs,
}

/// How the planner must treat a queue key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// An inline entry: blind writes.
    Inline,
    /// A shared or earlier-run entry may be there: read it.
    Unknown,
    /// Nothing is stored at this seq.
    Empty,
}

impl ClientQueue {
    pub(crate) fn slot(&self, seq: u64) -> Slot {
        if self.inline.contains(seq) {
            Slot::Inline
        } else if seq < self.floor || self.shared.contains(seq) {
            Slot::Unknown
        } else {
            Slot::Empty
        }
    }

    /// Records that `seq` now holds an entry, inline or naming a shared body.
    pub(crate) fn stored(&mut self, seq: u64, inline: bool) {
        if inline {
            self.shared.remove(seq);
            self.inline.insert(seq);
        } else {
            self.inline.remove(seq);
            self.shared.insert(seq);
        }
    }

    /// Records that `seq` holds nothing now.
    pub(crate) fn removed(&mut self, seq: u64) {
        self.inline.remove(seq);
        self.shared.remove(seq);
    }
}

/// The committed index of every client touched so far, and the highest message id written.
#[derive(Default)]
pub(crate) struct QueueIndex {
    clients: HashMap<String, ClientQueue>,
    /// The highest message id recorded in `meta` (None: not read yet).
    pub msg_id_hw: Option<u64>,
}

impl QueueIndex {
    pub(crate) fn get(&self, client_id: &str) -> Option<&ClientQueue> {
        self.clients.get(client_id)
    }

    /// Applies what a committed batch staged.
    pub(crate) fn commit(&mut self, staged: HashMap<String, ClientQueue>, hw: Option<u64>) {
        self.clients.extend(staged);
        if hw.is_some() {
            self.msg_id_hw = hw;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_merge_split_and_stay_compact() {
        let mut s = Seqs::default();
        for x in 0..1000 {
            s.insert(x);
        }
        assert_eq!(s.ranges(), 1, "in-order appends are one range");
        assert!(s.contains(0) && s.contains(999) && !s.contains(1000));
        assert!(s.remove(500));
        assert!(!s.remove(500));
        assert_eq!(s.ranges(), 2);
        assert!(!s.contains(500) && s.contains(499) && s.contains(501));
        s.insert(500);
        assert_eq!(s.ranges(), 1, "filling the hole joins both sides");
        for x in 0..1000 {
            assert!(s.remove(x));
        }
        assert_eq!(s.ranges(), 0);
        // Out of order: 5, 3, 4 -> one range.
        let mut t = Seqs::default();
        t.insert(5);
        t.insert(3);
        assert_eq!(t.ranges(), 2);
        t.insert(4);
        assert_eq!(t.ranges(), 1);
        assert!(t.contains(3) && t.contains(5) && !t.contains(6) && !t.contains(2));
    }

    #[test]
    fn slots() {
        let mut c = ClientQueue {
            floor: 10,
            ..ClientQueue::default()
        };
        assert_eq!(
            c.slot(3),
            Slot::Unknown,
            "below the floor: an earlier run's"
        );
        assert_eq!(c.slot(10), Slot::Empty);
        c.stored(10, true);
        c.stored(11, false);
        assert_eq!(c.slot(10), Slot::Inline);
        assert_eq!(c.slot(11), Slot::Unknown);
        c.stored(11, true);
        assert_eq!(c.slot(11), Slot::Inline);
        c.removed(10);
        assert_eq!(c.slot(10), Slot::Empty);
    }
}

/// The hot path reads nothing: after a client's first touch, an Enqueue of a message queued
/// once, its inflight record, and the ack's deletes are planned blind.
#[cfg(test)]
mod no_reads {
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::QueueIndex;
    use crate::storage::early::EarlyDequeues;
    use crate::storage::encoding::tests::message;
    use crate::storage::engine::{self, Ks, Kv, Visit};
    use crate::storage::tests::enqueue;
    use crate::storage::{InflightStage, Op, Prepared, StoreError};

    /// An empty store that counts reads.
    #[derive(Default)]
    struct Counting {
        gets: Cell<u32>,
        scans: Cell<u32>,
    }

    impl Kv for Counting {
        fn get(&self, _: Ks, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.gets.set(self.gets.get() + 1);
            Ok(None)
        }
        fn scan(&self, _: Ks, _: &[u8], _: &[u8], _: &mut Visit) -> Result<(), StoreError> {
            self.scans.set(self.scans.get() + 1);
            Ok(())
        }
        fn last_key(&self, _: Ks, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.scans.set(self.scans.get() + 1);
            Ok(None)
        }
    }

    #[test]
    fn enqueue_send_ack_plan_one_key_each_without_reads() {
        let kv = Counting::default();
        let mut early = EarlyDequeues::default();
        let mut index = QueueIndex::default();
        let mut run = |ops: Vec<Op>| -> BTreeMap<(Ks, Vec<u8>), Option<Vec<u8>>> {
            let (writes, staged) =
                engine::plan(&kv, &Prepared::new(ops), &mut early, &index).unwrap();
            index.commit(staged.clients, staged.msg_id_hw);
            writes
        };
        let m = Arc::new(message("t", b"x"));
        // First touch: the client's floor and the message-id mark are read once.
        run(vec![enqueue("c", 0, 1, &m)]);
        let (gets, scans) = (kv.gets.get(), kv.scans.get());
        for seq in 1..100u64 {
            let w = run(vec![enqueue("c", seq, seq + 1, &m)]);
            // The entry and the raised message-id mark.
            assert_eq!(w.len(), 2, "{w:?}");
            assert!(w.contains_key(&(Ks::Queue, crate::storage::encoding::seq_key("c", seq))));
            let w = run(vec![Op::PutInflight {
                client_id: "c".into(),
                packet_id: 1,
                seq,
                stage: InflightStage::Publish,
            }]);
            assert_eq!(w.len(), 1);
            let w = run(vec![
                Op::DeleteInflight {
                    client_id: "c".into(),
                    packet_id: 1,
                },
                Op::Dequeue {
                    client_id: "c".into(),
                    seq,
                },
            ]);
            assert_eq!(w.len(), 2);
            assert!(w.values().all(Option::is_none), "blind deletes");
        }
        assert_eq!((kv.gets.get(), kv.scans.get()), (gets, scans), "no reads");
        assert_eq!(early.len(), 0, "no dequeue taken for early");
    }
}

//! The queues, windows and tables of a [`SessionState`](super::SessionState), in their own
//! allocation: most sessions (idle clean connections) never need one. The state's methods
//! say what each does; these are the parts that work on the body alone.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::{Backlog, Delivery, DropReason, Inflight, Persistence, Shed, Stored};
use crate::codec::{QoS, SubscriptionOptions};
use crate::session::stream::RetainedStreams;
use crate::storage::OwnedOrder;

/// The queues, windows and tables of a [`SessionState`](super::SessionState) once it has any.
#[derive(Debug)]
pub(super) struct Body {
    pub(super) queue: VecDeque<Delivery>,
    /// Memory the queue holds (payload, topic, records), for the global budget.
    pub(super) queued_bytes: usize,
    /// Payload bytes in the queue, for `max_queued_bytes`.
    pub(super) queued_payload: usize,
    pub(super) inflight: VecDeque<(u16, Inflight)>,
    pub(super) next_packet_id: u16,
    /// Every inflight packet id lies in the cyclic range from the front entry's id up to
    /// `next_packet_id`: true of ids handed out in turn, from an empty window, until the
    /// counter comes round to the front entry's id. Then a new id is free unless it is the
    /// front's, with no scan of the window. A restored window may be in any order.
    pub(super) pids_in_order: bool,
    /// The last this many inflight entries were not sent again since the client resumed the
    /// session: its Receive Maximum was smaller than what was in flight [MQTT-4.9.0-2]. They
    /// go out, in order, as acknowledgements make room (see `SessionState::take_unsent`).
    pub(super) unsent: u16,
    /// B-tree collections: empty, they are 24 bytes and allocate nothing, where a hash map
    /// is 48 (its hasher's keys inline), and most sessions hold a few entries.
    pub(super) inbound_qos2: BTreeSet<u16>,
    pub(super) subscriptions: BTreeMap<String, (SubscriptionOptions, Option<u32>)>,
    /// Since when the queue has been full without the client taking anything (slow consumer).
    pub(super) full_since: Option<Instant>,
    /// Set for a persistent session when the broker has a store.
    /// Boxed: most sessions end with their connection and have none.
    pub(super) persistence: Option<Box<Persistence>>,
    pub(super) backlog: Option<Backlog>,
    /// Retained messages owed to new subscriptions, sent before the queue.
    pub(super) streams: RetainedStreams,
}

/// Up to this many messages in flight, a new packet id is checked against each of them. Above
/// it a batch marks the ids in flight once ([`PidsInUse`]): with a window of thousands (a
/// large `max_inflight` and a slow client) a scan per message made filling the window
/// quadratic.
const PID_SCAN_MAX: usize = 64;

/// The packet ids in flight, one bit each (8 KB), for one `take_ready` batch.
pub(super) struct PidsInUse(Vec<u64>);

impl PidsInUse {
    fn of(pids: impl Iterator<Item = u16>) -> PidsInUse {
        let mut set = PidsInUse(vec![0; 1024]);
        for pid in pids {
            set.insert(pid);
        }
        set
    }

    fn contains(&self, pid: u16) -> bool {
        self.0[usize::from(pid >> 6)] & (1 << (pid & 63)) != 0
    }

    fn insert(&mut self, pid: u16) {
        self.0[usize::from(pid >> 6)] |= 1 << (pid & 63);
    }
}

impl Body {
    /// An empty body for a state at `epoch`. Its stream ids start from the epoch, so a batch
    /// read for a stream of a body a clean start dropped never fills one of this body.
    pub(super) fn new(epoch: u64) -> Body {
        Body {
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_payload: 0,
            inflight: VecDeque::new(),
            next_packet_id: 1,
            pids_in_order: true,
            unsent: 0,
            inbound_qos2: BTreeSet::new(),
            subscriptions: BTreeMap::new(),
            full_since: None,
            persistence: None,
            backlog: None,
            streams: RetainedStreams::with_ids_after(epoch << 32),
        }
    }

    pub(super) fn backlog_len(&self) -> u64 {
        self.backlog.as_ref().map_or(0, |b| b.count)
    }

    pub(super) fn queue_depth(&self) -> usize {
        self.queue
            .len()
            .saturating_add(usize::try_from(self.backlog_len()).unwrap_or(usize::MAX))
    }

    /// Queues `d`; returns what it adds to the global budget (`Message::charge`).
    pub(super) fn push(&mut self, d: Delivery) -> usize {
        self.queued_bytes += d.cost();
        self.queued_payload += d.msg.payload.len();
        let charge = d.msg.charge();
        self.queue.push_back(d);
        charge
    }

    /// Accounts for `d` leaving the queue; returns what it gives back to the global budget.
    fn unqueued(&mut self, d: &Delivery) -> usize {
        self.queued_bytes -= d.cost();
        self.queued_payload -= d.msg.payload.len();
        d.msg.release()
    }

    /// Takes the queued deliveries `which` picks out of the queue, in order (the rest keep
    /// theirs), and returns them with what they give back to the global budget.
    pub(super) fn take_queued(
        &mut self,
        which: impl Fn(&Delivery) -> bool,
    ) -> (Vec<Delivery>, usize) {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for d in self.queue.drain(..) {
            if which(&d) {
                taken.push(d);
            } else {
                kept.push_back(d);
            }
        }
        self.queue = kept;
        let freed = taken.iter().map(|d| self.unqueued(d)).sum();
        (taken, freed)
    }

    /// See [`super::SessionState::shed`].
    pub(super) fn shed(&mut self) -> Shed {
        let (dropped, freed) = self.take_queued(|d| d.seq().is_none());
        let (spilled, spill_freed) = self.spill();
        Shed {
            dropped,
            spilled,
            freed: freed + spill_freed,
        }
    }

    /// Takes the next delivery from the front stream or the queue, with what it gives back to
    /// the global budget.
    pub(super) fn pop_next(&mut self, streaming: bool) -> Option<(Delivery, usize)> {
        if streaming {
            return self.streams.pop().map(|d| {
                let cost = d.msg.record_cost();
                (d, cost)
            });
        }
        let d = self.queue.pop_front()?;
        let freed = self.unqueued(&d);
        Some((d, freed))
    }

    /// The next free packet id. `used` is this batch's set of ids in flight, made on first
    /// need once the window holds more than [`PID_SCAN_MAX`]; below that each id is checked
    /// against the window itself.
    pub(super) fn allocate_packet_id(&mut self, used: &mut Option<PidsInUse>) -> u16 {
        if self.inflight.is_empty() {
            self.pids_in_order = true;
        }
        if self.pids_in_order {
            let pid = self.next_packet_id;
            match self.inflight.front() {
                Some((front, _)) if *front == pid => {
                    // Come round to the oldest id still in flight: the ids after it are no
                    // longer all ahead of the counter.
                    self.pids_in_order = false;
                }
                _ => {
                    self.advance_packet_id();
                    return pid;
                }
            }
        }
        if used.is_none() && self.inflight.len() > PID_SCAN_MAX {
            *used = Some(PidsInUse::of(self.inflight.iter().map(|(p, _)| *p)));
        }
        // `take_ready` allocates only below the window, which is at most 65535 (a u16), so
        // some id is free and the loop ends; ids are handed out in turn, so it is found
        // within a few steps unless a few old messages stay in flight for a whole cycle.
        loop {
            let pid = self.next_packet_id;
            self.advance_packet_id();
            let taken = match used.as_ref() {
                Some(set) => set.contains(pid),
                None => self.inflight.iter().any(|(p, _)| *p == pid),
            };
            if !taken {
                if let Some(set) = used.as_mut() {
                    set.insert(pid);
                }
                return pid;
            }
        }
    }

    /// Moves the id counter on, past 0 [MQTT-2.3.1-1].
    fn advance_packet_id(&mut self) {
        self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
    }

    pub(super) fn inflight_position(&self, pid: u16) -> Option<usize> {
        self.inflight.iter().position(|(p, _)| *p == pid)
    }

    /// Removes the inflight entry at `pos`, keeping `unsent` (the tail not sent again since a
    /// resume) right: an entry of that tail can be acknowledged from the client's earlier
    /// connection.
    pub(super) fn remove_inflight(&mut self, pos: usize) -> Option<(u16, Inflight)> {
        let unsent_from = self.inflight.len().saturating_sub(usize::from(self.unsent));
        if pos >= unsent_from && self.unsent > 0 {
            self.unsent -= 1;
        }
        self.inflight.remove(pos)
    }

    /// See [`super::SessionState::take_ready`].
    pub(super) fn take_ready(
        &mut self,
        window: usize,
        max: usize,
        now: Instant,
        out: &mut Vec<(u16, Delivery)>,
        on_drop: &mut dyn FnMut(&Delivery, DropReason),
        may_read: &dyn Fn(&Delivery) -> bool,
    ) -> usize {
        let mut freed = 0;
        let mut taken = 0;
        let mut used = None;
        let mut before = None;
        while taken < max {
            // Retained streams go first; the queue waits until they are done (see
            // `crate::session::stream`). A stream whose buffer ran empty waits for its next
            // batch.
            let streaming = self.streams.is_active();
            let front = if streaming {
                self.streams.front()
            } else {
                self.queue.front()
            };
            let Some(front) = front else {
                break;
            };
            if front.qos != QoS::AtMostOnce && self.inflight.len() >= window {
                break;
            }
            let Some((d, released)) = self.pop_next(streaming) else {
                break;
            };
            self.full_since = None;
            freed += released;
            if d.msg.is_expired(now) {
                on_drop(&d, DropReason::Expired);
                continue;
            }
            if !may_read(&d) {
                on_drop(&d, DropReason::NotAuthorized);
                continue;
            }
            let mut d = d;
            let pid = if d.qos == QoS::AtMostOnce {
                0
            } else {
                if streaming {
                    d.stored = self.owned_order(&mut before).map(Stored::owned);
                }
                let pid = self.allocate_packet_id(&mut used);
                self.inflight.push_back((pid, Inflight::Publish(d.clone())));
                pid
            };
            out.push((pid, d));
            taken += 1;
        }
        freed
    }

    /// Where a retained message sent now stands in a persistent session's send order (None
    /// without a store): before the first stored queue entry not sent yet, after the last
    /// one sent. `before` caches that entry's position for one `take_ready` batch, in which
    /// the queue waits for the streams.
    fn owned_order(&mut self, before: &mut Option<u64>) -> Option<OwnedOrder> {
        let next_seq = self.persistence.as_deref()?.next_seq;
        let first_unsent = *before.get_or_insert_with(|| {
            self.queue
                .iter()
                .find_map(Delivery::seq)
                .or(self.backlog.as_ref().map(|b| b.from))
                .unwrap_or(next_seq)
        });
        let p = self.persistence.as_deref_mut()?;
        let nth = p.next_nth;
        p.next_nth = nth.wrapping_add(1);
        Some(OwnedOrder {
            before: first_unsent,
            nth,
        })
    }

    /// See [`super::SessionState::has_ready`].
    pub(super) fn has_ready(&self, window: usize) -> bool {
        if self.streams.request().is_some() {
            return true;
        }
        let front = if self.streams.is_active() {
            self.streams.front()
        } else {
            self.queue.front()
        };
        let unsent = usize::from(self.unsent);
        if unsent > 0 && self.inflight.len() - unsent < window {
            return true;
        }
        match front {
            None => false,
            Some(d) => d.qos == QoS::AtMostOnce || self.inflight.len() < window,
        }
    }

    /// See [`super::SessionState::take_shared`].
    pub(super) fn take_shared(
        &mut self,
        sent_too: bool,
        movable: impl Fn(&Delivery) -> bool,
    ) -> TakenShared {
        let mut out = Vec::new();
        let mut sent_ids = Vec::new();
        if sent_too {
            let mut keep_inflight = VecDeque::with_capacity(self.inflight.len());
            for (pid, f) in self.inflight.drain(..) {
                match f {
                    Inflight::Publish(d)
                        if d.qos == QoS::AtLeastOnce && d.shared.is_some() && movable(&d) =>
                    {
                        sent_ids.push(pid);
                        out.push(d)
                    }
                    f => keep_inflight.push_back((pid, f)),
                }
            }
            self.inflight = keep_inflight;
            // The connection is over: a resume counts again.
            self.unsent = 0;
        }
        let (taken, freed) = self.take_queued(|d| d.shared.is_some() && movable(d));
        out.extend(taken);
        (out, freed, sent_ids)
    }
}

/// What [`super::SessionState::take_shared`] took: the deliveries, the freed queue bytes and the
/// packet ids the sent ones had.
pub(super) type TakenShared = (Vec<Delivery>, usize, Vec<u16>);

//! The pure session state machine: outbound queue, outbound inflight window with packet-id
//! allocation, inbound QoS 2 packet ids awaiting PUBREL, and the session's subscriptions. No I/O and
//! no clocks beyond the `Instant` callers pass in, so every transition is unit-tested without
//! sockets.
//!
//! Invariants:
//! - `queue` holds deliveries not yet sent, in arrival order; `inflight` holds sent QoS 1/2
//!   deliveries (and PUBREL-sent markers) in send order, so a resumed session resends them in the
//!   original order [MQTT-4.6.0-1].
//! - A packet id is in `inflight` at most once, and never 0 [MQTT-2.3.1-1].
//! - Nothing is resent except by [`SessionState::resume`] [MQTT-4.4.0-1].

use std::sync::Arc;
use std::time::Instant;

use super::stream::StreamRequest;
use crate::codec::{QoS, SubscriptionOptions};
use crate::message::Message;
use crate::storage::OwnedOrder;
use backlog::{Backlog, ShareGuess};
use body::{Body, TakenShared};

/// One message on its way to this session's client.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// min(publish QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag to send: 1 only for retained messages sent because of a subscription
    /// [MQTT-3.3.1-8], or with Retain As Published.
    pub retain: bool,
    /// v5 Subscription Identifiers of every matching subscription [MQTT-3.3.4-3].
    pub subscription_ids: Vec<u32>,
    /// The shared subscription (`$share/g/f`) this came through, so it can be handed to another
    /// member if this one leaves (MQTT 5.0 4.8.2, non-normative).
    pub shared: Option<std::sync::Arc<str>>,
    /// How the store keeps it: QoS 1/2 deliveries of a persistent session when a store is
    /// configured; None otherwise.
    pub stored: Option<Stored>,
}

/// Where the store keeps a QoS 1/2 delivery of a persistent session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Its position in the session's stored queue; once sent, its inflight record names it.
    Queue(u64),
    /// Only in its inflight record, which holds the message: a retained message sent to a new
    /// subscription, which has no queue position (see `crate::session::stream`). Set as it
    /// enters the inflight window. The [`OwnedOrder`] fields inline: 16 bytes with the tag,
    /// where the struct's padding would make every `Delivery` 8 bytes larger.
    Inflight { before: u64, nth: u32 },
}

impl Stored {
    /// A delivery kept in its inflight record, at `order`.
    pub fn owned(order: OwnedOrder) -> Stored {
        Stored::Inflight {
            before: order.before,
            nth: order.nth,
        }
    }

    /// Where a delivery kept in its inflight record stands in the send order.
    pub fn order(&self) -> Option<OwnedOrder> {
        match *self {
            Stored::Inflight { before, nth } => Some(OwnedOrder { before, nth }),
            Stored::Queue(_) => None,
        }
    }
}

impl Delivery {
    /// Its position in the stored queue, if it has one: what a `Dequeue` removes.
    pub fn seq(&self) -> Option<u64> {
        match self.stored {
            Some(Stored::Queue(seq)) => Some(seq),
            _ => None,
        }
    }

    /// Bytes this delivery holds in memory, for queue budgets.
    pub fn cost(&self) -> usize {
        self.msg.cost()
    }
}

/// A sent QoS 1/2 message awaiting its acknowledgement.
#[derive(Clone, Debug)]
pub enum Inflight {
    /// PUBLISH sent, awaiting PUBACK (QoS 1) or PUBREC (QoS 2).
    Publish(Delivery),
    /// PUBREL sent, awaiting PUBCOMP. Keeps how the delivery was stored, for the store's
    /// records.
    Released { stored: Option<Stored> },
}

impl Inflight {
    /// How the delivery is stored, in either stage.
    pub fn stored(&self) -> Option<Stored> {
        match self {
            Inflight::Publish(d) => d.stored,
            Inflight::Released { stored } => *stored,
        }
    }
}

/// What to send when a session resumes.
#[derive(Clone, Debug)]
pub enum Resend {
    /// PUBLISH again with DUP=1 under the same packet id.
    Publish(u16, Delivery),
    /// PUBREL again.
    PubRel(u16),
}

/// Why a delivery was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// `max_queued_messages` or `max_queued_bytes` reached.
    QueueFull,
    /// QoS 0 for a session whose client is not connected.
    Offline,
    /// The message expired before it could be sent.
    Expired,
    /// The subscription it was routed by was dropped (clean start, session discarded) between
    /// routing and queueing: nothing is owed, so it is not counted as a loss.
    Unsubscribed,
    /// When it was due to be sent, the subscriber may no longer read its topic (the ACL
    /// changed since it was queued).
    NotAuthorized,
}

/// What [`SessionState::shed`] took out of memory.
#[derive(Debug, Default)]
pub struct Shed {
    /// The deliveries that were only in memory, in order: to hand over or drop.
    pub dropped: Vec<Delivery>,
    /// Stored deliveries moved back to the disk backlog.
    pub spilled: usize,
    /// What both give back to the global budget.
    pub freed: usize,
}

/// Where a queued delivery went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// Memory it takes in the queue (0 when it went to the disk backlog only).
    pub cost: usize,
    /// Its stored queue position, when the session persists it.
    pub seq: Option<u64>,
    /// Messages waiting in the queue once it is in ([`SessionState::queue_depth`]): what
    /// paces publishers (see `broker::PACE_AT`).
    pub depth: usize,
}

/// Payload bytes a persistent session's memory queue holds before further stored deliveries
/// wait on disk (besides the `memory_cap` count). A stuck or departed subscriber of large
/// messages would otherwise keep up to `memory_cap` of them in memory, where they count
/// against the global budget and pause every publisher; on disk they cost no memory.
pub const MEMORY_BYTES: usize = 256 * 1024;

/// Payload bytes a stuck subscriber's memory queue holds (see `Session::is_stuck`), whatever
/// `max_queued_bytes` allows: it takes nothing, so more would only hold the global budget
/// until it drains or leaves. Enough for any number of small messages up to the count limit.
pub const STUCK_QUEUE_BYTES: u32 = 64 * 1024;

/// How a persistent session keeps its QoS 1/2 queue with a store.
#[derive(Clone, Copy, Debug)]
pub struct Persistence {
    /// Deliveries kept in memory while online; beyond it they wait on disk.
    pub memory_cap: usize,
    /// The next stored queue position.
    pub next_seq: u64,
    /// Stored entries below this were loaded at start: a missing one was acknowledged before,
    /// not a write still on its way, so a refill steps over it.
    pub trusted_until: u64,
    /// A loaded backlog: (first unsent position, entries).
    pub backlog: Option<(u64, u64)>,
    /// The next [`OwnedOrder::nth`]: past those of the restored inflight window
    /// ([`SessionState::restore`] sets it).
    pub next_nth: u32,
}

/// Limits a session enforces on itself.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// 0 = no count limit. u32s: every session holds a copy, and 4 billion is no limit either.
    pub max_queued_messages: u32,
    /// 0 = no byte limit (a configured limit above 4 GiB is taken as 4 GiB).
    pub max_queued_bytes: u32,
}

/// Outbound and inbound protocol state of one session.
///
/// Most sessions (idle clean connections) never queue, subscribe or hold a QoS 2 id, so all
/// of that lives in a body (`body::Body`) allocated by the first change that needs it: reads
/// see an empty session without allocating, and a clean start frees it.
#[derive(Debug)]
pub struct SessionState {
    limits: Limits,
    /// See [`Self::epoch`].
    epoch: u64,
    online: bool,
    body: Option<Box<Body>>,
}

impl SessionState {
    pub fn new(limits: Limits) -> SessionState {
        SessionState {
            limits,
            epoch: 0,
            online: false,
            body: None,
        }
    }

    /// The body, if anything ever needed one: reads answer "empty" without it.
    fn body(&self) -> Option<&Body> {
        self.body.as_deref()
    }

    /// The body, allocated now if need be: for changes that add something.
    fn body_mut(&mut self) -> &mut Body {
        let epoch = self.epoch;
        self.body.get_or_insert_with(|| Box::new(Body::new(epoch)))
    }

    /// The body if there is one: for changes that only take something away.
    fn body_if(&mut self) -> Option<&mut Body> {
        self.body.as_deref_mut()
    }

    /// Makes QoS 1/2 deliveries stored (with queue positions) and lets the queue spill to disk.
    /// None turns it off (a session that ends with its connection).
    pub fn set_persistence(&mut self, p: Option<Persistence>) {
        if p.is_none() && self.body.is_none() {
            return;
        }
        let b = self.body_mut();
        b.backlog = p
            .and_then(|p| p.backlog)
            .filter(|(_, count)| *count > 0)
            .map(|(from, count)| Backlog::new(from, count));
        b.persistence = p.map(Box::new);
    }

    pub fn is_persistent(&self) -> bool {
        self.body().is_some_and(|b| b.persistence.is_some())
    }

    /// The stored queue position the next delivery gets.
    pub fn next_seq(&self) -> Option<u64> {
        self.body()?.persistence.as_ref().map(|p| p.next_seq)
    }

    /// Entries waiting on disk only.
    pub fn backlog_len(&self) -> u64 {
        self.body().map_or(0, Body::backlog_len)
    }

    /// When the memory queue runs low and a backlog waits on disk: read up to `max` stored
    /// entries from this position. A `stuck` subscriber (see `Session::is_stuck`) reads
    /// nothing until its inflight window below `window` has room: what it read would only
    /// sit in memory, holding the global budget its queue was moved to disk to free.
    pub fn refill_request(&self, window: usize, stuck: bool) -> Option<(u64, usize)> {
        let body = self.body()?;
        let p = body.persistence.as_deref().copied()?;
        let b = body.backlog.as_ref()?;
        let low = body.queue.len() < p.memory_cap / 2 + 1 && body.queued_payload < MEMORY_BYTES / 2;
        if !low || (stuck && body.inflight.len() >= window) {
            return None;
        }
        let max = match b.max_payload as usize {
            0 => p.memory_cap,
            largest => (MEMORY_BYTES / largest).clamp(1, p.memory_cap),
        };
        Some((b.from, max))
    }

    /// Takes entries read from the store (in position order) into memory, as far as they
    /// follow each other (see [`backlog::Next`]): a gap is a write still on its way to the
    /// store, and the refill stops before it. Returns the memory cost added.
    pub fn refill(&mut self, entries: Vec<Delivery>) -> usize {
        let Some(body) = self.body_if() else {
            return 0;
        };
        let mut cost = 0;
        body.take_backlog(
            entries,
            // The rest stays on disk for the next refill.
            |body, d| {
                body.queue.is_empty() || body.queued_payload + d.msg.payload.len() <= MEMORY_BYTES
            },
            |body, d| cost += body.push(d),
        );
        cost
    }

    /// Moves the stored deliveries of the memory queue back to the disk backlog
    /// (they are in the store already): for a persistent session that went offline, or that
    /// holds the saturated global budget without taking anything. Returns how many moved and
    /// what they give back to the global budget; they are read back as the client takes
    /// messages again.
    pub fn spill(&mut self) -> (usize, usize) {
        self.body_if().map_or((0, 0), Body::spill)
    }

    /// Records that a delivery found the queue full; returns how long it has been full.
    pub fn note_full(&mut self, now: Instant) -> std::time::Duration {
        now.saturating_duration_since(*self.body_mut().full_since.get_or_insert(now))
    }

    pub fn set_online(&mut self, online: bool) {
        self.online = online;
    }

    pub fn is_online(&self) -> bool {
        self.online
    }

    /// Queues a delivery, or says why it was dropped. QoS 0 is not queued for an offline client
    /// (as Mosquitto's default); a full queue drops whatever arrives. A persistent session's QoS
    /// 1/2 delivery gets a stored queue position and, when the client is offline, the memory
    /// queue is full or a backlog already waits, it goes to the disk backlog only.
    pub fn enqueue(&mut self, d: Delivery) -> Result<Enqueued, DropReason> {
        self.try_enqueue(d).map_err(|(reason, _)| reason)
    }

    /// Bumped by [`Self::clear`]: a delivery routed by a subscription from before a clear is
    /// refused, so a session that starts clean (or is discarded) never receives a message
    /// routed by the subscriptions it dropped, even when routing raced with the clear.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// As [`Self::try_enqueue`], for a delivery routed when the state was at `epoch`. A
    /// `stuck` subscriber (see `Session::is_stuck`) holds at most [`STUCK_QUEUE_BYTES`] of
    /// payload in memory: more is dropped, or for a stored delivery kept on disk only.
    pub fn try_enqueue_at(
        &mut self,
        epoch: u64,
        d: Delivery,
        stuck: bool,
    ) -> Result<Enqueued, (DropReason, Delivery)> {
        if epoch != self.epoch {
            return Err((DropReason::Unsubscribed, d));
        }
        let cap = match self.limits.max_queued_bytes {
            _ if !stuck => self.limits.max_queued_bytes,
            0 => STUCK_QUEUE_BYTES,
            n => n.min(STUCK_QUEUE_BYTES),
        };
        self.enqueue_capped(d, cap)
    }

    /// As [`Self::enqueue`], but a refused delivery is handed back (to wait for room).
    pub fn try_enqueue(&mut self, d: Delivery) -> Result<Enqueued, (DropReason, Delivery)> {
        self.enqueue_capped(d, self.limits.max_queued_bytes)
    }

    /// As [`Self::try_enqueue`], with `max_bytes` of payload (0: no bound) in place of
    /// `max_queued_bytes`.
    fn enqueue_capped(
        &mut self,
        mut d: Delivery,
        max_bytes: u32,
    ) -> Result<Enqueued, (DropReason, Delivery)> {
        if !self.online && d.qos == QoS::AtMostOnce {
            return Err((DropReason::Offline, d));
        }
        let (limits, online) = (self.limits, self.online);
        let body = self.body_mut();
        let backlog = body.backlog_len();
        let bytes_full = max_bytes > 0
            && (body.queued_payload + d.msg.payload.len()) as u64 > u64::from(max_bytes)
            && !body.queue.is_empty();
        let count_full = limits.max_queued_messages > 0
            && body.queue.len() as u64 + backlog >= u64::from(limits.max_queued_messages);
        let stored = d.qos != QoS::AtMostOnce && body.persistence.is_some();
        if count_full || (bytes_full && !stored) {
            return Err((DropReason::QueueFull, d));
        }
        let Some(p) = body.persistence.as_mut().filter(|_| stored) else {
            let cost = body.push(d);
            return Ok(Enqueued {
                cost,
                seq: None,
                depth: body.queue_depth(),
            });
        };
        let seq = p.next_seq;
        p.next_seq += 1;
        d.stored = Some(Stored::Queue(seq));
        let memory_full = body.queue.len() >= p.memory_cap
            || bytes_full
            || (!body.queue.is_empty() && body.queued_payload + d.msg.payload.len() > MEMORY_BYTES);
        if online && body.backlog.is_none() && !memory_full {
            let cost = body.push(d);
            return Ok(Enqueued {
                cost,
                seq: Some(seq),
                depth: body.queue_depth(),
            });
        }
        let b = body.backlog.get_or_insert(Backlog::new(seq, 0));
        b.count += 1;
        let payload = u32::try_from(d.msg.payload.len()).unwrap_or(u32::MAX);
        b.max_payload = b.max_payload.max(payload);
        Ok(Enqueued {
            cost: 0,
            seq: Some(seq),
            depth: body.queue_depth(),
        })
    }

    pub fn queued_len(&self) -> usize {
        self.body().map_or(0, |b| b.queue.len())
    }

    /// Messages waiting to be sent: the memory queue and the stored backlog, not those in
    /// flight.
    pub fn queue_depth(&self) -> usize {
        self.body().map_or(0, Body::queue_depth)
    }

    /// Empties the memory queue of a subscriber that holds the global budget without taking
    /// anything: the deliveries that are not stored (all of a session without a store entry:
    /// QoS 0, and QoS 1/2 of a session that is not persistent) are taken out, for the caller
    /// to hand over or drop; the stored ones move back to the disk backlog ([`Self::spill`]).
    pub fn shed(&mut self) -> Shed {
        self.body_if().map_or_else(Shed::default, Body::shed)
    }

    pub fn queued_bytes(&self) -> usize {
        self.body().map_or(0, |b| b.queued_bytes)
    }

    pub fn inflight_len(&self) -> usize {
        self.body().map_or(0, |b| b.inflight.len())
    }

    /// Moves deliveries from the queue into the inflight window, at most `max` of them, while the
    /// window has room below `window` (the client's Receive Maximum). QoS 0 needs no room. Expired
    /// messages, and those `may_read` refuses, are dropped and reported through `on_drop`.
    /// Returns the freed queue bytes.
    pub fn take_ready(
        &mut self,
        window: usize,
        max: usize,
        now: Instant,
        out: &mut Vec<(u16, Delivery)>,
        on_drop: &mut dyn FnMut(&Delivery, DropReason),
        may_read: &dyn Fn(&Delivery) -> bool,
    ) -> usize {
        self.body_if().map_or(0, |b| {
            b.take_ready(window, max, now, out, on_drop, may_read)
        })
    }

    /// True when `take_ready` could hand out something with this window, or a retained stream
    /// needs its next batch read ([`Self::retained_request`]). Asked every connection turn:
    /// allocates nothing.
    pub fn has_ready(&self, window: usize) -> bool {
        self.body().is_some_and(|b| b.has_ready(window))
    }

    /// Starts sending the retained messages matching `filter` to a new subscription.
    pub fn start_retained(
        &mut self,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    ) {
        self.body_mut().streams.start(filter, options, sub_id);
    }

    /// The retained store read the front stream needs, if any.
    pub fn retained_request(&self) -> Option<StreamRequest> {
        self.body()?.streams.request()
    }

    /// Takes a batch read for `req` (see [`super::stream::RetainedStreams::fill`]); returns
    /// the memory added.
    pub fn fill_retained(
        &mut self,
        req: &StreamRequest,
        batch: Vec<(Arc<str>, Arc<Message>)>,
        keep: &dyn Fn(&Message) -> bool,
    ) -> usize {
        self.body_if()
            .map_or(0, |b| b.streams.fill(req, batch, keep))
    }

    /// Retained streams running.
    pub fn retained_streams(&self) -> usize {
        self.body().map_or(0, |b| b.streams.len())
    }

    /// How the inflight message under `pid` is stored.
    pub fn inflight_stored(&self, pid: u16) -> Option<Stored> {
        let b = self.body()?;
        let pos = b.inflight_position(pid)?;
        b.inflight[pos].1.stored()
    }

    /// Puts back the inflight window and inbound QoS 2 ids of a session loaded from the store.
    pub fn restore(&mut self, inflight: Vec<(u16, Inflight)>, inbound_qos2: Vec<u16>) {
        if inflight.is_empty() && inbound_qos2.is_empty() && self.body.is_none() {
            return;
        }
        let b = self.body_mut();
        if let Some(&(pid, _)) = inflight.last() {
            b.next_packet_id = pid.wrapping_add(1).max(1);
        }
        // Restored after its subscriptions: in-flight deliveries get back their share group.
        // Retained messages sent to a new subscription (stored in their inflight records) came
        // through no shared subscription: those get no retained messages (MQTT 5.0 4.8.2).
        let guess = ShareGuess::of(b);
        let mut inflight = inflight;
        let mut next_nth = None;
        for (_, f) in &mut inflight {
            match f {
                Inflight::Publish(d) if d.seq().is_some() => ShareGuess::fill(guess.as_ref(), d),
                _ => {}
            }
            if let Some(o) = f.stored().and_then(|s| s.order()) {
                next_nth = next_nth.max(Some(o.nth.wrapping_add(1)));
            }
        }
        if let (Some(p), Some(n)) = (b.persistence.as_mut(), next_nth) {
            p.next_nth = p.next_nth.max(n);
        }
        b.pids_in_order = inflight.is_empty();
        b.inflight = inflight.into();
        b.inbound_qos2 = inbound_qos2.into_iter().collect();
    }

    /// PUBACK: completes a QoS 1 delivery. False if no QoS 1 PUBLISH awaits this id.
    pub fn on_puback(&mut self, pid: u16) -> Option<Delivery> {
        let b = self.body_if()?;
        let pos = b.inflight_position(pid)?;
        match &b.inflight[pos].1 {
            Inflight::Publish(d) if d.qos == QoS::AtLeastOnce => {}
            _ => return None,
        }
        match b.remove_inflight(pos) {
            Some((_, Inflight::Publish(d))) => Some(d),
            _ => None,
        }
    }

    /// PUBREC: the QoS 2 delivery moves to PUBREL-sent. Returns true when the caller must send
    /// PUBREL (also for a repeated PUBREC of an id already released). A PUBREC with a failure
    /// reason (v5) ends the flow instead: pass `failed = true`.
    pub fn on_pubrec(&mut self, pid: u16, failed: bool) -> bool {
        let Some(b) = self.body_if() else {
            return false;
        };
        let Some(pos) = b.inflight_position(pid) else {
            return false;
        };
        match &b.inflight[pos].1 {
            Inflight::Publish(d) if d.qos == QoS::ExactlyOnce => {
                if failed {
                    b.remove_inflight(pos);
                    return false;
                }
                // Keep the send order: the PUBREL takes the PUBLISH's place in the window.
                let stored = d.stored;
                b.inflight[pos].1 = Inflight::Released { stored };
                true
            }
            Inflight::Released { .. } => !failed,
            _ => false,
        }
    }

    /// PUBCOMP: completes a QoS 2 delivery.
    pub fn on_pubcomp(&mut self, pid: u16) -> bool {
        let Some(b) = self.body_if() else {
            return false;
        };
        match b.inflight_position(pid) {
            Some(pos) if matches!(b.inflight[pos].1, Inflight::Released { .. }) => {
                b.remove_inflight(pos);
                true
            }
            _ => false,
        }
    }

    /// Inbound QoS 2 PUBLISH: true when the id is new and the message must be routed; false when
    /// it is a resend of one already received and awaiting PUBREL (answer PUBREC again, do not
    /// forward twice [MQTT-4.3.3-9]).
    pub fn inbound_qos2_publish(&mut self, pid: u16) -> bool {
        self.body_mut().inbound_qos2.insert(pid)
    }

    /// Inbound PUBREL: releases the id. Returns whether it was known (v5 answers 0x92 if not).
    pub fn inbound_pubrel(&mut self, pid: u16) -> bool {
        self.body_if().is_some_and(|b| b.inbound_qos2.remove(&pid))
    }

    pub fn inbound_qos2_len(&self) -> usize {
        self.body().map_or(0, |b| b.inbound_qos2.len())
    }

    /// The resends for a resumed session, in the original order [MQTT-4.4.0-1][MQTT-4.6.0-1]:
    /// as many as the client's Receive Maximum (`window`) allows [MQTT-4.9.0-2]; the rest
    /// follow as acknowledgements make room ([`Self::take_unsent`]).
    pub fn resume(&mut self, window: usize) -> Vec<Resend> {
        let Some(b) = self.body_if() else {
            return Vec::new();
        };
        let now = b.inflight.len().min(window);
        b.unsent = u16::try_from(b.inflight.len() - now).unwrap_or(u16::MAX);
        b.inflight.iter().take(now).map(resend_of).collect()
    }

    /// The resends [`Self::resume`] held back that the window has room for now, in order.
    pub fn take_unsent(&mut self, window: usize) -> Vec<Resend> {
        let Some(b) = self.body_if() else {
            return Vec::new();
        };
        let unsent = usize::from(b.unsent);
        let from = b.inflight.len().saturating_sub(unsent);
        let n = window.saturating_sub(from).min(unsent);
        b.unsent -= u16::try_from(n).unwrap_or(b.unsent);
        b.inflight
            .iter()
            .skip(from)
            .take(n)
            .map(resend_of)
            .collect()
    }

    /// Resends held back by the Receive Maximum still owed ([`Self::take_unsent`]).
    pub fn unsent(&self) -> u16 {
        self.body().map_or(0, |b| b.unsent)
    }

    /// The shared subscriptions (`$share/g/f`) that deliveries [`Self::take_shared`] could
    /// move came through, each once.
    pub fn shared_groups(&self) -> Vec<Arc<str>> {
        let mut groups: Vec<Arc<str>> = Vec::new();
        let Some(b) = self.body() else {
            return groups;
        };
        let inflight = b.inflight.iter().filter_map(|(_, f)| match f {
            Inflight::Publish(d) if d.qos == QoS::AtLeastOnce => d.shared.as_ref(),
            _ => None,
        });
        let queued = b.queue.iter().filter_map(|d| d.shared.as_ref());
        for g in inflight.chain(queued) {
            if !groups.iter().any(|known| known == g) {
                groups.push(g.clone());
            }
        }
        groups
    }

    /// Takes out the deliveries that came through a shared subscription and may go to another
    /// member: unsent ones of any QoS, and sent QoS 1 ones awaiting PUBACK. Sent QoS 2 stays with
    /// this member [MQTT-4.8.2-4][MQTT-4.8.2-5]. Returns them in order, the freed queue bytes and
    /// the packet ids the sent ones had, so the caller can delete their stored records (queue
    /// entries by each delivery's `seq`, inflight records by packet id) with the hand-over:
    /// otherwise a restart would deliver them from this member's store too. Without
    /// `sent_too` only the unsent ones: a member still connected may yet acknowledge the sent
    /// ones, and their packet ids must stay taken until it does.
    pub fn take_shared(
        &mut self,
        sent_too: bool,
        movable: impl Fn(&Delivery) -> bool,
    ) -> TakenShared {
        match self.body_if() {
            Some(b) => b.take_shared(sent_too, movable),
            None => (Vec::new(), 0, Vec::new()),
        }
    }

    /// Forgets everything (clean start) and returns the freed queue bytes. The body goes with
    /// it (a clean start keeps no large session's tables), unless the session persists: its
    /// store positions carry on.
    pub fn clear(&mut self) -> usize {
        self.epoch += 1;
        let Some(old) = self.body.take() else {
            return 0;
        };
        let freed = old.queue.iter().map(|d| d.msg.release()).sum::<usize>() + old.streams.bytes();
        if let Some(mut p) = old.persistence {
            p.trusted_until = p.next_seq;
            let mut body = Body::new(self.epoch);
            body.persistence = Some(p);
            self.body = Some(Box::new(body));
        }
        freed
    }

    /// Records a subscription; true when it replaced one on the same filter.
    pub fn add_subscription(
        &mut self,
        filter: &str,
        opts: SubscriptionOptions,
        id: Option<u32>,
    ) -> bool {
        self.body_mut()
            .subscriptions
            .insert(filter.to_string(), (opts, id))
            .is_some()
    }

    pub fn has_subscription(&self, filter: &str) -> bool {
        self.body()
            .is_some_and(|b| b.subscriptions.contains_key(filter))
    }

    /// Forgets an inflight entry without completing it: the message could not be sent (e.g. it
    /// exceeds the client's Maximum Packet Size), which counts as sent [MQTT-3.1.2-25].
    pub fn abandon_inflight(&mut self, pid: u16) {
        if let Some(b) = self.body_if() {
            if let Some(pos) = b.inflight_position(pid) {
                b.remove_inflight(pos);
            }
        }
    }

    /// Forgets a subscription (and stops reading its retained messages); true if it existed.
    pub fn remove_subscription(&mut self, filter: &str) -> bool {
        let Some(b) = self.body_if() else {
            return false;
        };
        b.streams.stop(filter);
        // A B-tree frees its nodes as it empties: nothing to shrink.
        b.subscriptions.remove(filter).is_some()
    }

    pub fn subscription_count(&self) -> usize {
        self.body().map_or(0, |b| b.subscriptions.len())
    }

    pub fn subscription_filters(&self) -> Vec<String> {
        self.body()
            .map_or_else(Vec::new, |b| b.subscriptions.keys().cloned().collect())
    }
}

mod backlog;
mod body;
#[cfg(test)]
mod pid_tests;
#[cfg(test)]
mod tests;

/// How an inflight entry is sent again: its PUBLISH (DUP), or its PUBREL.
fn resend_of((pid, f): &(u16, Inflight)) -> Resend {
    match f {
        Inflight::Publish(d) => Resend::Publish(*pid, d.clone()),
        Inflight::Released { .. } => Resend::PubRel(*pid),
    }
}

//! Routing: subscribing and unsubscribing, matching a PUBLISH against the trie, queueing the
//! deliveries (outside the trie lock), publishers blocked on full queues, drops and their
//! counters, and handing a departing shared member's messages to the rest of its group.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use smallvec::SmallVec;

use crate::auth::listeners::BRIDGE_LISTENER;
use crate::auth::{Access, AuthConfig, AuthSet};
use crate::codec::{topic, QoS, ReasonCode, SubscriptionOptions};
use crate::config::SlowConsumerPolicy;
use crate::message::{Message, Origin};
use crate::persistence::Receipt;
use crate::router::trie::Subscription;
use crate::session::{Control, Delivery, DropReason, Session};
use crate::storage::Op;

use super::{cluster, BrokerState};

/// How long a publisher waits for a full subscriber queue to make room before that subscriber
/// is treated as stuck and its messages dropped, so one stalled client holds nobody back for
/// longer than this.
pub const STUCK_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Flow control: a QoS 1/2 PUBLISH that leaves a connected subscriber with this many messages
/// waiting in its queue (fewer than [`PACE_UNTIL`]) is acknowledged, but its publisher is not
/// read again until that queue is down to [`PACE_RESUME`] (or [`STUCK_AFTER`] passed; the
/// subscriber is then "lagging" and paces nobody until it drains). A publisher faster than
/// its subscribers then runs at their pace with a short queue between them, instead of
/// filling their queues to `max_queued_messages` with every message waiting behind all the
/// others: at 10,000 msg/s per subscriber, 128 queued messages are ~13 ms of latency where
/// 1,000 were 100 ms. Overload rule (c) already holds publishers to their slowest
/// subscriber's pace once its queue is full; this does the same with a short queue.
pub const PACE_AT: usize = 128;

/// See [`PACE_AT`]: a queue already this deep (a persistent session catching up on its
/// stored backlog, a burst from before) paces nobody, since publishers would be held for every
/// message until it is drained; the full queue (rule (c)) still holds them back.
pub const PACE_UNTIL: usize = 2 * PACE_AT;

/// See [`PACE_AT`]: the depth at which a paced publisher is read again.
pub const PACE_RESUME: usize = 64;

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
    pub(super) epoch: u64,
    pub(super) delivery: Delivery,
}

/// Deliveries of one PUBLISH, inline up to [`ROUTE_INLINE`]: most messages reach a few
/// sessions, and two heap vectors per PUBLISH (the trie's matches, then the deliveries) were a
/// malloc/free pair each on the hot path.
pub(super) type RouteList = SmallVec<[Routed; ROUTE_INLINE]>;

/// Matches and deliveries kept on the stack per PUBLISH before spilling to the heap.
const ROUTE_INLINE: usize = 4;

/// What routing one PUBLISH produced.
#[derive(Default)]
pub struct Publication {
    /// QoS 1/2 deliveries that found a connected subscriber's queue full (rule (c)).
    pub blocked: Vec<Routed>,
    /// Store writes the acknowledgement must wait for (queue entries, retained).
    pub ops: Vec<Op>,
    /// A connected subscriber whose queue this message took to [`PACE_AT`] or deeper: the
    /// publisher should not be read again until it drains.
    pub pace: Option<Arc<Session>>,
    /// Whether the message may reach a subscriber: a subscription on this node matched (before
    /// READ checks), or peers may hold one. False lets an MQTT 5 acknowledgement say 0x10 No
    /// matching subscribers, as Mosquitto's does.
    pub matched: bool,
    /// The queue to the other cluster nodes is congested: the publisher should slow down.
    pub cluster_congested: bool,
    /// Resolves once the other cluster nodes are sure to get the message (see
    /// [`Cluster::routed`](super::cluster::Cluster::routed)): the acknowledgement waits for it
    /// too.
    pub cluster_receipt: Option<Receipt>,
}

impl BrokerState {
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
        let shared = topic::parse_shared(filter).is_some();
        let replaced = self.subscriptions.write().subscribe(
            filter,
            Subscription {
                client_id: session.client_id.clone(),
                handle: SubHandle {
                    session: session.clone(),
                    epoch,
                    share: shared.then(|| Arc::from(filter)),
                },
                options,
                id,
            },
        );
        if shared {
            self.cluster.shares_changed();
        }
        replaced
    }

    /// Removes a subscription; true if it existed.
    pub fn unsubscribe(&self, session: &Arc<Session>, filter: &str) -> bool {
        session.with_state(|s| s.remove_subscription(filter));
        let removed = self
            .subscriptions
            .write()
            .unsubscribe(filter, &session.client_id);
        if removed && topic::parse_shared(filter).is_some() {
            self.cluster.shares_changed();
        }
        removed
    }

    /// The shared groups with members on this node, and a version that changes with the list
    /// (see `SubscriptionTrie::shared_groups`).
    pub fn shared_groups(&self) -> (u64, Vec<String>) {
        self.subscriptions.read().shared_groups()
    }

    /// Routes a message to every matching subscription and updates the retained store. One copy
    /// per session for overlapping subscriptions, at the highest granted QoS, carrying every
    /// matching subscription identifier [MQTT-3.3.4-3]; one member per shared group.
    pub fn publish(&self, msg: Arc<Message>) -> Publication {
        let mut ops = Vec::new();
        if msg.retain {
            self.update_retained(&msg, &mut ops);
        }
        // Filled in place and drained: the inline list is a few hundred bytes, and returning
        // it by value, then moving it into an iterator, copied it twice per PUBLISH.
        let mut targets = RouteList::new();
        self.route(&msg, &mut targets);
        let matched = !targets.is_empty() || (cluster::forwards(&msg) && self.cluster.has_peers());
        // With the trie lock released: the cluster's shared groups (see
        // `Cluster::shares_via_cluster`). Groups it serves from this node get the message
        // through it, whichever node it was published on (a peer's message arrives twice: its
        // ordinary copy, routed here, and its shared copy); one it does not serve yet is served
        // here. `$SYS` stays on its node.
        let shares = !msg.topic.starts_with("$SYS") && self.cluster.shares_via_cluster();
        if shares {
            targets.retain(|t| {
                !t.delivery
                    .shared
                    .as_deref()
                    .is_some_and(|f| self.cluster.serves_share(f))
            });
        }
        let auth = if targets.is_empty() {
            None
        } else {
            self.routing_auth()
        };
        let uniform = auth.as_deref().and_then(AuthSet::uniform);
        let mut blocked = Vec::new();
        let mut pace = None;
        let mut cost = 0;
        for t in targets.drain(..) {
            // READ is checked per message, against the subscriber's listener's ACL: a
            // subscription may cover topics the ACL denies.
            if let Some(auth) = &auth {
                if !self.may_read(auth, uniform, &t.session, &msg.topic) {
                    continue;
                }
            }
            cost += self.deliver_or_block(t, &mut blocked, &mut ops, &mut pace);
        }
        // Once per message: the budget is one counter every connection moves.
        self.budget.add(cost);
        let mut cluster_congested = false;
        let mut cluster_receipt = None;
        if cluster::forwards(&msg) {
            cluster_receipt = self.cluster.routed(&msg, shares);
            cluster_congested = self.cluster.congested();
        }
        Publication {
            blocked,
            ops,
            pace,
            matched,
            cluster_congested,
            cluster_receipt,
        }
    }

    /// The deliveries a message makes, collected under the trie read lock, which is released
    /// before anything is queued, into `out` (empty). Overlapping subscriptions of one session
    /// are merged.
    pub(super) fn route(&self, msg: &Arc<Message>, out: &mut RouteList) {
        let trie = self.subscriptions.read();
        let mut matches: SmallVec<[_; ROUTE_INLINE]> = SmallVec::new();
        // A shared group prefers members that can take a message now: connected, and not
        // stuck (a stuck member holds little and would refuse it, a drop another member
        // could have avoided).
        let filters = trie.matches_with(&msg.topic, &mut matches, &|h| {
            h.session.is_connected() && !h.session.is_stuck()
        });
        // Overlapping subscriptions of one session must yield one copy: bring them together.
        // They come from different filters; a fan-out on one filter has none to merge.
        if filters > 1 {
            matches.sort_unstable_by_key(|m| {
                (
                    m.shared_group.is_some(),
                    Arc::as_ptr(&m.sub.handle.session) as usize,
                )
            });
        }
        out.reserve(matches.len());
        for m in &matches {
            let sub = m.sub;
            let is_shared = m.shared_group.is_some();
            if !is_shared
                && sub.options.no_local
                && msg.publisher.as_deref() == Some(&*sub.client_id)
            {
                continue;
            }
            if sub.options.local_origin && matches!(msg.origin, Origin::Peer(_)) {
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
                    stored: None,
                },
            });
        }
    }

    /// READ for `session` under its listener's snapshot (`uniform` when every listener has
    /// the same one).
    pub(super) fn may_read(
        &self,
        auth: &AuthSet,
        uniform: Option<&Arc<AuthConfig>>,
        session: &Session,
        topic: &str,
    ) -> bool {
        let meta = session.meta();
        // A bridge's session has a snapshot of its own, whatever the listeners share.
        let listener = meta.listener_index();
        let auth = match uniform {
            Some(u) if listener != Some(BRIDGE_LISTENER) => u,
            _ => auth.for_listener(listener),
        };
        auth.check_acl(
            &session.client_id,
            meta.username.as_deref(),
            topic,
            Access::Read,
        )
    }

    /// Delivers, except that a QoS 1/2 delivery to a connected subscriber whose queue is full is
    /// handed back: the publisher's acknowledgement then waits for room (overload rule (c)). A
    /// subscriber that made no room in time is "stuck" and gets drops instead, so it cannot hold
    /// publishers back for long. A delivery that leaves the queue [`PACE_AT`] deep (but not
    /// [`PACE_UNTIL`]) names its subscriber in `pace` (the first such one).
    ///
    /// Returns the queue bytes it added, for the caller to add to the budget.
    pub(super) fn deliver_or_block(
        &self,
        r: Routed,
        blocked: &mut Vec<Routed>,
        ops: &mut Vec<Op>,
        pace: &mut Option<Arc<Session>>,
    ) -> usize {
        let session = &r.session;
        if r.delivery.qos != QoS::AtMostOnce && !session.is_stuck() && session.is_connected() {
            let copy = self.capture(session, &r.delivery);
            match session.try_deliver(r.delivery, r.epoch) {
                Ok(e) => {
                    self.record(session, e.seq, copy, ops);
                    if (PACE_AT..PACE_UNTIL).contains(&e.depth)
                        && pace.is_none()
                        && session.is_prompt()
                    {
                        *pace = Some(session.clone());
                    }
                    return e.cost;
                }
                Err((DropReason::QueueFull, delivery)) => blocked.push(Routed { delivery, ..r }),
                Err((why, delivery)) => self.refused(session, why, delivery, ops),
            }
            return 0;
        }
        let session = r.session.clone();
        match self.enqueue(r, ops) {
            Ok(cost) => cost,
            Err((why, delivery)) => {
                self.refused(&session, why, delivery, ops);
                0
            }
        }
    }

    /// A routed delivery `session` refused. A shared one refused because the member's session
    /// was discarded after routing picked it is still owed to the group: another member gets
    /// it (its budget accounted there); so does one a stuck member had no room for. Anything
    /// else is counted as dropped.
    fn refused(&self, session: &Arc<Session>, why: DropReason, d: Delivery, ops: &mut Vec<Op>) {
        if why == DropReason::Unsubscribed && d.shared.is_some() {
            // With no member left, nobody is owed it.
            let _ = self.hand_over(session, d, ops);
        } else if why == DropReason::QueueFull && d.shared.is_some() && session.is_stuck() {
            if self.hand_over(session, d, ops).is_some() {
                self.count_drop(session, why);
            }
        } else {
            self.count_drop(session, why);
        }
    }

    /// What a stored queue entry needs from a delivery, taken before it moves into the queue
    /// (persistent sessions, QoS 1/2 only).
    pub(super) fn capture(&self, session: &Session, d: &Delivery) -> Option<Delivery> {
        (self.persistence.is_some() && d.qos != QoS::AtMostOnce && session.is_persistent()).then(
            || Delivery {
                msg: d.msg.clone(),
                qos: d.qos,
                retain: d.retain,
                subscription_ids: d.subscription_ids.clone(),
                shared: None,
                stored: None,
            },
        )
    }

    /// The queue entry of a delivery that got a stored position.
    pub(super) fn record(
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
        let mut cost = 0;
        // A blocked PUBLISH is retried until its deliveries are queued; it is not paced as
        // well (its publisher has already waited).
        let mut pace = None;
        for r in items {
            cost += self.deliver_or_block(r, &mut still, ops, &mut pace);
        }
        self.budget.add(cost);
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
    pub(super) fn deliver(&self, r: Routed, ops: &mut Vec<Op>) -> Option<DropReason> {
        let session = r.session.clone();
        match self.enqueue(r, ops) {
            Ok(cost) => {
                self.budget.add(cost);
                None
            }
            Err((reason, _)) => {
                self.count_drop(&session, reason);
                Some(reason)
            }
        }
    }

    /// As [`Self::deliver`], leaving the budget and a refusal to the caller: Ok(the queue
    /// bytes added), or why it was refused and the delivery.
    fn enqueue(&self, r: Routed, ops: &mut Vec<Op>) -> Result<usize, (DropReason, Delivery)> {
        let session = &r.session;
        let copy = self.capture(session, &r.delivery);
        let e = session.try_deliver(r.delivery, r.epoch)?;
        self.record(session, e.seq, copy, ops);
        Ok(e.cost)
    }

    pub(super) fn count_drop(&self, session: &Session, reason: DropReason) {
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
            DropReason::NotAuthorized => self.metrics.dropped_not_authorized.inc(),
            // Routed by a subscription dropped since: never owed, not a loss.
            DropReason::Unsubscribed => {}
        }
    }

    /// Hands the messages a departing shared-subscription member had not completed to other
    /// members of the same group, connected ones first (MQTT 5.0 4.8.2, non-normative); they are removed from
    /// this session so they are never delivered twice. Messages with no other member stay.
    /// Returns how many it took from this session.
    pub fn redistribute_shared(&self, session: &Arc<Session>) -> usize {
        self.redistribute(session, true)
    }

    /// As [`Self::redistribute_shared`], for a member that may still be connected: only its
    /// unsent messages move (see `SessionState::take_shared`).
    pub(super) fn redistribute_unsent(&self, session: &Arc<Session>) -> usize {
        self.redistribute(session, false)
    }

    fn redistribute(&self, session: &Arc<Session>, sent_too: bool) -> usize {
        // None at shutdown: each member keeps its own for when it reconnects.
        let movable = self.groups_with_other_members(session, Vec::new());
        if movable.is_empty() {
            return 0;
        }
        let me = &session.client_id;
        let (moved, freed, sent_ids) = session.with_state(|s| {
            s.take_shared(sent_too, |d| {
                d.shared.as_ref().is_some_and(|g| movable.contains(g))
            })
        });
        self.budget.sub(freed);
        if moved.is_empty() {
            return 0;
        }
        let count = moved.len();
        tracing::info!(client_id = %me, count,
            "handing unacknowledged shared-subscription messages to other members");
        // This member's stored records of the moved messages go in the same batch as their new
        // queue entries, after them (so a shared body's refcount never drops to zero between):
        // a restart must find each message in exactly one member's store.
        let mut released = Vec::new();
        if session.is_persistent() {
            let client_id = session.client_id.to_string();
            for pid in sent_ids {
                released.push(Op::DeleteInflight {
                    client_id: client_id.clone(),
                    packet_id: pid,
                });
            }
            for seq in moved.iter().filter_map(Delivery::seq) {
                released.push(Op::Dequeue {
                    client_id: client_id.clone(),
                    seq,
                });
            }
        }
        let mut ops = Vec::new();
        for d in moved {
            // With no member left to take it, it stays with this session for its return.
            if let Some(d) = self.hand_over(session, d, &mut ops) {
                let epoch = session.with_state(|s| s.epoch());
                let back = Routed {
                    session: session.clone(),
                    epoch,
                    delivery: d,
                };
                self.deliver(back, &mut ops);
            }
        }
        ops.extend(released);
        self.submit(ops);
        count
    }

    /// The shared groups of which `session` holds messages and which have another member to
    /// take them (connected, or subscribed at QoS 1/2); none at shutdown, when every member
    /// leaves and each keeps its own (handing them around would only race the others doing the
    /// same).
    /// `groups` are more candidates (the shared filters of a session being discarded, whose
    /// messages may still be on their way to it).
    pub(super) fn groups_with_other_members(
        &self,
        session: &Session,
        mut groups: Vec<Arc<str>>,
    ) -> Vec<Arc<str>> {
        if self.stopping.load(Ordering::Acquire) {
            return Vec::new();
        }
        for g in session.with_state(|s| s.shared_groups()) {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        if groups.is_empty() {
            return groups;
        }
        let me = &session.client_id;
        let trie = self.subscriptions.read();
        groups
            .into_iter()
            // A member that could not keep a QoS 1/2 message does not count: offline and
            // subscribed at QoS 0, it would drop it (see `hand_over`).
            .filter(|g| {
                trie.pick_shared(g, |s| {
                    s.client_id != *me
                        && (s.handle.session.is_connected() || s.options.qos != QoS::AtMostOnce)
                })
                .is_some()
            })
            .collect()
    }

    /// Queues one message a departing shared member gave up with another member: a connected
    /// one if any, else an offline one that would keep it (an offline member subscribed at
    /// QoS 0 would drop a QoS 1 message handed down to QoS 0: an acknowledged message lost). A
    /// member discarded or gone offline meanwhile is passed over and the next is tried; with
    /// none left, the message is handed back.
    pub(super) fn hand_over(
        &self,
        from: &Arc<Session>,
        d: Delivery,
        ops: &mut Vec<Op>,
    ) -> Option<Delivery> {
        self.hand_over_unless_full(from, d, ops, false)
    }

    /// As [`Self::hand_over`]; with `give_back_when_full`, a member whose queue is full does
    /// not drop the message: the next member is tried, and with none taking it the message is
    /// handed back, for a caller that can wait for room.
    pub(super) fn hand_over_unless_full(
        &self,
        from: &Arc<Session>,
        d: Delivery,
        ops: &mut Vec<Op>,
        give_back_when_full: bool,
    ) -> Option<Delivery> {
        let Some(share) = d.shared.clone() else {
            return Some(d);
        };
        for _ in 0..3 {
            let target = {
                let trie = self.subscriptions.read();
                let other = |online: bool| {
                    trie.pick_shared(&share, |s| {
                        s.client_id != from.client_id
                            && if online {
                                s.handle.session.is_connected() && !s.handle.session.is_stuck()
                            } else {
                                s.options.qos != QoS::AtMostOnce || d.msg.qos == QoS::AtMostOnce
                            }
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
                stored: None,
                msg: d.msg.clone(),
            };
            let routed = Routed {
                session: handle.session,
                epoch: handle.epoch,
                delivery: redirected,
            };
            let target = routed.session.clone();
            match self.enqueue(routed, ops) {
                Ok(cost) => {
                    self.budget.add(cost);
                    return None;
                }
                // Discarded meanwhile, or gone offline with a QoS 0 subscription: not a loss
                // yet, the next member is tried (or the message goes back to its sender).
                Err((DropReason::Unsubscribed | DropReason::Offline, _)) => {}
                // Another member may have room; with none, the message is handed back.
                Err((DropReason::QueueFull, _)) if give_back_when_full => {}
                // Refused by the member's own limits (queue full, expired, not authorized):
                // dropped and counted, as it would have been had it gone there first.
                Err((reason, _)) => {
                    self.count_drop(&target, reason);
                    return None;
                }
            }
        }
        Some(d)
    }
}

//! Why a connection stops reading after a PUBLISH, and when it reads again: overload rule (c)
//! (a QoS 1/2 PUBLISH that found a subscriber queue full is acknowledged once it is in every
//! queue, or after [`STUCK_AFTER`] with the stuck subscribers' copies dropped) and flow control
//! (a PUBLISH that left a subscriber queue [`crate::broker::PACE_AT`] deep is acknowledged, and
//! its publisher is read again once that queue is down to [`crate::broker::PACE_RESUME`]). The
//! connection waits on the subscriber's `room_made` and a short poll, then calls
//! [`Handler::retry_blocked`].

use std::sync::Arc;
use std::time::Instant;

use super::{Handler, Outbox, STUCK_AFTER};
use crate::codec::{self, Packet, QoS};
use crate::session::Session;
use crate::storage::Op;

/// Why this connection is not read: deliveries of one PUBLISH that found full queues and its
/// withheld acknowledgement (overload rule (c)), or, with no items, a subscriber queue the last
/// PUBLISH left [`crate::broker::PACE_AT`] deep (flow control; the PUBLISH was acknowledged).
pub(super) struct Blocked {
    items: Vec<crate::broker::Routed>,
    ack: Option<Packet>,
    since: Instant,
    pace: Option<Arc<Session>>,
}

impl Handler {
    /// Routes an accepted PUBLISH to its subscribers. Returns the acknowledgement to send now,
    /// or None when it is withheld until full subscriber queues make room.
    pub(super) fn route(
        &mut self,
        topic: Arc<str>,
        p: codec::Publish,
        ack: Option<Packet>,
        out: &mut Outbox,
    ) -> Option<Packet> {
        let mut ops = Vec::new();
        if p.qos == QoS::ExactlyOnce && self.session.is_persistent() {
            // Lets a PUBLISH resent after a restart be recognised [MQTT-4.3.3-9].
            ops.push(Op::PutInboundQos2 {
                client_id: self.session.client_id.to_string(),
                packet_id: p.packet_id,
                msg: None,
            });
        }
        let msg = self.build_message(topic, p);
        let mut publication = self.broker.publish(msg);
        if publication.cluster_congested {
            self.pace_for_cluster();
        }
        self.drop_own_blocked(&mut publication.blocked);
        let ack = if publication.matched || !self.version.is_v5() {
            ack
        } else {
            ack.map(no_matching_subscribers)
        };
        ops.extend(publication.ops);
        // Acknowledged once stored where the store must hold it, and once the other nodes of
        // a cluster are sure to get it...
        self.store_wait(ops, out);
        if let Some(receipt) = publication.cluster_receipt.take() {
            out.wait_for(receipt);
        }
        if publication.blocked.is_empty() {
            if let Some(deep) = publication.pace.filter(|s| self.may_pace_on(s)) {
                self.broker.metrics().publishers_paced.inc();
                self.blocked = Some(Box::new(Blocked {
                    items: Vec::new(),
                    ack: None,
                    since: Instant::now(),
                    pace: Some(deep),
                }));
            }
            return ack;
        }
        // ...and once it sits in every matching queue (overload rule (c)): the ack and further
        // reads wait for room.
        self.broker.metrics().publishers_blocked.inc();
        self.blocked = Some(Box::new(Blocked {
            items: publication.blocked,
            ack,
            since: Instant::now(),
            pace: None,
        }));
        None
    }

    /// Overload rule (c) for a client's own full queue: while its in-flight window is full,
    /// that queue drains only as its acknowledgements are read, which waiting for room would
    /// stop. So its own copies are dropped at once, as for a stuck subscriber (Mosquitto drops
    /// at a full queue too), instead of after holding the client for `STUCK_AFTER`. With room
    /// in the window, sending drains the queue without reads, and the PUBLISH waits as usual.
    fn drop_own_blocked(&self, blocked: &mut Vec<crate::broker::Routed>) {
        let window = usize::from(self.send_window);
        if blocked.is_empty() || self.session.with_state(|s| s.inflight_len() < window) {
            return;
        }
        let (own, others) = std::mem::take(blocked)
            .into_iter()
            .partition(|r| Arc::ptr_eq(&r.session, &self.session));
        *blocked = others;
        if !own.is_empty() {
            self.broker.abandon_blocked(own);
        }
    }

    /// Whether this connection's reads may pause for `deep`'s queue to drain: not when it is
    /// this client's own queue, nor while this client has deliveries in flight, whose acks
    /// only a read brings in (two clients pacing on each other would otherwise both wait out
    /// the grace).
    fn may_pace_on(&self, deep: &Arc<Session>) -> bool {
        !Arc::ptr_eq(deep, &self.session) && self.session.with_state(|s| s.inflight_len() == 0)
    }

    /// A subscriber the current PUBLISH waits for, if any: reads pause until it makes room.
    pub fn blocked_on(&self) -> Option<Arc<Session>> {
        let b = self.blocked.as_ref()?;
        b.items
            .first()
            .map(|r| r.session.clone())
            .or_else(|| b.pace.clone())
    }

    /// Retries the blocked deliveries. Once all are queued, or the subscribers made no room
    /// within [`STUCK_AFTER`] (they are then marked stuck and the messages dropped for them),
    /// the acknowledgement goes out and reading resumes.
    pub fn retry_blocked(&mut self, out: &mut Outbox) {
        let Some(mut b) = self.blocked.take() else {
            return;
        };
        if let Some(deep) = &b.pace {
            if self.still_paced(deep, b.since) {
                self.blocked = Some(b);
            }
            return;
        }
        let mut ops = Vec::new();
        b.items = self.broker.retry_blocked(b.items, &mut ops);
        self.store_wait(ops, out);
        if !b.items.is_empty() {
            if b.since.elapsed() < STUCK_AFTER {
                self.blocked = Some(b);
                return;
            }
            self.broker.abandon_blocked(b.items);
        }
        if let Some(ack) = b.ack {
            self.send(&ack, out);
        }
    }

    /// Whether a publisher paced by `deep`'s queue since `since` keeps waiting: until the queue
    /// is down to [`crate::broker::PACE_RESUME`], the subscriber goes, or the grace runs out
    /// (the subscriber is then lagging and paces nobody until it drains).
    fn still_paced(&self, deep: &Session, since: Instant) -> bool {
        if !deep.is_prompt() || !deep.is_connected() {
            return false;
        }
        if deep.queue_depth() <= crate::broker::PACE_RESUME {
            return false;
        }
        if since.elapsed() >= STUCK_AFTER {
            tracing::debug!(client_id = %deep.client_id,
                "slow consumer: queue not draining; publishers no longer wait for it");
            deep.set_lagging();
            self.broker.metrics().pace_expired.inc();
            return false;
        }
        true
    }
}

/// `ack` saying 0x10 No matching subscribers, which MQTT 5 allows in PUBACK and PUBREC instead
/// of 0x00 (information, not failure: below 0x80), as Mosquitto sends it.
fn no_matching_subscribers(ack: Packet) -> Packet {
    match ack {
        Packet::PubAck(mut r) => {
            r.reason = codec::ReasonCode::NO_MATCHING_SUBSCRIBERS;
            Packet::PubAck(r)
        }
        Packet::PubRec(mut r) => {
            r.reason = codec::ReasonCode::NO_MATCHING_SUBSCRIBERS;
            Packet::PubRec(r)
        }
        other => other,
    }
}

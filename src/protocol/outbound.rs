//! Outbound deliveries: moving messages from the session queue into the write buffer under the
//! inflight window, encoding each for this client's protocol version, and resending on resume.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::{Handler, Outbox};
use crate::auth::Access;
use crate::codec::{self, Packet, PubResp, QoS};
use crate::session::{Delivery, DropReason, Resend, Stored};
use crate::storage::{InflightStage, Op, OwnedOrder};

/// Server-to-client topic aliases (v5): a topic sent once with an alias is sent afterwards with
/// the alias and an empty topic name. When all aliases are in use they are reassigned in turn.
/// The tables are allocated at the first alias assigned: most connections never use one, and
/// every connection holds a `TopicAliases`.
pub struct TopicAliases {
    max: u16,
    next: u16,
    tables: Option<Box<AliasTables>>,
}

/// Both directions of the alias map of one connection.
#[derive(Default)]
struct AliasTables {
    by_topic: HashMap<Arc<str>, u16>,
    by_alias: Vec<Option<Arc<str>>>,
}

impl TopicAliases {
    pub fn new(max: u16) -> TopicAliases {
        TopicAliases {
            max,
            next: 1,
            tables: None,
        }
    }

    /// The alias for `topic` and whether the client already knows it; None when aliases are off.
    fn lookup(&self, topic: &Arc<str>) -> Option<(u16, bool)> {
        if self.max == 0 {
            return None;
        }
        match self.tables.as_ref().and_then(|t| t.by_topic.get(topic)) {
            Some(a) => Some((*a, true)),
            None => Some((self.next, false)),
        }
    }

    /// Records that `alias` now stands for `topic` on this connection.
    fn assign(&mut self, alias: u16, topic: &Arc<str>) {
        let t = self.tables.get_or_insert_with(Box::default);
        let idx = usize::from(alias - 1);
        if t.by_alias.len() <= idx {
            t.by_alias.resize(idx + 1, None);
        }
        if let Some(old) = t.by_alias[idx].replace(topic.clone()) {
            t.by_topic.remove(&old);
        }
        t.by_topic.insert(topic.clone(), alias);
        self.next = if alias >= self.max { 1 } else { alias + 1 };
    }
}

/// Deliveries moved from the queue per pump, so one busy session cannot hog its task.
const PUMP_BATCH: usize = 256;

/// A PUBLISH's bytes besides its topic and payload without properties: fixed header (up to 5),
/// topic length (2), packet id (2), and a v5 property length (1).
const PUBLISH_OVERHEAD: usize = 10;

impl Handler {
    /// Moves what the window allows from the session queue into `out`, stopping once `out`
    /// reaches `high` bytes. Returns true when more could be sent right away.
    pub fn pump(&mut self, out: &mut Outbox, high: usize) -> bool {
        // Most calls find nothing to send (the turn after a write, an ack that freed the
        // window of an empty queue, every turn of a connection that only publishes): about
        // three of every four at a fixed QoS 1 rate. One look under the session lock answers
        // those, without the clock, the auth refresh and the batch machinery below. With an
        // unbounded window `has_ready` is false only when nothing at all is queued and no
        // retained stream waits, so nothing is skipped that a full pump would have done.
        let (ready, unsent) = self
            .session
            .with_state(|s| (s.has_ready(usize::MAX), s.unsent()));
        if !ready {
            return false;
        }
        let window = usize::from(self.send_window);
        if unsent > 0 {
            // Resends a resume held back go before anything new (see `SessionState::resume`).
            let resends = self.session.with_state(|s| s.take_unsent(window));
            self.send_again(resends, out);
        }
        let now = Instant::now();
        let mut scratch = std::mem::take(&mut self.scratch);
        let persistent = self.session.is_persistent();
        let mut sent = Sent::default();
        loop {
            self.read_retained(now);
            // READ is checked again as each message is sent, not only when it was routed: an
            // ACL reloaded since then applies to what is still queued (and to retained copies).
            self.refresh_auth();
            let mut expired = Vec::new();
            let (freed, more) = {
                // Borrowed, not cloned: these are shared with other connections' tasks, and a
                // clone per pump moves their reference counts' cache lines between cores.
                let (auth, client_id, username) =
                    (&self.auth, &self.session.client_id, &self.username);
                let metrics = self.broker.metrics();
                let may_read = |d: &Delivery| {
                    !auth.restricts()
                        || auth.check_acl(
                            client_id,
                            username.as_deref(),
                            &d.msg.topic,
                            Access::Read,
                        )
                };
                self.session.with_state(|s| {
                    let mut on_drop = |d: &Delivery, why| {
                        if why == DropReason::NotAuthorized {
                            metrics.dropped_not_authorized.inc();
                        } else {
                            metrics.dropped_expired.inc();
                        }
                        expired.extend(d.seq());
                    };
                    let freed = s.take_ready(
                        window,
                        PUMP_BATCH,
                        now,
                        &mut scratch,
                        &mut on_drop,
                        &may_read,
                    );
                    (freed, s.has_ready(window))
                })
            };
            self.broker.budget().sub(freed);
            if !scratch.is_empty() {
                self.session.made_room();
            }
            if persistent {
                self.store_nowait(expired.into_iter().map(|seq| self.dequeue(seq)).collect());
                self.record_inflight(&scratch, out);
            }
            // Room for the whole batch at once (v5 properties aside): an emptied write buffer is
            // released, and growing it again packet by packet copies it many times over.
            let batch: usize = scratch
                .iter()
                .map(|(_, d)| d.msg.topic.len() + d.msg.payload.len() + PUBLISH_OVERHEAD)
                .sum();
            out.buf().reserve(batch);
            for (pid, d) in scratch.drain(..) {
                self.encode_delivery(pid, &d, false, now, out, &mut sent);
            }
            // A receipt waiting for room in the store's queue: the rest waits for it.
            if !more || out.len() >= high || out.parked() {
                self.scratch = scratch;
                sent.count(self.broker.metrics());
                return more;
            }
        }
    }

    /// Stores the packet id of each QoS 1/2 delivery of a persistent session about to be sent.
    ///
    /// A QoS 2 packet id is durable before its PUBLISH is written: a resend after a crash has to
    /// use the same id [MQTT-4.4.0-1], or the client would take it for a second message. A QoS 1
    /// PUBLISH is written without waiting for its record: a crash before the record reaches the
    /// disk costs one redelivery under a new id, which at-least-once allows, and deliveries no
    /// longer queue behind the fsync of the publishers' batches.
    fn record_inflight(&self, batch: &[(u16, Delivery)], out: &mut Outbox) {
        let Some(p) = self.broker.persistence() else {
            return;
        };
        // Behind a receipt still waiting for room in the store's queue everything waits, so this
        // connection's writes reach the store in the order they were made.
        let parked = out.parked();
        let (mut free, mut waited) = (Vec::new(), Vec::new());
        for (pid, d) in batch.iter().filter(|(pid, _)| *pid != 0) {
            let client_id = &self.session.client_id;
            let op = match d.stored {
                Some(Stored::Queue(seq)) => Op::PutInflight {
                    client_id: client_id.to_string(),
                    packet_id: *pid,
                    seq,
                    stage: InflightStage::Publish,
                },
                // A retained message for a new subscription: the record holds it, so it is
                // sent again after a restart and its packet id is not reused meanwhile.
                Some(Stored::Inflight { before, nth }) => {
                    let order = OwnedOrder { before, nth };
                    p.owned_inflight_op(client_id, *pid, order, Some(d))
                }
                None => continue,
            };
            if parked || d.qos == QoS::ExactlyOnce {
                waited.push(op);
            } else {
                free.push(op);
            }
        }
        self.store_required(free);
        self.store_wait(waited, out);
    }

    /// Reads the next batch of a retained stream from the store when its buffer ran empty.
    /// Expired messages and those this client may not read are skipped (READ is checked again
    /// as each is sent).
    fn read_retained(&mut self, now: Instant) {
        let Some(req) = self.session.with_state(|s| s.retained_request()) else {
            return;
        };
        let batch = self.broker.retained_batch(&req);
        let auth = self.auth();
        let keep = |m: &crate::message::Message| {
            !m.is_expired(now)
                && (!auth.restricts()
                    || auth.check_acl(
                        &self.session.client_id,
                        self.username.as_deref(),
                        &m.topic,
                        Access::Read,
                    ))
        };
        let added = self
            .session
            .with_state(|s| s.fill_retained(&req, batch, &keep));
        self.broker.budget().add(added);
    }

    /// When the memory queue runs low while a backlog waits on disk: where to read from.
    pub fn refill_request(&self) -> Option<(Arc<str>, u64, usize)> {
        if !self.session.is_persistent() {
            return None;
        }
        let (window, stuck) = (usize::from(self.send_window), self.session.is_stuck());
        self.session
            .with_state(|s| s.refill_request(window, stuck))
            .map(|(from, max)| (self.session.client_id.clone(), from, max))
    }

    /// Takes entries read back from the store into the memory queue. Returns how many.
    pub fn apply_refill(&mut self, entries: Vec<Delivery>) -> usize {
        let n = entries.len();
        let cost = self.session.with_state(|s| s.refill(entries));
        self.broker.budget().add(cost);
        n
    }

    /// Resends the unacknowledged PUBLISH (DUP=1) and PUBREL of a resumed session, in order
    /// [MQTT-4.4.0-1], as many as the client's Receive Maximum allows; the pump sends the rest
    /// as acknowledgements make room.
    pub(super) fn resend(&mut self, out: &mut Outbox) {
        let window = usize::from(self.send_window);
        let resends = self.session.with_state(|s| s.resume(window));
        self.send_again(resends, out);
    }

    /// Sends inflight entries again: PUBLISH with DUP and their packet ids, or PUBREL.
    fn send_again(&mut self, resends: Vec<Resend>, out: &mut Outbox) {
        let now = Instant::now();
        for r in resends {
            match r {
                Resend::Publish(pid, d) => {
                    let mut sent = Sent::default();
                    self.encode_delivery(pid, &d, true, now, out, &mut sent);
                    sent.count(self.broker.metrics());
                }
                Resend::PubRel(pid) => self.send(&Packet::PubRel(PubResp::new(pid)), out),
            }
        }
    }

    fn encode_delivery(
        &mut self,
        pid: u16,
        d: &Delivery,
        dup: bool,
        now: Instant,
        out: &mut Outbox,
        sent: &mut Sent,
    ) {
        let msg = &d.msg;
        let alias = if self.version.is_v5() {
            self.aliases_out.lookup(&msg.topic)
        } else {
            None
        };
        let per_subscriber = self.version.is_v5()
            && (msg.expires_at.is_some() || !d.subscription_ids.is_empty() || alias.is_some());
        // Only v5 deliveries that carry an expiry, subscription ids or a topic alias need their
        // own copy of the properties; everything else encodes the shared message as is.
        let owned;
        let properties = if per_subscriber {
            // Unboxed: a copy for this one encode, never stored.
            let mut p = codec::Properties::clone(&msg.properties);
            p.message_expiry_interval = msg.remaining_expiry(now);
            p.subscription_identifiers.clone_from(&d.subscription_ids);
            p.topic_alias = alias.map(|(a, _)| a);
            owned = p;
            &owned
        } else {
            &*msg.properties
        };
        let topic: &str = match alias {
            Some((_, true)) => "",
            _ => &msg.topic,
        };
        let header = codec::PublishHeader {
            dup: dup && d.qos != QoS::AtMostOnce,
            qos: d.qos,
            retain: d.retain,
            packet_id: pid,
        };
        let buf = out.buf();
        let start = buf.len();
        codec::encode_publish_parts(header, topic, properties, &msg.payload, self.version, buf);
        let len = buf.len() - start;
        if len > self.client_max_packet as usize {
            // Too large for this client: discard as if sent [MQTT-3.1.2-25].
            buf.truncate(start);
            self.broker.metrics().dropped_too_large.inc();
            if pid != 0 {
                self.session.with_state(|s| s.abandon_inflight(pid));
            }
            return;
        }
        if let Some((a, false)) = alias {
            self.aliases_out.assign(a, &msg.topic);
        }
        sent.packets += 1;
        sent.payload_bytes += msg.payload.len() as u64;
    }
}

/// PUBLISH packets encoded by one pump, counted once at its end rather than per packet.
#[derive(Default)]
struct Sent {
    packets: u64,
    payload_bytes: u64,
}

impl Sent {
    fn count(&self, metrics: &crate::metrics::Metrics) {
        if self.packets > 0 {
            metrics.packets_sent.add(self.packets);
            metrics.publish_sent.add(self.packets);
            metrics.publish_bytes_sent.add(self.payload_bytes);
        }
    }
}

//! The acknowledgements of QoS 1 and 2 flows the client sends: PUBACK, PUBREC and PUBCOMP for
//! our deliveries, PUBREL for its own QoS 2 PUBLISH.

use super::{Handler, Outbox};
use crate::codec::{Packet, PubResp, ReasonCode};
use crate::session::Stored;
use crate::storage::{InflightStage, Op, OwnedOrder};

impl Handler {
    /// PUBACK: the QoS 1 delivery is done and leaves the store. Returns whether the window
    /// room it freed lets something queued go out now: asked under the same lock, so an ack
    /// on an empty queue (the common case at a steady rate) costs the connection no pump. A
    /// persistent session always pumps: a pump that finds the memory queue empty is what
    /// starts reading its disk backlog.
    pub(super) fn on_puback(&mut self, r: PubResp) -> bool {
        self.on_pubacks(&[r.packet_id])
    }

    /// PUBACKs read back to back, completed under one look at the session state: a reader
    /// acknowledges a whole write at once, and the publishers' routing takes the same lock.
    /// Returns as [`Self::on_puback`].
    pub fn on_pubacks(&mut self, packet_ids: &[u16]) -> bool {
        let window = usize::from(self.send_window);
        let mut stored = Vec::new();
        let ready = self.session.with_state(|s| {
            for &pid in packet_ids {
                if let Some(how) = s.on_puback(pid).and_then(|d| d.stored) {
                    stored.push((pid, how));
                }
            }
            s.has_ready(window)
        });
        if !stored.is_empty() {
            let mut ops = Vec::with_capacity(stored.len() * 2);
            for (pid, how) in stored {
                ops.push(self.delete_inflight(pid));
                if let Stored::Queue(seq) = how {
                    ops.push(self.dequeue(seq));
                }
            }
            self.store_nowait(ops);
        }
        ready || self.session.is_persistent()
    }

    /// PUBREC: answered with PUBREL, or (v5, with a failure reason) the end of the flow.
    /// Returns whether it carried a failure, which frees room in the inflight window.
    pub(super) fn on_pubrec(&mut self, r: PubResp, out: &mut Outbox) -> bool {
        let failed = r.reason.is_error();
        let stored = self.session.with_state(|s| s.inflight_stored(r.packet_id));
        if self
            .session
            .with_state(|s| s.on_pubrec(r.packet_id, failed))
        {
            // The PUBREL-sent stage is durable before PUBREL goes out.
            let client_id = &self.session.client_id;
            match (stored, self.broker.persistence()) {
                (Some(Stored::Queue(seq)), _) => {
                    let released = Op::PutInflight {
                        client_id: client_id.to_string(),
                        packet_id: r.packet_id,
                        seq,
                        stage: InflightStage::Released,
                    };
                    self.store_wait(vec![released, self.dequeue(seq)], out);
                }
                (Some(Stored::Inflight { before, nth }), Some(p)) => {
                    let order = OwnedOrder { before, nth };
                    let released = p.owned_inflight_op(client_id, r.packet_id, order, None);
                    self.store_wait(vec![released], out);
                }
                _ => {}
            }
            self.send(&Packet::PubRel(PubResp::new(r.packet_id)), out);
        } else if let (true, Some(how)) = (failed, stored) {
            let mut ops = vec![self.delete_inflight(r.packet_id)];
            if let Stored::Queue(seq) = how {
                ops.push(self.dequeue(seq));
            }
            self.store_nowait(ops);
        } else if !failed && self.version.is_v5() {
            let mut rel = PubResp::new(r.packet_id);
            rel.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
            let why = "PUBREC for a packet id with no QoS 2 message in flight".into();
            self.send_explained(Packet::PubRel(rel), why, out);
        }
        failed
    }

    /// PUBREL: the client's QoS 2 PUBLISH is released; answered with PUBCOMP.
    pub(super) fn on_pubrel(&mut self, r: PubResp, out: &mut Outbox) {
        let known = self.session.with_state(|s| s.inbound_pubrel(r.packet_id));
        if known && self.session.is_persistent() {
            // PUBCOMP frees the packet id for the client's next message; if the
            // record survived a crash, that message would be dropped as a duplicate.
            self.store_wait(
                vec![Op::DeleteInboundQos2 {
                    client_id: self.session.client_id.to_string(),
                    packet_id: r.packet_id,
                }],
                out,
            );
        }
        let mut comp = PubResp::new(r.packet_id);
        if !known && self.version.is_v5() {
            comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
            let why = "PUBREL for a packet id with no QoS 2 message received".into();
            self.send_explained(Packet::PubComp(comp), why, out);
        } else {
            self.send(&Packet::PubComp(comp), out);
        }
    }

    /// PUBCOMP: the QoS 2 delivery is done and leaves the store. Returns whether something
    /// queued can go out now (see [`Self::on_puback`]).
    pub(super) fn on_pubcomp(&mut self, r: PubResp) -> bool {
        let window = usize::from(self.send_window);
        let (done, ready) = self
            .session
            .with_state(|s| (s.on_pubcomp(r.packet_id), s.has_ready(window)));
        let persistent = self.session.is_persistent();
        if done && persistent {
            self.store_nowait(vec![self.delete_inflight(r.packet_id)]);
        }
        ready || persistent
    }
}

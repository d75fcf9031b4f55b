//! The client side of an MQTT session, kept across connections as a real client keeps it:
//! the QoS 1/2 messages it sent and the broker has not completed (resent on resume, in their
//! original order [MQTT-4.4.0-1]), the QoS 2 packet ids it received and has not seen PUBREL for
//! (a PUBLISH under such an id is the same message again and is not delivered twice
//! [MQTT-4.3.3-2]), and packet id allocation [MQTT-2.3.1-2].

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use starling::codec::{Packet, PubResp, Publish, QoS, ReasonCode, SubAck, UnsubAck};
use tokio::time::Instant;

use crate::conn::{self, Conn};

/// A QoS 1/2 message sent and not completed.
#[derive(Debug, Clone)]
pub struct Flight {
    pub pid: u16,
    /// The sender's index for the message (its position in the sender's log).
    pub msg: usize,
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// QoS 2: PUBREC received, PUBREL sent.
    pub released: bool,
    /// Sent again after a reconnect.
    pub resent: bool,
    /// When it was last (re)sent, for the "no acknowledgement" bound.
    pub sent_at: Instant,
}

/// What one received packet meant.
#[derive(Debug)]
pub enum Event {
    /// A PUBLISH handed to the application: every QoS 0/1 copy; a QoS 2 one only the first time
    /// its packet id is seen.
    Delivered(Publish),
    /// A QoS 2 PUBLISH under a packet id still awaiting PUBREL: not delivered again.
    Repeated(Publish),
    /// The broker completed one of our flows (PUBACK, or PUBCOMP).
    Completed(Flight),
    SubAck(SubAck),
    UnsubAck(UnsubAck),
    PingResp,
    /// A v5 DISCONNECT from the broker.
    Disconnect(ReasonCode),
    /// PUBREC or PUBREL handled internally, nothing to record.
    Nothing,
    /// Something a correct broker does not send.
    Wrong(String),
}

#[derive(Debug, Default)]
pub struct ClientSession {
    next_pid: u16,
    /// In send order.
    pub out: Vec<Flight>,
    /// Packet ids of SUBSCRIBE / UNSUBSCRIBE awaiting their ack.
    control: HashSet<u16>,
    qos2_in: HashSet<u16>,
}

impl ClientSession {
    /// Forgets everything: the broker has no session for us (Session Present 0).
    pub fn reset(&mut self) -> Vec<Flight> {
        self.control.clear();
        self.qos2_in.clear();
        std::mem::take(&mut self.out)
    }

    /// A packet id used by no open flow or pending SUBSCRIBE/UNSUBSCRIBE.
    pub fn allocate(&mut self) -> u16 {
        loop {
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            let pid = self.next_pid;
            if !self.control.contains(&pid) && !self.out.iter().any(|f| f.pid == pid) {
                return pid;
            }
        }
    }

    pub fn allocate_control(&mut self) -> u16 {
        let pid = self.allocate();
        self.control.insert(pid);
        pid
    }

    /// Queues a new QoS 1/2 PUBLISH and remembers it.
    pub fn send_publish(&mut self, c: &mut Conn, mut f: Flight) {
        c.queue(&conn::publish(
            &f.topic,
            f.payload.clone(),
            f.qos,
            f.retain,
            f.pid,
            false,
        ));
        f.sent_at = Instant::now();
        self.out.push(f);
    }

    /// Queues the resends of a resumed session: PUBLISH with DUP=1 or PUBREL, in the original
    /// order [MQTT-4.4.0-1]. Returns the messages whose PUBLISH was sent again.
    pub fn resend(&mut self, c: &mut Conn) -> Vec<usize> {
        let mut again = Vec::new();
        for f in &mut self.out {
            f.resent = true;
            if f.released {
                c.queue(&Packet::PubRel(PubResp::new(f.pid)));
            } else {
                c.queue(&conn::publish(
                    &f.topic,
                    f.payload.clone(),
                    f.qos,
                    f.retain,
                    f.pid,
                    true,
                ));
                again.push(f.msg);
            }
            f.sent_at = Instant::now();
        }
        again
    }

    /// The oldest flow unacknowledged for longer than `limit`, if any.
    pub fn overdue(&self, limit: Duration) -> Option<&Flight> {
        self.out.iter().find(|f| f.sent_at.elapsed() > limit)
    }

    /// Handles one packet from the broker, queueing any response on `c`.
    pub fn handle(&mut self, p: Packet, c: &mut Conn) -> Event {
        match p {
            Packet::Publish(p) => self.on_publish(p, c),
            Packet::PubAck(a) => self.complete(a.packet_id, a.reason, QoS::AtLeastOnce, false),
            Packet::PubRec(r) => self.on_pubrec(r, c),
            Packet::PubComp(r) => self.complete(r.packet_id, r.reason, QoS::ExactlyOnce, true),
            Packet::PubRel(r) => {
                // Answer PUBCOMP even for an unknown id: a PUBREL resent after a reconnect.
                self.qos2_in.remove(&r.packet_id);
                c.queue(&Packet::PubComp(PubResp::new(r.packet_id)));
                Event::Nothing
            }
            Packet::SubAck(a) if self.control.remove(&a.packet_id) => Event::SubAck(a),
            Packet::UnsubAck(a) if self.control.remove(&a.packet_id) => Event::UnsubAck(a),
            Packet::PingResp => Event::PingResp,
            Packet::Disconnect(d) => Event::Disconnect(d.reason),
            other => Event::Wrong(format!("unexpected {other:?}")),
        }
    }

    fn on_publish(&mut self, p: Publish, c: &mut Conn) -> Event {
        match p.qos {
            QoS::AtMostOnce => Event::Delivered(p),
            QoS::AtLeastOnce => {
                c.queue(&Packet::PubAck(PubResp::new(p.packet_id)));
                Event::Delivered(p)
            }
            QoS::ExactlyOnce => {
                c.queue(&Packet::PubRec(PubResp::new(p.packet_id)));
                if self.qos2_in.insert(p.packet_id) {
                    Event::Delivered(p)
                } else if !p.dup {
                    Event::Wrong(format!(
                        "[MQTT-2.3.1-4] a new QoS 2 PUBLISH (DUP=0) reuses packet id {} \
                         before its PUBREL",
                        p.packet_id
                    ))
                } else {
                    Event::Repeated(p)
                }
            }
        }
    }

    fn on_pubrec(&mut self, r: PubResp, c: &mut Conn) -> Event {
        let Some(f) = self.out.iter_mut().find(|f| f.pid == r.packet_id) else {
            return Event::Wrong(format!(
                "PUBREC for packet id {} not in flight",
                r.packet_id
            ));
        };
        if f.qos != QoS::ExactlyOnce {
            return Event::Wrong(format!("PUBREC for a QoS 1 flow: {r:?}"));
        }
        if r.reason.is_error() {
            return Event::Wrong(format!("PUBREC refused the message: {r:?}"));
        }
        f.released = true;
        c.queue(&Packet::PubRel(PubResp::new(r.packet_id)));
        Event::Nothing
    }

    fn complete(&mut self, pid: u16, reason: ReasonCode, qos: QoS, released: bool) -> Event {
        let Some(i) = self.out.iter().position(|f| f.pid == pid) else {
            return Event::Wrong(format!("ack for packet id {pid} not in flight"));
        };
        let f = &self.out[i];
        if f.qos != qos || f.released != released {
            return Event::Wrong(format!("ack for packet id {pid} at the wrong stage: {f:?}"));
        }
        // v5: 0x10 No matching subscribers is a success (v5 §3.4.2.1). A PUBREL resent after a
        // reconnect may find the id already released (its PUBCOMP was lost, e.g. in a broker
        // crash): PUBCOMP 0x92 Packet Identifier not found then completes the flow (§3.7.2.1).
        let forgotten = released && f.resent && reason == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
        if reason != ReasonCode::SUCCESS
            && reason != ReasonCode::NO_MATCHING_SUBSCRIBERS
            && !forgotten
        {
            return Event::Wrong(format!("packet id {pid} acknowledged with {reason:?}"));
        }
        Event::Completed(self.out.remove(i))
    }
}

//! One randomised client of the model soak. Each step is one operation chosen by the client's
//! own [`Rng`] (connect, subscribe, unsubscribe, publish at QoS 0/1/2 with or without RETAIN,
//! publish-then-drop, drop the socket, DISCONNECT, take the session over with a second
//! connection), followed by a few milliseconds of reading whatever the broker sends.
//!
//! The driver keeps the client side of the session ([`ClientSession`]) and predicts the
//! broker's: whether a session exists (checked against CONNACK Session Present), and which
//! subscriptions it holds. It records everything in a [`ClientLog`] for [`crate::ledger::check`].
//! Anything a correct broker does not do (an unexpected close, a wrong ack, a missing ack within
//! [`FLOW_WAIT`]) ends the driver with an error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use starling::codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Conn, Got, IO_WAIT};
use crate::ledger::{self, ClientLog, Clock, EpochLog, PubRecord, SubInterval};
use crate::rng::Rng;
use crate::session::{ClientSession, Event, Flight};

/// QoS 1/2 messages a client keeps unacknowledged at most.
const WINDOW: usize = 8;
/// Bound for the broker to complete a QoS 1/2 flow of a connected client.
const FLOW_WAIT: Duration = Duration::from_secs(10);
/// Non-shared filters over the `soak/<a>/<b>` topics (a, b in 0..3).
const FILTERS: &[&str] = &[
    "soak/#", "soak/+/+", "soak/0/+", "soak/1/+", "soak/+/0", "soak/+/2", "soak/2/1", "soak/0/0",
    "soak/1/#",
];
/// Shared filters over the `share/<a>` topics; two groups, group `ga` with two filters.
const SHARED_FILTERS: &[&str] = &[
    "$share/ga/share/+",
    "$share/gb/share/#",
    "$share/ga/share/1",
];

/// Who a client is.
#[derive(Debug, Clone)]
pub struct Spec {
    pub idx: usize,
    pub id: String,
    pub version: ProtocolVersion,
    /// Its sessions outlive connections (3.1.1 Clean Session 0 / v5 expiry "never").
    pub persistent: bool,
    /// A persistent client that sometimes connects with clean start (discarding its session).
    /// The others keep one session for the whole run, so every message acknowledged while
    /// they were subscribed is checked.
    pub clean_starts: bool,
}

/// What the drivers of one run share.
#[derive(Clone)]
pub struct Env {
    pub addr: SocketAddr,
    pub clock: Arc<Clock>,
    /// Ends the random phase.
    pub stop: CancellationToken,
    /// Cancelled by the first driver that fails, so the run ends early.
    pub failed: CancellationToken,
    /// Persistent clients reconnected in the drain phase with every flow completed.
    pub settled: Arc<AtomicUsize>,
    /// The broker holds nothing more for anyone: the drain phase ends.
    pub drained: CancellationToken,
}

pub struct Driver {
    spec: Spec,
    env: Env,
    rng: Rng,
    conn: Option<Conn>,
    session: ClientSession,
    /// Filter → index in the current epoch's `subs`, for the subscriptions the broker holds.
    subs: BTreeMap<String, usize>,
    pub log: ClientLog,
}

enum End {
    Drop,
    Disconnect,
}

impl Driver {
    pub fn new(spec: Spec, env: Env, rng: Rng) -> Driver {
        let log = ClientLog {
            id: spec.id.clone(),
            pubs: Vec::new(),
            epochs: Vec::new(),
            errors: Vec::new(),
            ops: Default::default(),
        };
        Driver {
            spec,
            env,
            rng,
            conn: None,
            session: ClientSession::default(),
            subs: BTreeMap::new(),
            log,
        }
    }

    fn count(&mut self, op: &'static str) {
        *self.log.ops.entry(op).or_default() += 1;
    }

    fn fail(&mut self, e: String) {
        self.log.errors.push(e);
        self.env.failed.cancel();
    }

    /// The random phase, then (unless something failed) the client completes its flows and
    /// disconnects.
    pub async fn run(mut self) -> Driver {
        while !self.env.stop.is_cancelled() && self.log.errors.is_empty() {
            if let Err(e) = self.step().await {
                self.fail(e);
            }
        }
        if self.log.errors.is_empty() && !self.env.failed.is_cancelled() {
            if let Err(e) = self.quiesce().await {
                self.fail(e);
            }
        }
        self
    }

    /// The drain phase: a persistent client reconnects without clean start, completes its
    /// flows, reads until the broker holds nothing more for anyone, then disconnects.
    pub async fn drain(mut self) -> ClientLog {
        if self.spec.persistent && self.log.errors.is_empty() {
            if let Err(e) = self.drain_steps().await {
                self.fail(e);
            }
        }
        self.log
    }

    async fn drain_steps(&mut self) -> Result<(), String> {
        self.connect(false).await?;
        self.settle().await?;
        self.env.settled.fetch_add(1, Ordering::SeqCst);
        while !self.env.drained.is_cancelled() {
            self.pump_for(Duration::from_millis(50)).await?;
        }
        // PINGRESP comes after everything the broker wrote before it.
        let c = self.conn.as_mut().expect("connected");
        c.send(&Packet::PingReq).await?;
        self.await_event("PINGRESP", |e| matches!(e, Event::PingResp))
            .await?;
        self.close(End::Disconnect).await
    }

    async fn step(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
            return self.offline_step().await;
        }
        match self.rng.below(100) {
            0..=39 => self.publish(false).await?,
            40..=41 => self.publish(true).await?,
            42..=53 => self.subscribe().await?,
            54..=59 => self.unsubscribe().await?,
            60..=62 => self.close(End::Drop).await?,
            63..=65 => self.close(End::Disconnect).await?,
            66..=67 => self.takeover().await?,
            _ => {}
        }
        let d = Duration::from_millis(self.rng.between(5, 40));
        self.pump_for(d).await
    }

    /// Offline for a while (a persistent session meanwhile queues QoS 1/2), then connects.
    async fn offline_step(&mut self) -> Result<(), String> {
        let max = if self.spec.persistent { 800 } else { 200 };
        let pause = Duration::from_millis(self.rng.between(10, max));
        tokio::select! {
            _ = self.env.stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
        let clean = self.choose_clean_start();
        self.connect(clean).await
    }

    fn choose_clean_start(&mut self) -> bool {
        !self.spec.persistent || (self.spec.clean_starts && self.rng.chance(5))
    }

    fn connect_packet(&self, clean_start: bool) -> starling::codec::Connect {
        conn::connect_packet(
            self.spec.version,
            &self.spec.id,
            clean_start,
            self.spec.persistent,
        )
    }

    async fn connect(&mut self, clean_start: bool) -> Result<(), String> {
        self.count("connect");
        let (mut c, ack) = Conn::open(self.env.addr, self.connect_packet(clean_start)).await?;
        self.on_connack(&mut c, ack.code, ack.session_present, clean_start)?;
        c.flush().await?;
        self.conn = Some(c);
        Ok(())
    }

    /// Checks Session Present against the model; starts a new epoch, or resends what the
    /// resumed session has in flight.
    fn on_connack(
        &mut self,
        c: &mut Conn,
        code: ReasonCode,
        present: bool,
        clean_start: bool,
    ) -> Result<(), String> {
        let id = &self.spec.id;
        if code != ReasonCode::SUCCESS {
            return Err(format!("{id}: CONNACK refused with {code:?}"));
        }
        let last = self.log.epochs.last();
        let expected = !clean_start && last.is_some_and(|e| e.persistent && !e.ended);
        if present != expected {
            return Err(format!(
                "{id}: CONNACK Session Present = {present}, expected {expected} (clean start \
                 {clean_start}, previous session {last:?}) [MQTT-3.2.2-2] [MQTT-3.2.2-3] \
                 [MQTT-3.1.2-4]",
                last = last.map(|e| (e.persistent, e.ended))
            ));
        }
        if present {
            // [MQTT-4.4.0-1]: resend unacknowledged PUBLISH (DUP=1) and PUBREL.
            for msg in self.session.resend(c) {
                self.log.pubs[msg].sends += 1;
            }
            return Ok(());
        }
        if let Some(e) = self.log.epochs.last_mut() {
            e.ended = true;
        }
        // 3.1.1: Clean Session 1 makes the session end with the connection; v5 expiry says.
        let persistent = self.spec.persistent && (self.spec.version.is_v5() || !clean_start);
        self.log.epochs.push(EpochLog::new(persistent));
        self.subs.clear();
        // Flows of the discarded session stay unacknowledged in the log.
        self.session.reset();
        Ok(())
    }

    /// Our connection ended: a non-persistent session ends with it.
    fn connection_ended(&mut self) {
        if let Some(e) = self.log.epochs.last_mut().filter(|e| !e.persistent) {
            e.ended = true;
            self.subs.clear();
        }
    }

    async fn close(&mut self, how: End) -> Result<(), String> {
        let c = self.conn.take().expect("connected");
        match how {
            End::Drop => {
                self.count("drop socket");
                drop(c);
            }
            End::Disconnect => {
                self.count("disconnect");
                c.disconnect().await?;
            }
        }
        self.connection_ended();
        Ok(())
    }

    /// A second connection with the same client id; the broker must close the first
    /// [MQTT-3.1.4-3] (v5: with DISCONNECT 0x8E Session taken over, when it sends one).
    async fn takeover(&mut self) -> Result<(), String> {
        self.count("takeover");
        let clean = self.choose_clean_start();
        let old = self.conn.take().expect("connected");
        let (mut c, ack) = Conn::open(self.env.addr, self.connect_packet(clean)).await?;
        let reason = old
            .await_close()
            .await
            .map_err(|e| format!("{e} after a takeover [MQTT-3.1.4-3]"))?;
        if let Some(r) = reason.filter(|r| *r != ReasonCode::SESSION_TAKEN_OVER) {
            return Err(format!(
                "{}: the taken-over connection got DISCONNECT {r:?}, not 0x8E",
                self.spec.id
            ));
        }
        self.connection_ended();
        self.on_connack(&mut c, ack.code, ack.session_present, clean)?;
        c.flush().await?;
        self.conn = Some(c);
        Ok(())
    }

    async fn subscribe(&mut self) -> Result<(), String> {
        self.count("subscribe");
        let filter = if self.rng.chance(25) {
            *self.rng.pick(SHARED_FILTERS)
        } else {
            *self.rng.pick(FILTERS)
        };
        let qos = conn::qos(self.rng.below(3) as u8);
        let pid = self.session.allocate_control();
        let tick = self.env.clock.tick();
        // A SUBSCRIBE for a held filter replaces it [MQTT-3.8.4-3]: the old window ends here.
        if let Some(&i) = self.subs.get(filter) {
            self.epoch().subs[i].end = Some(tick);
        }
        let c = self.conn.as_mut().expect("connected");
        c.send(&conn::subscribe(pid, filter, qos)).await?;
        let ev = self
            .await_event(
                "SUBACK",
                |e| matches!(e, Event::SubAck(a) if a.packet_id == pid),
            )
            .await?;
        let Event::SubAck(ack) = ev else {
            unreachable!()
        };
        let start = self.env.clock.tick();
        if ack.reasons != [ReasonCode(qos as u8)] {
            return Err(format!(
                "{}: SUBACK {:?} for {filter} at {qos:?}, expected the QoS granted",
                self.spec.id, ack.reasons
            ));
        }
        let epoch = self.epoch();
        epoch.subs.push(SubInterval {
            filter: filter.to_owned(),
            granted: qos,
            start,
            end: None,
        });
        let i = epoch.subs.len() - 1;
        self.subs.insert(filter.to_owned(), i);
        Ok(())
    }

    async fn unsubscribe(&mut self) -> Result<(), String> {
        self.count("unsubscribe");
        let held: Vec<String> = self.subs.keys().cloned().collect();
        let filter = if !held.is_empty() && self.rng.chance(85) {
            self.rng.pick(&held).clone()
        } else {
            let all: Vec<&str> = FILTERS.iter().chain(SHARED_FILTERS).copied().collect();
            (*self.rng.pick(&all)).to_owned()
        };
        let pid = self.session.allocate_control();
        let tick = self.env.clock.tick();
        let existed = match self.subs.remove(&filter) {
            Some(i) => {
                self.epoch().subs[i].end = Some(tick);
                true
            }
            None => false,
        };
        let c = self.conn.as_mut().expect("connected");
        c.send(&conn::unsubscribe(pid, &filter)).await?;
        let ev = self
            .await_event(
                "UNSUBACK",
                |e| matches!(e, Event::UnsubAck(a) if a.packet_id == pid),
            )
            .await?;
        let Event::UnsubAck(ack) = ev else {
            unreachable!()
        };
        let want = if existed {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::NO_SUBSCRIPTION_EXISTED
        };
        if self.spec.version.is_v5() && ack.reasons != [want] {
            return Err(format!(
                "{}: UNSUBACK {:?} for {filter}, expected {want:?} (subscribed: {existed})",
                self.spec.id, ack.reasons
            ));
        }
        Ok(())
    }

    async fn publish(&mut self, then_drop: bool) -> Result<(), String> {
        if self.session.out.len() >= WINDOW {
            return Ok(());
        }
        self.count(if then_drop { "publish+drop" } else { "publish" });
        let topic = if self.rng.chance(80) {
            format!("soak/{}/{}", self.rng.below(3), self.rng.below(3))
        } else {
            format!("share/{}", self.rng.below(3))
        };
        let qos = conn::qos(if then_drop {
            1 + self.rng.below(2) as u8
        } else {
            self.rng.below(3) as u8
        });
        let retain = self.rng.chance(10);
        let msg = self.log.pubs.len();
        let payload = ledger::payload(self.spec.idx, msg);
        let c = self.conn.as_mut().expect("connected");
        let first_send = self.env.clock.tick();
        self.log.pubs.push(PubRecord {
            topic: topic.clone(),
            qos,
            retain,
            first_send,
            sends: 1,
            acked: None,
        });
        if qos == QoS::AtMostOnce {
            c.queue(&conn::publish(&topic, payload, qos, retain, 0, false));
        } else {
            let pid = self.session.allocate();
            let f = Flight {
                pid,
                msg,
                topic,
                payload,
                qos,
                retain,
                released: false,
                resent: false,
                sent_at: Instant::now(),
            };
            self.session.send_publish(c, f);
        }
        c.flush().await?;
        if then_drop {
            self.conn = None;
            self.connection_ended();
        }
        Ok(())
    }

    fn epoch(&mut self) -> &mut EpochLog {
        self.log.epochs.last_mut().expect("connected once")
    }

    /// Reads and handles packets for `d` (or just waits, when offline).
    async fn pump_for(&mut self, d: Duration) -> Result<(), String> {
        let deadline = Instant::now() + d;
        let Some(c) = self.conn.as_mut() else {
            tokio::time::sleep_until(deadline).await;
            return Ok(());
        };
        loop {
            match c.recv_until(deadline).await {
                Got::Timeout => break,
                Got::Closed(why) => {
                    return Err(format!(
                        "{}: the broker closed the connection unexpectedly: {why}",
                        self.spec.id
                    ))
                }
                Got::Packet(p) => {
                    let ev = self.session.handle(p, c);
                    record(&mut self.log, &self.env.clock, ev)?;
                }
            }
            c.flush().await?;
        }
        c.flush().await?;
        match self.session.overdue(FLOW_WAIT) {
            Some(f) => Err(format!(
                "{}: no acknowledgement within {FLOW_WAIT:?} for {f:?}",
                self.spec.id
            )),
            None => Ok(()),
        }
    }

    /// Reads until an event `want` accepts (returned), handling everything else.
    async fn await_event(
        &mut self,
        what: &str,
        want: impl Fn(&Event) -> bool,
    ) -> Result<Event, String> {
        let c = self.conn.as_mut().expect("connected");
        let deadline = Instant::now() + IO_WAIT;
        loop {
            let ev = match c.recv_until(deadline).await {
                Got::Packet(p) => self.session.handle(p, c),
                Got::Timeout => {
                    return Err(format!("{}: no {what} within {IO_WAIT:?}", self.spec.id))
                }
                Got::Closed(why) => {
                    return Err(format!(
                        "{}: closed while waiting for {what}: {why}",
                        self.spec.id
                    ))
                }
            };
            c.flush().await?;
            if want(&ev) {
                return Ok(ev);
            }
            record(&mut self.log, &self.env.clock, ev)?;
        }
    }

    /// Reads until every flow is complete.
    async fn settle(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + FLOW_WAIT;
        while !self.session.out.is_empty() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}: flows still open after {FLOW_WAIT:?}: {:?}",
                    self.spec.id, self.session.out
                ));
            }
            self.pump_for(Duration::from_millis(20)).await?;
        }
        Ok(())
    }

    /// End of the random phase: complete the flows and disconnect.
    async fn quiesce(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
            return Ok(());
        }
        self.settle().await?;
        self.close(End::Disconnect).await
    }
}

/// Records what a packet meant; Err for anything a correct broker does not send.
fn record(log: &mut ClientLog, clock: &Clock, ev: Event) -> Result<(), String> {
    let id = &log.id;
    let (p, delivered) = match ev {
        Event::Delivered(p) => (p, true),
        Event::Repeated(p) => (p, false),
        Event::Completed(f) => {
            log.pubs[f.msg].acked = Some(clock.tick());
            return Ok(());
        }
        Event::Nothing | Event::PingResp => return Ok(()),
        Event::Disconnect(r) => return Err(format!("{id}: the broker sent DISCONNECT {r:?}")),
        Event::SubAck(a) => return Err(format!("{id}: unexpected {a:?}")),
        Event::UnsubAck(a) => return Err(format!("{id}: unexpected {a:?}")),
        Event::Wrong(why) => return Err(format!("{id}: {why}")),
    };
    let Some(key) = ledger::parse_payload(&p.payload) else {
        return Err(format!("{id}: a PUBLISH with a foreign payload: {p:?}"));
    };
    let epoch = log.epochs.last_mut().expect("connected once");
    let copies = epoch.copies.entry(key).or_default();
    if p.retain {
        copies.retained += 1;
    } else if p.dup {
        copies.resent += 1;
    } else {
        copies.fresh += 1;
    }
    if delivered && !p.retain && p.qos == QoS::ExactlyOnce {
        copies.qos2_delivered += 1;
    }
    Ok(())
}

//! The MQTT protocol as one connection speaks it: CONNECT validation and session claiming
//! ([`connect`]), inbound packets, outbound deliveries, and the end of the connection (will,
//! session end). Synchronous: the connection task does the I/O and calls in here with its write
//! buffer, so an acknowledgement is just bytes appended after the routing work that earns it.

mod acks;
mod blocked;
mod bridge;
mod close;
mod connect;
mod control;
mod outbound;
pub mod outbox;
/// The client's address lives at the top level ([`crate::peer`]) so that sessions, which
/// keep the last one for the session list, need not depend on the protocol.
pub use crate::peer;
mod reauth;
mod subscribe;
mod will;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::enhanced::Authenticator;
use crate::auth::{Access, AuthConfig};
use crate::broker::BrokerState;
use crate::codec::{self, Packet, Properties, ProtocolVersion, PubResp, QoS, ReasonCode};
use crate::message::Message;
use crate::ratelimit::{ListenerRates, TokenBucket};
use crate::session::Session;
use crate::storage::Op;

use blocked::Blocked;
pub use close::Close;
pub use connect::{ConnectOutcome, ConnectionInfo};
pub use outbox::Outbox;
use reauth::Enhanced;
pub use will::{publish_will, schedule_will};

/// A completed enhanced-authentication exchange: the method's authenticator (kept for
/// re-authentication) and the data CONNACK carries.
pub struct AuthOutcome {
    pub authenticator: Arc<dyn Authenticator>,
    pub data: Option<bytes::Bytes>,
}

pub use crate::broker::STUCK_AFTER;

/// How long a publisher is not read after a PUBLISH that found the queue to the other cluster
/// nodes congested: one such pause per PUBLISH holds a publisher to about a thousand a second
/// until the queue drains.
const CLUSTER_PACE: Duration = Duration::from_millis(1);

/// Per-connection protocol state once CONNECT has been accepted.
pub struct Handler {
    broker: Arc<BrokerState>,
    /// The client id is the session's (`session.client_id`): not kept twice.
    session: Arc<Session>,
    generation: u64,
    peer: peer::PeerAddr,
    version: ProtocolVersion,
    /// A Mosquitto bridge (`try_private`): its subscriptions are No Local and Retain As
    /// Published (see [`bridge`]).
    bridge: bool,
    keep_alive: u16,
    /// The client's Receive Maximum (v5) or `max_inflight` (3.x): both are u16 quantities.
    send_window: u16,
    /// The client's Maximum Packet Size (v5); u32::MAX otherwise.
    client_max_packet: u32,
    /// v5 Request Problem Information: Reason Strings on failure acks are allowed
    /// [MQTT-3.1.2-29].
    problem_info: bool,
    /// The Topic Alias Maximum CONNACK announced (0 for 3.x).
    alias_in_max: u16,
    /// v5 server-to-client topic aliases, within the client's Topic Alias Maximum.
    aliases_out: outbound::TopicAliases,
    /// Server Receive Maximum (v5): unacknowledged inbound QoS 2 the client may have.
    receive_maximum: u16,
    /// Session Expiry Interval from CONNECT was 0 (changing it on DISCONNECT is an error).
    expiry_was_zero: bool,
    /// This connection has published; only publishers are paused by the global budget.
    published: bool,
    /// The will, enhanced authentication and inbound topic aliases, allocated by the first
    /// that needs one: most connections use none, and every connection holds a Handler.
    rare: Option<Box<Rare>>,
    username: Option<Arc<str>>,
    /// The listener that accepted this connection (index into `Config::listeners`).
    listener: usize,
    /// Its listener's auth snapshot, which this connection checks against, refreshed when the
    /// broker's generation moves on (reload).
    auth: Arc<AuthConfig>,
    auth_generation: u64,
    /// The publish rate limits that apply to this client and the throttle they impose; `None`
    /// when none is configured (the default), which costs a PUBLISH one test and no pointer
    /// chase. Boxed: every connection holds a Handler.
    rates: Option<Box<Rates>>,
    /// A PUBLISH whose deliveries wait for room in full subscriber queues.
    blocked: Option<Box<Blocked>>,
    scratch: Vec<(u16, crate::session::Delivery)>,
}

/// What few connections use, off the per-message path (see [`Handler`]'s `rare`).
#[derive(Default)]
struct Rare {
    /// Published (or scheduled) when the connection ends without DISCONNECT.
    will: Option<codec::Will>,
    /// The enhanced authentication of CONNECT, for re-authentication.
    enhanced: Option<Enhanced>,
    /// v5 client-to-server topic aliases, indexed by alias - 1. Grown as aliases are used, up
    /// to `alias_in_max`.
    aliases_in: Vec<Option<Arc<str>>>,
}

/// The publish rate limits of one connection (see [`Handler`]'s `rates`), and the pause that
/// paces it while the cluster's queue is congested.
#[derive(Default)]
struct Rates {
    /// `limits.max_publish_rate` for this client.
    msg: Option<TokenBucket>,
    /// `limits.max_publish_bandwidth` for this client.
    bytes: Option<TokenBucket>,
    /// The listener's `max_publish_rate` / `max_publish_bandwidth`, shared with every
    /// connection of that listener.
    listener: Option<Arc<ListenerRates>>,
    /// A 3.x client over its rate, or any client publishing while the cluster's queue is
    /// congested, is not read until then (TCP backpressure).
    throttled_until: Option<Instant>,
}

impl Handler {
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// A request from the broker for this connection (takeover, shutdown, an administrator's
    /// kick); see [`Session::poll_control`].
    pub fn poll_control(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<crate::session::Control> {
        self.session.poll_control(self.generation, cx)
    }

    /// Records a read from the client, for the keep-alive sweep.
    pub fn touch(&self) {
        self.session.heard();
    }

    /// Whether the client has been silent for 1.5 × keep-alive [MQTT-3.1.2-24]: the check the
    /// sweep made, made again by the connection before it closes (a packet may have come in).
    pub fn keep_alive_expired(&self) -> bool {
        let Some(timeout) = self.keep_alive_timeout() else {
            return false;
        };
        let now_ms = self.broker.keep_alive().now_ms();
        crate::broker::keepalive::KeepAlive::is_silent(&self.session, now_ms, timeout)
    }

    /// 1.5 × keep-alive [MQTT-3.1.2-24]; None when keep-alive is 0.
    pub fn keep_alive_timeout(&self) -> Option<Duration> {
        (self.keep_alive > 0).then(|| {
            Duration::from_secs(u64::from(self.keep_alive))
                .mul_f64(self.broker.config().mqtt.keepalive_factor)
        })
    }

    /// Reads pause under global overload only for connections that publish and are not
    /// themselves waiting to acknowledge deliveries (which would deadlock their own queue).
    pub fn should_pause_reads(&self) -> bool {
        self.published && self.session.with_state(|s| s.inflight_len() == 0)
    }

    /// Handles one inbound packet, appending any response to `out`. Returns true when the
    /// session queue may have become sendable (an ack freed window room).
    pub fn handle(&mut self, packet: Packet, out: &mut Outbox) -> Result<bool, Close> {
        match packet {
            Packet::Publish(p) => self.on_publish(p, out).map(|_| false),
            Packet::PubAck(r) => Ok(self.on_puback(r)),
            Packet::PubRec(r) => Ok(self.on_pubrec(r, out)),
            Packet::PubRel(r) => {
                self.on_pubrel(r, out);
                Ok(false)
            }
            Packet::PubComp(r) => Ok(self.on_pubcomp(r)),
            Packet::Subscribe(s) => self.on_subscribe(s, out).map(|_| true),
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u, out);
                Ok(false)
            }
            Packet::PingReq => {
                self.send(&Packet::PingResp, out);
                Ok(false)
            }
            Packet::Disconnect(d) => Err(self.on_disconnect(d)),
            Packet::Connect(_) => Err(Close::Protocol(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT-3.1.0-2] second CONNECT",
            )),
            Packet::Auth(a) => self.on_auth(a, out).map(|_| false),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(Close::Protocol(
                    ReasonCode::PROTOCOL_ERROR,
                    "a server-to-client packet sent by the client",
                ))
            }
        }
    }

    /// Sends nothing more until `ops` are durable (no-op without a store or ops). Behind a
    /// receipt still waiting for room in the store's queue, `ops` wait their turn.
    fn store_wait(&self, ops: Vec<Op>, out: &mut Outbox) {
        if let (Some(p), false) = (self.broker.persistence(), ops.is_empty()) {
            let receipt = if out.parked() {
                p.receipt_after(ops)
            } else {
                p.receipt(ops)
            };
            out.wait_for(receipt);
        }
    }

    /// Deletes after an acknowledgement: dropped when the store's queue is full.
    fn store_nowait(&self, ops: Vec<Op>) {
        if let Some(p) = self.broker.persistence() {
            p.submit_delete(ops);
        }
    }

    /// Writes nothing waits for that must not be lost.
    fn store_required(&self, ops: Vec<Op>) {
        if let Some(p) = self.broker.persistence() {
            p.submit(ops);
        }
    }

    fn delete_inflight(&self, packet_id: u16) -> Op {
        Op::DeleteInflight {
            client_id: self.session.client_id.to_string(),
            packet_id,
        }
    }

    fn dequeue(&self, seq: u64) -> Op {
        Op::Dequeue {
            client_id: self.session.client_id.to_string(),
            seq,
        }
    }

    fn send(&self, packet: &Packet, out: &mut Outbox) {
        codec::encode(packet, self.version, out.buf());
        self.broker.metrics().packets_sent.inc();
    }

    /// Sends an ack with a Reason String saying why it failed, so an operator reading a client
    /// log needn't guess. Left out unless the client allows it [MQTT-3.1.2-29] and it fits in
    /// the client's Maximum Packet Size ([MQTT-3.4.2-2], [MQTT-3.5.2-2], [MQTT-3.6.2-2],
    /// [MQTT-3.7.2-2], [MQTT-3.9.2-1], [MQTT-3.11.2-1]).
    fn send_explained(&self, mut packet: Packet, why: String, out: &mut Outbox) {
        if self.version.is_v5() && self.problem_info {
            if let Some(props) = ack_properties(&mut packet) {
                props.reason_string = Some(why);
            }
            // Without the Reason String an ack is at most 5 bytes, within any Maximum Packet
            // Size that let CONNACK through.
            codec::fit_within(&mut packet, self.version, self.client_max_packet as usize);
        }
        self.send(&packet, out);
    }

    /// Until when reading is paused because a 3.x client exceeded its rate, or the cluster's
    /// queue is congested.
    pub fn throttled_until(&self) -> Option<Instant> {
        self.rates.as_ref().and_then(|r| r.throttled_until)
    }

    pub fn clear_throttle(&mut self) {
        if let Some(r) = self.rates.as_mut() {
            r.throttled_until = None;
        }
    }

    /// Pauses reading for [`CLUSTER_PACE`]: the last PUBLISH found the queue to the other
    /// cluster nodes congested (see `Cluster::congested`), so publishers here slow down
    /// before that queue has to drop what they published.
    fn pace_for_cluster(&mut self) {
        self.broker.metrics().publishers_paced.inc();
        let rates = self.rates.get_or_insert_with(Box::default);
        rates.throttled_until = Some(Instant::now() + CLUSTER_PACE);
    }

    /// The rare state, allocated on first use.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Applies the client's and then its listener's publish rate limits (the client's first,
    /// so a client refused by its own limit does not spend the budget it shares with others).
    /// Ok(false): drop this PUBLISH (answered 0x97).
    fn within_rate(&mut self, p: &codec::Publish, out: &mut Outbox) -> Result<bool, Close> {
        // No limit configured (the default): no clock read per PUBLISH.
        let Some(rates) = self.rates.as_deref_mut() else {
            return Ok(true);
        };
        let listener = rates.listener.as_deref();
        let listener_msgs = listener.and_then(|l| l.messages.as_ref());
        let listener_bytes = listener.and_then(|l| l.bytes.as_ref());
        if rates.msg.is_none()
            && rates.bytes.is_none()
            && listener_msgs.is_none()
            && listener_bytes.is_none()
        {
            return Ok(true);
        }
        let now = Instant::now();
        let len = p.payload.len() as u64;
        if !self.version.is_v5() {
            // 3.x has no way to say "slow down": stop reading until back within the rate.
            let mut wait = Duration::ZERO;
            if let Some(b) = rates.msg.as_mut() {
                wait = wait.max(b.take_debt(1, now));
            }
            if let Some(b) = rates.bytes.as_mut() {
                wait = wait.max(b.take_debt(len, now));
            }
            if let Some(b) = listener_msgs {
                wait = wait.max(b.take_debt(1, now));
            }
            if let Some(b) = listener_bytes {
                wait = wait.max(b.take_debt(len, now));
            }
            if !wait.is_zero() {
                rates.throttled_until = Some(now + wait);
            }
            return Ok(true);
        }
        if let Some(b) = rates.msg.as_mut() {
            if b.try_take(1, now).is_err() {
                return Err(Close::Server(
                    ReasonCode::MESSAGE_RATE_TOO_HIGH,
                    "limits.max_publish_rate exceeded",
                ));
            }
        }
        if let Some(b) = rates.bytes.as_mut() {
            if b.try_take(len, now).is_err() {
                self.refuse_over_quota(p, "limits.max_publish_bandwidth", out);
                return Ok(false);
            }
        }
        if listener_msgs.is_some_and(|b| b.try_take(1, now).is_err()) {
            return Err(Close::Server(
                ReasonCode::MESSAGE_RATE_TOO_HIGH,
                "listeners[].max_publish_rate exceeded",
            ));
        }
        if listener_bytes.is_some_and(|b| b.try_take(len, now).is_err()) {
            self.refuse_over_quota(p, "listeners[].max_publish_bandwidth", out);
            return Ok(false);
        }
        Ok(true)
    }

    /// Answers a v5 PUBLISH over a bandwidth limit with 0x97 Quota exceeded (QoS 0: dropped).
    fn refuse_over_quota(&self, p: &codec::Publish, limit: &'static str, out: &mut Outbox) {
        tracing::debug!(client_id = %self.session.client_id, peer = %self.peer, limit,
            "PUBLISH refused: bandwidth limit exceeded");
        self.broker.metrics().dropped_quota.inc();
        let mut resp = PubResp::new(p.packet_id);
        resp.reason = ReasonCode::QUOTA_EXCEEDED;
        let why = format!("{limit} exceeded");
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send_explained(Packet::PubAck(resp), why, out),
            QoS::ExactlyOnce => self.send_explained(Packet::PubRec(resp), why, out),
        }
    }

    /// The current auth snapshot of this connection's listener (refreshed after a reload).
    fn auth(&mut self) -> Arc<AuthConfig> {
        self.refresh_auth();
        self.auth.clone()
    }

    /// Refreshes `self.auth` after a reload. The hot paths read the field afterwards instead of
    /// cloning it: the snapshot is shared by every connection of the listener, and a clone per
    /// packet moves its reference count's cache line between cores.
    fn refresh_auth(&mut self) {
        let generation = self.broker.auth_generation();
        if generation != self.auth_generation {
            let (auth, generation) = self.broker.auth(Some(self.listener));
            self.auth = auth;
            self.auth_generation = generation;
        }
    }

    fn may_write(&mut self, topic: &str) -> bool {
        self.refresh_auth();
        !self.auth.restricts()
            || self.auth.check_acl(
                &self.session.client_id,
                self.username.as_deref(),
                topic,
                Access::Write,
            )
    }

    /// Why this client may not publish to `topic`, with the MQTT 5 code saying so: `$SYS` (but
    /// its own connection state topic, see [`bridge::is_own_state`]), a `$share/` name (a filter prefix: no subscription can
    /// match such a topic name, so the message would reach nobody), or the ACL.
    fn publish_refusal(&mut self, topic: &str) -> Option<(ReasonCode, &'static str)> {
        if is_sys_topic(topic) && !bridge::is_own_state(topic, &self.session.client_id) {
            Some((ReasonCode::NOT_AUTHORIZED, "publish into $SYS refused"))
        } else if topic.starts_with("$share/") {
            Some((
                ReasonCode::TOPIC_NAME_INVALID,
                "publish to a $share/ topic name refused (no subscription can match it)",
            ))
        } else if !self.may_write(topic) {
            Some((ReasonCode::NOT_AUTHORIZED, "publish denied by the ACL"))
        } else {
            None
        }
    }

    /// `limits.max_topic_length` and `limits.max_topic_levels`.
    fn topic_within_limits(&self, topic: &str) -> bool {
        let l = &self.broker.config().limits;
        // A topic has at most one level per byte, plus one: short topics need no count.
        topic.len() <= l.max_topic_length
            && (topic.len() < l.max_topic_levels
                || topic.bytes().filter(|b| *b == b'/').count() < l.max_topic_levels)
    }

    fn on_publish(&mut self, p: codec::Publish, out: &mut Outbox) -> Result<(), Close> {
        let metrics = &self.broker.metrics();
        metrics.publish_received.inc();
        metrics.publish_bytes_received.add(p.payload.len() as u64);
        self.published = true;
        if !self.within_rate(&p, out)? {
            return Ok(());
        }
        self.check_publish_flags(&p)?;
        let topic = self.resolve_topic(&p)?;
        if !self.topic_within_limits(&topic) {
            return Err(Close::Protocol(
                ReasonCode::TOPIC_NAME_INVALID,
                "topic name over limits.max_topic_length or max_topic_levels",
            ));
        }
        let pid = p.packet_id;
        let qos = p.qos;
        let forward = match p.qos {
            QoS::ExactlyOnce => self.inbound_qos2(pid)?,
            _ => true,
        };
        let too_large = self.payload_over_limit(&p, &topic);
        if too_large && self.version.is_v5() && qos != QoS::AtMostOnce {
            let why = "payload above mqtt.max_payload_size".to_owned();
            self.refuse_publish(pid, qos, ReasonCode::QUOTA_EXCEEDED, why, out);
            return Ok(());
        }
        let refusal = self.publish_refusal(&topic);
        if let Some((code, why)) = refusal {
            crate::refusal!(client_id = %self.session.client_id,
                username = self.username.as_deref().unwrap_or(""), peer = %self.peer, %topic,
                "{why}");
            if self.version.is_v5() && qos != QoS::AtMostOnce {
                let why = format!("{why}: {}", crate::logging::bounded(&topic));
                self.refuse_publish(pid, qos, code, why, out);
                return Ok(());
            }
        }
        let denied = refusal.is_some();
        let ack = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Packet::PubAck(PubResp::new(pid))),
            QoS::ExactlyOnce => Some(Packet::PubRec(PubResp::new(pid))),
        };
        let ack = if forward && !denied && !too_large && !self.consume_control(&topic, &p) {
            self.route(topic, p, ack, out)
        } else {
            ack
        };
        if let Some(ack) = ack {
            self.send(&ack, out);
        }
        Ok(())
    }

    /// QoS and RETAIN within what CONNACK said this server supports.
    fn check_publish_flags(&self, p: &codec::Publish) -> Result<(), Close> {
        if p.qos > self.broker.max_qos() {
            return Err(Close::Protocol(
                ReasonCode::QOS_NOT_SUPPORTED,
                "[MQTT-3.2.2-11] PUBLISH above the Maximum QoS",
            ));
        }
        if p.retain && !self.broker.config().mqtt.retain_available {
            return Err(Close::Protocol(
                ReasonCode::RETAIN_NOT_SUPPORTED,
                "[MQTT-3.2.2-14] RETAIN while Retain Available is 0",
            ));
        }
        if !p.properties.subscription_identifiers.is_empty() {
            return Err(Close::Protocol(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT-3.3.4-6] a Subscription Identifier in a PUBLISH from the client",
            ));
        }
        Ok(())
    }

    /// Records an inbound QoS 2 PUBLISH until its PUBREL, within the server Receive Maximum.
    /// Ok(false): a resend of one already received, answered again but not forwarded twice.
    fn inbound_qos2(&self, pid: u16) -> Result<bool, Close> {
        let new = self.session.with_state(|s| {
            if s.inbound_qos2_len() >= usize::from(self.receive_maximum) {
                None
            } else {
                Some(s.inbound_qos2_publish(pid))
            }
        });
        new.ok_or(Close::Protocol(
            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            "[MQTT-3.3.4-7] more unacknowledged QoS 2 PUBLISH than Receive Maximum",
        ))
    }

    /// Whether the payload of `p` is above `mqtt.max_payload_size` (Mosquitto's
    /// `message_size_limit`); such a PUBLISH is counted and logged (rate-limited), and never
    /// routed.
    fn payload_over_limit(&self, p: &codec::Publish, topic: &str) -> bool {
        let limit = self.broker.config().mqtt.max_payload_size;
        let len = p.payload.len();
        if limit == 0 || len <= limit as usize {
            return false;
        }
        self.broker.metrics().dropped_payload_too_large.inc();
        crate::refusal!(client_id = %self.session.client_id, peer = %self.peer, %topic, len, limit,
            qos = p.qos as u8, "PUBLISH dropped: payload above mqtt.max_payload_size");
        true
    }

    /// Refuses a v5 client's QoS 1/2 PUBLISH with `reason` (an ACL denial 0x87, a payload over
    /// the limit 0x97: codes PUBACK and PUBREC may carry, §3.4.2.1 and §3.5.2.1), explained in
    /// a Reason String; a QoS 2 exchange ends there (§4.3.3). A v3 client instead gets a normal
    /// ack so its window does not stall, and the message is dropped.
    fn refuse_publish(
        &self,
        pid: u16,
        qos: QoS,
        reason: ReasonCode,
        why: String,
        out: &mut Outbox,
    ) {
        let mut resp = PubResp::new(pid);
        resp.reason = reason;
        let packet = if qos == QoS::AtLeastOnce {
            Packet::PubAck(resp)
        } else {
            if let QoS::ExactlyOnce = qos {
                self.session.with_state(|s| s.inbound_pubrel(pid));
            }
            Packet::PubRec(resp)
        };
        self.send_explained(packet, why, out);
    }

    /// The topic of an inbound PUBLISH, through the v5 topic alias map [MQTT-3.3.2-12].
    fn resolve_topic(&mut self, p: &codec::Publish) -> Result<Arc<str>, Close> {
        let Some(alias) = p.properties.topic_alias else {
            if p.topic.is_empty() {
                return Err(Close::Protocol(
                    ReasonCode::PROTOCOL_ERROR,
                    "[MQTT-4.7.3-1] empty topic name without a topic alias",
                ));
            }
            return Ok(p.topic.clone());
        };
        let idx = usize::from(alias)
            .checked_sub(1)
            .filter(|i| *i < usize::from(self.alias_in_max));
        let Some(idx) = idx else {
            return Err(Close::Protocol(
                ReasonCode::TOPIC_ALIAS_INVALID,
                "[MQTT-3.3.2-9][MQTT 5.0 §3.3.4] topic alias 0 or above Topic Alias Maximum",
            ));
        };
        if p.topic.is_empty() {
            self.rare
                .as_ref()
                .and_then(|r| r.aliases_in.get(idx).cloned().flatten())
                .ok_or(Close::Protocol(
                    ReasonCode::PROTOCOL_ERROR,
                    "[MQTT 5.0 §3.3.4] unknown topic alias with an empty topic name",
                ))
        } else {
            let topic = p.topic.clone();
            let aliases = &mut self.rare_mut().aliases_in;
            if aliases.len() <= idx {
                aliases.resize(idx + 1, None);
            }
            aliases[idx] = Some(topic.clone());
            Ok(topic)
        }
    }

    /// The message to route, built in its shared allocation: returned by value and then moved
    /// into an `Arc`, its ~130 bytes were copied three times per PUBLISH.
    fn build_message(&self, topic: Arc<str>, p: codec::Publish) -> Arc<Message> {
        let mut props = p.properties;
        // Edited in place only when there are any: most PUBLISH packets carry none.
        let mut expiry = None;
        if let Some(pr) = props.existing_mut() {
            expiry = pr.message_expiry_interval.take();
            // Per-hop properties are not forwarded [MQTT-3.3.2-7].
            pr.topic_alias = None;
            pr.subscription_identifiers.clear();
        }
        props.compact();
        let mut msg = Arc::new(Message {
            topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: props,
            expires_at: None,
            publisher: Some(self.session.client_id.clone()),
            origin: crate::message::Origin::Local,
            stored: std::sync::OnceLock::new(),
            queued: std::sync::atomic::AtomicU32::new(0),
        });
        // The clock only for messages that expire: most do not. (A new `Arc` is unshared.)
        if let (Some(_), Some(m)) = (expiry, Arc::get_mut(&mut msg)) {
            m.set_expiry_interval(expiry, Instant::now());
        }
        msg
    }

    fn on_disconnect(&mut self, d: codec::Disconnect) -> Close {
        if let Some(secs) = d.properties.session_expiry_interval {
            if self.expiry_was_zero && secs != 0 {
                return Close::Protocol(
                    ReasonCode::PROTOCOL_ERROR,
                    "[MQTT 5.0 §3.14.2.2.2] Session Expiry Interval changed from 0 on DISCONNECT",
                );
            }
            let mut meta = self.session.meta();
            meta.set_expiry(connect::expiry_from_secs(secs));
            self.session.set_meta(meta);
        }
        Close::ClientDisconnect {
            will: d.reason == ReasonCode::DISCONNECT_WITH_WILL,
        }
    }

    /// Appends what the server says as it closes: a v5 DISCONNECT with the reason.
    pub fn closing(&self, close: &Close, out: &mut bytes::BytesMut) {
        if !self.version.is_v5() {
            return;
        }
        if let Some(reason) = close.disconnect_reason() {
            let mut d = codec::Disconnect::new(reason);
            // DISCONNECT may explain itself whatever Request Problem Information says
            // [MQTT-3.1.2-29], within the client's Maximum Packet Size [MQTT-3.14.2-3].
            if let Close::Protocol(_, why) | Close::Server(_, why) = close {
                d.properties.reason_string = Some((*why).to_string());
            }
            let mut packet = Packet::Disconnect(d);
            // At most 4 bytes without the Reason String: it fits whenever CONNACK did.
            codec::fit_within(&mut packet, self.version, self.client_max_packet as usize);
            codec::encode(&packet, self.version, out);
            self.broker.metrics().packets_sent.inc();
        }
    }

    pub fn client_id(&self) -> &str {
        &self.session.client_id
    }

    /// Ends the connection: will, session end, metrics, the log line.
    pub fn finish(mut self, close: Close) {
        let metrics = &self.broker.metrics();
        metrics.client_disconnected();
        let quiet = matches!(close, Close::ClientDisconnect { will: false });
        if quiet {
            tracing::info!(client_id = %self.session.client_id, peer = %self.peer,
                protocol = %self.version, reason = %close, "client disconnected");
        } else {
            crate::refusal!(client_id = %self.session.client_id, peer = %self.peer,
                protocol = %self.version, reason = %close, "connection closed");
        }
        let will = self
            .rare
            .as_mut()
            .and_then(|r| r.will.take())
            .filter(|_| close.publishes_will());
        let still_owner = self.broker.end_connection(&self.session, self.generation);
        let meta = self.session.meta();
        let expiry = meta.expiry();
        let persists = still_owner && !meta.ends_with_connection();
        // A will waiting out its delay is kept in the session record, so a restart in the
        // meantime still publishes it.
        let mut pending_will = None;
        if let Some(will) = will {
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            // A taken-over connection no longer owns the session (`persists` is false): a
            // will that reaches here ended the session with the takeover and is due at once
            // [MQTT-3.1.2-8].
            if delay > 0 && persists {
                pending_will = Some(will);
            } else {
                will::publish_will(&self.broker, &self.session.client_id, will);
            }
        }
        if still_owner {
            self.broker
                .persist_disconnect(&self.session, pending_will.as_ref());
        }
        if let Some(will) = pending_will {
            let wait = will::wait_before(&will, expiry);
            let since_unix_ms = crate::storage::unix_ms_now();
            let pending = crate::session::PendingWill {
                will,
                since_unix_ms,
            };
            will::schedule_will(&self.broker, &self.session, self.generation, pending, wait);
        }
        if still_owner {
            if let Some(after) = expiry.filter(|d| !d.is_zero()) {
                let session = self.session.clone();
                let generation = self.generation;
                self.broker.after(after, move |broker| {
                    broker.expire_session(&session, generation)
                });
            }
        }
        // Dropping `self` now tells a waiting takeover that this connection is done.
    }
}

impl Drop for Handler {
    /// After the will and the session's end (in [`Handler::finish`]), or when the task is
    /// dropped without finishing (runtime shutdown): a takeover waits for this.
    fn drop(&mut self) {
        if self.keep_alive > 0 {
            self.broker
                .keep_alive()
                .remove(&self.session, self.generation);
        }
        self.session.connection_finished(self.generation);
    }
}

/// The properties of an acknowledgement (the packets a Reason String may ride on under
/// [MQTT-3.1.2-29]).
fn ack_properties(packet: &mut Packet) -> Option<&mut Properties> {
    match packet {
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            Some(&mut r.properties)
        }
        Packet::SubAck(a) => Some(&mut a.properties),
        Packet::UnsubAck(a) => Some(&mut a.properties),
        _ => None,
    }
}

/// `$SYS` is the broker's; clients never publish into it.
fn is_sys_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

#[cfg(test)]
mod size_tests {
    /// Every connection holds a boxed Handler: glibc serves it from 16-byte size classes (with
    /// an 8-byte header), so growth past the budget costs every connection 16 bytes or more.
    /// Rarely used state lives in `Rare` and `Rates`, allocated only when used.
    #[test]
    fn handler_stays_within_its_budget() {
        let size = std::mem::size_of::<super::Handler>();
        println!("Handler: {size} bytes");
        assert!(size <= 184, "Handler is {size} bytes, over 184");
    }
}

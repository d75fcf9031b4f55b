//! Moving packets across a connected bridge: one loop over both links' reads and writes.
//!
//! Every message keeps its packet identifier as it crosses: a QoS 1/2 message the local
//! broker sends the bridge as id 7 goes to the remote broker as id 7, and the remote's
//! PUBACK/PUBREC/PUBCOMP for 7 go back to the local broker as they came; the same the other
//! way. The bridge so holds no state of its own for a message in flight: both brokers' sessions
//! do, and after a reconnection (or a restart of this broker, with a store) each resends its
//! unfinished PUBLISH (DUP) and PUBREL under the ids the other end already knows, which gives
//! QoS 2 its exactly-once across the hop [MQTT-4.3.3-2] [MQTT-4.4.0-1]. It also means the
//! window the bridge announces here (its Receive Maximum) is what bounds the remote's, and
//! the other way the bridge holds a message back while the local broker has as many in flight
//! from it as it takes.
//!
//! A message a side sends that no topic line maps (a subscription left in a persistent session
//! by an earlier configuration), or that is too large for the other side, is acknowledged by the
//! bridge itself and dropped (logged), so neither session's window fills with it.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::link::{Link, Stream};
use super::topics::TopicMap;
use super::BridgeError;
use crate::broker::BrokerState;
use crate::codec::{
    self, Packet, ProtocolVersion, PubResp, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions,
};
use crate::message::Message;
use crate::metrics::BridgeMetrics;

/// Stop reading a side while this much waits to be written to the other.
const OUT_HIGH: usize = 256 * 1024;
/// Stop reading a side whose packets are held back once this much of it is buffered.
const READ_HIGH: usize = 64 * 1024;
/// Room made in a side's read buffer before each read. A read fills what room there is, and
/// a buffer that decoding emptied has almost none (an empty `BytesMut` grows by 64 bytes):
/// without this a flow of small messages costs a read per message.
const READ_CHUNK: usize = 16 * 1024;
/// Packet id of the bridge's SUBSCRIBE on each side.
const SUBSCRIBE_ID: u16 = 1;

/// One side of the bridge while it runs.
struct Side {
    rd: ReadHalf<Box<dyn Stream>>,
    wr: WriteHalf<Box<dyn Stream>>,
    rbuf: BytesMut,
    out: BytesMut,
    flush: bool,
    version: ProtocolVersion,
    /// The largest packet the bridge reads from this side.
    max_in: u32,
    /// The largest packet this side takes.
    max_out: u32,
    receive_max: u16,
    max_qos: QoS,
    retain_available: bool,
    keep_alive: std::time::Duration,
    last_read: Instant,
    last_write: Instant,
    ping_sent: Option<Instant>,
    name: &'static str,
}

impl Side {
    fn new(link: Link, max_in: u32, name: &'static str) -> Side {
        let (rd, wr) = tokio::io::split(link.io);
        let now = Instant::now();
        Side {
            rd,
            wr,
            rbuf: link.rbuf,
            out: BytesMut::new(),
            flush: false,
            version: link.version,
            max_in,
            max_out: link.max_packet,
            receive_max: link.receive_max,
            max_qos: link.max_qos,
            retain_available: link.retain_available,
            keep_alive: link.keep_alive,
            last_read: now,
            last_write: now,
            ping_sent: None,
            name,
        }
    }

    fn send(&mut self, p: &Packet) {
        codec::encode(p, self.version, &mut self.out);
    }

    /// When the keep-alive needs attention next: a PINGREQ due, or an unanswered one late.
    fn deadline(&self) -> Instant {
        match self.ping_sent {
            Some(at) => at + self.keep_alive,
            None => self.last_write.min(self.last_read) + self.keep_alive,
        }
    }

    /// Sends PINGREQ when nothing was written for a keep-alive (the other end would take the
    /// link for dead [MQTT-3.1.2-24]) or nothing read for one (a link that only writes, QoS 0
    /// going out, would not otherwise notice a dead peer); an error when one went unanswered,
    /// nothing read, for a keep-alive.
    fn keep_alive(&mut self, now: Instant) -> Result<(), BridgeError> {
        if let Some(at) = self.ping_sent {
            if now >= at + self.keep_alive {
                return Err(BridgeError::Timeout(if self.name == "remote" {
                    "remote broker did not answer PINGREQ"
                } else {
                    "local session did not answer PINGREQ"
                }));
            }
            return Ok(());
        }
        if now >= self.last_write.min(self.last_read) + self.keep_alive {
            self.send(&Packet::PingReq);
            self.ping_sent = Some(now);
        }
        Ok(())
    }

    /// After [`write_some`]: a write to flush later, or the flush done.
    fn wrote(&mut self, flushed: bool) {
        if flushed {
            self.flush = false;
        } else {
            self.last_write = Instant::now();
            self.flush = true;
        }
    }

    fn read_happened(&mut self) {
        self.last_read = Instant::now();
        self.ping_sent = None;
    }
}

/// What the pump tracks beyond the two sides.
struct State<'a> {
    map: &'a TopicMap,
    bridge: &'a str,
    metrics: &'a BridgeMetrics,
    /// The remote SUBSCRIBE awaiting its SUBACK: a local message with its id waits for it.
    remote_sub_pending: bool,
    /// The local SUBSCRIBE awaiting its SUBACK.
    local_sub_pending: bool,
    /// The notifications are still to be sent (after both SUBACKs).
    hello: Option<&'a Setup<'a>>,
    /// Ids of QoS 1/2 messages the bridge sent the local broker, not yet complete.
    local_inflight: HashSet<u16>,
    /// Remote QoS 2 messages the bridge acknowledged itself (PUBREL answered here).
    own_in: HashSet<u16>,
    /// Local QoS 2 messages the bridge acknowledged itself.
    own_out: HashSet<u16>,
    /// A remote packet waiting for room in the local window.
    held_remote: Option<Publish>,
    /// A local packet waiting for the remote SUBACK (same id).
    held_local: Option<Packet>,
    /// See [`Setup::inbound`].
    inbound: Option<watch::Receiver<bool>>,
}

/// How a running bridge ended without an error.
pub enum End {
    /// The broker is shutting down.
    Shutdown,
    /// The main broker accepts connections again: the bridge leaves its fallback for it.
    MainBack,
}

/// What resolves when the bridge should go back to its main broker (see [`End::MainBack`]).
pub type MainBack<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What [`run`] needs besides the two links.
pub struct Setup<'a> {
    /// The broker the bridge belongs to.
    pub broker: &'a BrokerState,
    /// The bridge's name, for logs.
    pub bridge: &'a str,
    pub map: &'a TopicMap,
    /// The largest packet read from each side.
    pub remote_max_in: u32,
    pub local_max_in: u32,
    /// Sent to the remote broker before DISCONNECT at shutdown (the `0` notification, which
    /// the will does not carry then).
    pub farewell: Option<Publish>,
    /// Sent to the remote broker once both sides acknowledged the bridge's subscriptions
    /// (the `1` notification).
    pub hello: Option<Publish>,
    /// Published here at the same moment.
    pub local_hello: Option<Arc<Message>>,
    /// The bridge's counters.
    pub metrics: &'a BridgeMetrics,
    /// For a bridge run on every node: whether this node brings the remote broker's messages
    /// in; the others acknowledge and drop them. None: always.
    pub inbound: Option<&'a watch::Receiver<bool>>,
}

/// Runs a bridge whose two links are up until one fails or the broker shuts down; at
/// shutdown the remote link is closed with DISCONNECT (after `farewell`).
pub async fn run(
    setup: Setup<'_>,
    (remote, local): (Link, Link),
    mut main_back: Option<MainBack<'_>>,
    shutdown: &CancellationToken,
) -> Result<End, BridgeError> {
    let mut r = Side::new(remote, setup.remote_max_in, "remote");
    let mut l = Side::new(local, setup.local_max_in, "local");
    let result = forward(&setup, (&mut r, &mut l), &mut main_back, shutdown).await;
    setup.metrics.up.set(0);
    setup.metrics.inbound.set(0);
    // The broker's shutdown closes every session, the bridge's local one too, before it
    // cancels `shutdown` (`BrokerHandle::shutdown`): the local end may so end first. Either
    // way, and when leaving a fallback, the remote link ends cleanly, or the remote broker
    // would publish the will.
    let main = matches!(result, Ok(End::MainBack));
    if !main && !shutdown.is_cancelled() && !setup.broker.is_stopping() {
        return result;
    }
    if let Some(p) = setup.farewell {
        r.send(&Packet::Publish(p));
    }
    r.send(&Packet::Disconnect(codec::Disconnect::new(
        ReasonCode::SUCCESS,
    )));
    let bye = async {
        r.wr.write_all(&r.out).await?;
        r.wr.shutdown().await
    };
    // A remote broker that does not take it in a second is not waited for.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), bye).await;
    Ok(if main { End::MainBack } else { End::Shutdown })
}

async fn forward(
    setup: &Setup<'_>,
    (r, l): (&mut Side, &mut Side),
    main_back: &mut Option<MainBack<'_>>,
    shutdown: &CancellationToken,
) -> Result<End, BridgeError> {
    let mut st = State {
        map: setup.map,
        bridge: setup.bridge,
        metrics: setup.metrics,
        remote_sub_pending: false,
        local_sub_pending: false,
        hello: Some(setup),
        local_inflight: HashSet::new(),
        own_in: HashSet::new(),
        own_out: HashSet::new(),
        held_remote: None,
        held_local: None,
        inbound: setup.inbound.cloned(),
    };
    st.metrics.inbound.set(st.brings_in().into());
    subscribe(&mut st, r, l);
    let sleep = tokio::time::sleep_until(Instant::now());
    tokio::pin!(sleep);
    loop {
        pump_remote(&mut st, r, l)?;
        pump_local(&mut st, r, l)?;
        announce(&mut st, r);
        sleep.as_mut().reset(r.deadline().min(l.deadline()));
        let read_r =
            l.out.len() < OUT_HIGH && (st.held_remote.is_none() || r.rbuf.len() < READ_HIGH);
        let read_l =
            r.out.len() < OUT_HIGH && (st.held_local.is_none() || l.rbuf.len() < READ_HIGH);
        if read_r {
            r.rbuf.reserve(READ_CHUNK);
        }
        if read_l {
            l.rbuf.reserve(READ_CHUNK);
        }
        tokio::select! {
            n = r.rd.read_buf(&mut r.rbuf), if read_r => {
                if n? == 0 {
                    return Err(BridgeError::Closed("by the remote broker"));
                }
                r.read_happened();
            }
            n = l.rd.read_buf(&mut l.rbuf), if read_l => {
                if n? == 0 {
                    return Err(BridgeError::Closed("by this broker"));
                }
                l.read_happened();
            }
            w = write_some(&mut r.wr, &mut r.out), if r.flush || !r.out.is_empty() => {
                r.wrote(w?);
            }
            w = write_some(&mut l.wr, &mut l.out), if l.flush || !l.out.is_empty() => {
                l.wrote(w?);
            }
            () = &mut sleep => {
                let now = Instant::now();
                r.keep_alive(now)?;
                l.keep_alive(now)?;
            }
            () = shutdown.cancelled() => return Ok(End::Shutdown),
            () = main_up(main_back) => return Ok(End::MainBack),
            () = lease_changed(&mut st.inbound) => {
                st.metrics.inbound.set(st.brings_in().into());
            }
        }
    }
}

impl State<'_> {
    /// Whether this node brings the remote broker's messages in (see [`Setup::inbound`]).
    fn brings_in(&self) -> bool {
        self.inbound.as_ref().is_none_or(|rx| *rx.borrow())
    }
}

/// Resolves when the lease `inbound` follows changes hands; never without one.
async fn lease_changed(inbound: &mut Option<watch::Receiver<bool>>) {
    let changed = match inbound {
        Some(rx) => rx.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
}

/// Resolves with `main_back`; never when there is none.
async fn main_up(main_back: &mut Option<MainBack<'_>>) {
    match main_back {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Writes some of `out`, or once it is empty flushes (TLS keeps what it encrypted until
/// then). True when it flushed. Cancel-safe: `out` only loses what was written.
async fn write_some(
    wr: &mut WriteHalf<Box<dyn Stream>>,
    out: &mut BytesMut,
) -> std::io::Result<bool> {
    if out.is_empty() {
        wr.flush().await?;
        return Ok(true);
    }
    if wr.write_buf(out).await? == 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    Ok(false)
}

/// The SUBSCRIBE of each side (none where no line goes that way).
fn subscribe(st: &mut State<'_>, r: &mut Side, l: &mut Side) {
    let cap = |subs: Vec<(String, SubscriptionOptions)>, max: QoS| -> Vec<_> {
        subs.into_iter()
            .map(|(f, mut o)| {
                o.qos = o.qos.min(max);
                (f, o)
            })
            .collect()
    };
    let remote = cap(st.map.remote_subscriptions(), l.max_qos);
    if !remote.is_empty() {
        r.send(&Packet::Subscribe(Subscribe {
            packet_id: SUBSCRIBE_ID,
            filters: remote,
            properties: Default::default(),
        }));
        st.remote_sub_pending = true;
    }
    // Messages go out no higher than the remote broker takes.
    let local = cap(st.map.local_subscriptions(), r.max_qos);
    if !local.is_empty() {
        l.send(&Packet::Subscribe(Subscribe {
            packet_id: SUBSCRIBE_ID,
            filters: local,
            properties: Default::default(),
        }));
        st.local_sub_pending = true;
    }
}

/// Once both sides acknowledged the subscriptions, the bridge is up: its `1` goes out.
fn announce(st: &mut State<'_>, r: &mut Side) {
    if st.remote_sub_pending || st.local_sub_pending {
        return;
    }
    let Some(setup) = st.hello.take() else {
        return;
    };
    if let Some(p) = &setup.hello {
        r.send(&Packet::Publish(p.clone()));
    }
    if let Some(msg) = &setup.local_hello {
        setup.broker.publish_unacknowledged(msg.clone());
    }
    st.metrics.up.set(1);
    st.metrics.connects.inc();
    tracing::info!(
        bridge = st.bridge,
        "bridge: subscriptions acknowledged on both sides"
    );
}

/// Forwards what the remote broker sent, as far as the local window and buffer allow.
fn pump_remote(st: &mut State<'_>, r: &mut Side, l: &mut Side) -> Result<(), BridgeError> {
    if let Some(p) = st.held_remote.take() {
        if !remote_publish(st, r, l, p) {
            return Ok(());
        }
    }
    while l.out.len() < OUT_HIGH {
        let Some(packet) = codec::decode(&mut r.rbuf, r.version, r.max_in)? else {
            break;
        };
        match packet {
            Packet::Publish(p) => {
                if !remote_publish(st, r, l, p) {
                    break;
                }
            }
            // Answers to what the local broker sent out, and the remote's own releases.
            Packet::PubAck(a) => l.send(&Packet::PubAck(a)),
            Packet::PubRec(a) => l.send(&Packet::PubRec(a)),
            Packet::PubComp(a) => l.send(&Packet::PubComp(a)),
            Packet::PubRel(a) if st.own_in.remove(&a.packet_id) => {
                r.send(&Packet::PubComp(PubResp::new(a.packet_id)));
            }
            Packet::PubRel(a) => l.send(&Packet::PubRel(a)),
            Packet::SubAck(a) => {
                st.remote_sub_pending = false;
                refused_filters(st, "remote", &a.reasons, st.map.remote_subscriptions());
            }
            Packet::PingResp | Packet::UnsubAck(_) => {}
            Packet::Disconnect(d) => return Err(BridgeError::Disconnected(d.reason.0)),
            p => {
                return Err(BridgeError::Protocol(format!(
                    "remote broker sent {}",
                    p.name()
                )))
            }
        }
    }
    Ok(())
}

/// Sends a remote PUBLISH on here; false when it must wait for room in the local window
/// (then held).
fn remote_publish(st: &mut State<'_>, r: &mut Side, l: &mut Side, mut p: Publish) -> bool {
    let id = p.packet_id;
    let tracked = p.qos != QoS::AtMostOnce;
    if tracked
        && !st.local_inflight.contains(&id)
        && st.local_inflight.len() >= usize::from(l.receive_max)
    {
        st.held_remote = Some(p);
        return false;
    }
    if !st.brings_in() {
        st.metrics.standby.inc();
        ack_dropped(&mut st.own_in, r, &p);
        return true;
    }
    let Some(topic) = st.map.to_local(&p.topic) else {
        tracing::debug!(bridge = st.bridge, topic = %p.topic,
            "bridge: no topic line brings this in; acknowledged and dropped");
        st.metrics.dropped.inc();
        ack_dropped(&mut st.own_in, r, &p);
        return true;
    };
    p.topic = topic;
    prepare(&mut p, l);
    if !l.send_publish(p, &mut st.own_in, r, st.bridge) {
        st.metrics.dropped.inc();
        return true;
    }
    st.metrics.received.inc();
    if tracked {
        st.local_inflight.insert(id);
    }
    true
}

/// Forwards what the local broker sent, unless a packet waits for the remote SUBACK.
fn pump_local(st: &mut State<'_>, r: &mut Side, l: &mut Side) -> Result<(), BridgeError> {
    if let Some(p) = st.held_local.take() {
        if !local_packet(st, r, l, p)? {
            return Ok(());
        }
    }
    while r.out.len() < OUT_HIGH {
        let Some(packet) = codec::decode(&mut l.rbuf, l.version, l.max_in)? else {
            break;
        };
        if !local_packet(st, r, l, packet)? {
            break;
        }
    }
    Ok(())
}

/// One packet from the local broker; false when it was held back.
fn local_packet(
    st: &mut State<'_>,
    r: &mut Side,
    l: &mut Side,
    packet: Packet,
) -> Result<bool, BridgeError> {
    // The bridge's SUBSCRIBE uses SUBSCRIBE_ID until its SUBACK [MQTT-2.2.1-3].
    let id = match &packet {
        Packet::Publish(p) if p.qos != QoS::AtMostOnce => Some(p.packet_id),
        Packet::PubRel(a) => Some(a.packet_id),
        _ => None,
    };
    if st.remote_sub_pending && id == Some(SUBSCRIBE_ID) {
        st.held_local = Some(packet);
        return Ok(false);
    }
    match packet {
        Packet::Publish(p) => local_publish(st, r, l, p),
        // Answers to what the remote broker sent in: the local window gets room.
        Packet::PubAck(a) => {
            st.local_inflight.remove(&a.packet_id);
            r.send(&Packet::PubAck(a));
        }
        Packet::PubRec(a) => {
            if a.reason.0 >= 0x80 {
                st.local_inflight.remove(&a.packet_id);
            }
            r.send(&Packet::PubRec(a));
        }
        Packet::PubComp(a) => {
            st.local_inflight.remove(&a.packet_id);
            r.send(&Packet::PubComp(a));
        }
        Packet::PubRel(a) if st.own_out.remove(&a.packet_id) => {
            l.send(&Packet::PubComp(PubResp::new(a.packet_id)));
        }
        Packet::PubRel(a) => r.send(&Packet::PubRel(a)),
        Packet::SubAck(a) => {
            st.local_sub_pending = false;
            refused_filters(st, "local", &a.reasons, st.map.local_subscriptions());
        }
        Packet::PingResp | Packet::UnsubAck(_) => {}
        Packet::Disconnect(d) => return Err(BridgeError::LocalDisconnected(d.reason.0)),
        p => {
            return Err(BridgeError::Protocol(format!(
                "this broker sent {}",
                p.name()
            )))
        }
    }
    Ok(true)
}

/// Sends a local PUBLISH to the remote broker.
fn local_publish(st: &mut State<'_>, r: &mut Side, l: &mut Side, mut p: Publish) {
    let Some(topic) = st.map.to_remote(&p.topic) else {
        tracing::debug!(bridge = st.bridge, topic = %p.topic,
            "bridge: no topic line sends this out; acknowledged and dropped");
        st.metrics.dropped.inc();
        ack_dropped(&mut st.own_out, l, &p);
        return;
    };
    p.topic = topic;
    prepare(&mut p, r);
    if r.send_publish(p, &mut st.own_out, l, st.bridge) {
        st.metrics.sent.inc();
    } else {
        st.metrics.dropped.inc();
    }
}

/// Makes a PUBLISH fit to send to `to`: no subscription identifiers or topic alias (a
/// client's PUBLISH must not carry the first [MQTT-3.3.4-6]; aliases are per connection),
/// RETAIN only where retained messages are available, QoS no higher than it takes.
fn prepare(p: &mut Publish, to: &Side) {
    if let Some(props) = p.properties.existing_mut() {
        props.subscription_identifiers.clear();
        props.topic_alias = None;
    }
    p.properties.compact();
    if !to.retain_available {
        p.retain = false;
    }
}

impl Side {
    /// Sends `p` on this side unless it is larger than this side takes: then it is
    /// acknowledged to `from`, which sent it, and dropped (logged). True when sent.
    fn send_publish(
        &mut self,
        p: Publish,
        own: &mut HashSet<u16>,
        from: &mut Side,
        bridge: &str,
    ) -> bool {
        let start = self.out.len();
        let p = Packet::Publish(p);
        self.send(&p);
        if self.out.len() - start <= self.max_out as usize {
            return true;
        }
        self.out.truncate(start);
        if let Packet::Publish(p) = &p {
            tracing::warn!(bridge, topic = %p.topic, to = self.name,
                "bridge: message larger than the receiving broker takes; acknowledged and dropped");
            ack_dropped(own, from, p);
        }
        false
    }
}

/// Acknowledges a message the bridge does not forward, to `side` that sent it: PUBACK for
/// QoS 1, PUBREC for QoS 2 (its PUBREL then answered by the bridge, see `own`).
fn ack_dropped(own: &mut HashSet<u16>, side: &mut Side, p: &Publish) {
    match p.qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => side.send(&Packet::PubAck(PubResp::new(p.packet_id))),
        QoS::ExactlyOnce => {
            own.insert(p.packet_id);
            side.send(&Packet::PubRec(PubResp::new(p.packet_id)));
        }
    }
}

/// Logs the filters a SUBACK refused.
fn refused_filters(
    st: &State<'_>,
    side: &str,
    reasons: &[ReasonCode],
    subs: Vec<(String, SubscriptionOptions)>,
) {
    for (code, (filter, _)) in reasons.iter().zip(subs) {
        if code.0 >= 0x80 {
            tracing::warn!(bridge = st.bridge, side, filter = %filter, code = code.0,
                "bridge: subscription refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BridgeTopic;
    use crate::config::Direction;
    use std::time::Duration;
    use tokio::io::DuplexStream;

    /// A link over one end of a pipe; the other end plays the broker.
    fn link(keep_alive: Duration) -> (Link, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(4096);
        let link = Link {
            io: Box::new(ours),
            version: ProtocolVersion::V311,
            rbuf: BytesMut::new(),
            max_packet: 1 << 20,
            receive_max: 10,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            keep_alive,
            session_present: false,
        };
        (link, theirs)
    }

    /// Reads packets from `peer` until one matches `pick`.
    async fn read_until(peer: &mut DuplexStream, pick: impl Fn(&Packet) -> bool) -> Packet {
        let mut buf = BytesMut::new();
        loop {
            while let Some(p) = codec::decode(&mut buf, ProtocolVersion::V311, 1 << 20).unwrap() {
                if pick(&p) {
                    return p;
                }
            }
            assert_ne!(peer.read_buf(&mut buf).await.unwrap(), 0, "closed");
        }
    }

    /// A remote broker that stops answering is noticed within two keep-alives: a PINGREQ
    /// goes out after one quiet keep-alive, and the link fails one later [MQTT-3.1.2-24].
    #[tokio::test(start_paused = true)]
    async fn a_silent_remote_fails_the_link_after_an_unanswered_ping() {
        let ka = Duration::from_secs(10);
        let (remote, mut remote_peer) = link(ka);
        let (local, _local_peer) = link(Duration::from_secs(3600));
        let map = TopicMap::new(&[BridgeTopic {
            pattern: "a/#".into(),
            direction: Direction::Out,
            qos: 1,
            local_prefix: String::new(),
            remote_prefix: String::new(),
        }]);
        let broker = BrokerState::new(crate::config::Config::default(), CancellationToken::new());
        let metrics = BridgeMetrics::default();
        let setup = Setup {
            broker: &broker,
            bridge: "t",
            map: &map,
            remote_max_in: 1 << 20,
            local_max_in: 1 << 20,
            farewell: None,
            hello: None,
            local_hello: None,
            metrics: &metrics,
            inbound: None,
        };
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        let pinged = read_until(&mut remote_peer, |p| matches!(p, Packet::PingReq));
        let (result, _) = tokio::join!(run(setup, (remote, local), None, &shutdown), pinged);
        let (err, took) = (result.err().map(|e| e.to_string()), started.elapsed());
        assert_eq!(
            err.as_deref(),
            Some("timed out remote broker did not answer PINGREQ")
        );
        assert!(took >= 2 * ka && took < 3 * ka, "{took:?}");
    }
}

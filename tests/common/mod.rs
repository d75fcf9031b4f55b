//! Shared helpers for the integration and interop tests: an in-process broker on an ephemeral
//! port, a tiny raw-TCP MQTT client that frames packets itself and decodes them with
//! `starling::codec::decode`, raw packet builders (independent of `starling::codec::encode`, so
//! the bytes on the wire are exactly what the test wrote), a rumqttc driver, and wrappers for
//! external client processes (mosquitto_pub/mosquitto_sub, python3 + paho-mqtt).
//!
//! Every wait is bounded: a helper that waits takes a timeout or uses [`WAIT`].
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use starling::broker::BrokerState;
use starling::codec::{self, ConnAck, Packet, ProtocolVersion, Publish};
use starling::config::Config;
use starling::{Broker, BrokerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Default bound for anything that should happen "promptly".
pub const WAIT: Duration = Duration::from_secs(5);
/// Bound for "the broker closes the connection".
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Bounded wait used for negative checks ("X does not happen"), always followed by a positive
/// control message.
pub const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Broker
// ---------------------------------------------------------------------------------------------

static TRACING: Once = Once::new();

/// Logs broker tracing to the test output when RUST_LOG is set.
pub fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// A configuration for tests: ephemeral loopback port, no `$SYS` publisher, short timeouts.
pub fn test_config() -> Config {
    let mut cfg = Config::default();
    cfg.listeners[0].bind = "127.0.0.1:0".parse().unwrap();
    cfg.sys.interval = Duration::ZERO;
    cfg.mqtt.connect_timeout = Duration::from_secs(2);
    cfg.mqtt.keepalive_factor = 1.5;
    cfg
}

/// A broker running in this process; shut down on drop.
pub struct TestBroker {
    handle: Option<BrokerHandle>,
    pub addr: SocketAddr,
}

pub async fn start() -> TestBroker {
    start_with(test_config()).await
}

pub async fn start_with(cfg: Config) -> TestBroker {
    init_tracing();
    let handle = Broker::start(cfg).await.expect("broker starts");
    let addr = handle.local_addrs()[0];
    TestBroker {
        handle: Some(handle),
        addr,
    }
}

impl TestBroker {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn state(&self) -> &Arc<BrokerState> {
        self.handle.as_ref().unwrap().state()
    }

    pub fn handle(&self) -> &BrokerHandle {
        self.handle.as_ref().unwrap()
    }

    /// Graceful shutdown; true when `wait()` returned within `limit`.
    pub async fn stop_within(mut self, limit: Duration) -> bool {
        let h = self.handle.take().unwrap();
        h.shutdown();
        tokio::time::timeout(limit, h.wait()).await.is_ok()
    }

    /// Waits (bounded) until `cond` holds on the broker state. Used where the only observable
    /// event is inside the broker (e.g. "the broker has noticed the client went away").
    pub async fn wait_until(&self, what: &str, cond: impl Fn(&BrokerState) -> bool) {
        let state = self.state().clone();
        let deadline = Instant::now() + WAIT;
        while !cond(&state) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn clients_connected(&self) -> u64 {
        self.state().metrics().clients_connected.get()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        // A lock-order inversion inside a connection task only ends that task; make it fail
        // the test that ran it (debug builds check the lock hierarchy, see starling::sync).
        if !std::thread::panicking() {
            assert_eq!(
                starling::sync::inversions(),
                0,
                "the broker reported a lock-order inversion (see the panic message above)"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw packet builders (MQTT 3.1 / 3.1.1 wire format, written by hand)
// ---------------------------------------------------------------------------------------------

pub fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            return;
        }
    }
}

pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Fixed header byte + remaining length + body.
pub fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    put_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

#[derive(Clone, Debug)]
pub struct WillOpts {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

#[derive(Clone, Debug)]
pub struct ConnectOpts {
    pub protocol_name: &'static str,
    pub level: u8,
    pub client_id: String,
    pub clean: bool,
    pub keep_alive: u16,
    pub will: Option<WillOpts>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

impl ConnectOpts {
    /// MQTT 3.1.1, clean session, keep-alive 0 (no timeout).
    pub fn v311(client_id: &str) -> ConnectOpts {
        ConnectOpts {
            protocol_name: "MQTT",
            level: 4,
            client_id: client_id.to_owned(),
            clean: true,
            keep_alive: 0,
            will: None,
            username: None,
            password: None,
        }
    }

    /// MQTT 3.1 (`MQIsdp`, level 3).
    pub fn v31(client_id: &str) -> ConnectOpts {
        ConnectOpts {
            protocol_name: "MQIsdp",
            level: 3,
            ..ConnectOpts::v311(client_id)
        }
    }

    pub fn clean(mut self, clean: bool) -> Self {
        self.clean = clean;
        self
    }

    pub fn keep_alive(mut self, secs: u16) -> Self {
        self.keep_alive = secs;
        self
    }

    pub fn will(mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Self {
        self.will = Some(WillOpts {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            qos,
            retain,
        });
        self
    }

    /// The version the level names (a bridge's level has the top bit set: 0x83, 0x84).
    pub fn version(&self) -> ProtocolVersion {
        if self.level & 0x7F == 3 {
            ProtocolVersion::V31
        } else {
            ProtocolVersion::V311
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put_str(&mut body, self.protocol_name.as_bytes());
        body.push(self.level);
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | (w.qos << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        body.push(flags);
        body.extend_from_slice(&self.keep_alive.to_be_bytes());
        put_str(&mut body, self.client_id.as_bytes());
        if let Some(w) = &self.will {
            put_str(&mut body, w.topic.as_bytes());
            put_str(&mut body, &w.payload);
        }
        if let Some(u) = &self.username {
            put_str(&mut body, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_str(&mut body, p);
        }
        frame(0x10, &body)
    }
}

pub fn publish_packet(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pid: u16,
) -> Vec<u8> {
    let mut header = 0x30 | (qos << 1);
    if retain {
        header |= 0x01;
    }
    if dup {
        header |= 0x08;
    }
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    frame(header, &body)
}

pub fn subscribe_packet(pid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    for (f, q) in filters {
        put_str(&mut body, f.as_bytes());
        body.push(*q);
    }
    frame(0x82, &body)
}

pub fn unsubscribe_packet(pid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    for f in filters {
        put_str(&mut body, f.as_bytes());
    }
    frame(0xA2, &body)
}

pub fn puback(pid: u16) -> Vec<u8> {
    frame(0x40, &pid.to_be_bytes())
}
pub fn pubrec(pid: u16) -> Vec<u8> {
    frame(0x50, &pid.to_be_bytes())
}
pub fn pubrel(pid: u16) -> Vec<u8> {
    frame(0x62, &pid.to_be_bytes())
}
pub fn pubcomp(pid: u16) -> Vec<u8> {
    frame(0x70, &pid.to_be_bytes())
}
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------------------------

/// What a bounded read produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Recv {
    Packet(Packet),
    /// EOF or a socket error (a reset counts as closed).
    Closed(String),
    Timeout,
}

/// A raw MQTT client over TCP: writes exactly the bytes given, frames incoming packets itself
/// (fixed header + remaining length) and decodes each frame with `starling::codec::decode`.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
    /// The raw bytes of the last packet received (fixed header included).
    pub last_frame: Bytes,
    eof: bool,
    /// Packets set aside while waiting for a specific acknowledgement (e.g. a PUBLISH to
    /// oneself that arrives before the PUBACK); returned first by later reads.
    stash: std::collections::VecDeque<Packet>,
}

/// Splits one whole frame off `buf`, if buffered.
fn split_frame(buf: &mut BytesMut) -> Result<Option<BytesMut>, String> {
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut i = 1;
    loop {
        if i > 4 {
            return Err(format!(
                "broker sent a remaining length of more than 4 bytes: {}",
                hex(&buf[..buf.len().min(8)])
            ));
        }
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len += usize::from(b & 0x7F) * mult;
        mult *= 128;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    Ok(Some(buf.split_to(i + len)))
}

impl Raw {
    pub async fn open(addr: SocketAddr) -> Raw {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect");
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: BytesMut::new(),
            version: ProtocolVersion::V311,
            last_frame: Bytes::new(),
            eof: false,
            stash: Default::default(),
        }
    }

    /// Wraps a connection the test opened itself (e.g. from another loopback address).
    pub fn from_stream(stream: TcpStream) -> Raw {
        Raw {
            stream,
            buf: BytesMut::new(),
            version: ProtocolVersion::V311,
            last_frame: Bytes::new(),
            eof: false,
            stash: Default::default(),
        }
    }

    /// Opens a connection, sends CONNECT and returns the CONNACK (whatever its code).
    pub async fn connect_raw(addr: SocketAddr, opts: &ConnectOpts) -> (Raw, ConnAck) {
        let mut raw = Raw::open(addr).await;
        raw.version = opts.version();
        raw.send(&opts.encode()).await;
        match raw.recv_timeout(WAIT).await {
            Recv::Packet(Packet::ConnAck(ack)) => (raw, ack),
            other => panic!(
                "expected CONNACK for client {:?}, got {other:?}",
                opts.client_id
            ),
        }
    }

    /// Connects and asserts the CONNACK accepted the connection.
    pub async fn connect(addr: SocketAddr, opts: &ConnectOpts) -> (Raw, ConnAck) {
        let (raw, ack) = Raw::connect_raw(addr, opts).await;
        assert_eq!(
            ack.code.0, 0,
            "CONNACK for {:?} refused the connection: {ack:?}",
            opts.client_id
        );
        (raw, ack)
    }

    /// Sends a v5 CONNECT (clean start, keep alive 0, no properties) on a new connection and
    /// returns the CONNACK, whatever its code.
    pub async fn connect_v5(addr: SocketAddr, client_id: &str) -> (Raw, ConnAck) {
        let connect = codec::Connect {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 0,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
            properties: codec::Properties::default(),
            bridge: false,
        };
        let mut bytes = BytesMut::new();
        codec::encode(
            &Packet::Connect(Box::new(connect)),
            ProtocolVersion::V5,
            &mut bytes,
        );
        let mut raw = Raw::open(addr).await;
        raw.version = ProtocolVersion::V5;
        raw.send(&bytes).await;
        match raw.recv().await {
            Packet::ConnAck(ack) => (raw, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Clean-session 3.1.1 client with keep-alive 0.
    pub async fn connect_v311(addr: SocketAddr, client_id: &str) -> Raw {
        Raw::connect(addr, &ConnectOpts::v311(client_id)).await.0
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).await.expect("write to broker");
    }

    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(WAIT, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| std::io::Error::other("write timed out"))?
    }

    /// The next packet, a close, or a timeout after `d`.
    pub async fn recv_timeout(&mut self, d: Duration) -> Recv {
        if let Some(p) = self.stash.pop_front() {
            return Recv::Packet(p);
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match split_frame(&mut self.buf) {
                Err(e) => panic!("{e}"),
                Ok(Some(f)) => {
                    let frame = f.freeze();
                    self.last_frame = frame.clone();
                    let mut b = BytesMut::from(&frame[..]);
                    match codec::decode(&mut b, self.version, u32::MAX) {
                        Ok(Some(p)) => {
                            assert!(
                                b.is_empty(),
                                "decode left {} bytes of frame {}",
                                b.len(),
                                hex(&frame)
                            );
                            return Recv::Packet(p);
                        }
                        Ok(None) => panic!("decode wants more than a whole frame: {}", hex(&frame)),
                        Err(e) => panic!(
                            "the broker sent a packet starling's decoder rejects ({e}): {}",
                            hex(&frame)
                        ),
                    }
                }
                Ok(None) => {}
            }
            if self.eof {
                if self.buf.is_empty() {
                    return Recv::Closed("EOF".into());
                }
                return Recv::Closed(format!(
                    "EOF with {} bytes of a partial packet buffered: {}",
                    self.buf.len(),
                    hex(&self.buf)
                ));
            }
            self.buf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Recv::Timeout,
                Ok(Ok(0)) => self.eof = true,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Recv::Closed(format!("socket error: {e}")),
            }
        }
    }

    /// The next packet within [`WAIT`]; panics on close or timeout.
    pub async fn recv(&mut self) -> Packet {
        match self.recv_timeout(WAIT).await {
            Recv::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// The next packet must be a PUBLISH.
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Waits for the broker to close the connection, returning every packet received before the
    /// close; Err if it is still open after `d`.
    pub async fn closed_within(
        &mut self,
        d: Duration,
    ) -> Result<(Vec<Packet>, String), Vec<Packet>> {
        let deadline = tokio::time::Instant::now() + d;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_timeout(left).await {
                Recv::Packet(p) => seen.push(p),
                Recv::Closed(how) => return Ok((seen, how)),
                Recv::Timeout => return Err(seen),
            }
        }
    }

    /// Asserts the broker closes the connection within [`CLOSE_WAIT`] without sending anything.
    pub async fn expect_closed(&mut self, context: &str) {
        match self.closed_within(CLOSE_WAIT).await {
            Ok((seen, _)) if seen.is_empty() => {}
            Ok((seen, _)) => panic!("{context}: broker sent {seen:?} before closing"),
            Err(seen) => {
                panic!("{context}: connection still open after {CLOSE_WAIT:?} (received {seen:?})")
            }
        }
    }

    /// SUBSCRIBE one filter and return the granted code from SUBACK.
    pub async fn subscribe(&mut self, pid: u16, filter: &str, qos: u8) -> u8 {
        self.send(&subscribe_packet(pid, &[(filter, qos)])).await;
        match self.recv().await {
            Packet::SubAck(s) => {
                assert_eq!(s.packet_id, pid, "SUBACK packet id");
                assert_eq!(s.reasons.len(), 1, "SUBACK codes: {s:?}");
                s.reasons[0].0
            }
            other => panic!("expected SUBACK for {filter:?}, got {other:?}"),
        }
    }

    /// Reads until `pick` accepts a packet; PUBLISH packets read meanwhile are stashed for later
    /// reads (in order), anything else is an error.
    pub async fn recv_ack(&mut self, what: &str, pick: impl Fn(&Packet) -> bool) -> Packet {
        let mut stashed = Vec::new();
        loop {
            let p = match self.recv_timeout(WAIT).await {
                Recv::Packet(p) => p,
                other => panic!("expected {what}, got {other:?} (stashed {stashed:?})"),
            };
            if pick(&p) {
                // Keep stashed publishes ahead of anything stashed earlier.
                for s in stashed.into_iter().rev() {
                    self.stash.push_front(s);
                }
                return p;
            }
            match p {
                Packet::Publish(_) => stashed.push(p),
                other => panic!("expected {what}, got {other:?}"),
            }
        }
    }

    /// Publishes and completes the QoS 1/2 flow as the sender.
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool, pid: u16) {
        self.send(&publish_packet(topic, payload, qos, retain, false, pid))
            .await;
        match qos {
            0 => {}
            1 => {
                self.recv_ack(
                    "PUBACK",
                    |p| matches!(p, Packet::PubAck(a) if a.packet_id == pid),
                )
                .await;
            }
            _ => {
                self.recv_ack(
                    "PUBREC",
                    |p| matches!(p, Packet::PubRec(a) if a.packet_id == pid),
                )
                .await;
                self.send(&pubrel(pid)).await;
                self.recv_ack(
                    "PUBCOMP",
                    |p| matches!(p, Packet::PubComp(a) if a.packet_id == pid),
                )
                .await;
            }
        }
    }

    /// Receives a PUBLISH and completes the receiver side of its flow.
    pub async fn recv_and_ack(&mut self) -> Publish {
        let p = self.recv_publish().await;
        match p.qos as u8 {
            0 => {}
            1 => self.send(&puback(p.packet_id)).await,
            _ => {
                self.send(&pubrec(p.packet_id)).await;
                let pid = p.packet_id;
                self.recv_ack(
                    "PUBREL",
                    |r| matches!(r, Packet::PubRel(r) if r.packet_id == pid),
                )
                .await;
                self.send(&pubcomp(p.packet_id)).await;
            }
        }
        p
    }

    /// PINGREQ → PINGRESP round trip: proves the connection is alive and every packet the broker
    /// queued before the PINGRESP has been read (returned in order).
    pub async fn ping(&mut self) -> Vec<Packet> {
        self.send(&PINGREQ).await;
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                Packet::PingResp => return before,
                p => before.push(p),
            }
        }
    }
}

/// Asserts that a PUBLISH has this topic and payload.
pub fn assert_publish(p: &Publish, topic: &str, payload: &[u8]) {
    assert_eq!(&*p.topic, topic, "topic of {p:?}");
    assert_eq!(&p.payload[..], payload, "payload of {p:?}");
}

// ---------------------------------------------------------------------------------------------
// rumqttc
// ---------------------------------------------------------------------------------------------

pub mod rumq {
    use super::*;
    use rumqttc::{AsyncClient, Event, MqttOptions};

    /// A rumqttc client whose event loop runs in a task until the first connection error, so
    /// it never reconnects behind the test's back.
    pub struct Rumq {
        pub client: AsyncClient,
        pub events: tokio::sync::mpsc::UnboundedReceiver<Result<Event, String>>,
        /// Events skipped by a selective wait, returned first by later waits.
        pending: std::collections::VecDeque<Result<Event, String>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Rumq {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    pub fn spawn(opts: MqttOptions) -> Rumq {
        let (client, mut el) = AsyncClient::new(opts, 64);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(ev) => {
                        if tx.send(Ok(ev)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        Rumq {
            client,
            events: rx,
            pending: Default::default(),
            task,
        }
    }

    impl Rumq {
        /// The next event; panics on timeout.
        pub async fn next(&mut self) -> Result<Event, String> {
            self.next_within(WAIT)
                .await
                .expect("timed out waiting for a rumqttc event")
        }

        pub async fn next_within(&mut self, d: Duration) -> Option<Result<Event, String>> {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            match tokio::time::timeout(d, self.events.recv()).await {
                Ok(Some(e)) => Some(e),
                Ok(None) => Some(Err("event loop ended".into())),
                Err(_) => None,
            }
        }

        /// Skips events until an incoming packet matches `pick`.
        pub async fn incoming<T>(
            &mut self,
            what: &str,
            mut pick: impl FnMut(&rumqttc::Packet) -> Option<T>,
        ) -> T {
            let deadline = tokio::time::Instant::now() + WAIT;
            let mut skipped = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.next_within(left).await {
                    None => panic!("timed out waiting for {what} (skipped {skipped:?})"),
                    Some(Err(e)) => panic!("connection error while waiting for {what}: {e}"),
                    Some(Ok(Event::Incoming(p))) => {
                        if let Some(t) = pick(&p) {
                            self.unskip(skipped);
                            return t;
                        }
                        skipped.push(Ok(Event::Incoming(p)));
                    }
                    Some(Ok(ev)) => skipped.push(Ok(ev)),
                }
            }
        }

        pub async fn connack(&mut self) -> rumqttc::ConnAck {
            self.incoming("CONNACK", |p| match p {
                rumqttc::Packet::ConnAck(c) => Some(c.clone()),
                _ => None,
            })
            .await
        }

        pub async fn suback(&mut self) -> rumqttc::SubAck {
            self.incoming("SUBACK", |p| match p {
                rumqttc::Packet::SubAck(s) => Some(s.clone()),
                _ => None,
            })
            .await
        }

        pub async fn publish(&mut self) -> rumqttc::Publish {
            self.incoming("PUBLISH", |p| match p {
                rumqttc::Packet::Publish(s) => Some(s.clone()),
                _ => None,
            })
            .await
        }

        /// Skips events until an outgoing packet of the given kind has been written.
        pub async fn outgoing(&mut self, what: &str, pick: impl Fn(&rumqttc::Outgoing) -> bool) {
            let deadline = tokio::time::Instant::now() + WAIT;
            let mut skipped = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.next_within(left).await {
                    None => panic!("timed out waiting for outgoing {what}"),
                    Some(Err(e)) => {
                        panic!("connection error while waiting for outgoing {what}: {e}")
                    }
                    Some(Ok(Event::Outgoing(o))) if pick(&o) => {
                        self.unskip(skipped);
                        return;
                    }
                    Some(Ok(ev)) => skipped.push(Ok(ev)),
                }
            }
        }

        /// Puts skipped events back in front of the pending ones, in order.
        fn unskip(&mut self, skipped: Vec<Result<Event, String>>) {
            for e in skipped.into_iter().rev() {
                self.pending.push_front(e);
            }
        }

        /// Waits for the event loop to report a connection error (the broker closed it).
        pub async fn closed(&mut self) -> String {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.next_within(left).await {
                    None => panic!("rumqttc connection still open after {WAIT:?}"),
                    Some(Err(e)) => return e,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// External processes
// ---------------------------------------------------------------------------------------------

pub mod skip;

/// Returns true when the tool is available. When it is not: panics if STARLING_INTEROP=1,
/// otherwise reports the skip on the terminal (see [`skip`]) and returns false.
pub fn require(tool: &str, available: bool) -> bool {
    if available {
        return true;
    }
    skip::skip(&format!("{tool} is not installed"));
    false
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(name);
            p.is_file()
        })
    })
}

pub fn have_mosquitto_clients() -> bool {
    require(
        "mosquitto-clients (mosquitto_pub, mosquitto_sub)",
        on_path("mosquitto_pub") && on_path("mosquitto_sub"),
    )
}

pub fn have_paho() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import sys, paho.mqtt; sys.exit(0 if paho.mqtt.__version__.split('.')[0] == '2' else 1)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require("python3 with paho-mqtt 2.x", ok)
}

/// Debian's broker binary, if installed (a failure with STARLING_INTEROP=1 when not).
pub fn mosquitto_binary() -> Option<std::path::PathBuf> {
    let found = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file());
    if require(
        "mosquitto (the broker, Debian package mosquitto)",
        found.is_some(),
    ) {
        found
    } else {
        None
    }
}

/// A port nobody listens on right now (for a broker started as another process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// mosquitto_sub (3.1.1, QoS 1) on the broker at `port`, waited for until its subscription is
/// acknowledged; its lines are `MSG|topic|payload`.
pub async fn mosquitto_sub(port: u16, filter: &str) -> Proc {
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", "mosquitto_sub", "-h", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "-V",
            "mqttv311",
            "-q",
            "1",
            "-t",
            filter,
        ])
        .args(["-d", "-F", "MSG|%t|%p"]);
    let mut p = Proc::spawn("mosquitto_sub", &mut cmd);
    p.wait_line("'received SUBACK'", |l| l.contains("received SUBACK"))
        .await;
    p
}

pub async fn mosquitto_pub(port: u16, topic: &str, payload: &str) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv311"])
        .args(["-q", "1", "-t", topic, "-m", payload]);
    run_ok(&format!("mosquitto_pub {topic}"), &mut cmd).await;
}

/// The next `MSG|topic|payload` line of mosquitto_sub.
pub async fn next_msg(p: &mut Proc) -> String {
    p.wait_line("MSG|...", |l| l.starts_with("MSG|")).await
}

/// A child process whose stdout is read line by line; killed on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Every stdout line read so far, for failure messages.
    pub seen: Vec<String>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc {
            name: name.to_owned(),
            child,
            lines: rx,
            stderr,
            seen: Vec::new(),
        }
    }

    pub fn transcript(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.seen.join("\n"),
            self.name,
            self.stderr.lock().unwrap()
        )
    }

    /// The next stdout line; None on EOF or after `d`.
    pub async fn line_within(&mut self, d: Duration) -> Option<String> {
        match tokio::time::timeout(d, self.lines.recv()).await {
            Ok(Some(l)) => {
                self.seen.push(l.clone());
                Some(l)
            }
            _ => None,
        }
    }

    /// Reads lines until one satisfies `pred`; panics with the transcript otherwise.
    pub async fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.line_within(left).await {
                Some(l) if pred(&l) => return l,
                Some(_) => {}
                None => panic!(
                    "{}: no line {what} within {WAIT:?}\n{}",
                    self.name,
                    self.transcript()
                ),
            }
        }
    }

    /// Kills the process (SIGKILL: no DISCONNECT) and returns every stdout line it printed,
    /// read to the end of its output.
    pub async fn kill_and_drain(&mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while self.line_within(WAIT).await.is_some() {}
        self.seen.clone()
    }

    /// Waits (bounded) for the process to exit.
    pub async fn exit_within(&mut self, d: Duration) -> ExitStatus {
        let deadline = Instant::now() + d;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} still running after {d:?}\n{}",
                    self.name,
                    self.transcript()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for exit and asserts success; returns the remaining stdout lines.
    pub async fn success(&mut self, d: Duration) -> Vec<String> {
        let status = self.exit_within(d).await;
        // Drain what the reader thread has (it ends at EOF once the process is gone).
        while let Some(l) = self.line_within(Duration::from_millis(500)).await {
            let _ = l;
        }
        assert!(
            status.success(),
            "{} exited with {status}\n{}",
            self.name,
            self.transcript()
        );
        self.seen.clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs a short-lived command to completion and asserts it succeeded.
pub async fn run_ok(name: &str, cmd: &mut Command) -> Vec<String> {
    let mut p = Proc::spawn(name, cmd);
    p.success(WAIT).await
}

/// Path of a file under tests/.
pub fn tests_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rel)
}
